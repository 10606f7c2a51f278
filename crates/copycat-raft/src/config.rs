//! Tunables of the core, validated in one place.

use crate::errors::ConfigError;
use crate::types::NodeId;

/// Configuration of one [`crate::RawNode`].
///
/// Every limit the core enforces lives here; [`Config::validate`] rejects
/// settings that contradict each other. Times are milliseconds on the
/// caller's clock (see [`crate::Time`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This server's id. Must not be zero.
    pub id: NodeId,
    /// Base election timeout `T`. A follower that hears nothing from a leader
    /// for a random time in `[T, 2T)` starts an election (§5.2). It is also
    /// the stickiness window (no votes granted while a leader was heard from
    /// within `T`) and the check-quorum period.
    pub election_timeout_ms: u64,
    /// Interval between heartbeats sent by the leader. Must be well below
    /// `election_timeout_ms` (the paper suggests an order of magnitude).
    pub heartbeat_interval_ms: u64,
    /// Run a pre-vote round before incrementing the term (thesis §9.6), so a
    /// partitioned server that comes back cannot disrupt a working leader.
    /// With both `pre_vote` and `check_quorum` off (plain Raft), a server
    /// that lags and keeps timing out can disrupt elections indefinitely.
    pub pre_vote: bool,
    /// Leader steps down if it has not heard from a quorum within an election
    /// timeout (thesis §6.2), and servers refuse votes while they have heard
    /// from a leader within an election timeout (leader stickiness, thesis
    /// §4.2.3). Required for lease reads.
    pub check_quorum: bool,
    /// Largest number of bytes of entries in one append message.
    pub max_append_bytes: usize,
    /// Largest number of entries in one append message.
    pub max_append_entries: usize,
    /// Append messages in flight per follower before the leader waits for
    /// acknowledgements.
    pub max_inflight_appends: usize,
    /// Bytes of proposed but uncommitted entries the leader accepts before it
    /// refuses new proposals with [`crate::ProposeError::TooBusy`].
    pub max_uncommitted_bytes: usize,
    /// Largest single command payload accepted by `propose`.
    pub max_entry_bytes: usize,
    /// Largest chunk of snapshot data per message.
    pub snapshot_chunk_bytes: usize,
    /// A learner is promoted to voter automatically once its log is within
    /// this many entries of the leader's.
    pub promote_lag_entries: u64,
    /// Keep this many entries before the snapshot index in memory after a
    /// snapshot, so followers that are only slightly behind get entries
    /// instead of a whole snapshot.
    pub snapshot_trailing_entries: u64,
    /// Upper bound on how much faster the leader's clock may run than any
    /// follower's, over one election timeout. Lease reads are served only
    /// within `election_timeout_ms - lease_clock_drift_ms` of the start of a
    /// quorum-acknowledged heartbeat round.
    pub lease_clock_drift_ms: u64,
    /// Most read requests waiting for confirmation at once.
    pub max_pending_reads: usize,
}

impl Config {
    /// Defaults tuned like the original Copycat (election 750 ms, heartbeat
    /// 250 ms would be its values; we use a faster heartbeat so that a single
    /// lost heartbeat does not threaten the leader).
    pub fn new(id: NodeId) -> Self {
        Self {
            id,
            election_timeout_ms: 750,
            heartbeat_interval_ms: 150,
            pre_vote: true,
            check_quorum: true,
            max_append_bytes: 1024 * 1024,
            max_append_entries: 4096,
            max_inflight_appends: 16,
            max_uncommitted_bytes: 64 * 1024 * 1024,
            max_entry_bytes: 8 * 1024 * 1024,
            snapshot_chunk_bytes: 1024 * 1024,
            promote_lag_entries: 128,
            snapshot_trailing_entries: 1024,
            lease_clock_drift_ms: 150,
            max_pending_reads: 65536,
        }
    }

    /// Check that the settings are usable together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |reason: &str| Err(ConfigError(reason.to_string()));
        if self.id == NodeId(0) {
            return fail("id must not be 0 (reserved)");
        }
        if self.election_timeout_ms == 0 {
            return fail("election_timeout_ms must be positive");
        }
        if self.heartbeat_interval_ms == 0 {
            return fail("heartbeat_interval_ms must be positive");
        }
        if self.heartbeat_interval_ms * 2 > self.election_timeout_ms {
            return Err(ConfigError(format!(
                "heartbeat_interval_ms ({}) must be at most half of election_timeout_ms ({})",
                self.heartbeat_interval_ms, self.election_timeout_ms
            )));
        }
        if self.max_append_bytes == 0 || self.max_append_entries == 0 {
            return fail("max_append_bytes and max_append_entries must be positive");
        }
        if self.max_inflight_appends == 0 {
            return fail("max_inflight_appends must be positive");
        }
        if self.max_entry_bytes == 0 || self.max_entry_bytes > self.max_uncommitted_bytes {
            return fail("max_entry_bytes must be positive and at most max_uncommitted_bytes");
        }
        if self.snapshot_chunk_bytes == 0 {
            return fail("snapshot_chunk_bytes must be positive");
        }
        if self.lease_clock_drift_ms >= self.election_timeout_ms {
            return Err(ConfigError(format!(
                "lease_clock_drift_ms ({}) must be below election_timeout_ms ({})",
                self.lease_clock_drift_ms, self.election_timeout_ms
            )));
        }
        if self.max_pending_reads == 0 {
            return fail("max_pending_reads must be positive");
        }
        Ok(())
    }

    /// How long a lease lasts from the start of an acknowledged round.
    pub(crate) fn lease_ms(&self) -> u64 {
        self.election_timeout_ms - self.lease_clock_drift_ms
    }
}
