//! [`Server`]: a running server and the builder that starts it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use copycat_net::{ticker, ClientTls, ServerTls, Watch, TICK};
use copycat_proto::{AdminFailure, AdminRequest, AdminResponse, MemberKind, ServerStatus};
use copycat_raft::{Config, Configuration, MembershipChange, NodeId, Time};
use copycat_replica::node::{ServerConfig, ServerNode};
use copycat_replica::shell::{Bootstrap, Shell, ShellConfig, ShellError};
use copycat_replica::{RawStateMachine, StateMachine, Typed};
use copycat_storage::{Disk, Durability, FsDisk, Identity, StorageOptions};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::admin::{config_of, Admin, Wait};
use crate::http::HttpState;
use crate::lock::DirLock;
use crate::metrics::{Metrics, SyncMetrics};
use crate::net::{accept, Accepting, Limits, NetCounters, NetStats};
use crate::observe::Observer;
use crate::owner::{wall_ms, Core, Input, Owner, Peers};
use crate::status::{Leadership, LoopStats, Status};

/// Inputs queued for the owner thread before connection tasks wait.
const INPUT_QUEUE: usize = 4096;
/// Default limit on the connections (peers and clients) a server keeps open
/// at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 1024;
/// Default time a new connection has to send its hello frame before it is
/// closed (so idle connections cannot hold the connection slots).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The address a server listens on when none is given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5700";
/// The data directory a server uses when none is given.
pub const DEFAULT_DATA_DIR: &str = "./copycat-data";

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An address did not resolve.
    #[error("cannot resolve {address}")]
    Resolve {
        /// The address as given.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error("data directory {} is in use by {holder}", path.display())]
    Locked {
        /// The directory.
        path: PathBuf,
        /// Who holds it, as it recorded itself (`pid N`).
        holder: String,
    },
    /// Joining the cluster failed.
    #[error("cannot join the cluster through {address}: {reason}")]
    Join {
        /// The server asked last.
        address: String,
        /// Why.
        reason: String,
    },
    /// The data directory could not be created, opened or recovered.
    #[error("data directory {}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: ShellError,
    },
    /// The settings are inconsistent.
    #[error("invalid server settings: {0}")]
    Invalid(String),
}

/// Why an administrative call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Only the leader changes membership or hands leadership over.
    #[error("this server is not the leader (leader: {})", leader.map_or("unknown".to_string(), |l| l.0.to_string()))]
    NotLeader {
        /// The leader this server knows of.
        leader: Option<NodeId>,
    },
    /// The change was refused (another change in progress, not a voter, ...).
    #[error("refused: {0}")]
    Refused(String),
    /// The address did not resolve.
    #[error("cannot resolve {address}")]
    Resolve {
        /// The address as given.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// Leadership changed before the change committed: it may or may not
    /// take effect; look at the configuration.
    #[error("leadership changed before the change committed; it may or may not take effect")]
    LeadershipLost,
    /// It did not finish in time.
    #[error("not done after {0:?}")]
    Timeout(Duration),
    /// The server has stopped.
    #[error("the server has stopped")]
    Stopped,
}

/// An adjustment of the server settings, applied at start.
type Configure = Box<dyn FnOnce(&mut ServerConfig) + Send>;

/// Settings and state machine of a server to start. See
/// [`Server::builder`].
pub struct ServerBuilder<M> {
    machine: M,
    id: u64,
    listen: String,
    listener: Option<TcpListener>,
    data_dir: PathBuf,
    members: Vec<(u64, String)>,
    join: Option<String>,
    advertise: Option<String>,
    fsync: bool,
    config: Option<ServerConfig>,
    configure: Vec<Configure>,
    max_connections: usize,
    hello_timeout: Duration,
    disk: Option<Arc<dyn Disk>>,
    http: Option<String>,
    http_listener: Option<TcpListener>,
    tls: Option<ServerTls>,
}

