//! Safety of the replicated primitives (the primitive workload's locks,
//! counter and queue), judged on the committed log as the reference replica
//! replays it: every entry once, in order, with what applying it answered
//! and published. Every replica reports the same events per entry (checked
//! in `replica_reports.rs`), so what holds for the reference holds for all.
//!
//! - **Lock**: a grant (an `Acquired` answer, or a `Granted` event to a
//!   waiter) happens only while nobody holds the lock; a hold ends by its
//!   holder's successful unlock or by its session closing; fencing tokens
//!   strictly increase per lock and are never reused across locks; no grant
//!   goes to a session the log already closed or expired; an unlock succeeds
//!   exactly when the caller holds the lock, and a try-lock or a wait is
//!   answered only while someone holds it.
//! - **Counter**: each applied increment answers the previous value plus
//!   one; at the end the value lies between the increments acknowledged to
//!   clients and those plus the increments of unknown outcome.
//! - **Queue**: the queue behaves as a FIFO queue (each poll takes the
//!   oldest item offered and not yet taken), so each item is delivered at
//!   most once, and only after it was offered.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use copycat_primitives::election::ElectionQuery;
use copycat_primitives::lock::{LockCommand, LockEvent, LockOutput};
use copycat_primitives::long::{LongCommand, LongOutput};
use copycat_primitives::queue::{QueueCommand, QueueOutput};
use copycat_primitives::{Command, Event, Notice, Output, Query, ResourceError, EVENT_NAME};
use copycat_proto::{LogBody, LogCommand, Response, SessionId};
use copycat_raft::{Entry, EntryPayload};
use copycat_replica::{codec, Applied, Outcome};

use super::Check;
use crate::sim::kv::{KvAction, KvCommand, KvOutput};

/// A lock's state as the log shows it.
#[derive(Debug, Default)]
struct LockTrack {
    /// Holding session, its token and the index of the grant.
    holder: Option<(SessionId, u64, u64)>,
    /// The last token granted.
    last_token: u64,
}

/// What the primitive checks remember.
#[derive(Debug, Default)]
pub struct PrimitiveChecker {
    locks: BTreeMap<String, LockTrack>,
    /// Every token granted (on any lock): tokens are never reused.
    tokens: BTreeSet<u64>,
    /// Sessions registered and not closed yet.
    live: BTreeSet<SessionId>,
    /// Sessions the log closed (unregistered or expired).
    closed: BTreeSet<SessionId>,
    /// Counter name to its value from the applied increments.
    counters: BTreeMap<String, i64>,
    /// Queue name to its items, as a FIFO model.
    queues: BTreeMap<String, VecDeque<Bytes>>,
    /// Items ever offered and ever delivered.
    offered: BTreeSet<Bytes>,
    delivered: BTreeSet<Bytes>,
    /// The semaphores, elections and groups (`coordination.rs`).
    coordination: super::coordination::Coordination,
    /// Totals, for the workload's statistics.
    pub stats: PrimitiveStats,
}

/// What the primitive workload did, as the log shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrimitiveStats {
    /// Lock grants answered at once.
    pub grants_now: u64,
    /// Lock grants to a waiter (by event).
    pub grants_waited: u64,
    /// Holds ended by a session closing.
    pub released_by_close: u64,
    /// Increments applied.
    pub increments: u64,
    /// Items polled.
    pub polled: u64,
    /// Semaphore permits granted at once.
    pub permits_now: u64,
    /// Semaphore permits granted to waiters.
    pub permits_waited: u64,
    /// Semaphore permits returned by a session closing.
    pub permits_returned_by_close: u64,
    /// Elections won (a new leader, at once or by event).
    pub elected: u64,
    /// Leaders that lost leadership by their session closing.
    pub leaders_lost_by_close: u64,
    /// Group messages created (one per recipient).
    pub messages_sent: u64,
    /// Group messages acknowledged.
    pub messages_acked: u64,
    /// Group messages delivered again (to another member, or to a
    /// persistent member's new session).
    pub messages_redelivered: u64,
    /// Group messages reported failed to their sender.
    pub messages_failed: u64,
}

