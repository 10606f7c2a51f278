//! The simulator's main CI run: many seeds with faults, each checked for
//! every invariant, convergence after healing, and linearizability.
//!
//! `COPYCAT_SIM_SEEDS` sets the number of seeds (default 1000) and
//! `COPYCAT_SIM_START` the first one. For a long soak, use the binary:
//! `cargo run --release -p copycat-sim -- --seeds 100000`.

use copycat_sim::sim::{Outcome, SimParams, Simulation};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn seeds_pass() {
    let start = env("COPYCAT_SIM_START", 0);
    let count = env("COPYCAT_SIM_SEEDS", 1000);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    let mut seed = start + worker;
                    while seed < start + count {
                        let report = Simulation::new(SimParams::from_seed(seed), |_| {}).run();
                        if let Outcome::Failed(reason) = report.outcome {
                            failures.push(format!(
                                "seed {seed}: {reason}\n  reproduce: cargo run --release -p copycat-sim -- --seed {seed}"
                            ));
                        }
                        seed += threads;
                    }
                    failures
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