impl<M: RawStateMachine + Send + 'static> ServerBuilder<M> {
    /// A builder for a server of `machine` (a [`RawStateMachine`]; for a
    /// typed [`StateMachine`] use [`Server::builder`]). Defaults: id 1,
    /// listening on [`DEFAULT_LISTEN`], data in [`DEFAULT_DATA_DIR`], fsync
    /// on, a cluster of this server alone.
    pub fn raw(machine: M) -> Self {
        Self {
            machine,
            id: 1,
            listen: DEFAULT_LISTEN.to_string(),
            listener: None,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            members: Vec::new(),
            join: None,
            advertise: None,
            fsync: true,
            config: None,
            configure: Vec::new(),
            max_connections: MAX_CONNECTIONS,
            hello_timeout: HELLO_TIMEOUT,
            disk: None,
            http: None,
            http_listener: None,
            tls: None,
        }
    }

    /// Serve TLS only, and talk TLS to the peers (off by default): the
    /// listener presents `tls`'s certificate, peers must present one that
    /// chains to its CA bundle (and this server verifies theirs the same
    /// way when it calls them), clients must too if `tls` requires client
    /// certificates. Every server of a cluster must run TLS or none.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Serve `/metrics` (Prometheus text), `/health` and `/ready` over
    /// HTTP on `address` (off by default; see [`Server::http_addr`]).
    pub fn http(mut self, address: impl Into<String>) -> Self {
        self.http = Some(address.into());
        self
    }

    /// Serve the HTTP endpoint on a listener already bound (instead of
    /// [`http`](Self::http)).
    pub fn http_listener(mut self, listener: TcpListener) -> Self {
        self.http_listener = Some(listener);
        self
    }

    /// This server's id: a positive number, unique in the cluster.
    pub fn id(mut self, id: u64) -> Self {
        self.id = id;
        self
    }

    /// Listen for peers and clients on `address` (`host:port` or an IP
    /// literal; port 0 picks a free port, see [`Server::local_addr`]).
    pub fn listen(mut self, address: impl Into<String>) -> Self {
        self.listen = address.into();
        self
    }

    /// Serve on a listener already bound (instead of [`listen`](Self::listen)).
    pub fn listener(mut self, listener: TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Keep the log, snapshots and term/vote in `dir` (created if missing).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }

    /// The initial voters of a new cluster as `(id, address)`, this server
    /// among them (its address may be left out: it is the advertised
    /// address). Every server of the new cluster must be given the same
    /// list: the cluster id is derived from it, and servers with different
    /// lists refuse each other. The list is used only when the data
    /// directory is new: on a restart the configuration the server
    /// persisted wins (a different list is logged as a warning), and the
    /// addresses of every member come from the log or a snapshot.
    pub fn bootstrap<A: Into<String>>(
        mut self,
        members: impl IntoIterator<Item = (u64, A)>,
    ) -> Self {
        self.members = members.into_iter().map(|(id, a)| (id, a.into())).collect();
        self
    }

    /// Join the running cluster that the server at `address` (any member)
    /// belongs to, when the data directory is new: the leader adds this
    /// server as a learner and promotes it to voter once it has caught up
    /// ([`Server::watch_status`] shows the promotion). A data directory
    /// that already holds a cluster's data restarts as that member, and
    /// `address` is not contacted.
    pub fn join(mut self, address: impl Into<String>) -> Self {
        self.join = Some(address.into());
        self
    }

    /// The address other servers and clients reach this server at
    /// (`host:port`), recorded in the cluster configuration. Default: the
    /// address the server listens on.
    pub fn advertise(mut self, address: impl Into<String>) -> Self {
        self.advertise = Some(address.into());
        self
    }

    /// Sync the disk before acknowledging anything (the default). `false`
    /// is for tests and demos only: a power loss can then lose
    /// acknowledged writes.
    pub fn fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// Start from these server settings instead of the defaults (the Raft
    /// id in them is replaced by [`id`](Self::id)).
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Adjust the server settings (Raft timing, limits, snapshot policy).
    pub fn configure(mut self, f: impl FnOnce(&mut ServerConfig) + Send + 'static) -> Self {
        self.configure.push(Box::new(f));
        self
    }

    /// Keep at most this many connections open at once (default
    /// [`MAX_CONNECTIONS`]).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Close connections that send no hello within this time (default
    /// [`HELLO_TIMEOUT`]).
    pub fn hello_timeout(mut self, timeout: Duration) -> Self {
        self.hello_timeout = timeout;
        self
    }

    /// Use this disk instead of the file system (tests: fault injection).
    pub fn disk(mut self, disk: Arc<dyn Disk>) -> Self {
        self.disk = Some(disk);
        self
    }

    /// Bind, open and recover the data directory, and start serving.
    pub async fn start(self) -> Result<Server<M>, StartError> {
        let Self {
            machine,
            id,
            listen,
            listener,
            data_dir,
            members,
            join,
            advertise,
            fsync,
            config,
            configure,
            max_connections,
            hello_timeout,
            disk,
            http,
            http_listener,
            tls,
        } = self;
        if id == 0 {
            return Err(StartError::Invalid("the server id must be positive".into()));
        }
        if max_connections == 0 {
            return Err(StartError::Invalid(
                "max_connections must be positive".into(),
            ));
        }
        if join.is_some() && !members.is_empty() {
            return Err(StartError::Invalid(
                "bootstrap a new cluster or join one, not both".into(),
            ));
        }
        let listener = match listener {
            Some(listener) => listener,
            None => {
                let address = resolve_one(&listen).await?;
                TcpListener::bind(address)
                    .await
                    .map_err(|source| StartError::Bind { address, source })?
            }
        };
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            address: listener_addr_hint(&listen),
            source,
        })?;
        let advertised = advertise.unwrap_or_else(|| local_addr.to_string());
        let mut initial: BTreeMap<u64, String> = BTreeMap::new();
        for (member, address) in &members {
            if *member == 0 {
                return Err(StartError::Invalid("member ids must be positive".into()));
            }
            if initial.insert(*member, address.clone()).is_some() {
                return Err(StartError::Invalid(format!(
                    "member {member} is listed twice"
                )));
            }
        }
        initial.entry(id).or_insert_with(|| advertised.clone());

        let mut server = config.unwrap_or_else(|| ServerConfig::new(Config::new(NodeId(id))));
        server.raft.id = NodeId(id);
        for f in configure {
            f(&mut server);
        }
        server.raft.id = NodeId(id);
        server
            .raft
            .validate()
            .map_err(|e| StartError::Invalid(e.to_string()))?;
        let election_timeout_ms = server.raft.election_timeout_ms;
        let shared_settings = server.replica.settings();
        let mut storage = StorageOptions::default();
        if !fsync {
            storage.log.durability = Durability::None;
        }
        let shell_config = ShellConfig {
            server,
            storage,
            seed: id ^ u64::from(std::process::id()) ^ wall_ms(),
            compute_digests: false,
        };
        // Only a directory on the file system can be shared by two
        // processes (a test's disk lives in one).
        let lock = match disk {
            None => Some(DirLock::acquire(&data_dir)?),
            Some(_) => None,
        };
        let disk = disk.unwrap_or_else(|| Arc::new(FsDisk::new()));
        let start = Instant::now();
        let data_dir_error = |source| StartError::DataDir {
            path: data_dir.clone(),
            source,
        };
        // A new directory is bootstrapped from the member list, or from
        // what the cluster answers a join; one that holds data keeps it.
        let new_dir = !copycat_storage::Storage::is_bootstrapped_dir(disk.as_ref(), &data_dir)
            .map_err(|e| data_dir_error(e.into()))?;
        let bootstrap = match (&join, new_dir) {
            (_, false) => None,
            (Some(address), true) => Some(
                join_cluster(
                    id,
                    &advertised,
                    address,
                    election_timeout_ms,
                    tls.as_ref().map(ServerTls::peer_client),
                )
                .await?,
            ),
            (None, true) => Some(Bootstrap {
                identity: Identity {
                    cluster: cluster_id(&initial),
                    server: id,
                },
                config: initial.iter().fold(
                    Configuration::with_voters(initial.keys().map(|id| NodeId(*id))),
                    |config, (id, address)| config.with_address(NodeId(*id), address.clone()),
                ),
            }),
        };
        let dir = data_dir.clone();
        let opened = tokio::task::spawn_blocking(move || {
            if let Err(source) = std::fs::create_dir_all(&dir) {
                return Err(ShellError::Storage(copycat_storage::StorageError::Io {
                    operation: "create directory",
                    path: dir.clone(),
                    source,
                }));
            }
            Shell::open(
                shell_config,
                &dir,
                disk,
                bootstrap,
                machine,
                Time(0),
                wall_ms(),
            )
        })
        .await
        .map_err(|e| StartError::Invalid(format!("opening the data directory panicked: {e}")))?;
        let mut shell = opened.map_err(data_dir_error)?;
        let cluster = shell.storage().identity().cluster;
        let (_, persisted) = shell.server().raft().configuration();
        if !new_dir && !members.is_empty() {
            warn_if_members_differ(&initial, persisted);
        }
        if !persisted.members.contains_key(&NodeId(id)) {
            tracing::warn!(
                id,
                members = ?persisted.members.keys().map(|m| m.0).collect::<Vec<_>>(),
                "this server is not a member of the cluster configuration it knows; it takes no part and refuses clients until it is added"
            );
        }
        let http_listener = match (http_listener, http) {
            (Some(listener), _) => Some(listener),
            (None, Some(http)) => {
                let address = resolve_one(&http).await?;
                Some(
                    TcpListener::bind(address)
                        .await
                        .map_err(|source| StartError::Bind { address, source })?,
                )
            }
            (None, None) => None,
        };
        let http_addr = match &http_listener {
            Some(listener) => Some(listener.local_addr().map_err(|source| StartError::Bind {
                address: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })?),
            None => None,
        };
        let metrics = Metrics::new(id);
        shell.set_observer(Box::new(SyncMetrics {
            metrics: Arc::clone(&metrics),
            started: None,
        }));

        let (stop, stop_rx) = watch::channel(false);
        let (inputs, inputs_rx) = mpsc::channel(INPUT_QUEUE);
        let (status_tx, status) = watch::channel(Status::of(shell.server()));
        let (mut peer_set, hello, policy) = Peers::new(
            NodeId(id),
            cluster,
            shared_settings,
            tokio::runtime::Handle::current(),
            stop_rx.clone(),
            Some(local_addr.ip()).filter(|ip| !ip.is_unspecified()),
            tls.as_ref().map(|tls| tls.peer_client().clone()),
        );
        peer_set.follow(shell.server().raft().configuration());
        let net_stats = peer_set.stats();
        let owner = Owner {
            core: Core {
                shell,
                peers: peer_set,
                stats: LoopStats::default(),
            },
            start,
            inputs: inputs_rx,
            status: status_tx,
            clients: BTreeMap::new(),
            inputs_tx: inputs.downgrade(),
            snapshot_thread: None,
            written: None,
            restore_thread: None,
            restored: Vec::new(),
            log_sync: None,
            synced: Vec::new(),
            writes_in_flight: false,
            removals: None,
            leader_seen: None,
            lock,
            observer: Observer::new(Arc::clone(&metrics)),
        };
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("copycat-server-{id}"))
            .spawn(move || {
                let _ = done_tx.send(owner.run());
            })
            .map_err(|e| StartError::Invalid(format!("cannot start the server thread: {e}")))?;
        let limits = Limits {
            max_connections,
            hello_timeout,
        };
        let admin = Admin {
            inputs: inputs.clone(),
            status: status.clone(),
            election_timeout_ms,
            cluster,
        };
        let mut tasks = vec![tokio::spawn(tick(inputs.clone(), stop_rx.clone()))];
        if let Some(listener) = http_listener {
            let state = Arc::new(HttpState {
                metrics,
                status: status.clone(),
            });
            tasks.push(tokio::spawn(crate::http::serve(
                listener,
                state,
                stop_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(accept(
            listener,
            Accepting {
                hello,
                policy,
                limits,
                admin: admin.clone(),
                stats: Arc::clone(&net_stats),
                tls: tls.clone(),
            },
            inputs.clone(),
            stop_rx,
        )));
        tracing::info!(id, cluster = %format!("{cluster:016x}"), %local_addr, dir = %data_dir.display(), tls = tls.is_some(), "serving");
        if let Some(http_addr) = http_addr {
            tracing::info!(id, %http_addr, "serving /metrics, /health and /ready over HTTP");
        }
        Ok(Server {
            id: NodeId(id),
            cluster,
            local_addr,
            data_dir,
            admin,
            net_stats,
            http_addr,
            stop,
            status,
            done: Some(done),
            tasks,
        })
    }
}

/// The cluster id of a new cluster: a hash of its initial members and
/// their addresses, so every server bootstrapped from the same list
/// derives the same id, and servers given different lists refuse each
/// other.
pub fn cluster_id(members: &BTreeMap<u64, String>) -> u64 {
    // FNV-1a, 64 bits: stable across builds and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (id, address) in members {
        for byte in format!("{id}={address}\n").bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

fn warn_if_members_differ(given: &BTreeMap<u64, String>, persisted: &Configuration) {
    let known: BTreeMap<u64, String> = persisted
        .members
        .keys()
        .map(|id| (id.0, persisted.address(*id).unwrap_or("?").to_string()))
        .collect();
    if &known != given {
        tracing::warn!(
            given = ?given,
            persisted = ?known,
            "the member list given differs from the configuration this server persisted; the persisted configuration wins (the list only bootstraps a new cluster)"
        );
    }
}

/// Ask the cluster that `address` belongs to to add server `id`, reached
/// at `advertised`; follow redirects to the leader. Returns what the new
/// data directory is bootstrapped with.
async fn join_cluster(
    id: u64,
    advertised: &str,
    address: &str,
    election_timeout_ms: u64,
    tls: Option<&ClientTls>,
) -> Result<Bootstrap, StartError> {
    let request = AdminRequest::Join {
        id,
        address: advertised.to_string(),
        kind: MemberKind::Voter,
    };
    let limit = Duration::from_millis(election_timeout_ms.saturating_mul(25));
    let deadline = tokio::time::Instant::now() + limit;
    let mut target = address.to_string();
    let join_error = |target: &str, reason: String| StartError::Join {
        address: target.to_string(),
        reason,
    };
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(join_error(&target, format!("no answer after {limit:?}")));
        }
        let answer = copycat_net::admin_call_tls(&target, &request, left, tls)
            .await
            .map_err(|e| join_error(&target, e.to_string()))?;
        match answer {
            AdminResponse::Joined { cluster, members } => {
                tracing::info!(id, cluster = %format!("{cluster:016x}"), via = %target, "joined the cluster as a learner");
                return Ok(Bootstrap {
                    identity: Identity {
                        cluster,
                        server: id,
                    },
                    config: config_of(&members),
                });
            }
            AdminResponse::Failed(AdminFailure::NotLeader {
                address: Some(leader),
                ..
            }) => target = leader,
            AdminResponse::Failed(AdminFailure::NotLeader { address: None, .. }) => {
                // No leader known yet (an election): ask again shortly.
                tokio::time::sleep(Duration::from_millis(election_timeout_ms)).await;
            }
            AdminResponse::Failed(failure) => return Err(join_error(&target, failure.to_string())),
            other => return Err(join_error(&target, format!("unexpected answer {other:?}"))),
        }
    }
}

