//! Messages exchanged between Raft servers.
//!
//! Every message carries the sender's term. The core validates each message
//! before using it (see `RawNode::step`); a message a correct peer could not
//! have sent is dropped and counted, never trusted.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::types::{Configuration, Entry, LogIndex, NodeId, SnapshotMeta, Term};

/// A message from one server to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// Sender's term (for a pre-vote request: the term it would campaign in).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Pre-vote request (thesis §9.6): "would you vote for me in `term`?".
    /// Changes no state on the receiver.
    PreVote {
        /// Index of the candidate's last entry.
        last_index: LogIndex,
        /// Term of the candidate's last entry.
        last_term: Term,
    },
    /// Answer to [`MessageBody::PreVote`].
    PreVoteResponse {
        /// Whether the receiver would vote.
        granted: bool,
    },
    /// Vote request (§5.2).
    Vote {
        /// Index of the candidate's last entry.
        last_index: LogIndex,
        /// Term of the candidate's last entry.
        last_term: Term,
        /// Set when the election follows a leadership transfer: receivers then
        /// vote even if they heard from the leader recently (thesis §3.10).
        transfer: bool,
    },
    /// Answer to [`MessageBody::Vote`].
    VoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// Append entries (§5.3), also used to probe a follower's log.
    Append {
        /// Index of the entry preceding `entries`.
        prev_index: LogIndex,
        /// Term of that entry.
        prev_term: Term,
        /// Entries to store, contiguous from `prev_index + 1`.
        entries: Vec<Entry>,
        /// Leader's commit index.
        commit: LogIndex,
        /// Leader's current read round (echoed back; see `ReadIndex`).
        read_round: u64,
    },
    /// Answer to [`MessageBody::Append`].
    AppendResponse {
        /// On success, the index up to which the follower's log now matches
        /// the leader's. On rejection, the `prev_index` that did not match.
        index: LogIndex,
        /// Set when the follower rejected the append because its log does
        /// not contain the previous entry.
        reject: Option<RejectHint>,
        /// The read round of the append being answered.
        read_round: u64,
    },
    /// Leader heartbeat: asserts leadership, carries a commit index the
    /// follower can safely use, and starts a read round.
    Heartbeat {
        /// `min(leader commit, follower's known match index)`, so the follower
        /// never commits an entry it might not share with the leader.
        commit: LogIndex,
        /// Leader's current read round.
        read_round: u64,
    },
    /// Answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse {
        /// The read round of the heartbeat being answered.
        read_round: u64,
    },
    /// Heartbeat to a reserve member: it holds no log, only learns who leads,
    /// the commit index and the configuration.
    ReserveHeartbeat {
        /// Leader's commit index.
        commit: LogIndex,
        /// The leader's current configuration.
        config: Configuration,
        /// Version of that configuration (index of its entry).
        config_index: LogIndex,
    },
    /// One chunk of a snapshot (thesis §5.3, sent in chunks).
    InstallSnapshot {
        /// Which snapshot this is.
        meta: SnapshotMeta,
        /// Byte offset of `data` within the snapshot.
        offset: u64,
        /// The chunk.
        data: Bytes,
        /// Whether this is the last chunk.
        done: bool,
    },
    /// Answer to [`MessageBody::InstallSnapshot`] for chunks before the last.
    /// The last chunk is answered with an `AppendResponse` once installed.
    InstallSnapshotResponse {
        /// Index of the snapshot being received.
        index: LogIndex,
        /// The offset the follower expects next.
        next_offset: u64,
    },
    /// Leadership transfer: the receiver starts an election at once
    /// (thesis §3.10).
    TimeoutNow,
}

/// Where a follower's log diverged, so the leader can skip back a whole term
/// at a time instead of one entry per round trip (§5.3, "optimization").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectHint {
    /// The largest index at or below the rejected `prev_index` where the
    /// follower has an entry with a term at most `prev_term`, or its last
    /// index if that is smaller.
    pub index: LogIndex,
    /// The follower's term at `index`.
    pub term: Term,
}

impl MessageBody {
    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageBody::PreVote { .. } => "PreVote",
            MessageBody::PreVoteResponse { .. } => "PreVoteResponse",
            MessageBody::Vote { .. } => "Vote",
            MessageBody::VoteResponse { .. } => "VoteResponse",
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResponse { .. } => "AppendResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::ReserveHeartbeat { .. } => "ReserveHeartbeat",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::InstallSnapshotResponse { .. } => "InstallSnapshotResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
        }
    }
}
