//! `copycat bench`: a load generator for the map `kv` (see
//! [`crate::kv`]) and for the coordination primitives (one lock, one
//! counter, one queue). Sessions (`clients`) each keep `concurrency`
//! requests in flight; every request's latency goes into an HDR histogram.
//! The sessions share `connections` sets of connections (one connection to
//! each server per set), as an application with many sessions would.
//!
//! Besides requests, a run counts what the sessions cost while it lasts:
//! log entries the cluster wrote per second (from the servers' commit
//! indexes, when their admin status answers) and this process's wake-ups
//! per second (context switches of all its threads, from `/proc`). The
//! `idle` workload sends nothing but keep-alives, to show those two alone.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use copycat_client::{Client, ClientState, Connections, Consistency};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use rand::Rng;
use serde::Serialize;

use copycat_primitives::{Lock, Long, Map, Primitives, Queue};

use crate::kv::KV_MAP;

/// What the load is made of.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workload {
    /// Writes only.
    Put,
    /// Reads only.
    Get,
    /// Reads with this probability, writes otherwise.
    Mixed(f64),
    /// Acquire and release the lock `bench-lock`: one request is one
    /// cycle (every session contends for the same lock).
    Lock,
    /// Increment the long `bench-counter`.
    Counter,
    /// Offer an item to the queue `bench-queue` and poll one: one request
    /// is both.
    Queue,
    /// No requests: the sessions stay open and keep alive for the
    /// duration, and the report says what that cost.
    Idle,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Mixed(_) => "mixed",
            Workload::Lock => "lock",
            Workload::Counter => "counter",
            Workload::Queue => "queue",
            Workload::Idle => "idle",
        }
    }
}

/// The resources of the primitive workloads.
pub const BENCH_LOCK: &str = "bench-lock";
/// See [`BENCH_LOCK`].
pub const BENCH_COUNTER: &str = "bench-counter";
/// See [`BENCH_LOCK`].
pub const BENCH_QUEUE: &str = "bench-queue";

/// What one session's workers send to.
#[derive(Clone)]
enum Target {
    Map(Map<String, String>),
    Lock(Arc<Lock>),
    Counter(Long),
    Queue(Queue<String>),
}

impl Target {
    async fn open(primitives: &Primitives, options: &BenchOptions) -> Result<Option<Self>> {
        let opened = match options.workload {
            Workload::Idle => return Ok(None),
            Workload::Put | Workload::Get | Workload::Mixed(_) => {
                Map::<String, String>::open(primitives, KV_MAP)
                    .await
                    .map(|map| Target::Map(map.with_consistency(options.consistency)))
            }
            Workload::Lock => Lock::open(primitives, BENCH_LOCK)
                .await
                .map(|lock| Target::Lock(Arc::new(lock))),
            Workload::Counter => Long::open(primitives, BENCH_COUNTER)
                .await
                .map(Target::Counter),
            Workload::Queue => Queue::<String>::open(primitives, BENCH_QUEUE)
                .await
                .map(Target::Queue),
        };
        opened
            .map(Some)
            .map_err(|e| anyhow!("cannot open the {} resource: {e}", options.workload.name()))
    }

    /// One request; `read` picks a read for the map workloads. (The typed
    /// handles take `&String`: borrowing the caller's strings keeps the
    /// hot path free of copies.)
    #[allow(clippy::ptr_arg)]
    async fn request(&self, key: &String, value: &String, read: bool) -> Result<(), String> {
        let result = match self {
            Target::Map(kv) if read => kv.get(key).await.map(|_| ()),
            Target::Map(kv) => kv.put(key, value).await.map(|_| ()),
            Target::Lock(lock) => match lock.lock().await {
                Ok(_token) => lock.unlock().await,
                Err(error) => Err(error),
            },
            Target::Counter(counter) => counter.increment_and_get().await.map(|_| ()),
            Target::Queue(queue) => match queue.offer(value).await {
                Ok(_) => queue.poll().await.map(|_| ()),
                Err(error) => Err(error),
            },
        };
        result.map_err(|error| error.to_string())
    }
}

/// The benchmark's settings.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Servers to connect to.
    pub servers: Vec<String>,
    /// The load.
    pub workload: Workload,
    /// Sessions.
    pub clients: usize,
    /// Sets of connections the sessions share, round robin (each set is
    /// one connection to each server); 0 gives each session its own.
    pub connections: usize,
    /// Requests in flight per session.
    pub concurrency: usize,
    /// Key length in bytes (keys are numbers padded with zeros).
    pub key_size: usize,
    /// Value length in bytes.
    pub value_size: usize,
    /// Keys are drawn from `0..key_space`.
    pub key_space: u64,
    /// Keys in order (`false`: uniformly at random).
    pub sequential: bool,
    /// Stop after this many requests.
    pub total: Option<u64>,
    /// Or after this long.
    pub duration: Option<Duration>,
    /// Consistency of reads.
    pub consistency: Consistency,
    /// Give up on a request after this long.
    pub request_timeout: Duration,
    /// Print a progress line on stderr (on a terminal only).
    pub progress: bool,
    /// Connect with TLS (`None`: plain TCP).
    pub tls: Option<copycat_client::ClientTls>,
}

