//! The primitive workload: with `SimParams::primitives` above zero, that
//! fraction of client operations go to the replicated primitives
//! (`copycat_primitives::Resources`, carried by the simulated state
//! machine) instead of the key-value store: two locks contended by every
//! client (lock with and without waiting, unlock), a counter incremented by
//! one, and a queue of unique items offered and polled. The safety of what
//! the state machine does is checked on the committed log
//! (`invariants/primitives.rs`); what the clients hear is checked here, and
//! the counter's final value against the clients' acknowledgements at the
//! end of the run.

use std::collections::BTreeSet;

use copycat_primitives::lock::{LockCommand, LockEvent, LockOutput};
use copycat_primitives::long::{LongCommand, LongOutput};
use copycat_primitives::queue::{QueueCommand, QueueOutput};
use copycat_primitives::{Command, Event, Notice, Output, ResourceError, Spec, EVENT_NAME};
use copycat_replica::codec;
use rand::Rng;

use super::world::Simulation;

/// The resources every primitive run uses, and how they are created.
pub(super) const RESOURCES: [(&str, Spec); 4] = [
    ("lock0", Spec::Lock { reentrant: false }),
    ("lock1", Spec::Lock { reentrant: false }),
    ("counter", Spec::Long),
    ("queue", Spec::Queue),
];
const COUNTER: &str = "counter";
const QUEUE: &str = "queue";

/// A primitive operation, for matching its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PrimitiveOp {
    Open(usize),
    Lock(usize),
    Unlock(usize),
    Increment,
    Offer,
    Poll,
}

/// What the clients heard from the primitives.
#[derive(Debug, Default)]
pub(super) struct PrimitiveClients {
    /// Per client, the resources it saw opened.
    opened: BTreeSet<(usize, usize)>,
    /// Per client, the locks it was told it holds, and those it waits for
    /// (so that holders unlock and waiters do not queue twice).
    held: BTreeSet<(usize, usize)>,
    waiting: BTreeSet<(usize, usize)>,
    /// Increments submitted, answered with a value, refused by the manager.
    increments: u64,
    increments_ok: u64,
    increments_failed: u64,
    /// Values the counter answered increments with.
    counter_values: BTreeSet<i64>,
    /// Items clients received from polls.
    polled: BTreeSet<Vec<u8>>,
}

impl Simulation {
    /// Choose the client's next primitive operation; `value` is unique per
    /// client operation (a queue item).
    pub(super) fn primitive_command(&mut self, client: usize, op: u64) -> (PrimitiveOp, Command) {
        let closed: Vec<usize> = (0..RESOURCES.len())
            .filter(|r| !self.primitive_clients.opened.contains(&(client, *r)))
            .collect();
        if !closed.is_empty() && self.rng.gen_bool(0.7) {
            let r = closed[self.rng.gen_range(0..closed.len())];
            let (name, spec) = RESOURCES[r];
            let command = Command::Open {
                name: name.to_string(),
                spec,
            };
            return (PrimitiveOp::Open(r), command);
        }
        match self.rng.gen_range(0..10) {
            0..=4 => {
                let p = &self.primitive_clients;
                let held: Vec<usize> = (0..2).filter(|l| p.held.contains(&(client, *l))).collect();
                let free: Vec<usize> = (0..2)
                    .filter(|l| {
                        !p.held.contains(&(client, *l)) && !p.waiting.contains(&(client, *l))
                    })
                    .collect();
                // Holders mostly unlock; now and then anyone unlocks
                // anything (and is told it does not hold it).
                let unlock = if !held.is_empty() && self.rng.gen_bool(0.7) {
                    Some(held[self.rng.gen_range(0..held.len())])
                } else if free.is_empty() || self.rng.gen_bool(0.1) {
                    Some(self.rng.gen_range(0..2))
                } else {
                    None
                };
                let lock = unlock.unwrap_or_else(|| free[self.rng.gen_range(0..free.len())]);
                let name = RESOURCES[lock].0.to_string();
                if unlock.is_none() {
                    let timeout_ms = match self.rng.gen_range(0..3) {
                        0 => Some(0),
                        1 => Some(self.rng.gen_range(1..=3 * self.params.election_timeout_ms)),
                        _ => None,
                    };
                    let command = LockCommand::Lock {
                        req: op,
                        timeout_ms,
                    };
                    (PrimitiveOp::Lock(lock), Command::Lock { name, command })
                } else {
                    let command = LockCommand::Unlock;
                    (PrimitiveOp::Unlock(lock), Command::Lock { name, command })
                }
            }
            5..=6 => {
                self.primitive_clients.increments += 1;
                let command = LongCommand::AddAndGet(1);
                let name = COUNTER.to_string();
                (PrimitiveOp::Increment, Command::Long { name, command })
            }
            7..=8 => {
                let item = format!("c{client}o{op}").into_bytes().into();
                let command = QueueCommand::Offer(item);
                let name = QUEUE.to_string();
                (PrimitiveOp::Offer, Command::Queue { name, command })
            }
            _ => {
                let name = QUEUE.to_string();
                let command = QueueCommand::Poll;
                (PrimitiveOp::Poll, Command::Queue { name, command })
            }
        }
    }

