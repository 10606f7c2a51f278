//! What the owner thread reports as it works: metrics (request latencies,
//! snapshots, dropped messages, queue depths) and the INFO lines an
//! operator reads (leader changes, membership changes, snapshots).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use copycat_proto::{ClientRequest, Request, RequestId, ServerMessage};
use copycat_raft::{IgnoreReason, LogIndex, NodeId};
use copycat_replica::node::ConnectionId;
use copycat_replica::shell::Shell;
use copycat_replica::RawStateMachine;
use tokio::sync::mpsc;

use crate::metrics::{KindLabel, Metrics, PeerLabel, QueueLabel, ReasonLabel, SourceLabel};
use crate::owner::Peers;
use crate::status::Status;

/// Requests timed at once; beyond it new ones are not timed (a client
/// that never reads its answers cannot grow the table without bound).
const MAX_TIMED: usize = 100_000;
/// How often the gauges that need a pass over the state are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// The owner thread's observer.
pub(crate) struct Observer {
    pub(crate) metrics: Arc<Metrics>,
    /// Requests waiting for their answer: when each arrived, and its kind.
    waiting: HashMap<(ConnectionId, RequestId), (Instant, &'static str)>,
    /// When the snapshot being taken started.
    snapshot: Option<Instant>,
    last_sample: Option<Instant>,
    last: Option<Status>,
    config_index: Option<LogIndex>,
    /// The peers with a `peer_queue_depth` series.
    peers_exported: Vec<NodeId>,
}

fn kind(request: &Request) -> &'static str {
    match request {
        Request::Register { .. } => "register",
        Request::KeepAlive { .. } => "keep_alive",
        Request::Unregister { .. } => "unregister",
        Request::Command { .. } => "command",
        Request::Query { .. } => "query",
        Request::ResetEvents { .. } => "reset_events",
    }
}

/// `IgnoreReason::StaleTerm` as `stale_term`.
fn reason_name(reason: IgnoreReason) -> String {
    let mut name = String::new();
    for (i, c) in format!("{reason:?}").chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                name.push('_');
            }
            name.push(c.to_ascii_lowercase());
        } else {
            name.push(c);
        }
    }
    name
}

