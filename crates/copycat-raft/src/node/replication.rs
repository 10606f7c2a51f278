//! Log replication and commitment: the leader's appends and heartbeats, the
//! follower's handling of them, and the commit rule.
//!
//! Implements Raft §5.3 (log replication, consistency check, fast
//! backtracking), §5.4.2 (only entries of the current term are committed by
//! counting replicas) and thesis §10.2.1 (the leader counts its own log once
//! durable, so it may send before it writes). Flow control is per follower
//! (`Progress`: probe / replicate / snapshot) with a bounded in-flight window.

use bytes::Bytes;

use super::{Core, LeaderState, RawNode, RoleState, StepDown};
use crate::errors::ProposeError;
use crate::message::{Message, MessageBody, RejectHint};
use crate::progress::ReplicationState;
use crate::ready::ReadState;
use crate::types::{Configuration, Entry, EntryPayload, LogIndex, MemberRole, NodeId, Term};

impl LeaderState {
    pub(super) fn propose(
        &mut self,
        core: &mut Core,
        commands: Vec<Bytes>,
    ) -> Result<(LogIndex, LogIndex), ProposeError> {
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        let mut bytes = 0;
        for command in &commands {
            if command.len() > core.config.max_entry_bytes {
                return Err(ProposeError::TooLarge {
                    size: command.len(),
                    limit: core.config.max_entry_bytes,
                });
            }
            bytes += command.len() + crate::types::ENTRY_OVERHEAD_BYTES;
        }
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + bytes > core.config.max_uncommitted_bytes
        {
            return Err(ProposeError::TooBusy {
                uncommitted_bytes: self.uncommitted_bytes,
                limit: core.config.max_uncommitted_bytes,
            });
        }
        let first = core.log.last_index().next();
        let payloads = commands.into_iter().map(EntryPayload::Command).collect();
        let last = self.append(core, payloads);
        Ok((first, last))
    }

    /// Append entries of the current term to the leader's log.
    pub(super) fn append(&mut self, core: &mut Core, payloads: Vec<EntryPayload>) -> LogIndex {
        let term = core.hard_state.term;
        let mut index = core.log.last_index();
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
        core.log.append(entries);
        self.uncommitted_bytes += bytes;
        if has_config {
            // Thesis §4.1: a configuration takes effect once appended.
            core.after_config_change();
            self.sync_progress(core);
        }
        index
    }

    pub(super) fn append_config(&mut self, core: &mut Core, config: Configuration) -> LogIndex {
        self.append(core, vec![EntryPayload::Config(config)])
    }

    pub(super) fn has_appends_to_send(&self, core: &Core) -> bool {
        self.progress.keys().any(|id| self.wants_append(core, *id))
    }

    /// Whether `id` should get an append now.
    fn wants_append(&self, core: &Core, id: NodeId) -> bool {
        let Some(progress) = self.progress.get(&id) else {
            return false;
        };
        let role = core.log.latest_config().1.role(id);
        if !role.is_some_and(MemberRole::replicates) {
            return false;
        }
        let limit = core.replication_limit(role);
        match progress.state {
            ReplicationState::Probe => !progress.probe_sent,
            ReplicationState::Replicate => {
                progress.inflight.len() < core.config.max_inflight_appends
                    && (progress.next_index <= limit
                        || progress.commit_sent < core.log.commit.min(limit))
            }
            ReplicationState::Snapshot { .. } => false,
        }
    }

    /// Send every follower what its window allows. Called when a batch is
    /// collected, so that many proposals share one message.
    pub(super) fn send_appends(&mut self, core: &mut Core) {
        let targets: Vec<NodeId> = self.progress.keys().copied().collect();
        for id in targets {
            self.send_appends_to(core, id);
        }
    }

