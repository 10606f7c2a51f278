//! [`ServerNode`]: one Copycat server as a deterministic state machine: the
//! Raft core and the replica, plus what joins them to clients.
//!
//! It routes client requests (commands and session operations through the
//! leader's log; queries by consistency level), answers them when their
//! entries apply, pushes events to the sessions connected to this server,
//! and does the leader's session duties: it proposes an `Expire` entry for
//! each suspect session and a `Tick` entry when the log is idle, so expiry
//! never waits for unrelated traffic.
//!
//! Like the core, it performs no I/O and reads no clock. The shell (the tokio
//! runtime, or the simulator) carries out [`Ready`] batches exactly as the
//! core documents, then hands the committed entries and read states of each
//! batch back through [`ServerNode::after_persist`], and delivers
//! [`ServerNode::take_client_messages`] to the connections.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use copycat_proto::{
    ClientError, ClientId, ClientRequest, Consistency, KeepAlive, LogBody, LogCommand, Request,
    RequestId, Response, Sequence, ServerMessage, SessionId,
};
use copycat_raft::{
    Config, Entry, InitError, LogIndex, PersistentState, RawNode, ReadMode, ReadPath, ReadState,
    Ready, Role, SnapshotError as RaftSnapshotError, SnapshotMeta, Time,
};

use crate::config::{ReplicaConfig, ReplicaConfigError};
use crate::image::ReplicaImage;
use crate::machine::RawStateMachine;
use crate::replica::{Applied, Outcome, PreparedImage, QueryOutcome, Replica, SnapshotError};

/// A client connection, named by the shell.
pub type ConnectionId = u64;

/// Settings of a [`ServerNode`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The Raft core's configuration.
    pub raft: Config,
    /// The replica's limits.
    pub replica: ReplicaConfig,
    /// The leader appends a time entry when nothing was proposed for this
    /// long, so session expiry and timers advance on an idle log.
    pub idle_tick_ms: u64,
    /// After proposing an `Expire` for a session, wait this long before
    /// proposing it again (the first may have been lost in a leader change).
    pub expire_retry_ms: u64,
    /// Take a snapshot once this many entries were applied since the last
    /// one (see [`ServerNode::snapshot_if_due`]), and the command payloads
    /// applied since reach [`snapshot_log_percent`](Self::snapshot_log_percent)
    /// of the last snapshot's size; at ten times this many entries in any
    /// case.
    pub snapshot_every_entries: u64,
    /// A large state is not written out again for a few small commands: a
    /// snapshot by entry count also waits until the payloads applied since
    /// the last snapshot reach this percentage of its size, so that the
    /// cost of snapshots stays in proportion to what is written (0: by
    /// entry count alone).
    pub snapshot_log_percent: u64,
    /// Or once this many bytes of command payloads were applied since the
    /// last one, whichever comes first: a log of large entries is
    /// compacted before it fills memory and disk.
    pub snapshot_every_bytes: u64,
    /// At most this many queries wait on this server at once: for a
    /// quorum's confirmation (linearizable reads), or for the server to
    /// apply the index and command sequence the client has seen. A query
    /// beyond it is refused with `Unavailable` (the client may retry, here
    /// or elsewhere). Queries of a connection that closes stop waiting.
    pub max_waiting_queries: usize,
    /// The leader collects the keep-alives that arrive within this window
    /// into one log entry (shortened for sessions whose timeout is short:
    /// a keep-alive never waits more than an eighth of its session's
    /// timeout), so idle sessions cost a few entries per second in total
    /// instead of one entry per session and keep-alive interval.
    pub keep_alive_batch_ms: u64,
    /// A batch is proposed at once when it holds this many keep-alives.
    pub max_keep_alive_batch: usize,
}

