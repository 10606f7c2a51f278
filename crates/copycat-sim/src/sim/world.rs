//! The simulated world: servers, disks, network, clients, faults, time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use copycat_raft::{
    Config, Entry, LogIndex, MemberRole, MembershipChange, Message, NodeId, ReadPath, Role, Term,
    Time,
};
use copycat_storage::{Disk, FaultDisk, LogOptions, StorageOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use copycat_client::session::{
    ClientConfig, ClientOutput, ClientSession, OperationError, OperationId as ClientOperation,
};
use copycat_proto::{ClientError, ClientId, ClientRequest, Consistency, ServerMessage};
use copycat_server::node::ServerConfig;
use copycat_server::runtime::{Shell, ShellConfig, Written};
use copycat_server::{codec, Typed};

use super::kv::{KvAction, KvCommand, KvMachine, KvOutput};
use super::params::SimParams;
use crate::history::{History, OperationId, ProcessId};
use crate::invariants::{fnv1a, DurableLog, Observer};
use crate::linearizability::{check, CheckConfig, Register, Verdict};

/// How often every server's clock is advanced (ms of real time).
const TICK_MS: u64 = 5;
/// Keys the clients operate on.
const KEYS: u8 = 3;
/// Lines of trace kept for failure reports.
const TRACE_LINES: usize = 3000;

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every invariant held, the healed cluster converged, and the history
    /// is linearizable.
    Passed,
    /// The history was too large to decide within the checker's budget;
    /// every other check passed.
    PassedUnknownLinearizability,
    /// Something broke.
    Failed(String),
}

/// The result of one seed.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// Parameters of the run.
    pub params: SimParams,
    /// How it ended.
    pub outcome: Outcome,
    /// Digest of every event processed: two runs of a seed must agree.
    pub digest: u64,
    /// Events processed.
    pub events: u64,
    /// Simulated time at the end (ms).
    pub end_ms: u64,
    /// Entries committed.
    pub committed: usize,
    /// Terms that had a leader.
    pub terms: usize,
    /// Client operations completed ok / failed / unknown.
    pub operations: (u64, u64, u64),
    /// The last events before the end (for failure reports).
    pub trace_tail: Vec<String>,
    /// The client history as JSON lines (for external checkers).
    pub history_json: String,
}

/// What a client operation is, for completing its history entry.
#[derive(Clone, Debug)]
enum OpKind {
    Read,
    /// A SEQUENTIAL read: not linearizable, so not in the history; checked
    /// for never going back in time within the session instead.
    SequentialRead,
    Write,
    Cas,
}

#[derive(Clone, Debug)]
enum Event {
    TickAll,
    Deliver(Message),
    Sync {
        node: usize,
        incarnation: u64,
    },
    ClientWake {
        client: usize,
    },
    ClientRequest {
        node: usize,
        client: usize,
        request: ClientRequest,
    },
    ClientReply {
        client: usize,
        node: usize,
        message: ServerMessage,
    },
    Fault,
    Restart {
        node: usize,
    },
    PowerLoss {
        node: usize,
        incarnation: u64,
    },
    Unpause {
        node: usize,
    },
    Heal,
    ClientCrash {
        client: usize,
    },
    Liveness,
    LivenessCheck,
}

/// A running server: the production shell (server core and storage).
struct LiveNode {
    shell: Shell<Typed<KvMachine>>,
    sync_scheduled: bool,
    /// Entries written but not yet synced: index to term.
    written: BTreeMap<LogIndex, Term>,
    last_role: Role,
    last_commit: LogIndex,
}

struct SimNode {
    id: NodeId,
    disk: FaultDisk,
    dir: PathBuf,
    live: Option<LiveNode>,
    incarnation: u64,
    paused: bool,
    deferred: Vec<Event>,
    clock_offset_ms: u64,
    clock_rate: f64,
    /// The wall clock (which stamps log entries) runs this far ahead of
    /// real time; wall clocks are kept within tens of milliseconds (NTP).
    wall_skew_ms: u64,
    durable: DurableLog,
}

/// The operation a client has outstanding.
struct Waiting {
    /// The client's operation number (carried in the command).
    op: u64,
    /// Its history entry (none for sequential reads).
    id: Option<OperationId>,
    /// The session core's handle.
    operation: ClientOperation,
    kind: OpKind,
}

struct SimClient {
    session: ClientSession,
    next_op: u64,
    waiting: Option<Waiting>,
    next_value: u64,
    ok_since_liveness: u64,
    /// Highest operation number seen in an event of the current session,
    /// to check events arrive once each and in order.
    events_seen: u64,
    events_session: Option<copycat_proto::SessionId>,
    /// The session the client last opened.
    last_session: Option<copycat_proto::SessionId>,
    /// The client crashed: it stopped talking to the cluster for good.
    dead: bool,
    /// Session and state index of the client's latest read.
    last_read: Option<(copycat_proto::SessionId, u64)>,
}

/// A whole simulated cluster with its clients.
pub struct Simulation {
    /// Parameters of this run.
    pub params: SimParams,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: Vec<SimNode>,
    clients: Vec<SimClient>,
    cut: BTreeSet<(usize, usize)>,
    /// Pairs `(client, node)` that cannot reach each other.
    client_cut: BTreeSet<(usize, usize)>,
    safety: bool,
    liveness_started: Option<u64>,
    /// The leader's commit index at the previous liveness check.
    liveness_target: Option<LogIndex>,
    done: bool,
    history: History,
    observer: Observer,
    digest: u64,
    events: u64,
    trace: VecDeque<String>,
    line: String,
    failure: Option<String>,
    operations: (u64, u64, u64),
    raft_template: Config,
}