/// What one committed entry did to the primitives, as the reference replica
/// reports it: decoded from the entry and its [`Applied`] record by
/// [`PrimitiveStep::decode`], or built by hand (the checkers' own tests
/// feed them bad histories this way).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PrimitiveStep {
    /// The entry's index.
    pub index: u64,
    /// The session the entry registered, if it did.
    pub registered: Option<SessionId>,
    /// The sessions the entry closed (unregistered or expired), in order.
    pub closed: Vec<SessionId>,
    /// The primitive command applied at this entry (not a retry answered
    /// from the result cache): its session, the command and the answer.
    pub command: Option<(SessionId, Command, Result<Output, ResourceError>)>,
    /// The primitive events the entry published, with the receiving
    /// session: in order within one session, sessions in ascending order
    /// (the order across sessions is not the order of publishing).
    pub events: Vec<(SessionId, Notice)>,
}

impl PrimitiveStep {
    /// The step `entry` made, as `record` reports it.
    pub fn decode(entry: &Entry, record: &Applied) -> Result<Self, String> {
        let index = record.index.0;
        let registered = match &record.outcome {
            Outcome::Register {
                result: Ok(Response::Registered { session, .. }),
                ..
            } => Some(*session),
            _ => None,
        };
        let mut events = Vec::new();
        for batch in &record.events {
            for event in &batch.events {
                if event.name != EVENT_NAME {
                    continue;
                }
                let Ok(notice) = codec::decode::<Notice>(&event.payload) else {
                    return Err(format!("primitives: undecodable event at {index}"));
                };
                events.push((batch.session, notice));
            }
        }
        Ok(Self {
            index,
            registered,
            closed: record.closed.clone(),
            command: applied_primitive(entry, record),
            events,
        })
    }
}

impl PrimitiveChecker {
    /// The reference replica applied `entry`, reporting `record`.
    pub fn on_applied(&mut self, entry: &Entry, record: &Applied) -> Check {
        let step = PrimitiveStep::decode(entry, record)?;
        self.on_step(&step)
    }

    /// Check one entry's step, in log order.
    pub fn on_step(&mut self, step: &PrimitiveStep) -> Check {
        let index = step.index;
        if let Some(session) = step.registered {
            self.live.insert(session);
        }
        // Sessions this entry closes release what they held first: the
        // manager hands their locks on within the same entry.
        for session in &step.closed {
            self.live.remove(session);
            self.closed.insert(*session);
            for lock in self.locks.values_mut() {
                if lock.holder.is_some_and(|(s, _, _)| s == *session) {
                    lock.holder = None;
                    self.stats.released_by_close += 1;
                }
            }
        }
        if let Some((session, command, result)) = &step.command {
            self.on_command(index, *session, command.clone(), result.clone())?;
        }
        for (session, notice) in &step.events {
            if let Event::Lock(LockEvent::Granted { token, .. }) = notice.event {
                self.stats.grants_waited += 1;
                self.grant(index, &notice.resource, *session, token)?;
            }
        }
        self.coordination.on_step(step, &self.live, &mut self.stats)
    }

    fn grant(&mut self, index: u64, name: &str, session: SessionId, token: u64) -> Check {
        if !self.live.contains(&session) {
            let why = if self.closed.contains(&session) {
                "the log had already closed or expired"
            } else {
                "never registered"
            };
            return Err(format!(
                "lock {name}: granted at {index} to session {} which {why}",
                session.0
            ));
        }
        let lock = self.locks.entry(name.to_string()).or_default();
        if let Some((holder, held, at)) = lock.holder {
            return Err(format!(
                "lock {name}: mutual exclusion: granted at {index} to session {} (token {token}) while session {} holds it (token {held}, granted at {at})",
                session.0, holder.0
            ));
        }
        if token <= lock.last_token {
            return Err(format!(
                "lock {name}: fencing token {token} granted at {index} does not exceed the previous token {}",
                lock.last_token
            ));
        }
        if !self.tokens.insert(token) {
            return Err(format!(
                "lock {name}: fencing token {token} granted at {index} was issued before"
            ));
        }
        lock.last_token = token;
        lock.holder = Some((session, token, index));
        Ok(())
    }

