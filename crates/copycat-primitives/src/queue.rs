//! A replicated FIFO queue with a blocking `take`: takers wait in FIFO
//! order and are handed items by events as they are offered, never by
//! polling; a taker whose session closes is dropped and the next one gets
//! the item.

use std::collections::{BTreeSet, VecDeque};

use bytes::Bytes;
use copycat_proto::SessionId;
use serde::{Deserialize, Serialize};

use crate::core::{check_unique, earliest, validate_waiters};
use crate::{Ctx, Resource, ResourceError, Waiter};

/// Commands of a queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueCommand {
    /// Append an item; answers `false` (and changes nothing) when full.
    Offer(Bytes),
    /// Append an item; fails with [`ResourceError::TooManyEntries`] when
    /// full.
    Add(Bytes),
    /// Take the head, if any.
    Poll,
    /// Take the head; fails with [`ResourceError::Empty`] when empty.
    Remove,
    /// Remove the first item equal to this one; answers whether one was.
    RemoveValue(Bytes),
    /// Remove every item.
    Clear,
    /// Take the head, waiting up to `timeout_ms` (forever with `None`,
    /// not at all with `Some(0)`) in FIFO order with other takers. When it
    /// waits, the item or the timeout comes as an event for `req`.
    Take {
        /// The caller's request id, echoed in the event.
        req: u64,
        /// How long to wait.
        timeout_ms: Option<u64>,
    },
    /// Stop waiting for request `req`; answers whether it was waiting.
    Cancel {
        /// The request id.
        req: u64,
    },
    /// Send the calling session added/removed events.
    Listen,
    /// Stop sending them.
    Unlisten,
}

/// Queries of a queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueQuery {
    /// The head, if any.
    Peek,
    /// The head; [`ResourceError::Empty`] when empty.
    Element,
    /// Whether an item equals this one.
    Contains(Bytes),
    /// The number of items.
    Size,
    /// Whether there are none.
    IsEmpty,
    /// How many takes wait.
    Takers,
}

/// Answers of a queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueOutput {
    /// Done.
    Unit,
    /// An item, if any.
    Value(Option<Bytes>),
    /// A yes/no answer.
    Bool(bool),
    /// A count.
    Size(u64),
    /// The take waits; its outcome comes as an event.
    Waiting,
}

/// Events of a queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueEvent {
    /// An item was offered (to listeners).
    Added(Bytes),
    /// An item left the queue (to listeners).
    Removed(Bytes),
    /// A waiting take got an item (to its session).
    Taken {
        /// The take's request id.
        req: u64,
        /// The item.
        value: Bytes,
    },
    /// A waiting take timed out (to its session).
    TimedOut {
        /// The take's request id.
        req: u64,
    },
}

/// The state of a queue.
///
/// Invariant: takers wait only while the queue is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    items: imbl::Vector<Bytes>,
    takers: VecDeque<Waiter>,
    listeners: BTreeSet<SessionId>,
}

impl QueueState {
    fn notify(&self, ctx: &mut Ctx<'_, QueueEvent>, event: QueueEvent) {
        for session in &self.listeners {
            ctx.emit(*session, event.clone());
        }
    }

    /// Append, or hand straight to the first taker. `Ok(false)` when full.
    fn push(&mut self, ctx: &mut Ctx<'_, QueueEvent>, value: Bytes) -> Result<bool, ResourceError> {
        ctx.limits().check_value(&value)?;
        if self.takers.is_empty() && self.items.len() >= ctx.limits().max_entries {
            return Ok(false);
        }
        self.notify(ctx, QueueEvent::Added(value.clone()));
        match self.takers.pop_front() {
            Some(taker) => {
                self.notify(ctx, QueueEvent::Removed(value.clone()));
                ctx.emit(
                    taker.session,
                    QueueEvent::Taken {
                        req: taker.req,
                        value,
                    },
                );
            }
            None => self.items.push_back(value),
        }
        Ok(true)
    }

    fn pop(&mut self, ctx: &mut Ctx<'_, QueueEvent>) -> Option<Bytes> {
        let value = self.items.pop_front()?;
        self.notify(ctx, QueueEvent::Removed(value.clone()));
        Some(value)
    }
}

impl Resource for QueueState {
    type Command = QueueCommand;
    type Query = QueueQuery;
    type Output = QueueOutput;
    type Event = QueueEvent;

