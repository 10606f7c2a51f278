//! The server's metrics, in the Prometheus text format
//! (`prometheus-client`), and what `/health` and `/ready` decide from.
//!
//! The owner thread updates most of them as it works (through
//! [`Observer`](crate::observe::Observer) and [`SyncMetrics`]); the gauges
//! that mirror the [`Status`] are set when the metrics are scraped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use copycat_raft::Role;
use copycat_replica::shell::ShellObserver;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::status::Status;

/// A label naming a kind of request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub(crate) kind: &'static str,
}

/// A label naming a Raft role.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RoleLabel {
    pub(crate) role: &'static str,
}

/// A label naming why a message was dropped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: String,
}

/// A label naming a queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueueLabel {
    pub(crate) queue: &'static str,
}

/// A label naming a peer server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerLabel {
    pub(crate) peer: u64,
}

/// A label naming where a snapshot came from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SourceLabel {
    pub(crate) source: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs to about 26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// Every metric of one server.
pub(crate) struct Metrics {
    registry: Registry,
    started: Instant,
    pub(crate) role: Family<RoleLabel, Gauge>,
    pub(crate) term: Gauge,
    pub(crate) leader: Gauge,
    pub(crate) commit: Gauge,
    pub(crate) applied: Gauge,
    pub(crate) snapshot_index: Gauge,
    pub(crate) entries_appended: Counter,
    pub(crate) bytes_appended: Counter,
    pub(crate) fsync_seconds: Histogram,
    pub(crate) fsync_batch_entries: Histogram,
    pub(crate) fsync_failures: Counter,
    pub(crate) request_seconds: HistogramFamily<KindLabel>,
    pub(crate) queue_depth: Family<QueueLabel, Gauge>,
    pub(crate) peer_queue_depth: Family<PeerLabel, Gauge>,
    pub(crate) sessions: Gauge,
    pub(crate) client_connections: Gauge,
    pub(crate) snapshots: Family<SourceLabel, Counter>,
    pub(crate) snapshot_bytes: Gauge,
    pub(crate) snapshot_seconds: Histogram,
    pub(crate) dropped: Family<ReasonLabel, Counter>,
    pub(crate) elections: Counter,
    pub(crate) check_quorum_step_downs: Counter,
    pub(crate) leader_changes: Counter,
    pub(crate) loop_seconds: Histogram,
    /// Milliseconds from `started` to the end of the owner's latest loop
    /// iteration.
    last_loop_ms: AtomicU64,
    /// A sync or another storage operation failed: the server stopped.
    storage_failed: AtomicBool,
    /// 1 while the disk is full (the server refuses clients and retries).
    pub(crate) disk_full: Gauge,
}

