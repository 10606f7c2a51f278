//! One run: start the cluster, run a workload while nemeses strike, heal,
//! require service again within a bound, check, and write the report.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use copycat_primitives::Value;
use tokio::sync::{watch, Mutex};

use crate::cluster::{self, Cluster, ClusterSpec};
use crate::nemesis::{Faults, Nemesis};
use crate::net::{Firewall, Mode};
use crate::proxy::{Proxy, Route};
use crate::recorder::Recorder;
use crate::report;
use crate::workloads::{Check, Ctx, Workload};

/// Everything one run needs.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// What the clients do.
    pub workload: Workload,
    /// Which faults strike.
    pub nemeses: Vec<Nemesis>,
    /// How long the concurrent phase lasts.
    pub time: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// How the servers start.
    pub cluster: ClusterSpec,
    /// Where packets go.
    pub mode: Mode,
    /// Seed of every random choice of the harness.
    pub seed: u64,
    /// After the heal the cluster must serve a command within this.
    pub recovery_bound: Duration,
    /// This binary (for worker processes).
    pub exe: PathBuf,
}

/// What a run found.
pub struct RunResult {
    /// Its checks; the run passed if all passed.
    pub checks: Vec<Check>,
    /// The readable report (also in `report.txt`).
    pub report: String,
    /// The run's directory.
    pub dir: PathBuf,
}

