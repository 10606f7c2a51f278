//! The output batch of the core.

use bytes::Bytes;

use crate::errors::ReadError;
use crate::message::Message;
use crate::types::{Entry, HardState, LogIndex, NodeId, SnapshotMeta, Term};

/// Everything the core asks the caller to do, in one batch.
///
/// Handle the fields in this order:
///
/// 1. Persist `hard_state`, `snapshot` and `entries` (and apply
///    `purge_to`) durably. Only then
/// 2. send `messages_after_persist`, and
/// 3. apply `committed_entries` to the state machine, write
///    `snapshot_chunks`, answer `read_states` once the state machine has
///    applied their index, serve `snapshot_requests`,
/// 4. and report durability back with [`crate::RawNode::persisted`].
///
/// `messages` may be sent at any time, even before step 1: they do not
/// depend on this batch being durable (a leader may send appends before
/// writing them itself, Raft thesis §10.2.1).
#[derive(Clone, Debug, Default)]
pub struct Ready {
    /// New term and vote. Must be durable before `messages_after_persist`
    /// are sent: a vote that is forgotten in a crash could be cast twice in
    /// the same term (§5.2).
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader was installed: record it as the
    /// latest snapshot, and drop every log entry at or below its index (and
    /// every entry if the log does not hold the snapshot's last entry with
    /// the same term).
    pub snapshot: Option<SnapshotMeta>,
    /// Entries to write. If the first one's index is at or below the last
    /// index stored, first remove every stored entry from that index on (the
    /// follower's conflicting suffix, §5.3).
    pub entries: Vec<Entry>,
    /// The application took a snapshot: stored entries up to and including
    /// this index may be removed.
    pub purge_to: Option<LogIndex>,
    /// Messages that may be sent right away.
    pub messages: Vec<Message>,
    /// Messages that may be sent only after `hard_state`, `snapshot` and
    /// `entries` of this batch (and every earlier batch) are durable: votes
    /// and append acknowledgements promise durability.
    pub messages_after_persist: Vec<Message>,
    /// Committed entries to apply, in order, after this batch is durable.
    pub committed_entries: Vec<Entry>,
    /// Results of read requests (see [`crate::RawNode::read`]). A successful
    /// read may be answered once the state machine applied its index.
    pub read_states: Vec<ReadState>,
    /// Chunks of snapshot data the application should read and hand back
    /// with [`crate::RawNode::snapshot_chunk`].
    pub snapshot_requests: Vec<SnapshotRequest>,
    /// Chunks of a snapshot received from the leader, to write in order.
    /// When a chunk with `done` arrives the application must restore the
    /// snapshot and call [`crate::RawNode::snapshot_installed`] before
    /// feeding the core anything else.
    pub snapshot_chunks: Vec<SnapshotChunk>,
    /// Set when the role, the leader or the term changed.
    pub soft_state: Option<SoftState>,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.entries.is_empty()
            && self.purge_to.is_none()
            && self.messages.is_empty()
            && self.messages_after_persist.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.snapshot_requests.is_empty()
            && self.snapshot_chunks.is_empty()
            && self.soft_state.is_none()
    }
}

/// The result of a read request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's id for the request.
    pub id: u64,
    /// On success, the index the state machine must have applied before the
    /// read is served. Reads served at or after it are linearizable.
    pub result: Result<LogIndex, ReadError>,
}

/// A request for snapshot data to send to a follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// The follower.
    pub to: NodeId,
    /// Which snapshot.
    pub meta: SnapshotMeta,
    /// Byte offset to read from.
    pub offset: u64,
    /// Read at most this many bytes.
    pub max_bytes: usize,
}

/// A chunk of a snapshot being received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// Which snapshot.
    pub meta: SnapshotMeta,
    /// Byte offset of `data`. Chunks arrive in order with no gaps; offset 0
    /// starts a new snapshot (discard any partial one).
    pub offset: u64,
    /// The bytes.
    pub data: Bytes,
    /// Whether this completes the snapshot.
    pub done: bool,
}

/// What a server is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Running a pre-vote round (no term change yet).
    PreCandidate,
    /// Running an election.
    Candidate,
    /// Leads its term.
    Leader,
}

/// Volatile state worth telling the application about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// Current role.
    pub role: Role,
    /// Known leader of the current term.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: Term,
}
