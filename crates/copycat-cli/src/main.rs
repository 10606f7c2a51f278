//! `copycat`: run Copycat servers and talk to a cluster.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use copycat_cli::bench::{BenchOptions, Workload};
use copycat_cli::config::{LogFormat, Settings, Sources};
use copycat_cli::{kv, logging, start_server, ClientTlsArgs, CopycatServer, ServerSpec};
use copycat_client::{Client, ClientTls, Consistency};
use copycat_primitives::{Long, Map, Primitives};
use copycat_proto::{AdminRequest, MemberKind};
use serde_json::json;
use tokio::net::TcpListener;

mod primitives_cli;

/// Copycat: a Raft-based coordination service.
///
/// Try `copycat local` to start a three-server cluster on this machine, then
/// `copycat client --server 127.0.0.1:5700 add 5` in another terminal.
/// `copycat server` alone starts a single-server cluster on 127.0.0.1:5700.
#[derive(Parser, Debug)]
#[command(name = "copycat", version, about, long_about)]
struct Cli {
    /// Log debug messages (the same as --log-level debug).
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a whole cluster in this process on 127.0.0.1, until Ctrl-C.
    Local {
        /// How many servers.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Server N (from 1) listens on base-port + N - 1.
        #[arg(long, default_value_t = 5700)]
        base_port: u16,
        /// Server N keeps its data in DIR/node-N.
        #[arg(long, default_value = "./copycat-data")]
        data_dir: PathBuf,
        /// Do not fsync (UNSAFE: a power loss can lose acknowledged writes).
        #[arg(long)]
        no_fsync: bool,
        /// Serve /metrics, /health and /ready: server N on 127.0.0.1 at
        /// PORT + N - 1 (off when not given).
        #[arg(long, value_name = "PORT")]
        http_base_port: Option<u16>,
    },
    /// Run one server until SIGINT or SIGTERM (a second one exits at once).
    ///
    /// Every setting can come from a TOML file (--config), an environment
    /// variable (COPYCAT_ and the key in capitals, `-` as `_`) or a flag; a
    /// flag wins over the environment, which wins over the file. With no
    /// settings at all it is a single-server cluster on 127.0.0.1:5700 with
    /// its data in ./copycat-data. The reference is docs/operations.md.
    Server(Box<ServerArgs>),
    /// Talk to a cluster.
    Client {
        /// A server's address (HOST:PORT); repeat for each server (one is
        /// enough: servers name the others).
        #[arg(long = "server", required = true)]
        servers: Vec<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout_secs: u64,
        /// Print results as JSON objects (one a line).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        tls: ClientTlsArgs,
        #[command(subcommand)]
        op: ClientOp,
    },
    #[command(flatten)]
    Primitive(primitives_cli::PrimitiveCmd),
    /// Load a cluster with puts and gets and report throughput and latency.
    Bench(Box<BenchArgs>),
    /// Inspect and change the cluster's membership (through any member).
    Cluster {
        /// A member's address (HOST:PORT); changes are sent on to the leader.
        #[arg(long, default_value = "127.0.0.1:5700")]
        server: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        tls: ClientTlsArgs,
        #[command(subcommand)]
        op: ClusterOp,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterOp {
    /// Every member: id, address, role, state, term, commit and applied
    /// index, lag behind the most advanced member, and whether it answered.
    Status,
    /// The configuration: every member's id, address and role.
    Members,
    /// Add server ID reached at ADDR (a voter joins as a learner and is
    /// promoted once caught up). A new server usually joins by itself with
    /// `copycat server --join`; this is for adding it from outside.
    Add {
        /// The new server's id.
        id: u64,
        /// Where the cluster reaches it (HOST:PORT).
        address: String,
        /// voter, passive or reserve.
        #[arg(long = "as", default_value = "voter", value_parser = parse_kind)]
        kind: MemberKind,
    },
    /// Remove member ID (its process keeps running but takes no part).
    Remove {
        /// The member.
        id: u64,
    },
    /// Make member ID a voter (returns once it votes).
    Promote {
        /// The member.
        id: u64,
    },
    /// Make member ID a passive (or, with --to reserve, a reserve) member.
    Demote {
        /// The member.
        id: u64,
        /// passive or reserve.
        #[arg(long, default_value = "passive", value_parser = parse_kind)]
        to: MemberKind,
    },
    /// Hand leadership to voter ID (default: the most caught-up voter).
    TransferLeader {
        /// The voter to hand it to.
        id: Option<u64>,
    },
}

fn parse_kind(text: &str) -> std::result::Result<MemberKind, String> {
    match text {
        "voter" => Ok(MemberKind::Voter),
        "passive" => Ok(MemberKind::Passive),
        "reserve" => Ok(MemberKind::Reserve),
        other => Err(format!("expected voter, passive or reserve, got {other:?}")),
    }
}

async fn cluster_command(
    server: String,
    timeout_secs: u64,
    json: bool,
    tls: Option<ClientTls>,
    op: ClusterOp,
) -> Result<ExitCode> {
    use copycat_cli::cluster;
    let limit = Duration::from_secs(timeout_secs.max(1));
    let tls = tls.as_ref();
    let request = match op {
        ClusterOp::Status => {
            let rows = cluster::cluster_status(&server, limit, tls).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                print!("{}", cluster::status_table(&rows));
            }
            return Ok(ExitCode::SUCCESS);
        }
        ClusterOp::Members => {
            let status = cluster::status_of(&server, limit, tls).await?;
            if json {
                println!("{}", serde_json::to_string(&status.members)?);
            } else {
                print!("{}", cluster::members_table(&status.members));
            }
            return Ok(ExitCode::SUCCESS);
        }
        ClusterOp::Add { id, address, kind } => AdminRequest::Join { id, address, kind },
        ClusterOp::Remove { id } => AdminRequest::Remove { id },
        ClusterOp::Promote { id } => AdminRequest::SetKind {
            id,
            kind: MemberKind::Voter,
        },
        ClusterOp::Demote { id, to } => {
            if to == MemberKind::Voter {
                bail!("--to must be passive or reserve");
            }
            AdminRequest::SetKind { id, kind: to }
        }
        ClusterOp::TransferLeader { id } => AdminRequest::TransferLeadership { to: id },
    };
    cluster::expect_done(cluster::leader_call(&server, &request, limit, tls).await?)?;
    if json {
        println!("{{\"ok\":true}}");
    } else {
        println!("done");
    }
    Ok(ExitCode::SUCCESS)
}

/// The flags of `copycat server`; each is also a key of the file.
#[derive(Args, Debug)]
struct ServerArgs {
    /// Read settings from this TOML file (keys as the flags' names).
    /// [env: COPYCAT_CONFIG]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the settings in effect as a configuration file and exit.
    #[arg(long)]
    print_config: bool,
    /// This server's id: a positive number, unique in the cluster [default: 1] [env: COPYCAT_ID]
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// Address for peers and clients [default: 127.0.0.1:5700] [env: COPYCAT_LISTEN]
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Address peers and clients reach this server at, recorded in the
    /// cluster configuration (when it differs from --listen: a proxy, NAT
    /// or port forward in between; the member list must name this server
    /// at it) [default: the listen address] [env: COPYCAT_ADVERTISE]
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Address of /metrics, /health and /ready, or "off" [default: the listen host, port + 1000] [env: COPYCAT_HTTP_LISTEN]
    #[arg(long, value_name = "HOST:PORT")]
    http_listen: Option<String>,
    /// Data directory [default: ./copycat-data] [env: COPYCAT_DATA_DIR]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,
    /// An initial voter as ID=HOST:PORT; repeat for each (read only when the
    /// data directory is new; this server is added with its listen address)
    /// [default: this server alone] [env: COPYCAT_MEMBERS, as ID=ADDR,ID=ADDR]
    #[arg(long = "member", value_name = "ID=HOST:PORT")]
    members: Vec<String>,
    /// Join the running cluster of this member when the data directory is
    /// new (added as a learner, promoted once caught up) [default: none:
    /// bootstrap] [env: COPYCAT_JOIN]
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "members")]
    join: Option<String>,
    /// Sync the disk before acknowledging writes (false is UNSAFE: tests only) [default: true] [env: COPYCAT_FSYNC]
    #[arg(long, value_name = "BOOL")]
    fsync: Option<String>,
    /// The same as --fsync false.
    #[arg(long, conflicts_with = "fsync")]
    no_fsync: bool,
    /// Session timeout of clients that ask for the server's default [default: 5000] [env: COPYCAT_SESSION_TIMEOUT_MS]
    #[arg(long, value_name = "MS")]
    session_timeout_ms: Option<String>,
    /// Raft election timeout, at least 50 [default: 750] [env: COPYCAT_ELECTION_TIMEOUT_MS]
    #[arg(long, value_name = "MS")]
    election_timeout_ms: Option<String>,
    /// Leader heartbeat interval, at most half the election timeout [default: 150] [env: COPYCAT_HEARTBEAT_MS]
    #[arg(long, value_name = "MS")]
    heartbeat_ms: Option<String>,
    /// Take a snapshot after this many entries [default: 10000] [env: COPYCAT_SNAPSHOT_EVERY_ENTRIES]
    #[arg(long, value_name = "N")]
    snapshot_every_entries: Option<String>,
    /// Or after this many bytes of commands (KiB, MiB, GiB suffixes) [default: 64MiB] [env: COPYCAT_SNAPSHOT_EVERY_BYTES]
    #[arg(long, value_name = "BYTES")]
    snapshot_every_bytes: Option<String>,
    /// Connections (peers and clients) kept open at once [default: 1024] [env: COPYCAT_MAX_CONNECTIONS]
    #[arg(long, value_name = "N")]
    max_connections: Option<String>,
    /// trace, debug, info, warn, error, off, or a RUST_LOG-style filter; RUST_LOG, if set, wins over the file and COPYCAT_LOG_LEVEL [default: info] [env: COPYCAT_LOG_LEVEL]
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// text or json [default: text] [env: COPYCAT_LOG_FORMAT]
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// PEM file of this server's certificate chain: TLS on every peer and
    /// client connection (needs --tls-key and --tls-ca) [default: none, no
    /// TLS] [env: COPYCAT_TLS_CERT]
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<String>,
    /// PEM file of the private key of --tls-cert [default: none] [env: COPYCAT_TLS_KEY]
    #[arg(long, value_name = "FILE")]
    tls_key: Option<String>,
    /// PEM file of the CA bundle that peers' (and clients') certificates
    /// must chain to [default: none] [env: COPYCAT_TLS_CA]
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<String>,
    /// Require clients and admin calls to present a certificate signed by
    /// the CA too [default: false] [env: COPYCAT_TLS_CLIENT_AUTH]
    #[arg(long, value_name = "BOOL")]
    tls_client_auth: Option<String>,
}

