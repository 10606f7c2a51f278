//! Per-seed randomized parameters of a simulation run. Times are
//! milliseconds of simulated time throughout.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::faults::{FaultKind, FaultPlan};

/// Everything a run depends on besides its seed's event stream. Drawn from
/// the seed, printed at the start of a run, so a failure report says what
/// kind of cluster failed.
#[derive(Clone, Debug, PartialEq)]
pub struct SimParams {
    /// The seed everything derives from.
    pub seed: u64,
    /// Number of servers, 1 to 7; all start as voters.
    pub nodes: u64,
    /// Number of clients issuing operations.
    pub clients: u64,
    /// Raft election timeout (ms of each node's local clock).
    pub election_timeout_ms: u64,
    /// Raft heartbeat interval.
    pub heartbeat_interval_ms: u64,
    /// Largest number of entries per append.
    pub max_append_entries: usize,
    /// In-flight appends per follower.
    pub max_inflight_appends: usize,
    /// Take a snapshot every this many applied entries.
    pub snapshot_every: u64,
    /// Entries kept before a snapshot.
    pub snapshot_trailing: u64,
    /// Snapshot chunk size, small so transfers take many messages.
    pub snapshot_chunk_bytes: usize,
    /// Log segment size, small so segments roll and get purged.
    pub segment_bytes: u64,
    /// Log write buffer, small so unsynced appends reach the disk.
    pub write_buffer_bytes: usize,
    /// One-way network delay range (ms).
    pub delay_min_ms: u64,
    /// Upper end of the delay range.
    pub delay_max_ms: u64,
    /// Probability a message is lost (safety phase only).
    pub loss: f64,
    /// Probability a message is delivered twice (safety phase only).
    pub duplicate: f64,
    /// Probability that power fails right after a batch of log writes,
    /// before their sync (torn writes, possibly garbage in the tail).
    pub power_loss: f64,
    /// Time an fsync takes (ms).
    pub disk_latency_ms: u64,
    /// Probability that a log sync runs "on another thread" (begun at once,
    /// finished after the disk latency, batches written meanwhile waiting
    /// for the next), as the server runs it; otherwise it runs in place
    /// after the latency and covers every batch written until then.
    pub sync_elsewhere: f64,
    /// Whether purged log segments and old snapshots are removed "on
    /// another thread" (at the node's next sync; a crash before leaves
    /// them), as the server removes them, or in place.
    pub defer_removals: bool,
    /// A snapshot by entry count also waits until the payloads applied
    /// since the last one reach this percentage of its size (0: by count
    /// alone).
    pub snapshot_log_percent: u64,
    /// Whether the log's writes wait in a queue for the next sync to run
    /// them (as the server's log sync thread does), or are done in place;
    /// with nothing else to sync, a job that only writes runs them.
    pub defer_writes: bool,
    /// Mean time between injected faults (ms).
    pub fault_interval_ms: u64,
    /// Which faults this seed injects, how often and for how long.
    pub faults: FaultPlan,
    /// Keys the clients operate on.
    pub keys: u8,
    /// Most operations one client has in flight at once (its session
    /// pipelines them).
    pub pipeline: usize,
    /// A client gives up waiting for an operation after this long (ms) and
    /// records its outcome as unknown.
    pub client_timeout_ms: u64,
    /// How often a node waits a millisecond for more inputs before writing
    /// (else it writes once the inputs of the current millisecond are in).
    pub input_batching: f64,
    /// Fraction of operations that are reads.
    pub read_fraction: f64,
    /// Fraction of reads that are sequential (served by any server).
    pub sequential_fraction: f64,
    /// Fraction of writes that are compare-and-sets.
    pub cas_fraction: f64,
    /// Largest deviation of a node's clock rate from real time, as a
    /// fraction; kept within what the lease's drift bound covers.
    pub clock_rate_spread: f64,
    /// Lease drift bound configured in Raft (ms).
    pub lease_clock_drift_ms: u64,
    /// Raft pre-vote on or off.
    pub pre_vote: bool,
    /// Raft check-quorum (and leader stickiness) on or off. Lease reads fall
    /// back to ReadIndex without it.
    pub check_quorum: bool,
    /// Whether clients use lease reads (otherwise ReadIndex).
    pub lease_reads: bool,
    /// Length of the safety phase (ms of simulated time).
    pub safety_ms: u64,
    /// Bound for the liveness phase (ms).
    pub liveness_ms: u64,
    /// Fraction of client operations that go to the replicated primitives
    /// (locks, a counter, a queue) instead of the key-value store: zero
    /// from the seed, set by [`SimParams::with_primitives`].
    pub primitives: f64,
    /// The leader's keep-alive batching window (zero: a batch per tick).
    pub keep_alive_batch_ms: u64,
    /// Sessions per client connection: clients `c` with the same
    /// `c / sessions_per_connection` share one connection to each server,
    /// told apart by their request-id prefixes as in the async client.
    pub sessions_per_connection: usize,
}