    fn apply(
        &mut self,
        ctx: &mut Ctx<'_, QueueEvent>,
        command: QueueCommand,
    ) -> Result<QueueOutput, ResourceError> {
        Ok(match command {
            QueueCommand::Offer(value) => QueueOutput::Bool(self.push(ctx, value)?),
            QueueCommand::Add(value) => {
                if !self.push(ctx, value)? {
                    return Err(ResourceError::TooManyEntries {
                        limit: ctx.limits().max_entries,
                    });
                }
                QueueOutput::Unit
            }
            QueueCommand::Poll => QueueOutput::Value(self.pop(ctx)),
            QueueCommand::Remove => {
                QueueOutput::Value(Some(self.pop(ctx).ok_or(ResourceError::Empty)?))
            }
            QueueCommand::RemoveValue(value) => match self.items.iter().position(|v| *v == value) {
                Some(at) => {
                    self.items.remove(at);
                    self.notify(ctx, QueueEvent::Removed(value));
                    QueueOutput::Bool(true)
                }
                None => QueueOutput::Bool(false),
            },
            QueueCommand::Clear => {
                while self.pop(ctx).is_some() {}
                QueueOutput::Unit
            }
            QueueCommand::Take { req, timeout_ms } => {
                let session = ctx.caller()?;
                if let Some(value) = self.pop(ctx) {
                    return Ok(QueueOutput::Value(Some(value)));
                }
                if timeout_ms == Some(0) {
                    return Ok(QueueOutput::Value(None));
                }
                check_unique(&self.takers, session, req)?;
                ctx.limits().check_waiters(self.takers.len())?;
                self.takers.push_back(Waiter {
                    session,
                    req,
                    deadline: ctx.deadline(timeout_ms),
                });
                QueueOutput::Waiting
            }
            QueueCommand::Cancel { req } => {
                let session = ctx.caller()?;
                let before = self.takers.len();
                self.takers
                    .retain(|w| !(w.session == session && w.req == req));
                QueueOutput::Bool(self.takers.len() != before)
            }
            QueueCommand::Listen => {
                let session = ctx.caller()?;
                if !self.listeners.contains(&session) {
                    ctx.limits().check_waiters(self.listeners.len())?;
                    self.listeners.insert(session);
                }
                QueueOutput::Unit
            }
            QueueCommand::Unlisten => {
                self.listeners.remove(&ctx.caller()?);
                QueueOutput::Unit
            }
        })
    }

    fn query(&self, _session: SessionId, query: QueueQuery) -> Result<QueueOutput, ResourceError> {
        Ok(match query {
            QueueQuery::Peek => QueueOutput::Value(self.items.front().cloned()),
            QueueQuery::Element => QueueOutput::Value(Some(
                self.items.front().cloned().ok_or(ResourceError::Empty)?,
            )),
            QueueQuery::Contains(value) => QueueOutput::Bool(self.items.contains(&value)),
            QueueQuery::Size => QueueOutput::Size(self.items.len() as u64),
            QueueQuery::IsEmpty => QueueOutput::Bool(self.items.is_empty()),
            QueueQuery::Takers => QueueOutput::Size(self.takers.len() as u64),
        })
    }

    fn advance(&mut self, ctx: &mut Ctx<'_, QueueEvent>) {
        let now = ctx.time_ms();
        let mut kept = VecDeque::with_capacity(self.takers.len());
        for taker in std::mem::take(&mut self.takers) {
            if taker.deadline.is_some_and(|d| d <= now) {
                ctx.emit(taker.session, QueueEvent::TimedOut { req: taker.req });
            } else {
                kept.push_back(taker);
            }
        }
        self.takers = kept;
    }

    fn next_deadline(&self) -> Option<u64> {
        earliest(&self.takers)
    }

    fn session_closed(&mut self, _ctx: &mut Ctx<'_, QueueEvent>, session: SessionId) {
        self.takers.retain(|w| w.session != session);
        self.listeners.remove(&session);
    }

    fn sessions(&self) -> Vec<SessionId> {
        let mut all = self.listeners.clone();
        all.extend(self.takers.iter().map(|w| w.session));
        all.into_iter().collect()
    }

    fn validate(&self, _fence: u64) -> Result<(), String> {
        if !self.takers.is_empty() && !self.items.is_empty() {
            return Err("takers wait while the queue has items".into());
        }
        validate_waiters(&self.takers)
    }
}