/// Latencies in microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Latencies {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Maximum.
    pub max: u64,
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `put`, `get` or `mixed`.
    pub workload: String,
    /// Sessions.
    pub clients: usize,
    /// Sets of shared connections (0: one per session).
    pub connections: usize,
    /// Requests in flight per session.
    pub concurrency: usize,
    /// Requests that succeeded.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// The first failure's message.
    pub first_error: Option<String>,
    /// Seconds from the first request to the last answer.
    pub seconds: f64,
    /// Successful requests per second.
    pub throughput: f64,
    /// Latencies of the successful requests, in microseconds.
    pub latency_us: Latencies,
    /// Entries the cluster committed per second during the run (`None`:
    /// no server's admin status answered).
    pub log_entries_per_second: Option<f64>,
    /// This process's context switches per second during the run, all
    /// threads (`None`: `/proc` not readable).
    pub wakeups_per_second: Option<f64>,
    /// Sessions that were no longer open at the end (expired or closed by
    /// the cluster).
    pub sessions_lost: usize,
    /// Sessions with at least one successful request (all of them, when
    /// every session makes progress).
    pub sessions_served: usize,
}

impl Report {
    /// The human-readable summary.
    pub fn text(&self) -> String {
        let l = &self.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        let mut cost = String::new();
        if let Some(entries) = self.log_entries_per_second {
            cost += &format!("\nlog entries committed: {entries:.1}/s");
        }
        if let Some(wakeups) = self.wakeups_per_second {
            cost += &format!("\nthis process's wake-ups: {wakeups:.0}/s");
        }
        if self.workload != "idle" && self.sessions_served < self.clients {
            cost += &format!(
                "\nsessions served: {} of {}",
                self.sessions_served, self.clients
            );
        }
        if self.sessions_lost > 0 {
            cost += &format!(
                "\nsessions lost: {} of {}",
                self.sessions_lost, self.clients
            );
        }
        if self.workload == "idle" {
            return format!(
                "{} idle sessions over {} for {:.2} s{cost}",
                self.clients,
                connection_text(self.connections),
                self.seconds,
            );
        }
        format!(
            "{} requests ({} failed) in {:.2} s with {} sessions x {} in flight: {:.0} requests/s\n\
             latency ms: mean {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}{cost}{}",
            self.requests,
            self.errors,
            self.seconds,
            self.clients,
            self.concurrency,
            self.throughput,
            l.mean / 1000.0,
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            self.first_error
                .as_ref()
                .map(|e| format!("\nfirst error: {e}"))
                .unwrap_or_default(),
        )
    }
}

fn connection_text(sets: usize) -> String {
    match sets {
        0 => "a connection set per session".to_string(),
        1 => "one shared connection set".to_string(),
        n => format!("{n} shared connection sets"),
    }
}

/// Context switches (voluntary and not) of every thread of this process
/// so far; `None` where `/proc` cannot tell.
fn context_switches() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let status = std::fs::read_to_string(task.ok()?.path().join("status")).ok()?;
        for line in status.lines() {
            if let Some(rest) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += rest.trim().parse::<u64>().ok()?;
            }
        }
    }
    Some(total)
}

/// The highest commit index any of `servers` reports (`None`: none
/// answered).
async fn commit_index(servers: &[String], tls: Option<&copycat_client::ClientTls>) -> Option<u64> {
    let asks = servers
        .iter()
        .map(|server| crate::cluster::status_of(server, Duration::from_secs(2), tls));
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .filter_map(|status| status.ok().map(|s| s.commit))
        .max()
}

/// Sessions opened at once while the run starts.
const OPENING: usize = 64;

fn key(options: &BenchOptions, n: u64) -> String {
    let index = if options.sequential {
        n % options.key_space
    } else {
        rand::thread_rng().gen_range(0..options.key_space)
    };
    format!("{index:0>width$}", width = options.key_size)
}