impl Simulation {
    /// Build the world for `params`, with an optional Raft configuration hook
    /// (tests use it to plant bugs).
    pub fn new(params: SimParams, configure: impl Fn(&mut Config)) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
        let mut raft_template = Config::new(NodeId(1));
        raft_template.election_timeout_ms = params.election_timeout_ms;
        raft_template.heartbeat_interval_ms = params.heartbeat_interval_ms;
        raft_template.max_append_entries = params.max_append_entries;
        raft_template.max_inflight_appends = params.max_inflight_appends;
        raft_template.snapshot_trailing_entries = params.snapshot_trailing;
        raft_template.snapshot_chunk_bytes = params.snapshot_chunk_bytes;
        raft_template.lease_clock_drift_ms = params.lease_clock_drift_ms;
        raft_template.promote_lag_entries = 8;
        raft_template.pre_vote = params.pre_vote;
        raft_template.check_quorum = params.check_quorum;
        configure(&mut raft_template);
        raft_template
            .validate()
            .expect("simulation parameters make a valid Raft config");
        let nodes = (1..=params.nodes)
            .map(|id| {
                // The shell bootstraps the empty directory on first start.
                let disk = FaultDisk::new(rng.gen());
                let dir = PathBuf::from(format!("/n{id}"));
                let spread = params.clock_rate_spread;
                SimNode {
                    id: NodeId(id),
                    disk,
                    dir,
                    live: None,
                    incarnation: 0,
                    paused: false,
                    deferred: Vec::new(),
                    clock_offset_ms: rng.gen_range(0..1_000_000),
                    clock_rate: 1.0 + rng.gen_range(-spread..=spread),
                    wall_skew_ms: rng.gen_range(0..=30),
                    durable: DurableLog::default(),
                }
            })
            .collect();
        let session_timeout_ms = 20 * params.election_timeout_ms;
        let clients = (0..params.clients)
            .map(|client| {
                let mut config = ClientConfig::new(ClientId(client as u128 + 1));
                config.session_timeout_ms = session_timeout_ms;
                config.request_timeout_ms = 3 * params.election_timeout_ms;
                config.backoff_ms = vec![10, 20, 50, params.election_timeout_ms];
                // A client whose session expired (it was cut off too long)
                // opens a new one; guarantees do not carry across sessions.
                config.recovery = copycat_client::session::RecoveryStrategy::Recover;
                let mut session = ClientSession::new(config, 0).expect("valid client config");
                for node in 1..=params.nodes {
                    session.connected(node);
                }
                SimClient {
                    session,
                    next_op: 1,
                    waiting: None,
                    next_value: 1,
                    ok_since_liveness: 0,
                    events_seen: 0,
                    events_session: None,
                    last_session: None,
                    dead: false,
                    last_read: None,
                }
            })
            .collect();
        let mut sim = Self {
            params,
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            clients,
            cut: BTreeSet::new(),
            client_cut: BTreeSet::new(),
            safety: true,
            liveness_started: None,
            liveness_target: None,
            done: false,
            history: History::new(),
            observer: Observer::new(),
            digest: 0xcbf2_9ce4_8422_2325,
            events: 0,
            trace: VecDeque::new(),
            line: String::new(),
            failure: None,
            operations: (0, 0, 0),
            raft_template,
        };
        for node in 0..sim.nodes.len() {
            sim.start_node(node);
        }
        sim.schedule(TICK_MS, Event::TickAll);
        for client in 0..sim.clients.len() {
            let delay = sim.rng.gen_range(0..50);
            sim.schedule(delay, Event::ClientWake { client });
        }
        let first_fault = sim.fault_delay();
        sim.schedule(first_fault, Event::Fault);
        let safety_ms = sim.params.safety_ms;
        sim.schedule(safety_ms, Event::Liveness);
        // Half the runs lose a client for good: its session must expire.
        if sim.clients.len() > 1 && sim.rng.gen_bool(0.5) {
            let at = sim.rng.gen_range(0..safety_ms);
            sim.schedule(at, Event::ClientCrash { client: 0 });
        }
        sim
    }

    /// Run to the end and report.
    pub fn run(mut self) -> RunReport {
        while !self.done && self.failure.is_none() {
            let Some(((time, _), event)) = self.queue.pop_first() else {
                self.fail("event queue ran dry".into());
                break;
            };
            self.now = time;
            self.events += 1;
            self.handle(event);
        }
        let outcome = match self.failure.clone() {
            Some(failure) => Outcome::Failed(failure),
            None => self.final_checks(),
        };
        RunReport {
            params: self.params.clone(),
            outcome,
            digest: self.digest,
            events: self.events,
            end_ms: self.now,
            committed: self.observer.committed_count(),
            terms: self.observer.terms_with_leaders(),
            operations: self.operations,
            trace_tail: self.trace.iter().cloned().collect(),
            history_json: self.history.to_json_lines(),
        }
    }

    fn final_checks(&mut self) -> Outcome {
        if let Err(failure) = self.observer.check_all_acknowledged() {
            return Outcome::Failed(failure);
        }
        let config = CheckConfig {
            steps_max: 2_000_000,
            minimize_steps_max: 200_000,
            deadline: None,
        };
        match check(&Register::new(), &self.history, &config) {
            Ok(report) => match report.verdict {
                Verdict::Linearizable => Outcome::Passed,
                Verdict::Unknown { .. } => Outcome::PassedUnknownLinearizability,
                Verdict::NotLinearizable(violation) => {
                    Outcome::Failed(format!("history not linearizable: {violation:?}"))
                }
            },
            Err(error) => Outcome::Failed(format!("checker refused the history: {error}")),
        }
    }

    // ----- Scheduling and tracing --------------------------------------------

    fn schedule(&mut self, delay_ms: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((self.now + delay_ms, self.seq), event);
    }

    fn fault_delay(&mut self) -> u64 {
        let mean = self.params.fault_interval_ms as f64;
        let uniform: f64 = self.rng.gen_range(0.0001..1.0);
        (-uniform.ln() * mean) as u64 + 1
    }

    fn trace(&mut self, args: std::fmt::Arguments<'_>) {
        self.line.clear();
        let _ = write!(self.line, "{:>7}ms ", self.now);
        let _ = self.line.write_fmt(args);
        self.digest ^= fnv1a(self.line.as_bytes());
        self.digest = self.digest.wrapping_mul(0x0000_0100_0000_01B3);
        if self.trace.len() >= TRACE_LINES {
            self.trace.pop_front();
        }
        self.trace.push_back(self.line.clone());
    }

    fn fail(&mut self, failure: String) {
        if self.failure.is_none() {
            self.trace(format_args!("FAILURE: {failure}"));
            self.failure = Some(failure);
        }
    }

    fn local_time(&self, node: usize) -> Time {
        let node = &self.nodes[node];
        Time(node.clock_offset_ms + (self.now as f64 * node.clock_rate) as u64)
    }

    // ----- Events ---------------------------------------------------------------

    fn handle(&mut self, event: Event) {
        // A paused server does nothing; its events wait for it.
        if let Some(node) = event_target(&event) {
            if self.nodes[node].paused {
                self.nodes[node].deferred.push(event);
                return;
            }
        }
        match event {
            Event::TickAll => {
                for node in 0..self.nodes.len() {
                    if self.nodes[node].live.is_some() && !self.nodes[node].paused {
                        let now = self.local_time(node);
                        let wall = self.now + self.nodes[node].wall_skew_ms;
                        self.nodes[node]
                            .live
                            .as_mut()
                            .expect("live")
                            .shell
                            .tick(Time(now.0), wall);
                        self.process(node);
                    }
                }
                self.schedule(TICK_MS, Event::TickAll);
            }
            Event::Deliver(message) => {
                let to = (message.to.0 - 1) as usize;
                let from = (message.from.0 - 1) as usize;
                if self.cut.contains(&(from, to)) || self.nodes[to].live.is_none() {
                    return;
                }
                self.trace(format_args!(
                    "{:?}->{:?} {} {:?}",
                    message.from,
                    message.to,
                    message.body.kind(),
                    message.term
                ));
                self.nodes[to]
                    .live
                    .as_mut()
                    .expect("live")
                    .shell
                    .server_mut()
                    .raft_mut()
                    .step(message);
                self.process(to);
            }
            Event::Sync { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation && self.nodes[node].live.is_some() {
                    self.complete_sync(node);
                    self.process(node);
                }
            }
            Event::ClientWake { client } => self.client_wake(client),
            Event::ClientRequest {
                node,
                client,
                request,
            } => {
                if !self.client_cut.contains(&(client, node)) {
                    self.on_client_request(node, client, request);
                }
            }
            Event::ClientReply {
                client,
                node,
                message,
            } => self.on_client_reply(client, node, message),
            Event::Fault => {
                if self.safety {
                    self.inject_fault();
                    let delay = self.fault_delay();
                    self.schedule(delay, Event::Fault);
                }
            }
            Event::PowerLoss { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation && self.nodes[node].live.is_some() {
                    if self.rng.gen_bool(0.5) {
                        self.corrupt_unsynced_tail(node);
                    }
                    self.crash(node, true);
                    let restart = self.rng.gen_range(1..=3 * self.params.election_timeout_ms);
                    self.schedule(restart, Event::Restart { node });
                }
            }
            Event::Restart { node } => {
                if self.nodes[node].live.is_none() {
                    self.start_node(node);
                }
            }
            Event::Unpause { node } => self.unpause(node),
            Event::Heal => {
                self.trace(format_args!("heal network"));
                self.cut.clear();
                self.client_cut.clear();
            }
            Event::ClientCrash { client } => {
                self.trace(format_args!("client {client} crashed"));
                self.clients[client].dead = true;
            }
            Event::Liveness => self.start_liveness(),
            Event::LivenessCheck => self.liveness_check(),
        }
    }

    // ----- Servers ----------------------------------------------------------------

    fn start_node(&mut self, node: usize) {
        let params = self.params.clone();
        let now = self.local_time(node);
        let seed = self.rng.gen();
        let members: Vec<NodeId> = (1..=params.nodes).map(NodeId).collect();
        let mut raft = self.raft_template.clone();
        let sim_node = &mut self.nodes[node];
        sim_node.incarnation += 1;
        raft.id = sim_node.id;
        let config = ShellConfig {
            server: server_config(raft, &params),
            storage: storage_options(&params),
            seed,
        };
        let disk: Arc<dyn Disk> = Arc::new(sim_node.disk.clone());
        let wall = self.now + sim_node.wall_skew_ms;
        let machine = Typed(KvMachine::default());
        let shell = match Shell::open(config, &sim_node.dir, disk, &members, machine, now, wall) {
            Ok(shell) => shell,
            Err(error) => {
                let id = sim_node.id;
                self.fail(format!(
                    "{id:?} cannot restart from its data directory: {error}"
                ));
                return;
            }
        };
        // The durable view is what recovery returned.
        let recovered = shell.recovered().clone();
        sim_node.durable = DurableLog {
            snapshot: recovered.snapshot,
            terms: recovered.entries.iter().copied().collect(),
        };
        let commit = shell.server().raft().commit_index();
        let applied = shell.server().replica().applied_index();
        sim_node.live = Some(LiveNode {
            shell,
            sync_scheduled: false,
            written: BTreeMap::new(),
            last_role: Role::Follower,
            last_commit: commit,
        });
        let id = sim_node.id;
        self.observer.node_restarted(id);
        self.trace(format_args!(
            "{id:?} started (applied {applied:?}, recovery discarded {} bytes of torn tail)",
            recovered.discarded_bytes
        ));
    }

    fn crash(&mut self, node: usize, torn: bool) {
        let sim_node = &mut self.nodes[node];
        if sim_node.live.take().is_none() {
            return;
        }
        sim_node.incarnation += 1;
        if torn {
            sim_node.disk.crash_torn();
        } else {
            sim_node.disk.crash();
        }
        sim_node.paused = false;
        sim_node.deferred.clear();
        let id = sim_node.id;
        self.trace(format_args!(
            "{id:?} crashed{}",
            if torn { " (torn writes)" } else { "" }
        ));
    }

    /// Flip one bit in the unsynced tail of the node's newest log segment
    /// (never in synced data: that would be media corruption, which the
    /// storage crate's own tests cover as a detected, fatal error).
    fn corrupt_unsynced_tail(&mut self, node: usize) {
        let disk = self.nodes[node].disk.clone();
        let log_dir = self.nodes[node].dir.join("log");
        let Ok(mut names) = disk.list_dir(&log_dir) else {
            return;
        };
        names.sort();
        let Some(name) = names.last() else { return };
        let path = log_dir.join(name);
        let live = disk.file_len(&path).unwrap_or(0);
        let durable = disk.durable_contents(&path).map_or(0, |c| c.len() as u64);
        if live <= durable {
            return;
        }
        let bit = self.rng.gen_range(durable * 8..live * 8);
        if disk.flip_bit(&path, Some(bit)).is_ok() {
            let id = self.nodes[node].id;
            self.trace(format_args!(
                "{id:?} corrupt bit {bit} of unsynced tail of {name}"
            ));
        }
    }

    fn unpause(&mut self, node: usize) {
        if !self.nodes[node].paused {
            return;
        }
        self.nodes[node].paused = false;
        let id = self.nodes[node].id;
        self.trace(format_args!("{id:?} resumed"));
        let deferred = std::mem::take(&mut self.nodes[node].deferred);
        for event in deferred {
            self.schedule(0, event);
        }
    }

    /// Let the node's shell write everything it has (step 1 of every
    /// batch), observe what it wrote, send what needs no durability, and
    /// schedule the disk sync after the disk's latency (group commit: every
    /// batch written until then shares that sync).
    fn process(&mut self, node: usize) {
        let id = self.nodes[node].id;
        let Some(live) = self.nodes[node].live.as_mut() else {
            return;
        };
        let written = match live.shell.write() {
            Ok(written) => written,
            Err(error) => {
                self.fail(format!("{id:?} write: {error}"));
                return;
            }
        };
        if let Err(failure) = self.observe_written(node, &written) {
            self.fail(failure);
            return;
        }
        let live = self.nodes[node].live.as_mut().expect("live");
        if written.pending && !live.sync_scheduled {
            live.sync_scheduled = true;
            let incarnation = self.nodes[node].incarnation;
            let latency = self.params.disk_latency_ms;
            self.schedule(latency, Event::Sync { node, incarnation });
        }
        // Now and then, power fails while the writes are on their way to the
        // disk.
        if !written.entries.is_empty() && self.safety && self.rng.gen_bool(self.params.power_loss) {
            let incarnation = self.nodes[node].incarnation;
            self.schedule(0, Event::PowerLoss { node, incarnation });
        }
        self.after_step(node);
        self.flush_outputs(node);
    }

    /// Invariants over what a write did: log matching for every entry
    /// written, state machine safety for entries applied, snapshot identity.
    fn observe_written(&mut self, node: usize, written: &Written) -> Result<(), String> {
        let id = self.nodes[node].id;
        if let Some(first) = written.entries.first() {
            // A conflicting suffix was replaced: it is not durable any more.
            self.nodes[node]
                .durable
                .terms
                .retain(|index, _| *index < first.index);
            let live = self.nodes[node].live.as_mut().expect("live");
            live.written.retain(|index, _| *index < first.index);
        }
        for entry in &written.entries {
            let live = self.nodes[node].live.as_mut().expect("live");
            live.written.insert(entry.index, entry.term);
            let previous = live.shell.server().raft().term_at(entry.index.prev());
            self.observer.on_written(id, entry, previous)?;
        }
        if let Some(synced) = written.synced_through {
            // The shell synced in the middle of this write (before a
            // snapshot install): what it had written is durable.
            let live = self.nodes[node].live.as_mut().expect("live");
            let still_unsynced = live.written.split_off(&synced.next());
            let durable = std::mem::replace(&mut live.written, still_unsynced);
            self.nodes[node].durable.terms.extend(durable);
        }
        self.observe_applied(node, &written.applied)?;
        if let Some((meta, digest)) = &written.installed {
            self.observer.on_snapshot(id, meta.index, *digest)?;
            let durable = &mut self.nodes[node].durable;
            durable.snapshot = durable.snapshot.max(meta.index);
            durable.terms.retain(|index, _| *index > meta.index);
            let live = self.nodes[node].live.as_mut().expect("live");
            live.written.retain(|index, _| *index > meta.index);
            self.trace(format_args!("{id:?} installed snapshot {:?}", meta.index));
        }
        Ok(())
    }

    /// State machine safety for every entry applied, and the state
    /// machine's own exactly-once and per-client order checks.
    fn observe_applied(&mut self, node: usize, applied: &[Entry]) -> Result<(), String> {
        let id = self.nodes[node].id;
        for entry in applied {
            self.observer.on_applied(id, entry)?;
        }
        let live = self.nodes[node].live.as_ref().expect("live");
        let machine = &live.shell.server().replica().machine().0;
        if machine.duplicates > 0 || machine.reordered > 0 {
            return Err(format!(
                "{id:?}: {} client operations applied twice, {} out of client order",
                machine.duplicates, machine.reordered
            ));
        }
        Ok(())
    }

    /// Send what the shell produced: peer messages over the simulated
    /// network, client messages to the clients.
    fn flush_outputs(&mut self, node: usize) {
        let Some(live) = self.nodes[node].live.as_mut() else {
            return;
        };
        let outputs = live.shell.take_outputs();
        for message in outputs.peer_messages {
            self.send(message);
        }
        for (connection, message) in outputs.client_messages {
            let client = connection as usize;
            if self.safety && self.rng.gen_bool(self.params.loss) {
                continue;
            }
            let delay = self
                .rng
                .gen_range(self.params.delay_min_ms..=self.params.delay_max_ms);
            self.schedule(
                delay,
                Event::ClientReply {
                    client,
                    node,
                    message,
                },
            );
        }
    }

    /// The disk finished: the shell's one sync covers every batch written
    /// since the last one; then its messages go out and entries apply.
    fn complete_sync(&mut self, node: usize) {
        let id = self.nodes[node].id;
        let live = self.nodes[node].live.as_mut().expect("live");
        live.sync_scheduled = false;
        let synced = match live.shell.sync() {
            Ok(synced) => synced,
            Err(error) => {
                self.fail(format!("{id:?} sync: {error}"));
                return;
            }
        };
        let written = std::mem::take(&mut live.written);
        live.shell.storage().invariants();
        self.nodes[node].durable.terms.extend(written);
        if let Err(failure) = self.observe_applied(node, &synced.applied) {
            self.fail(failure);
            return;
        }
        if let Some((meta, digest)) = synced.taken {
            if let Err(failure) = self.observer.on_snapshot(id, meta.index, digest) {
                self.fail(failure);
                return;
            }
            let durable = &mut self.nodes[node].durable;
            durable.snapshot = durable.snapshot.max(meta.index);
            self.trace(format_args!("{id:?} took snapshot at {:?}", meta.index));
        }
        self.after_step(node);
        self.flush_outputs(node);
    }

    /// Checks after a node handled inputs: its own invariants, commit
    /// monotonicity and durability, leadership changes.
    fn after_step(&mut self, node: usize) {
        let id = self.nodes[node].id;
        let Some(live) = self.nodes[node].live.as_mut() else {
            return;
        };
        live.shell.server().raft().invariants();
        let role = live.shell.server().raft().role();
        let term = live.shell.server().raft().term();
        let commit = live.shell.server().raft().commit_index();
        let became_leader = role == Role::Leader && live.last_role != Role::Leader;
        live.last_role = role;
        let old_commit = live.last_commit;
        live.last_commit = commit;
        let result = (|| {
            self.observer.check_commit_monotonic(id, commit)?;
            let live = self.nodes[node].live.as_ref().expect("live");
            if role == Role::Leader {
                if became_leader {
                    self.observer.on_leader(id, term)?;
                    self.observer.check_leader_completeness(
                        id,
                        term,
                        live.shell.server().raft().snapshot_meta().index,
                        |i| live.shell.server().raft().entry(i),
                    )?;
                }
                if commit > old_commit {
                    self.observer
                        .on_leader_commit(id, term, old_commit, commit, |i| {
                            live.shell.server().raft().entry(i)
                        })?;
                    let commit_term = live
                        .shell
                        .server()
                        .raft()
                        .term_at(commit)
                        .expect("leader holds its commit");
                    let durable: BTreeMap<NodeId, DurableLog> = self
                        .nodes
                        .iter()
                        .map(|n| (n.id, n.durable.clone()))
                        .collect();
                    self.observer.check_commit_durable(
                        id,
                        commit,
                        commit_term,
                        &live.shell.server().raft().configurations_since(commit),
                        &durable,
                    )?;
                }
                let configs = live.shell.server().raft().configurations_since(commit);
                let mut uncommitted = Vec::new();
                let mut index = commit.next();
                while index <= live.shell.server().raft().last_index() {
                    if let Some(entry) = live.shell.server().raft().entry(index) {
                        uncommitted.push(entry);
                    }
                    index = index.next();
                }
                self.observer.check_configuration_safety(
                    id,
                    commit,
                    &configs[0],
                    uncommitted.into_iter(),
                )?;
            }
            Ok(())
        })();
        if let Err(failure) = result {
            self.fail(failure);
        }
    }

    fn send(&mut self, message: Message) {
        let loss = if self.safety { self.params.loss } else { 0.0 };
        let duplicate = if self.safety {
            self.params.duplicate
        } else {
            0.0
        };
        if self.rng.gen_bool(loss) {
            return;
        }
        let copies = if self.rng.gen_bool(duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = self
                .rng
                .gen_range(self.params.delay_min_ms..=self.params.delay_max_ms);
            self.schedule(delay, Event::Deliver(message.clone()));
        }
    }

    // ----- Clients ------------------------------------------------------------

    /// How often clients drive their session core (keep-alives, retries).
    const CLIENT_TICK_MS: u64 = 10;

    fn client_wake(&mut self, client: usize) {
        if self.clients[client].dead {
            // A crashed client: no keep-alives, no requests. Its session
            // must expire.
            return;
        }
        // Once every live client got through after the heal, clients go
        // quiet (no more operations or keep-alives), so that the cluster can
        // be seen to converge even with the slowest parameters.
        let quiet = self.liveness_started.is_some()
            && self
                .clients
                .iter()
                .all(|c| c.dead || c.ok_since_liveness > 0);
        if quiet {
            return;
        }
        let now = self.now;
        self.clients[client].session.tick(now);
        if self.clients[client].waiting.is_none() && self.rng.gen_bool(0.5) {
            self.client_submit(client);
        }
        self.client_outputs(client);
        self.schedule(Self::CLIENT_TICK_MS, Event::ClientWake { client });
    }

    /// Start the client's next operation: a read, a write or a
    /// compare-and-set on one of a few keys, through its session.
    fn client_submit(&mut self, client: usize) {
        let key = self.rng.gen_range(0..KEYS);
        let key_name = format!("k{key}");
        let c = &mut self.clients[client];
        let op = c.next_op;
        c.next_op += 1;
        let value = (client as u64 + 1) * 1_000_000 + c.next_value;
        c.next_value += 1;
        let process = ProcessId(client as u64);
        let choice = self.rng.gen_range(0..10);
        let (id, kind, submitted) = if choice < 4 {
            let sequential = self.rng.gen_bool(0.25);
            let consistency = match (sequential, self.params.lease_reads) {
                (true, _) => Consistency::Sequential,
                (false, true) => Consistency::LinearizableLease,
                (false, false) => Consistency::Linearizable,
            };
            // Sequential reads may be stale by design: they stay out of the
            // linearizability history and are checked for monotonicity.
            let id = (!sequential).then(|| {
                self.history
                    .invoke(process, "read", key_name.as_str(), json!(null), self.now)
            });
            let submitted = self.clients[client]
                .session
                .submit_query(codec::encode(&key), consistency);
            let kind = if sequential {
                OpKind::SequentialRead
            } else {
                OpKind::Read
            };
            (id, kind, submitted)
        } else {
            let (f, input, action) = if choice < 8 {
                ("write", json!(value), KvAction::Write { key, value })
            } else {
                // Compare-and-set from a recently written value of any
                // client, or from absent.
                let expected = if self.rng.gen_bool(0.3) {
                    None
                } else {
                    let from = self.rng.gen_range(0..self.clients.len());
                    let back = self.rng.gen_range(1..=3);
                    let n = self.clients[from].next_value.saturating_sub(back).max(1);
                    Some((from as u64 + 1) * 1_000_000 + n)
                };
                (
                    "cas",
                    json!([expected, value]),
                    KvAction::Cas {
                        key,
                        expected,
                        new: value,
                    },
                )
            };
            let id = Some(
                self.history
                    .invoke(process, f, key_name.as_str(), input, self.now),
            );
            let command = KvCommand {
                client: client as u64,
                op,
                action,
            };
            let submitted = self.clients[client]
                .session
                .submit_command(codec::encode(&command));
            let kind = if f == "write" {
                OpKind::Write
            } else {
                OpKind::Cas
            };
            (id, kind, submitted)
        };
        match submitted {
            Ok(operation) => {
                self.clients[client].waiting = Some(Waiting {
                    op,
                    id,
                    operation,
                    kind,
                })
            }
            Err(error) => {
                // Refused locally: never sent.
                if let Some(id) = id {
                    self.history.fail(id, self.now);
                }
                self.operations.1 += 1;
                self.trace(format_args!("client {client} op {op} refused: {error}"));
            }
        }
    }

    /// Carry out what the client's session core asks for.
    fn client_outputs(&mut self, client: usize) {
        for output in self.clients[client].session.take_outputs() {
            match output {
                ClientOutput::Send { server, request } => {
                    if self.safety && self.rng.gen_bool(self.params.loss) {
                        continue;
                    }
                    let node = (server - 1) as usize;
                    let delay = self
                        .rng
                        .gen_range(self.params.delay_min_ms..=self.params.delay_max_ms);
                    self.schedule(
                        delay,
                        Event::ClientRequest {
                            node,
                            client,
                            request,
                        },
                    );
                }
                ClientOutput::CommandDone { operation, result }
                | ClientOutput::QueryDone { operation, result } => {
                    self.client_done(client, operation, result);
                }
                ClientOutput::Event {
                    session,
                    event_index,
                    event,
                } => {
                    // Events arrive once each, in order: the published
                    // operation numbers strictly increase within a session.
                    let op = event
                        .payload
                        .as_ref()
                        .try_into()
                        .map(u64::from_le_bytes)
                        .unwrap_or(0);
                    let c = &mut self.clients[client];
                    if c.events_session != Some(session) {
                        c.events_session = Some(session);
                        c.events_seen = 0;
                    }
                    if op <= c.events_seen {
                        let seen = c.events_seen;
                        self.fail(format!(
                            "client {client}: event for op {op} at {event_index:?} after op {seen} in session {session:?}"
                        ));
                        return;
                    }
                    c.events_seen = op;
                }
                ClientOutput::SessionOpened { session, .. } => {
                    self.trace(format_args!("client {client} opened session {}", session.0));
                    // Once a client got through after the heal, its session is
                    // alive and reachable: it must never expire again.
                    if self.clients[client].ok_since_liveness > 0 {
                        self.fail(format!(
                            "client {client}: a live session that can reach a quorum expired (new session {session:?})"
                        ));
                        return;
                    }
                    self.clients[client].last_session = Some(session);
                }
                ClientOutput::StateChanged(state) => {
                    self.trace(format_args!("client {client} is {state:?}"));
                }
            }
        }
    }

    /// An operation finished: record it in the history.
    fn client_done(
        &mut self,
        client: usize,
        operation: ClientOperation,
        result: Result<Bytes, OperationError>,
    ) {
        let Some(waiting) = self.clients[client].waiting.take() else {
            return;
        };
        if waiting.operation != operation {
            self.clients[client].waiting = Some(waiting);
            return;
        }
        let op = waiting.op;
        let output = result
            .as_ref()
            .ok()
            .and_then(|bytes| codec::decode::<KvOutput>(bytes).ok());
        if let (Some(KvOutput::Value(_, index)), Some(session)) =
            (&output, self.clients[client].session.session_id())
        {
            // Reads never go back in time within a session (sequential
            // consistency; linearizable reads satisfy it a fortiori).
            if let Some((last_session, last_index)) = self.clients[client].last_read {
                if last_session == session && *index < last_index {
                    self.fail(format!(
                        "client {client}: a read in session {session:?} saw index {index} after {last_index}"
                    ));
                    return;
                }
            }
            self.clients[client].last_read = Some((session, *index));
        }
        let Some(id) = waiting.id else {
            // A sequential read: checked above, not part of the history.
            if output.is_some() {
                self.operations.0 += 1;
            }
            return;
        };
        match (&waiting.kind, &result, output) {
            (OpKind::Read, Ok(_), Some(KvOutput::Value(value, _))) => {
                // A read proves nothing about the session's future: it may
                // be served just before an overdue expiry applies.
                self.history.ok(id, json!(value), self.now);
                self.operations.0 += 1;
            }
            (OpKind::Write | OpKind::Cas, Ok(_), Some(KvOutput::Done(true))) => {
                let input = self.history.operation(id).input.clone();
                self.history.ok(id, input, self.now);
                self.operations.0 += 1;
                self.observer.on_acknowledged(client as u64, op);
                self.count_liveness_success(client, id);
            }
            (OpKind::Cas, Ok(_), Some(KvOutput::Done(false))) => {
                // The compare-and-set found another value: it changed
                // nothing, a definite failure.
                self.history.fail(id, self.now);
                self.operations.1 += 1;
                self.count_liveness_success(client, id);
            }
            (_, Err(OperationError::Rejected(ClientError::NotLeader { .. })), _)
            | (_, Err(OperationError::Refused(_)), _) => {
                self.history.fail(id, self.now);
                self.operations.1 += 1;
            }
            (_, Err(_), _) => {
                // Session expired or closed with the operation outstanding:
                // it may or may not have been applied.
                self.history.info(id, self.now);
                self.operations.2 += 1;
            }
            (_, Ok(_), other) => {
                self.fail(format!(
                    "client {client} op {op}: unexpected result {other:?}"
                ));
            }
        }
    }

    /// A command invoked after the heal was applied: the client's session
    /// is alive in the healed cluster (applying a command refreshes it). A
    /// result held back from before the heal proves nothing about now.
    fn count_liveness_success(&mut self, client: usize, id: OperationId) {
        let invoked = self.history.operation(id).invoke_time;
        if self
            .liveness_started
            .is_some_and(|started| invoked >= started)
        {
            self.clients[client].ok_since_liveness += 1;
        }
    }

    fn on_client_request(&mut self, node: usize, client: usize, request: ClientRequest) {
        let now = self.local_time(node);
        let id = self.nodes[node].id;
        let Some(live) = self.nodes[node].live.as_mut() else {
            return;
        };
        let path = live.shell.on_request(client as u64, request, now);
        // Lease safety: while this leader relies on its lease, no server
        // leads a later term (checked at that instant).
        if path == Some(ReadPath::Lease) {
            let term = live.shell.server().raft().term();
            let leaders: Vec<(NodeId, Term)> = self
                .nodes
                .iter()
                .filter_map(|n| {
                    n.live
                        .as_ref()
                        .filter(|l| l.shell.server().raft().is_leader())
                        .map(|l| (n.id, l.shell.server().raft().term()))
                })
                .collect();
            if let Err(failure) = self.observer.check_lease(id, term, &leaders) {
                self.fail(failure);
                return;
            }
        }
        self.process(node);
    }

    fn on_client_reply(&mut self, client: usize, node: usize, message: ServerMessage) {
        if self.client_cut.contains(&(client, node)) {
            return;
        }
        self.clients[client]
            .session
            .on_message(node as u64 + 1, message);
        self.client_outputs(client);
    }

    // ----- Faults ---------------------------------------------------------------

    fn inject_fault(&mut self) {
        let nodes = self.nodes.len();
        let node = self.rng.gen_range(0..nodes);
        let id = self.nodes[node].id;
        let restart_after = if self.rng.gen_bool(0.3) {
            // A supervisor restarts the process at once.
            self.rng.gen_range(1..=5)
        } else {
            self.rng.gen_range(10..=6 * self.params.election_timeout_ms)
        };
        match self.rng.gen_range(0..14) {
            13 => {
                // A client loses its connection to one server: it must
                // fail over to another (and its events come from there).
                let client = self.rng.gen_range(0..self.clients.len());
                self.trace(format_args!("cut client {client} from {id:?}"));
                self.client_cut.insert((client, node));
                self.schedule(restart_after, Event::Heal);
            }
            0 | 1 => {
                self.crash(node, false);
                self.schedule(restart_after, Event::Restart { node });
            }
            2 => {
                // Power loss in the middle of writing: some unsynced data
                // survives, and part of it may be garbage. Recovery must
                // notice (checksums) and keep only whole, valid records.
                // Prefer a server with writes waiting for their sync.
                let writing: Vec<usize> = (0..nodes)
                    .filter(|n| {
                        self.nodes[*n]
                            .live
                            .as_ref()
                            .is_some_and(|l| l.sync_scheduled)
                    })
                    .collect();
                let node = if writing.is_empty() {
                    node
                } else {
                    writing[self.rng.gen_range(0..writing.len())]
                };
                if self.rng.gen_bool(0.5) {
                    self.corrupt_unsynced_tail(node);
                }
                self.crash(node, true);
                self.schedule(restart_after, Event::Restart { node });
            }
            3 | 4 => {
                self.trace(format_args!("isolate {id:?}"));
                for other in 0..nodes {
                    if other != node {
                        self.cut.insert((node, other));
                        self.cut.insert((other, node));
                    }
                }
                self.schedule(restart_after, Event::Heal);
            }
            5 => {
                let mut left = Vec::new();
                for n in 0..nodes {
                    if self.rng.gen_bool(0.5) {
                        left.push(n);
                    }
                }
                self.trace(format_args!("partition {left:?} from the rest"));
                for a in 0..nodes {
                    for b in 0..nodes {
                        if left.contains(&a) != left.contains(&b) {
                            self.cut.insert((a, b));
                        }
                    }
                }
                self.schedule(restart_after, Event::Heal);
            }
            6 => {
                let other = self.rng.gen_range(0..nodes);
                if other != node {
                    self.trace(format_args!("cut {id:?} -> n{}", other + 1));
                    self.cut.insert((node, other));
                    self.schedule(restart_after, Event::Heal);
                }
            }
            7 => {
                // The leader, specifically, isolated.
                if let Some(leader) = self.current_leader() {
                    self.trace(format_args!("isolate leader n{}", leader + 1));
                    for other in 0..nodes {
                        if other != leader {
                            self.cut.insert((leader, other));
                            self.cut.insert((other, leader));
                        }
                    }
                    self.schedule(restart_after, Event::Heal);
                }
            }
            8 => {
                // A long pause of the leader (a GC pause, SIGSTOP): the rest
                // elect a new leader meanwhile, and the old one wakes up
                // believing it still leads.
                if let Some(leader) = self.current_leader() {
                    if !self.nodes[leader].paused {
                        let pause = self.rng.gen_range(
                            self.params.election_timeout_ms..=5 * self.params.election_timeout_ms,
                        );
                        self.trace(format_args!("pause leader n{} for {pause}ms", leader + 1));
                        self.nodes[leader].paused = true;
                        self.schedule(pause, Event::Unpause { node: leader });
                    }
                }
            }
            9 => {
                if self.nodes[node].live.is_some() && !self.nodes[node].paused {
                    self.trace(format_args!("pause {id:?}"));
                    self.nodes[node].paused = true;
                    self.schedule(restart_after, Event::Unpause { node });
                }
            }
            _ => {
                if self.params.membership_churn {
                    self.churn();
                }
            }
        }
    }

    fn current_leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|n| {
                self.nodes[*n]
                    .live
                    .as_ref()
                    .is_some_and(|l| l.shell.server().raft().is_leader())
            })
            .max_by_key(|n| {
                self.nodes[*n]
                    .live
                    .as_ref()
                    .map(|l| l.shell.server().raft().term())
            })
    }

    fn churn(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let nodes = self.nodes.len() as u64;
        let target = NodeId(self.rng.gen_range(1..=nodes));
        let choice = self.rng.gen_range(0..5);
        let live = self.nodes[leader].live.as_mut().expect("live leader");
        let (version, config) = live.shell.server().raft().configuration();
        let role = config.role(target);
        let result = match choice {
            0 => live
                .shell
                .server_mut()
                .raft_mut()
                .transfer_leadership(target)
                .map(|_| LogIndex::ZERO)
                .map_err(|e| e.to_string()),
            1 if role == Some(MemberRole::Voter) => live
                .shell
                .server_mut()
                .raft_mut()
                .change_membership(MembershipChange::AddPassive(target), Some(version))
                .map_err(|e| e.to_string()),
            2 if role == Some(MemberRole::Voter) => live
                .shell
                .server_mut()
                .raft_mut()
                .change_membership(MembershipChange::Remove(target), Some(version))
                .map_err(|e| e.to_string()),
            3 if role == Some(MemberRole::Voter) => live
                .shell
                .server_mut()
                .raft_mut()
                .change_membership(MembershipChange::AddReserve(target), Some(version))
                .map_err(|e| e.to_string()),
            _ => live
                .shell
                .server_mut()
                .raft_mut()
                .change_membership(MembershipChange::AddVoter(target), Some(version))
                .map_err(|e| e.to_string()),
        };
        let leader_id = self.nodes[leader].id;
        self.trace(format_args!(
            "churn on {leader_id:?}: change {choice} for {target:?} -> {result:?}"
        ));
        self.process(leader);
    }

    // ----- Liveness -------------------------------------------------------------

    fn start_liveness(&mut self) {
        self.safety = false;
        self.liveness_started = Some(self.now);
        self.trace(format_args!("liveness phase: heal everything"));
        self.cut.clear();
        self.client_cut.clear();
        for node in 0..self.nodes.len() {
            self.unpause(node);
            if self.nodes[node].live.is_none() {
                self.start_node(node);
            }
        }
        // Every node back in the configuration as a voter, one change at a
        // time, is not required: whatever configuration the cluster has must
        // work.
        for client in &mut self.clients {
            client.ok_since_liveness = 0;
        }
        self.schedule(100, Event::LivenessCheck);
    }

    fn liveness_check(&mut self) {
        let started = self.liveness_started.expect("liveness started");
        let converged = self.converged();
        if converged {
            self.trace(format_args!("converged after {}ms", self.now - started));
            self.done = true;
            return;
        }
        if self.now - started > self.params.liveness_ms {
            let state: Vec<String> = self
                .nodes
                .iter()
                .map(|n| match &n.live {
                    Some(l) => format!(
                        "{:?}:{:?}/{:?} commit={:?} applied={:?} member={:?}",
                        n.id,
                        l.shell.server().raft().role(),
                        l.shell.server().raft().term(),
                        l.shell.server().raft().commit_index(),
                        l.shell.server().replica().applied_index(),
                        l.shell.server().raft().member_role()
                    ),
                    None => format!("{:?}:down", n.id),
                })
                .collect();
            let sessions: String = self
                .current_leader()
                .and_then(|leader| self.nodes[leader].live.as_ref())
                .map(|live| {
                    let replica = live.shell.server().replica();
                    format!(
                        "leader replica time {}ms, sessions {:?}, suspect {:?}",
                        replica.time_ms(),
                        replica
                            .sessions()
                            .iter()
                            .map(|s| (s.id.0, replica.session_timing(s.id)))
                            .collect::<Vec<_>>(),
                        replica.suspect_sessions()
                    )
                })
                .unwrap_or_default();
            let oks: Vec<String> = self
                .clients
                .iter()
                .map(|c| {
                    format!(
                        "{} ok, {:?}, session {:?}, waiting {}",
                        c.ok_since_liveness,
                        c.session.state(),
                        c.session.session_id(),
                        c.waiting.is_some()
                    )
                })
                .collect();
            self.fail(format!("liveness: no convergence within {}ms of healing: {state:?}, client successes {oks:?}; {sessions}", self.params.liveness_ms));
            return;
        }
        self.schedule(100, Event::LivenessCheck);
    }

    /// A leader exists, every client completed an operation since the heal,
    /// and every replicating member applied everything the leader committed.
    /// A leader exists, every client completed an operation since the heal,
    /// and every replicating member applied everything the leader had
    /// committed at the previous check (the log keeps moving: keep-alives
    /// and time entries go on, so "equal right now" would be too strict).
    fn converged(&mut self) -> bool {
        let Some(leader) = self.current_leader() else {
            self.liveness_target = None;
            return false;
        };
        if self
            .clients
            .iter()
            .any(|c| !c.dead && c.ok_since_liveness == 0)
        {
            return false;
        }
        let live = self.nodes[leader].live.as_ref().expect("leader is live");
        // The sessions of crashed clients expire.
        let open: Vec<copycat_proto::SessionId> = live
            .shell
            .server()
            .replica()
            .sessions()
            .iter()
            .map(|s| s.id)
            .collect();
        if self
            .clients
            .iter()
            .any(|c| c.dead && c.last_session.is_some_and(|s| open.contains(&s)))
        {
            return false;
        }
        let commit = live.shell.server().raft().commit_index();
        let Some(target) = self.liveness_target.replace(commit) else {
            return false;
        };
        let (_, config) = live.shell.server().raft().configuration();
        config.members.iter().all(|(id, role)| {
            !role.replicates()
                || self.nodes[(id.0 - 1) as usize]
                    .live
                    .as_ref()
                    .is_some_and(|n| n.shell.server().replica().applied_index() >= target)
        })
    }
}

fn event_target(event: &Event) -> Option<usize> {
    match event {
        Event::Deliver(message) => Some((message.to.0 - 1) as usize),
        Event::Sync { node, .. } | Event::ClientRequest { node, .. } => Some(*node),
        _ => None,
    }
}

fn server_config(raft: Config, params: &SimParams) -> ServerConfig {
    let mut config = ServerConfig::new(raft);
    config.snapshot_every_entries = params.snapshot_every;
    // Session timeouts are the clients' (20 election timeouts); allow them.
    config.replica.max_session_timeout_ms = config
        .replica
        .max_session_timeout_ms
        .max(20 * params.election_timeout_ms);
    config
}

fn storage_options(params: &SimParams) -> StorageOptions {
    StorageOptions {
        log: LogOptions {
            segment_size_max_bytes: params.segment_bytes,
            // Small, so appends reach the disk before the sync that makes
            // them durable, and a crash can tear them.
            write_buffer_max_bytes: params.write_buffer_bytes,
            ..LogOptions::default()
        },
        snapshots_retained_old: 0,
    }
}
