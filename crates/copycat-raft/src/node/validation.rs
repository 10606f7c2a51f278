//! Which messages the core ignores, and why.
//!
//! Raft tolerates a network that delays, reorders, duplicates and drops
//! messages (§5.1), so many messages arrive too late to matter: from an old
//! term, for a round or a campaign already over, for a role no longer held.
//! Others no correct peer could have sent. Either way the message must not
//! change anything, and the decision is made in one place per stage: `screen`
//! before the message's term is adopted, `ignore_reason` after. Each returns
//! a named [`IgnoreReason`], counted in `Stats` and reported through
//! `RawNode::take_ignored`; the handlers that run after them rely on what
//! they established (and assert it). This is the same discipline as etcd's
//! raft, whose traces say why each message was ignored.

use std::fmt;

use super::{RawNode, RoleState};
use crate::message::{Message, MessageBody};
use crate::progress::ReplicationState;
use crate::types::{Configuration, EntryPayload, LogIndex, NodeId, PersistentState, Term};

use super::InitError;

macro_rules! ignore_reasons {
    ($($(#[$doc:meta])* $name:ident => $text:literal,)*) => {
        /// Why a message was ignored. See [`crate::RawNode::step`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum IgnoreReason {
            $($(#[$doc])* $name,)*
        }

        impl IgnoreReason {
            /// Every reason, in declaration order (`reason as usize` is its
            /// position).
            pub const ALL: &'static [IgnoreReason] = &[$(IgnoreReason::$name,)*];

            /// A short description, for traces and logs.
            pub fn describe(self) -> &'static str {
                match self {
                    $(IgnoreReason::$name => $text,)*
                }
            }
        }
    };
}

ignore_reasons! {
    // ----- No correct peer sends these (counted in `dropped_invalid`) -----
    /// Addressed to another server.
    WrongRecipient => "addressed to another server",
    /// Claims to come from this server.
    FromSelf => "claims to come from this server",
    /// Claims to come from the reserved node id 0.
    ReservedSender => "sender is the reserved node id 0",
    /// Structurally impossible: numbers past any reachable value, entries
    /// not contiguous or from future terms, an invalid configuration,
    /// oversized chunks.
    Malformed => "malformed",
    /// Acknowledges entries past the end of our log.
    AckBeyondLog => "acknowledges entries past our log",
    /// Echoes a read round we never started.
    FutureRound => "echoes a read round not started",
    // ----- Stale or unexpected (counted in `dropped_stale`) -----
    /// The application has not installed the snapshot it received yet; the
    /// core takes no message until it has.
    SnapshotInstallPending => "a received snapshot awaits installation",
    /// A vote request in a newer term while we lead or recently heard from a
    /// leader (leader stickiness, thesis §4.2.3). Not even its term is
    /// adopted.
    LeaderLeaseNotExpired => "leader lease not expired",
    /// From an older term, and needs no answer.
    StaleTerm => "stale term",
    /// A pre-vote answer while not running a pre-vote.
    NotPreCandidate => "not running a pre-vote",
    /// A granted pre-vote for a term other than the one we would campaign
    /// in (an earlier pre-vote round).
    OldPreVoteRound => "pre-vote answer from an earlier round",
    /// A vote answer while not a candidate (the election is decided).
    NotCandidate => "not a candidate",
    /// A request to campaign from a server that is not our leader.
    NotFromLeader => "not from our leader",
    /// A request to campaign, but we may not (not a voter).
    CannotCampaign => "may not campaign",
    /// A follower's answer while not leading.
    NotLeader => "not the leader",
    /// A follower's answer from a server that is not a member.
    NotMember => "from a non-member",
    /// A rejection of an append other than the one outstanding (reordered
    /// or duplicated). The follower still counts as heard from.
    StaleRejection => "rejection of an old append",
    /// A snapshot answer while not sending a snapshot to that follower. The
    /// follower still counts as heard from.
    NotSendingSnapshot => "no snapshot being sent",
    /// An answer about another snapshot than the one being sent. The
    /// follower still counts as heard from.
    OtherSnapshot => "answer for another snapshot",
}

impl IgnoreReason {
    /// Whether no correct peer could have sent the message (as opposed to a
    /// correct message that arrived late or out of place).
    pub fn is_invalid(self) -> bool {
        matches!(
            self,
            IgnoreReason::WrongRecipient
                | IgnoreReason::FromSelf
                | IgnoreReason::ReservedSender
                | IgnoreReason::Malformed
                | IgnoreReason::AckBeyondLog
                | IgnoreReason::FutureRound
        )
    }

    /// Whether the ignored message is still a sign of life from a follower:
    /// its content is stale, but it was sent in our term and echoes a round.
    pub(super) fn counts_as_contact(self) -> bool {
        matches!(
            self,
            IgnoreReason::StaleRejection
                | IgnoreReason::NotSendingSnapshot
                | IgnoreReason::OtherSnapshot
        )
    }
}

impl fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A message the core ignored. See [`crate::RawNode::take_ignored`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    /// Its sender.
    pub from: NodeId,
    /// Its kind ([`MessageBody::kind`]).
    pub kind: &'static str,
    /// The term it carried.
    pub term: Term,
    /// Why it was ignored.
    pub reason: IgnoreReason,
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ignored {} {:?} from {:?}: {}",
            self.kind, self.term, self.from, self.reason
        )
    }
}

