//! A count-down latch: sessions count it down and await zero; waiters are
//! told by an event when it opens, or when their timeout passes. An open
//! latch can be armed again with a new count.

use std::collections::BTreeSet;

use copycat_proto::SessionId;
use serde::{Deserialize, Serialize};

use crate::core::{check_unique, earliest, validate_waiters};
use crate::{Ctx, Resource, ResourceError, Waiter};

/// Commands of a latch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LatchCommand {
    /// Count down by one (nothing at zero); answers the new count.
    CountDown,
    /// Wait for zero, up to `timeout_ms` (forever with `None`, not at all
    /// with `Some(0)`).
    Await {
        /// The caller's request id, echoed in the event.
        req: u64,
        /// How long to wait.
        timeout_ms: Option<u64>,
    },
    /// Withdraw waiting request `req`; answers whether it was waiting.
    Cancel {
        /// The request id.
        req: u64,
    },
    /// Arm an open latch with a new count (at least 1); answers `false` if
    /// it is not open.
    SetCount(u64),
}

/// Queries of a latch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LatchQuery {
    /// The current count.
    Count,
}

/// Answers of a latch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LatchOutput {
    /// The latch is open (count zero).
    Open,
    /// Waiting; the opening or the timeout comes as an event.
    Waiting,
    /// Not open and the caller would not wait.
    NotOpen,
    /// A count.
    Count(u64),
    /// A yes/no answer.
    Bool(bool),
}

/// Events of a latch, to the waiting session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LatchEvent {
    /// The latch opened for request `req`.
    Opened {
        /// The request id.
        req: u64,
    },
    /// Request `req` timed out.
    TimedOut {
        /// The request id.
        req: u64,
    },
}

/// The state of a latch. Invariant: requests wait only while the count is
/// above zero.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatchState {
    count: u64,
    waiters: Vec<Waiter>,
}

impl LatchState {
    /// A latch at `count`.
    pub fn new(count: u64) -> Self {
        Self {
            count,
            waiters: Vec::new(),
        }
    }
}

impl Resource for LatchState {
    type Command = LatchCommand;
    type Query = LatchQuery;
    type Output = LatchOutput;
    type Event = LatchEvent;

    fn apply(
        &mut self,
        ctx: &mut Ctx<'_, LatchEvent>,
        command: LatchCommand,
    ) -> Result<LatchOutput, ResourceError> {
        let session = ctx.caller()?;
        Ok(match command {
            LatchCommand::CountDown => {
                if self.count > 0 {
                    self.count -= 1;
                    if self.count == 0 {
                        for waiter in std::mem::take(&mut self.waiters) {
                            ctx.emit(waiter.session, LatchEvent::Opened { req: waiter.req });
                        }
                    }
                }
                LatchOutput::Count(self.count)
            }
            LatchCommand::Await { req, timeout_ms } => {
                if self.count == 0 {
                    return Ok(LatchOutput::Open);
                }
                if timeout_ms == Some(0) {
                    return Ok(LatchOutput::NotOpen);
                }
                check_unique(&self.waiters, session, req)?;
                ctx.limits().check_waiters(self.waiters.len())?;
                self.waiters.push(Waiter {
                    session,
                    req,
                    deadline: ctx.deadline(timeout_ms),
                });
                LatchOutput::Waiting
            }
            LatchCommand::Cancel { req } => {
                let before = self.waiters.len();
                self.waiters
                    .retain(|w| !(w.session == session && w.req == req));
                LatchOutput::Bool(self.waiters.len() != before)
            }
            LatchCommand::SetCount(count) => {
                if count == 0 {
                    return Err(ResourceError::InvalidArgument(
                        "a latch count must be at least 1".into(),
                    ));
                }
                let open = self.count == 0;
                if open {
                    self.count = count;
                }
                LatchOutput::Bool(open)
            }
        })
    }

    fn query(&self, _session: SessionId, query: LatchQuery) -> Result<LatchOutput, ResourceError> {
        match query {
            LatchQuery::Count => Ok(LatchOutput::Count(self.count)),
        }
    }

    fn advance(&mut self, ctx: &mut Ctx<'_, LatchEvent>) {
        let now = ctx.time_ms();
        let (expired, kept): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| w.deadline.is_some_and(|d| d <= now));
        self.waiters = kept;
        for waiter in expired {
            ctx.emit(waiter.session, LatchEvent::TimedOut { req: waiter.req });
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        earliest(&self.waiters)
    }

    fn session_closed(&mut self, _ctx: &mut Ctx<'_, LatchEvent>, session: SessionId) {
        self.waiters.retain(|w| w.session != session);
    }

    fn sessions(&self) -> Vec<SessionId> {
        let all: BTreeSet<SessionId> = self.waiters.iter().map(|w| w.session).collect();
        all.into_iter().collect()
    }

    fn validate(&self, _fence: u64) -> Result<(), String> {
        if self.count == 0 && !self.waiters.is_empty() {
            return Err("requests wait on an open latch".into());
        }
        validate_waiters(&self.waiters)
    }
}
