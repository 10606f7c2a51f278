//! Leader election: pre-vote, votes, the role transitions, check-quorum and
//! leadership transfer.
//!
//! Implements Raft §5.2 (elections, randomized timeouts), §5.4.1 (the
//! election restriction), thesis §9.6 (pre-vote), §4.2.3 and §6.2 (leader
//! stickiness and check-quorum) and §3.10 (leadership transfer). Every role
//! change goes through `become_follower`, `campaign_pre_vote`,
//! `start_election` or `become_leader`, which build the new [`RoleState`]
//! whole, so no state of the old role survives a change.

use std::collections::BTreeMap;

use super::{Core, LeaderState, RawNode, RoleState, StepDown};
use crate::errors::ReadError;
use crate::errors::TransferError;
use crate::message::MessageBody;
use crate::progress::Progress;
use crate::ready::ReadState;
use crate::types::{EntryPayload, HardState, LogIndex, NodeId, Term};

use super::reads::ReadRounds;

impl RawNode {
    /// Leader stickiness: refuse to help a campaign while a leader is
    /// believed alive. Tied to check-quorum (as in etcd): a leader that
    /// cannot be deposed by elections must depose itself when cut off.
    pub(super) fn in_vote_lease(&self) -> bool {
        self.core.config.check_quorum
            && (self.is_leader() || self.core.now < self.core.vote_lease_until)
    }

    pub(super) fn campaign_pre_vote(&mut self) {
        let mut votes = BTreeMap::new();
        self.core.reset_election_deadline();
        votes.insert(self.core.config.id, true);
        let won = tally(&self.core, &votes) == Some(true);
        self.role = RoleState::PreCandidate { votes };
        if won {
            self.start_election(false);
            return;
        }
        let core = &mut self.core;
        let body = MessageBody::PreVote {
            last_index: core.log.last_index(),
            last_term: core.log.last_term(),
        };
        // A pre-vote changes no state, ours included: it asks about the term
        // we would campaign in.
        let term = core.hard_state.term.next();
        for voter in core.other_voters() {
            core.out.messages.push(crate::message::Message {
                from: core.config.id,
                to: voter,
                term,
                body: body.clone(),
            });
        }
    }

    pub(super) fn start_election(&mut self, transfer: bool) {
        let core = &mut self.core;
        core.stats.elections += 1;
        let mut votes = BTreeMap::new();
        core.hard_state = HardState {
            term: core.hard_state.term.next(),
            vote: Some(core.config.id),
        };
        core.hard_state_dirty = true;
        votes.insert(core.config.id, true);
        core.reset_election_deadline();
        let won = tally(core, &votes) == Some(true);
        self.role = RoleState::Candidate { votes };
        if won {
            self.become_leader();
            return;
        }
        let core = &mut self.core;
        let body = MessageBody::Vote {
            last_index: core.log.last_index(),
            last_term: core.log.last_term(),
            transfer,
        };
        for voter in core.other_voters() {
            // Our own vote must be durable before we ask for others'.
            core.send_after_persist(voter, body.clone());
        }
    }

    pub(super) fn on_pre_vote(
        &mut self,
        from: NodeId,
        term: Term,
        last_index: LogIndex,
        last_term: Term,
    ) {
        let granted = term > self.core.hard_state.term
            && !self.in_vote_lease()
            && self.core.log.is_up_to_date(last_index, last_term);
        // A granted pre-vote answers in the asked term so that the candidate
        // counts it; a refusal carries our term so a stale candidate learns.
        let reply_term = if granted {
            term
        } else {
            self.core.hard_state.term
        };
        self.core.out.messages.push(crate::message::Message {
            from: self.core.config.id,
            to: from,
            term: reply_term,
            body: MessageBody::PreVoteResponse { granted },
        });
    }

