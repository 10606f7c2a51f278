//! The leader's view of each follower's log.

use std::collections::VecDeque;

use crate::types::{LogIndex, SnapshotMeta, Time};

/// How the leader is currently replicating to one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    /// The leader does not know where the follower's log matches; it sends
    /// one append at a time and waits for the answer.
    Probe,
    /// The follower's log matches up to `match_index`; the leader streams
    /// appends optimistically, up to the in-flight window.
    Replicate,
    /// The follower needs entries the leader has purged; a snapshot is being
    /// streamed to it in chunks.
    Snapshot {
        /// The snapshot being sent.
        meta: SnapshotMeta,
        /// Bytes the follower acknowledged.
        acked_offset: u64,
        /// When the leader last asked the application for a chunk (for
        /// retransmission if a chunk or its answer is lost).
        requested_at: Time,
    },
}

/// One follower as seen by the leader.
///
/// Invariant: `match_index < next_index`.
/// Invariant: `inflight.len() <= max_inflight_appends`, and its elements (the
/// last index of each append in flight) never decrease.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub match_index: LogIndex,
    pub next_index: LogIndex,
    pub state: ReplicationState,
    /// In `Probe`: an append is outstanding; wait for its answer (or the next
    /// heartbeat answer) before sending another.
    pub probe_sent: bool,
    pub inflight: VecDeque<LogIndex>,
    /// Highest read round this follower acknowledged in the current term.
    pub read_round_acked: u64,
    /// Last time any answer arrived from this follower (check-quorum).
    pub last_heard: Time,
    /// Commit index last sent to this follower.
    pub commit_sent: LogIndex,
    /// Last time the match index moved or the window was empty when an
    /// append went out (to detect lost appends).
    pub last_advance: Time,
}

impl Progress {
    pub fn new(next_index: LogIndex, now: Time) -> Self {
        Self {
            match_index: LogIndex::ZERO,
            next_index,
            state: ReplicationState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            read_round_acked: 0,
            last_heard: now,
            commit_sent: LogIndex::ZERO,
            last_advance: now,
        }
    }

    pub fn become_probe(&mut self) {
        // After a snapshot the follower holds at least the snapshot index.
        if let ReplicationState::Snapshot { meta, .. } = &self.state {
            self.next_index = self.next_index.max(meta.index.next());
        }
        self.next_index = self.next_index.max(self.match_index.next());
        self.state = ReplicationState::Probe;
        self.probe_sent = false;
        self.inflight.clear();
    }

    pub fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.next_index = self.match_index.next();
        self.probe_sent = false;
        self.inflight.clear();
    }

    /// Record a successful append up to `index`. Returns whether the match
    /// index moved.
    pub fn on_success(&mut self, index: LogIndex, now: Time) -> bool {
        while self.inflight.front().is_some_and(|last| *last <= index) {
            self.inflight.pop_front();
        }
        if index > self.match_index {
            self.match_index = index;
            self.next_index = self.next_index.max(index.next());
            self.probe_sent = false;
            self.last_advance = now;
            true
        } else {
            false
        }
    }

    /// Note that an append ending at `last` was sent.
    pub fn on_sent(&mut self, last: LogIndex, entry_count: usize, now: Time) {
        match self.state {
            ReplicationState::Probe => self.probe_sent = true,
            ReplicationState::Replicate => {
                if self.inflight.is_empty() {
                    self.last_advance = now;
                }
                if entry_count > 0 {
                    self.next_index = last.next();
                }
                self.inflight.push_back(last);
            }
            ReplicationState::Snapshot { .. } => {
                unreachable!("no appends while sending a snapshot")
            }
        }
    }

    pub fn invariants(&self, max_inflight: usize) {
        assert!(
            self.match_index < self.next_index,
            "match {:?} >= next {:?}",
            self.match_index,
            self.next_index
        );
        assert!(
            self.inflight.len() <= max_inflight,
            "in-flight window overflow"
        );
        for pair in self.inflight.iter().zip(self.inflight.iter().skip(1)) {
            assert!(pair.0 <= pair.1, "in-flight appends out of order");
        }
    }
}
