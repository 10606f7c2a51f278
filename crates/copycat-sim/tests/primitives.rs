//! The primitive workload under every fault: half the client operations go
//! to two contended locks, a counter and a queue of the replicated
//! primitives (`copycat_primitives::Resources`, carried by the simulated
//! state machine), the other half to the key-value store as usual. Each
//! seed checks mutual exclusion of lock grants, fencing tokens, grants only
//! to live sessions, the counter's value against the acknowledged and
//! unknown increments, and the queue's FIFO and at-most-once delivery,
//! besides every invariant of the key-value runs.
//!
//! `COPYCAT_SIM_PRIMITIVE_SEEDS` sets the number of seeds (default 150);
//! for more, use the binary:
//! `cargo run --release -p copycat-sim -- --seeds 10000 --primitives`.

use copycat_sim::sim::{Outcome, SimParams, Simulation};

#[test]
fn primitive_seeds_pass() {
    let count = std::env::var("COPYCAT_SIM_PRIMITIVE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150u64);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let reports: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                scope.spawn(move || {
                    (0..count)
                        .filter(|seed| seed % threads == worker)
                        .map(|seed| {
                            let params = SimParams::from_seed(seed).with_primitives();
                            (seed, Simulation::new(params, |_| {}).run())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    let failures: Vec<String> = reports
        .iter()
        .filter_map(|(seed, report)| match &report.outcome {
            Outcome::Failed(reason) => Some(format!(
                "seed {seed}: {reason}\n  reproduce: cargo run --release -p copycat-sim -- --seed {seed} --primitives"
            )),
            _ => None,
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {count} primitive seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The workload must stay demanding: locks change hands, waiters get
    // them, the counter and the queue are used.
    let total = |f: fn(&copycat_sim::invariants::PrimitiveStats) -> u64| -> u64 {
        reports.iter().map(|(_, r)| f(&r.stats.primitives)).sum()
    };
    let grants = total(|p| p.grants_now + p.grants_waited);
    let waited = total(|p| p.grants_waited);
    let increments = total(|p| p.increments);
    let polled = total(|p| p.polled);
    eprintln!(
        "{count} primitive seeds: {grants} lock grants ({waited} to waiters), {} released by a session closing, {increments} increments, {polled} items polled",
        total(|p| p.released_by_close)
    );
    assert!(grants >= 5 * count, "too few lock grants: {grants}");
    assert!(waited >= 3 * count, "too few grants to waiters: {waited}");
    assert!(increments >= 20 * count, "too few increments: {increments}");
    assert!(polled >= 10 * count, "too few items polled: {polled}");
}