/// Run the benchmark.
pub async fn run(options: BenchOptions) -> Result<Report> {
    if options.clients == 0 || options.concurrency == 0 {
        bail!("--clients and --concurrency must be at least 1");
    }
    if options.key_space == 0 {
        bail!("--key-space must be at least 1");
    }
    if options.total.is_none() && options.duration.is_none() {
        bail!("give --total or --duration");
    }
    if options.workload == Workload::Idle && options.duration.is_none() {
        bail!("the idle workload takes --duration");
    }
    if let Workload::Mixed(ratio) = options.workload {
        if !(0.0..=1.0).contains(&ratio) {
            bail!("--read-ratio must be between 0 and 1");
        }
    }
    if options.workload == Workload::Lock && options.concurrency != 1 {
        // A session holds the lock at most once: its own second request
        // would wait for itself.
        bail!("the lock workload takes --concurrency 1 (use --clients for contention)");
    }
    let sets: Vec<Connections> = (0..options.connections)
        .map(|_| match &options.tls {
            Some(tls) => Connections::with_tls(tls.clone()),
            None => Connections::new(),
        })
        .collect();
    let open = |n: usize| {
        let mut builder = Client::builder()
            .servers(options.servers.clone())
            .request_timeout(options.request_timeout)
            .consistency(options.consistency);
        match (sets.get(n % sets.len().max(1)), &options.tls) {
            (Some(set), _) => builder = builder.connections(set),
            (None, Some(tls)) => builder = builder.tls(tls.clone()),
            (None, None) => {}
        }
        let options = &options;
        async move {
            let client = builder
                .connect()
                .await
                .map_err(|e| anyhow!("cannot open a session: {e}"))?;
            let primitives = Primitives::new(client.clone());
            let target = Target::open(&primitives, options).await?;
            Ok::<_, anyhow::Error>((client, primitives, target))
        }
    };
    let mut clients = Vec::with_capacity(options.clients);
    let mut opening = futures_util::stream::iter(0..options.clients)
        .map(open)
        .buffer_unordered(OPENING);
    while let Some(opened) = opening.next().await {
        clients.push(opened?);
        if options.progress && options.clients >= 100 && std::io::stderr().is_terminal() {
            eprint!("\r{}/{} sessions open   ", clients.len(), options.clients);
        }
    }
    drop(opening);
    if options.progress && options.clients >= 100 && std::io::stderr().is_terminal() {
        eprintln!();
    }
    let options = Arc::new(options);
    let commit_before = commit_index(&options.servers, options.tls.as_ref()).await;
    let switches_before = context_switches();
    let issued = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = options.duration.map(|d| started + d);
    let progress =
        (options.progress && options.workload != Workload::Idle && std::io::stderr().is_terminal())
            .then(|| {
                let done = Arc::clone(&done);
                let total = options.total;
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        let n = done.load(Ordering::Relaxed);
                        let rate = n as f64 / started.elapsed().as_secs_f64().max(1e-9);
                        match total {
                            Some(total) => eprint!("\r{n}/{total} requests, {rate:.0}/s   "),
                            None => eprint!("\r{n} requests, {rate:.0}/s   "),
                        }
                    }
                })
            });
    let value = "x".repeat(options.value_size);
    let mut workers = Vec::new();
    if let (Workload::Idle, Some(duration)) = (options.workload, options.duration) {
        tokio::time::sleep(duration).await;
    }
    for (session, (_, _, target)) in clients.iter().enumerate() {
        let Some(target) = target else { continue };
        for _ in 0..options.concurrency {
            let target = target.clone();
            let options = Arc::clone(&options);
            let issued = Arc::clone(&issued);
            let done = Arc::clone(&done);
            let value = value.clone();
            workers.push(tokio::spawn(async move {
                let mut histogram =
                    Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
                let mut errors = 0u64;
                let mut first_error = None;
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    if options.total.is_some_and(|total| n >= total) {
                        break;
                    }
                    let read = match options.workload {
                        Workload::Get => true,
                        Workload::Mixed(ratio) => rand::thread_rng().gen_bool(ratio),
                        _ => false,
                    };
                    let key = key(&options, n);
                    let at = Instant::now();
                    let result = target.request(&key, &value, read).await;
                    let micros = at.elapsed().as_micros().max(1) as u64;
                    match result {
                        Ok(()) => histogram.saturating_record(micros),
                        Err(error) => {
                            errors += 1;
                            first_error.get_or_insert(error);
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                (session, histogram, errors, first_error)
            }));
        }
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
    let mut errors = 0;
    let mut first_error = None;
    let mut served = std::collections::BTreeSet::new();
    for worker in workers {
        let (session, h, e, first) = worker.await?;
        if !h.is_empty() {
            served.insert(session);
        }
        histogram
            .add(&h)
            .map_err(|e| anyhow!("merging histograms: {e}"))?;
        errors += e;
        if first_error.is_none() {
            first_error = first;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let switches_after = context_switches();
    let commit_after = commit_index(&options.servers, options.tls.as_ref()).await;
    if let Some(progress) = progress {
        progress.abort();
        eprintln!();
    }
    let sessions_lost = clients
        .iter()
        .filter(|(client, _, _)| client.status().state == ClientState::Closed)
        .count();
    let per_second = |before: Option<u64>, after: Option<u64>| {
        Some(after?.saturating_sub(before?) as f64 / seconds.max(1e-9))
    };
    let closing = clients.into_iter().map(|(client, primitives, target)| {
        drop((target, primitives));
        client.close()
    });
    futures_util::future::join_all(closing).await;
    let requests = histogram.len();
    Ok(Report {
        workload: options.workload.name().to_string(),
        clients: options.clients,
        connections: options.connections,
        concurrency: options.concurrency,
        requests,
        errors,
        first_error,
        seconds,
        throughput: requests as f64 / seconds.max(1e-9),
        latency_us: Latencies {
            mean: if requests == 0 { 0.0 } else { histogram.mean() },
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        },
        log_entries_per_second: per_second(commit_before, commit_after),
        wakeups_per_second: per_second(switches_before, switches_after),
        sessions_lost,
        sessions_served: served.len(),
    })
}
