//! What a run's history holds, so that a test can require the workload to
//! stay demanding: enough operations, real concurrency, reads that check
//! writes, unknown outcomes that the checker must reason about.

use crate::history::History;

/// Counts over one run's client operations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistoryStats {
    /// Operations invoked (reads of every kind, writes, compare-and-sets).
    pub invoked: u64,
    /// Operations in the linearizability history that completed `ok`.
    pub ok: u64,
    /// Operations that definitely did not take effect.
    pub failed: u64,
    /// Operations whose outcome is unknown because the session was lost.
    pub unknown: u64,
    /// Operations the client gave up waiting for (also unknown).
    pub timed_out: u64,
    /// Linearizable reads answered.
    pub reads: u64,
    /// Sequential reads answered.
    pub sequential_reads: u64,
    /// Compare-and-sets that took effect.
    pub cas_ok: u64,
    /// Events delivered to clients (each checked against what was
    /// published).
    pub events: u64,
    /// Faults injected.
    pub faults: u64,
    /// Faults injected, by kind name.
    pub faults_by_kind: std::collections::BTreeMap<&'static str, u64>,
    /// Most client operations in flight at once.
    pub concurrency_max: u64,
    /// Operations in the history (invocations).
    pub history_operations: u64,
    /// Of them, with an unknown outcome (`info` or never completed).
    pub history_unknown: u64,
    /// What the primitive workload did, as the committed log shows it
    /// (all zero in key-value runs).
    pub primitives: crate::invariants::PrimitiveStats,
    /// Leader queries of the primitive workload answered and checked.
    pub primitive_queries: u64,
}

impl HistoryStats {
    pub(crate) fn note_concurrency(&mut self, in_flight: usize) {
        self.concurrency_max = self.concurrency_max.max(in_flight as u64);
    }

    /// Fill in the counts taken from the finished history.
    pub(crate) fn finish(&mut self, history: &History) {
        self.history_operations = history.operations().len() as u64;
        self.history_unknown = history
            .operations()
            .iter()
            .filter(|op| op.status.is_unknown())
            .count() as u64;
    }

    /// The fraction of history operations with an unknown outcome.
    pub fn unknown_fraction(&self) -> f64 {
        if self.history_operations == 0 {
            0.0
        } else {
            self.history_unknown as f64 / self.history_operations as f64
        }
    }
}

impl std::fmt::Display for HistoryStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "history {} ops ({:.1}% unknown), concurrency {}, reads {} + {} sequential, cas ok {}, events {}, faults {}",
            self.history_operations,
            100.0 * self.unknown_fraction(),
            self.concurrency_max,
            self.reads,
            self.sequential_reads,
            self.cas_ok,
            self.events,
            self.faults
        )?;
        let p = &self.primitives;
        if *p != Default::default() {
            write!(
                f,
                "\nprimitives: lock grants {} at once + {} to waiters, {} holds released by a session closing, {} increments, {} items polled",
                p.grants_now, p.grants_waited, p.released_by_close, p.increments, p.polled
            )?;
            write!(
                f,
                "\nsemaphore: {} permits granted at once + {} to waiters, {} returned by a session closing; election: {} leaders, {} lost by a session closing, {} leader queries; group: {} messages, {} acknowledged, {} redelivered, {} failed",
                p.permits_now,
                p.permits_waited,
                p.permits_returned_by_close,
                p.elected,
                p.leaders_lost_by_close,
                self.primitive_queries,
                p.messages_sent,
                p.messages_acked,
                p.messages_redelivered,
                p.messages_failed
            )?;
        }
        Ok(())
    }
}

/// Medians over many runs, for the floors the CI test sets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatsSummary {
    /// Runs summarized.
    pub runs: usize,
    /// Median operations per history.
    pub operations_median: u64,
    /// Median fraction of unknown outcomes.
    pub unknown_fraction_median: f64,
    /// Median of the most operations in flight at once.
    pub concurrency_median: u64,
    /// Median linearizable reads per run.
    pub reads_median: u64,
    /// Median successful compare-and-sets per run.
    pub cas_ok_median: u64,
    /// Runs whose history had no unknown outcome.
    pub runs_without_unknown: usize,
}

impl StatsSummary {
    /// Summarize `runs`.
    pub fn of(runs: &[HistoryStats]) -> Self {
        fn median<T: Copy + PartialOrd>(mut values: Vec<T>) -> Option<T> {
            values.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
            values.get(values.len() / 2).copied()
        }
        Self {
            runs: runs.len(),
            operations_median: median(runs.iter().map(|r| r.history_operations).collect())
                .unwrap_or(0),
            unknown_fraction_median: median(runs.iter().map(|r| r.unknown_fraction()).collect())
                .unwrap_or(0.0),
            concurrency_median: median(runs.iter().map(|r| r.concurrency_max).collect())
                .unwrap_or(0),
            reads_median: median(runs.iter().map(|r| r.reads).collect()).unwrap_or(0),
            cas_ok_median: median(runs.iter().map(|r| r.cas_ok).collect()).unwrap_or(0),
            runs_without_unknown: runs.iter().filter(|r| r.history_unknown == 0).count(),
        }
    }
}

impl std::fmt::Display for StatsSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "over {} runs, medians: {} operations per history, {:.1}% unknown outcomes, {} in flight at most, {} linearizable reads, {} successful compare-and-sets; {} runs without an unknown outcome",
            self.runs,
            self.operations_median,
            100.0 * self.unknown_fraction_median,
            self.concurrency_median,
            self.reads_median,
            self.cas_ok_median,
            self.runs_without_unknown
        )
    }
}