impl ServerConfig {
    /// Defaults around a Raft configuration.
    pub fn new(raft: Config) -> Self {
        // Often enough for expiry to be timely (sessions time out after
        // seconds), rarely enough not to load an idle log.
        let idle_tick_ms = raft.election_timeout_ms;
        let expire_retry_ms = raft.election_timeout_ms;
        Self {
            raft,
            replica: ReplicaConfig::default(),
            idle_tick_ms,
            expire_retry_ms,
            snapshot_every_entries: 10_000,
            snapshot_log_percent: 50,
            snapshot_every_bytes: 64 << 20,
            max_waiting_queries: 10_000,
            keep_alive_batch_ms: 200,
            max_keep_alive_batch: 4096,
        }
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The Raft core refused its configuration or state.
    #[error(transparent)]
    Raft(#[from] InitError),
    /// The replica configuration is invalid.
    #[error(transparent)]
    Replica(#[from] ReplicaConfigError),
    /// The snapshot could not be restored.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// A query waiting for its index to be applied.
#[derive(Clone, Debug)]
struct WaitingQuery {
    connection: ConnectionId,
    id: RequestId,
    session: SessionId,
    sequence: Sequence,
    /// The larger of the client's index and the read index.
    index: u64,
    payload: Bytes,
}

/// A server: Raft core, replica, and client plumbing.
pub struct ServerNode<M> {
    config: ServerConfig,
    raw: RawNode,
    replica: Replica<M>,
    now: Time,
    wall_ms: u64,
    last_proposal: Time,
    /// The timestamp of the last entry proposed (the leader's clock then).
    last_proposed_ms: u64,
    /// Bytes of command payloads applied since the last snapshot.
    bytes_since_snapshot: u64,
    /// Bytes of the latest snapshot's image (see `snapshot_size_is`).
    snapshot_bytes: u64,
    expiring: BTreeMap<SessionId, Time>,
    /// Requests waiting for the entry this server proposed for them, by the
    /// entry's index: only that entry answers them (an older entry of the
    /// same kind, replayed after a restart, must not).
    pending_entries: BTreeMap<LogIndex, Vec<(ConnectionId, RequestId)>>,
    /// The index of a registration in flight, per client, so retries wait
    /// on it instead of adding entries.
    registering: BTreeMap<ClientId, LogIndex>,
    pending_commands: BTreeMap<(SessionId, Sequence), Vec<(ConnectionId, RequestId)>>,
    pending_reads: BTreeMap<u64, WaitingQuery>,
    waiting_queries: Vec<WaitingQuery>,
    bindings: BTreeMap<SessionId, ConnectionId>,
    /// Keep-alives waiting to be proposed as one entry (leader only), and
    /// when the batch must go out.
    keep_alives: Vec<(ConnectionId, RequestId, KeepAlive)>,
    keep_alives_due: Option<Time>,
    outbox: Vec<(ConnectionId, ServerMessage)>,
    next_read: u64,
    was_leader: bool,
    /// The term of the leadership in which the requests waiting on entries
    /// were proposed, if any wait.
    proposed_in: Option<copycat_raft::Term>,
    /// What applying each entry did, kept for an observer that asked for it
    /// ([`ServerNode::record_applied`]); `None` in production.
    applied_records: Option<Vec<Applied>>,
    /// The index of the snapshot installed in the core whose image is
    /// being decoded elsewhere (see [`ServerNode::begin_restore`]).
    restoring: Option<LogIndex>,
    /// Committed entries handed out while a restore is pending: applied
    /// once the snapshot's image is installed (those it covers skipped).
    held_back: Vec<Entry>,
}

impl<M: RawStateMachine> ServerNode<M> {
    /// Start a server from its durable state and the state machine image of
    /// its latest snapshot (empty for none). `now` is the monotonic clock,
    /// `wall_ms` the wall clock used to stamp log entries.
    pub fn new(
        config: ServerConfig,
        state: PersistentState,
        snapshot_data: &[u8],
        machine: M,
        seed: u64,
        now: Time,
        wall_ms: u64,
    ) -> Result<Self, ServerError> {
        let mut replica = Replica::new(config.replica.clone(), machine)?;
        if !snapshot_data.is_empty() {
            replica.restore_at(snapshot_data, state.snapshot.index)?;
        }
        let raw = RawNode::new(config.raft.clone(), state, seed, now)?;
        Ok(Self {
            config,
            raw,
            replica,
            now,
            wall_ms,
            last_proposal: now,
            last_proposed_ms: 0,
            bytes_since_snapshot: 0,
            snapshot_bytes: 0,
            expiring: BTreeMap::new(),
            pending_entries: BTreeMap::new(),
            registering: BTreeMap::new(),
            pending_commands: BTreeMap::new(),
            pending_reads: BTreeMap::new(),
            waiting_queries: Vec::new(),
            bindings: BTreeMap::new(),
            keep_alives: Vec::new(),
            keep_alives_due: None,
            outbox: Vec::new(),
            next_read: 0,
            was_leader: false,
            proposed_in: None,
            applied_records: None,
            restoring: None,
            held_back: Vec::new(),
        })
    }

    /// The Raft core (read-only).
    pub fn raft(&self) -> &RawNode {
        &self.raw
    }

    /// The Raft core, for inputs the server does not wrap (peer messages,
    /// persistence reports, snapshot transfer, admin calls).
    pub fn raft_mut(&mut self) -> &mut RawNode {
        &mut self.raw
    }

    /// The replica (read-only).
    pub fn replica(&self) -> &Replica<M> {
        &self.replica
    }

    /// Advance the clocks and do the leader's duties.
    pub fn tick(&mut self, now: Time, wall_ms: u64) {
        self.now = self.now.max(now);
        self.wall_ms = self.wall_ms.max(wall_ms);
        self.raw.tick(self.now);
        if !self.raw.is_leader() {
            return;
        }
        // Expire sessions the replica finds suspect (decided by log time,
        // so every replica agrees; committed through the log). Keep-alives
        // waiting in a batch go first: one of them may be the suspect's,
        // and the expiry re-checks at apply time.
        let suspects = self.replica.suspect_sessions();
        if !suspects.is_empty() || self.keep_alives_due.is_some_and(|due| self.now >= due) {
            self.flush_keep_alives();
        }
        let retry = self.config.expire_retry_ms;
        for session in suspects {
            let due = self
                .expiring
                .get(&session)
                .is_none_or(|at| self.now.since(*at) >= retry);
            if due && self.propose(LogBody::Expire { session }).is_ok() {
                self.expiring.insert(session, self.now);
            }
        }
        if !self.expiring.is_empty() {
            let open: BTreeSet<SessionId> = self.replica.sessions().iter().map(|s| s.id).collect();
            self.expiring.retain(|session, _| open.contains(session));
        }
        // A timer fires before the first entry whose time reaches it: when
        // one is due by this leader's clock and no entry proposed since
        // carries that time, append one, so timers fire on time on an idle
        // log instead of at the next idle tick.
        let timer_due = self
            .replica
            .next_timer_due()
            .is_some_and(|due| self.wall_ms >= due && self.last_proposed_ms < due);
        if timer_due || self.now.since(self.last_proposal) >= self.config.idle_tick_ms {
            let _ = self.propose(LogBody::Tick);
        }
    }

    fn propose(&mut self, body: LogBody) -> Result<LogIndex, ClientError> {
        // Requests still waiting from an earlier leadership (lost and won
        // again since the last batch) are answered before new ones wait.
        if self.proposed_in.is_some_and(|t| t != self.raw.term()) {
            self.lost_leadership();
            self.proposed_in = None;
        }
        let command = LogCommand {
            timestamp_ms: self.wall_ms,
            body,
        };
        match self.raw.propose(vec![command.encode()]) {
            Ok((index, _)) => {
                self.last_proposal = self.now;
                self.last_proposed_ms = self.wall_ms;
                self.proposed_in = Some(self.raw.term());
                Ok(index)
            }
            Err(copycat_raft::ProposeError::NotLeader { leader }) => Err(ClientError::NotLeader {
                hint: leader.map(|l| l.0),
            }),
            Err(copycat_raft::ProposeError::TooLarge { size, limit }) => {
                Err(ClientError::TooLarge {
                    size: size as u64,
                    max: limit as u64,
                })
            }
            Err(error) => Err(ClientError::Unavailable(error.to_string())),
        }
    }

    /// Propose `body` for a client request; the request then waits on the
    /// entry's index (or is answered at once if the proposal fails).
    fn propose_for(
        &mut self,
        connection: ConnectionId,
        id: RequestId,
        body: LogBody,
    ) -> Option<LogIndex> {
        match self.propose(body) {
            Ok(index) => {
                self.pending_entries
                    .entry(index)
                    .or_default()
                    .push((connection, id));
                Some(index)
            }
            Err(error) => {
                self.respond(connection, id, Err(error));
                None
            }
        }
    }

    fn respond(
        &mut self,
        connection: ConnectionId,
        id: RequestId,
        result: Result<Response, ClientError>,
    ) {
        self.outbox
            .push((connection, ServerMessage::Response { id, result }));
    }

    /// Add a keep-alive to the batch the leader proposes as one entry. A
    /// follower answers at once that it is not the leader.
    fn batch_keep_alive(&mut self, connection: ConnectionId, id: RequestId, keep_alive: KeepAlive) {
        if !self.raw.is_leader() {
            let hint = self.raw.leader().map(|l| l.0);
            self.respond(connection, id, Err(ClientError::NotLeader { hint }));
            return;
        }
        let timeout = self
            .replica
            .session_timeout_ms(keep_alive.session)
            .unwrap_or(u64::MAX);
        let due = self
            .now
            .plus_ms(self.config.keep_alive_batch_ms.min(timeout / 8));
        self.keep_alives_due = Some(self.keep_alives_due.map_or(due, |d| d.min(due)));
        self.keep_alives.push((connection, id, keep_alive));
        if self.keep_alives.len() >= self.config.max_keep_alive_batch {
            self.flush_keep_alives();
        }
    }

    /// Propose the keep-alives collected so far as one entry; each waits on
    /// it for its own answer.
    fn flush_keep_alives(&mut self) {
        self.keep_alives_due = None;
        if self.keep_alives.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.keep_alives);
        let body = LogBody::KeepAlives(batch.iter().map(|(_, _, k)| *k).collect());
        match self.propose(body) {
            Ok(index) => self
                .pending_entries
                .entry(index)
                .or_default()
                .extend(batch.iter().map(|(connection, id, _)| (*connection, *id))),
            Err(error) => {
                for (connection, id, _) in batch {
                    self.respond(connection, id, Err(error.clone()));
                }
            }
        }
    }

    /// How many keep-alives wait to be proposed together.
    pub fn batched_keep_alives(&self) -> usize {
        self.keep_alives.len()
    }

    /// A request from a client connection. For a linearizable query,
    /// returns how the core is confirming it (a lease, or a quorum round):
    /// the simulator checks lease safety at that instant.
    pub fn on_request(
        &mut self,
        connection: ConnectionId,
        request: ClientRequest,
        now: Time,
    ) -> Option<ReadPath> {
        self.now = self.now.max(now);
        let ClientRequest { id, request } = request;
        // A server outside the configuration (removed, or never added) has
        // no business answering: its state stops at its removal.
        if self.raw.member_role().is_none() {
            let error = ClientError::Unavailable(format!(
                "server {} is not a member of the cluster",
                self.raw.id().0
            ));
            self.respond(connection, id, Err(error));
            return None;
        }
        match request {
            Request::Register { client, timeout_ms } => {
                // A retry while the first attempt is still in the log waits
                // for it instead of adding another entry: under load, retries
                // must not multiply the work.
                if let Some(index) = self.registering.get(&client) {
                    if self.raw.is_leader() {
                        self.pending_entries
                            .entry(*index)
                            .or_default()
                            .push((connection, id));
                        return None;
                    }
                }
                let body = LogBody::Register { client, timeout_ms };
                if let Some(index) = self.propose_for(connection, id, body) {
                    self.registering.insert(client, index);
                }
                None
            }
            Request::KeepAlive {
                session,
                command_sequence,
                event_index,
            } => {
                self.bindings.insert(session, connection);
                let keep_alive = KeepAlive {
                    session,
                    command_sequence,
                    event_index,
                };
                self.batch_keep_alive(connection, id, keep_alive);
                None
            }
            Request::Unregister { session } => {
                self.propose_for(connection, id, LogBody::Unregister { session });
                None
            }
            Request::Command {
                session,
                sequence,
                acked,
                payload,
            } => {
                self.bindings.insert(session, connection);
                let max = self.config.replica.max_command_bytes;
                if payload.len() > max {
                    let error = ClientError::TooLarge {
                        size: payload.len() as u64,
                        max: max as u64,
                    };
                    self.respond(connection, id, Err(error));
                    return None;
                }
                if let Some(waiting) = self.pending_commands.get_mut(&(session, sequence)) {
                    if self.raw.is_leader() {
                        waiting.push((connection, id));
                        return None;
                    }
                }
                // A command that would find the cache full is refused when
                // applied: refuse it now rather than write it to the log
                // (retries of doomed commands would flood the log).
                if self.raw.is_leader() && self.replica.result_cache_full(session, sequence, acked)
                {
                    let max = self.config.replica.max_cached_results_per_session as u64;
                    self.respond(connection, id, Err(ClientError::ResultCacheFull { max }));
                    return None;
                }
                match self.propose(LogBody::Command {
                    session,
                    sequence,
                    acked,
                    payload,
                }) {
                    Ok(_) => self
                        .pending_commands
                        .entry((session, sequence))
                        .or_default()
                        .push((connection, id)),
                    Err(error) => self.respond(connection, id, Err(error)),
                }
                None
            }
            Request::Query {
                session,
                sequence,
                index,
                consistency,
                payload,
            } => {
                self.bindings.insert(session, connection);
                let query = WaitingQuery {
                    connection,
                    id,
                    session,
                    sequence,
                    index,
                    payload,
                };
                #[cfg(feature = "planted-bugs")]
                if copycat_planted::active(copycat_planted::PlantedBug::LocalLinearizableRead)
                    && consistency != Consistency::Sequential
                    && self.raw.is_leader()
                {
                    self.waiting_queries.push(query);
                    self.serve_queries();
                    return None;
                }
                #[cfg(feature = "planted-bugs")]
                if copycat_planted::active(
                    copycat_planted::PlantedBug::FollowerLocalLinearizableRead,
                ) && consistency != Consistency::Sequential
                    && !self.raw.is_leader()
                    && self.not_replicating().is_none()
                {
                    if let Some(error) = self.too_many_waiting() {
                        self.respond(connection, id, Err(error));
                        return None;
                    }
                    self.waiting_queries.push(query);
                    self.serve_queries();
                    return None;
                }
                #[cfg(feature = "planted-bugs")]
                let mut query = query;
                #[cfg(feature = "planted-bugs")]
                if copycat_planted::active(
                    copycat_planted::PlantedBug::SequentialIgnoresClientIndex,
                ) && consistency == Consistency::Sequential
                {
                    query.index = 0;
                    query.sequence = Sequence(0);
                }
                let mode = match consistency {
                    Consistency::Sequential => {
                        if let Some(error) = self.not_replicating() {
                            self.respond(connection, id, Err(error));
                            return None;
                        }
                        // Answered now if it can be; only a query that
                        // must wait counts against the bound. While a
                        // restore is pending, every query waits for it.
                        let outcome = if self.restoring.is_some() {
                            QueryOutcome::Wait
                        } else {
                            self.replica.query(
                                query.session,
                                query.sequence,
                                LogIndex(query.index),
                                &query.payload,
                            )
                        };
                        match outcome {
                            QueryOutcome::Done(result) => self.respond(connection, id, result),
                            QueryOutcome::Wait => match self.too_many_waiting() {
                                Some(error) => self.respond(connection, id, Err(error)),
                                None => self.waiting_queries.push(query),
                            },
                        }
                        return None;
                    }
                    Consistency::Linearizable => ReadMode::ReadIndex,
                    Consistency::LinearizableLease => ReadMode::Lease,
                };
                if let Some(error) = self.too_many_waiting() {
                    self.respond(connection, id, Err(error));
                    return None;
                }
                self.next_read += 1;
                let read = self.next_read;
                match self.raw.read(read, mode, self.now) {
                    Ok(path) => {
                        self.pending_reads.insert(read, query);
                        return Some(path);
                    }
                    Err(copycat_raft::ReadError::NotLeader { leader }) => self.respond(
                        connection,
                        id,
                        Err(ClientError::NotLeader {
                            hint: leader.map(|l| l.0),
                        }),
                    ),
                    Err(error) => self.respond(
                        connection,
                        id,
                        Err(ClientError::Unavailable(error.to_string())),
                    ),
                }
                None
            }
            Request::ResetEvents {
                session,
                from_event_index,
            } => {
                if let Some(error) = self.not_replicating() {
                    self.respond(connection, id, Err(error));
                    return None;
                }
                if self.restoring.is_some() {
                    // The retained events are from before the snapshot.
                    let error = "installing a snapshot; retry shortly".to_string();
                    self.respond(connection, id, Err(ClientError::Unavailable(error)));
                    return None;
                }
                self.bindings.insert(session, connection);
                match self.replica.reset_events(session, from_event_index) {
                    Ok((response, batches)) => {
                        self.respond(connection, id, Ok(response));
                        for batch in batches {
                            self.outbox.push((connection, ServerMessage::Events(batch)));
                        }
                    }
                    Err(error) => self.respond(connection, id, Err(error)),
                }
                None
            }
        }
    }

    /// Why this server cannot serve reads from its own state, if it cannot:
    /// a reserve keeps no log, and a server outside the configuration no
    /// longer receives one; their replicas are stale for good.
    fn not_replicating(&self) -> Option<ClientError> {
        match self.raw.member_role() {
            Some(role) if role.replicates() => None,
            Some(_) => Some(ClientError::Unavailable(
                "this server is a reserve member and keeps no log; ask another".into(),
            )),
            None => Some(ClientError::Unavailable(
                "this server is not a member of the cluster; ask another".into(),
            )),
        }
    }

    /// The error for a query that would wait beyond
    /// [`ServerConfig::max_waiting_queries`], if it would.
    fn too_many_waiting(&self) -> Option<ClientError> {
        let max = self.config.max_waiting_queries;
        (self.waiting_queries() >= max).then(|| {
            ClientError::Unavailable(format!(
                "too many queries waiting on this server (limit {max}); retry later"
            ))
        })
    }

    /// How many queries wait: for a read confirmation, or for this server
    /// to apply what their client has seen.
    pub fn waiting_queries(&self) -> usize {
        self.waiting_queries.len() + self.pending_reads.len()
    }

    /// A connection went away: stop pushing its sessions' events, and drop
    /// the queries it was waiting for (nobody would read their answers;
    /// a query waiting for an index that never comes would stay forever).
    /// A read the core is still confirming is forgotten here; its
    /// confirmation, when it comes, finds nothing to answer.
    pub fn connection_closed(&mut self, connection: ConnectionId) {
        self.bindings.retain(|_, c| *c != connection);
        self.waiting_queries.retain(|q| q.connection != connection);
        self.pending_reads.retain(|_, q| q.connection != connection);
    }

    /// The core's next batch. Carry it out as [`Ready`] documents, and hand
    /// its `committed_entries` and `read_states` back through
    /// [`after_persist`](Self::after_persist) once it is durable.
    pub fn ready(&mut self) -> Ready {
        let ready = self.raw.ready();
        let leader = self.raw.is_leader();
        let term = self.raw.term();
        // Several inputs may be handled between two batches: this server may
        // have won an election, taken proposals and lost it again since the
        // last one. Requests proposed in a leadership that is over are
        // answered now, whatever happened in between.
        let proposals_orphaned = self.proposed_in.is_some_and(|t| !leader || t != term);
        if (self.was_leader && !leader) || proposals_orphaned {
            self.lost_leadership();
        }
        self.was_leader = leader;
        self.proposed_in = leader
            .then_some(term)
            .filter(|_| self.proposed_in.is_some() && !proposals_orphaned);
        ready
    }

    /// Whether [`ready`](Self::ready) has something.
    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// Requests waiting for entries this server proposed as leader may never
    /// be answered here: tell the clients to retry at the new leader. Their
    /// retries carry the same sequence numbers, so nothing applies twice.
    fn lost_leadership(&mut self) {
        let hint = self.raw.leader().map(|l| l.0);
        self.refuse_proposals(ClientError::NotLeader { hint });
    }

    /// Answer every request waiting for an entry this server proposed with
    /// `error` (the shell does so when its disk fills: those entries may
    /// not be written here for a while). The clients retry elsewhere with
    /// the same sequence numbers, so nothing applies twice.
    pub fn refuse_proposals(&mut self, error: ClientError) {
        let mut waiting: Vec<(ConnectionId, RequestId)> = Vec::new();
        waiting.extend(
            std::mem::take(&mut self.keep_alives)
                .into_iter()
                .map(|(connection, id, _)| (connection, id)),
        );
        self.keep_alives_due = None;
        waiting.extend(
            std::mem::take(&mut self.pending_entries)
                .into_values()
                .flatten(),
        );
        self.registering.clear();
        waiting.extend(
            std::mem::take(&mut self.pending_commands)
                .into_values()
                .flatten(),
        );
        for (connection, id) in waiting {
            self.respond(connection, id, Err(error.clone()));
        }
        self.expiring.clear();
    }

    /// The batch whose `committed_entries` and `read_states` these are is
    /// durable: apply the entries, answer the requests they complete, push
    /// events, and serve reads.
    pub fn after_persist(&mut self, committed: Vec<Entry>, read_states: Vec<ReadState>) {
        // Planted: confirmed reads answered before this batch's committed
        // entries are applied, without waiting for their read index.
        #[cfg(feature = "planted-bugs")]
        let read_states = if copycat_planted::active(copycat_planted::PlantedBug::ReadBeforeApply) {
            for read in read_states {
                if let (Some(query), Ok(_)) = (self.pending_reads.remove(&read.id), &read.result) {
                    self.waiting_queries.push(query);
                }
            }
            self.serve_queries();
            Vec::new()
        } else {
            read_states
        };
        let committed = if self.restoring.is_some() {
            self.hold_back(committed)
        } else {
            committed
        };
        for entry in committed {
            if entry.index <= self.replica.applied_index() {
                continue;
            }
            self.apply(&entry);
        }
        for read in read_states {
            let Some(mut query) = self.pending_reads.remove(&read.id) else {
                continue;
            };
            match read.result {
                Ok(index) => {
                    query.index = query.index.max(index.0);
                    self.waiting_queries.push(query);
                }
                Err(copycat_raft::ReadError::NotLeader { leader }) => self.respond(
                    query.connection,
                    query.id,
                    Err(ClientError::NotLeader {
                        hint: leader.map(|l| l.0),
                    }),
                ),
                Err(error) => self.respond(
                    query.connection,
                    query.id,
                    Err(ClientError::Unavailable(error.to_string())),
                ),
            }
        }
        self.serve_queries();
    }

    /// While a restore is pending, committed entries wait for it: they
    /// follow the snapshot, and applying them to the state from before it
    /// would skip everything it covers. Returns what to apply now (nothing,
    /// but with the planted `ApplyBeforeRestore`).
    fn hold_back(&mut self, committed: Vec<Entry>) -> Vec<Entry> {
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::ApplyBeforeRestore) {
            return committed;
        }
        self.held_back.extend(committed);
        Vec::new()
    }

    fn apply(&mut self, entry: &Entry) {
        if let copycat_raft::EntryPayload::Command(data) = &entry.payload {
            self.bytes_since_snapshot = self.bytes_since_snapshot.saturating_add(data.len() as u64);
        }
        let applied = self.replica.apply(entry);
        if let Some(records) = self.applied_records.as_mut() {
            records.push(applied.clone());
        }
        match applied.outcome {
            Outcome::Register { client, result } => {
                if self.registering.get(&client) == Some(&entry.index) {
                    self.registering.remove(&client);
                }
                // Every attempt waiting on this entry gets the session.
                for (connection, id) in self
                    .pending_entries
                    .remove(&entry.index)
                    .unwrap_or_default()
                {
                    if let Ok(Response::Registered { session, .. }) = &result {
                        self.bindings.insert(*session, connection);
                    }
                    self.respond(connection, id, result.clone());
                }
            }
            Outcome::Session { result, .. } => {
                for (connection, id) in self
                    .pending_entries
                    .remove(&entry.index)
                    .unwrap_or_default()
                {
                    self.respond(connection, id, result.clone());
                }
            }
            Outcome::Command {
                session,
                sequence,
                result,
            } => {
                for (connection, id) in self
                    .pending_commands
                    .remove(&(session, sequence))
                    .unwrap_or_default()
                {
                    self.respond(connection, id, result.clone());
                }
            }
            Outcome::KeepAlives(results) => {
                // This server proposed the entry: its waiters are the batch's
                // requests, in the entry's order.
                let waiting = self
                    .pending_entries
                    .remove(&entry.index)
                    .unwrap_or_default();
                for ((connection, id), (_, result)) in waiting.into_iter().zip(results) {
                    self.respond(connection, id, result);
                }
            }
            Outcome::Expire { session, .. } => {
                self.expiring.remove(&session);
            }
            Outcome::Nothing | Outcome::Skipped(_) => {}
        }
        for batch in applied.events {
            if let Some(connection) = self.bindings.get(&batch.session) {
                self.outbox
                    .push((*connection, ServerMessage::Events(batch)));
            }
        }
        for session in applied.expired.iter().chain(applied.closed.iter()) {
            self.bindings.remove(session);
        }
        // Whatever this entry was, requests waiting on its index are done:
        // a proposal overwritten after a leader change will never apply.
        self.registering.retain(|_, index| *index != entry.index);
        if let Some(waiting) = self.pending_entries.remove(&entry.index) {
            let hint = self.raw.leader().map(|l| l.0);
            for (connection, id) in waiting {
                self.respond(connection, id, Err(ClientError::NotLeader { hint }));
            }
        }
    }

    /// Answer every waiting query whose conditions now hold. None does
    /// while a restore is pending: the state is from before the snapshot.
    fn serve_queries(&mut self) {
        if self.restoring.is_some() {
            return;
        }
        let waiting = std::mem::take(&mut self.waiting_queries);
        for query in waiting {
            match self.replica.query(
                query.session,
                query.sequence,
                LogIndex(query.index),
                &query.payload,
            ) {
                QueryOutcome::Wait => self.waiting_queries.push(query),
                QueryOutcome::Done(result) => self.respond(query.connection, query.id, result),
            }
        }
    }

    /// Keep, from now on, what applying each entry did (its time, the
    /// events it published, the sessions it expired), for an observer such
    /// as the simulator, which checks them against the log. Off by default:
    /// production keeps nothing.
    pub fn record_applied(&mut self) {
        self.applied_records.get_or_insert_with(Vec::new);
    }

    /// The records kept since the last call (empty unless
    /// [`record_applied`](Self::record_applied) was called).
    pub fn take_applied_records(&mut self) -> Vec<Applied> {
        self.applied_records
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Messages for client connections produced so far.
    pub fn take_client_messages(&mut self) -> Vec<(ConnectionId, ServerMessage)> {
        std::mem::take(&mut self.outbox)
    }

    /// If enough entries were applied since the last snapshot, the
    /// description of a snapshot at the applied index and the replica's
    /// image there, for the shell to store durably. The core is not told:
    /// once the snapshot is durable, [`snapshot_stored`](Self::snapshot_stored)
    /// records it (only then may the core purge the entries it covers).
    pub fn snapshot_if_due(&self) -> Option<(SnapshotMeta, ReplicaImage)> {
        if self.restoring.is_some() {
            return None;
        }
        let applied = self.replica.applied_index();
        let last = self.raw.snapshot_meta().index;
        let every = self.config.snapshot_every_entries;
        let in_proportion = u128::from(self.bytes_since_snapshot) * 100
            >= u128::from(self.snapshot_bytes) * u128::from(self.config.snapshot_log_percent);
        let by_entries = (applied.0 >= last.0.saturating_add(every) && in_proportion)
            || applied.0 >= last.0.saturating_add(every.saturating_mul(10));
        let by_bytes = self.bytes_since_snapshot >= self.config.snapshot_every_bytes;
        if applied <= last || !(by_entries || by_bytes) {
            return None;
        }
        // What the core records for it in `snapshot_taken`: the term of the
        // entry at the index and the configuration in effect there. Both
        // are committed, so they stay the same until it is stored.
        let meta = SnapshotMeta {
            index: applied,
            term: self.raw.term_at(applied)?,
            config: self.raw.configurations_since(applied).into_iter().next()?,
        };
        Some((meta, self.replica.image()))
    }

    /// The latest snapshot's image is this many bytes (the shell tells it
    /// after taking, receiving or recovering one): what
    /// [`ServerConfig::snapshot_log_percent`] is a percentage of.
    pub fn snapshot_size_is(&mut self, bytes: u64) {
        self.snapshot_bytes = bytes;
    }

    /// The snapshot `meta` from [`snapshot_if_due`](Self::snapshot_if_due)
    /// is durable: the core records it, purges its log before it (keeping a
    /// few trailing entries), and will send it to followers that need it.
    /// Fails if the core moved past it (a newer snapshot was installed).
    pub fn snapshot_stored(&mut self, meta: &SnapshotMeta) -> Result<(), RaftSnapshotError> {
        let recorded = self.raw.snapshot_taken(meta.index)?;
        // Entries applied between taking and storing it are not in it; the
        // count starts over anyway (it is a trigger, not a measure).
        self.bytes_since_snapshot = 0;
        assert_eq!(
            &recorded, meta,
            "the core describes the stored snapshot as it was taken"
        );
        Ok(())
    }

    /// The replica's snapshot image (state machine, sessions, results,
    /// timers, events), to store with a Raft snapshot at the applied index.
    pub fn snapshot_data(&self) -> Bytes {
        self.replica.snapshot()
    }

    /// Replace the replica with a snapshot image received from the leader.
    pub fn restore(&mut self, data: &[u8]) -> Result<(), SnapshotError> {
        self.replica.restore(data)?;
        self.bytes_since_snapshot = 0;
        self.serve_queries();
        Ok(())
    }

    /// [`restore`](Self::restore) the image of the Raft snapshot at
    /// `index`, refusing an image that is the state at another index.
    pub fn restore_at(&mut self, data: &[u8], index: LogIndex) -> Result<(), SnapshotError> {
        self.replica.restore_at(data, index)?;
        self.bytes_since_snapshot = 0;
        self.serve_queries();
        Ok(())
    }

    /// The core installed the snapshot at `index` (its file is durable)
    /// and its image is being decoded elsewhere ([`Replica::prepare`]):
    /// until [`install_restore`](Self::install_restore) gets it, the core
    /// keeps running (heartbeats, votes, appends) but committed entries are
    /// held back, queries wait (the state is from before the snapshot; a
    /// sequential query too), and no snapshot is taken. A newer snapshot
    /// installed meanwhile supersedes it: only its image is installed.
    pub fn begin_restore(&mut self, index: LogIndex) {
        self.restoring = Some(index);
    }

    /// The index of the snapshot whose image is awaited, if one is.
    pub fn restore_pending(&self) -> Option<LogIndex> {
        self.restoring
    }

    /// Committed entries held back for a pending restore.
    pub fn held_back_entries(&self) -> usize {
        self.held_back.len()
    }

    /// Install the image prepared for the pending restore, then apply the
    /// entries held back after it and serve the queries waiting. Returns
    /// `None` (and changes nothing) for an image that is not the one
    /// awaited (a newer snapshot superseded it); otherwise, with `digest`,
    /// the replica digest at the snapshot's index (before the entries held
    /// back are applied).
    pub fn install_restore(
        &mut self,
        prepared: PreparedImage,
        digest: bool,
    ) -> Result<Option<Option<u32>>, SnapshotError> {
        if self.restoring != Some(prepared.index()) {
            return Ok(None);
        }
        self.replica.install_prepared(prepared)?;
        let digest = digest.then(|| self.replica.digest());
        self.restoring = None;
        self.bytes_since_snapshot = 0;
        for entry in std::mem::take(&mut self.held_back) {
            if entry.index <= self.replica.applied_index() {
                continue;
            }
            self.apply(&entry);
        }
        self.serve_queries();
        Ok(Some(digest))
    }

    /// The role of the Raft core.
    pub fn role(&self) -> Role {
        self.raw.role()
    }

    /// Internal consistency checks (Raft core and replica).
    pub fn invariants(&self) {
        self.raw.invariants();
        self.replica.invariants();
        assert!(
            self.replica.applied_index() <= self.raw.applied_index(),
            "the replica applied beyond what the core handed out"
        );
    }
}
