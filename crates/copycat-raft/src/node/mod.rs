//! `RawNode`: one Raft server as a deterministic state machine.
//!
//! This module holds the struct, its role-typed state and the public API;
//! the protocol itself lives in one submodule per concern, in the way etcd's
//! raft splits tracker, quorum, confchange and read-only handling:
//!
//! - [`election`]: pre-vote, votes, role transitions, leadership transfer
//!   (Raft §5.2, thesis §3.10, §4.2.3, §9.6);
//! - [`replication`]: appends, heartbeats, commitment (§5.3, §5.4.2);
//! - [`reads`]: ReadIndex rounds and leases (thesis §6.4);
//! - [`snapshot`]: chunked snapshot transfer and install (§7);
//! - [`membership`]: single-server configuration changes (thesis §4);
//! - [`validation`]: which messages are ignored, and why;
//! - [`invariants`]: internal consistency checks.
//!
//! The state is split in two so that the borrow checker enforces roles:
//! [`Core`] is what every role has (log, term, clock, outputs), and
//! [`RoleState`] is what only one role has. Leader-only code is written as
//! methods of [`LeaderState`] taking `&mut Core`, so it cannot run unless the
//! node holds a `LeaderState`, that is, unless it leads.

mod election;
mod invariants;
mod membership;
mod reads;
mod replication;
mod snapshot;
mod validation;

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::config::Config;
use crate::errors::{ConfigChangeError, ProposeError, ReadError, SnapshotError, TransferError};
use crate::log::RaftLog;
use crate::message::{Message, MessageBody};
use crate::progress::Progress;
use crate::ready::{Ready, Role, SoftState};
use crate::types::{
    Configuration, Entry, HardState, LogIndex, MemberRole, NodeId, PersistentState, SnapshotMeta,
    Term, Time,
};

use reads::ReadRounds;
use snapshot::IncomingSnapshot;
pub use validation::{IgnoreReason, Ignored};

/// How many ignored-message records [`RawNode::take_ignored`] keeps when the
/// caller does not drain them (the counters in [`Stats`] are always exact).
const MAX_IGNORED_KEPT: usize = 256;

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

impl MembershipChange {
    /// The server the change is about.
    pub fn target(&self) -> NodeId {
        match self {
            MembershipChange::AddVoter(id)
            | MembershipChange::AddPassive(id)
            | MembershipChange::AddReserve(id)
            | MembershipChange::Remove(id) => *id,
        }
    }
}

/// Counters for things that went wrong without breaking anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages dropped because a correct peer could not have sent them
    /// (the sum over the reasons for which [`IgnoreReason::is_invalid`]).
    pub dropped_invalid: u64,
    /// Messages dropped because they were stale or unexpected (the sum over
    /// every other reason).
    pub dropped_stale: u64,
    /// Elections started (pre-vote rounds not counted).
    pub elections: u64,
    /// Times this server stepped down because it lost contact with a quorum.
    pub check_quorum_step_downs: u64,
    /// Ignored messages by reason, indexed by `IgnoreReason as usize`.
    ignored: [u64; IgnoreReason::ALL.len()],
}

impl Stats {
    /// How many messages were ignored for `reason`.
    pub fn ignored(&self, reason: IgnoreReason) -> u64 {
        self.ignored[reason as usize]
    }

    fn count_ignored(&mut self, reason: IgnoreReason) {
        self.ignored[reason as usize] += 1;
        if reason.is_invalid() {
            self.dropped_invalid += 1;
        } else {
            self.dropped_stale += 1;
        }
    }
}

/// The result of [`RawNode::new`] when the durable state is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::errors::ConfigError),
    /// The persistent state is inconsistent.
    #[error("inconsistent persistent state: {0}")]
    State(String),
}

/// Returned by leader code that decided the leader must step down. The
/// caller (which owns the role) performs the transition, because leader code
/// only holds `&mut LeaderState` and cannot replace it.
#[must_use = "the leader must step down"]
#[derive(Debug)]
pub(crate) struct StepDown;

/// What a server holds only in one role. The public [`Role`] tag is derived
/// from it, so the two can never disagree.
#[derive(Clone, Debug)]
enum RoleState {
    /// Follows `leader` (or waits for one).
    Follower { leader: Option<NodeId> },
    /// Running a pre-vote round: the pre-votes received (ours included).
    PreCandidate { votes: BTreeMap<NodeId, bool> },
    /// Running an election: the votes received (ours included).
    Candidate { votes: BTreeMap<NodeId, bool> },
    /// Leading the current term.
    Leader(Box<LeaderState>),
}

