//! A counting semaphore: sessions acquire and release permits; waiters are
//! served in FIFO order (a large request at the head is not overtaken), and
//! a session's permits return when it closes or expires.

use std::collections::{BTreeMap, VecDeque};

use copycat_proto::SessionId;
use serde::{Deserialize, Serialize};

use crate::core::{check_unique, validate_waiters};
use crate::{Ctx, Resource, ResourceError, Waiter};

/// Commands of a semaphore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SemaphoreCommand {
    /// Acquire `permits` (at least 1, at most the total), waiting up to
    /// `timeout_ms` (forever with `None`, not at all with `Some(0)`).
    Acquire {
        /// The caller's request id, echoed in the event.
        req: u64,
        /// How many.
        permits: u64,
        /// How long to wait.
        timeout_ms: Option<u64>,
    },
    /// Release `permits` the caller holds.
    Release {
        /// How many.
        permits: u64,
    },
    /// Withdraw waiting request `req`; answers whether it was waiting.
    Cancel {
        /// The request id.
        req: u64,
    },
}

/// Queries of a semaphore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SemaphoreQuery {
    /// Permits available now.
    Available,
    /// Permits the querying session holds.
    Held,
}

/// Answers of a semaphore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SemaphoreOutput {
    /// Done.
    Unit,
    /// Acquired now.
    Acquired,
    /// Waiting; the grant or the timeout comes as an event.
    Waiting,
    /// Not available and the caller would not wait.
    NotAcquired,
    /// A yes/no answer.
    Bool(bool),
    /// A count of permits.
    Permits(u64),
}

/// Events of a semaphore, to the waiting session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SemaphoreEvent {
    /// Request `req` got its permits.
    Acquired {
        /// The request id.
        req: u64,
    },
    /// Request `req` timed out.
    TimedOut {
        /// The request id.
        req: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PermitWaiter {
    waiter: Waiter,
    permits: u64,
}

/// The state of a semaphore.
///
/// Invariants: `available` plus the held permits is `total`; the head
/// waiter asks for more than is available.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemaphoreState {
    total: u64,
    available: u64,
    held: BTreeMap<SessionId, u64>,
    waiters: VecDeque<PermitWaiter>,
}

impl SemaphoreState {
    /// A semaphore of `permits` permits, all available.
    pub fn new(permits: u64) -> Self {
        Self {
            total: permits,
            available: permits,
            ..Self::default()
        }
    }

    fn take(&mut self, session: SessionId, permits: u64) {
        self.available -= permits;
        *self.held.entry(session).or_default() += permits;
    }

    /// Grant waiters from the head while they fit.
    fn serve(&mut self, ctx: &mut Ctx<'_, SemaphoreEvent>) {
        while let Some(head) = self.waiters.front() {
            if head.permits > self.available {
                break;
            }
            let head = self.waiters.pop_front().expect("head exists");
            self.take(head.waiter.session, head.permits);
            ctx.emit(
                head.waiter.session,
                SemaphoreEvent::Acquired {
                    req: head.waiter.req,
                },
            );
        }
    }
}

impl Resource for SemaphoreState {
    type Command = SemaphoreCommand;
    type Query = SemaphoreQuery;
    type Output = SemaphoreOutput;
    type Event = SemaphoreEvent;