impl Observer {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            waiting: HashMap::new(),
            snapshot: None,
            last_sample: None,
            last: None,
            config_index: None,
            peers_exported: Vec::new(),
        }
    }

    /// A client request arrived.
    pub(crate) fn request(&mut self, conn: ConnectionId, request: &ClientRequest) {
        if self.waiting.len() < MAX_TIMED {
            self.waiting
                .insert((conn, request.id), (Instant::now(), kind(&request.request)));
        }
    }

    /// A message is about to go to a client.
    pub(crate) fn sending(&mut self, conn: ConnectionId, message: &ServerMessage) {
        if let ServerMessage::Response { id, .. } = message {
            if let Some((at, kind)) = self.waiting.remove(&(conn, *id)) {
                self.metrics
                    .request_seconds
                    .get_or_create(&KindLabel { kind })
                    .observe(at.elapsed().as_secs_f64());
            }
        }
    }

    /// A message for a client was dropped: its queue was full or closed.
    pub(crate) fn client_message_dropped(&mut self) {
        self.metrics
            .dropped
            .get_or_create(&ReasonLabel {
                reason: "client_queue_full".into(),
            })
            .inc();
    }

    /// A client connection closed: its requests will not be answered.
    pub(crate) fn connection_closed(&mut self, conn: ConnectionId) {
        self.waiting.retain(|(c, _), _| *c != conn);
    }

    /// A snapshot started.
    pub(crate) fn snapshot_started(&mut self) {
        self.snapshot = Some(Instant::now());
    }

    /// The snapshot started last was installed, `bytes` long (or failed:
    /// `index` None).
    pub(crate) fn snapshot_finished(&mut self, id: u64, index: Option<LogIndex>, bytes: u64) {
        let Some(started) = self.snapshot.take() else {
            return;
        };
        let Some(index) = index else { return };
        let took = started.elapsed();
        self.metrics.snapshot_seconds.observe(took.as_secs_f64());
        self.metrics
            .snapshot_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.metrics
            .snapshots
            .get_or_create(&SourceLabel { source: "taken" })
            .inc();
        tracing::info!(
            id,
            index = index.0,
            bytes,
            millis = took.as_millis() as u64,
            "snapshot taken"
        );
    }

    /// A snapshot received from the leader was installed.
    pub(crate) fn snapshot_installed(&mut self, bytes: u64) {
        self.metrics
            .snapshot_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.metrics
            .snapshots
            .get_or_create(&SourceLabel {
                source: "installed",
            })
            .inc();
    }

    /// After a batch: log leader and membership changes, and sample what
    /// needs a pass over the state now and then.
    pub(crate) fn after_batch<M: RawStateMachine>(
        &mut self,
        shell: &Shell<M>,
        status: &Status,
        clients: &BTreeMap<ConnectionId, mpsc::Sender<ServerMessage>>,
        peers: &Peers,
        inputs_waiting: usize,
    ) {
        let id = status.id.0;
        let raft = shell.server().raft();
        if self.last.map(|s| s.leadership()) != Some(status.leadership()) {
            let leader_changed = self.last.map(|s| s.leader) != Some(status.leader);
            match status.leader {
                Some(leader) if leader_changed => {
                    tracing::info!(
                        id,
                        leader = leader.0,
                        term = status.term.0,
                        "leader changed"
                    )
                }
                None if leader_changed && self.last.is_some() => {
                    tracing::info!(id, term = status.term.0, "no leader known")
                }
                _ => {}
            }
            if leader_changed && self.last.is_some() {
                self.metrics.leader_changes.inc();
            }
        }
        self.last = Some(*status);
        let (config_index, config) = raft.configuration();
        if self.config_index != Some(config_index) {
            let members: Vec<String> = config
                .members
                .iter()
                .map(|(member, role)| format!("{}={role:?}", member.0).to_lowercase())
                .collect();
            let what = if self.config_index.is_none() {
                "configuration"
            } else {
                "configuration changed"
            };
            tracing::info!(id, index = config_index.0, members = %members.join(","), "{what}");
            self.config_index = Some(config_index);
        }

        let now = Instant::now();
        if self
            .last_sample
            .is_some_and(|at| now.duration_since(at) < SAMPLE_EVERY)
        {
            return;
        }
        self.last_sample = Some(now);
        let m = &self.metrics;
        let stats = raft.stats();
        for reason in IgnoreReason::ALL {
            let count = stats.ignored(*reason);
            if count > 0 {
                let counter = m.dropped.get_or_create(&ReasonLabel {
                    reason: reason_name(*reason),
                });
                counter
                    .inner()
                    .store(count, std::sync::atomic::Ordering::Relaxed);
            }
        }
        m.elections
            .inner()
            .store(stats.elections, std::sync::atomic::Ordering::Relaxed);
        m.check_quorum_step_downs.inner().store(
            stats.check_quorum_step_downs,
            std::sync::atomic::Ordering::Relaxed,
        );
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        m.sessions
            .set(gauge(shell.server().replica().sessions().len()));
        m.client_connections.set(gauge(clients.len()));
        m.queue_depth
            .get_or_create(&QueueLabel { queue: "input" })
            .set(gauge(inputs_waiting));
        let outbound: usize = clients
            .values()
            .map(|tx| tx.max_capacity() - tx.capacity())
            .sum();
        m.queue_depth
            .get_or_create(&QueueLabel {
                queue: "client_outbound",
            })
            .set(gauge(outbound));
        let mut exported = Vec::new();
        for (peer, depth) in peers.queue_depths() {
            m.peer_queue_depth
                .get_or_create(&PeerLabel { peer: peer.0 })
                .set(gauge(depth));
            exported.push(peer);
        }
        // Peers that left the configuration lose their series.
        for gone in self.peers_exported.iter().filter(|p| !exported.contains(p)) {
            m.peer_queue_depth.remove(&PeerLabel { peer: gone.0 });
        }
        self.peers_exported = exported;
    }
}

/// An error and its causes, as `error: cause: cause` (for log lines; the
/// error types show their causes through `source`, not in their message).
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_snake_case() {
        assert_eq!(reason_name(IgnoreReason::StaleTerm), "stale_term");
        assert_eq!(
            reason_name(IgnoreReason::LeaderLeaseNotExpired),
            "leader_lease_not_expired"
        );
    }
}