    /// Precondition (checked by `ignore_reason`): pre-campaigning, and a
    /// granted answer is for the term we would campaign in.
    pub(super) fn on_pre_vote_response(&mut self, from: NodeId, granted: bool) {
        let RoleState::PreCandidate { votes } = &mut self.role else {
            unreachable!("ignore_reason admits pre-vote answers only while pre-campaigning");
        };
        votes.insert(from, granted);
        match tally(&self.core, votes) {
            Some(true) => self.start_election(false),
            Some(false) => self.step_down(),
            None => {}
        }
    }

    pub(super) fn on_vote(&mut self, from: NodeId, last_index: LogIndex, last_term: Term) {
        let can_vote = self.core.hard_state.vote == Some(from)
            || (self.core.hard_state.vote.is_none() && self.leader().is_none());
        // §5.4.1: never vote for a candidate whose log lacks entries ours
        // has, or a committed entry could be lost.
        #[allow(unused_mut)]
        let mut up_to_date = self.core.log.is_up_to_date(last_index, last_term);
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::VoteWithoutLogCheck) {
            up_to_date = true;
        }
        let granted = can_vote && up_to_date;
        let core = &mut self.core;
        if granted {
            core.hard_state.vote = Some(from);
            core.hard_state_dirty = true;
            core.reset_election_deadline();
        }
        // The vote must be durable before the candidate hears of it.
        core.send_after_persist(from, MessageBody::VoteResponse { granted });
    }

    /// Precondition (checked by `ignore_reason`): a candidate.
    pub(super) fn on_vote_response(&mut self, from: NodeId, granted: bool) {
        let RoleState::Candidate { votes } = &mut self.role else {
            unreachable!("ignore_reason admits vote answers only while a candidate");
        };
        votes.insert(from, granted);
        match tally(&self.core, votes) {
            Some(true) => self.become_leader(),
            Some(false) => self.step_down(),
            None => {}
        }
    }

    /// Precondition (checked by `ignore_reason`): sent by our leader, and we
    /// may campaign.
    pub(super) fn on_timeout_now(&mut self, from: NodeId) {
        debug_assert_eq!(self.leader(), Some(from));
        // Skip the pre-vote: the leader asked us to take over now.
        self.start_election(true);
    }

    /// Become a follower of the current term with no known leader.
    pub(super) fn step_down(&mut self) {
        let term = self.core.hard_state.term;
        self.become_follower(term, None);
    }

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        let core = &mut self.core;
        if term > core.hard_state.term {
            core.hard_state = HardState { term, vote: None };
            core.hard_state_dirty = true;
        }
        let old = std::mem::replace(&mut self.role, RoleState::Follower { leader });
        if let RoleState::Leader(state) = old {
            self.core.fail_pending_reads(state.reads, leader);
        }
        let core = &mut self.core;
        if leader.is_some() {
            core.vote_lease_until = core.now.plus_ms(core.config.election_timeout_ms);
        }
        core.reset_election_deadline();
    }

    pub(super) fn become_leader(&mut self) {
        let core = &mut self.core;
        let now = core.now;
        let next = core.log.last_index().next();
        let mut progress = BTreeMap::new();
        for id in core.log.latest_config().1.members.keys() {
            if *id != core.config.id {
                progress.insert(*id, Progress::new(next, now));
            }
        }
        let mut state = LeaderState {
            progress,
            reads: ReadRounds::default(),
            next_heartbeat: now.plus_ms(core.config.heartbeat_interval_ms),
            next_quorum_check: now.plus_ms(core.config.election_timeout_ms),
            transfer: None,
            noop_index: next,
            uncommitted_bytes: 0,
        };
        #[allow(unused_mut)]
        let mut append_noop = true;
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::NoNoopOnElection) {
            // No no-op, and the term is taken to start at the commit index
            // we already know: reads are served at once, from a commit index
            // that may miss entries the previous leader committed.
            append_noop = false;
            state.noop_index = core.log.commit;
        }
        if append_noop {
            // §8: a no-op at the start of the term commits everything before
            // it and tells the leader where the commit index really is.
            state.append(core, vec![EntryPayload::Noop]);
        }
        state.broadcast_reserve_heartbeats(core);
        self.role = RoleState::Leader(Box::new(state));
    }
}

