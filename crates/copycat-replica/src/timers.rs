//! The timer schedule: timer ids and the pending timers in firing order.
//!
//! State machines schedule and cancel timers while they apply; the replica
//! fires what is due as its clock advances. Ids and deadlines are replicated
//! state, so every replica fires the same timers in the same order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Identifies a scheduled timer. Ids are assigned in scheduling order from a
/// counter that is part of the replica state, so every replica assigns the
/// same ids.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimerId(pub u64);

impl fmt::Debug for TimerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timer{}", self.0)
    }
}

/// Scheduling beyond [`crate::ReplicaConfig::max_timers`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("too many pending timers (limit {max})")]
pub struct TooManyTimers {
    /// The configured limit.
    pub max: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct TimerEntry {
    deadline_ms: u64,
    interval_ms: Option<u64>,
}

/// Pending timers, ordered by (deadline, id).
///
/// Invariant: `queue` and `entries` hold the same timers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Timers {
    next_id: u64,
    queue: BTreeSet<(u64, TimerId)>,
    entries: BTreeMap<TimerId, TimerEntry>,
}

impl Timers {
    /// How many timers are pending.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The pending timers, as (deadline, id), in firing order.
    pub(crate) fn pending(&self) -> impl Iterator<Item = (u64, TimerId)> + '_ {
        self.queue.iter().copied()
    }

    /// Schedule a timer `delay_ms` after `now_ms` (at least 1 ms), repeating
    /// every `interval_ms` if given, unless `max` are pending already.
    pub(crate) fn schedule(
        &mut self,
        now_ms: u64,
        delay_ms: u64,
        interval_ms: Option<u64>,
        max: usize,
    ) -> Result<TimerId, TooManyTimers> {
        if self.entries.len() >= max {
            return Err(TooManyTimers { max });
        }
        let id = TimerId(self.next_id);
        self.next_id += 1;
        let deadline_ms = now_ms.saturating_add(delay_ms.max(1));
        self.insert(
            id,
            TimerEntry {
                deadline_ms,
                interval_ms,
            },
        );
        Ok(id)
    }

    /// Cancel a timer. Returns whether it was pending.
    pub(crate) fn cancel(&mut self, timer: TimerId) -> bool {
        match self.entries.remove(&timer) {
            Some(entry) => {
                self.queue.remove(&(entry.deadline_ms, timer));
                true
            }
            None => false,
        }
    }

    /// Remove the first timer due at or before `until_ms` and return it with
    /// its deadline. A periodic timer is scheduled again one interval after
    /// that deadline (unless that is past `u64::MAX`: then it is dropped).
    pub(crate) fn pop_due(&mut self, until_ms: u64) -> Option<(TimerId, u64)> {
        let &(deadline, id) = self.queue.first()?;
        if deadline > until_ms {
            return None;
        }
        self.queue.pop_first();
        let entry = self.entries.remove(&id).expect("queued timer has an entry");
        // A periodic timer whose next deadline would pass the end of time
        // can never fire again: it is dropped (rescheduled at the same
        // deadline it would fire forever).
        if let Some(next) = entry
            .interval_ms
            .and_then(|interval| entry.deadline_ms.checked_add(interval.max(1)))
        {
            self.insert(
                id,
                TimerEntry {
                    deadline_ms: next,
                    interval_ms: entry.interval_ms,
                },
            );
        }
        Some((id, entry.deadline_ms))
    }

    fn insert(&mut self, id: TimerId, entry: TimerEntry) {
        self.queue.insert((entry.deadline_ms, id));
        self.entries.insert(id, entry);
    }

    /// Check the invariant on the fields; panics if it is broken.
    pub(crate) fn invariants(&self) {
        if let Err(broken) = self.validate() {
            panic!("timer invariant: {broken}");
        }
    }

    /// The invariants as a check: the first one broken, described (see
    /// `SessionTable::validate`).
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.queue.len() != self.entries.len() {
            return Err(format!(
                "{} timers queued but {} scheduled",
                self.queue.len(),
                self.entries.len()
            ));
        }
        for (deadline, id) in &self.queue {
            match self.entries.get(id) {
                Some(entry) if entry.deadline_ms == *deadline => {}
                _ => {
                    return Err(format!(
                        "{id:?} is queued at {deadline} but not scheduled then"
                    ))
                }
            }
            if id.0 >= self.next_id {
                return Err(format!(
                    "{id:?} was never assigned (next id {})",
                    self.next_id
                ));
            }
        }
        if let Some(id) = self.entries.iter().find(|(_, e)| e.interval_ms == Some(0)) {
            // It would fire again at the same deadline, forever.
            return Err(format!("{:?} repeats every 0 ms", id.0));
        }
        Ok(())
    }
}
