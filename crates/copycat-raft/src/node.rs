//! `RawNode`: one Raft server as a deterministic state machine.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::config::Config;
use crate::errors::{
    ConfigChangeError, ConfigError, ProposeError, ReadError, SnapshotError, TransferError,
};
use crate::log::RaftLog;
use crate::message::{Message, MessageBody, RejectHint};
use crate::progress::{Progress, ReplicationState};
use crate::ready::{ReadState, Ready, Role, SnapshotChunk, SnapshotRequest, SoftState};
use crate::types::{
    Configuration, Entry, EntryPayload, HardState, LogIndex, MemberRole, NodeId, PersistentState,
    SnapshotMeta, Term, Time,
};

/// Start times of read rounds kept while waiting for a quorum.
const MAX_UNCONFIRMED_ROUNDS: usize = 1024;

/// How a read is confirmed. See [`RawNode::read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadMode {
    /// ReadIndex (thesis §6.4): confirm leadership with a quorum round that
    /// started after the request. Many reads share one round.
    ReadIndex,
    /// Lease read (thesis §6.4.1): served without a round while the leader's
    /// lease holds; falls back to ReadIndex otherwise.
    Lease,
}

/// How a read accepted by [`RawNode::read`] is being confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadPath {
    /// Answered at once from the leader's lease.
    Lease,
    /// Answered at once: this server is the only voter.
    SingleVoter,
    /// Waits for a quorum round that starts after the request.
    QuorumRound,
    /// Waits until the leader commits an entry of its term, then for a
    /// quorum round.
    AfterFirstCommit,
}

/// A membership change. See [`RawNode::change_membership`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Make the server a voter. A server that is not a voter yet joins as a
    /// learner and is promoted automatically once it has caught up
    /// (thesis §4.2.1).
    AddVoter(NodeId),
    /// Make the server a passive (non-voting, replicated) member. Demotes a
    /// voter.
    AddPassive(NodeId),
    /// Make the server a reserve (standby) member. Demotes a voter.
    AddReserve(NodeId),
    /// Remove the server from the configuration.
    Remove(NodeId),
}

/// Counters for things that went wrong without breaking anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages dropped because a correct peer could not have sent them.
    pub dropped_invalid: u64,
    /// Messages dropped because they were stale or unexpected.
    pub dropped_stale: u64,
    /// Elections started (pre-vote rounds not counted).
    pub elections: u64,
    /// Times this server stepped down because it lost contact with a quorum.
    pub check_quorum_step_downs: u64,
}

/// The result of [`RawNode::new`] when the durable state is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The persistent state is inconsistent.
    #[error("inconsistent persistent state: {0}")]
    State(String),
}

/// A leader's read round bookkeeping (ReadIndex and leases).
///
/// A round is a number the leader attaches to every append and heartbeat it
/// sends; followers echo it. Once a quorum echoed round `r`, the leader
/// knows it was still leader at the moment round `r` started, so any read
/// that arrived before that moment can be served at the commit index it
/// recorded.
#[derive(Clone, Debug, Default)]
struct ReadRounds {
    /// The latest round started.
    current: u64,
    /// The highest round a quorum acknowledged.
    confirmed: u64,
    /// Start time of rounds not confirmed yet.
    started_at: VecDeque<(u64, Time)>,
    /// Reads waiting for a round: (id, read index, round needed).
    waiting: VecDeque<(u64, LogIndex, u64)>,
    /// Reads that arrived before the leader committed an entry of its term.
    waiting_for_commit: Vec<u64>,
    /// Lease reads are allowed strictly before this time.
    lease_until: Time,
    /// Set once leadership may have been handed over in this term.
    lease_disabled: bool,
}

/// State that exists only while leading.
#[derive(Clone, Debug)]
struct LeaderState {
    progress: BTreeMap<NodeId, Progress>,
    reads: ReadRounds,
    next_heartbeat: Time,
    next_quorum_check: Time,
    /// Target and deadline of a leadership transfer in progress.
    transfer: Option<(NodeId, Time)>,
    /// Index of this term's no-op entry.
    noop_index: LogIndex,
    /// Bytes of entries appended and not yet committed.
    uncommitted_bytes: usize,
}

/// A snapshot being received from the leader.
#[derive(Clone, Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    from: NodeId,
    next_offset: u64,
    complete: bool,
}

/// Deterministic pseudo-random numbers for election timeouts (SplitMix64).
/// Seeded by the caller, so a simulation replays exactly.
#[derive(Clone, Debug)]
struct Random(u64);

impl Random {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// One Raft server, as a deterministic state machine.
///
/// Feed it inputs ([`tick`](Self::tick), [`step`](Self::step),
/// [`propose`](Self::propose), [`read`](Self::read), ...) and collect its
/// outputs with [`ready`](Self::ready). It never reads a clock, never draws
/// OS randomness, never performs I/O and never blocks; the same inputs always
/// produce the same outputs.
#[derive(Clone, Debug)]
pub struct RawNode {
    config: Config,
    random: Random,
    now: Time,
    hard_state: HardState,
    hard_state_dirty: bool,
    role: Role,
    leader: Option<NodeId>,
    log: RaftLog,
    /// A newer configuration learned from a reserve heartbeat (reserves do
    /// not receive the log). Only used to decide whether to campaign.
    reserve_view: Option<(LogIndex, Configuration)>,
    election_deadline: Time,
    /// Votes (and pre-votes) for a campaign are refused before this time
    /// unless the candidate was asked to run by a leadership transfer:
    /// leader stickiness, which also makes lease reads safe.
    vote_lease_until: Time,
    votes: BTreeMap<NodeId, bool>,
    leader_state: Option<LeaderState>,
    incoming_snapshot: Option<IncomingSnapshot>,
    pending_purge: Option<LogIndex>,
    pending_snapshot_install: Option<SnapshotMeta>,
    out: Ready,
    last_soft_state: SoftState,
    stats: Stats,
}

impl RawNode {
    /// Start a server from its durable state at time `now`. `seed` drives
    /// the randomized election timeouts.
    ///
    /// A restarted server refuses to vote for one election timeout, as if it
    /// had just heard from a leader: it may have acknowledged a lease-granting
    /// heartbeat just before it crashed.
    pub fn new(
        config: Config,
        state: PersistentState,
        seed: u64,
        now: Time,
    ) -> Result<Self, InitError> {
        config.validate()?;
        validate_persistent_state(&state)?;
        let PersistentState {
            hard_state,
            snapshot,
            entries,
        } = state;
        let log = RaftLog::restore(snapshot, entries);
        let soft = SoftState {
            role: Role::Follower,
            leader: None,
            term: hard_state.term,
        };
        let mut node = Self {
            random: Random(seed ^ config.id.0.rotate_left(32)),
            now,
            hard_state,
            hard_state_dirty: false,
            role: Role::Follower,
            leader: None,
            log,
            reserve_view: None,
            election_deadline: now,
            vote_lease_until: now.plus_ms(config.election_timeout_ms),
            votes: BTreeMap::new(),
            leader_state: None,
            incoming_snapshot: None,
            pending_purge: None,
            pending_snapshot_install: None,
            out: Ready::default(),
            last_soft_state: soft,
            stats: Stats::default(),
            config,
        };
        node.reset_election_deadline();
        Ok(node)
    }

    // ----- Observers -------------------------------------------------------

    /// This server's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// Current term.
    pub fn term(&self) -> Term {
        self.hard_state.term
    }

    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Known leader of the current term.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// Whether this server is the leader.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// The term and vote.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Highest committed index known here.
    pub fn commit_index(&self) -> LogIndex {
        self.log.commit
    }

    /// Highest index handed out for applying.
    pub fn applied_index(&self) -> LogIndex {
        self.log.applied
    }

    /// Index of the last entry in the log.
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }

    /// Index of the first entry held in memory.
    pub fn first_index(&self) -> LogIndex {
        self.log.first_index()
    }

