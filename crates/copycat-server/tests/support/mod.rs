//! Embedded clusters on 127.0.0.1 for the tests: ephemeral ports, data in
//! a temporary directory, fsync on.

#![allow(dead_code)]

pub mod certs;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use copycat_client::Machine;
use copycat_replica::{codec, ApplyContext, QueryContext, RestoreError, StateMachine};
use copycat_server::{Server, Typed};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// A state machine that publishes numbered events: each `Publish(n)`
/// sends the calling session the next `n` numbers of its own sequence, as
/// events named `"n"`, and answers the last number sent.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Notifier {
    /// The last number published to each session.
    pub published: BTreeMap<u64, u64>,
    /// The sum of every `Add`.
    pub total: i64,
}

/// Commands of [`Notifier`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum NotifierCommand {
    /// Publish the next `n` numbers to the caller.
    Publish(u32),
    /// Add to the total; answers it.
    Add(i64),
    /// Fail with the state machine's own error.
    Fail(String),
}

/// Queries of [`Notifier`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum NotifierQuery {
    /// The total.
    Total,
}

/// The state machine's own error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Why.
    pub reason: String,
}

impl StateMachine for Notifier {
    type Command = NotifierCommand;
    type Query = NotifierQuery;
    type Output = i64;
    type Error = Refusal;

    fn apply(
        &mut self,
        ctx: &mut ApplyContext<'_>,
        command: NotifierCommand,
    ) -> Result<i64, Refusal> {
        match command {
            NotifierCommand::Publish(n) => {
                let session = ctx.session().expect("commands come from sessions");
                let last = self.published.entry(session.0).or_default();
                for _ in 0..n {
                    *last += 1;
                    ctx.publish_value(session, "n", last);
                }
                Ok(*last as i64)
            }
            NotifierCommand::Add(n) => {
                self.total += n;
                Ok(self.total)
            }
            NotifierCommand::Fail(reason) => Err(Refusal { reason }),
        }
    }

    fn query(
        &self,
        _ctx: &QueryContext,
        NotifierQuery::Total: NotifierQuery,
    ) -> Result<i64, Refusal> {
        Ok(self.total)
    }

    fn snapshot(&self) -> Bytes {
        codec::encode(self)
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        *self = codec::decode(data).map_err(|e| RestoreError(e.to_string()))?;
        Ok(())
    }
}

/// The client's view of [`Notifier`].
pub struct NotifierApi;

impl Machine for NotifierApi {
    type Command = NotifierCommand;
    type Query = NotifierQuery;
    type Output = i64;
    type Error = Refusal;
}

pub type NotifierServer = Server<Typed<Notifier>>;

/// A cluster of embedded servers.
pub struct Cluster {
    pub root: tempfile::TempDir,
    pub addrs: BTreeMap<u64, SocketAddr>,
    pub servers: BTreeMap<u64, NotifierServer>,
    /// Each server's connection limit, when not the default.
    pub max_connections: Option<usize>,
}

impl Cluster {
    /// `n` servers, all started.
    pub async fn start(n: u64) -> Self {
        Self::start_with(n, None).await
    }

    /// `n` servers accepting at most `max_connections` connections each.
    pub async fn start_with(n: u64, max_connections: Option<usize>) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for id in 1..=n {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            addrs.insert(id, listener.local_addr().expect("addr"));
            listeners.insert(id, listener);
        }
        let mut cluster = Self {
            root,
            addrs,
            servers: BTreeMap::new(),
            max_connections,
        };
        for (id, listener) in listeners {
            let server = cluster
                .builder(id)
                .listener(listener)
                .start()
                .await
                .expect("start");
            cluster.servers.insert(id, server);
        }
        cluster
    }

    pub fn dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("server-{id}"))
    }

    /// A builder for server `id` of this cluster (fast elections, frequent
    /// snapshots so restarts exercise them).
    pub fn builder(&self, id: u64) -> copycat_server::ServerBuilder<Typed<Notifier>> {
        self.joiner(id)
            .bootstrap(self.addrs.iter().map(|(id, a)| (*id, a.to_string())))
    }

    /// A builder for server `id` with this cluster's settings but no
    /// member list (to join the cluster, or restart from its directory).
    pub fn joiner(&self, id: u64) -> copycat_server::ServerBuilder<Typed<Notifier>> {
        let builder = Server::builder(Notifier::default());
        let builder = match self.max_connections {
            Some(max) => builder.max_connections(max),
            None => builder,
        };
        builder.id(id).data_dir(self.dir(id)).configure(|config| {
            config.raft.election_timeout_ms = 300;
            config.raft.heartbeat_interval_ms = 50;
            config.snapshot_every_entries = 500;
            config.snapshot_log_percent = 0;
            config.raft.snapshot_trailing_entries = 100;
        })
    }

    /// Restart server `id` on its address and data directory.
    pub async fn restart(&mut self, id: u64) {
        let addr = self.addrs[&id];
        let listener = bind_again(addr).await;
        let server = self
            .builder(id)
            .listener(listener)
            .start()
            .await
            .expect("restart");
        self.servers.insert(id, server);
    }

    pub fn addresses(&self) -> Vec<String> {
        self.addrs.values().map(|a| a.to_string()).collect()
    }

    /// The leader among the running servers, waiting up to 10 s.
    pub async fn leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some((id, _)) = self.servers.iter().find(|(_, s)| s.status().is_leader()) {
                return *id;
            }
            assert!(Instant::now() < deadline, "no leader elected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn shutdown(self) {
        for server in self.servers.into_values() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

/// Bind `addr` again (the port of a server that just stopped may linger
/// for a moment).
pub async fn bind_again(addr: SocketAddr) -> TcpListener {
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind {addr} again");
}
