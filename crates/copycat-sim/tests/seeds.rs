//! The simulator's main CI run: many seeds with faults, each checked for
//! every invariant, convergence after healing, and linearizability; and the
//! histories must stay demanding (the floors below), or a passing run would
//! prove little.
//!
//! `COPYCAT_SIM_SEEDS` sets the number of seeds (default 1000) and
//! `COPYCAT_SIM_START` the first one. For a long soak, use the binary:
//! `cargo run --release -p copycat-sim -- --seeds 100000`.

use copycat_sim::sim::{HistoryStats, Outcome, SimParams, Simulation, StatsSummary};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Medians over the seeds that the workload must reach.
const OPERATIONS_MEDIAN_MIN: u64 = 250;
const UNKNOWN_FRACTION_MEDIAN_MIN: f64 = 0.05;
const CONCURRENCY_MEDIAN_MIN: u64 = 10;
const READS_MEDIAN_MIN: u64 = 50;
const CAS_OK_MEDIAN_MIN: u64 = 3;

#[test]
fn seeds_pass() {
    let start = env("COPYCAT_SIM_START", 0);
    let count = env("COPYCAT_SIM_SEEDS", 1000);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let (failures, stats): (Vec<String>, Vec<HistoryStats>) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    let mut stats = Vec::new();
                    let mut seed = start + worker;
                    while seed < start + count {
                        let report = Simulation::new(SimParams::from_seed(seed), |_| {}).run();
                        if let Outcome::Failed(reason) = report.outcome {
                            failures.push(format!(
                                "seed {seed}: {reason}\n  reproduce: cargo run --release -p copycat-sim -- --seed {seed}"
                            ));
                        }
                        stats.push(report.stats);
                        seed += threads;
                    }
                    (failures, stats)
                })
            })
            .collect();
        let mut failures = Vec::new();
        let mut stats = Vec::new();
        for worker in workers {
            let (f, s) = worker.join().expect("worker");
            failures.extend(f);
            stats.extend(s);
        }
        (failures, stats)
    });
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let summary = StatsSummary::of(&stats);
    println!("{summary}");
    if count >= 500 {
        assert!(
            summary.operations_median >= OPERATIONS_MEDIAN_MIN
                && summary.unknown_fraction_median >= UNKNOWN_FRACTION_MEDIAN_MIN
                && summary.concurrency_median >= CONCURRENCY_MEDIAN_MIN
                && summary.reads_median >= READS_MEDIAN_MIN
                && summary.cas_ok_median >= CAS_OK_MEDIAN_MIN,
            "the workload got gentler than the floors ({OPERATIONS_MEDIAN_MIN} operations, \
             {:.0}% unknown, {CONCURRENCY_MEDIAN_MIN} in flight, {READS_MEDIAN_MIN} reads, \
             {CAS_OK_MEDIAN_MIN} successful compare-and-sets per history): {summary}",
            UNKNOWN_FRACTION_MEDIAN_MIN * 100.0
        );
    }
}