    /// Term of the entry at `index`, if held.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index)
    }

    /// The entry at `index`, if held.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// The latest snapshot's description.
    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        self.log.snapshot()
    }

    /// The configuration in effect (the latest one in the log) and its
    /// version (the index of its entry).
    pub fn configuration(&self) -> (LogIndex, &Configuration) {
        self.log.latest_config()
    }

    /// The configurations in effect from `index` to the end of the log: the
    /// one in effect at `index`, then every later one. A commit at `index`
    /// was counted in one of them.
    pub fn configurations_since(&self, index: LogIndex) -> Vec<Configuration> {
        self.log.configs_since(index)
    }

    /// The caller's latest time as seen by the core.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Problem counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The configuration of this node.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// For a leader: each follower's match index.
    pub fn match_indexes(&self) -> BTreeMap<NodeId, LogIndex> {
        self.leader_state
            .as_ref()
            .map_or_else(BTreeMap::new, |state| {
                state
                    .progress
                    .iter()
                    .map(|(id, p)| (*id, p.match_index))
                    .collect()
            })
    }

    /// For a leader: the time until which lease reads are served without a
    /// quorum round, if a lease is held.
    pub fn lease_until(&self) -> Option<Time> {
        let state = self.leader_state.as_ref()?;
        (self.config.check_quorum
            && !state.reads.lease_disabled
            && state.reads.lease_until > self.now)
            .then_some(state.reads.lease_until)
    }

    /// The role this server believes it has in the newest configuration it
    /// knows.
    pub fn member_role(&self) -> Option<MemberRole> {
        let (index, config) = self.log.latest_config();
        match &self.reserve_view {
            Some((view_index, view)) if *view_index > index => view.role(self.config.id),
            _ => config.role(self.config.id),
        }
    }

    // ----- Inputs ----------------------------------------------------------

    /// Advance the clock. Drives elections, heartbeats, check-quorum and
    /// retransmissions. Time never goes back: an earlier `now` is ignored.
    pub fn tick(&mut self, now: Time) {
        if now > self.now {
            self.now = now;
        }
        if self.role == Role::Leader {
            self.tick_leader();
        } else if self.now >= self.election_deadline {
            self.reset_election_deadline();
            self.campaign();
        }
    }

    /// Start an election now (after a pre-vote round if enabled), as if the
    /// election timeout had fired. Does nothing unless this server is a
    /// voter that does not lead. Useful to operators and tests.
    pub fn campaign(&mut self) {
        if self.role == Role::Leader || !self.can_campaign() {
            return;
        }
        if self.config.pre_vote {
            self.campaign_pre_vote();
        } else {
            self.start_election(false);
        }
    }

    /// Whether this server may run for leader: it is a voter in its latest
    /// configuration, or that configuration is not known to be committed and
    /// a configuration since the commit index made it a voter.
    ///
    /// The second case matters when a leader demoted or removed itself and
    /// crashed before the change committed: it may hold the only up-to-date
    /// log, and the others, still on an older configuration, need it to lead
    /// (and commit the change) since they cannot win its vote. Who campaigns
    /// never affects safety: votes are always counted in the candidate's
    /// latest configuration.
    fn can_campaign(&self) -> bool {
        if self.member_role() == Some(MemberRole::Voter) {
            return true;
        }
        let (version, _) = self.log.latest_config();
        version > self.log.commit && self.log.voter_since(self.log.commit, self.config.id)
    }

    fn tick_leader(&mut self) {
        let now = self.now;
        let election_timeout = self.config.election_timeout_ms;
        let state = self.leader_state.as_mut().expect("leader has leader state");
        if let Some((_, deadline)) = state.transfer {
            if now >= deadline {
                state.transfer = None;
            }
        }
        if self.config.check_quorum && now >= state.next_quorum_check {
            state.next_quorum_check = now.plus_ms(election_timeout);
            let since = Time(now.0.saturating_sub(election_timeout));
            let config = self.log.latest_config().1;
            let active = config
                .voters()
                .filter(|id| {
                    *id == self.config.id
                        || state
                            .progress
                            .get(id)
                            .is_some_and(|p| p.last_heard >= since)
                })
                .count();
            if active < config.quorum() {
                self.stats.check_quorum_step_downs += 1;
                let term = self.hard_state.term;
                self.become_follower(term, None);
                return;
            }
        }
        let state = self.leader_state.as_mut().expect("leader has leader state");
        if now >= state.next_heartbeat {
            state.next_heartbeat = now.plus_ms(self.config.heartbeat_interval_ms);
            self.broadcast_heartbeat();
        }
        self.retry_snapshot_sends();
    }

    /// Handle a message from a peer. Messages that a correct peer could not
    /// have sent are dropped and counted in [`Stats::dropped_invalid`].
    pub fn step(&mut self, message: Message) {
        if message.to != self.config.id
            || message.from == self.config.id
            || message.from == NodeId(0)
            || !message_is_well_formed(&message, self.config.snapshot_chunk_bytes)
        {
            self.stats.dropped_invalid += 1;
            return;
        }
        if self.pending_snapshot_install.is_some() {
            // The application must install the received snapshot before the
            // core moves on; a correct caller never gets here.
            self.stats.dropped_stale += 1;
            return;
        }
        let term = self.hard_state.term;
        if message.term > term {
            match &message.body {
                MessageBody::PreVote { .. } => {}
                // A granted pre-vote is answered in the term we asked about.
                MessageBody::PreVoteResponse { granted: true } => {}
                MessageBody::Vote { transfer, .. } if !transfer && self.in_vote_lease() => {
                    // Leader stickiness (thesis §4.2.3): ignore the request
                    // entirely, without even adopting its term.
                    self.stats.dropped_stale += 1;
                    return;
                }
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::ReserveHeartbeat { .. } => {
                    self.become_follower(message.term, Some(message.from));
                }
                _ => self.become_follower(message.term, None),
            }
        } else if message.term < term {
            self.on_stale_term(message);
            return;
        }
        match message.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => self.on_pre_vote(message.from, message.term, last_index, last_term),
            MessageBody::PreVoteResponse { granted } => {
                self.on_pre_vote_response(message.from, message.term, granted)
            }
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => self.on_vote(message.from, last_index, last_term),
            MessageBody::VoteResponse { granted } => self.on_vote_response(message.from, granted),
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                read_round,
            } => self.on_append(
                message.from,
                prev_index,
                prev_term,
                entries,
                commit,
                read_round,
            ),
            MessageBody::AppendResponse {
                index,
                reject,
                read_round,
            } => self.on_append_response(message.from, index, reject, read_round),
            MessageBody::Heartbeat { commit, read_round } => {
                self.on_heartbeat(message.from, commit, read_round)
            }
            MessageBody::HeartbeatResponse { read_round } => {
                self.on_heartbeat_response(message.from, read_round)
            }
            MessageBody::ReserveHeartbeat {
                commit,
                config,
                config_index,
            } => self.on_reserve_heartbeat(message.from, commit, config, config_index),
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done,
            } => self.on_install_snapshot(message.from, meta, offset, data, done),
            MessageBody::InstallSnapshotResponse { index, next_offset } => {
                self.on_install_snapshot_response(message.from, index, next_offset)
            }
            MessageBody::TimeoutNow => self.on_timeout_now(message.from),
        }
    }

    /// Propose commands. On success returns the index of the first and the
    /// last appended entry; the caller learns the outcome when they show up
    /// in `committed_entries` (or are overwritten after a leader change).
    pub fn propose(&mut self, commands: Vec<Bytes>) -> Result<(LogIndex, LogIndex), ProposeError> {
        self.check_can_propose()?;
        let mut bytes = 0;
        for command in &commands {
            if command.len() > self.config.max_entry_bytes {
                return Err(ProposeError::TooLarge {
                    size: command.len(),
                    limit: self.config.max_entry_bytes,
                });
            }
            bytes += command.len() + crate::types::ENTRY_OVERHEAD_BYTES;
        }
        let state = self.leader_state.as_ref().expect("checked leader");
        if state.uncommitted_bytes > 0
            && state.uncommitted_bytes + bytes > self.config.max_uncommitted_bytes
        {
            return Err(ProposeError::TooBusy {
                uncommitted_bytes: state.uncommitted_bytes,
                limit: self.config.max_uncommitted_bytes,
            });
        }
        let first = self.log.last_index().next();
        let payloads = commands.into_iter().map(EntryPayload::Command).collect();
        let last = self.append_as_leader(payloads);
        Ok((first, last))
    }

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        match &self.leader_state {
            None => Err(ProposeError::NotLeader {
                leader: self.leader,
            }),
            Some(state) if state.transfer.is_some() => Err(ProposeError::TransferInProgress),
            Some(_) => Ok(()),
        }
    }

    /// Ask for a linearizable read at time `now`. The answer arrives in
    /// [`Ready::read_states`] under `id`: the index the state machine must
    /// have applied before serving the read, or an error if leadership was
    /// lost first.
    ///
    /// The read carries the time because a lease must be judged against the
    /// moment the request is handled, not the last tick: a process that was
    /// paused (a GC pause, SIGSTOP) handles its queued requests before its
    /// next tick, and its last tick may be long past. (The simulator found
    /// exactly that: a resumed leader serving lease reads on a stale clock.)
    pub fn read(&mut self, id: u64, mode: ReadMode, now: Time) -> Result<ReadPath, ReadError> {
        if now > self.now {
            self.now = now;
        }
        let now = self.now;
        let lease_allowed = self.config.check_quorum;
        let committed_in_term = self.committed_in_current_term();
        let single_voter = self.is_single_voter();
        let commit = self.log.commit;
        let Some(state) = self.leader_state.as_mut() else {
            return Err(ReadError::NotLeader {
                leader: self.leader,
            });
        };
        let reads = &mut state.reads;
        let pending = reads.waiting.len() + reads.waiting_for_commit.len();
        if pending >= self.config.max_pending_reads {
            return Err(ReadError::TooBusy {
                limit: self.config.max_pending_reads,
            });
        }
        if !committed_in_term {
            // §6.4 step 1: until an entry of this term commits, the leader's
            // commit index may be behind the real one.
            reads.waiting_for_commit.push(id);
            return Ok(ReadPath::AfterFirstCommit);
        }
        #[allow(unused_mut)]
        let mut lease_valid = lease_allowed && !reads.lease_disabled && now < reads.lease_until;
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::StaleLease) {
            lease_valid = lease_allowed && reads.lease_until > Time::default();
        }
        if single_voter || (mode == ReadMode::Lease && lease_valid) {
            self.out.read_states.push(ReadState {
                id,
                result: Ok(commit),
            });
            return Ok(if single_voter {
                ReadPath::SingleVoter
            } else {
                ReadPath::Lease
            });
        }
        reads.waiting.push_back((id, commit, reads.current + 1));
        if reads.confirmed == reads.current {
            self.start_read_round();
        }
        Ok(ReadPath::QuorumRound)
    }

    /// Report that entries up to `index` (whose term is `term`) are durable.
    /// Ignored if the log no longer holds that entry (it was overwritten).
    pub fn persisted(&mut self, index: LogIndex, term: Term) {
        if self.log.term(index) != Some(term) || index <= self.log.persisted {
            return;
        }
        self.log.persisted = index.min(self.log.last_index());
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    /// The application took a snapshot of its state at `index` (which it has
    /// applied). The core records it, purges the log before it (keeping a few
    /// trailing entries), and will send it to followers that need it.
    pub fn snapshot_taken(&mut self, index: LogIndex) -> Result<SnapshotMeta, SnapshotError> {
        if index > self.log.applied {
            return Err(SnapshotError::NotApplied {
                index,
                applied: self.log.applied,
            });
        }
        if index <= self.log.snapshot().index {
            return Err(SnapshotError::Stale {
                index,
                current: self.log.snapshot().index,
            });
        }
        let purged = self
            .log
            .compact(index, self.config.snapshot_trailing_entries);
        if purged > LogIndex::ZERO {
            self.pending_purge = Some(self.pending_purge.map_or(purged, |p| p.max(purged)));
        }
        Ok(self.log.snapshot().clone())
    }

    /// Hand over a chunk of snapshot data requested through
    /// [`Ready::snapshot_requests`]. `done` marks the last chunk.
    pub fn snapshot_chunk(
        &mut self,
        to: NodeId,
        index: LogIndex,
        offset: u64,
        data: Bytes,
        done: bool,
    ) {
        let term = self.hard_state.term;
        let from = self.config.id;
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        let Some(progress) = state.progress.get_mut(&to) else {
            return;
        };
        let ReplicationState::Snapshot {
            meta, acked_offset, ..
        } = &progress.state
        else {
            return;
        };
        if meta.index != index || *acked_offset != offset {
            return;
        }
        let meta = meta.clone();
        self.out.messages.push(Message {
            from,
            to,
            term,
            body: MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done,
            },
        });
    }

    /// The snapshot requested for `to` at `index` no longer exists (a newer
    /// one replaced it); start over with the latest.
    pub fn snapshot_unavailable(&mut self, to: NodeId, index: LogIndex) {
        let latest = self.log.snapshot().clone();
        let now = self.now;
        let Some(state) = self.leader_state.as_mut() else {
            return;
        };
        let Some(progress) = state.progress.get_mut(&to) else {
            return;
        };
        if matches!(&progress.state, ReplicationState::Snapshot { meta, .. } if meta.index == index)
        {
            progress.state = ReplicationState::Snapshot {
                meta: latest.clone(),
                acked_offset: 0,
                requested_at: now,
            };
            self.out.snapshot_requests.push(SnapshotRequest {
                to,
                meta: latest,
                offset: 0,
                max_bytes: self.config.snapshot_chunk_bytes,
            });
        }
    }

    /// The application restored the snapshot whose last chunk arrived in
    /// [`Ready::snapshot_chunks`]. The log is reset to it and the leader is
    /// told.
    pub fn snapshot_installed(&mut self, meta: &SnapshotMeta) -> Result<(), SnapshotError> {
        let Some(pending) = self.pending_snapshot_install.take() else {
            return Err(SnapshotError::Unexpected {
                index: meta.index,
                term: meta.term,
            });
        };
        if &pending != meta {
            self.pending_snapshot_install = Some(pending);
            return Err(SnapshotError::Unexpected {
                index: meta.index,
                term: meta.term,
            });
        }
        let incoming = self
            .incoming_snapshot
            .take()
            .expect("pending install has an incoming snapshot");
        self.log.install_snapshot(meta.clone());
        self.out.snapshot = Some(meta.clone());
        self.after_config_change();
        self.send_after_persist(
            incoming.from,
            MessageBody::AppendResponse {
                index: meta.index,
                reject: None,
                read_round: 0,
            },
        );
        Ok(())
    }

    /// Hand leadership to `target` (thesis §3.10): stop accepting proposals,
    /// bring the target's log up to date, then tell it to campaign at once.
    /// Aborted after an election timeout.
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), TransferError> {
        let Some(state) = self.leader_state.as_mut() else {
            return Err(TransferError::NotLeader {
                leader: self.leader,
            });
        };
        if target == self.config.id {
            return Ok(());
        }
        if !self.log.latest_config().1.is_voter(target) {
            return Err(TransferError::NotVoter(target));
        }
        if state.transfer.is_some() {
            return Err(TransferError::InProgress);
        }
        state.transfer = Some((target, self.now.plus_ms(self.config.election_timeout_ms)));
        // The target will campaign without honouring stickiness, so this
        // leader's lease is worthless from now on in this term.
        state.reads.lease_disabled = true;
        self.maybe_send_timeout_now(target);
        Ok(())
    }

    /// Propose a membership change (one at a time, thesis §4.1). With
    /// `expected_version`, the change applies only if the configuration is
    /// still at that version (the index of its entry): a compare-and-set.
    /// Returns the index of the new configuration entry.
    pub fn change_membership(
        &mut self,
        change: MembershipChange,
        expected_version: Option<LogIndex>,
    ) -> Result<LogIndex, ConfigChangeError> {
        self.check_can_propose()?;
        let state = self.leader_state.as_ref().expect("checked leader");
        let (version, current) = self.log.latest_config();
        if let Some(expected) = expected_version {
            if expected != version {
                return Err(ConfigChangeError::StaleConfiguration {
                    expected,
                    current: version,
                });
            }
        }
        // The leader must have committed an entry of its own term first (the
        // fix to single-server changes described in the Raft mailing list
        // and thesis errata), and the previous change must be committed.
        if self.log.commit < state.noop_index || version > self.log.commit {
            return Err(ConfigChangeError::ChangeInProgress);
        }
        let mut next = current.clone();
        match change {
            MembershipChange::AddVoter(id) => {
                if current.is_voter(id) {
                    return Err(ConfigChangeError::Invalid(format!(
                        "{id:?} is already a voter"
                    )));
                }
                next.members.insert(id, MemberRole::Learner);
            }
            MembershipChange::AddPassive(id) => {
                next.members.insert(id, MemberRole::Passive);
            }
            MembershipChange::AddReserve(id) => {
                next.members.insert(id, MemberRole::Reserve);
            }
            MembershipChange::Remove(id) => {
                if next.members.remove(&id).is_none() {
                    return Err(ConfigChangeError::Invalid(format!(
                        "{id:?} is not a member"
                    )));
                }
            }
        }
        if next.members.contains_key(&NodeId(0)) {
            return Err(ConfigChangeError::Invalid("node id 0 is reserved".into()));
        }
        if next.voter_count() == 0 {
            return Err(ConfigChangeError::Invalid(
                "a configuration needs a voter".into(),
            ));
        }
        if &next == current {
            return Err(ConfigChangeError::Invalid(
                "the change changes nothing".into(),
            ));
        }
        Ok(self.append_config(next))
    }

    /// Collect everything the core wants done. See [`Ready`] for the order
    /// in which to handle the fields.
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            self.send_appends();
        }
        if self.hard_state_dirty {
            self.out.hard_state = Some(self.hard_state);
            self.hard_state_dirty = false;
            #[cfg(feature = "planted-bugs")]
            if copycat_planted::active(copycat_planted::PlantedBug::ForgetVote) {
                // Persist the term but not a vote for another server.
                if let Some(hard_state) = self.out.hard_state.as_mut() {
                    if hard_state.vote != Some(self.config.id) {
                        hard_state.vote = None;
                    }
                }
            }
        }
        self.out.entries = self.log.take_unstable();
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::ApplyUncommitted) {
            self.log.commit = self.log.last_index();
        }
        self.out.committed_entries = self.log.take_committed();
        if let Some(purge) = self.pending_purge.take() {
            self.out.purge_to = Some(purge);
        }
        let soft = self.soft_state();
        if soft != self.last_soft_state {
            self.out.soft_state = Some(soft);
            self.last_soft_state = soft;
        }
        std::mem::take(&mut self.out)
    }

    /// Whether [`ready`](Self::ready) would return something.
    pub fn has_ready(&self) -> bool {
        !self.out.is_empty()
            || self.hard_state_dirty
            || self.log.unstable_from.is_some()
            || self.log.applied < self.log.commit
            || self.pending_purge.is_some()
            || self.soft_state() != self.last_soft_state
            || (self.role == Role::Leader && self.has_appends_to_send())
    }

    /// The role, leader and term.
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader,
            term: self.hard_state.term,
        }
    }

    // ----- Elections (§5.2, thesis §9.6) -------------------------------------

    fn reset_election_deadline(&mut self) {
        let timeout = self.config.election_timeout_ms;
        let jitter = self.random.next_u64() % timeout;
        self.election_deadline = self.now.plus_ms(timeout + jitter);
    }

    /// Leader stickiness: refuse to help a campaign while a leader is
    /// believed alive. Tied to check-quorum (as in etcd): a leader that
    /// cannot be deposed by elections must depose itself when cut off.
    fn in_vote_lease(&self) -> bool {
        self.config.check_quorum && (self.role == Role::Leader || self.now < self.vote_lease_until)
    }

    fn campaign_pre_vote(&mut self) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.leader_state = None;
        self.votes.clear();
        self.reset_election_deadline();
        self.votes.insert(self.config.id, true);
        if self.tally() == Some(true) {
            self.start_election(false);
            return;
        }
        let body = MessageBody::PreVote {
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
        };
        let term = self.hard_state.term.next();
        for voter in self.other_voters() {
            self.out.messages.push(Message {
                from: self.config.id,
                to: voter,
                term,
                body: body.clone(),
            });
        }
    }

    fn start_election(&mut self, transfer: bool) {
        self.stats.elections += 1;
        self.role = Role::Candidate;
        self.leader = None;
        self.leader_state = None;
        self.hard_state = HardState {
            term: self.hard_state.term.next(),
            vote: Some(self.config.id),
        };
        self.hard_state_dirty = true;
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        self.reset_election_deadline();
        if self.tally() == Some(true) {
            self.become_leader();
            return;
        }
        let body = MessageBody::Vote {
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            transfer,
        };
        for voter in self.other_voters() {
            // Our own vote must be durable before we ask for others'.
            self.send_after_persist(voter, body.clone());
        }
    }

    /// `Some(true)` once a quorum granted, `Some(false)` once a quorum can
    /// no longer grant, `None` while undecided.
    fn tally(&self) -> Option<bool> {
        let config = self.log.latest_config().1;
        let quorum = config.quorum();
        let granted = config
            .voters()
            .filter(|v| self.votes.get(v) == Some(&true))
            .count();
        let rejected = config
            .voters()
            .filter(|v| self.votes.get(v) == Some(&false))
            .count();
        #[cfg(feature = "planted-bugs")]
        let granted = if copycat_planted::active(copycat_planted::PlantedBug::DoubleVote) {
            granted + usize::from(self.votes.get(&self.config.id) == Some(&true))
        } else {
            granted
        };
        if granted >= quorum {
            Some(true)
        } else if rejected + quorum > config.voter_count() {
            Some(false)
        } else {
            None
        }
    }

    fn on_pre_vote(&mut self, from: NodeId, term: Term, last_index: LogIndex, last_term: Term) {
        let granted = term > self.hard_state.term
            && !self.in_vote_lease()
            && self.log.is_up_to_date(last_index, last_term);
        // A granted pre-vote answers in the asked term so that the candidate
        // counts it; a refusal carries our term so a stale candidate learns.
        let reply_term = if granted { term } else { self.hard_state.term };
        self.out.messages.push(Message {
            from: self.config.id,
            to: from,
            term: reply_term,
            body: MessageBody::PreVoteResponse { granted },
        });
    }

    fn on_pre_vote_response(&mut self, from: NodeId, term: Term, granted: bool) {
        if self.role != Role::PreCandidate || (granted && term != self.hard_state.term.next()) {
            self.stats.dropped_stale += 1;
            return;
        }
        self.votes.insert(from, granted);
        match self.tally() {
            Some(true) => self.start_election(false),
            Some(false) => {
                let term = self.hard_state.term;
                self.become_follower(term, None);
            }
            None => {}
        }
    }

    fn on_vote(&mut self, from: NodeId, last_index: LogIndex, last_term: Term) {
        let can_vote = self.hard_state.vote == Some(from)
            || (self.hard_state.vote.is_none() && self.leader.is_none());
        let granted = can_vote && self.log.is_up_to_date(last_index, last_term);
        if granted {
            self.hard_state.vote = Some(from);
            self.hard_state_dirty = true;
            self.reset_election_deadline();
        }
        // The vote must be durable before the candidate hears of it.
        self.send_after_persist(from, MessageBody::VoteResponse { granted });
    }

    fn on_vote_response(&mut self, from: NodeId, granted: bool) {
        if self.role != Role::Candidate {
            self.stats.dropped_stale += 1;
            return;
        }
        self.votes.insert(from, granted);
        match self.tally() {
            Some(true) => self.become_leader(),
            Some(false) => {
                let term = self.hard_state.term;
                self.become_follower(term, None);
            }
            None => {}
        }
    }

    fn on_timeout_now(&mut self, from: NodeId) {
        if self.leader != Some(from) || !self.can_campaign() {
            self.stats.dropped_stale += 1;
            return;
        }
        // Skip the pre-vote: the leader asked us to take over now.
        self.start_election(true);
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.hard_state.term {
            self.hard_state = HardState { term, vote: None };
            self.hard_state_dirty = true;
        }
        if let Some(state) = self.leader_state.take() {
            self.fail_pending_reads(state.reads, leader);
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        if leader.is_some() {
            self.vote_lease_until = self.now.plus_ms(self.config.election_timeout_ms);
        }
        self.reset_election_deadline();
    }

    fn fail_pending_reads(&mut self, reads: ReadRounds, leader: Option<NodeId>) {
        let ids = reads
            .waiting
            .into_iter()
            .map(|(id, _, _)| id)
            .chain(reads.waiting_for_commit);
        for id in ids {
            self.out.read_states.push(ReadState {
                id,
                result: Err(ReadError::NotLeader { leader }),
            });
        }
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.votes.clear();
        let now = self.now;
        let next = self.log.last_index().next();
        let mut progress = BTreeMap::new();
        for id in self.log.latest_config().1.members.keys() {
            if *id != self.config.id {
                progress.insert(*id, Progress::new(next, now));
            }
        }
        self.leader_state = Some(LeaderState {
            progress,
            reads: ReadRounds::default(),
            next_heartbeat: now.plus_ms(self.config.heartbeat_interval_ms),
            next_quorum_check: now.plus_ms(self.config.election_timeout_ms),
            transfer: None,
            noop_index: next,
            uncommitted_bytes: 0,
        });
        // §8: a no-op at the start of the term commits everything before it
        // and tells the leader where the commit index really is.
        self.append_as_leader(vec![EntryPayload::Noop]);
        self.broadcast_reserve_heartbeats();
    }

    // ----- Replication (§5.3) ----------------------------------------------

    fn append_as_leader(&mut self, payloads: Vec<EntryPayload>) -> LogIndex {
        let term = self.hard_state.term;
        let mut index = self.log.last_index();
        let mut bytes = 0;
        let entries: Vec<Entry> = payloads
            .into_iter()
            .map(|payload| {
                index = index.next();
                let entry = Entry {
                    term,
                    index,
                    payload,
                };
                bytes += entry.size_bytes();
                entry
            })
            .collect();
        let has_config = entries
            .iter()
            .any(|e| matches!(e.payload, EntryPayload::Config(_)));
        self.log.append(entries);
        let state = self.leader_state.as_mut().expect("only leaders append");
        state.uncommitted_bytes += bytes;
        if has_config {
            self.after_config_change();
        }
        index
    }

    fn append_config(&mut self, config: Configuration) -> LogIndex {
        self.append_as_leader(vec![EntryPayload::Config(config)])
    }

    /// The configuration may have changed (appended, truncated, installed):
    /// keep the leader's progress set in line with it.
    fn after_config_change(&mut self) {
        let (config_index, config) = self.log.latest_config();
        if let Some((view_index, _)) = &self.reserve_view {
            if *view_index <= config_index {
                self.reserve_view = None;
            }
        }
        let members: Vec<NodeId> = config.members.keys().copied().collect();
        let next = self.log.last_index().next();
        let now = self.now;
        let self_id = self.config.id;
        if let Some(state) = self.leader_state.as_mut() {
            state.progress.retain(|id, _| members.contains(id));
            for id in members {
                if id != self_id {
                    state
                        .progress
                        .entry(id)
                        .or_insert_with(|| Progress::new(next, now));
                }
            }
        }
    }

    fn other_voters(&self) -> Vec<NodeId> {
        self.log
            .latest_config()
            .1
            .voters()
            .filter(|id| *id != self.config.id)
            .collect()
    }

    fn is_single_voter(&self) -> bool {
        let config = self.log.latest_config().1;
        config.voter_count() == 1 && config.is_voter(self.config.id)
    }

    fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.commit) == Some(self.hard_state.term)
    }

    fn has_appends_to_send(&self) -> bool {
        let Some(state) = &self.leader_state else {
            return false;
        };
        state.progress.keys().any(|id| self.wants_append(*id))
    }

    /// Whether `id` should get an append now.
    fn wants_append(&self, id: NodeId) -> bool {
        let Some(progress) = self.leader_state.as_ref().and_then(|s| s.progress.get(&id)) else {
            return false;
        };
        let role = self.log.latest_config().1.role(id);
        if !role.is_some_and(MemberRole::replicates) {
            return false;
        }
        let limit = self.replication_limit(role);
        match progress.state {
            ReplicationState::Probe => !progress.probe_sent,
            ReplicationState::Replicate => {
                progress.inflight.len() < self.config.max_inflight_appends
                    && (progress.next_index <= limit
                        || progress.commit_sent < self.log.commit.min(limit))
            }
            ReplicationState::Snapshot { .. } => false,
        }
    }

    /// The last index to replicate to a member in `role`.
    fn replication_limit(&self, role: Option<MemberRole>) -> LogIndex {
        match role {
            // Passives receive only committed entries, so they never need to
            // remove anything from their logs.
            Some(MemberRole::Passive) => self.log.commit,
            Some(MemberRole::Voter | MemberRole::Learner) => self.log.last_index(),
            Some(MemberRole::Reserve) | None => LogIndex::ZERO,
        }
    }

    /// Send every follower what its window allows. Called when a batch is
    /// collected, so that many proposals share one message.
    fn send_appends(&mut self) {
        let Some(state) = self.leader_state.as_ref() else {
            return;
        };
        let targets: Vec<NodeId> = state.progress.keys().copied().collect();
        for id in targets {
            self.send_appends_to(id);
        }
    }

    fn send_appends_to(&mut self, to: NodeId) {
        let limit = self.replication_limit(self.log.latest_config().1.role(to));
        while self.wants_append(to) {
            let state = self.leader_state.as_ref().expect("leader");
            let progress = &state.progress[&to];
            let next = progress.next_index;
            let prev_index = next.prev();
            let Some(prev_term) = self.log.term(prev_index) else {
                self.start_snapshot(to);
                return;
            };
            let entries = match self.log.slice(
                next,
                limit,
                self.config.max_append_bytes,
                self.config.max_append_entries,
            ) {
                Some(entries) => entries,
                None => {
                    self.start_snapshot(to);
                    return;
                }
            };
            let commit = self.log.commit.min(limit);
            let last = LogIndex(prev_index.0 + entries.len() as u64);
            let count = entries.len();
            let now = self.now;
            let state = self.leader_state.as_mut().expect("leader");
            let read_round = state.reads.current;
            let progress = state.progress.get_mut(&to).expect("member has progress");
            let probing = progress.state == ReplicationState::Probe;
            progress.on_sent(last, count, now);
            progress.commit_sent = commit;
            self.out.messages.push(Message {
                from: self.config.id,
                to,
                term: self.hard_state.term,
                body: MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                    read_round,
                },
            });
            if count == 0 || probing {
                return;
            }
        }
    }

    fn start_snapshot(&mut self, to: NodeId) {
        let meta = self.log.snapshot().clone();
        let now = self.now;
        let state = self.leader_state.as_mut().expect("leader");
        let progress = state.progress.get_mut(&to).expect("member has progress");
        progress.state = ReplicationState::Snapshot {
            meta: meta.clone(),
            acked_offset: 0,
            requested_at: now,
        };
        progress.inflight.clear();
        self.out.snapshot_requests.push(SnapshotRequest {
            to,
            meta,
            offset: 0,
            max_bytes: self.config.snapshot_chunk_bytes,
        });
    }

    fn retry_snapshot_sends(&mut self) {
        let now = self.now;
        let timeout = self.config.election_timeout_ms;
        let chunk = self.config.snapshot_chunk_bytes;
        let state = self.leader_state.as_mut().expect("leader");
        for (id, progress) in state.progress.iter_mut() {
            if let ReplicationState::Snapshot {
                meta,
                acked_offset,
                requested_at,
            } = &mut progress.state
            {
                if now.since(*requested_at) >= timeout {
                    *requested_at = now;
                    self.out.snapshot_requests.push(SnapshotRequest {
                        to: *id,
                        meta: meta.clone(),
                        offset: *acked_offset,
                        max_bytes: chunk,
                    });
                }
            }
        }
    }

    fn on_append(
        &mut self,
        from: NodeId,
        prev_index: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: LogIndex,
        read_round: u64,
    ) {
        self.on_leader_contact(from);
        let body = match self.log.try_append(prev_index, prev_term, entries) {
            Ok(last_new) => {
                // §5.3: commit up to the leader's commit, but never past what
                // this message proved we share with the leader.
                let commit = commit.min(last_new);
                self.log.commit_to(commit);
                self.after_config_change();
                MessageBody::AppendResponse {
                    index: last_new,
                    reject: None,
                    read_round,
                }
            }
            Err(hint) => MessageBody::AppendResponse {
                index: prev_index,
                reject: Some(hint),
                read_round,
            },
        };
        self.send_after_persist(from, body);
    }

    fn on_heartbeat(&mut self, from: NodeId, commit: LogIndex, read_round: u64) {
        self.on_leader_contact(from);
        // The leader sends min(its commit, our match), so the entries up to
        // there are the leader's; still never go past what we hold.
        let commit = commit.min(self.log.last_index());
        self.log.commit_to(commit);
        self.out.messages.push(Message {
            from: self.config.id,
            to: from,
            term: self.hard_state.term,
            body: MessageBody::HeartbeatResponse { read_round },
        });
    }

    fn on_reserve_heartbeat(
        &mut self,
        from: NodeId,
        commit: LogIndex,
        config: Configuration,
        config_index: LogIndex,
    ) {
        self.on_leader_contact(from);
        if config_index > self.log.latest_config().0
            && self
                .reserve_view
                .as_ref()
                .is_none_or(|(index, _)| config_index > *index)
        {
            self.reserve_view = Some((config_index, config));
        }
        // A reserve holds no log; it only needs to know where the leader is.
        let _ = commit;
        self.out.messages.push(Message {
            from: self.config.id,
            to: from,
            term: self.hard_state.term,
            body: MessageBody::HeartbeatResponse { read_round: 0 },
        });
    }

    fn on_leader_contact(&mut self, from: NodeId) {
        if self.role != Role::Follower || self.leader != Some(from) {
            let term = self.hard_state.term;
            self.become_follower(term, Some(from));
        }
        self.vote_lease_until = self.now.plus_ms(self.config.election_timeout_ms);
        self.reset_election_deadline();
    }

    fn on_append_response(
        &mut self,
        from: NodeId,
        index: LogIndex,
        reject: Option<RejectHint>,
        read_round: u64,
    ) {
        if !self.note_follower_answer(from, read_round) {
            return;
        }
        let last_index = self.log.last_index();
        let now = self.now;
        let state = self.leader_state.as_mut().expect("leader");
        let progress = state.progress.get_mut(&from).expect("checked member");
        match reject {
            None => {
                if index > last_index {
                    // A correct follower never claims more than we sent.
                    self.stats.dropped_invalid += 1;
                    return;
                }
                let moved = progress.on_success(index, now);
                match progress.state {
                    ReplicationState::Probe => progress.become_replicate(),
                    ReplicationState::Snapshot { ref meta, .. } if index >= meta.index => {
                        progress.become_probe();
                        progress.become_replicate();
                    }
                    _ => {}
                }
                if moved {
                    self.maybe_commit();
                    self.maybe_promote_learner(from);
                    self.maybe_send_timeout_now(from);
                }
            }
            Some(hint) => {
                // A rejection of an append that was not the one expected
                // (reordered or duplicated) is stale.
                if index <= progress.match_index
                    || matches!(progress.state, ReplicationState::Snapshot { .. })
                    || (progress.state == ReplicationState::Probe
                        && index.next() != progress.next_index)
                {
                    self.stats.dropped_stale += 1;
                    return;
                }
                let next = self.log.find_conflict_by_term(hint).next();
                progress.become_probe();
                progress.next_index = next.max(progress.match_index.next()).min(last_index.next());
            }
        }
    }

    fn on_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        if !self.note_follower_answer(from, read_round) {
            return;
        }
        let now = self.now;
        let retransmit_ms = 2 * self.config.heartbeat_interval_ms;
        let state = self.leader_state.as_mut().expect("leader");
        let progress = state.progress.get_mut(&from).expect("checked member");
        match progress.state {
            // The probe may have been lost: allow another.
            ReplicationState::Probe => progress.probe_sent = false,
            // Appends in flight for a long time were probably lost (the
            // network may drop messages): go back to probing from the match
            // index. Duplicates are harmless to the follower.
            ReplicationState::Replicate
                if !progress.inflight.is_empty()
                    && now.since(progress.last_advance) >= retransmit_ms =>
            {
                progress.become_probe();
                progress.next_index = progress.match_index.next();
            }
            _ => {}
        }
    }

    /// Bookkeeping common to every answer from a follower. Returns false if
    /// the answer must be ignored.
    fn note_follower_answer(&mut self, from: NodeId, read_round: u64) -> bool {
        let now = self.now;
        let Some(state) = self.leader_state.as_mut() else {
            self.stats.dropped_stale += 1;
            return false;
        };
        let Some(progress) = state.progress.get_mut(&from) else {
            self.stats.dropped_stale += 1;
            return false;
        };
        progress.last_heard = now;
        if read_round > state.reads.current {
            self.stats.dropped_invalid += 1;
            return false;
        }
        if read_round > progress.read_round_acked {
            progress.read_round_acked = read_round;
            self.advance_read_rounds();
        }
        true
    }

    fn maybe_commit(&mut self) {
        let Some(state) = self.leader_state.as_ref() else {
            return;
        };
        let config = self.log.latest_config().1;
        let mut matches: Vec<LogIndex> = config
            .voters()
            .map(|id| {
                if id == self.config.id {
                    self.log.persisted
                } else {
                    state
                        .progress
                        .get(&id)
                        .map_or(LogIndex::ZERO, |p| p.match_index)
                }
            })
            .collect();
        if matches.is_empty() {
            return;
        }
        matches.sort_unstable_by(|a, b| b.cmp(a));
        #[allow(unused_mut)]
        let mut position = config.quorum() - 1;
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::CommitWithoutQuorum) {
            position = position.saturating_sub(1);
        }
        let candidate = matches[position];
        // §5.4.2: only entries of the current term are committed by counting
        // replicas; earlier ones commit indirectly.
        if candidate <= self.log.commit || self.log.term(candidate) != Some(self.hard_state.term) {
            return;
        }
        let old_commit = self.log.commit;
        self.log.commit_to(candidate);
        self.on_leader_commit(old_commit);
    }

    fn on_leader_commit(&mut self, old_commit: LogIndex) {
        let commit = self.log.commit;
        // Uncommitted byte accounting.
        let mut released = 0;
        let mut index = old_commit.next();
        while index <= commit {
            if let Some(entry) = self.log.entry(index) {
                released += entry.size_bytes();
            }
            index = index.next();
        }
        let state = self.leader_state.as_mut().expect("leader");
        state.uncommitted_bytes = state.uncommitted_bytes.saturating_sub(released);
        // Reads that waited for the first commit of this term.
        if self.log.term(commit) == Some(self.hard_state.term)
            && !state.reads.waiting_for_commit.is_empty()
        {
            let ids = std::mem::take(&mut state.reads.waiting_for_commit);
            let single = self.is_single_voter();
            let state = self.leader_state.as_mut().expect("leader");
            for id in ids {
                if single {
                    self.out.read_states.push(ReadState {
                        id,
                        result: Ok(commit),
                    });
                } else {
                    state
                        .reads
                        .waiting
                        .push_back((id, commit, state.reads.current + 1));
                }
            }
            if state.reads.confirmed == state.reads.current && !state.reads.waiting.is_empty() {
                self.start_read_round();
            }
        }
        // A leader that is no longer a voter steps down once the
        // configuration that removed it is committed (thesis §4.2.2), handing
        // over to the most up-to-date voter.
        let (config_index, config) = self.log.latest_config();
        if config_index <= commit && !config.is_voter(self.config.id) {
            let successor = {
                let state = self.leader_state.as_ref().expect("leader");
                config.voters().max_by_key(|id| {
                    state
                        .progress
                        .get(id)
                        .map_or(LogIndex::ZERO, |p| p.match_index)
                })
            };
            if let Some(successor) = successor {
                if self
                    .leader_state
                    .as_ref()
                    .and_then(|s| s.progress.get(&successor))
                    .map(|p| p.match_index)
                    == Some(self.log.last_index())
                {
                    self.send(successor, MessageBody::TimeoutNow);
                }
            }
            let term = self.hard_state.term;
            self.become_follower(term, None);
            return;
        }
        let learners: Vec<NodeId> = config
            .members
            .iter()
            .filter(|(_, role)| **role == MemberRole::Learner)
            .map(|(id, _)| *id)
            .collect();
        for learner in learners {
            self.maybe_promote_learner(learner);
        }
    }

    /// Promote a learner that has caught up (thesis §4.2.1).
    fn maybe_promote_learner(&mut self, id: NodeId) {
        let Some(state) = self.leader_state.as_ref() else {
            return;
        };
        let (version, config) = self.log.latest_config();
        if config.role(id) != Some(MemberRole::Learner)
            || state.transfer.is_some()
            || version > self.log.commit
            || self.log.commit < state.noop_index
        {
            return;
        }
        let Some(progress) = state.progress.get(&id) else {
            return;
        };
        if progress.match_index.0 + self.config.promote_lag_entries < self.log.last_index().0 {
            return;
        }
        let mut next = config.clone();
        next.members.insert(id, MemberRole::Voter);
        self.append_config(next);
    }

    fn maybe_send_timeout_now(&mut self, target: NodeId) {
        let Some(state) = self.leader_state.as_ref() else {
            return;
        };
        if state.transfer.map(|(t, _)| t) != Some(target) {
            return;
        }
        if state.progress.get(&target).map(|p| p.match_index) == Some(self.log.last_index()) {
            self.send(target, MessageBody::TimeoutNow);
        }
    }

    fn broadcast_heartbeat(&mut self) {
        self.start_read_round();
        self.broadcast_reserve_heartbeats();
    }

    fn broadcast_reserve_heartbeats(&mut self) {
        let (config_index, config) = self.log.latest_config();
        let reserves: Vec<NodeId> = config
            .members
            .iter()
            .filter(|(id, role)| **role == MemberRole::Reserve && **id != self.config.id)
            .map(|(id, _)| *id)
            .collect();
        for id in reserves {
            let body = MessageBody::ReserveHeartbeat {
                commit: self.log.commit,
                config: self.log.latest_config().1.clone(),
                config_index,
            };
            self.send(id, body);
        }
    }

    // ----- Reads (thesis §6.4) ------------------------------------------------

    /// Start a new read round: a heartbeat to every replicating member.
    fn start_read_round(&mut self) {
        let now = self.now;
        let commit = self.log.commit;
        let config = self.log.latest_config().1.clone();
        let state = self.leader_state.as_mut().expect("leader");
        state.reads.current += 1;
        let round = state.reads.current;
        // Bounded: without check-quorum a cut-off leader keeps starting
        // rounds. Forgetting an old start time only loses lease time.
        if state.reads.started_at.len() >= MAX_UNCONFIRMED_ROUNDS {
            state.reads.started_at.pop_front();
        }
        state.reads.started_at.push_back((round, now));
        let mut heartbeats = Vec::new();
        for (id, progress) in &mut state.progress {
            if config.role(*id).is_some_and(MemberRole::replicates) {
                let commit = commit.min(progress.match_index);
                heartbeats.push((
                    *id,
                    MessageBody::Heartbeat {
                        commit,
                        read_round: round,
                    },
                ));
            }
        }
        for (to, body) in heartbeats {
            self.send(to, body);
        }
        self.advance_read_rounds();
    }

    /// Confirm rounds a quorum has acknowledged; release reads and extend the
    /// lease.
    fn advance_read_rounds(&mut self) {
        let lease_ms = self.config.lease_ms();
        let self_id = self.config.id;
        let config = self.log.latest_config().1;
        let state = self.leader_state.as_mut().expect("leader");
        let mut acked: Vec<u64> = config
            .voters()
            .map(|id| {
                if id == self_id {
                    state.reads.current
                } else {
                    state.progress.get(&id).map_or(0, |p| p.read_round_acked)
                }
            })
            .collect();
        if acked.is_empty() {
            return;
        }
        acked.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed = acked[config.quorum() - 1];
        let reads = &mut state.reads;
        if confirmed <= reads.confirmed {
            return;
        }
        reads.confirmed = confirmed;
        while let Some((round, started)) = reads.started_at.front().copied() {
            if round > confirmed {
                break;
            }
            reads.started_at.pop_front();
            if round == confirmed {
                // Followers heard from us no earlier than `started`, so none
                // of them votes for anyone else until `started + T` (by its
                // clock); subtract the drift bound for clock rate errors.
                reads.lease_until = reads.lease_until.max(started.plus_ms(lease_ms));
            }
        }
        while let Some((id, index, round)) = reads.waiting.front().copied() {
            if round > confirmed {
                break;
            }
            reads.waiting.pop_front();
            self.out.read_states.push(ReadState {
                id,
                result: Ok(index),
            });
        }
        let reads = &self.leader_state.as_ref().expect("leader").reads;
        if !reads.waiting.is_empty() && reads.confirmed == reads.current {
            self.start_read_round();
        }
    }

    // ----- Snapshots (§7) -----------------------------------------------------

    fn on_install_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: bool,
    ) {
        self.on_leader_contact(from);
        let index = meta.index;
        if index <= self.log.commit {
            // We already have everything the snapshot covers.
            self.incoming_snapshot = None;
            let body = MessageBody::AppendResponse {
                index: self.log.commit,
                reject: None,
                read_round: 0,
            };
            self.send_after_persist(from, body);
            return;
        }
        let restart = match &self.incoming_snapshot {
            Some(incoming) => incoming.meta != meta,
            None => true,
        };
        if restart {
            if offset != 0 {
                self.send(
                    from,
                    MessageBody::InstallSnapshotResponse {
                        index,
                        next_offset: 0,
                    },
                );
                return;
            }
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta: meta.clone(),
                from,
                next_offset: 0,
                complete: false,
            });
        }
        let incoming = self.incoming_snapshot.as_mut().expect("set above");
        incoming.from = from;
        if offset != incoming.next_offset || incoming.complete {
            let next_offset = incoming.next_offset;
            self.send(
                from,
                MessageBody::InstallSnapshotResponse { index, next_offset },
            );
            return;
        }
        incoming.next_offset += data.len() as u64;
        let next_offset = incoming.next_offset;
        if done {
            incoming.complete = true;
            self.pending_snapshot_install = Some(meta.clone());
        }
        self.out.snapshot_chunks.push(SnapshotChunk {
            meta,
            offset,
            data,
            done,
        });
        if !done {
            self.send(
                from,
                MessageBody::InstallSnapshotResponse { index, next_offset },
            );
        }
    }

    fn on_install_snapshot_response(&mut self, from: NodeId, index: LogIndex, next_offset: u64) {
        if !self.note_follower_answer(from, 0) {
            return;
        }
        let now = self.now;
        let chunk = self.config.snapshot_chunk_bytes;
        let state = self.leader_state.as_mut().expect("leader");
        let progress = state.progress.get_mut(&from).expect("checked member");
        let ReplicationState::Snapshot {
            meta,
            acked_offset,
            requested_at,
        } = &mut progress.state
        else {
            self.stats.dropped_stale += 1;
            return;
        };
        if meta.index != index {
            self.stats.dropped_stale += 1;
            return;
        }
        *acked_offset = next_offset;
        *requested_at = now;
        let meta = meta.clone();
        self.out.snapshot_requests.push(SnapshotRequest {
            to: from,
            meta,
            offset: next_offset,
            max_bytes: chunk,
        });
    }

    // ----- Stale terms and helpers ---------------------------------------------

    fn on_stale_term(&mut self, message: Message) {
        match message.body {
            // Tell a deposed leader about the newer term so it steps down.
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }
            | MessageBody::ReserveHeartbeat { .. } => {
                self.send(
                    message.from,
                    MessageBody::AppendResponse {
                        index: LogIndex::ZERO,
                        reject: None,
                        read_round: 0,
                    },
                );
            }
            MessageBody::PreVote { .. } => {
                self.send(
                    message.from,
                    MessageBody::PreVoteResponse { granted: false },
                );
            }
            _ => self.stats.dropped_stale += 1,
        }
    }

    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.out.messages.push(Message {
            from: self.config.id,
            to,
            term: self.hard_state.term,
            body,
        });
    }

    fn send_after_persist(&mut self, to: NodeId, body: MessageBody) {
        self.out.messages_after_persist.push(Message {
            from: self.config.id,
            to,
            term: self.hard_state.term,
            body,
        });
    }

    // ----- Invariants ------------------------------------------------------

    /// Check every internal invariant; panics on violation. Cheap enough to
    /// call after every step in tests and simulation.
    pub fn invariants(&self) {
        self.log.invariants();
        if let Some(last) = self.log.entry(self.log.last_index()) {
            assert!(
                last.term <= self.hard_state.term,
                "log has an entry from a future term"
            );
        }
        match self.role {
            Role::Leader => {
                assert_eq!(
                    self.leader,
                    Some(self.config.id),
                    "leader must know it leads"
                );
                assert_eq!(
                    self.hard_state.vote,
                    Some(self.config.id),
                    "leader voted for itself"
                );
                let state = self.leader_state.as_ref().expect("leader has leader state");
                for (id, progress) in &state.progress {
                    assert_ne!(*id, self.config.id, "leader tracks no progress for itself");
                    progress.invariants(self.config.max_inflight_appends);
                    assert!(
                        progress.match_index <= self.log.last_index(),
                        "follower matches beyond our log"
                    );
                }
                assert!(
                    state.reads.confirmed <= state.reads.current,
                    "confirmed a future round"
                );
                let members = &self.log.latest_config().1.members;
                assert!(
                    state.progress.keys().all(|id| members.contains_key(id)),
                    "progress for a non-member"
                );
            }
            Role::Candidate => {
                assert_eq!(
                    self.hard_state.vote,
                    Some(self.config.id),
                    "candidate voted for itself"
                );
                assert!(self.leader_state.is_none());
            }
            Role::Follower | Role::PreCandidate => assert!(self.leader_state.is_none()),
        }
    }
}

