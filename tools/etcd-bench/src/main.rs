//! `etcd-bench`: a load generator for etcd driven like `copycat bench`, so
//! that `scripts/bench-vs-etcd.sh` compares the two systems through clients
//! of the same kind (Rust, async, one connection set per client).
//!
//! Clients (`--clients`) are separate etcd clients, each with its own gRPC
//! channel (its own connections to the endpoints), and each keeps
//! `--concurrency` requests in flight; every request's latency goes into an
//! HDR histogram. The flags, the workloads' meaning and the `--json` report
//! mirror `copycat bench` (see `crates/copycat-cli/src/bench.rs`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, ValueEnum};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, LockOptions, Txn, TxnOp, TxnOpResponse,
};
use hdrhistogram::Histogram;
use rand::Rng;
use serde::Serialize;
use tokio::task::JoinHandle;

/// The lock the lock workload contends for (the same name as Copycat's).
const BENCH_LOCK: &str = "bench-lock";
/// The key the counter workload increments (the same name as Copycat's).
const BENCH_COUNTER: &str = "bench-counter";
/// Time to live of the lock workload's leases; kept alive while the run goes.
const LEASE_TTL_SECS: i64 = 10;

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum WorkloadArg {
    /// Puts of random keys (etcd's Put).
    Put,
    /// Gets of random keys (etcd's Range; see --consistency).
    Get,
    /// Gets (--read-ratio) and puts of random keys.
    Mixed,
    /// Acquire-and-release cycles of the lock `bench-lock` with etcd's lock
    /// service (Lock with the client's lease, then Unlock), every client
    /// contending (--concurrency 1). One cycle is one request.
    Lock,
    /// Increments of the key `bench-counter` by compare-and-swap
    /// transactions (compare the mod revision, put the next value, else read
    /// the current one and retry). One successful increment is one request;
    /// its latency includes its retries.
    Counter,
}

impl WorkloadArg {
    fn name(self) -> &'static str {
        match self {
            WorkloadArg::Put => "put",
            WorkloadArg::Get => "get",
            WorkloadArg::Mixed => "mixed",
            WorkloadArg::Lock => "lock",
            WorkloadArg::Counter => "counter",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum ConsistencyArg {
    /// etcd's default Range: goes through the leader's read index.
    Linearizable,
    /// Served by whichever member receives it, from its local state.
    Serializable,
}

/// A load generator for etcd with the flags and the report of
/// `copycat bench`.
#[derive(Parser, Debug)]
#[command(
    name = "etcd-bench",
    version,
    after_help = "Example:\n  etcd-bench --endpoint 127.0.0.1:2379 --endpoint 127.0.0.1:22379 \
                  lock --clients 64 --total 2000 --json\n\n\
                  With --json it prints one line with the same fields as \
                  `copycat bench --json` (workload, clients, concurrency, requests, \
                  errors, first_error, seconds, throughput, latency_us); the counter \
                  workload adds `retries`."
)]
struct Args {
    /// An etcd member's client address (host:port or http://host:port);
    /// repeat for each. Client i connects to endpoint i modulo their number
    /// (one connection per client, up before the clock starts).
    #[arg(
        long = "endpoint",
        visible_alias = "server",
        default_value = "127.0.0.1:2379"
    )]
    endpoints: Vec<String>,
    /// What to send.
    #[arg(value_enum, default_value = "put")]
    workload: WorkloadArg,
    /// Clients, each an etcd client with its own connection (like Copycat's
    /// sessions).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Requests in flight per client.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Key size in bytes (numbers padded with zeros, as `copycat bench`).
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
    /// Print the report as JSON (one line).
    #[arg(long)]
    json: bool,
}

/// Latencies in microseconds.
#[derive(Clone, Debug, Serialize)]
struct Latencies {
    mean: f64,
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

/// What a run measured: the fields of `copycat bench --json`.
#[derive(Clone, Debug, Serialize)]
struct Report {
    workload: String,
    clients: usize,
    concurrency: usize,
    /// Requests that succeeded.
    requests: u64,
    /// Requests that failed.
    errors: u64,
    first_error: Option<String>,
    /// Seconds from the first request to the last answer.
    seconds: f64,
    /// Successful requests per second.
    throughput: f64,
    latency_us: Latencies,
    /// Counter only: compare-and-swap attempts that lost and were retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    retries: Option<u64>,
}

impl Report {
    fn text(&self) -> String {
        let l = &self.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "{} requests ({} failed) in {:.2} s with {} clients x {} in flight: {:.0} requests/s\n\
             latency ms: mean {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}{}{}",
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
            self.retries
                .map(|r| format!("\ncompare-and-swap retries: {r}"))
                .unwrap_or_default(),
            self.first_error
                .as_ref()
                .map(|e| format!("\nfirst error: {e}"))
                .unwrap_or_default(),
        )
    }
}

/// The run's settings, shared by the workers.
struct Options {
    workload: WorkloadArg,
    key_size: usize,
    key_space: u64,
    sequential: bool,
    total: Option<u64>,
    read_ratio: f64,
    serializable: bool,
}

