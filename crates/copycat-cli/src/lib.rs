//! The `copycat` command's library: how the command starts a server of the
//! replicated primitives (`copycat_primitives::Resources`), the names of the
//! resources behind `copycat client`, and the other subcommands' code.
#![forbid(unsafe_code)]

pub mod bench;
pub mod cluster;
pub mod config;
pub mod kv;
pub mod logging;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use copycat_server::{Server, StartError, Typed};
use tokio::net::TcpListener;

use copycat_primitives::Resources;

/// A running server of the `copycat` state machine: the resource manager
/// of the replicated primitives.
pub type CopycatServer = Server<Typed<Resources>>;

/// How to start one server.
#[derive(Debug)]
pub struct ServerSpec {
    /// Its id.
    pub id: u64,
    /// Every member's address (its own included).
    pub members: BTreeMap<u64, SocketAddr>,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Sync the disk before acknowledging anything (`false` is for tests
    /// and demos only: a power loss can then lose acknowledged writes).
    pub fsync: bool,
    /// Take a snapshot every this many applied entries.
    pub snapshot_every_entries: u64,
    /// Entries kept in memory before a snapshot, so slightly lagging
    /// servers get entries instead of a snapshot transfer.
    pub snapshot_trailing_entries: u64,
    /// Connections kept open at once; more are closed when accepted.
    pub max_connections: usize,
    /// Time a new connection has to say hello before it is closed.
    pub hello_timeout: Duration,
    /// Take a snapshot every this many bytes of applied commands.
    pub snapshot_every_bytes: u64,
    /// Raft's election timeout.
    pub election_timeout_ms: u64,
    /// The leader's heartbeat interval.
    pub heartbeat_ms: u64,
    /// The session timeout of clients that ask for the server's default.
    pub session_timeout_ms: u64,
    /// Serve `/metrics`, `/health` and `/ready` here (`None`: off).
    pub http: Option<TcpListener>,
    /// Join the cluster of this member (when the data directory is new)
    /// instead of bootstrapping one from `members`.
    pub join: Option<String>,
}

impl ServerSpec {
    /// A server with the default snapshot policy.
    pub fn new(
        id: u64,
        members: BTreeMap<u64, SocketAddr>,
        data_dir: PathBuf,
        fsync: bool,
    ) -> Self {
        Self {
            id,
            members,
            data_dir,
            fsync,
            snapshot_every_entries: 10_000,
            snapshot_trailing_entries: 1_024,
            max_connections: copycat_server::MAX_CONNECTIONS,
            hello_timeout: copycat_server::HELLO_TIMEOUT,
            snapshot_every_bytes: 64 << 20,
            election_timeout_ms: 750,
            heartbeat_ms: 150,
            session_timeout_ms: 5_000,
            http: None,
            join: None,
        }
    }
}

/// Start a server on an already bound listener.
pub async fn start_server(
    spec: ServerSpec,
    listener: TcpListener,
) -> Result<CopycatServer, StartError> {
    let ServerSpec {
        id,
        members,
        data_dir,
        fsync,
        snapshot_every_entries,
        snapshot_trailing_entries,
        max_connections,
        hello_timeout,
        snapshot_every_bytes,
        election_timeout_ms,
        heartbeat_ms,
        session_timeout_ms,
        http,
        join,
    } = spec;
    let mut builder = Server::builder(Resources::default());
    if let Some(http) = http {
        builder = builder.http_listener(http);
    }
    builder = match join {
        Some(address) => builder.join(address),
        None => builder.bootstrap(members.iter().map(|(id, addr)| (*id, addr.to_string()))),
    };
    builder
        .id(id)
        .listener(listener)
        .data_dir(data_dir)
        .fsync(fsync)
        .max_connections(max_connections)
        .hello_timeout(hello_timeout)
        .configure(move |config| {
            config.snapshot_every_entries = snapshot_every_entries;
            config.snapshot_every_bytes = snapshot_every_bytes;
            config.raft.snapshot_trailing_entries = snapshot_trailing_entries;
            config.raft.election_timeout_ms = election_timeout_ms;
            config.raft.heartbeat_interval_ms = heartbeat_ms;
            // The lease keeps its default share (a fifth) of a shorter
            // election timeout.
            config.raft.lease_clock_drift_ms = config
                .raft
                .lease_clock_drift_ms
                .min(election_timeout_ms / 5);
            config.idle_tick_ms = election_timeout_ms;
            config.expire_retry_ms = election_timeout_ms;
            config.replica.default_session_timeout_ms = session_timeout_ms;
        })
        .start()
        .await
}
