//! The primitive workload under every fault: half the client operations go
//! to two contended locks, a counter, a queue, a semaphore, an election and
//! a group of the replicated primitives (`copycat_primitives::Resources`,
//! carried by the simulated state machine), the other half to the
//! key-value store as usual. Each seed checks mutual exclusion of lock
//! grants, fencing tokens, grants only to live sessions, the counter's
//! value against the acknowledged and unknown increments, the queue's FIFO
//! and at-most-once delivery, the semaphore's permits (never over-granted,
//! returned by closing sessions, handed to waiters in order), the
//! election's leaders (one per term, terms increasing, none reported after
//! its session closed) and the group's messages (delivered only to alive
//! members, redelivered or failed when their recipient dies, acknowledged
//! once), besides every invariant of the key-value runs.
//!
//! `COPYCAT_SIM_PRIMITIVE_SEEDS` sets the number of seeds (default 150);
//! for more, use the binary:
//! `cargo run --release -p copycat-sim -- --seeds 10000 --primitives`.

use copycat_sim::sim::{Outcome, SimParams, Simulation};

/// Floors per ten seeds of what the coordination primitives must see
/// (about a third of what the 150 default seeds gave when they were set:
/// 50 permits granted, 17 of them to waiters, 17 leaders, 85 leader
/// queries, 88 messages and 25 acknowledgements per ten seeds).
const FLOOR_PERMITS: u64 = 16;
const FLOOR_PERMITS_WAITED: u64 = 5;
const FLOOR_ELECTED: u64 = 5;
const FLOOR_QUERIES: u64 = 28;
const FLOOR_SENT: u64 = 33;
const FLOOR_ACKED: u64 = 10;

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
    // them, the counter and the queue are used, permits and leadership
    // change hands (also by sessions closing), messages are acknowledged,
    // redelivered and failed.
    let total = |f: fn(&copycat_sim::invariants::PrimitiveStats) -> u64| -> u64 {
        reports.iter().map(|(_, r)| f(&r.stats.primitives)).sum()
    };
    let grants = total(|p| p.grants_now + p.grants_waited);
    let waited = total(|p| p.grants_waited);
    let increments = total(|p| p.increments);
    let polled = total(|p| p.polled);
    let permits = total(|p| p.permits_now + p.permits_waited);
    let permits_waited = total(|p| p.permits_waited);
    let permits_returned = total(|p| p.permits_returned_by_close);
    let elected = total(|p| p.elected);
    let leaders_lost = total(|p| p.leaders_lost_by_close);
    let sent = total(|p| p.messages_sent);
    let acked = total(|p| p.messages_acked);
    let redelivered = total(|p| p.messages_redelivered);
    let failed = total(|p| p.messages_failed);
    let queries: u64 = reports.iter().map(|(_, r)| r.stats.primitive_queries).sum();
    eprintln!(
        "{count} primitive seeds: {grants} lock grants ({waited} to waiters), {} released by a session closing, {increments} increments, {polled} items polled; \
         semaphore: {permits} permits granted ({permits_waited} to waiters), {permits_returned} returned by a session closing; \
         election: {elected} leaders, {leaders_lost} lost by a session closing, {queries} leader queries; \
         group: {sent} messages, {acked} acknowledged, {redelivered} redelivered, {failed} failed",
        total(|p| p.released_by_close)
    );
    assert!(grants >= 5 * count, "too few lock grants: {grants}");
    assert!(waited >= 3 * count, "too few grants to waiters: {waited}");
    // (Increments and polls have half the share of operations they had
    // before the semaphore, election and group joined the workload.)
    assert!(increments >= 8 * count, "too few increments: {increments}");
    assert!(polled >= 4 * count, "too few items polled: {polled}");
    assert!(
        10 * permits >= FLOOR_PERMITS * count,
        "too few permits granted: {permits}"
    );
    assert!(
        10 * permits_waited >= FLOOR_PERMITS_WAITED * count,
        "too few permits granted to waiters: {permits_waited}"
    );
    assert!(
        permits_returned >= 1,
        "no permits returned by a session closing in {count} seeds"
    );
    assert!(
        10 * elected >= FLOOR_ELECTED * count,
        "too few leaders: {elected}"
    );
    assert!(
        leaders_lost >= 1,
        "no leader lost its leadership by its session closing in {count} seeds"
    );
    assert!(
        10 * queries >= FLOOR_QUERIES * count,
        "too few leader queries: {queries}"
    );
    assert!(
        10 * sent >= FLOOR_SENT * count,
        "too few group messages: {sent}"
    );
    assert!(
        10 * acked >= FLOOR_ACKED * count,
        "too few acknowledgements: {acked}"
    );
    assert!(
        redelivered >= 1 && failed >= 1,
        "no group message redelivered ({redelivered}) or failed ({failed}) in {count} seeds"
    );
}