    fn send_appends_to(&mut self, core: &mut Core, to: NodeId) {
        let limit = core.replication_limit(core.log.latest_config().1.role(to));
        while self.wants_append(core, to) {
            let Some(progress) = self.progress.get(&to) else {
                unreachable!("wants_append checked the progress exists");
            };
            let next = progress.next_index;
            let prev_index = next.prev();
            let Some(prev_term) = core.log.term(prev_index) else {
                self.start_snapshot(core, to);
                return;
            };
            let Some(entries) = core.log.slice(
                next,
                limit,
                core.config.max_append_bytes,
                core.config.max_append_entries,
            ) else {
                self.start_snapshot(core, to);
                return;
            };
            let commit = core.log.commit.min(limit);
            let last = LogIndex(prev_index.0 + entries.len() as u64);
            let count = entries.len();
            let now = core.now;
            let read_round = self.reads.current();
            let Some(progress) = self.progress.get_mut(&to) else {
                unreachable!("wants_append checked the progress exists");
            };
            let probing = progress.state == ReplicationState::Probe;
            progress.on_sent(last, count, now);
            progress.commit_sent = commit;
            core.send(
                to,
                MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                    read_round,
                },
            );
            if count == 0 || probing {
                return;
            }
        }
    }

    /// Handle a follower's answer. Precondition (checked by
    /// `ignore_reason`): `from` has progress, the round it echoes was
    /// started, and the answer is not stale.
    pub(super) fn on_follower_answer(
        &mut self,
        core: &mut Core,
        from: NodeId,
        body: MessageBody,
    ) -> Option<StepDown> {
        match body {
            MessageBody::AppendResponse {
                index,
                reject,
                read_round,
            } => {
                self.note_follower_answer(core, from, read_round);
                self.on_append_response(core, from, index, reject)
            }
            MessageBody::HeartbeatResponse { read_round } => {
                self.note_follower_answer(core, from, read_round);
                self.on_heartbeat_response(core, from);
                None
            }
            MessageBody::InstallSnapshotResponse { index, next_offset } => {
                self.note_follower_answer(core, from, 0);
                self.on_install_snapshot_response(core, from, index, next_offset);
                None
            }
            _ => unreachable!("only follower answers are handed to the leader"),
        }
    }

    /// Bookkeeping common to every answer from a follower: it is alive
    /// (check-quorum) and acknowledged a read round.
    pub(super) fn note_follower_answer(&mut self, core: &mut Core, from: NodeId, read_round: u64) {
        let Some(progress) = self.progress.get_mut(&from) else {
            unreachable!("ignore_reason admits answers from members only");
        };
        progress.last_heard = core.now;
        debug_assert!(read_round <= self.reads.current(), "a future round");
        if read_round > progress.read_round_acked {
            progress.read_round_acked = read_round;
            self.advance_read_rounds(core);
        }
    }

    fn on_append_response(
        &mut self,
        core: &mut Core,
        from: NodeId,
        index: LogIndex,
        reject: Option<RejectHint>,
    ) -> Option<StepDown> {
        let last_index = core.log.last_index();
        let now = core.now;
        let Some(progress) = self.progress.get_mut(&from) else {
            unreachable!("ignore_reason admits answers from members only");
        };
        match reject {
            None => {
                debug_assert!(index <= last_index, "ack beyond our log");
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
                    if let Some(step_down) = self.maybe_commit(core) {
                        return Some(step_down);
                    }
                    self.maybe_promote_learner(core, from);
                    self.maybe_send_timeout_now(core, from);
                }
            }
            Some(hint) => {
                // §5.3 with fast backtracking: skip the follower's whole
                // conflicting term at once.
                let next = core.log.find_conflict_by_term(hint).next();
                progress.become_probe();
                progress.next_index = next.max(progress.match_index.next()).min(last_index.next());
            }
        }
        None
    }

    fn on_heartbeat_response(&mut self, core: &Core, from: NodeId) {
        let now = core.now;
        let retransmit_ms = 2 * core.config.heartbeat_interval_ms;
        let Some(progress) = self.progress.get_mut(&from) else {
            unreachable!("ignore_reason admits answers from members only");
        };
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

    /// Advance the commit index to the highest entry of this term a quorum
    /// of voters holds (counting our own log only once durable).
    pub(super) fn maybe_commit(&mut self, core: &mut Core) -> Option<StepDown> {
        let config = core.log.latest_config().1;
        let mut matches: Vec<LogIndex> = config
            .voters()
            .map(|id| {
                if id == core.config.id {
                    core.log.persisted
                } else {
                    self.progress
                        .get(&id)
                        .map_or(LogIndex::ZERO, |p| p.match_index)
                }
            })
            .collect();
        if matches.is_empty() {
            return None;
        }
        matches.sort_unstable_by(|a, b| b.cmp(a));
        #[allow(unused_mut)]
        let mut position = config.quorum() - 1;
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::CommitWithoutQuorum) {
            position = position.saturating_sub(1);
        }
        let candidate = matches[position];
        // §5.4.2 (Figure 8): only entries of the current term are committed
        // by counting replicas; earlier ones commit indirectly, with the
        // first entry of this term that does.
        #[allow(unused_mut)]
        let mut of_current_term = core.log.term(candidate) == Some(core.hard_state.term);
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::CommitPreviousTerm) {
            of_current_term = true;
        }
        if candidate <= core.log.commit || !of_current_term {
            return None;
        }
        let old_commit = core.log.commit;
        core.log.commit_to(candidate);
        self.on_leader_commit(core, old_commit)
    }

    fn on_leader_commit(&mut self, core: &mut Core, old_commit: LogIndex) -> Option<StepDown> {
        let commit = core.log.commit;
        // Uncommitted byte accounting.
        let mut released = 0;
        let mut index = old_commit.next();
        while index <= commit {
            if let Some(entry) = core.log.entry(index) {
                released += entry.size_bytes();
            }
            index = index.next();
        }
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(released);
        // Reads that waited for the first commit of this term.
        if core.log.term(commit) == Some(core.hard_state.term) {
            self.release_reads_waiting_for_commit(core);
        }
        // A leader that is no longer a voter steps down once the
        // configuration that removed it is committed (thesis §4.2.2), handing
        // over to the most up-to-date voter.
        let (config_index, config) = core.log.latest_config();
        if config_index <= commit && !config.is_voter(core.config.id) {
            let successor = config.voters().max_by_key(|id| {
                self.progress
                    .get(id)
                    .map_or(LogIndex::ZERO, |p| p.match_index)
            });
            if let Some(successor) = successor {
                if self.progress.get(&successor).map(|p| p.match_index)
                    == Some(core.log.last_index())
                {
                    core.send(successor, MessageBody::TimeoutNow);
                }
            }
            return Some(StepDown);
        }
        let learners: Vec<NodeId> = config
            .members
            .iter()
            .filter(|(_, role)| **role == MemberRole::Learner)
            .map(|(id, _)| *id)
            .collect();
        for learner in learners {
            self.maybe_promote_learner(core, learner);
        }
        None
    }

    pub(super) fn broadcast_heartbeat(&mut self, core: &mut Core) {
        self.start_read_round(core);
        self.broadcast_reserve_heartbeats(core);
    }

    /// Reserves hold no log: they only learn who leads and the newest
    /// configuration, so they know whether they were promoted.
    pub(super) fn broadcast_reserve_heartbeats(&self, core: &mut Core) {
        let (config_index, config) = core.log.latest_config();
        let reserves: Vec<NodeId> = config
            .members
            .iter()
            .filter(|(id, role)| **role == MemberRole::Reserve && **id != core.config.id)
            .map(|(id, _)| *id)
            .collect();
        for id in reserves {
            let body = MessageBody::ReserveHeartbeat {
                commit: core.log.commit,
                config: core.log.latest_config().1.clone(),
                config_index,
            };
            core.send(id, body);
        }
    }
}

