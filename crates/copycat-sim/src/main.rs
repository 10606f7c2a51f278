//! `copycat-sim`: run the deterministic cluster simulator over many seeds,
//! or reproduce one.
//!
//! ```text
//! copycat-sim --seeds 1000          # seeds 0..1000, ends with "N passed, M failed"
//! copycat-sim --seed 42             # one seed, with its parameters and trace digest
//! copycat-sim --seed 42 --history h.jsonl   # also write the client history
//! ```

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use clap::Parser;
use copycat_sim::sim::{Outcome, RunReport, SimParams, Simulation};

/// Deterministic simulation of Copycat clusters with fault injection.
///
/// Every run is a pure function of its seed: the same seed gives the same
/// events, the same faults and the same trace digest on any machine.
#[derive(Parser, Debug)]
#[command(name = "copycat-sim", version, about, long_about = None)]
struct Args {
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(seed) = args.seed {
        return run_one(seed, &args);
    }
    let count = args.seeds.unwrap_or(100);
    run_many(args.start, count, args.jobs)
}

fn run_seed(seed: u64) -> RunReport {
    Simulation::new(SimParams::from_seed(seed), |_| {}).run()
}

fn run_one(seed: u64, args: &Args) -> ExitCode {
    let params = SimParams::from_seed(seed);
    println!("parameters: {params}");
    let started = Instant::now();
    let report = run_seed(seed);
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
        println!("last events:");
        for line in report.trace_tail.iter().rev().take(shown).rev() {
            println!("  {line}");
        }
    }
    println!(
        "outcome: {}\nevents: {}  simulated: {}ms  committed: {}  terms with leaders: {}  ops ok/fail/unknown: {:?}  wall: {:.2?}",
        describe(&report.outcome),
        report.events,
        report.end_ms,
        report.committed,
        report.terms,
        report.operations,
        elapsed
    );
    println!("digest: {:016x}", report.digest);
    if failed {
        println!("reproduce: cargo run --release -p copycat-sim -- --seed {seed}");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn run_many(start: u64, count: u64, jobs: Option<usize>) -> ExitCode {
    let jobs = jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let next = AtomicU64::new(start);
    let finished = AtomicU64::new(0);
    let failures: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let unknown = AtomicU64::new(0);
    let started = Instant::now();
    println!("running {count} seeds from {start} on {jobs} threads");
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= start + count {
                    return;
                }
                let report = run_seed(seed);
                match &report.outcome {
                    Outcome::Passed => {}
                    Outcome::PassedUnknownLinearizability => {
                        unknown.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::Failed(reason) => {
                        println!("seed {seed} FAILED: {reason}");
                        println!("  parameters: {}", report.params);
                        for line in report.trace_tail.iter().rev().take(25).rev() {
                            println!("    {line}");
                        }
                        println!(
                            "  reproduce: cargo run --release -p copycat-sim -- --seed {seed}"
                        );
                        failures.lock().expect("lock").push((seed, reason.clone()));
                    }
                }
                let done = finished.fetch_add(1, Ordering::Relaxed) + 1;
                if done % 100 == 0 || done == count {
                    print!("  {done}/{count} seeds, {:.1?}\r", started.elapsed());
                    let _ = std::io::stdout().flush();
                }
            });
        }
    });
    let failures = failures.into_inner().expect("lock");
    let failed = failures.len() as u64;
    println!();
    let unknown = unknown.load(Ordering::Relaxed);
    if unknown > 0 {
        println!("{unknown} seeds passed with a history too large to decide linearizability");
    }
    println!("elapsed {:.1?}", started.elapsed());
    println!("{} passed, {} failed", count - failed, failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
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