impl SimParams {
    /// The connection client `client` uses.
    pub fn connection_of(&self, client: usize) -> usize {
        client / self.sessions_per_connection
    }

    /// The request-id prefix of client `client` on its connection.
    pub fn prefix_of(&self, client: usize) -> u32 {
        (client % self.sessions_per_connection) as u32
    }

    /// The client at `prefix` on `connection`, if there is one.
    pub fn client_at(&self, connection: usize, prefix: u32) -> Option<usize> {
        let client = connection
            .checked_mul(self.sessions_per_connection)?
            .checked_add(prefix as usize)?;
        (prefix < self.sessions_per_connection as u32 && (client as u64) < self.clients)
            .then_some(client)
    }

    /// Draw parameters from `seed`.
    pub fn from_seed(seed: u64) -> Self {
        let mut params = Self::draw(seed);
        // At most every client on one connection.
        params.sessions_per_connection = params
            .sessions_per_connection
            .clamp(1, params.clients.max(1) as usize);
        if !params.pre_vote && !params.check_quorum {
            params.pre_vote = true;
        }
        params
    }

    /// The same seed with half the client operations on the replicated
    /// primitives (the primitive workload).
    pub fn with_primitives(mut self) -> Self {
        self.primitives = 0.5;
        self
    }

    /// The same seed with the fault kind `kind` turned off.
    pub fn without(mut self, kind: FaultKind) -> Self {
        self.faults.disable(kind);
        self
    }