impl Core {
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
}

impl RawNode {
    pub(super) fn on_append(
        &mut self,
        from: NodeId,
        prev_index: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: LogIndex,
        read_round: u64,
    ) {
        self.on_leader_contact(from);
        self.core.forget_reserve_view();
        let body = match self.core.log.try_append(prev_index, prev_term, entries) {
            Ok(last_new) => {
                // §5.3: commit up to the leader's commit, but never past what
                // this message proved we share with the leader: entries after
                // `last_new` may be a stale suffix the leader has not
                // overwritten yet.
                #[allow(unused_mut)]
                let mut proven = last_new;
                #[cfg(feature = "planted-bugs")]
                if copycat_planted::active(copycat_planted::PlantedBug::FollowerCommitUncapped) {
                    proven = self.core.log.last_index();
                }
                let commit = commit.min(proven);
                self.core.log.commit_to(commit);
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
        self.core.send_after_persist(from, body);
    }

    pub(super) fn on_heartbeat(&mut self, from: NodeId, commit: LogIndex, read_round: u64) {
        self.on_leader_contact(from);
        self.core.forget_reserve_view();
        // The leader sends min(its commit, our match), so the entries up to
        // there are the leader's; still never go past what we hold.
        let commit = commit.min(self.core.log.last_index());
        self.core.log.commit_to(commit);
        self.core
            .send(from, MessageBody::HeartbeatResponse { read_round });
    }

    pub(super) fn on_reserve_heartbeat(
        &mut self,
        from: NodeId,
        commit: LogIndex,
        config: Configuration,
        config_index: LogIndex,
    ) {
        self.on_leader_contact(from);
        let core = &mut self.core;
        if config_index > core.log.latest_config().0
            && core
                .reserve_view
                .as_ref()
                .is_none_or(|(index, _)| config_index > *index)
        {
            core.reserve_view = Some((config_index, config));
        }
        // A reserve holds no log; it only needs to know where the leader is.
        let _ = commit;
        core.send(from, MessageBody::HeartbeatResponse { read_round: 0 });
    }

    /// A message from the leader of our term: follow it, and refuse votes
    /// for an election timeout (leader stickiness, thesis §4.2.3).
    pub(super) fn on_leader_contact(&mut self, from: NodeId) {
        if !matches!(self.role, RoleState::Follower { leader: Some(l) } if l == from) {
            let term = self.core.hard_state.term;
            self.become_follower(term, Some(from));
        }
        let core = &mut self.core;
        core.vote_lease_until = core.now.plus_ms(core.config.election_timeout_ms);
        core.reset_election_deadline();
    }

    /// Answer a message from an older term that deserves an answer: tell a
    /// deposed leader about the newer term so it steps down, and refuse a
    /// stale pre-vote so the candidate learns our term. `screen` ignores the
    /// other kinds.
    pub(super) fn answer_stale_term(&mut self, message: Message) {
        match message.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }
            | MessageBody::ReserveHeartbeat { .. } => {
                self.core.send(
                    message.from,
                    MessageBody::AppendResponse {
                        index: LogIndex::ZERO,
                        reject: None,
                        read_round: 0,
                    },
                );
            }
            MessageBody::PreVote { .. } => {
                self.core.send(
                    message.from,
                    MessageBody::PreVoteResponse { granted: false },
                );
            }
            _ => unreachable!("screen ignores stale messages that need no answer"),
        }
    }
}

impl LeaderState {
    /// Reads that arrived before this term's first commit now wait for a
    /// quorum round (or are answered at once by a single voter).
    fn release_reads_waiting_for_commit(&mut self, core: &mut Core) {
        let ids = self.reads.take_waiting_for_commit();
        if ids.is_empty() {
            return;
        }
        let commit = core.log.commit;
        let single = core.is_single_voter();
        for id in ids {
            if single {
                core.out.read_states.push(ReadState {
                    id,
                    result: Ok(commit),
                });
            } else {
                self.reads.wait_for_next_round(id, commit);
            }
        }
        if self.reads.idle() && self.reads.has_waiting() {
            self.start_read_round(core);
        }
    }
}