impl RunResult {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

/// Run one workload under one set of nemeses.
pub async fn run(spec: RunSpec) -> Result<RunResult> {
    let dir = spec.cluster.dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let nemeses: Vec<Nemesis> = spec
        .nemeses
        .iter()
        .copied()
        .filter(|n| *n != Nemesis::Clock || spec.cluster.faketime.is_some())
        .filter(|n| *n != Nemesis::DiskFull || spec.mode == Mode::Netns)
        .collect();
    let election = Duration::from_millis(spec.cluster.election_timeout_ms);
    let session_timeout = Duration::from_millis(spec.cluster.session_timeout_ms);
    let mut cluster = Cluster::new(spec.cluster.clone())?;
    let mut nemeses = nemeses;
    if nemeses.contains(&Nemesis::DiskFull) {
        if let Err(error) = cluster.mount_small_disk(256) {
            eprintln!("disk faults skipped: {error:#}");
            nemeses.retain(|n| *n != Nemesis::DiskFull);
        }
    }
    let skipped: Vec<Nemesis> = spec
        .nemeses
        .iter()
        .copied()
        .filter(|n| !nemeses.contains(n))
        .collect();
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    let servers = cluster.addresses();
    // Every peer connection goes through the proxy (servers advertise its
    // addresses); it reaches server B on behalf of A from A's address, so
    // iptables rules on the servers' addresses cut both legs.
    let routes: Vec<Route> = ids
        .iter()
        .map(|id| -> Result<Route> {
            Ok(Route {
                to: *id,
                listen: cluster::proxy_addr(*id).parse()?,
                upstream: cluster::node_addr(*id).parse()?,
            })
        })
        .collect::<Result<_>>()?;
    let proxy = Arc::new(
        Proxy::start(
            &routes,
            Arc::new(|from| Some(std::net::IpAddr::V4(cluster::node_ip(from)))),
            spec.seed ^ 0x0070_726f_7879,
        )
        .await
        .context("starting the proxy")?,
    );
    eprintln!(
        "[{}] starting {} servers ({}) in {}",
        spec.workload,
        ids.len(),
        servers.join(", "),
        dir.display()
    );
    cluster.start_all()?;
    let boot = Instant::now();
    while cluster::leader(&ids, Duration::from_millis(500))
        .await
        .is_none()
    {
        if boot.elapsed() > Duration::from_secs(60) {
            let crashed = cluster.crashed();
            anyhow::bail!(
                "no leader within 60 s of starting the servers (exited: {crashed:?}); log of server 1:\n{}",
                cluster::tail(&cluster.nodes[&1].log, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cluster = Arc::new(Mutex::new(cluster));
    let start = Instant::now();
    let recorder = Recorder::new(start);
    let faults = Arc::new(Faults {
        cluster: cluster.clone(),
        firewall: Mutex::new(Firewall::new(spec.mode == Mode::Netns, proxy.clone())),
        proxy: proxy.clone(),
        windows: Default::default(),
        errors: Default::default(),
        recorder: recorder.clone(),
        election_timeout: election,
        seen: Arc::new(AtomicU64::new(0)),
        active: Arc::new(AtomicU64::new(0)),
        last_healed_ms: Arc::new(AtomicU64::new(0)),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (healed_tx, healed_rx) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        servers: servers.clone(),
        ids: ids.clone(),
        recorder: recorder.clone(),
        clients: spec.clients,
        session_timeout,
        request_timeout: Duration::from_secs(2).max(election * 4),
        seed: spec.seed,
        dir: dir.clone(),
        exe: spec.exe.clone(),
        stop: stop_rx,
        healed: healed_rx,
        faults_seen: faults.seen.clone(),
        faults_active: faults.active.clone(),
        faults_last_healed_ms: faults.last_healed_ms.clone(),
        sessions_lost: Arc::new(AtomicU64::new(0)),
    });
    eprintln!(
        "[{}] running for {} s with nemeses: {}",
        spec.workload,
        spec.time.as_secs(),
        if nemeses.is_empty() {
            "none".to_string()
        } else {
            nemeses
                .iter()
                .map(|n| n.name())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let workload = tokio::spawn(spec.workload.run(ctx.clone()));

    // Servers that exit on their own (not killed by a nemesis) are noted.
    let crashes = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let watcher = {
        let cluster = cluster.clone();
        let crashes = crashes.clone();
        let recorder = recorder.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let mut cluster = cluster.lock().await;
                for (id, status) in cluster.crashed() {
                    let log = cluster::tail(&cluster.nodes[&id].log, 5);
                    // A server re-added after its removal gives up when the
                    // member it joins through does not answer (a fault may
                    // hold it): start it again, as an operator would.
                    if cluster.nodes[&id].join.is_some() && log.contains("cannot join the cluster")
                    {
                        eprintln!("server {id} could not join yet; starting it again");
                        let _ = cluster.start(id);
                        continue;
                    }
                    let line = format!(
                        "server {id} exited at {} ms ({status}): {log}",
                        recorder.now_ms()
                    );
                    eprintln!("{line}");
                    crashes.lock().expect("crashes").push(line);
                }
            }
        })
    };

    let progress = {
        let recorder = recorder.clone();
        let workload = spec.workload;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let (ok, fail, info) = recorder.counts();
                eprintln!(
                    "[{workload}] {} s: {ok} ok, {fail} fail, {info} unknown",
                    recorder.now_ms() / 1000
                );
            }
        })
    };

    faults.schedule(&nemeses, spec.time, spec.seed).await;
    let _ = stop_tx.send(true);
    let concurrent_end = recorder.now_ms();

    // Heal, then require service within the bound.
    let heal_started = Instant::now();
    let mut checks = Vec::new();
    if let Err(error) = faults.heal_all().await {
        checks.push(Check::new("heal", false, format!("{error:#}")));
    }
    let recovered = recover(&servers, session_timeout, spec.recovery_bound).await;
    let recovery = heal_started.elapsed();
    checks.push(Check::new(
        format!(
            "serves again within {} s of the heal",
            spec.recovery_bound.as_secs()
        ),
        recovered.is_ok(),
        match &recovered {
            Ok(()) => format!(
                "a command succeeded {} ms after the heal began",
                recovery.as_millis()
            ),
            Err(error) => format!("{error:#}"),
        },
    ));
    let _ = healed_tx.send(true);
    eprintln!("[{}] healed; checking", spec.workload);
    let workload_checks = match tokio::time::timeout(Duration::from_secs(600), workload).await {
        Ok(Ok(Ok(found))) => found,
        Ok(Ok(Err(error))) => vec![Check::new("workload ran", false, format!("{error:#}"))],
        Ok(Err(error)) => vec![Check::new("workload ran", false, error.to_string())],
        Err(_) => vec![Check::new(
            "workload ran",
            false,
            "the final checks took over 600 s",
        )],
    };
    checks.extend(workload_checks);
    progress.abort();
    watcher.abort();
    let crashes = crashes.lock().expect("crashes").clone();
    checks.push(Check::new(
        "no server exited on its own",
        crashes.is_empty(),
        if crashes.is_empty() {
            "every exit was a nemesis's kill".to_string()
        } else {
            crashes.join(" | ")
        },
    ));
    cluster.lock().await.stop_all();

    // Artifacts.
    let history = recorder.snapshot();
    let history_path = dir.join("history.jsonl");
    history
        .write_json_lines(std::io::BufWriter::new(cluster::create(&history_path)?))
        .with_context(|| format!("writing {}", history_path.display()))?;
    let windows = faults.windows.lock().expect("windows").clone();
    let samples = report::samples(&history, concurrent_end);
    let title = format!(
        "{} under {} ({} servers, {} s, seed {})",
        spec.workload,
        nemesis_label(&nemeses),
        ids.len(),
        spec.time.as_secs(),
        spec.seed
    );
    std::fs::write(
        dir.join("latency.svg"),
        report::svg(&title, &samples, &windows, concurrent_end),
    )?;

    let mut text = String::new();
    let _ = writeln!(text, "== {title}");
    let _ = writeln!(text, "network: {}", spec.mode.describe());
    let _ = writeln!(text, "network faults by: {}", spec.mode.faults_by());
    let stats = proxy.stats();
    let _ = writeln!(
        text,
        "proxy: {} peer connections ({} reset), {} frames ({} delayed, {} duplicated, {} reordered, {} discarded on dropped links); {} other connections passed through",
        stats.peer_connections,
        stats.resets,
        stats.frames,
        stats.delayed,
        stats.duplicated,
        stats.reordered,
        stats.discarded,
        stats.other_connections
    );
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        let _ = writeln!(text, "load average at the end: {}", load.join(" "));
    }
    if !skipped.is_empty() {
        let names: Vec<&str> = skipped.iter().map(|n| n.name()).collect();
        let _ = writeln!(
            text,
            "skipped nemeses (not available here): {}",
            names.join(", ")
        );
    }
    if let Some(bug) = &spec.cluster.planted_bug {
        let _ = writeln!(text, "planted bug: {bug}");
    }
    let _ = writeln!(text, "schedule ({} faults):", windows.len());
    for w in &windows {
        let _ = writeln!(
            text,
            "  {:>7.1} s - {:>7.1} s  {:<16} {}",
            w.start_ms as f64 / 1000.0,
            w.end_ms as f64 / 1000.0,
            w.nemesis.name(),
            w.detail
        );
    }
    for error in faults.errors.lock().expect("errors").iter() {
        let _ = writeln!(text, "  nemesis error: {error}");
    }
    let (ok, fail, info) = recorder.counts();
    let _ = writeln!(text, "operations: {ok} ok, {fail} fail, {info} unknown");
    let _ = writeln!(
        text,
        "client sessions expired by the cluster (workers reconnected): {}",
        ctx.sessions_lost.load(std::sync::atomic::Ordering::SeqCst)
    );
    let _ = writeln!(
        text,
        "latency outside faults: {}",
        report::latency_line(&samples, &windows, false)
    );
    let _ = writeln!(
        text,
        "latency during faults:  {}",
        report::latency_line(&samples, &windows, true)
    );
    let _ = writeln!(text, "checks:");
    for check in &checks {
        let _ = writeln!(
            text,
            "  [{}] {}: {}",
            if check.passed { "pass" } else { "FAIL" },
            check.name,
            check.detail
        );
    }
    let passed = checks.iter().all(|c| c.passed);
    let _ = writeln!(
        text,
        "verdict: {}; history, report, latency.svg and server logs in {}",
        if passed { "PASS" } else { "FAIL" },
        dir.display()
    );
    std::fs::write(dir.join("report.txt"), &text)?;
    Ok(RunResult {
        checks,
        report: text,
        dir,
    })
}

