//! A fair distributed lock with fencing tokens.
//!
//! `lock` answers a token: the log index of the entry that granted it (see
//! [`Ctx::next_fence`]), so tokens are unique and strictly increasing over
//! the cluster's whole history, across leader changes and restarts. Pass
//! the token to whatever the lock protects and have it refuse smaller
//! tokens than it has seen (`docs/primitives/lock.md`). Waiters are served
//! in FIFO order and told of their grant by an event. A holder's session
//! closing or expiring releases the lock to the next waiter.
//!
//! Like every resource, the lock is a plain deterministic state machine
//! that runs without the manager or a replica:
//!
//! ```
//! use copycat_primitives::lock::{LockCommand, LockEvent, LockOutput, LockState};
//! use copycat_primitives::{Ctx, Limits, Resource};
//! use copycat_proto::SessionId;
//!
//! let (limits, mut fence) = (Limits::default(), 0);
//! let mut lock = LockState::new(false);
//! let lock_cmd = |req| LockCommand::Lock { req, timeout_ms: None };
//!
//! // Session 1 locks at log index 10, session 2 waits at index 11.
//! let mut ctx = Ctx::new(10, 0, Some(SessionId(1)), &limits, &mut fence);
//! assert_eq!(lock.apply(&mut ctx, lock_cmd(1)), Ok(LockOutput::Acquired(10)));
//! let mut ctx = Ctx::new(11, 0, Some(SessionId(2)), &limits, &mut fence);
//! assert_eq!(lock.apply(&mut ctx, lock_cmd(7)), Ok(LockOutput::Waiting));
//!
//! // Session 1 closes at index 12: session 2 is granted, token 12.
//! let mut ctx = Ctx::new(12, 0, None, &limits, &mut fence);
//! lock.session_closed(&mut ctx, SessionId(1));
//! assert_eq!(
//!     ctx.take_events(),
//!     vec![(SessionId(2), LockEvent::Granted { req: 7, token: 12 })]
//! );
//! ```

use copycat_proto::SessionId;
use serde::{Deserialize, Serialize};

use crate::fifo::{Acquired, Fifo};
use crate::{Ctx, Resource, ResourceError};

/// Commands of a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockCommand {
    /// Acquire, waiting up to `timeout_ms` (forever with `None`, not at
    /// all with `Some(0)`). When it waits, the grant or the timeout comes
    /// as an event for `req`.
    Lock {
        /// The caller's request id, echoed in the event.
        req: u64,
        /// How long to wait.
        timeout_ms: Option<u64>,
    },
    /// Release one hold; [`ResourceError::NotHolder`] if the caller does
    /// not hold the lock.
    Unlock,
    /// Withdraw waiting request `req`; answers whether it was waiting.
    Cancel {
        /// The request id.
        req: u64,
    },
}

/// Queries of a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockQuery {
    /// The holding session and its token.
    Holder,
    /// Whether anyone holds it.
    IsLocked,
    /// Whether the querying session holds it.
    IsHeldByCaller,
    /// How many requests wait.
    Waiters,
}

/// Answers of a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOutput {
    /// Done.
    Unit,
    /// Acquired now, with this fencing token.
    Acquired(u64),
    /// Waiting; the grant or the timeout comes as an event.
    Waiting,
    /// Held by another and the caller would not wait.
    NotAcquired,
    /// A yes/no answer.
    Bool(bool),
    /// The holder and its token.
    Holder(Option<(SessionId, u64)>),
    /// A count.
    Count(u64),
}

/// Events of a lock, to the waiting session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockEvent {
    /// Request `req` holds the lock now, with `token`.
    Granted {
        /// The request id.
        req: u64,
        /// The fencing token.
        token: u64,
    },
    /// Request `req` timed out without the lock.
    TimedOut {
        /// The request id.
        req: u64,
    },
}

/// The state of a lock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState {
    reentrant: bool,
    fifo: Fifo,
}

impl LockState {
    /// A free lock; `reentrant` lets the holding session lock again.
    pub fn new(reentrant: bool) -> Self {
        Self {
            reentrant,
            fifo: Fifo::default(),
        }
    }
}

fn granted(ctx: &mut Ctx<'_, LockEvent>, next: Option<(crate::Waiter, u64)>) {
    if let Some((waiter, token)) = next {
        ctx.emit(
            waiter.session,
            LockEvent::Granted {
                req: waiter.req,
                token,
            },
        );
    }
}

#[cfg(feature = "planted-bugs")]
impl LockState {
    /// The session holding the lock, if any (for the planted
    /// `LockGrantBeforeExpiry`).
    pub(crate) fn holder_session(&self) -> Option<SessionId> {
        self.fifo.holder.as_ref().map(|h| h.session)
    }
}

impl Resource for LockState {
    type Command = LockCommand;
    type Query = LockQuery;
    type Output = LockOutput;
    type Event = LockEvent;

    fn apply(
        &mut self,
        ctx: &mut Ctx<'_, LockEvent>,
        command: LockCommand,
    ) -> Result<LockOutput, ResourceError> {
        Ok(match command {
            LockCommand::Lock { req, timeout_ms } => {
                match self.fifo.acquire(ctx, req, timeout_ms, self.reentrant)? {
                    Acquired::Now(token) => LockOutput::Acquired(token),
                    Acquired::Queued => LockOutput::Waiting,
                    Acquired::Refused => LockOutput::NotAcquired,
                }
            }
            LockCommand::Unlock => {
                let next = self.fifo.release(ctx, ResourceError::NotHolder)?;
                granted(ctx, next);
                LockOutput::Unit
            }
            LockCommand::Cancel { req } => LockOutput::Bool(self.fifo.cancel(ctx.caller()?, req)),
        })
    }

    fn query(&self, session: SessionId, query: LockQuery) -> Result<LockOutput, ResourceError> {
        let holder = self.fifo.holder.as_ref();
        Ok(match query {
            LockQuery::Holder => LockOutput::Holder(holder.map(|h| (h.session, h.token))),
            LockQuery::IsLocked => LockOutput::Bool(holder.is_some()),
            LockQuery::Waiters => LockOutput::Count(self.fifo.waiters.len() as u64),
            LockQuery::IsHeldByCaller => {
                LockOutput::Bool(holder.is_some_and(|h| h.session == session))
            }
        })
    }

    fn advance(&mut self, ctx: &mut Ctx<'_, LockEvent>) {
        for waiter in self.fifo.expire(ctx.time_ms()) {
            ctx.emit(waiter.session, LockEvent::TimedOut { req: waiter.req });
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        self.fifo.next_deadline()
    }

    fn session_closed(&mut self, ctx: &mut Ctx<'_, LockEvent>, session: SessionId) {
        let (_, next) = self.fifo.session_closed(ctx, session);
        granted(ctx, next);
    }

    fn sessions(&self) -> Vec<SessionId> {
        self.fifo.sessions()
    }

    fn validate(&self, fence: u64) -> Result<(), String> {
        self.fifo.validate(fence, self.reentrant)
    }
}