#[derive(Subcommand, Debug)]
enum ClientOp {
    /// Add N to the counter and print the new value.
    Add {
        /// The amount (may be negative).
        #[arg(allow_hyphen_values = true)]
        n: i64,
    },
    /// Print the counter (a linearizable read).
    Get,
    /// Set KEY to VALUE (`-`: read it from stdin).
    Put {
        /// The key.
        key: String,
        /// The value, or `-` for stdin.
        #[arg(required_unless_present = "value_file")]
        value: Option<String>,
        /// Read the value from this file instead.
        #[arg(long, value_name = "FILE", conflicts_with = "value")]
        value_file: Option<PathBuf>,
    },
    /// Print the value of KEY (a linearizable read); exit code 1 if unset.
    Read {
        /// The key.
        key: String,
    },
    /// Remove KEY; exit code 1 if it was unset.
    Delete {
        /// The key.
        key: String,
    },
    /// Set KEY to NEW if its value is EXPECTED (or, with --absent, if it is
    /// unset); exit code 1 and the value it has if not.
    Cas {
        /// The key.
        key: String,
        /// EXPECTED NEW, or NEW alone with --absent (`-`: NEW from stdin).
        #[arg(num_args = 1..=2, required = true)]
        values: Vec<String>,
        /// Set KEY only if it is unset (create).
        #[arg(long)]
        absent: bool,
    },
    /// Print every change of KEY (or of every key, --all) as it happens.
    Watch {
        /// The key.
        #[arg(required_unless_present = "all")]
        key: Option<String>,
        /// Watch every key.
        #[arg(long, conflicts_with = "key")]
        all: bool,
        /// Exit after this many changes.
        #[arg(long)]
        count: Option<u64>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BenchWorkload {
    /// Writes to the map `kv`.
    Put,
    /// Reads of the map `kv`.
    Get,
    /// Reads (--read-ratio) and writes of the map `kv`.
    Mixed,
    /// Acquire-and-release cycles of the lock `bench-lock`, every session
    /// contending (--concurrency 1).
    Lock,
    /// Increments of the long `bench-counter`.
    Counter,
    /// Offer-and-poll pairs on the queue `bench-queue`.
    Queue,
    /// Nothing but keep-alives for --duration: what idle sessions cost
    /// (log entries per second, this process's wake-ups per second).
    Idle,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ConsistencyArg {
    Linearizable,
    Lease,
    Sequential,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// A server's address; repeat for each (one is enough).
    #[arg(long = "server", default_value = "127.0.0.1:5700")]
    servers: Vec<String>,
    /// What to send.
    #[arg(value_enum, default_value = "put")]
    workload: BenchWorkload,
    /// Sessions (clients).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Sets of connections the sessions share, round robin, each one
    /// connection to every server; 0 gives each session its own.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Requests in flight per session.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Key size in bytes (numbers padded with zeros).
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 64)]
    value_size: usize,
    /// Keys are drawn from this many.
    #[arg(long, default_value_t = 10_000)]
    key_space: u64,
    /// Keys in order instead of at random.
    #[arg(long)]
    sequential: bool,
    /// Stop after this many requests [default: 10000 unless --duration].
    #[arg(long)]
    total: Option<u64>,
    /// Or after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Share of reads in the mixed workload.
    #[arg(long, default_value_t = 0.5)]
    read_ratio: f64,
    /// Consistency of reads.
    #[arg(long, value_enum, default_value = "linearizable")]
    consistency: ConsistencyArg,
    /// Give up on a request after this many seconds.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

fn warn_no_fsync() {
    eprintln!("WARNING: fsync is off: writes are NOT synced to disk. A power loss or OS crash");
    eprintln!("WARNING: can lose acknowledged writes and break Raft's guarantees. Tests only!");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Expected failures print their message and causes, never a backtrace.
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The environment variable that names a bug to plant (test builds only).
const PLANTED_BUG_VAR: &str = "COPYCAT_PLANTED_BUG";

/// The bug `COPYCAT_PLANTED_BUG` names, checked before the server starts.
/// A build with the `planted-bugs` feature returns it (an unknown name is an
/// error listing the valid ones); a build without refuses any value, so a
/// test harness never runs the unbugged code believing a bug is planted.
#[cfg(feature = "planted-bugs")]
fn planted_bug_from_env() -> Result<Option<copycat_planted::PlantedBug>> {
    use copycat_planted::PlantedBug;
    let Some(value) = std::env::var_os(PLANTED_BUG_VAR) else {
        return Ok(None);
    };
    let name = value
        .to_str()
        .ok_or_else(|| anyhow!("{PLANTED_BUG_VAR} is not valid UTF-8"))?;
    match PlantedBug::from_name(name) {
        Some(bug) => Ok(Some(bug)),
        None => {
            let names: Vec<&str> = PlantedBug::ALL.iter().map(|b| b.name()).collect();
            bail!(
                "{PLANTED_BUG_VAR}={name:?} is not a planted bug; valid names: {}",
                names.join(", ")
            )
        }
    }
}

#[cfg(not(feature = "planted-bugs"))]
fn planted_bug_from_env() -> Result<Option<std::convert::Infallible>> {
    if std::env::var_os(PLANTED_BUG_VAR).is_some() {
        bail!(
            "{PLANTED_BUG_VAR} is set, but this copycat binary has no planted-bug switches \
             (build it with `--features planted-bugs`, for tests only)"
        );
    }
    Ok(None)
}

/// Switch the bug from [`planted_bug_from_env`] on for the whole process
/// (the server runs on many threads) and say so loudly. Call after logging
/// is set up and before any server starts.
#[cfg(feature = "planted-bugs")]
fn plant_bug(bug: Option<copycat_planted::PlantedBug>) {
    if let Some(bug) = bug {
        copycat_planted::plant_process(Some(bug));
        tracing::warn!("planted bug {} is active (test build)", bug.name());
    }
}

#[cfg(not(feature = "planted-bugs"))]
fn plant_bug(bug: Option<std::convert::Infallible>) {
    if let Some(never) = bug {
        match never {}
    }
}

fn init_logging(verbose: bool, default: &str) -> Result<()> {
    let level = if verbose { "debug" } else { default };
    logging::init(level, verbose, LogFormat::Text).map_err(|e| anyhow!(e))
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::Local {
            nodes,
            base_port,
            data_dir,
            no_fsync,
            http_base_port,
        } => {
            let bug = planted_bug_from_env()?;
            init_logging(cli.verbose, "info")?;
            plant_bug(bug);
            local(nodes, base_port, data_dir, no_fsync, http_base_port).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Server(args) => server(*args, cli.verbose).await,
        Cmd::Client {
            servers,
            timeout_secs,
            json,
            tls,
            op,
        } => {
            init_logging(cli.verbose, "warn")?;
            let tls = tls.load()?;
            client(servers, timeout_secs, json, tls, op).await
        }
        Cmd::Primitive(cmd) => {
            init_logging(cli.verbose, "warn")?;
            primitives_cli::run(cmd).await
        }
        Cmd::Bench(args) => {
            init_logging(cli.verbose, "warn")?;
            bench(*args).await
        }
        Cmd::Cluster {
            server,
            timeout_secs,
            json,
            tls,
            op,
        } => {
            init_logging(cli.verbose, "warn")?;
            let tls = tls.load()?;
            cluster_command(server, timeout_secs, json, tls, op).await
        }
    }
}

/// The settings of `copycat server` from its flags, the environment and
/// the file.
fn settings(args: &ServerArgs, verbose: bool) -> Result<(Settings, bool)> {
    let mut sources = Sources::default();
    let config = args
        .config
        .clone()
        .or_else(|| std::env::var_os("COPYCAT_CONFIG").map(PathBuf::from));
    if let Some(path) = &config {
        sources.read_file(path)?;
    }
    sources.read_env(std::env::vars());
    let flags = [
        ("id", &args.id),
        ("listen", &args.listen),
        ("advertise", &args.advertise),
        ("http-listen", &args.http_listen),
        ("data-dir", &args.data_dir),
        ("fsync", &args.fsync),
        ("join", &args.join),
        ("session-timeout-ms", &args.session_timeout_ms),
        ("election-timeout-ms", &args.election_timeout_ms),
        ("heartbeat-ms", &args.heartbeat_ms),
        ("snapshot-every-entries", &args.snapshot_every_entries),
        ("snapshot-every-bytes", &args.snapshot_every_bytes),
        ("max-connections", &args.max_connections),
        ("log-level", &args.log_level),
        ("log-format", &args.log_format),
        ("tls-cert", &args.tls_cert),
        ("tls-key", &args.tls_key),
        ("tls-ca", &args.tls_ca),
        ("tls-client-auth", &args.tls_client_auth),
    ];
    for (key, value) in flags {
        if let Some(value) = value {
            sources.flags.insert(key.to_string(), value.clone());
        }
    }
    if !args.members.is_empty() {
        sources
            .flags
            .insert("members".to_string(), args.members.join(","));
    }
    if args.no_fsync {
        sources
            .flags
            .insert("fsync".to_string(), "false".to_string());
    }
    let explicit = verbose || args.log_level.is_some();
    if verbose {
        sources
            .flags
            .insert("log-level".to_string(), "debug".to_string());
    }
    Ok((sources.settings()?, explicit))
}

async fn bind(address: &str, what: &str) -> Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} ({what})"))
}

async fn server(args: ServerArgs, verbose: bool) -> Result<ExitCode> {
    let (settings, explicit) = settings(&args, verbose)?;
    if args.print_config {
        print!("{}", settings.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    let bug = planted_bug_from_env()?;
    logging::init(&settings.log_level, explicit, settings.log_format).map_err(|e| anyhow!(e))?;
    plant_bug(bug);
    if !settings.fsync {
        warn_no_fsync();
    }
    // Bad TLS files stop the start, naming the key and the file.
    let tls = match &settings.tls {
        Some(files) => Some(copycat_cli::server_tls(files).map_err(|e| anyhow!("{e}"))?),
        None => None,
    };
    let listener = bind(&settings.listen, "listen").await?;
    let local = listener.local_addr()?;
    let http = match &settings.http_listen {
        Some(address) => Some(bind(address, "http-listen").await?),
        None => None,
    };
    let mut members = BTreeMap::new();
    for (id, address) in &settings.members {
        let addr = copycat_net::resolve(address)
            .await
            .with_context(|| format!("members: cannot resolve {address}"))?;
        members.insert(*id, addr[0]);
    }
    if settings.join.is_none() && !members.contains_key(&settings.id) {
        let own = match &settings.advertise {
            Some(address) => copycat_net::resolve(address)
                .await
                .with_context(|| format!("advertise: cannot resolve {address}"))?[0],
            None => local,
        };
        members.insert(settings.id, own);
    }
    let mut spec = ServerSpec::new(
        settings.id,
        members,
        settings.data_dir.clone(),
        settings.fsync,
    );
    spec.snapshot_every_entries = settings.snapshot_every_entries;
    spec.snapshot_every_bytes = settings.snapshot_every_bytes;
    spec.election_timeout_ms = settings.election_timeout_ms;
    spec.heartbeat_ms = settings.heartbeat_ms;
    spec.session_timeout_ms = settings.session_timeout_ms;
    spec.max_connections = settings.max_connections;
    spec.http = http;
    spec.join = settings.join.clone();
    spec.advertise = settings.advertise.clone();
    spec.tls = tls;
    let server = start_server(spec, listener).await?;
    println!(
        "server {} listening on {}",
        settings.id,
        server.local_addr()
    );
    if let Some(http) = server.http_addr() {
        println!("server {} http on {http}", settings.id);
    }
    run_until_signal(vec![server]).await?;
    Ok(ExitCode::SUCCESS)
}

/// Read a value given as text, `-` (stdin) or a file.
fn value(text: Option<String>, file: Option<&Path>) -> Result<String> {
    if let Some(path) = file {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        return String::from_utf8(bytes)
            .map_err(|_| anyhow!("{} is not UTF-8 text", path.display()));
    }
    match text.as_deref() {
        Some("-") => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read standard input")?;
            String::from_utf8(bytes).map_err(|_| anyhow!("standard input is not UTF-8 text"))
        }
        Some(text) => Ok(text.to_string()),
        None => bail!("no value given"),
    }
}

async fn client(
    servers: Vec<String>,
    timeout_secs: u64,
    json: bool,
    tls: Option<ClientTls>,
    op: ClientOp,
) -> Result<ExitCode> {
    let timeout = Duration::from_secs(timeout_secs.max(1));
    // The errors name their cause (connection refused at ADDR, not a
    // Copycat server, no leader known since T, a failed TLS handshake,
    // the resource's error).
    let mut builder = Client::builder().servers(servers).request_timeout(timeout);
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    let client = builder
        .connect()
        .await
        .map_err(|e| anyhow!("cannot open a session: {e}"))?;
    let primitives = Primitives::new(client.clone());
    let code = client_op(&primitives, json, op).await;
    drop(primitives);
    client.close().await;
    code
}

fn print_json(value: serde_json::Value) {
    println!("{value}");
}

fn failed(message: String) -> Result<ExitCode> {
    eprintln!("error: {message}");
    Ok(ExitCode::FAILURE)
}

/// `copycat client`: the counter is the long [`kv::COUNTER`], the keys are
/// those of the map [`kv::KV_MAP`].
async fn client_op(p: &Primitives, json: bool, op: ClientOp) -> Result<ExitCode> {
    let fail = |e: copycat_primitives::Error| failed(kv::describe(&e));
    match op {
        ClientOp::Add { n } => {
            let counter = match Long::open(p, kv::COUNTER).await {
                Ok(counter) => counter,
                Err(e) => return fail(e),
            };
            match counter.add_and_get(n).await {
                Ok(v) => print_value(json, v),
                Err(e) => fail(e),
            }
        }
        ClientOp::Get => {
            let counter = match Long::open(p, kv::COUNTER).await {
                Ok(counter) => counter,
                Err(e) => return fail(e),
            };
            match counter.get().await {
                Ok(v) => print_value(json, v),
                Err(e) => fail(e),
            }
        }
        op => {
            let map = match Map::<String, String>::open(p, kv::KV_MAP).await {
                Ok(map) => map,
                Err(e) => return fail(e),
            };
            map_op(&map, json, op).await
        }
    }
}

async fn map_op(map: &Map<String, String>, json: bool, op: ClientOp) -> Result<ExitCode> {
    let fail = |e: copycat_primitives::Error| failed(kv::describe(&e));
    match op {
        ClientOp::Add { .. } | ClientOp::Get => unreachable!("counter commands"),
        ClientOp::Put {
            key,
            value: text,
            value_file,
        } => {
            let value = value(text, value_file.as_deref())?;
            match map.put(&key, &value).await {
                Ok(previous) => {
                    if json {
                        print_json(json!({"key": key, "previous": previous}));
                    } else {
                        println!("OK");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => fail(e),
            }
        }
        ClientOp::Read { key } => match map.get(&key).await {
            Ok(Some(value)) => {
                if json {
                    print_json(json!({"key": key, "value": value}));
                } else {
                    println!("{value}");
                }
                Ok(ExitCode::SUCCESS)
            }
            Ok(None) => {
                if json {
                    print_json(json!({"key": key, "value": null}));
                }
                failed(format!("key {key:?} not found"))
            }
            Err(e) => fail(e),
        },
        ClientOp::Delete { key } => match map.remove(&key).await {
            Ok(Some(previous)) => {
                if json {
                    print_json(json!({"key": key, "deleted": true, "previous": previous}));
                } else {
                    println!("deleted");
                }
                Ok(ExitCode::SUCCESS)
            }
            Ok(None) => {
                if json {
                    print_json(json!({"key": key, "deleted": false}));
                }
                failed(format!("key {key:?} not found"))
            }
            Err(e) => fail(e),
        },
        ClientOp::Cas {
            key,
            mut values,
            absent,
        } => {
            let (expected, new) = match (absent, values.len()) {
                (true, 1) => (None, values.remove(0)),
                (false, 2) => {
                    let new = values.remove(1);
                    (Some(values.remove(0)), new)
                }
                (true, _) => bail!("cas --absent takes KEY NEW"),
                (false, _) => bail!("cas takes KEY EXPECTED NEW (or --absent KEY NEW)"),
            };
            let new = value(Some(new), None)?;
            // The swap is one atomic command; the value a failed
            // replace_if names is read after it (put_if_absent answers it).
            let outcome = match &expected {
                None => map
                    .put_if_absent(&key, &new)
                    .await
                    .map(|found| match found {
                        None => Ok(None),
                        Some(found) => Err(Some(found)),
                    }),
                Some(expected) => match map.replace_if(&key, expected, &new).await {
                    Ok(true) => Ok(Ok(Some(expected.clone()))),
                    Ok(false) => map.get(&key).await.map(Err),
                    Err(e) => Err(e),
                },
            };
            match outcome {
                Ok(Ok(previous)) => {
                    if json {
                        print_json(json!({"key": key, "swapped": true, "previous": previous}));
                    } else {
                        println!("OK");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Ok(Err(found)) => {
                    let message = kv::cas_failure(&key, expected.as_deref(), found.as_deref());
                    if json {
                        print_json(json!({"key": key, "swapped": false, "error": message}));
                    }
                    failed(message)
                }
                Err(e) => {
                    let message = kv::describe(&e);
                    if json {
                        print_json(json!({"key": key, "swapped": false, "error": message}));
                    }
                    failed(message)
                }
            }
        }
        ClientOp::Watch { key, all: _, count } => {
            let subscription = match &key {
                Some(key) => map.listen_key(key).await,
                None => map.listen().await,
            };
            let mut changes = match subscription {
                Ok(changes) => changes,
                Err(e) => return fail(e),
            };
            match &key {
                Some(key) => eprintln!("watching {key:?}"),
                None => eprintln!("watching every key"),
            }
            let mut seen = 0;
            while count.is_none_or(|count| seen < count) {
                let change = tokio::select! {
                    change = changes.next() => change,
                    _ = tokio::signal::ctrl_c() => break,
                };
                let change = match change {
                    Some(Ok(change)) => change,
                    Some(Err(e)) => return fail(e),
                    None => bail!("the session ended (or the map was deleted)"),
                };
                let kind = match change.new {
                    Some(_) => "put",
                    None => "delete",
                };
                if json {
                    print_json(json!({
                        "event": kind,
                        "key": change.key,
                        "value": change.new,
                        "previous": change.old,
                    }));
                } else {
                    match &change.new {
                        Some(value) => println!("put {:?} {:?}", change.key, value),
                        None => println!("delete {:?}", change.key),
                    }
                }
                seen += 1;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_value(json: bool, value: i64) -> Result<ExitCode> {
    if json {
        print_json(json!({ "value": value }));
    } else {
        println!("{value}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn bench(args: BenchArgs) -> Result<ExitCode> {
    let workload = match args.workload {
        BenchWorkload::Put => Workload::Put,
        BenchWorkload::Get => Workload::Get,
        BenchWorkload::Mixed => Workload::Mixed(args.read_ratio),
        BenchWorkload::Lock => Workload::Lock,
        BenchWorkload::Counter => Workload::Counter,
        BenchWorkload::Queue => Workload::Queue,
        BenchWorkload::Idle => Workload::Idle,
    };
    let consistency = match args.consistency {
        ConsistencyArg::Linearizable => Consistency::Linearizable,
        ConsistencyArg::Lease => Consistency::LinearizableLease,
        ConsistencyArg::Sequential => Consistency::Sequential,
    };
    let duration = match args.duration {
        Some(secs) if !(secs > 0.0 && secs.is_finite()) => bail!("--duration must be positive"),
        Some(secs) => Some(Duration::from_secs_f64(secs)),
        None => None,
    };
    let total = match (args.total, duration) {
        (None, None) => Some(10_000),
        (total, _) => total,
    };
    let report = copycat_cli::bench::run(BenchOptions {
        servers: args.servers,
        workload,
        clients: args.clients,
        connections: args.connections,
        concurrency: args.concurrency,
        key_size: args.key_size,
        value_size: args.value_size,
        key_space: args.key_space,
        sequential: args.sequential,
        total,
        duration,
        consistency,
        request_timeout: Duration::from_secs(args.timeout_secs.max(1)),
        progress: !args.json,
        tls: args.tls.load()?,
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.text());
    }
    Ok(if report.requests == 0 && report.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn local(
    nodes: u64,
    base_port: u16,
    data_dir: PathBuf,
    no_fsync: bool,
    http_base_port: Option<u16>,
) -> Result<()> {
    if nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if no_fsync {
        warn_no_fsync();
    }
    // Server `id` (from 1) at `base + id - 1` on 127.0.0.1.
    let local_addr = |base: u16, id: u64| -> Result<SocketAddr> {
        let port = u64::from(base) + id - 1;
        let port = u16::try_from(port).map_err(|_| anyhow!("port {port} out of range"))?;
        Ok(SocketAddr::from(([127, 0, 0, 1], port)))
    };
    let members: BTreeMap<u64, SocketAddr> = (1..=nodes)
        .map(|id| Ok((id, local_addr(base_port, id)?)))
        .collect::<Result<_>>()?;
    let mut servers = Vec::new();
    for (id, addr) in &members {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let mut spec = ServerSpec::new(
            *id,
            members.clone(),
            data_dir.join(format!("node-{id}")),
            !no_fsync,
        );
        if let Some(base) = http_base_port {
            let http = local_addr(base, *id)?;
            spec.http = Some(
                TcpListener::bind(http)
                    .await
                    .with_context(|| format!("cannot serve HTTP on {http}"))?,
            );
        }
        let server = start_server(spec, listener).await?;
        match server.http_addr() {
            Some(http) => println!(
                "server {id} listening on {}, metrics at http://{http}/metrics",
                server.local_addr()
            ),
            None => println!("server {id} listening on {}", server.local_addr()),
        }
        servers.push(server);
    }
    let addresses: Vec<String> = members.values().map(|a| format!("--server {a}")).collect();
    println!("try: copycat client {} add 1", addresses.join(" "));
    let watches: Vec<_> = servers.iter().map(|s| s.watch_status()).collect();
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let leader = watches.iter().find_map(|w| {
                let status = w.get();
                (status.role == copycat_raft::Role::Leader).then_some((status.id, status.term))
            });
            if let Some((id, term)) = leader.filter(|_| leader != last) {
                println!("leader: server {} ({:?})", id.0, term);
                last = leader;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if watches.iter().all(|w| w.is_stopped()) {
                return;
            }
        }
    });
    run_until_signal(servers).await
}

/// Wait for SIGINT or SIGTERM, then stop the servers gracefully (a leader
/// hands leadership over first); a second signal exits at once.
async fn run_until_signal(servers: Vec<CopycatServer>) -> Result<()> {
    if servers.is_empty() {
        bail!("no server to run");
    }
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    #[cfg(unix)]
    let term = async { terminate.recv().await };
    #[cfg(not(unix))]
    let term = std::future::pending::<Option<()>>();
    let mut servers = servers;
    let signal = {
        // A server that stops by itself (its storage failed) ends the
        // process with its error, instead of leaving it half alive.
        let stopped = futures_util::future::select_all(
            servers
                .iter_mut()
                .map(|server| Box::pin(async { (server.id(), server.stopped().await) })),
        );
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term => "SIGTERM",
            ((id, result), _, _) = stopped => {
                return match result {
                    Ok(()) => Err(anyhow!("server {} stopped by itself", id.0)),
                    Err(error) => Err(anyhow::Error::new(error).context(format!("server {} stopped", id.0))),
                };
            }
        }
    };
    println!("shutting down");
    tracing::info!(
        signal,
        "shutting down gracefully; a second signal exits at once"
    );
    let shutdown = async {
        for server in servers {
            server.shutdown().await?;
        }
        Ok::<_, copycat_replica::shell::ShellError>(())
    };
    #[cfg(unix)]
    let second_term = async { terminate.recv().await };
    #[cfg(not(unix))]
    let second_term = std::future::pending::<Option<()>>();
    tokio::select! {
        result = shutdown => {
            result.context("the server stopped with an error")?;
            tracing::info!("stopped");
            Ok(())
        }
        _ = tokio::signal::ctrl_c() => exit_now("SIGINT"),
        _ = second_term => exit_now("SIGTERM"),
    }
}

fn exit_now(signal: &str) -> ! {
    eprintln!("second signal ({signal}): exiting at once");
    std::process::exit(1)
}
