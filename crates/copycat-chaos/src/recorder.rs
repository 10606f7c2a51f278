//! The history of a run: every client operation with its invocation and
//! completion, in real-time order, in the simulator's JSON-lines format.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use copycat_sim::history::{EventType, History, OperationId, OperationStatus, ProcessId};
use serde_json::Value;

/// How an operation ended, as the workload saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It took effect.
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// It may or may not have taken effect (timeout, lost connection).
    Info,
}

/// A shared, append-only history. Times are milliseconds since the run
/// began; the history's line order is the real-time order because every
/// event takes the lock before it reads the clock.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<History>>,
    start: Instant,
}

impl Recorder {
    /// An empty history whose time 0 is `start`.
    pub fn new(start: Instant) -> Self {
        Self {
            inner: Arc::new(Mutex::new(History::new())),
            start,
        }
    }

    /// Milliseconds since the run began.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Record that `process` invokes `f` on `key` with `value`.
    pub fn invoke(
        &self,
        process: u64,
        f: &str,
        key: impl Into<copycat_sim::history::Key>,
        value: Value,
    ) -> OperationId {
        let mut history = self.inner.lock().expect("history lock");
        let time = self.now_ms().max(history.last_time());
        history.invoke(ProcessId(process), f, key, value, time)
    }

    /// Record how operation `id` ended; `value` is its result for `ok`.
    pub fn complete(&self, id: OperationId, outcome: Outcome, value: Value) {
        let mut history = self.inner.lock().expect("history lock");
        let time = self.now_ms().max(history.last_time());
        match outcome {
            Outcome::Ok => history.complete(id, EventType::Ok, value, time),
            Outcome::Fail => history.fail(id, time),
            Outcome::Info => history.info(id, time),
        }
    }

    /// A copy of the history so far.
    pub fn snapshot(&self) -> History {
        self.inner.lock().expect("history lock").clone()
    }

    /// Operation counts by outcome: (ok, fail, info or never completed).
    pub fn counts(&self) -> (usize, usize, usize) {
        let history = self.inner.lock().expect("history lock");
        let mut counts = (0, 0, 0);
        for op in history.operations() {
            match op.status {
                OperationStatus::Ok => counts.0 += 1,
                OperationStatus::Fail => counts.1 += 1,
                OperationStatus::Info | OperationStatus::Pending => counts.2 += 1,
            }
        }
        counts
    }
}