impl Metrics {
    pub(crate) fn new(id: u64) -> Arc<Self> {
        let mut registry = Registry::with_prefix_and_labels(
            "copycat",
            [(
                std::borrow::Cow::Borrowed("server"),
                std::borrow::Cow::Owned(id.to_string()),
            )]
            .into_iter(),
        );
        let metrics = Self {
            registry: Registry::default(),
            started: Instant::now(),
            role: Family::default(),
            term: Gauge::default(),
            leader: Gauge::default(),
            commit: Gauge::default(),
            applied: Gauge::default(),
            snapshot_index: Gauge::default(),
            entries_appended: Counter::default(),
            bytes_appended: Counter::default(),
            fsync_seconds: latency_histogram(),
            fsync_batch_entries: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            fsync_failures: Counter::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            queue_depth: Family::default(),
            peer_queue_depth: Family::default(),
            sessions: Gauge::default(),
            client_connections: Gauge::default(),
            snapshots: Family::default(),
            snapshot_bytes: Gauge::default(),
            snapshot_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            dropped: Family::default(),
            elections: Counter::default(),
            check_quorum_step_downs: Counter::default(),
            leader_changes: Counter::default(),
            loop_seconds: latency_histogram(),
            last_loop_ms: AtomicU64::new(0),
            storage_failed: AtomicBool::new(false),
            disk_full: Gauge::default(),
        };
        let r = &mut registry;
        r.register(
            "role",
            "1 for the Raft role this server has (follower, pre_candidate, candidate, leader)",
            metrics.role.clone(),
        );
        r.register("term", "The current Raft term", metrics.term.clone());
        r.register(
            "leader",
            "The id of the leader this server knows of (0: none)",
            metrics.leader.clone(),
        );
        r.register(
            "commit_index",
            "The highest log index known committed",
            metrics.commit.clone(),
        );
        r.register(
            "applied_index",
            "The highest log index applied to the state machine",
            metrics.applied.clone(),
        );
        r.register(
            "snapshot_index",
            "The index of the latest durable snapshot",
            metrics.snapshot_index.clone(),
        );
        r.register(
            "log_entries_appended",
            "Entries appended to the log (this server's own and replicated ones)",
            metrics.entries_appended.clone(),
        );
        r.register_with_unit(
            "log_appended",
            "Bytes of entries appended to the log",
            Unit::Bytes,
            metrics.bytes_appended.clone(),
        );
        r.register_with_unit(
            "fsync_duration",
            "How long each sync of the log took (one covers every batch written together)",
            Unit::Seconds,
            metrics.fsync_seconds.clone(),
        );
        r.register(
            "fsync_batch_entries",
            "Entries made durable by each sync of the log (group commit)",
            metrics.fsync_batch_entries.clone(),
        );
        r.register(
            "fsync_failures",
            "Syncs of the log that failed (the server stops at the first)",
            metrics.fsync_failures.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time from a client request's arrival to its answer, by kind",
            Unit::Seconds,
            metrics.request_seconds.clone(),
        );
        r.register(
            "queue_depth",
            "Items waiting: the owner thread's inputs, the messages queued for client connections",
            metrics.queue_depth.clone(),
        );
        r.register(
            "peer_queue_depth",
            "Raft messages queued for each peer and not yet written to its connection",
            metrics.peer_queue_depth.clone(),
        );
        r.register(
            "sessions",
            "Client sessions open in the replicated state",
            metrics.sessions.clone(),
        );
        r.register(
            "client_connections",
            "Client connections open to this server",
            metrics.client_connections.clone(),
        );
        r.register(
            "snapshots",
            "Snapshots made durable: taken by this server or installed from the leader",
            metrics.snapshots.clone(),
        );
        r.register_with_unit(
            "snapshot_size",
            "Size of the latest snapshot (taken or installed)",
            Unit::Bytes,
            metrics.snapshot_bytes.clone(),
        );
        r.register_with_unit(
            "snapshot_duration",
            "Time to take a snapshot, from encoding the image to installing its file",
            Unit::Seconds,
            metrics.snapshot_seconds.clone(),
        );
        r.register(
            "dropped_messages",
            "Messages dropped, by reason (Raft messages the core ignored; messages for full client queues)",
            metrics.dropped.clone(),
        );
        r.register(
            "elections",
            "Elections this server started (pre-votes not counted)",
            metrics.elections.clone(),
        );
        r.register(
            "check_quorum_step_downs",
            "Times this server stopped leading because it lost contact with a quorum",
            metrics.check_quorum_step_downs.clone(),
        );
        r.register(
            "leader_changes",
            "Times the leader this server knows of changed (to another server or to none)",
            metrics.leader_changes.clone(),
        );
        r.register_with_unit(
            "owner_loop_duration",
            "How long each iteration of the owner thread took (inputs handled, written, synced, sent)",
            Unit::Seconds,
            metrics.loop_seconds.clone(),
        );
        r.register(
            "disk_full",
            "1 while this server's disk is full (ENOSPC/EDQUOT): it refuses client requests, takes no part in Raft and retries every second",
            metrics.disk_full.clone(),
        );
        Arc::new(Self {
            registry,
            ..metrics
        })
    }

    /// The owner thread finished a loop iteration.
    pub(crate) fn loop_done(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_loop_ms.store(ms, Ordering::Relaxed);
    }

    /// How long ago the owner thread last finished a loop iteration.
    pub(crate) fn since_last_loop_ms(&self) -> u64 {
        let now = self.started.elapsed().as_millis() as u64;
        now.saturating_sub(self.last_loop_ms.load(Ordering::Relaxed))
    }

    /// The storage failed (the server stops).
    pub(crate) fn storage_failed(&self) {
        self.storage_failed.store(true, Ordering::Relaxed);
    }

    /// Whether the disk is full (the gauge `copycat_disk_full`).
    pub(crate) fn set_disk_full(&self, full: bool) {
        self.disk_full.set(i64::from(full));
    }

    /// Whether the storage failed.
    pub(crate) fn has_storage_failed(&self) -> bool {
        self.storage_failed.load(Ordering::Relaxed)
    }

    /// Set the gauges that mirror the status.
    pub(crate) fn set_status(&self, status: &Status) {
        for (role, name) in [
            (Role::Follower, "follower"),
            (Role::PreCandidate, "pre_candidate"),
            (Role::Candidate, "candidate"),
            (Role::Leader, "leader"),
        ] {
            self.role
                .get_or_create(&RoleLabel { role: name })
                .set(i64::from(status.role == role));
        }
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.term.set(gauge(status.term.0));
        self.leader.set(gauge(status.leader.map_or(0, |l| l.0)));
        self.commit.set(gauge(status.commit.0));
        self.applied.set(gauge(status.applied.0));
        self.snapshot_index.set(gauge(status.snapshot.0));
    }

    /// Everything in the Prometheus text format.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Times the log's syncs for the metrics (the shell reads no clock).
pub(crate) struct SyncMetrics {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) started: Option<Instant>,
}

impl ShellObserver for SyncMetrics {
    fn appended(&mut self, entries: u64, bytes: u64) {
        self.metrics.entries_appended.inc_by(entries);
        self.metrics.bytes_appended.inc_by(bytes);
    }

    fn sync_started(&mut self) {
        self.started = Some(Instant::now());
    }

    fn sync_finished(&mut self, ok: bool, entries: u64) {
        if let Some(started) = self.started.take() {
            self.metrics
                .fsync_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        if ok {
            self.metrics.fsync_batch_entries.observe(entries as f64);
        } else {
            // A failed sync stops the server (which marks the storage
            // failed then), except on a full disk, which it rides out.
            self.metrics.fsync_failures.inc();
        }
    }
}
