//! The simulated servers: each is the production runtime shell (server
//! core over the production storage on a fault-injecting disk), started,
//! crashed, paused and restarted by the simulator, and observed after every
//! step.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use copycat_proto::ClientRequest;
use copycat_raft::{Entry, LogIndex, MessageBody, NodeId, ReadPath, Role, Term, Time};
use copycat_replica::node::ServerConfig;
use copycat_replica::shell::{
    Bootstrap, RestoreJob, Shell, ShellConfig, SnapshotJob, SnapshotReport, Written,
};
use copycat_replica::{Applied, Typed};
use copycat_storage::{Disk, FaultDisk, LogOptions, LogSync, Removals, StorageOptions};
use rand::Rng;

use super::kv::KvMachine;
use super::params::SimParams;
use super::world::{Event, Simulation};

/// The cluster id every simulated server is bootstrapped with.
const SIM_CLUSTER_ID: u64 = 0x51;
use crate::invariants::DurableLog;

/// A running server: the production shell (server core and storage).
pub(super) struct LiveNode {
    pub(super) shell: Shell<Typed<KvMachine>>,
    pub(super) sync_scheduled: bool,
    /// A snapshot taken and being written (phase 2, modelled as taking a
    /// disk latency and a millisecond; see `complete_snapshot`).
    snapshot_job: Option<SnapshotJob>,
    /// Restores of snapshots received from the leader, decoding "on
    /// another thread": each completes after a random delay (see
    /// `complete_restore`), the server holding back entries meanwhile. A
    /// newer one supersedes those before it.
    restore_jobs: std::collections::VecDeque<RestoreJob>,
    /// Entries written but not yet synced: index to term.
    written: BTreeMap<LogIndex, Term>,
    /// A log sync begun "on another thread" (`Shell::begin_sync`), run and
    /// finished when its disk latency is over; batches written meanwhile
    /// wait for the next one.
    sync_job: Option<LogSync>,
    /// The entries it covers (written when it began, not truncated since).
    syncing: BTreeMap<LogIndex, Term>,
    /// Files the storage no longer needs, removed "on another thread": at
    /// the node's next sync (a crash before leaves them on the disk).
    removals: Vec<Removals>,
    last_role: Role,
    last_term: Term,
    last_commit: LogIndex,
}

/// A server slot: its disk survives crashes; its process may be down.
pub(super) struct SimNode {
    pub(super) id: NodeId,
    pub(super) disk: FaultDisk,
    pub(super) dir: PathBuf,
    pub(super) live: Option<LiveNode>,
    pub(super) incarnation: u64,
    pub(super) paused: bool,
    pub(super) deferred: Vec<Event>,
    pub(super) clock_offset_ms: u64,
    pub(super) clock_rate: f64,
    /// The wall clock (which stamps log entries) runs this far ahead of
    /// real time (behind when negative): tens of milliseconds apart under
    /// NTP, more after a clock-jump fault.
    pub(super) wall_skew_ms: i64,
    pub(super) durable: DurableLog,
    /// As leader of a term: the local time each read round was first sent
    /// (for the lease bound).
    pub(super) rounds: BTreeMap<(Term, u64), Time>,
    /// The latest send time of a round some follower answered, in the term
    /// this server leads (or led last).
    pub(super) answered: Option<(Term, Time)>,
    /// Crash as soon as this server has saved a vote (a fault armed).
    pub(super) crash_after_vote: bool,
    /// A `Process` event is queued.
    pub(super) process_scheduled: bool,
    /// The last vote this server granted (term, candidate): sent only once
    /// saved, so it must survive a crash.
    pub(super) granted_vote: Option<(Term, NodeId)>,
    /// As leader: the commit index when each linearizable read arrived,
    /// by (client, request).
    pub(super) read_floors: BTreeMap<(usize, copycat_proto::RequestId), LogIndex>,
}

/// Wall clocks start here, so that a clock jumped back stays positive.
const WALL_EPOCH_MS: i64 = 1_000_000_000;

impl Simulation {
    /// The node's wall clock, which stamps the log entries it proposes.
    pub(super) fn wall_time(&self, node: usize) -> u64 {
        (self.now as i64 + WALL_EPOCH_MS + self.nodes[node].wall_skew_ms) as u64
    }