fn listener_addr_hint(listen: &str) -> SocketAddr {
    listen
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

async fn resolve_one(address: &str) -> Result<SocketAddr, StartError> {
    copycat_net::resolve(address)
        .await
        .map(|addrs| addrs[0])
        .map_err(|source| StartError::Resolve {
            address: address.to_string(),
            source,
        })
}

/// Wake the owner thread every tick; when the server stops, tell it.
async fn tick<M>(inputs: mpsc::Sender<Input<M>>, mut stop: watch::Receiver<bool>) {
    let mut ticker = ticker(TICK);
    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = inputs.send(Input::Stop).await;
                return;
            }
            _ = ticker.tick() => {
                // A full queue means the owner is busy and will tick anyway.
                let _ = inputs.try_send(Input::Tick);
            }
        }
    }
}

/// A running server. [`shutdown`](Self::shutdown) stops it gracefully;
/// dropping it stops it at once.
pub struct Server<M> {
    id: NodeId,
    cluster: u64,
    local_addr: SocketAddr,
    data_dir: PathBuf,
    admin: Admin<M>,
    net_stats: Arc<NetStats>,
    http_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    status: watch::Receiver<Status>,
    done: Option<oneshot::Receiver<Result<(), ShellError>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl<S: StateMachine + Send + 'static> Server<Typed<S>> {
    /// A builder for a server of the typed state machine `machine`.
    ///
    /// ```no_run
    /// # async fn run(machine: copycat_replica::testing::TestMachine) -> Result<(), Box<dyn std::error::Error>> {
    /// let server = copycat_server::Server::builder(machine)
    ///     .id(1)
    ///     .listen("127.0.0.1:5701")
    ///     .data_dir("/var/lib/copycat/1")
    ///     .bootstrap([(1, "127.0.0.1:5701"), (2, "127.0.0.1:5702"), (3, "127.0.0.1:5703")])
    ///     .start()
    ///     .await?;
    /// println!("{:?}", server.status());
    /// server.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(machine: S) -> ServerBuilder<Typed<S>> {
        ServerBuilder::raw(Typed(machine))
    }
}

