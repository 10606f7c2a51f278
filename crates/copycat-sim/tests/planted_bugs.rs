//! The simulator earns trust by catching known bugs. Every bug of
//! `copycat_planted::PlantedBug` (in the Raft core, the replica, the server
//! core and shell, the storage, the client session and the replicated
//! primitives) is switched on in turn, and the simulator must report a
//! failure within the seeds CI runs (0..1000, the `seeds` test's range)
//! with their parameters as drawn; the primitives' bugs run the primitive
//! workload (`SimParams::with_primitives`), the others the key-value one.
//!
//! Bugs the default seeds cannot reach are listed in `not_reachable` with
//! where they are caught instead. A bug no run catches fails the test, naming
//! it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use copycat_planted::PlantedBug;
use copycat_sim::sim::{Outcome, SimParams, Simulation};

/// The seeds CI runs.
const SEEDS: u64 = 1000;

/// A bug and the first seed that caught it, with the failure.
type Found = (PlantedBug, Option<(u64, String)>);

/// Bugs the simulator cannot reach, with the reason and where they are
/// caught instead.
fn not_reachable(bug: PlantedBug) -> Option<&'static str> {
    match bug {
        // The cap matters only when a successful append covers less than a
        // follower's stale suffix; the leader's conflict hints always send
        // the first append from the divergence point, whose entries
        // truncate the stale suffix, so the simulator never sees it (one run
        // of 1,000 seeds with one-entry appends found it once). The Raft
        // core's own test (`copycat-raft/tests/planted.rs`) builds that
        // append by hand and shows the wrong commit.
        PlantedBug::FollowerCommitUncapped => {
            Some("unreachable with conflict hints; caught by copycat-raft/tests/planted.rs")
        }
        _ => None,
    }
}

/// Bugs in the replicated primitives, which only the primitive workload
/// exercises.
fn in_primitives(bug: PlantedBug) -> bool {
    matches!(
        bug,
        PlantedBug::LockGrantBeforeExpiry
            | PlantedBug::SemaphoreReleaseUnchecked
            | PlantedBug::SemaphoreCloseKeepsPermits
            | PlantedBug::ElectionKeepsClosedLeader
            | PlantedBug::GroupCloseSkipsRedelivery
    )
}

fn first_failing_seed(bug: PlantedBug) -> Option<(u64, String)> {
    (0..SEEDS).find_map(|seed| {
        let params = if in_primitives(bug) {
            SimParams::from_seed(seed).with_primitives()
        } else {
            SimParams::from_seed(seed)
        };
        let report = copycat_planted::with(Some(bug), || Simulation::new(params, |_| {}).run());
        match report.outcome {
            Outcome::Failed(reason) => Some((seed, reason)),
            _ => None,
        }
    })
}

#[test]
fn every_planted_bug_is_caught_within_the_ci_seeds() {
    let reachable = PlantedBug::ALL
        .iter()
        .filter(|bug| not_reachable(**bug).is_none())
        .count();
    assert!(
        reachable >= 20,
        "at least 20 planted bugs the simulator must catch"
    );
    // `COPYCAT_PLANTED_ONLY=StaleLease` runs one bug (when working on it).
    let only = std::env::var("COPYCAT_PLANTED_ONLY").ok();
    let bugs: Vec<PlantedBug> = PlantedBug::ALL
        .iter()
        .copied()
        .filter(|bug| only.as_ref().is_none_or(|name| format!("{bug:?}") == *name))
        .filter(|bug| match not_reachable(*bug) {
            Some(why) => {
                println!("{bug:?}: not run ({why})");
                false
            }
            None => true,
        })
        .collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Found>> = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(bug) = bugs.get(index).copied() else {
                    return;
                };
                let found = first_failing_seed(bug);
                results.lock().expect("lock").push((bug, found));
            });
        }
    });
    let mut results = results.into_inner().expect("lock");
    results.sort_by_key(|(bug, _)| *bug);
    let mut missed = Vec::new();
    for (bug, found) in &results {
        match found {
            Some((seed, reason)) => {
                let reason: String = reason.chars().take(160).collect();
                println!("{bug:?}: caught at seed {seed}: {reason}");
            }
            None => {
                println!("{bug:?}: NOT caught in {SEEDS} seeds");
                missed.push(*bug);
            }
        }
    }
    assert!(
        missed.is_empty(),
        "planted bugs the simulator did not catch within {SEEDS} seeds: {missed:?}"
    );
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 17, 4242] {
        let a = Simulation::new(SimParams::from_seed(seed), |_| {}).run();
        let b = Simulation::new(SimParams::from_seed(seed), |_| {}).run();
        assert_eq!(a.digest, b.digest, "seed {seed} is not deterministic");
        assert_eq!(a.events, b.events);
        assert_eq!(a.history_json, b.history_json);
        assert!(
            matches!(
                a.outcome,
                Outcome::Passed | Outcome::PassedUnknownLinearizability
            ),
            "{:?}",
            a.outcome
        );
    }
}

#[test]
fn a_fault_kind_can_be_turned_off() {
    use copycat_sim::sim::FaultKind;
    // A seed whose run crashes servers (most do).
    let params = (0..50)
        .map(SimParams::from_seed)
        .find(|params| {
            let report = Simulation::new(params.clone(), |_| {}).run();
            report
                .stats
                .faults_by_kind
                .get("crash")
                .is_some_and(|n| *n > 0)
        })
        .expect("a seed below 50 crashes a server");
    let without = params.clone().without(FaultKind::Crash);
    assert_eq!(without.faults.setting(FaultKind::Crash).weight, 0.0);
    assert_eq!(
        without.faults.setting(FaultKind::Partition),
        params.faults.setting(FaultKind::Partition)
    );
    let report = Simulation::new(without, |_| {}).run();
    assert!(report.stats.faults > 0);
    assert_eq!(report.stats.faults_by_kind.get("crash"), None);
}
