//! Linearizable reads without writing to the log: ReadIndex rounds and
//! leader leases.
//!
//! Implements thesis §6.4 (ReadIndex: record the commit index, confirm
//! leadership with a quorum round started after the request, serve once
//! applied) and §6.4.1 (leases). A round is a number the leader attaches to
//! every append and heartbeat it sends; followers echo it. Once a quorum
//! echoed round `r`, the leader knows it was still leader at the moment
//! round `r` was sent, so every read that arrived before then can be served
//! at the commit index it recorded, and no other server can win an election
//! before that send time plus an election timeout (leader stickiness).

use std::collections::VecDeque;

use super::{Core, LeaderState, ReadMode, ReadPath};
use crate::errors::ReadError;
use crate::message::MessageBody;
use crate::ready::ReadState;
use crate::types::{LogIndex, MemberRole, Time};

/// Start times of read rounds kept while waiting for a quorum.
const MAX_UNCONFIRMED_ROUNDS: usize = 1024;

/// A leader's read round bookkeeping (ReadIndex and leases).
#[derive(Clone, Debug, Default)]
pub(super) struct ReadRounds {
    /// The latest round started.
    current: u64,
    /// The highest round a quorum acknowledged.
    confirmed: u64,
    /// Send time of rounds not confirmed yet.
    started_at: VecDeque<(u64, Time)>,
    /// Reads waiting for a round: (id, read index, round needed).
    waiting: VecDeque<(u64, LogIndex, u64)>,
    /// Reads that arrived before the leader committed an entry of its term.
    waiting_for_commit: Vec<u64>,
    /// Lease reads are allowed strictly before this time.
    lease_until: Time,
    /// Send time of the confirmed round that set `lease_until`: the lease
    /// never extends past it plus the lease length (checked by
    /// `invariants`).
    lease_round_sent: Time,
    /// Set once leadership may have been handed over in this term.
    lease_disabled: bool,
}

impl ReadRounds {
    /// The latest round started (the one appends and heartbeats carry).
    pub(super) fn current(&self) -> u64 {
        self.current
    }

    /// No round is in flight.
    pub(super) fn idle(&self) -> bool {
        self.confirmed == self.current
    }

    pub(super) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Queue read `id` at `index` for the next round to start.
    pub(super) fn wait_for_next_round(&mut self, id: u64, index: LogIndex) {
        self.waiting.push_back((id, index, self.current + 1));
    }

    pub(super) fn take_waiting_for_commit(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.waiting_for_commit)
    }

    /// Every read still waiting, for failing them when leadership is lost.
    pub(super) fn into_waiting_ids(self) -> impl Iterator<Item = u64> {
        self.waiting
            .into_iter()
            .map(|(id, _, _)| id)
            .chain(self.waiting_for_commit)
    }

    pub(super) fn disable_lease(&mut self) {
        self.lease_disabled = true;
    }

    /// See [`crate::RawNode::lease_until`].
    pub(super) fn lease_until(&self, core: &Core) -> Option<Time> {
        (core.config.check_quorum && !self.lease_disabled && self.lease_until > core.now)
            .then_some(self.lease_until)
    }

    pub(super) fn invariants(&self, core: &Core) {
        assert!(self.confirmed <= self.current, "confirmed a future round");
        assert!(
            self.lease_until == Time::default()
                || self.lease_until <= self.lease_round_sent.plus_ms(core.config.lease_ms()),
            "lease until {:?} extends past the send time {:?} of its round plus {} ms",
            self.lease_until,
            self.lease_round_sent,
            core.config.lease_ms()
        );
        assert!(
            self.lease_round_sent <= core.now,
            "lease round sent in the future"
        );
    }
}

impl LeaderState {
    pub(super) fn read(
        &mut self,
        core: &mut Core,
        id: u64,
        mode: ReadMode,
    ) -> Result<ReadPath, ReadError> {
        let now = core.now;
        let lease_allowed = core.config.check_quorum;
        // §6.4 step 1: until an entry of this term commits (the no-op), the
        // leader's commit index may be behind the real one.
        let committed_in_term = core.log.commit >= self.noop_index;
        let single_voter = core.is_single_voter();
        let commit = core.log.commit;
        let reads = &mut self.reads;
        let pending = reads.waiting.len() + reads.waiting_for_commit.len();
        if pending >= core.config.max_pending_reads {
            return Err(ReadError::TooBusy {
                limit: core.config.max_pending_reads,
            });
        }
        if !committed_in_term {
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
            core.out.read_states.push(ReadState {
                id,
                result: Ok(commit),
            });
            return Ok(if single_voter {
                ReadPath::SingleVoter
            } else {
                ReadPath::Lease
            });
        }
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::ReadIndexWithoutQuorum) {
            // Answer at the commit index without confirming leadership.
            core.out.read_states.push(ReadState {
                id,
                result: Ok(commit),
            });
            return Ok(ReadPath::QuorumRound);
        }
        reads.wait_for_next_round(id, commit);
        if reads.idle() {
            self.start_read_round(core);
        }
        Ok(ReadPath::QuorumRound)
    }

    /// Start a new read round: a heartbeat to every replicating member.
    pub(super) fn start_read_round(&mut self, core: &mut Core) {
        let now = core.now;
        let commit = core.log.commit;
        let config = core.log.latest_config().1.clone();
        let reads = &mut self.reads;
        reads.current += 1;
        let round = reads.current;
        // Bounded: without check-quorum a cut-off leader keeps starting
        // rounds. Forgetting an old start time only loses lease time.
        if reads.started_at.len() >= MAX_UNCONFIRMED_ROUNDS {
            reads.started_at.pop_front();
        }
        reads.started_at.push_back((round, now));
        let mut heartbeats = Vec::new();
        for (id, progress) in &mut self.progress {
            if config.role(*id).is_some_and(MemberRole::replicates) {
                // Never a commit index beyond what the follower is known to
                // share with us (it may hold a stale suffix).
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
            core.send(to, body);
        }
        self.advance_read_rounds(core);
    }

    /// Confirm rounds a quorum has acknowledged; release reads and extend the
    /// lease.
    pub(super) fn advance_read_rounds(&mut self, core: &mut Core) {
        let lease_ms = core.config.lease_ms();
        let self_id = core.config.id;
        let config = core.log.latest_config().1;
        let mut acked: Vec<u64> = config
            .voters()
            .map(|id| {
                if id == self_id {
                    self.reads.current
                } else {
                    self.progress.get(&id).map_or(0, |p| p.read_round_acked)
                }
            })
            .collect();
        if acked.is_empty() {
            return;
        }
        acked.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed = acked[config.quorum() - 1];
        let reads = &mut self.reads;
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
                #[allow(unused_mut)]
                let mut lease_start = started;
                #[cfg(feature = "planted-bugs")]
                if copycat_planted::active(copycat_planted::PlantedBug::LeaseFromAckTime) {
                    lease_start = core.now;
                }
                let until = lease_start.plus_ms(lease_ms);
                if until > reads.lease_until {
                    reads.lease_until = until;
                    reads.lease_round_sent = started;
                }
            }
        }
        while let Some((id, index, round)) = reads.waiting.front().copied() {
            if round > confirmed {
                break;
            }
            reads.waiting.pop_front();
            core.out.read_states.push(ReadState {
                id,
                result: Ok(index),
            });
        }
        if self.reads.has_waiting() && self.reads.idle() {
            self.start_read_round(core);
        }
    }
}