impl Options {
    fn key(&self, n: u64) -> String {
        let index = if self.sequential {
            n % self.key_space
        } else {
            rand::thread_rng().gen_range(0..self.key_space)
        };
        format!("{index:0>width$}", width = self.key_size)
    }
}

/// A lease of the lock workload, kept alive by a task of its own.
struct Lease {
    id: i64,
    keeper: JoinHandle<()>,
}

impl Lease {
    async fn grant(client: &mut Client) -> Result<Lease, etcd_client::Error> {
        let id = client.lease_grant(LEASE_TTL_SECS, None).await?.id();
        let (mut keeper, mut stream) = client.lease_keep_alive(id).await?;
        let keeper = tokio::spawn(async move {
            let period = Duration::from_secs((LEASE_TTL_SECS as u64 / 3).max(1));
            loop {
                tokio::time::sleep(period).await;
                // A failed keep-alive shows as a failed lock cycle later
                // (the lease expired), which replaces the lease.
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match stream.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        });
        Ok(Lease { id, keeper })
    }

    async fn revoke(self, client: &mut Client) -> Result<(), etcd_client::Error> {
        self.keeper.abort();
        client.lease_revoke(self.id).await.map(|_| ())
    }
}

/// One worker's state between requests.
#[derive(Default)]
struct WorkerState {
    /// Lock: this client's lease.
    lease: Option<Lease>,
    /// Counter: the last (mod revision, value) seen of the counter key
    /// (`(0, 0)`: absent, which is also what a compare of an absent key sees).
    counter: (i64, u64),
    /// Counter: attempts that lost the compare.
    retries: u64,
}

/// One request. Errors are returned as text for the report.
async fn request(
    client: &mut Client,
    options: &Options,
    state: &mut WorkerState,
    key: &str,
    value: &str,
) -> Result<(), String> {
    match options.workload {
        WorkloadArg::Put => put(client, key, value).await,
        WorkloadArg::Get => get(client, options, key).await,
        WorkloadArg::Mixed => {
            if rand::thread_rng().gen_bool(options.read_ratio) {
                get(client, options, key).await
            } else {
                put(client, key, value).await
            }
        }
        WorkloadArg::Lock => lock_cycle(client, state).await,
        WorkloadArg::Counter => increment(client, state).await,
    }
}

async fn put(client: &mut Client, key: &str, value: &str) -> Result<(), String> {
    client
        .put(key, value, None)
        .await
        .map(|_| ())
        .map_err(|e| format!("put: {e}"))
}

async fn get(client: &mut Client, options: &Options, key: &str) -> Result<(), String> {
    let get_options = options
        .serializable
        .then(|| GetOptions::new().with_serializable());
    client
        .get(key, get_options)
        .await
        .map(|_| ())
        .map_err(|e| format!("get: {e}"))
}

/// Lock then unlock `bench-lock` with this client's lease. After a failure
/// the lease is revoked (which releases whatever it held or waited for) and
/// the next cycle grants a new one (that grant is inside its latency).
async fn lock_cycle(client: &mut Client, state: &mut WorkerState) -> Result<(), String> {
    let lease = match &state.lease {
        Some(lease) => lease.id,
        None => {
            let lease = Lease::grant(client)
                .await
                .map_err(|e| format!("lease grant: {e}"))?;
            let id = lease.id;
            state.lease = Some(lease);
            id
        }
    };
    let result = async {
        let held = client
            .lock(BENCH_LOCK, Some(LockOptions::new().with_lease(lease)))
            .await
            .map_err(|e| format!("lock: {e}"))?;
        client
            .unlock(held.key().to_vec())
            .await
            .map(|_| ())
            .map_err(|e| format!("unlock: {e}"))
    }
    .await;
    if result.is_err() {
        if let Some(lease) = state.lease.take() {
            // Best effort: if the revoke fails too the lease expires by
            // itself within its TTL (its keep-alive task is stopped).
            let _ = lease.revoke(client).await;
        }
    }
    result
}

/// Increment `bench-counter` by compare-and-swap, retrying until it wins.
async fn increment(client: &mut Client, state: &mut WorkerState) -> Result<(), String> {
    loop {
        let (revision, value) = state.counter;
        let next = value + 1;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                BENCH_COUNTER,
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::put(BENCH_COUNTER, next.to_string(), None)])
            .or_else([TxnOp::get(BENCH_COUNTER, None)]);
        let response = match client.txn(txn).await {
            Ok(response) => response,
            Err(error) => {
                state.counter = (0, 0);
                return Err(format!("txn: {error}"));
            }
        };
        if response.succeeded() {
            let revision = response
                .header()
                .map(|h| h.revision())
                .ok_or("txn: no header in the response")?;
            state.counter = (revision, next);
            return Ok(());
        }
        state.retries += 1;
        state.counter = (0, 0);
        for op in response.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                if let Some(kv) = get.kvs().first() {
                    let current = std::str::from_utf8(kv.value())
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or_else(|| format!("{BENCH_COUNTER} does not hold a number"))?;
                    state.counter = (kv.mod_revision(), current);
                }
            }
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