impl RawNode {
    /// Checks that need nothing but the message, our term and our clock:
    /// run before the message's term is adopted.
    pub(super) fn screen(&self, message: &Message) -> Option<IgnoreReason> {
        let core = &self.core;
        if message.to != core.config.id {
            return Some(IgnoreReason::WrongRecipient);
        }
        if message.from == core.config.id {
            return Some(IgnoreReason::FromSelf);
        }
        if message.from == NodeId(0) {
            return Some(IgnoreReason::ReservedSender);
        }
        if !message_is_well_formed(message, core.config.snapshot_chunk_bytes) {
            return Some(IgnoreReason::Malformed);
        }
        if core.pending_snapshot_install.is_some() {
            // The application must install the received snapshot before the
            // core moves on; a correct caller never gets here.
            return Some(IgnoreReason::SnapshotInstallPending);
        }
        let term = core.hard_state.term;
        if message.term > term {
            if let MessageBody::Vote { transfer, .. } = message.body {
                // Leader stickiness (thesis §4.2.3): ignore the request
                // entirely, without even adopting its term, unless the leader
                // itself asked for the election.
                if !transfer && self.in_vote_lease() {
                    return Some(IgnoreReason::LeaderLeaseNotExpired);
                }
            }
        } else if message.term < term {
            let answered = matches!(
                message.body,
                MessageBody::Append { .. }
                    | MessageBody::Heartbeat { .. }
                    | MessageBody::InstallSnapshot { .. }
                    | MessageBody::ReserveHeartbeat { .. }
                    | MessageBody::PreVote { .. }
            );
            if !answered {
                return Some(IgnoreReason::StaleTerm);
            }
        }
        None
    }

    /// Checks against the role, after a newer term was adopted: whether the
    /// message still means something to us.
    pub(super) fn ignore_reason(&self, message: &Message) -> Option<IgnoreReason> {
        let core = &self.core;
        let from = message.from;
        match &message.body {
            MessageBody::PreVoteResponse { granted } => {
                if !matches!(self.role, RoleState::PreCandidate { .. }) {
                    Some(IgnoreReason::NotPreCandidate)
                } else if *granted && message.term != core.hard_state.term.next() {
                    Some(IgnoreReason::OldPreVoteRound)
                } else {
                    None
                }
            }
            MessageBody::VoteResponse { .. } => (!matches!(self.role, RoleState::Candidate { .. }))
                .then_some(IgnoreReason::NotCandidate),
            MessageBody::TimeoutNow => {
                if self.leader() != Some(from) {
                    Some(IgnoreReason::NotFromLeader)
                } else if !core.can_campaign() {
                    Some(IgnoreReason::CannotCampaign)
                } else {
                    None
                }
            }
            MessageBody::AppendResponse { .. }
            | MessageBody::HeartbeatResponse { .. }
            | MessageBody::InstallSnapshotResponse { .. } => {
                let RoleState::Leader(state) = &self.role else {
                    return Some(IgnoreReason::NotLeader);
                };
                let Some(progress) = state.progress.get(&from) else {
                    return Some(IgnoreReason::NotMember);
                };
                if message.body.read_round() > state.reads.current() {
                    return Some(IgnoreReason::FutureRound);
                }
                match &message.body {
                    MessageBody::AppendResponse {
                        index,
                        reject: None,
                        ..
                    } => (*index > core.log.last_index()).then_some(IgnoreReason::AckBeyondLog),
                    MessageBody::AppendResponse {
                        index,
                        reject: Some(_),
                        ..
                    } => {
                        // Only the answer to the append outstanding moves
                        // the follower back; one that was reordered or
                        // duplicated would undo progress made since.
                        let stale = *index <= progress.match_index
                            || matches!(progress.state, ReplicationState::Snapshot { .. })
                            || (progress.state == ReplicationState::Probe
                                && index.next() != progress.next_index);
                        stale.then_some(IgnoreReason::StaleRejection)
                    }
                    MessageBody::InstallSnapshotResponse { index, .. } => match &progress.state {
                        ReplicationState::Snapshot { meta, .. } => {
                            (meta.index != *index).then_some(IgnoreReason::OtherSnapshot)
                        }
                        _ => Some(IgnoreReason::NotSendingSnapshot),
                    },
                    _ => None,
                }
            }
            MessageBody::PreVote { .. }
            | MessageBody::Vote { .. }
            | MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::ReserveHeartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => None,
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
    config.is_well_formed() && config.voter_count() > 0
}

pub(super) fn validate_persistent_state(state: &PersistentState) -> Result<(), InitError> {
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
