//! `copycat-chaos`: fault injection against real copycat servers.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use copycat_chaos::cluster::ClusterSpec;
use copycat_chaos::nemesis::Nemesis;
use copycat_chaos::net::{self, Mode, Namespace};
use copycat_chaos::runner::{self, nemesis_label, RunSpec};
use copycat_chaos::workloads::{self, Workload};

/// Jepsen-style tests of real copycat server processes.
///
/// Starts a cluster of `copycat server` processes in a network namespace of
/// its own (as root; otherwise on the host loopback, with partitions made
/// by its TCP proxy), every peer connection through a fault-injecting TCP
/// proxy, runs each workload while the nemeses strike, heals, checks,
/// and prints a report per run and `N passed, N failed` at the end. Each
/// run's history, report, latency plot and server logs stay in its
/// directory under --dir.
///
/// Example: copycat-chaos --nodes 3 --time 60 --nemesis all --workload register
#[derive(Parser, Debug)]
#[command(name = "copycat-chaos", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// (internal) A client process of the session-expiry workload.
    #[command(hide = true)]
    Worker {
        #[arg(long, value_delimiter = ',')]
        servers: Vec<String>,
        #[arg(long)]
        session_timeout_ms: u64,
        #[arg(long)]
        lock: String,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Servers in the cluster (3 or 5 are usual).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Seconds of faults and load per run (the heal and checks come after).
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// Faults to inject, comma-separated: all, none, partition (every
    /// partition and loss), link (every proxy fault on live links), or
    /// names: partition-one, partition-leader, partition-halves, bridge,
    /// ring, one-way-loss, kill, pause, power-loss, clock, membership,
    /// disk-full, delay, duplicate, reorder, reset. Repeat the flag to run
    /// each set in turn.
    #[arg(long, default_value = "all")]
    nemesis: Vec<String>,
    /// Workloads, comma-separated: all, or register, set, counter, queue,
    /// lock, session-expiry, events. Every workload runs under every
    /// nemesis set.
    #[arg(long, default_value = "register")]
    workload: String,
    /// Concurrent clients, each with its own session.
    #[arg(long, default_value_t = 5)]
    clients: usize,
    /// Seed of the harness's random choices (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Where the runs' directories go.
    #[arg(long, default_value = "./chaos-runs")]
    dir: PathBuf,
    /// The copycat binary to test (default: $COPYCAT_BIN, else `copycat`
    /// beside this program, built first when run through cargo).
    #[arg(long)]
    copycat: Option<PathBuf>,
    /// Switch this planted bug on in every server (needs a copycat built
    /// with --features planted-bugs).
    #[arg(long)]
    planted_bug: Option<String>,
    /// Succeed only if some check fails (to show a planted bug is caught).
    #[arg(long)]
    expect_failure: bool,
    /// Do not create a network namespace: run on the host loopback, the TCP
    /// proxy making the partitions too.
    #[arg(long)]
    no_netns: bool,
    /// Raft election timeout of the servers.
    #[arg(long, default_value_t = 400)]
    election_timeout_ms: u64,
    /// Heartbeat interval of the servers.
    #[arg(long, default_value_t = 80)]
    heartbeat_ms: u64,
    /// Session timeout of the clients.
    #[arg(long, default_value_t = 3000)]
    session_timeout_ms: u64,
    /// After the heal, the cluster must serve a command within this many
    /// seconds.
    #[arg(long, default_value_t = 30)]
    recovery_bound_secs: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Sub::Worker {
        servers,
        session_timeout_ms,
        lock,
    }) = cli.command
    {
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        return match runtime.block_on(workloads::worker_main(
            servers,
            Duration::from_millis(session_timeout_ms),
            lock,
        )) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("worker: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    match outer(cli.run) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("copycat-chaos: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Enter a network namespace (re-executing this program inside it), or run
/// here.
fn outer(args: RunArgs) -> Result<ExitCode> {
    if args.no_netns {
        return inside(args, Mode::Host);
    }
    if let Ok(name) = std::env::var(net::INSIDE_VAR) {
        let mode = if net::iptables_works() {
            Mode::Netns
        } else {
            eprintln!(
                "iptables does not work in namespace {name}: the TCP proxy makes the partitions"
            );
            Mode::Host
        };
        return inside(args, mode);
    }
    let name = format!("copycat-chaos-{}", std::process::id());
    match Namespace::create(&name) {
        Ok(namespace) => {
            let exe = std::env::current_exe().context("finding this program")?;
            // Resolve the binary out here, where cargo may build it.
            let copycat = find_copycat(args.copycat.as_deref(), args.planted_bug.is_some())?;
            let forwarded: Vec<String> = std::env::args().skip(1).collect();
            let status = Command::new("ip")
                .args(["netns", "exec", &namespace.name])
                .arg(exe)
                .args(forwarded)
                .env(net::INSIDE_VAR, &namespace.name)
                .env("COPYCAT_BIN", &copycat)
                .status()
                .context("running inside the namespace")?;
            drop(namespace);
            Ok(ExitCode::from(
                status.code().unwrap_or(2).clamp(0, 255) as u8
            ))
        }
        Err(error) => {
            eprintln!(
                "no network namespace ({error:#}): running on the host loopback; the TCP proxy makes the partitions"
            );
            inside(args, Mode::Host)
        }
    }
}

fn inside(args: RunArgs, mode: Mode) -> Result<ExitCode> {
    let copycat = find_copycat(args.copycat.as_deref(), args.planted_bug.is_some())?;
    if args.nodes == 0 || args.nodes > 9 {
        bail!("--nodes must be 1 to 9, not {}", args.nodes);
    }
    let workloads = Workload::parse_list(&args.workload)?;
    let mut nemesis_sets = Vec::new();
    for text in &args.nemesis {
        nemesis_sets.push(Nemesis::parse_list(text)?);
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let faketime = find_faketime();
    if faketime.is_none() && nemesis_sets.iter().flatten().any(|n| *n == Nemesis::Clock) {
        eprintln!("libfaketime not found (Debian package faketime): clock faults are skipped");
    }
    let exe = std::env::current_exe().context("finding this program")?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut passed = 0;
    let mut failed = 0;
    let mut summary = Vec::new();
    let mut n = 0u64;
    let mut interrupted = false;
    'runs: for workload in &workloads {
        for nemeses in &nemesis_sets {
            n += 1;
            let run_seed = seed.wrapping_add(n);
            let label = nemesis_label(nemeses).replace(' ', "-");
            let dir = args.dir.join(format!("{stamp}-{n:02}-{workload}-{label}"));
            let spec = RunSpec {
                workload: *workload,
                nemeses: nemeses.clone(),
                time: Duration::from_secs(args.time),
                clients: args.clients,
                cluster: ClusterSpec {
                    binary: copycat.clone(),
                    nodes: args.nodes,
                    dir: dir.clone(),
                    election_timeout_ms: args.election_timeout_ms,
                    heartbeat_ms: args.heartbeat_ms,
                    session_timeout_ms: args.session_timeout_ms,
                    planted_bug: args.planted_bug.clone(),
                    faketime: faketime.clone(),
                    snapshot_every_entries: 2_000,
                },
                mode,
                seed: run_seed,
                recovery_bound: Duration::from_secs(args.recovery_bound_secs),
                exe: exe.clone(),
            };
            // On SIGINT or SIGTERM the run is dropped, and with its runtime
            // every task holding the cluster, which kills its servers and
            // workers. Each run has a runtime of its own for that reason.
            let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
            let result = runtime.block_on(async {
                let mut terminate =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    result = runner::run(spec) => result,
                    _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
                    _ = terminate.recv() => Err(anyhow::anyhow!("interrupted")),
                }
            });
            match result {
                Ok(result) => {
                    println!("{}", result.report);
                    if result.passed() {
                        passed += 1;
                    } else {
                        failed += 1;
                    }
                    summary.push(format!(
                        "{} {workload} under {}",
                        if result.passed() { "pass" } else { "FAIL" },
                        nemesis_label(nemeses)
                    ));
                }
                Err(error) => {
                    println!(
                        "== {workload} under {}: the run failed: {error:#}\n",
                        nemesis_label(nemeses)
                    );
                    failed += 1;
                    summary.push(format!(
                        "FAIL {workload} under {} (run error)",
                        nemesis_label(nemeses)
                    ));
                    if error.to_string() == "interrupted" {
                        interrupted = true;
                        break 'runs;
                    }
                }
            }
        }
    }
    if interrupted {
        println!("interrupted: the runs after this one did not start");
    }
    for line in &summary {
        println!("{line}");
    }
    println!("{passed} passed, {failed} failed (seed {seed})");
    let success = if args.expect_failure {
        failed > 0
    } else {
        failed == 0
    };
    if args.expect_failure {
        println!(
            "{}",
            if failed > 0 {
                "expected a failure, and a check failed: the planted bug was caught"
            } else {
                "expected a failure, but every check passed: the planted bug was NOT caught"
            }
        );
    }
    Ok(if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The copycat binary: the flag, $COPYCAT_BIN, or `copycat` beside this
/// program (built first by cargo when this program runs through cargo).
fn find_copycat(flag: Option<&Path>, planted: bool) -> Result<PathBuf> {
    if let Some(path) = flag {
        if !path.is_file() {
            bail!("--copycat {}: no such file", path.display());
        }
        return Ok(path.to_path_buf());
    }
    if let Ok(path) = std::env::var("COPYCAT_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("finding this program")?;
    let dir = exe.parent().context("this program's directory")?;
    let beside = dir.join("copycat");
    if let Ok(cargo) = std::env::var("CARGO") {
        let release = dir.ends_with("release");
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "copycat-cli", "--bin", "copycat"]);
        if release {
            build.arg("--release");
        }
        // Power losses need the sync record; planted bugs their switches.
        build.args([
            "--features",
            if planted {
                "sync-tracking,planted-bugs"
            } else {
                "sync-tracking"
            },
        ]);
        eprintln!(
            "building copycat (with sync tracking{}) ...",
            if planted {
                " and planted-bug switches"
            } else {
                ""
            }
        );
        let status = build.status().context("running cargo build")?;
        if !status.success() {
            bail!("cargo build of copycat failed");
        }
    }
    if !beside.is_file() {
        bail!(
            "no copycat binary at {}: build it (cargo build -p copycat-cli --features sync-tracking,planted-bugs) or pass --copycat",
            beside.display()
        );
    }
    Ok(beside)
}

/// libfaketime, if installed.
fn find_faketime() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}