impl<M: RawStateMachine + Send + 'static> Server<M> {
    /// This server's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The address of the HTTP endpoint (`/metrics`, `/health`, `/ready`),
    /// if [`ServerBuilder::http`] turned it on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The latest status.
    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    /// The status as it changes.
    pub fn watch_status(&self) -> Watch<Status> {
        Watch::new(self.status.clone())
    }

    /// Who leads, changing only when the leader or the term does.
    pub fn watch_leadership(&self) -> Watch<Leadership> {
        let mut status = self.status.clone();
        let (tx, rx) = watch::channel(status.borrow().leadership());
        tokio::spawn(async move {
            while status.changed().await.is_ok() {
                let now = status.borrow().leadership();
                tx.send_if_modified(|old| {
                    let changed = *old != now;
                    *old = now;
                    changed
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Watch::new(rx)
    }

    /// Wait until this server knows a leader, at most `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, AdminError> {
        let mut status = self.status.clone();
        let waited = tokio::time::timeout(timeout, status.wait_for(|s| s.leader.is_some()))
            .await
            .map(|r| r.map(|s| s.leader));
        match waited {
            Ok(Ok(leader)) => Ok(leader.expect("waited for a leader")),
            Ok(Err(_)) => Err(AdminError::Stopped),
            Err(_) => Err(AdminError::Timeout(timeout)),
        }
    }

    /// Run `f` on the server core between batches (for tests and tools).
    pub async fn inspect<R: Send + 'static>(
        &self,
        f: impl FnOnce(&ServerNode<M>) -> R + Send + 'static,
    ) -> Result<R, AdminError> {
        self.admin.inspect(f).await
    }

    /// How promptly the server's owner thread worked since the last call
    /// (or the start): its longest loop iteration, the longest gap between
    /// messages from the leader, the snapshots it took. The maxima restart
    /// from zero.
    pub async fn take_loop_stats(&self) -> Result<LoopStats, AdminError> {
        self.admin
            .call(|core| std::mem::take(&mut core.stats))
            .await
    }

    /// The cluster this server belongs to (recorded in its data directory).
    pub fn cluster_id(&self) -> u64 {
        self.cluster
    }

    /// Counters of the server's peer connections.
    pub fn net_stats(&self) -> NetCounters {
        self.net_stats.snapshot()
    }

    /// What the server reports to `copycat cluster status`: its state and
    /// the configuration it knows, with addresses.
    pub async fn server_status(&self) -> Result<ServerStatus, AdminError> {
        self.admin.server_status().await
    }

    /// Make `id` (reached at `address`) a voter: a new server joins as a
    /// learner and is promoted once caught up. Returns when it is a voter
    /// in a committed configuration. Only the leader takes it; a change in
    /// progress is waited for (membership changes go one at a time). The
    /// address is recorded in the configuration, so every member learns it.
    pub async fn add_voter(&self, id: u64, address: &str) -> Result<(), AdminError> {
        check_resolves(address).await?;
        self.admin
            .change(
                MembershipChange::AddVoter(NodeId(id)),
                Some(address.to_string()),
                Wait::Promoted,
            )
            .await
    }

    /// Add `id` (at `address`) as a passive member: replicated, not voting.
    pub async fn add_passive(&self, id: u64, address: &str) -> Result<(), AdminError> {
        check_resolves(address).await?;
        self.admin
            .change(
                MembershipChange::AddPassive(NodeId(id)),
                Some(address.to_string()),
                Wait::Committed,
            )
            .await
    }

    /// Add `id` (at `address`) as a reserve member: a standby that gets
    /// heartbeats only.
    pub async fn add_reserve(&self, id: u64, address: &str) -> Result<(), AdminError> {
        check_resolves(address).await?;
        self.admin
            .change(
                MembershipChange::AddReserve(NodeId(id)),
                Some(address.to_string()),
                Wait::Committed,
            )
            .await
    }

    /// Promote a passive or reserve member to voter (through learner, as
    /// for a new server); returns once it votes.
    pub async fn promote(&self, id: u64) -> Result<(), AdminError> {
        self.admin
            .change(MembershipChange::AddVoter(NodeId(id)), None, Wait::Promoted)
            .await
    }

    /// Demote a member to passive.
    pub async fn demote(&self, id: u64) -> Result<(), AdminError> {
        self.admin
            .change(
                MembershipChange::AddPassive(NodeId(id)),
                None,
                Wait::Committed,
            )
            .await
    }

    /// Remove a member.
    pub async fn remove(&self, id: u64) -> Result<(), AdminError> {
        self.admin
            .change(MembershipChange::Remove(NodeId(id)), None, Wait::Committed)
            .await
    }

    /// Hand leadership to `id` and wait until it leads.
    pub async fn transfer_leadership(&self, id: u64) -> Result<(), AdminError> {
        self.admin.transfer_leadership(id).await
    }

    /// Wait until the server stops by itself (a storage failure stops it);
    /// the error that stopped it. Pending forever while it runs; after it
    /// returned, [`shutdown`](Self::shutdown) no longer repeats the error.
    pub async fn stopped(&mut self) -> Result<(), ShellError> {
        match self.done.as_mut() {
            Some(done) => {
                let result = done.await.unwrap_or(Ok(()));
                self.done = None;
                result
            }
            None => std::future::pending().await,
        }
    }

    /// Stop gracefully: a leader first hands leadership to the most
    /// caught-up voter (waiting at most two election timeouts), then the
    /// server stops accepting, closes every connection and finishes the
    /// batch in hand. Returns the error that stopped the server earlier,
    /// if one did.
    pub async fn shutdown(mut self) -> Result<(), ShellError> {
        if let Some(target) = self.admin.best_successor().await {
            match self.transfer_leadership(target.0).await {
                Ok(()) => {
                    tracing::info!(id = ?self.id, to = ?target, "handed leadership over before stopping")
                }
                Err(error) => {
                    tracing::warn!(id = ?self.id, to = ?target, %error, "could not hand leadership over before stopping")
                }
            }
        }
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        match self.done.take() {
            Some(done) => done.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

async fn check_resolves(address: &str) -> Result<(), AdminError> {
    copycat_net::resolve(address)
        .await
        .map(|_| ())
        .map_err(|source| AdminError::Resolve {
            address: address.to_string(),
            source,
        })
}

impl<M> Drop for Server<M> {
    fn drop(&mut self) {
        // The ticker task tells the owner thread to stop; if the runtime is
        // gone, closing the channel does.
        let _ = self.stop.send(true);
        let _ = self.admin.inputs.try_send(Input::Stop);
    }
}
