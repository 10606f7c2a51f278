//! Expected failures, as typed errors. Broken invariants panic instead.

use thiserror::Error;

use crate::types::{LogIndex, NodeId, Term};

/// A configuration that [`crate::Config::validate`] rejected.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("invalid raft configuration: {0}")]
pub struct ConfigError(pub String);

/// Why a proposal was not appended.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ProposeError {
    /// This server is not the leader. `leader` is the last leader it knows of
    /// in its current term, if any: retry there.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// Where to retry.
        leader: Option<NodeId>,
    },
    /// Leadership is being handed to another server; retry shortly.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// Too many uncommitted bytes are queued; retry after some commit.
    #[error("too many uncommitted bytes ({uncommitted_bytes} of at most {limit})")]
    TooBusy {
        /// Bytes currently proposed and not committed.
        uncommitted_bytes: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The entry is larger than `max_entry_bytes`.
    #[error("entry of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the rejected payload.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
}

/// Why a membership change was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConfigChangeError {
    /// See [`ProposeError`]; membership changes go through the leader too.
    #[error(transparent)]
    Propose(#[from] ProposeError),
    /// Another change is appended but not committed yet (one at a time,
    /// thesis §4.1), or the leader has not committed its first entry.
    #[error("another configuration change is in progress")]
    ChangeInProgress,
    /// The caller's view of the configuration is stale.
    #[error("configuration changed: expected version {expected}, current is {current}")]
    StaleConfiguration {
        /// The version the caller based the change on.
        expected: LogIndex,
        /// The version in effect.
        current: LogIndex,
    },
    /// The change makes no sense for the current configuration, e.g. removing
    /// a server that is not a member or removing the last voter.
    #[error("invalid configuration change: {0}")]
    Invalid(String),
}

/// Why a read request was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ReadError {
    /// Only the leader confirms reads.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// Where to retry.
        leader: Option<NodeId>,
    },
    /// Too many reads are waiting already.
    #[error("too many pending reads (limit {limit})")]
    TooBusy {
        /// The configured limit.
        limit: usize,
    },
}

/// Why a leadership transfer was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TransferError {
    /// Only the leader can hand over leadership.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// Where to retry.
        leader: Option<NodeId>,
    },
    /// The target is not a voter of the current configuration.
    #[error("{0:?} is not a voter")]
    NotVoter(NodeId),
    /// A transfer is already running.
    #[error("leadership transfer in progress")]
    InProgress,
}

/// Why a snapshot report from the application was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SnapshotError {
    /// The snapshot index is beyond what has been applied.
    #[error("snapshot index {index} is beyond the applied index {applied}")]
    NotApplied {
        /// The index given.
        index: LogIndex,
        /// Entries handed out for applying so far.
        applied: LogIndex,
    },
    /// A newer snapshot is already in place.
    #[error("snapshot index {index} is not newer than the current snapshot {current}")]
    Stale {
        /// The index given.
        index: LogIndex,
        /// The snapshot already taken.
        current: LogIndex,
    },
    /// The installed snapshot does not match the one being received.
    #[error("no snapshot at index {index} term {term} is being received")]
    Unexpected {
        /// Index of the reported snapshot.
        index: LogIndex,
        /// Its term.
        term: Term,
    },
}