/// Reject messages no correct peer sends. Everything here is cheap: the
/// structure is checked, not the content against our log.
fn message_is_well_formed(message: &Message, chunk_limit: usize) -> bool {
    // Terms, indexes, rounds and offsets stay far below the point where
    // arithmetic on them could overflow; anything larger is a forgery.
    const LIMIT: u64 = 1 << 62;
    let sane = |value: u64| value < LIMIT;
    if !sane(message.term.0) {
        return false;
    }
    match &message.body {
        MessageBody::PreVote {
            last_index,
            last_term,
        }
        | MessageBody::Vote {
            last_index,
            last_term,
            ..
        } => *last_term < message.term && sane(last_index.0),
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
            read_round,
        } => {
            if *prev_term > message.term
                || !sane(prev_index.0)
                || !sane(commit.0)
                || !sane(*read_round)
            {
                return false;
            }
            let mut expected_index = prev_index.next();
            let mut last_term = *prev_term;
            for entry in entries {
                if entry.index != expected_index
                    || entry.term < last_term
                    || entry.term > message.term
                {
                    return false;
                }
                if let EntryPayload::Config(config) = &entry.payload {
                    if !config_is_well_formed(config) {
                        return false;
                    }
                }
                expected_index = expected_index.next();
                last_term = entry.term;
            }
            true
        }
        MessageBody::AppendResponse {
            index,
            reject,
            read_round,
        } => sane(index.0) && sane(*read_round) && reject.is_none_or(|hint| hint.index <= *index),
        MessageBody::Heartbeat { commit, read_round } => sane(commit.0) && sane(*read_round),
        MessageBody::HeartbeatResponse { read_round } => sane(*read_round),
        MessageBody::InstallSnapshotResponse { index, next_offset } => {
            sane(index.0) && sane(*next_offset)
        }
        MessageBody::InstallSnapshot {
            meta, data, offset, ..
        } => {
            meta.index > LogIndex::ZERO
                && sane(meta.index.0)
                && sane(*offset)
                && meta.term <= message.term
                && data.len() <= chunk_limit.saturating_mul(4)
                && config_is_well_formed(&meta.config)
        }
        MessageBody::ReserveHeartbeat {
            config,
            commit,
            config_index,
        } => config_is_well_formed(config) && sane(commit.0) && sane(config_index.0),
        MessageBody::PreVoteResponse { .. }
        | MessageBody::VoteResponse { .. }
        | MessageBody::TimeoutNow => true,
    }
}