    pub(super) fn local_time(&self, node: usize) -> Time {
        let node = &self.nodes[node];
        Time(node.clock_offset_ms + (self.now as f64 * node.clock_rate) as u64)
    }

    pub(super) fn tick_node(&mut self, node: usize) {
        if self.nodes[node].live.is_none() || self.nodes[node].paused {
            return;
        }
        let now = self.local_time(node);
        let wall = self.wall_time(node);
        self.nodes[node]
            .live
            .as_mut()
            .expect("live")
            .shell
            .tick(now, wall);
        self.process(node);
    }

    pub(super) fn start_node(&mut self, node: usize) {
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
            compute_digests: true,
        };
        let disk: Arc<dyn Disk> = Arc::new(sim_node.disk.clone());
        let wall = (self.now as i64 + WALL_EPOCH_MS + sim_node.wall_skew_ms) as u64;
        let machine = Typed(KvMachine::default());
        let bootstrap = Bootstrap::voters(SIM_CLUSTER_ID, sim_node.id, members);
        let mut shell = match Shell::open(
            config,
            &sim_node.dir,
            disk,
            Some(bootstrap),
            machine,
            now,
            wall,
        ) {
            Ok(shell) => shell,
            Err(error) => {
                let id = sim_node.id;
                self.fail(format!(
                    "{id:?} cannot restart from its data directory: {error}"
                ));
                return;
            }
        };
        shell.server_mut().record_applied();
        if self.params.defer_removals {
            shell.defer_removals();
        }
        if self.params.defer_writes {
            shell.defer_writes();
        }
        // Term and vote are saved before any message that depends on them
        // is sent (Raft Figure 2): a vote granted survives the crash.
        let hard_state = shell.server().raft().hard_state();
        if let Some((term, candidate)) = sim_node.granted_vote {
            if hard_state.term < term
                || (hard_state.term == term && hard_state.vote != Some(candidate))
            {
                let id = sim_node.id;
                self.fail(format!(
                    "durability: {id:?} granted its vote in {term:?} to {candidate:?}, but restarted with term {:?} and vote {:?}",
                    hard_state.term, hard_state.vote
                ));
                return;
            }
        }
        sim_node.rounds.clear();
        sim_node.process_scheduled = false;
        sim_node.read_floors.clear();
        sim_node.answered = None;
        // Recovery keeps every entry that was synced (the power may have
        // cut unsynced ones, never synced ones), then the durable view is
        // what it returned.
        let recovered = shell.recovered().clone();
        let kept: BTreeMap<LogIndex, Term> = recovered.entries.iter().copied().collect();
        let lost = sim_node
            .durable
            .terms
            .iter()
            .find(|(index, term)| **index > recovered.snapshot && kept.get(index) != Some(term))
            .map(|(index, term)| (*index, *term));
        let id = sim_node.id;
        let failure = match lost {
            Some((index, term)) => Some(format!(
                "durability: {id:?} synced entry {index:?} of {term:?}, but recovery after the crash returned {:?}",
                kept.get(&index)
            )),
            None if recovered.snapshot < sim_node.durable.snapshot => Some(format!(
                "durability: {id:?} installed snapshot {:?}, but recovery returned snapshot {:?}",
                sim_node.durable.snapshot, recovered.snapshot
            )),
            None => None,
        };
        if let Some(failure) = failure {
            self.fail(failure);
            return;
        }
        let sim_node = &mut self.nodes[node];
        sim_node.durable = DurableLog {
            snapshot: recovered.snapshot,
            terms: recovered.entries.iter().copied().collect(),
        };
        let commit = shell.server().raft().commit_index();
        let applied = shell.server().replica().applied_index();
        let id = sim_node.id;
        // A replica restored from its own snapshot must be the replica that
        // replaying the log from the start gives.
        let restored = self
            .observer
            .check_restored(id, shell.server().replica(), "restart");
        sim_node.live = Some(LiveNode {
            shell,
            sync_scheduled: false,
            snapshot_job: None,
            restore_jobs: std::collections::VecDeque::new(),
            written: BTreeMap::new(),
            sync_job: None,
            syncing: BTreeMap::new(),
            removals: Vec::new(),
            last_role: Role::Follower,
            last_term: Term(0),
            last_commit: commit,
        });
        self.observer.node_restarted(id);
        self.trace(format_args!(
            "{id:?} started (applied {applied:?}, recovery discarded {} bytes of torn tail)",
            recovered.discarded_bytes
        ));
        if let Err(failure) = restored {
            self.fail(failure);
        }
    }

    pub(super) fn crash(&mut self, node: usize, torn: bool) {
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
    pub(super) fn corrupt_unsynced_tail(&mut self, node: usize) {
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

    pub(super) fn unpause(&mut self, node: usize) {
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

    /// Have the node carry out its inputs: like the runtime, which drains
    /// every input waiting on its channel before it writes, several inputs
    /// that arrive together (here: within the same millisecond, or the
    /// next) are handled by one `write`, so one batch can both commit
    /// entries and confirm reads.
    pub(super) fn process_soon(&mut self, node: usize) {
        if self.nodes[node].process_scheduled {
            return;
        }
        self.nodes[node].process_scheduled = true;
        let delay = u64::from(self.rng.gen_bool(self.params.input_batching));
        let incarnation = self.nodes[node].incarnation;
        self.schedule(delay, Event::Process { node, incarnation });
    }

    /// Let the node's shell write everything it has (step 1 of every
    /// batch), observe what it wrote, send what needs no durability, and
    /// schedule the disk sync after the disk's latency (group commit: every
    /// batch written until then shares that sync).
    pub(super) fn process(&mut self, node: usize) {
        self.nodes[node].process_scheduled = false;
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
            // The sync runs elsewhere from now (the server's way), or in
            // place when the latency is over, covering every batch written
            // until then.
            if self.rng.gen_bool(self.params.sync_elsewhere) {
                match live.shell.begin_sync() {
                    Ok(Some(job)) => {
                        live.sync_job = Some(job);
                        live.syncing.append(&mut live.written);
                    }
                    Ok(None) => {}
                    Err(error) => {
                        self.fail(format!("{id:?} begin sync: {error}"));
                        return;
                    }
                }
            }
            let incarnation = self.nodes[node].incarnation;
            let latency = self.params.disk_latency_ms;
            self.schedule(latency, Event::Sync { node, incarnation });
        } else if !written.pending && !live.sync_scheduled {
            // Writes deferred and nothing to sync: what is still queued (a
            // finished sync's marker) is written by a job of its own.
            if let Some(job) = live.shell.begin_writes() {
                live.sync_scheduled = true;
                live.sync_job = Some(job);
                let incarnation = self.nodes[node].incarnation;
                let latency = self.params.disk_latency_ms;
                self.schedule(latency, Event::Sync { node, incarnation });
            }
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
            live.syncing.retain(|index, _| *index < first.index);
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
            // A sync in flight is covered too.
            let live = self.nodes[node].live.as_mut().expect("live");
            let still_unsynced = live.written.split_off(&synced.next());
            let mut durable = std::mem::replace(&mut live.written, still_unsynced);
            durable.append(&mut live.syncing);
            self.nodes[node].durable.terms.extend(durable);
        }
        self.observe_applied(node, &written.applied)?;
        if let Some(meta) = &written.received {
            // Entries after a snapshot that conflicts with the log were
            // discarded with it (they could not match the leader's).
            let sim_node = &mut self.nodes[node];
            let live = sim_node.live.as_mut().expect("live");
            let log = live.shell.storage().log();
            let kept = |index: &LogIndex, term: &mut Term| {
                *index > meta.index && log.term(*index) == Some(*term)
            };
            live.written.retain(kept);
            sim_node.durable.snapshot = sim_node.durable.snapshot.max(meta.index);
            sim_node.durable.terms.retain(kept);
            // Its image is decoded "elsewhere" and installed after a delay
            // of up to an election timeout, while the node keeps going.
            if let Some(job) = live.shell.take_restore_job() {
                live.restore_jobs.push_back(job);
                let incarnation = sim_node.incarnation;
                let delay = self.rng.gen_range(0..=self.params.election_timeout_ms);
                self.schedule(delay, Event::RestoreDone { node, incarnation });
            }
            self.trace(format_args!("{id:?} installed snapshot {:?}", meta.index));
        }
        Ok(())
    }

    /// State machine safety for every entry applied, the state machine's
    /// own exactly-once and per-client order checks, and the replica's
    /// records (time, expiries, events) against the log.
    fn observe_applied(&mut self, node: usize, applied: &[Entry]) -> Result<(), String> {
        let id = self.nodes[node].id;
        for entry in applied {
            self.observer.on_applied(id, entry)?;
        }
        let live = self.nodes[node].live.as_mut().expect("live");
        let records: Vec<Applied> = live.shell.server_mut().take_applied_records();
        let machine = &live.shell.server().replica().machine().0;
        if machine.duplicates > 0 || machine.reordered > 0 {
            return Err(format!(
                "{id:?}: {} client operations applied twice, {} out of client order",
                machine.duplicates, machine.reordered
            ));
        }
        self.observer.on_applied_records(id, &records)
    }

    /// Send what the shell produced: peer messages over the simulated
    /// network, client messages to the clients.
    pub(super) fn flush_outputs(&mut self, node: usize) {
        let now = self.local_time(node);
        let Some(live) = self.nodes[node].live.as_mut() else {
            return;
        };
        let outputs = live.shell.take_outputs();
        let term = live.shell.server().raft().term();
        let leader = live.shell.server().raft().is_leader();
        for message in outputs.peer_messages {
            if let MessageBody::VoteResponse { granted: true } = &message.body {
                self.nodes[node].granted_vote = Some((message.term, message.to));
            }
            if leader {
                if let MessageBody::Heartbeat { read_round, .. }
                | MessageBody::Append { read_round, .. } = &message.body
                {
                    let rounds = &mut self.nodes[node].rounds;
                    if rounds
                        .first_key_value()
                        .is_some_and(|((t, _), _)| *t < term)
                    {
                        rounds.retain(|(t, _), _| *t >= term);
                    }
                    rounds.entry((term, *read_round)).or_insert(now);
                }
            }
            self.send(message);
        }
        for (connection, message) in outputs.client_messages {
            self.send_to_client(connection as usize, node, message);
        }
    }

    /// The disk finished: the shell's one sync covers every batch written
    /// since the last one; then its messages go out and entries apply.
    pub(super) fn complete_sync(&mut self, node: usize) {
        let id = self.nodes[node].id;
        let live = self.nodes[node].live.as_mut().expect("live");
        live.sync_scheduled = false;
        for removals in std::mem::take(&mut live.removals) {
            let files = removals.len();
            if let Err(error) = removals.run() {
                self.fail(format!("{id:?} removals: {error}"));
                return;
            }
            self.trace(format_args!(
                "{id:?} removed {files} files it no longer needs"
            ));
        }
        let live = self.nodes[node].live.as_mut().expect("live");
        let (synced, written) = match live.sync_job.take() {
            Some(job) => {
                let synced = live.shell.finish_sync(job.run());
                (synced, std::mem::take(&mut live.syncing))
            }
            None => {
                let synced = live.shell.sync();
                let mut written = std::mem::take(&mut live.written);
                written.append(&mut live.syncing);
                (synced, written)
            }
        };
        let synced = match synced {
            Ok(synced) => synced,
            Err(error) => {
                self.fail(format!("{id:?} sync: {error}"));
                return;
            }
        };
        live.shell.storage().invariants();
        self.nodes[node].durable.terms.extend(written);
        if let Err(failure) = self.observe_applied(node, &synced.applied) {
            self.fail(failure);
            return;
        }
        // Phase 1 of a snapshot that fell due; phase 2 (writing and
        // syncing it) takes a disk latency, while the node keeps working.
        let live = self.nodes[node].live.as_mut().expect("live");
        match live.shell.start_snapshot() {
            Ok(None) => {}
            Ok(Some(job)) => {
                let index = job.meta().index;
                live.snapshot_job = Some(job);
                let incarnation = self.nodes[node].incarnation;
                let latency = self.params.disk_latency_ms + 1;
                self.schedule(latency, Event::SnapshotWritten { node, incarnation });
                self.trace(format_args!("{id:?} started snapshot at {index:?}"));
            }
            Err(error) => {
                self.fail(format!("{id:?} snapshot: {error}"));
                return;
            }
        }
        self.after_step(node);
        self.flush_outputs(node);
    }

    /// The node's snapshot job ran (phase 2: its file written and synced):
    /// install it and tell the core (phase 3), then carry out what that
    /// produced (the log purge).
    pub(super) fn complete_snapshot(&mut self, node: usize) {
        let id = self.nodes[node].id;
        let live = self.nodes[node].live.as_mut().expect("live");
        let Some(job) = live.snapshot_job.take() else {
            return;
        };
        let index = job.meta().index;
        let finished = live.shell.finish_snapshot(job.run());
        live.shell.storage().invariants();
        match finished {
            Ok(Some(SnapshotReport { meta, digest })) => {
                let digest = digest.expect("the simulator computes digests");
                if let Err(failure) = self.observer.on_snapshot(id, meta.index, digest) {
                    self.fail(failure);
                    return;
                }
                let durable = &mut self.nodes[node].durable;
                durable.snapshot = durable.snapshot.max(meta.index);
                self.trace(format_args!("{id:?} took snapshot at {:?}", meta.index));
            }
            Ok(None) => self.trace(format_args!(
                "{id:?} dropped snapshot at {index:?} (a newer one was installed)"
            )),
            Err(error) => {
                self.fail(format!("{id:?} snapshot: {error}"));
                return;
            }
        }
        self.after_step(node);
        self.process(node);
    }

    /// The oldest restore job of the node ran: install its image (or drop
    /// it, when a newer snapshot superseded it), apply what was held back,
    /// and check the restored replica.
    pub(super) fn complete_restore(&mut self, node: usize) {
        let id = self.nodes[node].id;
        let live = self.nodes[node].live.as_mut().expect("live");
        let Some(job) = live.restore_jobs.pop_front() else {
            return;
        };
        let index = job.meta().index;
        let finished = live.shell.finish_restore(job.run());
        match finished {
            Ok(Some(SnapshotReport { meta, digest })) => {
                let digest = digest.expect("the simulator computes digests");
                if let Err(failure) = self.observer.on_snapshot(id, meta.index, digest) {
                    self.fail(failure);
                    return;
                }
                let live = self.nodes[node].live.as_ref().expect("live");
                if let Err(failure) = self.observer.check_restored(
                    id,
                    live.shell.server().replica(),
                    "snapshot install",
                ) {
                    self.fail(failure);
                    return;
                }
                // The entries held back were reported when committed;
                // what applying them did is checked now.
                if let Err(failure) = self.observe_applied(node, &[]) {
                    self.fail(failure);
                    return;
                }
                self.trace(format_args!("{id:?} restored snapshot {:?}", meta.index));
            }
            Ok(None) => self.trace(format_args!(
                "{id:?} dropped the restore of snapshot {index:?} (a newer one superseded it)"
            )),
            Err(error) => {
                self.fail(format!("{id:?} restore: {error}"));
                return;
            }
        }
        self.after_step(node);
        self.process(node);
    }

    /// Checks after a node handled inputs: its own invariants, commit
    /// monotonicity and durability, leadership changes, and direct checks
    /// of the commit and lease rules.
    fn after_step(&mut self, node: usize) {
        let now = self.local_time(node);
        let id = self.nodes[node].id;
        let Some(live) = self.nodes[node].live.as_mut() else {
            return;
        };
        live.shell.server().raft().invariants();
        if let Some(removals) = live.shell.take_removals() {
            live.removals.push(removals);
        }
        let raft = live.shell.server().raft();
        let vote = raft.hard_state().vote;
        let term = raft.term();
        if self.nodes[node].crash_after_vote && vote.is_some_and(|v| v != id) {
            // The vote is saved (term and vote are written atomically before
            // anything that depends on them is sent): die now, restart soon.
            self.nodes[node].crash_after_vote = false;
            self.trace(format_args!(
                "{id:?} crashes right after voting in {term:?}"
            ));
            self.crash(node, false);
            let restart = self.rng.gen_range(1..=self.params.election_timeout_ms / 4);
            self.schedule(restart, Event::Restart { node });
            return;
        }
        let Some(live) = self.nodes[node].live.as_mut() else {
            return;
        };
        let raft = live.shell.server().raft();
        let role = raft.role();
        let term = raft.term();
        let commit = raft.commit_index();
        let became_leader = role == Role::Leader && live.last_role != Role::Leader;
        let same_leadership = role == Role::Leader && !became_leader && live.last_term == term;
        live.last_role = role;
        live.last_term = term;
        let old_commit = live.last_commit;
        live.last_commit = commit;
        let lease_ms =
            self.raft_template.election_timeout_ms - self.raft_template.lease_clock_drift_ms;
        // A single voter confirms its rounds as they start: a lease it takes
        // may outlast a later change to more voters (safe: no new voter
        // elects anyone without it). The configuration counted is the
        // newest, in effect as soon as it is in the log.
        let single_voter = live
            .shell
            .server()
            .raft()
            .configurations_since(commit)
            .last()
            .is_some_and(|config| config.voter_count() <= 1);
        if role == Role::Leader && single_voter {
            self.nodes[node].answered = Some((term, now));
        }
        let result = (|| {
            self.observer.check_commit_monotonic(id, commit)?;
            let live = self.nodes[node].live.as_ref().expect("live");
            let raft = live.shell.server().raft();
            if commit > old_commit {
                // Every newly committed entry this node holds is the entry
                // known committed at its index.
                self.observer
                    .on_node_commit(id, old_commit, commit, |i| raft.entry(i))?;
            }
            if role != Role::Leader {
                return Ok(());
            }
            if became_leader {
                self.observer.on_leader(id, term)?;
                self.observer.check_leader_completeness(
                    id,
                    term,
                    raft.snapshot_meta().index,
                    |i| raft.entry(i),
                )?;
            }
            if commit > old_commit {
                // §5.4.2: a leader advances its commit index only by counting
                // replicas of an entry of its own term.
                let commit_term = raft.term_at(commit).expect("leader holds its commit");
                if same_leadership && commit_term != term {
                    return Err(format!(
                        "commit rule (§5.4.2): leader {id:?} of {term:?} advanced its commit index \
                         from {old_commit:?} to {commit:?}, an entry of {commit_term:?}"
                    ));
                }
                self.observer
                    .on_leader_commit(id, term, old_commit, commit, |i| raft.entry(i))?;
                let durable: BTreeMap<NodeId, DurableLog> = self
                    .nodes
                    .iter()
                    .map(|n| (n.id, n.durable.clone()))
                    .collect();
                self.observer.check_commit_durable(
                    id,
                    commit,
                    commit_term,
                    &raft.configurations_since(commit),
                    &durable,
                )?;
            }
            if let Some(lease_until) = raft.lease_until() {
                // A lease starts no later than the send time of a round a
                // follower answered, and lasts the lease length.
                let start = self.nodes[node]
                    .answered
                    .filter(|(t, _)| *t == term)
                    .map(|(_, sent)| sent);
                let bound = start.map(|s| s.plus_ms(lease_ms));
                if bound.is_none_or(|bound| lease_until > bound)
                    || lease_until > now.plus_ms(lease_ms)
                {
                    return Err(format!(
                        "lease bound: leader {id:?} of {term:?} holds a lease until {lease_until:?}, \
                         past the send time of its last answered round ({start:?}) plus {lease_ms}ms"
                    ));
                }
            }
            let configs = raft.configurations_since(commit);
            let mut uncommitted = Vec::new();
            let mut index = commit.next();
            while index <= raft.last_index() {
                if let Some(entry) = raft.entry(index) {
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
            Ok(())
        })();
        if let Err(failure) = result {
            self.fail(failure);
        }
    }

    pub(super) fn on_client_request(&mut self, node: usize, client: usize, request: ClientRequest) {
        let now = self.local_time(node);
        let id = self.nodes[node].id;
        let Some(live) = self.nodes[node].live.as_mut() else {
            return;
        };
        // A linearizable read confirmed by this leader is answered from a
        // state that includes everything it had committed when the read
        // arrived (its read index), checked when the answer goes out.
        let raft = live.shell.server().raft();
        let read_floor = match &request.request {
            copycat_proto::Request::Query { consistency, .. }
                if *consistency != copycat_proto::Consistency::Sequential && raft.is_leader() =>
            {
                Some(raft.commit_index())
            }
            _ => None,
        };
        let connection = self.params.connection_of(client);
        if let Some(floor) = read_floor {
            let floors = &mut self.nodes[node].read_floors;
            if floors.len() >= 10_000 {
                floors.pop_first();
            }
            floors.insert((connection, request.id), floor);
        }
        let Some(live) = self.nodes[node].live.as_mut() else {
            return;
        };
        let path = live.shell.on_request(connection as u64, request, now);
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
        self.process_soon(node);
    }
}

pub(super) fn server_config(raft: copycat_raft::Config, params: &SimParams) -> ServerConfig {
    let mut config = ServerConfig::new(raft);
    config.snapshot_every_entries = params.snapshot_every;
    config.snapshot_log_percent = params.snapshot_log_percent;
    config.keep_alive_batch_ms = params.keep_alive_batch_ms;
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