    fn on_command(
        &mut self,
        index: u64,
        session: SessionId,
        command: Command,
        result: Result<Output, ResourceError>,
    ) -> Check {
        match (command, result) {
            (Command::Lock { name, command }, result) => {
                let holder = self
                    .locks
                    .get(&name)
                    .and_then(|l| l.holder)
                    .map(|(s, _, _)| s);
                match (command, result) {
                    (LockCommand::Lock { .. }, Ok(Output::Lock(LockOutput::Acquired(token)))) => {
                        self.stats.grants_now += 1;
                        self.grant(index, &name, session, token)?;
                    }
                    (
                        LockCommand::Lock { .. },
                        Ok(Output::Lock(LockOutput::Waiting | LockOutput::NotAcquired)),
                    ) if holder.is_none() => {
                        return Err(format!(
                            "lock {name}: session {} was refused or queued at {index} while nobody held the lock",
                            session.0
                        ));
                    }
                    (LockCommand::Unlock, Ok(_)) => {
                        if holder != Some(session) {
                            return Err(format!(
                                "lock {name}: session {} unlocked at {index} but the holder is {holder:?}",
                                session.0
                            ));
                        }
                        if let Some(lock) = self.locks.get_mut(&name) {
                            lock.holder = None;
                        }
                    }
                    (LockCommand::Unlock, Err(ResourceError::NotHolder))
                        if holder == Some(session) =>
                    {
                        return Err(format!(
                            "lock {name}: the holder, session {}, was refused its unlock at {index}",
                            session.0
                        ));
                    }
                    _ => {}
                }
            }
            (
                Command::Long {
                    name,
                    command: LongCommand::AddAndGet(delta),
                },
                Ok(Output::Long(LongOutput::Value(value))),
            ) => {
                let counter = self.counters.entry(name.clone()).or_default();
                *counter += delta;
                self.stats.increments += 1;
                if value != *counter {
                    return Err(format!(
                        "counter {name}: the increment applied at {index} answered {value}, but the increments applied so far sum to {counter}"
                    ));
                }
            }
            (
                Command::Queue {
                    name,
                    command: QueueCommand::Offer(item),
                },
                Ok(Output::Queue(QueueOutput::Bool(true))),
            ) => {
                if !self.offered.insert(item.clone()) {
                    return Err(format!("queue {name}: item {item:?} offered twice"));
                }
                self.queues.entry(name).or_default().push_back(item);
            }
            (
                Command::Queue {
                    name,
                    command: QueueCommand::Poll,
                },
                Ok(Output::Queue(QueueOutput::Value(item))),
            ) => {
                let expected = self.queues.entry(name.clone()).or_default().pop_front();
                if let Some(item) = &item {
                    self.stats.polled += 1;
                    if !self.offered.contains(item) {
                        return Err(format!(
                            "queue {name}: poll at {index} delivered {item:?}, which was never offered"
                        ));
                    }
                    if !self.delivered.insert(item.clone()) {
                        return Err(format!(
                            "queue {name}: poll at {index} delivered {item:?} a second time"
                        ));
                    }
                }
                if item != expected {
                    return Err(format!(
                        "queue {name}: poll at {index} took {item:?}, but the oldest item offered and not taken is {expected:?}"
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A query of the primitives answered `result` from the state at
    /// `index`, which the log has reached: a query of the election's leader
    /// must answer the leader the log gives there. (The workload asks no
    /// other query.)
    pub fn check_query(
        &self,
        query: &Query,
        result: &Result<Output, ResourceError>,
        index: u64,
    ) -> Check {
        match query {
            Query::Election {
                name,
                query: ElectionQuery::Leader,
            } => self.coordination.check_leader_query(name, index, result),
            other => Err(format!("primitives: no check for query {other:?}")),
        }
    }

    /// The counter's value as the committed log leaves it.
    pub fn counter(&self, name: &str) -> i64 {
        self.counters.get(name).copied().unwrap_or_default()
    }
}

/// The primitive command `entry` carries, if it applied at this entry (not
/// a retry answered from the result cache), with its session and answer.
#[allow(clippy::type_complexity)]
fn applied_primitive(
    entry: &Entry,
    record: &Applied,
) -> Option<(SessionId, Command, Result<Output, ResourceError>)> {
    let EntryPayload::Command(data) = &entry.payload else {
        return None;
    };
    let LogCommand {
        body: LogBody::Command { payload, .. },
        ..
    } = LogCommand::decode(data).ok()?
    else {
        return None;
    };
    let KvCommand {
        action: KvAction::Primitive(command),
        ..
    } = codec::decode::<KvCommand>(&payload).ok()?
    else {
        return None;
    };
    let Outcome::Command {
        session,
        result:
            Ok(Response::Command {
                index,
                output: Ok(output),
                ..
            }),
        ..
    } = &record.outcome
    else {
        return None;
    };
    if *index != record.index.0 {
        return None;
    }
    match codec::decode::<KvOutput>(output).ok()? {
        KvOutput::Primitive(result, _) => Some((*session, command, result)),
        _ => None,
    }
}
