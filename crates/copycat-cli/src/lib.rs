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

use copycat_server::{ClientTls, Server, ServerTls, StartError, Typed};
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
    /// The address peers and clients reach this server at, recorded in the
    /// configuration (`None`: the listener's address).
    pub advertise: Option<String>,
    /// TLS on every connection (`None`: plain TCP).
    pub tls: Option<ServerTls>,
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
            advertise: None,
            tls: None,
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
        advertise,
        tls,
    } = spec;
    let mut builder = Server::builder(Resources::default());
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    if let Some(http) = http {
        builder = builder.http_listener(http);
    }
    if let Some(address) = advertise {
        builder = builder.advertise(address);
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

/// Read a server's TLS files ([`config::TlsFiles`]); an error names the
/// setting and the file.
pub fn server_tls(files: &config::TlsFiles) -> Result<ServerTls, copycat_server::TlsError> {
    ServerTls::from_pem_files(&files.cert, &files.key, &files.ca, files.client_auth)
}

/// The TLS flags of the commands that talk to a cluster.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ClientTlsArgs {
    /// Connect with TLS, verifying the servers' certificates against this
    /// CA bundle (PEM) [env: COPYCAT_TLS_CA]
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Present this certificate (PEM), for servers that require client
    /// certificates (with --tls-key) [env: COPYCAT_TLS_CERT]
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM) [env: COPYCAT_TLS_KEY]
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// The client's TLS (`None`: plain TCP), from the flags or else the
    /// `COPYCAT_TLS_*` environment variables; an error names the flag and
    /// the file.
    pub fn load(&self) -> anyhow::Result<Option<ClientTls>> {
        let pick = |flag: &Option<PathBuf>, var: &str| {
            flag.clone().or_else(|| {
                std::env::var_os(var)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
        };
        let ca = pick(&self.tls_ca, "COPYCAT_TLS_CA");
        let cert = pick(&self.tls_cert, "COPYCAT_TLS_CERT");
        let key = pick(&self.tls_key, "COPYCAT_TLS_KEY");
        let Some(ca) = ca else {
            if cert.is_some() || key.is_some() {
                anyhow::bail!("--tls-cert and --tls-key need --tls-ca (the CA bundle that verifies the servers)");
            }
            return Ok(None);
        };
        let identity = match (&cert, &key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            (Some(_), None) => anyhow::bail!("--tls-cert needs --tls-key"),
            (None, Some(_)) => anyhow::bail!("--tls-key needs --tls-cert"),
        };
        let tls = ClientTls::from_pem_files(&ca, identity).map_err(|e| anyhow::anyhow!("--{e}"))?;
        Ok(Some(tls))
    }
}