    fn draw(seed: u64) -> Self {
        // A separate stream from the run's, so that adding a parameter does
        // not change every run's events more than necessary.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x005E_ED0F_9A4A_3E7E);
        let nodes = match rng.gen_range(0..10) {
            0 => 1,
            1..=5 => 3,
            6..=8 => 5,
            _ => rng.gen_range(2..=7),
        };
        let election_timeout_ms = rng.gen_range(100..=300);
        let heartbeat_interval_ms =
            rng.gen_range(election_timeout_ms / 6..=election_timeout_ms / 3);
        let lease_clock_drift_ms = election_timeout_ms / 5;
        // The lease is safe when the ratio of two clock rates stays below
        // T / (T - drift); keep the spread a bit inside that.
        let bound =
            election_timeout_ms as f64 / (election_timeout_ms - lease_clock_drift_ms) as f64;
        let max_spread = (bound - 1.0) / (bound + 1.0) * 0.9;
        let delay_max_ms = rng.gen_range(1..=heartbeat_interval_ms.max(2));
        let churn = nodes > 1 && rng.gen_bool(0.5);
        // Now and then tiny appends (a follower's log is repaired a few
        // entries at a time), under a load they can carry.
        let small_batches = rng.gen_bool(0.2);
        let max_append_entries = if small_batches {
            rng.gen_range(1..=3)
        } else {
            rng.gen_range(4..=64)
        };
        let max_inflight_appends = if small_batches {
            rng.gen_range(4..=8)
        } else {
            rng.gen_range(2..=8)
        };
        let clients = if small_batches {
            rng.gen_range(3..=5)
        } else {
            rng.gen_range(3..=10)
        };
        let pipeline: usize = if small_batches {
            rng.gen_range(1..=2)
        } else {
            // At most about 40 operations in flight in all.
            rng.gen_range(2..=8).min((40 / clients as usize).max(2))
        };
        let faults = FaultPlan::draw(&mut rng, election_timeout_ms, nodes, churn);
        Self {
            seed,
            nodes,
            clients,
            election_timeout_ms,
            heartbeat_interval_ms,
            max_append_entries,
            max_inflight_appends,
            snapshot_every: rng.gen_range(10..=200),
            snapshot_trailing: rng.gen_range(0..=20),
            snapshot_chunk_bytes: rng.gen_range(256..=4096),
            segment_bytes: rng.gen_range(512..=8192),
            write_buffer_bytes: rng.gen_range(32..=512),
            delay_min_ms: rng.gen_range(0..=delay_max_ms / 2),
            delay_max_ms,
            loss: rng.gen_range(0.0..0.1),
            duplicate: rng.gen_range(0.0..0.05),
            // Fast local disks and slow ones (fsync of 10-20 ms).
            disk_latency_ms: if rng.gen_bool(0.7) {
                rng.gen_range(0..=5)
            } else {
                rng.gen_range(6..=20)
            },
            power_loss: rng.gen_range(0.0..0.03),
            fault_interval_ms: rng.gen_range(200..=1500),
            faults,
            keys: rng.gen_range(4..=12),
            pipeline,
            // Long enough for a command's round trips at the slowest delay.
            client_timeout_ms: rng.gen_range(3..=10) * election_timeout_ms + 20 * delay_max_ms,
            input_batching: rng.gen_range(0.0..1.0),
            read_fraction: rng.gen_range(0.2..0.6),
            sequential_fraction: rng.gen_range(0.0..0.4),
            cas_fraction: rng.gen_range(0.1..0.5),
            clock_rate_spread: rng.gen_range(0.0..=max_spread),
            lease_clock_drift_ms,
            // Never both off: plain Raft without pre-vote and without
            // check-quorum lets a lagging server disrupt every election
            // forever (it is allowed, but not live, so not simulated).
            pre_vote: rng.gen_bool(0.8),
            // Off in half the runs: an isolated leader then keeps leading
            // (and keeps clients that reach it) while the majority moves
            // on, the classic setting for stale reads.
            check_quorum: rng.gen_bool(0.5),
            lease_reads: rng.gen_bool(0.5),
            safety_ms: rng.gen_range(4_000..=10_000),
            // Room for an election after the heal plus a whole session timeout
            // (20 election timeouts): crashed clients' sessions must expire.
            liveness_ms: 50 * election_timeout_ms,
            primitives: 0.0,
            // Drawn last: the other parameters stay as they were per seed.
            keep_alive_batch_ms: [0, 10, 50, 200][rng.gen_range(0..4)],
            sessions_per_connection: [1, 1, 2, 3, usize::MAX][rng.gen_range(0..5)],
            sync_elsewhere: [0.0, 0.5, 1.0, 1.0][rng.gen_range(0..4)],
            defer_removals: rng.gen_bool(0.7),
            snapshot_log_percent: [0, 0, 50, 200][rng.gen_range(0..4)],
            defer_writes: rng.gen_bool(0.7),
        }
    }
}

impl std::fmt::Display for SimParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed={} nodes={} clients={} election={}ms heartbeat={}ms batch={} inflight={} \
             snapshot_every={} trailing={} chunk={}B segment={}B write_buffer={}B delay={}..{}ms loss={:.3} dup={:.3} \
             disk={}ms power_loss={:.4} faults_every~{}ms clock_spread={:.4} pre_vote={} check_quorum={} lease_reads={} \
             keys={} pipeline={} client_timeout={}ms reads={:.2} sequential={:.2} cas={:.2} safety={}ms primitives={:.2} keep_alive_batch={}ms sessions_per_connection={} sync_elsewhere={:.1} defer_removals={} snapshot_log_percent={} defer_writes={}\n  faults: {}",
            self.seed,
            self.nodes,
            self.clients,
            self.election_timeout_ms,
            self.heartbeat_interval_ms,
            self.max_append_entries,
            self.max_inflight_appends,
            self.snapshot_every,
            self.snapshot_trailing,
            self.snapshot_chunk_bytes,
            self.segment_bytes,
            self.write_buffer_bytes,
            self.delay_min_ms,
            self.delay_max_ms,
            self.loss,
            self.duplicate,
            self.disk_latency_ms,
            self.power_loss,
            self.fault_interval_ms,
            self.clock_rate_spread,
            self.pre_vote,
            self.check_quorum,
            self.lease_reads,
            self.keys,
            self.pipeline,
            self.client_timeout_ms,
            self.read_fraction,
            self.sequential_fraction,
            self.cas_fraction,
            self.safety_ms,
            self.primitives,
            self.keep_alive_batch_ms,
            self.sessions_per_connection,
            self.sync_elsewhere,
            self.defer_removals,
            self.snapshot_log_percent,
            self.defer_writes,
            self.faults,
        )
    }
}