    fn apply(
        &mut self,
        ctx: &mut Ctx<'_, SemaphoreEvent>,
        command: SemaphoreCommand,
    ) -> Result<SemaphoreOutput, ResourceError> {
        let session = ctx.caller()?;
        Ok(match command {
            SemaphoreCommand::Acquire {
                req,
                permits,
                timeout_ms,
            } => {
                if permits == 0 || permits > self.total {
                    return Err(ResourceError::InvalidArgument(format!(
                        "cannot acquire {permits} of {} permits",
                        self.total
                    )));
                }
                if self.waiters.is_empty() && permits <= self.available {
                    self.take(session, permits);
                    return Ok(SemaphoreOutput::Acquired);
                }
                if timeout_ms == Some(0) {
                    return Ok(SemaphoreOutput::NotAcquired);
                }
                check_unique(self.waiters.iter().map(|w| &w.waiter), session, req)?;
                ctx.limits().check_waiters(self.waiters.len())?;
                self.waiters.push_back(PermitWaiter {
                    waiter: Waiter {
                        session,
                        req,
                        deadline: ctx.deadline(timeout_ms),
                    },
                    permits,
                });
                SemaphoreOutput::Waiting
            }
            SemaphoreCommand::Release { permits } => {
                let held = self.held.get(&session).copied().unwrap_or(0);
                #[cfg(feature = "planted-bugs")]
                if permits > held
                    && copycat_planted::active(
                        copycat_planted::PlantedBug::SemaphoreReleaseUnchecked,
                    )
                {
                    self.held.remove(&session);
                    self.available += permits;
                    self.serve(ctx);
                    return Ok(SemaphoreOutput::Unit);
                }
                if permits == 0 || permits > held {
                    return Err(ResourceError::NotEnoughPermits {
                        held,
                        requested: permits,
                    });
                }
                if held == permits {
                    self.held.remove(&session);
                } else {
                    self.held.insert(session, held - permits);
                }
                self.available += permits;
                self.serve(ctx);
                SemaphoreOutput::Unit
            }
            SemaphoreCommand::Cancel { req } => {
                let before = self.waiters.len();
                self.waiters
                    .retain(|w| !(w.waiter.session == session && w.waiter.req == req));
                let cancelled = self.waiters.len() != before;
                self.serve(ctx);
                SemaphoreOutput::Bool(cancelled)
            }
        })
    }

    fn query(
        &self,
        session: SessionId,
        query: SemaphoreQuery,
    ) -> Result<SemaphoreOutput, ResourceError> {
        Ok(match query {
            SemaphoreQuery::Available => SemaphoreOutput::Permits(self.available),
            SemaphoreQuery::Held => {
                SemaphoreOutput::Permits(self.held.get(&session).copied().unwrap_or(0))
            }
        })
    }

    fn advance(&mut self, ctx: &mut Ctx<'_, SemaphoreEvent>) {
        let now = ctx.time_ms();
        let mut kept = VecDeque::with_capacity(self.waiters.len());
        for waiter in std::mem::take(&mut self.waiters) {
            if waiter.waiter.deadline.is_some_and(|d| d <= now) {
                ctx.emit(
                    waiter.waiter.session,
                    SemaphoreEvent::TimedOut {
                        req: waiter.waiter.req,
                    },
                );
            } else {
                kept.push_back(waiter);
            }
        }
        self.waiters = kept;
        self.serve(ctx);
    }

    fn next_deadline(&self) -> Option<u64> {
        self.waiters.iter().filter_map(|w| w.waiter.deadline).min()
    }

    fn session_closed(&mut self, ctx: &mut Ctx<'_, SemaphoreEvent>, session: SessionId) {
        self.waiters.retain(|w| w.waiter.session != session);
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::SemaphoreCloseKeepsPermits) {
            self.held.remove(&session);
            self.serve(ctx);
            return;
        }
        if let Some(held) = self.held.remove(&session) {
            self.available += held;
        }
        self.serve(ctx);
    }

    fn sessions(&self) -> Vec<SessionId> {
        let mut all: std::collections::BTreeSet<SessionId> = self.held.keys().copied().collect();
        all.extend(self.waiters.iter().map(|w| w.waiter.session));
        all.into_iter().collect()
    }

    fn validate(&self, _fence: u64) -> Result<(), String> {
        let mut sum = self.available;
        for held in self.held.values() {
            if *held == 0 {
                return Err("a session holds zero permits".into());
            }
            sum = sum.checked_add(*held).ok_or("held permits overflow")?;
        }
        if sum != self.total {
            return Err(format!(
                "{sum} permits available or held, of {}",
                self.total
            ));
        }
        if let Some(head) = self.waiters.front() {
            if head.permits <= self.available {
                return Err("the head waiter could have its permits".into());
            }
        }
        if self
            .waiters
            .iter()
            .any(|w| w.permits == 0 || w.permits > self.total)
        {
            return Err("a waiter asks for an impossible number of permits".into());
        }
        validate_waiters(self.waiters.iter().map(|w| &w.waiter))
    }
}