/// State that exists only while leading.
#[derive(Clone, Debug)]
pub(crate) struct LeaderState {
    progress: BTreeMap<NodeId, Progress>,
    reads: ReadRounds,
    next_heartbeat: Time,
    next_quorum_check: Time,
    /// Target and deadline of a leadership transfer in progress.
    transfer: Option<(NodeId, Time)>,
    /// Index of this term's no-op entry: the first entry of the term. Once
    /// it is committed, the leader's commit index is current (thesis §6.4).
    noop_index: LogIndex,
    /// Bytes of entries appended and not yet committed.
    uncommitted_bytes: usize,
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

/// Everything a server holds whatever its role: durable state, the log, the
/// clock and the outputs being collected.
#[derive(Clone, Debug)]
pub(crate) struct Core {
    config: Config,
    random: Random,
    now: Time,
    hard_state: HardState,
    hard_state_dirty: bool,
    log: RaftLog,
    /// A newer configuration learned from a reserve heartbeat (reserves do
    /// not receive the log). Only used to decide whether to campaign.
    reserve_view: Option<(LogIndex, Configuration)>,
    election_deadline: Time,
    /// Votes (and pre-votes) for a campaign are refused before this time
    /// unless the candidate was asked to run by a leadership transfer:
    /// leader stickiness, which also makes lease reads safe.
    vote_lease_until: Time,
    incoming_snapshot: Option<IncomingSnapshot>,
    pending_purge: Option<LogIndex>,
    pending_snapshot_install: Option<SnapshotMeta>,
    out: Ready,
    /// Messages ignored since the caller last drained them (bounded).
    ignored: VecDeque<Ignored>,
    stats: Stats,
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
    core: Core,
    role: RoleState,
    last_soft_state: SoftState,
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
        validation::validate_persistent_state(&state)?;
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
        let mut core = Core {
            random: Random(seed ^ config.id.0.rotate_left(32)),
            now,
            hard_state,
            hard_state_dirty: false,
            log,
            reserve_view: None,
            election_deadline: now,
            vote_lease_until: now.plus_ms(config.election_timeout_ms),
            incoming_snapshot: None,
            pending_purge: None,
            pending_snapshot_install: None,
            out: Ready::default(),
            ignored: VecDeque::new(),
            stats: Stats::default(),
            config,
        };
        core.reset_election_deadline();
        Ok(Self {
            core,
            role: RoleState::Follower { leader: None },
            last_soft_state: soft,
        })
    }

    // ----- Observers -------------------------------------------------------

    /// This server's id.
    pub fn id(&self) -> NodeId {
        self.core.config.id
    }

    /// Current term.
    pub fn term(&self) -> Term {
        self.core.hard_state.term
    }

    /// Current role.
    pub fn role(&self) -> Role {
        match self.role {
            RoleState::Follower { .. } => Role::Follower,
            RoleState::PreCandidate { .. } => Role::PreCandidate,
            RoleState::Candidate { .. } => Role::Candidate,
            RoleState::Leader(_) => Role::Leader,
        }
    }

    /// Known leader of the current term.
    pub fn leader(&self) -> Option<NodeId> {
        match self.role {
            RoleState::Follower { leader } => leader,
            RoleState::PreCandidate { .. } | RoleState::Candidate { .. } => None,
            RoleState::Leader(_) => Some(self.core.config.id),
        }
    }

    /// Whether this server is the leader.
    pub fn is_leader(&self) -> bool {
        matches!(self.role, RoleState::Leader(_))
    }

    /// The term and vote.
    pub fn hard_state(&self) -> HardState {
        self.core.hard_state
    }

    /// Highest committed index known here.
    pub fn commit_index(&self) -> LogIndex {
        self.core.log.commit
    }

    /// Highest index handed out for applying.
    pub fn applied_index(&self) -> LogIndex {
        self.core.log.applied
    }

    /// Index of the last entry in the log.
    pub fn last_index(&self) -> LogIndex {
        self.core.log.last_index()
    }

    /// Index of the first entry held in memory.
    pub fn first_index(&self) -> LogIndex {
        self.core.log.first_index()
    }

