//! The fair ownership queue that locks and elections share: one holder
//! with a fencing token, FIFO waiters with optional deadlines.

use std::collections::VecDeque;

use copycat_proto::SessionId;
use serde::{Deserialize, Serialize};

use crate::core::{check_unique, earliest, validate_waiters};
use crate::{Ctx, ResourceError, Waiter};

/// The current owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Holder {
    pub(crate) session: SessionId,
    pub(crate) token: u64,
    pub(crate) count: u32,
}

/// What an acquisition did.
pub(crate) enum Acquired {
    /// Granted now, with this token.
    Now(u64),
    /// Queued; the grant or the timeout comes later.
    Queued,
    /// Not available and the caller would not wait.
    Refused,
}

/// Invariant: waiters wait only while someone holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Fifo {
    pub(crate) holder: Option<Holder>,
    pub(crate) waiters: VecDeque<Waiter>,
}

impl Fifo {
    /// Acquire for the caller. `reentrant`: a holder acquiring again counts
    /// up and keeps its token; otherwise it waits like anyone else.
    pub(crate) fn acquire<E>(
        &mut self,
        ctx: &mut Ctx<'_, E>,
        req: u64,
        timeout_ms: Option<u64>,
        reentrant: bool,
    ) -> Result<Acquired, ResourceError> {
        let session = ctx.caller()?;
        match &mut self.holder {
            None => {
                let token = ctx.next_fence();
                self.holder = Some(Holder {
                    session,
                    token,
                    count: 1,
                });
                Ok(Acquired::Now(token))
            }
            Some(holder) if reentrant && holder.session == session => {
                holder.count = holder.count.checked_add(1).ok_or_else(|| {
                    ResourceError::InvalidArgument("too many reentrant holds".into())
                })?;
                Ok(Acquired::Now(holder.token))
            }
            Some(_) if timeout_ms == Some(0) => Ok(Acquired::Refused),
            Some(_) => {
                check_unique(&self.waiters, session, req)?;
                ctx.limits().check_waiters(self.waiters.len())?;
                self.waiters.push_back(Waiter {
                    session,
                    req,
                    deadline: ctx.deadline(timeout_ms),
                });
                Ok(Acquired::Queued)
            }
        }
    }

    /// The caller releases one hold. Answers the waiter granted next, with
    /// its token, if the holder let go.
    pub(crate) fn release<E>(
        &mut self,
        ctx: &mut Ctx<'_, E>,
        not_holder: ResourceError,
    ) -> Result<Option<(Waiter, u64)>, ResourceError> {
        let session = ctx.caller()?;
        let holder = match &mut self.holder {
            Some(holder) if holder.session == session => holder,
            _ => return Err(not_holder),
        };
        holder.count -= 1;
        if holder.count > 0 {
            return Ok(None);
        }
        self.holder = None;
        Ok(self.grant_next(ctx))
    }

    /// Hand ownership to the first waiter, if nobody holds.
    fn grant_next<E>(&mut self, ctx: &mut Ctx<'_, E>) -> Option<(Waiter, u64)> {
        if self.holder.is_some() {
            return None;
        }
        let waiter = self.waiters.pop_front()?;
        let token = ctx.next_fence();
        self.holder = Some(Holder {
            session: waiter.session,
            token,
            count: 1,
        });
        Some((waiter, token))
    }

    /// Withdraw the caller's waiting request `req`.
    pub(crate) fn cancel(&mut self, session: SessionId, req: u64) -> bool {
        let before = self.waiters.len();
        self.waiters
            .retain(|w| !(w.session == session && w.req == req));
        self.waiters.len() != before
    }

    /// `session` is gone: drop its waiters and, if it held, its hold.
    /// Answers the waiter granted next.
    pub(crate) fn session_closed<E>(
        &mut self,
        ctx: &mut Ctx<'_, E>,
        session: SessionId,
    ) -> (bool, Option<(Waiter, u64)>) {
        self.waiters.retain(|w| w.session != session);
        if self.holder.as_ref().is_some_and(|h| h.session == session) {
            self.holder = None;
            (true, self.grant_next(ctx))
        } else {
            (false, None)
        }
    }

    /// Remove and answer the waiters whose deadline has passed.
    pub(crate) fn expire(&mut self, now: u64) -> Vec<Waiter> {
        let mut expired = Vec::new();
        let mut kept = VecDeque::with_capacity(self.waiters.len());
        for waiter in std::mem::take(&mut self.waiters) {
            if waiter.deadline.is_some_and(|d| d <= now) {
                expired.push(waiter);
            } else {
                kept.push_back(waiter);
            }
        }
        self.waiters = kept;
        expired
    }

    pub(crate) fn next_deadline(&self) -> Option<u64> {
        earliest(&self.waiters)
    }

    pub(crate) fn sessions(&self) -> Vec<SessionId> {
        let mut all: std::collections::BTreeSet<SessionId> =
            self.waiters.iter().map(|w| w.session).collect();
        all.extend(self.holder.as_ref().map(|h| h.session));
        all.into_iter().collect()
    }

    pub(crate) fn validate(&self, fence: u64, reentrant: bool) -> Result<(), String> {
        match &self.holder {
            None if !self.waiters.is_empty() => {
                return Err("requests wait while nobody holds".into())
            }
            Some(holder) if holder.count == 0 => return Err("a holder with no holds".into()),
            Some(holder) if !reentrant && holder.count != 1 => {
                return Err("a non-reentrant holder holds more than once".into())
            }
            Some(holder) if holder.token > fence => {
                return Err(format!(
                    "token {} above the highest issued, {fence}",
                    holder.token
                ))
            }
            _ => {}
        }
        validate_waiters(&self.waiters)
    }
}