async fn run(args: Args) -> Result<Report> {
    if args.clients == 0 || args.concurrency == 0 {
        bail!("--clients and --concurrency must be at least 1");
    }
    if args.key_space == 0 {
        bail!("--key-space must be at least 1");
    }
    if args.endpoints.is_empty() {
        bail!("give at least one --endpoint");
    }
    if !(0.0..=1.0).contains(&args.read_ratio) {
        bail!("--read-ratio must be between 0 and 1");
    }
    if args.workload == WorkloadArg::Lock && args.concurrency != 1 {
        // One lease per client: a second Lock call with the same lease is
        // the same acquisition, so a client holds the lock at most once.
        bail!("the lock workload takes --concurrency 1 (use --clients for contention)");
    }
    let duration = match args.duration {
        Some(secs) if !(secs > 0.0 && secs.is_finite()) => bail!("--duration must be positive"),
        Some(secs) => Some(Duration::from_secs_f64(secs)),
        None => None,
    };
    let total = match (args.total, duration) {
        (None, None) => Some(10_000),
        (total, _) => total,
    };
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let mut clients = Vec::with_capacity(args.clients);
    for n in 0..args.clients {
        let connect_options = ConnectOptions::new()
            .with_timeout(timeout)
            .with_connect_timeout(timeout);
        // One endpoint per client: etcd-client connects lazily, and a
        // client given several would open the others during the run.
        let endpoint = &args.endpoints[n % args.endpoints.len()];
        let mut client = Client::connect([endpoint], Some(connect_options))
            .await
            .with_context(|| format!("client {n}: cannot connect to {endpoint}"))?;
        // One untimed request so that the run starts with the connection up.
        client
            .get(BENCH_LOCK, Some(GetOptions::new().with_serializable()))
            .await
            .with_context(|| format!("client {n}: first request to {endpoint}"))?;
        // The lock workload's leases are granted before the clock starts
        // (Copycat's sessions, which lock holds hang on, exist before too).
        let lease = if args.workload == WorkloadArg::Lock {
            let lease = Lease::grant(&mut client)
                .await
                .with_context(|| format!("client {n}: cannot grant a lease"))?;
            Some(lease)
        } else {
            None
        };
        clients.push((client, lease));
    }
    let options = Arc::new(Options {
        workload: args.workload,
        key_size: args.key_size,
        key_space: args.key_space,
        sequential: args.sequential,
        total,
        read_ratio: args.read_ratio,
        serializable: args.consistency == ConsistencyArg::Serializable,
    });
    let issued = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = duration.map(|d| started + d);
    // Like `copycat bench`: a progress line on stderr, on a terminal only
    // and not with --json.
    let progress = (!args.json && std::io::stderr().is_terminal()).then(|| {
        let done = Arc::clone(&done);
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
    let value = "x".repeat(args.value_size);
    let mut workers = Vec::with_capacity(args.clients * args.concurrency);
    for (client, lease) in &mut clients {
        for _ in 0..args.concurrency {
            let mut client = client.clone();
            let lease = lease.take();
            let options = Arc::clone(&options);
            let issued = Arc::clone(&issued);
            let done = Arc::clone(&done);
            let value = value.clone();
            workers.push(tokio::spawn(async move {
                let mut histogram = new_histogram();
                let mut errors = 0u64;
                let mut first_error = None;
                let mut state = WorkerState {
                    lease,
                    ..WorkerState::default()
                };
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    if options.total.is_some_and(|total| n >= total) {
                        break;
                    }
                    let key = options.key(n);
                    let at = Instant::now();
                    let result = request(&mut client, &options, &mut state, &key, &value).await;
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
                let seconds = started.elapsed().as_secs_f64();
                if let Some(lease) = state.lease.take() {
                    if let Err(error) = lease.revoke(&mut client).await {
                        eprintln!("warning: cannot revoke a lease (it expires by itself): {error}");
                    }
                }
                (histogram, errors, first_error, state.retries, seconds)
            }));
        }
    }
    let mut histogram = new_histogram();
    let mut errors = 0;
    let mut first_error = None;
    let mut retries = 0;
    let mut seconds = 0f64;
    for worker in workers {
        let (h, e, first, r, s) = worker.await.context("a worker task failed")?;
        histogram
            .add(&h)
            .map_err(|e| anyhow!("merging histograms: {e}"))?;
        errors += e;
        retries += r;
        // The run ends with the last answer (lease revokes not included).
        seconds = seconds.max(s);
        if first_error.is_none() {
            first_error = first;
        }
    }
    if let Some(progress) = progress {
        progress.abort();
        eprintln!();
    }
    drop(clients);
    let requests = histogram.len();
    Ok(Report {
        workload: args.workload.name().to_string(),
        clients: args.clients,
        concurrency: args.concurrency,
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
        retries: (args.workload == WorkloadArg::Counter).then_some(retries),
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.json;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let report = match runtime.block_on(run(args)) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        match serde_json::to_string(&report) {
            Ok(line) => println!("{line}"),
            Err(error) => {
                eprintln!("error: cannot encode the report: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        println!("{}", report.text());
    }
    if report.requests == 0 && report.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
