//! The simulated world: the event queue, scheduling, tracing, and the run
//! from start to verdict. The servers (`nodes.rs`), the network
//! (`network.rs`), the clients and their workload (`clients.rs`), the
//! faults (`faults.rs`) and the liveness phase (`liveness.rs`) are
//! `impl Simulation` blocks of their own.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;

use copycat_proto::{ClientRequest, ServerMessage};
use copycat_raft::{Config, Message, NodeId};
use copycat_storage::FaultDisk;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::clients::SimClient;
use super::faults::Cuts;
use super::nodes::SimNode;
use super::params::SimParams;
use super::stats::HistoryStats;
use crate::history::History;
use crate::invariants::{fnv1a, DurableLog, Observer};
use crate::linearizability::{check, CheckConfig, Register, Verdict};

/// How often every server's clock is advanced (ms of real time).
pub(super) const TICK_MS: u64 = 5;
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
    /// What the clients' history holds.
    pub stats: HistoryStats,
    /// The last events before the end (for failure reports).
    pub trace_tail: Vec<String>,
    /// The client history as JSON lines (for external checkers).
    pub history_json: String,
}

#[derive(Clone, Debug)]
pub(super) enum Event {
    TickAll,
    Deliver(Message),
    Sync {
        node: usize,
        incarnation: u64,
    },
    /// Carry out the inputs a node received.
    Process {
        node: usize,
        incarnation: u64,
    },
    /// A node's snapshot job has written and synced its file.
    SnapshotWritten {
        node: usize,
        incarnation: u64,
    },
    /// A node's oldest restore job has decoded its snapshot's image.
    RestoreDone {
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
    /// A server's message on a client connection (shared by the clients
    /// of [`SimParams::sessions_per_connection`]).
    ClientReply {
        connection: usize,
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
    /// Repair the network fault with this id.
    Heal {
        fault: u64,
    },
    ClientCrash {
        client: usize,
    },
    Liveness,
    LivenessCheck,
}

/// A whole simulated cluster with its clients.
pub struct Simulation {
    /// Parameters of this run.
    pub params: SimParams,
    pub(super) rng: ChaCha8Rng,
    pub(super) now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    pub(super) nodes: Vec<SimNode>,
    pub(super) clients: Vec<SimClient>,
    pub(super) cuts: Cuts,
    pub(super) next_fault: u64,
    pub(super) safety: bool,
    pub(super) liveness_started: Option<u64>,
    /// The leader's commit index at the previous liveness check.
    pub(super) liveness_target: Option<copycat_raft::LogIndex>,
    pub(super) done: bool,
    pub(super) history: History,
    pub(super) observer: Observer,
    pub(super) stats: HistoryStats,
    digest: u64,
    events: u64,
    trace: VecDeque<String>,
    line: String,
    failure: Option<String>,
    pub(super) raft_template: Config,
    pub(super) final_reads: super::liveness::FinalReads,
    pub(super) primitive_clients: super::primitives::PrimitiveClients,
    /// Per client connection, which of its sessions a message is for.
    pub(super) routes: BTreeMap<usize, copycat_client::session::SessionRoutes>,
}

impl Simulation {
    /// Build the world for `params`, with an optional Raft configuration hook.
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
                let spread = params.clock_rate_spread;
                SimNode {
                    id: NodeId(id),
                    disk,
                    dir: PathBuf::from(format!("/n{id}")),
                    live: None,
                    incarnation: 0,
                    paused: false,
                    deferred: Vec::new(),
                    clock_offset_ms: rng.gen_range(0..1_000_000),
                    clock_rate: 1.0 + rng.gen_range(-spread..=spread),
                    wall_skew_ms: rng.gen_range(0..=30),
                    durable: DurableLog::default(),
                    rounds: BTreeMap::new(),
                    answered: None,
                    crash_after_vote: false,
                    process_scheduled: false,
                    read_floors: BTreeMap::new(),
                    granted_vote: None,
                }
            })
            .collect();
        let clients = (0..params.clients)
            .map(|client| SimClient::new(client as usize, &params, &mut rng))
            .collect();
        let replica_config = super::nodes::server_config(raft_template.clone(), &params).replica;
        let mut sim = Self {
            params,
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            clients,
            cuts: Cuts::default(),
            next_fault: 0,
            safety: true,
            liveness_started: None,
            liveness_target: None,
            done: false,
            history: History::new(),
            observer: Observer::new(replica_config),
            stats: HistoryStats::default(),
            digest: 0xcbf2_9ce4_8422_2325,
            events: 0,
            trace: VecDeque::new(),
            line: String::new(),
            failure: None,
            raft_template,
            final_reads: Default::default(),
            primitive_clients: Default::default(),
            routes: BTreeMap::new(),
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
    ///
    /// A panic inside the production code (a broken assertion or
    /// invariant: a replica that is wrong stops) ends the run as a failure
    /// of this seed, with its message and the trace before it.
    pub fn run(mut self) -> RunReport {
        while !self.done && self.failure.is_none() {
            let Some(((time, _), event)) = self.queue.pop_first() else {
                self.fail("event queue ran dry".into());
                break;
            };
            self.now = time;
            self.events += 1;
            let step =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(event)));
            if let Err(panic) = step {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic without a message".into());
                self.fail(format!("panic: {message}"));
            }
        }
        let outcome = match self.failure.clone() {
            Some(failure) => Outcome::Failed(failure),
            None => self.final_checks(),
        };
        self.stats.finish(&self.history);
        self.stats.primitives = self.observer.primitives.stats.clone();
        RunReport {
            params: self.params.clone(),
            outcome,
            digest: self.digest,
            events: self.events,
            end_ms: self.now,
            committed: self.observer.committed_count(),
            terms: self.observer.terms_with_leaders(),
            stats: self.stats.clone(),
            trace_tail: self.trace.iter().cloned().collect(),
            history_json: self.history.to_json_lines(),
        }
    }

    fn final_checks(&mut self) -> Outcome {
        if let Err(failure) = self.observer.check_all_acknowledged() {
            return Outcome::Failed(failure);
        }
        if let Err(failure) = self.check_counter() {
            return Outcome::Failed(failure);
        }
        let config = CheckConfig {
            steps_max: 4_000_000,
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

    pub(super) fn schedule(&mut self, delay_ms: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((self.now + delay_ms, self.seq), event);
    }

    fn fault_delay(&mut self) -> u64 {
        let mean = self.params.fault_interval_ms as f64;
        let uniform: f64 = self.rng.gen_range(0.0001..1.0);
        (-uniform.ln() * mean) as u64 + 1
    }

    pub(super) fn trace(&mut self, args: std::fmt::Arguments<'_>) {
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

    pub(super) fn fail(&mut self, failure: String) {
        if self.failure.is_none() {
            self.trace(format_args!("FAILURE: {failure}"));
            self.failure = Some(failure);
        }
    }

    pub(super) fn failed(&self) -> bool {
        self.failure.is_some()
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
                    self.tick_node(node);
                }
                self.schedule(TICK_MS, Event::TickAll);
            }
            Event::Deliver(message) => self.deliver(message),
            Event::Sync { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation && self.nodes[node].live.is_some() {
                    self.complete_sync(node);
                    self.process(node);
                }
            }
            Event::Process { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation {
                    self.process(node);
                }
            }
            Event::SnapshotWritten { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation && self.nodes[node].live.is_some() {
                    self.complete_snapshot(node);
                }
            }
            Event::RestoreDone { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation && self.nodes[node].live.is_some() {
                    self.complete_restore(node);
                }
            }
            Event::ClientWake { client } => self.client_wake(client),
            Event::ClientRequest {
                node,
                client,
                request,
            } => {
                if !self.cuts.client_cut(client, node) {
                    self.on_client_request(node, client, request);
                }
            }
            Event::ClientReply {
                connection,
                node,
                message,
            } => self.on_connection_reply(connection, node, message),
            Event::Fault => {
                if self.safety {
                    self.inject_fault();
                    let delay = self.fault_delay();
                    self.schedule(delay, Event::Fault);
                }
            }
            Event::PowerLoss { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation && self.nodes[node].live.is_some() {
                    let restart = self.rng.gen_range(1..=3 * self.params.election_timeout_ms);
                    self.power_loss(node, restart);
                }
            }
            Event::Restart { node } => {
                if self.nodes[node].live.is_none() {
                    self.start_node(node);
                }
            }
            Event::Unpause { node } => self.unpause(node),
            Event::Heal { fault } => {
                self.trace(format_args!("heal fault {fault}"));
                self.cuts.heal(fault);
            }
            Event::ClientCrash { client } => {
                self.trace(format_args!("client {client} crashed"));
                self.clients[client].dead = true;
            }
            Event::Liveness => self.start_liveness(),
            Event::LivenessCheck => self.liveness_check(),
        }
    }
}

fn event_target(event: &Event) -> Option<usize> {
    match event {
        Event::Deliver(message) => Some((message.to.0 - 1) as usize),
        Event::Sync { node, .. }
        | Event::Process { node, .. }
        | Event::SnapshotWritten { node, .. }
        | Event::RestoreDone { node, .. }
        | Event::ClientRequest { node, .. } => Some(*node),
        _ => None,
    }
}