/// A short name of a set of nemeses.
pub fn nemesis_label(nemeses: &[Nemesis]) -> String {
    if nemeses.is_empty() {
        "no faults".to_string()
    } else if nemeses.len() == Nemesis::ALL.len() {
        "all nemeses".to_string()
    } else {
        nemeses
            .iter()
            .map(|n| n.name())
            .collect::<Vec<_>>()
            .join("+")
    }
}

/// Wait until a fresh client can run a command, for at most `bound`.
async fn recover(servers: &[String], session_timeout: Duration, bound: Duration) -> Result<()> {
    let attempt = async {
        loop {
            let client = copycat_client::Client::builder()
                .servers(servers.to_vec())
                .session_timeout(session_timeout)
                .request_timeout(Duration::from_secs(2))
                .connect()
                .await;
            if let Ok(client) = client {
                let primitives = copycat_primitives::Primitives::new(client);
                if let Ok(value) = Value::<u64>::open(&primitives, "chaos-probe").await {
                    if value.set(&1).await.is_ok() {
                        primitives.client().clone().close().await;
                        return;
                    }
                }
                primitives.client().clone().close().await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(bound, attempt).await.map_err(|_| {
        anyhow::anyhow!(
            "no command succeeded within {} s of the heal",
            bound.as_secs()
        )
    })
}
