//! `copycat-sim`: run the deterministic cluster simulator over many seeds,
//! reproduce one, or check a history file.
//!
//! ```text
//! copycat-sim --seeds 1000          # seeds 0..1000, ends with "N passed, M failed"
//! copycat-sim --seed 42             # one seed, with its parameters and trace digest
//! copycat-sim --seed 42 --without partition   # the same seed without one fault kind
//! copycat-sim --seed 42 --history h.jsonl     # also write the client history
//! copycat-sim check h.jsonl         # check a history file for linearizability
//! ```

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use clap::{Parser, Subcommand};
use copycat_sim::history::History;
use copycat_sim::linearizability::{check, CheckConfig, Register, Verdict};
use copycat_sim::sim::{
    FaultKind, HistoryStats, Outcome, RunReport, SimParams, Simulation, StatsSummary,
};

/// Deterministic simulation of Copycat clusters with fault injection.
///
/// Every run is a pure function of its seed: the same seed gives the same
/// events, the same faults and the same trace digest on any machine. Times
/// printed are milliseconds of simulated time.
#[derive(Parser, Debug)]
#[command(name = "copycat-sim", version, about, long_about = None)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Run this many seeds, starting at --start.
    #[arg(long, conflicts_with = "seed")]
    seeds: Option<u64>,
    /// First seed for --seeds.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Run exactly this seed and print its parameters, outcome and digest.
    #[arg(long)]
    seed: Option<u64>,
    /// Worker threads for --seeds (default: available cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// With --seed: write the client history as JSON lines to this file.
    #[arg(long, requires = "seed")]
    history: Option<std::path::PathBuf>,
    /// With --seed: print the whole trace tail even when the run passes.
    #[arg(long, short)]
    verbose: bool,
    /// Turn a fault kind off (repeatable): crash, power-loss, isolate,
    /// isolate-leader, partition, bridge, one-way, pause, pause-leader,
    /// client-cut, churn.
    #[arg(long, value_parser = parse_fault)]
    without: Vec<FaultKind>,
    /// Plant a known bug (its name as in `copycat_planted::PlantedBug`, for
    /// example StaleLease). Needs a build with `--features planted-bugs`.
    #[arg(long)]
    plant: Option<String>,
    /// Run the primitive workload: half the client operations go to locks,
    /// a counter, a queue, a semaphore, an election and a group of the
    /// replicated primitives (see docs/simulation.md).
    #[arg(long)]
    primitives: bool,
}

/// Set once from `--primitives`, read wherever a seed's parameters are made.
static PRIMITIVES: AtomicBool = AtomicBool::new(false);

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a history file (JSON lines, the format of docs/simulation.md)
    /// for linearizability against a register per key.
    Check {
        /// The history file ("-" reads standard input).
        file: std::path::PathBuf,
        /// Search steps before giving up with "unknown".
        #[arg(long, default_value_t = 10_000_000)]
        steps: u64,
    },
}

fn parse_fault(name: &str) -> Result<FaultKind, String> {
    FaultKind::parse(name).ok_or_else(|| {
        let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
        format!("unknown fault kind {name:?}; one of {}", names.join(", "))
    })
}

/// Print a line; a closed pipe (`copycat-sim ... | head`) ends the program
/// quietly instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        let mut stdout = std::io::stdout().lock();
        if let Err(error) = writeln!(stdout, $($arg)*) {
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            panic!("cannot write to standard output: {error}");
        }
    }};
}

fn main() -> ExitCode {
    let args = Args::parse();
    PRIMITIVES.store(args.primitives, Ordering::Relaxed);
    if let Some(Command::Check { file, steps }) = &args.command {
        return check_file(file, *steps);
    }
    let plant = match args.plant.as_deref().map(planted_bug) {
        Some(Ok(bug)) => Some(bug),
        Some(Err(message)) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
        None => None,
    };
    if let Some(seed) = args.seed {
        return run_one(seed, &args, plant);
    }
    let count = args.seeds.unwrap_or(100);
    run_many(args.start, count, args.jobs, &args.without, plant)
}

fn planted_bug(name: &str) -> Result<copycat_planted::PlantedBug, String> {
    if !cfg!(feature = "planted-bugs") {
        return Err(
            "--plant needs a build with the bug switches compiled in: cargo run --release -p copycat-sim --features planted-bugs -- ..."
                .into(),
        );
    }
    copycat_planted::PlantedBug::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = copycat_planted::PlantedBug::ALL
            .iter()
            .map(|b| b.name())
            .collect();
        format!("unknown planted bug {name:?}; one of {}", names.join(", "))
    })
}

fn params(seed: u64, without: &[FaultKind]) -> SimParams {
    let params = without
        .iter()
        .fold(SimParams::from_seed(seed), |params, kind| {
            params.without(*kind)
        });
    if PRIMITIVES.load(Ordering::Relaxed) {
        params.with_primitives()
    } else {
        params
    }
}

fn run_seed(
    seed: u64,
    without: &[FaultKind],
    plant: Option<copycat_planted::PlantedBug>,
) -> RunReport {
    copycat_planted::with(plant, || {
        Simulation::new(params(seed, without), |_| {}).run()
    })
}