    /// A client received an event: note the grants and timeouts of its
    /// lock requests. (The events themselves are checked against what the
    /// state machine published, in `clients.rs`.)
    pub(super) fn primitive_event(&mut self, client: usize, event: &copycat_proto::Event) {
        if event.name != EVENT_NAME {
            return;
        }
        let Ok(notice) = codec::decode::<Notice>(&event.payload) else {
            return;
        };
        let Some(lock) = RESOURCES[..2]
            .iter()
            .position(|(n, _)| *n == notice.resource)
        else {
            return;
        };
        let p = &mut self.primitive_clients;
        match notice.event {
            Event::Lock(LockEvent::Granted { .. }) => {
                p.waiting.remove(&(client, lock));
                p.held.insert((client, lock));
            }
            Event::Lock(LockEvent::TimedOut { .. }) => {
                p.waiting.remove(&(client, lock));
            }
            _ => {}
        }
    }

    /// A client's session is gone: it holds and waits for nothing.
    pub(super) fn primitive_session_lost(&mut self, client: usize) {
        let p = &mut self.primitive_clients;
        p.held.retain(|(c, _)| *c != client);
        p.waiting.retain(|(c, _)| *c != client);
    }

    /// An increment was refused before it was sent: it never happened.
    pub(super) fn primitive_refused(&mut self, op: PrimitiveOp) {
        if op == PrimitiveOp::Increment {
            self.primitive_clients.increments_failed += 1;
        }
    }

    /// A client heard the answer to a primitive operation.
    pub(super) fn primitive_done(
        &mut self,
        client: usize,
        op: PrimitiveOp,
        result: Result<Output, ResourceError>,
    ) -> Result<(), String> {
        let p = &mut self.primitive_clients;
        match (op, result) {
            (PrimitiveOp::Open(r), Ok(Output::Opened { .. })) => {
                p.opened.insert((client, r));
            }
            (PrimitiveOp::Lock(lock), Ok(Output::Lock(LockOutput::Acquired(_)))) => {
                p.held.insert((client, lock));
            }
            (PrimitiveOp::Lock(lock), Ok(Output::Lock(LockOutput::Waiting))) => {
                p.waiting.insert((client, lock));
            }
            (PrimitiveOp::Unlock(lock), Ok(_) | Err(ResourceError::NotHolder)) => {
                p.held.remove(&(client, lock));
            }
            (PrimitiveOp::Increment, Ok(Output::Long(LongOutput::Value(value)))) => {
                p.increments_ok += 1;
                if !p.counter_values.insert(value) {
                    return Err(format!(
                        "counter: two increments were both answered {value}"
                    ));
                }
            }
            (PrimitiveOp::Increment, Err(_)) => p.increments_failed += 1,
            (PrimitiveOp::Poll, Ok(Output::Queue(QueueOutput::Value(Some(item)))))
                if !p.polled.insert(item.to_vec()) =>
            {
                return Err(format!(
                    "queue: item {item:?} was delivered to clients twice"
                ));
            }
            (op, Err(error)) => {
                // Errors the workload provokes on purpose (unlocking a lock
                // not held, using a resource not opened yet) are definite
                // answers; anything else is a bug.
                let expected = matches!(
                    (op, &error),
                    (PrimitiveOp::Unlock(_), ResourceError::NotHolder)
                        | (_, ResourceError::NotFound { .. })
                );
                if !expected {
                    return Err(format!("primitive {op:?} answered {error:?}"));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// After the heal, the counter the committed log leaves holds every
    /// acknowledged increment and at most the unknown ones besides.
    pub(super) fn check_counter(&self) -> Result<(), String> {
        let p = &self.primitive_clients;
        let value = self.observer.primitives.counter(COUNTER);
        let ok = p.increments_ok as i64;
        let unknown = (p.increments - p.increments_ok - p.increments_failed) as i64;
        if value < ok || value > ok + unknown {
            return Err(format!(
                "counter: final value {value}, but {ok} increments were acknowledged and {unknown} have an unknown outcome (allowed {ok}..={})",
                ok + unknown
            ));
        }
        if let Some(max) = p.counter_values.last() {
            if *max > value {
                return Err(format!(
                    "counter: an increment was answered {max}, above the final value {value}"
                ));
            }
        }
        Ok(())
    }
}