/// `Some(true)` once a quorum of the latest configuration granted,
/// `Some(false)` once a quorum can no longer grant, `None` while undecided.
fn tally(core: &Core, votes: &BTreeMap<NodeId, bool>) -> Option<bool> {
    let config = core.log.latest_config().1;
    let quorum = config.quorum();
    let granted = config
        .voters()
        .filter(|v| votes.get(v) == Some(&true))
        .count();
    let rejected = config
        .voters()
        .filter(|v| votes.get(v) == Some(&false))
        .count();
    #[cfg(feature = "planted-bugs")]
    let granted = if copycat_planted::active(copycat_planted::PlantedBug::DoubleVote) {
        granted + usize::from(votes.get(&core.config.id) == Some(&true))
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

impl Core {
    /// A deposed leader's waiting reads fail: it can no longer confirm them.
    fn fail_pending_reads(&mut self, reads: ReadRounds, leader: Option<NodeId>) {
        for id in reads.into_waiting_ids() {
            self.out.read_states.push(ReadState {
                id,
                result: Err(ReadError::NotLeader { leader }),
            });
        }
    }
}

impl LeaderState {
    /// Leader timers: transfer deadline, check-quorum, heartbeats, snapshot
    /// retransmission.
    pub(super) fn tick(&mut self, core: &mut Core) -> Option<StepDown> {
        let now = core.now;
        let election_timeout = core.config.election_timeout_ms;
        if let Some((_, deadline)) = self.transfer {
            if now >= deadline {
                self.transfer = None;
            }
        }
        if core.config.check_quorum && now >= self.next_quorum_check {
            // Thesis §6.2: a leader that has not heard from a quorum within
            // an election timeout may have been replaced; stop serving.
            self.next_quorum_check = now.plus_ms(election_timeout);
            let since = crate::types::Time(now.0.saturating_sub(election_timeout));
            let config = core.log.latest_config().1;
            let active = config
                .voters()
                .filter(|id| {
                    *id == core.config.id
                        || self.progress.get(id).is_some_and(|p| p.last_heard >= since)
                })
                .count();
            if active < config.quorum() {
                core.stats.check_quorum_step_downs += 1;
                return Some(StepDown);
            }
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now.plus_ms(core.config.heartbeat_interval_ms);
            self.broadcast_heartbeat(core);
        }
        self.retry_snapshot_sends(core);
        None
    }

    /// Thesis §3.10: stop accepting proposals, bring the target's log up to
    /// date, then tell it to campaign at once.
    pub(super) fn transfer_leadership(
        &mut self,
        core: &mut Core,
        target: NodeId,
    ) -> Result<(), TransferError> {
        if target == core.config.id {
            return Ok(());
        }
        if !core.log.latest_config().1.is_voter(target) {
            return Err(TransferError::NotVoter(target));
        }
        if self.transfer.is_some() {
            return Err(TransferError::InProgress);
        }
        self.transfer = Some((target, core.now.plus_ms(core.config.election_timeout_ms)));
        // The target will campaign without honouring stickiness, so this
        // leader's lease is worthless from now on in this term.
        self.reads.disable_lease();
        self.maybe_send_timeout_now(core, target);
        Ok(())
    }

    /// Send `TimeoutNow` to the transfer target once its log is complete.
    pub(super) fn maybe_send_timeout_now(&mut self, core: &mut Core, target: NodeId) {
        if self.transfer.map(|(t, _)| t) != Some(target) {
            return;
        }
        if self.progress.get(&target).map(|p| p.match_index) == Some(core.log.last_index()) {
            core.send(target, MessageBody::TimeoutNow);
        }
    }
}
