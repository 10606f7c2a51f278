//! `copycat`: run Copycat servers and talk to a cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use copycat_cli::machine::{Command, Kv, Output, Query};
use copycat_cli::{start_server, KvServer, ServerSpec};
use copycat_client::Client;
use tokio::net::TcpListener;

/// Copycat: a Raft-based coordination service.
///
/// Try `copycat local` to start a three-server cluster on this machine, then
/// `copycat client --server 127.0.0.1:5700 add 5` in another terminal.
#[derive(Parser, Debug)]
#[command(name = "copycat", version, about, long_about)]
struct Cli {
    /// Log debug messages.
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
    },
    /// Run one server, until Ctrl-C.
    Server {
        /// This server's id (a positive number, unique in the cluster).
        #[arg(long)]
        id: u64,
        /// Address to listen on for peers and clients.
        #[arg(long)]
        listen: SocketAddr,
        /// A member of the cluster as ID=ADDR; repeat for each other member
        /// (this server is added with its --listen address).
        #[arg(long = "member", value_parser = parse_member)]
        members: Vec<(u64, SocketAddr)>,
        /// Data directory [default: ./copycat-data/node-ID].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Do not fsync (UNSAFE: a power loss can lose acknowledged writes).
        #[arg(long)]
        no_fsync: bool,
    },
    /// Talk to a cluster.
    Client {
        /// A server's address (HOST:PORT); repeat for each server (one is
        /// enough: servers name the others).
        #[arg(long = "server", required = true)]
        servers: Vec<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout_secs: u64,
        #[command(subcommand)]
        op: ClientOp,
    },
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
    /// Set KEY to VALUE.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Print the value of KEY (a linearizable read).
    Read {
        /// The key.
        key: String,
    },
}

fn parse_member(text: &str) -> Result<(u64, SocketAddr), String> {
    let (id, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("expected ID=ADDR, got {text:?}"))?;
    let id = id.parse().map_err(|e| format!("bad id {id:?}: {e}"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?;
    Ok((id, addr))
}

fn warn_no_fsync() {
    eprintln!("WARNING: --no-fsync: writes are NOT synced to disk. A power loss or OS crash");
    eprintln!("WARNING: can lose acknowledged writes and break Raft's guarantees. Tests only!");
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Expected failures print their message and causes, never a backtrace.
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let level = if cli.verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::WARN
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Cmd::Local {
            nodes,
            base_port,
            data_dir,
            no_fsync,
        } => local(nodes, base_port, data_dir, no_fsync).await,
        Cmd::Server {
            id,
            listen,
            members,
            data_dir,
            no_fsync,
        } => {
            if id == 0 {
                bail!("--id must be positive");
            }
            if no_fsync {
                warn_no_fsync();
            }
            let mut all: BTreeMap<u64, SocketAddr> = members.into_iter().collect();
            all.insert(id, listen);
            let data_dir =
                data_dir.unwrap_or_else(|| PathBuf::from(format!("./copycat-data/node-{id}")));
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let spec = ServerSpec::new(id, all, data_dir, !no_fsync);
            let server = start_server(spec, listener).await?;
            println!("server {id} listening on {}", server.local_addr());
            run_until_ctrl_c(vec![server]).await
        }
        Cmd::Client {
            servers,
            timeout_secs,
            op,
        } => client(servers, timeout_secs, op).await,
    }
}

async fn client(servers: Vec<String>, timeout_secs: u64, op: ClientOp) -> Result<()> {
    let timeout = Duration::from_secs(timeout_secs.max(1));
    // The errors name their cause (connection refused at ADDR, not a
    // Copycat server, no leader known since T, the state machine's error).
    let client = Client::builder()
        .servers(servers)
        .request_timeout(timeout)
        .ignore_events()
        .connect()
        .await
        .map_err(|e| anyhow!("cannot open a session: {e}"))?;
    let kv = client.machine::<Kv>();
    let result = match op {
        ClientOp::Add { n } => kv.command(Command::Add(n)).await,
        ClientOp::Put { key, value } => kv.command(Command::Put(key, value)).await,
        ClientOp::Get => kv.query(Query::Get).await,
        ClientOp::Read { key } => kv.query(Query::GetKey(key)).await,
    };
    client.close().await;
    print_output(result.map_err(|e| anyhow!("{e}"))?);
    Ok(())
}

fn print_output(output: Output) {
    match output {
        Output::Value(v) => println!("{v}"),
        Output::Text(Some(t)) => println!("{t}"),
        Output::Text(None) => println!("(unset)"),
    }
}

async fn local(nodes: u64, base_port: u16, data_dir: PathBuf, no_fsync: bool) -> Result<()> {
    if nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if no_fsync {
        warn_no_fsync();
    }
    let members: BTreeMap<u64, SocketAddr> = (1..=nodes)
        .map(|id| {
            let port = u64::from(base_port) + id - 1;
            let port = u16::try_from(port).map_err(|_| anyhow!("port {port} out of range"))?;
            Ok((id, SocketAddr::from(([127, 0, 0, 1], port))))
        })
        .collect::<Result<_>>()?;
    let mut servers = Vec::new();
    for (id, addr) in &members {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let spec = ServerSpec::new(
            *id,
            members.clone(),
            data_dir.join(format!("node-{id}")),
            !no_fsync,
        );
        let server = start_server(spec, listener).await?;
        println!("server {id} listening on {}", server.local_addr());
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
    run_until_ctrl_c(servers).await
}

async fn run_until_ctrl_c(servers: Vec<KvServer>) -> Result<()> {
    tokio::signal::ctrl_c().await?;
    println!("shutting down");
    for server in servers {
        server.shutdown().await?;
    }
    Ok(())
}