    /// Term of the entry at `index`, if held.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.core.log.term(index)
    }

    /// The entry at `index`, if held.
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.core.log.entry(index)
    }

    /// The latest snapshot's description.
    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        self.core.log.snapshot()
    }

    /// The configuration in effect (the latest one in the log) and its
    /// version (the index of its entry).
    pub fn configuration(&self) -> (LogIndex, &Configuration) {
        self.core.log.latest_config()
    }

    /// The configurations in effect from `index` to the end of the log: the
    /// one in effect at `index`, then every later one. A commit at `index`
    /// was counted in one of them.
    pub fn configurations_since(&self, index: LogIndex) -> Vec<Configuration> {
        self.core.log.configs_since(index)
    }

    /// The caller's latest time as seen by the core.
    pub fn now(&self) -> Time {
        self.core.now
    }

    /// Problem counters.
    pub fn stats(&self) -> Stats {
        self.core.stats
    }

    /// Take the record of every message ignored since the last call, oldest
    /// first, each with the reason it was ignored (see [`IgnoreReason`]).
    ///
    /// These are diagnostics, not effects, so they are not part of
    /// [`Ready`]: a caller that never drains them loses nothing but old
    /// records (only the latest 256 are kept; [`Stats`] counts them all).
    pub fn take_ignored(&mut self) -> Vec<Ignored> {
        self.core.ignored.drain(..).collect()
    }

    /// The configuration of this node.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// For a leader: each follower's match index.
    pub fn match_indexes(&self) -> BTreeMap<NodeId, LogIndex> {
        match &self.role {
            RoleState::Leader(state) => state
                .progress
                .iter()
                .map(|(id, p)| (*id, p.match_index))
                .collect(),
            _ => BTreeMap::new(),
        }
    }

    /// For a leader: the time until which lease reads are served without a
    /// quorum round, if a lease is held.
    ///
    /// The bound is exact: the lease ends at `s + election timeout - clock
    /// drift bound`, where `s` is the time this leader *sent* the latest
    /// heartbeat round that a quorum of voters acknowledged (not the time
    /// the acknowledgements arrived). Every voter that acknowledged the
    /// round heard from this leader no earlier than `s`, so by leader
    /// stickiness none of them votes for another candidate before `s +
    /// election timeout` on its own clock. No lease is held without
    /// check-quorum or after a leadership transfer started in this term.
    pub fn lease_until(&self) -> Option<Time> {
        match &self.role {
            RoleState::Leader(state) => state.reads.lease_until(&self.core),
            _ => None,
        }
    }

    /// The role this server believes it has in the newest configuration it
    /// knows.
    pub fn member_role(&self) -> Option<MemberRole> {
        self.core.member_role()
    }

    // ----- Inputs ----------------------------------------------------------

    /// Advance the clock. Drives elections, heartbeats, check-quorum and
    /// retransmissions. Time never goes back: an earlier `now` is ignored.
    pub fn tick(&mut self, now: Time) {
        if now > self.core.now {
            self.core.now = now;
        }
        if let RoleState::Leader(state) = &mut self.role {
            if let Some(StepDown) = state.tick(&mut self.core) {
                self.step_down();
            }
        } else if self.core.now >= self.core.election_deadline {
            self.core.reset_election_deadline();
            self.campaign();
        }
    }

    /// Start an election now (after a pre-vote round if enabled), as if the
    /// election timeout had fired. Does nothing unless this server is a
    /// voter that does not lead. Useful to operators and tests.
    pub fn campaign(&mut self) {
        if self.is_leader() || !self.core.can_campaign() {
            return;
        }
        if self.core.config.pre_vote {
            self.campaign_pre_vote();
        } else {
            self.start_election(false);
        }
    }

    /// Handle a message from a peer.
    ///
    /// A message is either handled or ignored for one named
    /// [`IgnoreReason`]: it is screened before its term is looked at
    /// (addressing, form, stickiness, stale term), then, once a newer term
    /// has been adopted, checked against the role (`ignore_reason`). The
    /// handlers after those checks assume what they established. Ignored
    /// messages are counted in [`Stats`] and listed by
    /// [`take_ignored`](Self::take_ignored).
    pub fn step(&mut self, message: Message) {
        if let Some(reason) = self.screen(&message) {
            self.core.ignore(&message, reason);
            return;
        }
        let term = self.core.hard_state.term;
        if message.term > term {
            match &message.body {
                MessageBody::PreVote { .. } => {}
                // A granted pre-vote is answered in the term we asked about.
                MessageBody::PreVoteResponse { granted: true } => {}
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::ReserveHeartbeat { .. } => {
                    self.become_follower(message.term, Some(message.from));
                }
                _ => self.become_follower(message.term, None),
            }
        } else if message.term < term {
            // `screen` let through only the kinds that deserve an answer.
            self.answer_stale_term(message);
            return;
        }
        if let Some(reason) = self.ignore_reason(&message) {
            if reason.counts_as_contact() {
                // The answer is stale but the follower is alive and echoed a
                // round: that still counts for check-quorum and reads.
                if let RoleState::Leader(state) = &mut self.role {
                    state.note_follower_answer(
                        &mut self.core,
                        message.from,
                        message.body.read_round(),
                    );
                }
            }
            self.core.ignore(&message, reason);
            return;
        }
        let from = message.from;
        match message.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => self.on_pre_vote(from, message.term, last_index, last_term),
            MessageBody::PreVoteResponse { granted } => self.on_pre_vote_response(from, granted),
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => self.on_vote(from, last_index, last_term),
            MessageBody::VoteResponse { granted } => self.on_vote_response(from, granted),
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
                read_round,
            } => self.on_append(from, prev_index, prev_term, entries, commit, read_round),
            MessageBody::Heartbeat { commit, read_round } => {
                self.on_heartbeat(from, commit, read_round)
            }
            MessageBody::ReserveHeartbeat {
                commit,
                config,
                config_index,
            } => self.on_reserve_heartbeat(from, commit, config, config_index),
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done,
            } => self.on_install_snapshot(from, meta, offset, data, done),
            MessageBody::TimeoutNow => self.on_timeout_now(from),
            body @ (MessageBody::AppendResponse { .. }
            | MessageBody::HeartbeatResponse { .. }
            | MessageBody::InstallSnapshotResponse { .. }) => {
                let RoleState::Leader(state) = &mut self.role else {
                    unreachable!("ignore_reason admits follower answers only while leading");
                };
                if let Some(StepDown) = state.on_follower_answer(&mut self.core, from, body) {
                    self.step_down();
                }
            }
        }
    }

    /// Propose commands. On success returns the index of the first and the
    /// last appended entry; the caller learns the outcome when they show up
    /// in `committed_entries` (or are overwritten after a leader change).
    pub fn propose(&mut self, commands: Vec<Bytes>) -> Result<(LogIndex, LogIndex), ProposeError> {
        let leader = self.leader();
        match &mut self.role {
            RoleState::Leader(state) => state.propose(&mut self.core, commands),
            _ => Err(ProposeError::NotLeader { leader }),
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
        if now > self.core.now {
            self.core.now = now;
        }
        let leader = self.leader();
        match &mut self.role {
            RoleState::Leader(state) => state.read(&mut self.core, id, mode),
            _ => Err(ReadError::NotLeader { leader }),
        }
    }

    /// Report that entries up to `index` (whose term is `term`) are durable.
    /// Ignored if the log no longer holds that entry (it was overwritten).
    pub fn persisted(&mut self, index: LogIndex, term: Term) {
        let log = &mut self.core.log;
        if log.term(index) != Some(term) || index <= log.persisted {
            return;
        }
        log.persisted = index.min(log.last_index());
        if let RoleState::Leader(state) = &mut self.role {
            // The leader counts its own log only once it is durable.
            if let Some(StepDown) = state.maybe_commit(&mut self.core) {
                self.step_down();
            }
        }
    }

    /// The application took a snapshot of its state at `index` (which it has
    /// applied). The core records it, purges the log before it (keeping a few
    /// trailing entries), and will send it to followers that need it.
    pub fn snapshot_taken(&mut self, index: LogIndex) -> Result<SnapshotMeta, SnapshotError> {
        self.core.snapshot_taken(index)
    }

    /// Hand over a chunk of snapshot data requested through
    /// [`Ready::snapshot_requests`]. `done` marks the last chunk. Ignored
    /// unless this server leads and is sending that snapshot from `offset`.
    pub fn snapshot_chunk(
        &mut self,
        to: NodeId,
        index: LogIndex,
        offset: u64,
        data: Bytes,
        done: bool,
    ) {
        if let RoleState::Leader(state) = &mut self.role {
            state.snapshot_chunk(&mut self.core, to, index, offset, data, done);
        }
    }

    /// The snapshot requested for `to` at `index` no longer exists (a newer
    /// one replaced it); start over with the latest.
    pub fn snapshot_unavailable(&mut self, to: NodeId, index: LogIndex) {
        if let RoleState::Leader(state) = &mut self.role {
            state.snapshot_unavailable(&mut self.core, to, index);
        }
    }

    /// The application restored the snapshot whose last chunk arrived in
    /// [`Ready::snapshot_chunks`]. The log is reset to it and the leader is
    /// told.
    pub fn snapshot_installed(&mut self, meta: &SnapshotMeta) -> Result<(), SnapshotError> {
        let from = self.core.snapshot_installed(meta)?;
        self.after_config_change();
        self.core.send_after_persist(
            from,
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
        let leader = self.leader();
        match &mut self.role {
            RoleState::Leader(state) => state.transfer_leadership(&mut self.core, target),
            _ => Err(TransferError::NotLeader { leader }),
        }
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
        self.change_membership_at(change, None, expected_version)
    }

    /// [`change_membership`](Self::change_membership), also recording where
    /// the member is reached. With `address` `None` an existing member keeps
    /// its address; a removed member's address goes with it. Re-adding a
    /// member in its current role with a new address changes just the
    /// address.
    pub fn change_membership_at(
        &mut self,
        change: MembershipChange,
        address: Option<String>,
        expected_version: Option<LogIndex>,
    ) -> Result<LogIndex, ConfigChangeError> {
        let leader = self.leader();
        match &mut self.role {
            RoleState::Leader(state) => {
                state.change_membership(&mut self.core, change, address, expected_version)
            }
            _ => Err(ProposeError::NotLeader { leader }.into()),
        }
    }

    /// Collect everything the core wants done. See [`Ready`] for the order
    /// in which to handle the fields.
    pub fn ready(&mut self) -> Ready {
        if let RoleState::Leader(state) = &mut self.role {
            state.send_appends(&mut self.core);
        }
        let core = &mut self.core;
        if core.hard_state_dirty {
            core.out.hard_state = Some(core.hard_state);
            core.hard_state_dirty = false;
            #[cfg(feature = "planted-bugs")]
            if copycat_planted::active(copycat_planted::PlantedBug::ForgetVote) {
                // Persist the term but not a vote for another server.
                if let Some(hard_state) = core.out.hard_state.as_mut() {
                    if hard_state.vote != Some(core.config.id) {
                        hard_state.vote = None;
                    }
                }
            }
        }
        core.out.entries = core.log.take_unstable();
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::ApplyUncommitted) {
            core.log.commit = core.log.last_index();
        }
        core.out.committed_entries = core.log.take_committed();
        if let Some(purge) = core.pending_purge.take() {
            core.out.purge_to = Some(purge);
        }
        let soft = self.soft_state();
        if soft != self.last_soft_state {
            self.core.out.soft_state = Some(soft);
            self.last_soft_state = soft;
        }
        std::mem::take(&mut self.core.out)
    }

    /// Whether [`ready`](Self::ready) would return something.
    pub fn has_ready(&self) -> bool {
        let core = &self.core;
        !core.out.is_empty()
            || core.hard_state_dirty
            || core.log.unstable_from.is_some()
            || core.log.applied < core.log.commit
            || core.pending_purge.is_some()
            || self.soft_state() != self.last_soft_state
            || matches!(&self.role, RoleState::Leader(state) if state.has_appends_to_send(core))
    }

    /// The role, leader and term.
    pub fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role(),
            leader: self.leader(),
            term: self.core.hard_state.term,
        }
    }

    /// The configuration may have changed (appended, truncated, installed):
    /// forget a superseded reserve view and, when leading, keep the progress
    /// set in line with the members.
    fn after_config_change(&mut self) {
        self.core.after_config_change();
        if let RoleState::Leader(state) = &mut self.role {
            state.sync_progress(&self.core);
        }
    }
}

impl Core {
    fn reset_election_deadline(&mut self) {
        let timeout = self.config.election_timeout_ms;
        let jitter = self.random.next_u64() % timeout;
        self.election_deadline = self.now.plus_ms(timeout + jitter);
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

    /// Record that `message` was ignored for `reason`.
    fn ignore(&mut self, message: &Message, reason: IgnoreReason) {
        self.stats.count_ignored(reason);
        if self.ignored.len() >= MAX_IGNORED_KEPT {
            self.ignored.pop_front();
        }
        self.ignored.push_back(Ignored {
            from: message.from,
            kind: message.body.kind(),
            term: message.term,
            reason,
        });
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
}

impl MessageBody {
    /// The read round a follower's answer echoes (0 for other messages).
    fn read_round(&self) -> u64 {
        match self {
            MessageBody::AppendResponse { read_round, .. }
            | MessageBody::HeartbeatResponse { read_round } => *read_round,
            _ => 0,
        }
    }
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