fn config_is_well_formed(config: &Configuration) -> bool {
    !config.members.contains_key(&NodeId(0)) && config.voter_count() > 0
}

fn validate_persistent_state(state: &PersistentState) -> Result<(), InitError> {
    let fail = |reason: String| Err(InitError::State(reason));
    let snapshot = &state.snapshot;
    if let (Some(first), Some(last)) = (state.entries.first(), state.entries.last()) {
        if first.index > snapshot.index.next() {
            return fail(format!(
                "log starts at {:?}, after snapshot {:?}",
                first.index, snapshot.index
            ));
        }
        if last.index < snapshot.index {
            return fail(format!(
                "log ends at {:?}, before snapshot {:?}",
                last.index, snapshot.index
            ));
        }
        if first.index == LogIndex::ZERO {
            return fail("log entry with index 0".into());
        }
        for pair in state.entries.windows(2) {
            if pair[1].index != pair[0].index.next() || pair[1].term < pair[0].term {
                return fail(format!(
                    "log not contiguous or terms decreasing at {:?}",
                    pair[1].index
                ));
            }
        }
        if let Some(entry) = state.entries.iter().find(|e| e.index == snapshot.index) {
            if entry.term != snapshot.term {
                return fail(format!(
                    "entry {:?} disagrees with the snapshot term",
                    entry.index
                ));
            }
        }
        if last.term > state.hard_state.term {
            return fail(format!(
                "log term {:?} above current term {:?}",
                last.term, state.hard_state.term
            ));
        }
    }
    if snapshot.term > state.hard_state.term {
        return fail("snapshot term above current term".into());
    }
    Ok(())
}

impl PersistentState {
    /// The state of a brand-new server of a cluster bootstrapped with
    /// `config`: every initial voter starts from the same configuration.
    pub fn bootstrap(config: Configuration) -> Self {
        Self {
            hard_state: HardState::default(),
            snapshot: SnapshotMeta {
                index: LogIndex::ZERO,
                term: Term::ZERO,
                config,
            },
            entries: Vec::new(),
        }
    }
}