fn run_one(seed: u64, args: &Args, plant: Option<copycat_planted::PlantedBug>) -> ExitCode {
    out!("parameters: {}", params(seed, &args.without));
    if let Some(bug) = plant {
        out!("planted bug: {bug:?}");
    }
    let started = Instant::now();
    let report = run_seed(seed, &args.without, plant);
    let elapsed = started.elapsed();
    if let Some(path) = &args.history {
        if let Err(error) = std::fs::write(path, &report.history_json) {
            eprintln!("cannot write history to {}: {error}", path.display());
        }
    }
    let failed = matches!(report.outcome, Outcome::Failed(_));
    if failed || args.verbose {
        // The whole kept tail with -v; the events just before the end
        // otherwise.
        let shown = if args.verbose {
            report.trace_tail.len()
        } else {
            80
        };
        out!("last events:");
        for line in report.trace_tail.iter().rev().take(shown).rev() {
            out!("  {line}");
        }
    }
    out!("outcome: {}", describe(&report.outcome));
    out!(
        "events: {}  simulated: {}ms  committed: {}  terms with leaders: {}  wall: {:.2?}",
        report.events,
        report.end_ms,
        report.committed,
        report.terms,
        elapsed
    );
    out!("{}", report.stats);
    out!("digest: {:016x}", report.digest);
    if failed {
        let without: String = args
            .without
            .iter()
            .map(|k| format!(" --without {}", k.name()))
            .collect();
        let workload = if args.primitives { " --primitives" } else { "" };
        out!("reproduce: cargo run --release -p copycat-sim -- --seed {seed}{without}{workload}");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn run_many(
    start: u64,
    count: u64,
    jobs: Option<usize>,
    without: &[FaultKind],
    plant: Option<copycat_planted::PlantedBug>,
) -> ExitCode {
    let jobs = jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let next = AtomicU64::new(start);
    let finished = AtomicU64::new(0);
    let failures: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let stats: Mutex<Vec<HistoryStats>> = Mutex::new(Vec::new());
    let unknown = AtomicU64::new(0);
    let started = Instant::now();
    out!("running {count} seeds from {start} on {jobs} threads");
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= start + count {
                    return;
                }
                let report = run_seed(seed, without, plant);
                stats.lock().expect("lock").push(report.stats.clone());
                match &report.outcome {
                    Outcome::Passed => {}
                    Outcome::PassedUnknownLinearizability => {
                        unknown.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::Failed(reason) => {
                        out!("seed {seed} FAILED: {reason}");
                        out!("  parameters: {}", report.params);
                        for line in report.trace_tail.iter().rev().take(25).rev() {
                            out!("    {line}");
                        }
                        let workload = if PRIMITIVES.load(Ordering::Relaxed) {
                            " --primitives"
                        } else {
                            ""
                        };
                        out!("  reproduce: cargo run --release -p copycat-sim -- --seed {seed}{workload}");
                        failures.lock().expect("lock").push((seed, reason.clone()));
                    }
                }
                let done = finished.fetch_add(1, Ordering::Relaxed) + 1;
                if done.is_multiple_of(100) || done == count {
                    let mut stdout = std::io::stdout().lock();
                    let progress = write!(
                        stdout,
                        "  {done}/{count} seeds, {:.1?}\r",
                        started.elapsed()
                    )
                    .and_then(|()| stdout.flush());
                    if progress.is_err() {
                        std::process::exit(0);
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().expect("lock");
    let failed = failures.len() as u64;
    out!("");
    let unknown = unknown.load(Ordering::Relaxed);
    if unknown > 0 {
        out!("{unknown} seeds passed with a history too large to decide linearizability");
    }
    out!("{}", StatsSummary::of(&stats.into_inner().expect("lock")));
    out!("elapsed {:.1?}", started.elapsed());
    out!("{} passed, {} failed", count - failed, failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn check_file(path: &std::path::Path, steps: u64) -> ExitCode {
    let read = if path.as_os_str() == "-" {
        History::read_json_lines(std::io::stdin().lock())
    } else {
        match std::fs::File::open(path) {
            Ok(file) => History::read_json_lines(std::io::BufReader::new(file)),
            Err(error) => {
                eprintln!("cannot open {}: {error}", path.display());
                return ExitCode::from(2);
            }
        }
    };
    let history = match read {
        Ok(history) => history,
        Err(error) => {
            eprintln!("{}: not a valid history: {error}", path.display());
            return ExitCode::from(2);
        }
    };
    let config = CheckConfig {
        steps_max: steps,
        ..CheckConfig::default()
    };
    match check(&Register::new(), &history, &config) {
        Ok(report) => {
            out!(
                "{} operations on {} keys, {} search steps",
                history.operations().len(),
                report.keys,
                report.steps
            );
            match report.verdict {
                Verdict::Linearizable => {
                    out!("linearizable");
                    ExitCode::SUCCESS
                }
                Verdict::NotLinearizable(violation) => {
                    out!("NOT linearizable: {violation:#?}");
                    ExitCode::FAILURE
                }
                Verdict::Unknown { reason, keys } => {
                    out!("unknown: {reason:?}; undecided keys {keys:?}");
                    ExitCode::from(3)
                }
            }
        }
        Err(error) => {
            eprintln!(
                "{}: the checker refused the history: {error}",
                path.display()
            );
            ExitCode::from(2)
        }
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Passed => "passed".into(),
        Outcome::PassedUnknownLinearizability => {
            "passed (linearizability undecided within budget)".into()
        }
        Outcome::Failed(reason) => format!("FAILED: {reason}"),
    }
}
