//! Leader election: sessions campaign, one leads at a time, the others
//! wait in FIFO order. The leader's term is a fencing token with the same
//! guarantee as a lock's: the log index of the entry that made it leader,
//! unique and strictly increasing over the cluster's history. A leader
//! whose session closes or expires loses leadership to the next candidate.

use std::collections::BTreeSet;

use copycat_proto::SessionId;
use serde::{Deserialize, Serialize};

use crate::fifo::{Acquired, Fifo};
use crate::{Ctx, Resource, ResourceError, Waiter};

/// Commands of an election.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionCommand {
    /// Stand for leader, waiting up to `timeout_ms` (forever with `None`,
    /// not at all with `Some(0)`). A leader campaigning again is answered
    /// its term.
    Campaign {
        /// The caller's request id, echoed in the event.
        req: u64,
        /// How long to wait.
        timeout_ms: Option<u64>,
    },
    /// Give up leadership; [`ResourceError::NotLeader`] if the caller does
    /// not lead.
    Resign,
    /// Withdraw waiting candidacy `req`; answers whether it was waiting.
    Cancel {
        /// The request id.
        req: u64,
    },
    /// Send the calling session [`ElectionEvent::Changed`] events.
    Listen,
    /// Stop sending them.
    Unlisten,
}

/// Queries of an election.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionQuery {
    /// The leading session and its term.
    Leader,
}

/// Answers of an election.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionOutput {
    /// Done.
    Unit,
    /// Elected now, with this term.
    Elected(u64),
    /// Waiting; the election or the timeout comes as an event.
    Waiting,
    /// Someone else leads and the caller would not wait.
    NotElected,
    /// A yes/no answer.
    Bool(bool),
    /// The leader and its term.
    Leader(Option<(SessionId, u64)>),
}

/// Events of an election.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionEvent {
    /// Candidacy `req` leads now, in `term` (to the candidate).
    Elected {
        /// The request id.
        req: u64,
        /// The term (fencing token).
        term: u64,
    },
    /// Candidacy `req` timed out (to the candidate).
    TimedOut {
        /// The request id.
        req: u64,
    },
    /// The leadership changed (to listeners): the new leader and term, or
    /// nobody.
    Changed {
        /// The new leader and term.
        leader: Option<(SessionId, u64)>,
    },
}

/// The state of an election.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionState {
    fifo: Fifo,
    listeners: BTreeSet<SessionId>,
}

impl ElectionState {
    fn leader(&self) -> Option<(SessionId, u64)> {
        self.fifo.holder.as_ref().map(|h| (h.session, h.token))
    }

    fn changed(&self, ctx: &mut Ctx<'_, ElectionEvent>, next: Option<(Waiter, u64)>) {
        if let Some((waiter, term)) = next {
            ctx.emit(
                waiter.session,
                ElectionEvent::Elected {
                    req: waiter.req,
                    term,
                },
            );
        }
        let leader = self.leader();
        for session in &self.listeners {
            ctx.emit(*session, ElectionEvent::Changed { leader });
        }
    }
}

impl Resource for ElectionState {
    type Command = ElectionCommand;
    type Query = ElectionQuery;
    type Output = ElectionOutput;
    type Event = ElectionEvent;

    fn apply(
        &mut self,
        ctx: &mut Ctx<'_, ElectionEvent>,
        command: ElectionCommand,
    ) -> Result<ElectionOutput, ResourceError> {
        Ok(match command {
            ElectionCommand::Campaign { req, timeout_ms } => {
                let before = self.leader();
                match self.fifo.acquire(ctx, req, timeout_ms, true)? {
                    Acquired::Now(term) => {
                        if before.is_none() {
                            self.changed(ctx, None);
                        }
                        ElectionOutput::Elected(term)
                    }
                    Acquired::Queued => ElectionOutput::Waiting,
                    Acquired::Refused => ElectionOutput::NotElected,
                }
            }
            ElectionCommand::Resign => {
                // A leader holds once however often it campaigned.
                if let Some(holder) = self.fifo.holder.as_mut() {
                    if Some(holder.session) == ctx.caller().ok() {
                        holder.count = 1;
                    }
                }
                let next = self.fifo.release(ctx, ResourceError::NotLeader)?;
                self.changed(ctx, next);
                ElectionOutput::Unit
            }
            ElectionCommand::Cancel { req } => {
                ElectionOutput::Bool(self.fifo.cancel(ctx.caller()?, req))
            }
            ElectionCommand::Listen => {
                let session = ctx.caller()?;
                if !self.listeners.contains(&session) {
                    ctx.limits().check_waiters(self.listeners.len())?;
                    self.listeners.insert(session);
                }
                ElectionOutput::Unit
            }
            ElectionCommand::Unlisten => {
                self.listeners.remove(&ctx.caller()?);
                ElectionOutput::Unit
            }
        })
    }

    fn query(
        &self,
        _session: SessionId,
        query: ElectionQuery,
    ) -> Result<ElectionOutput, ResourceError> {
        match query {
            ElectionQuery::Leader => Ok(ElectionOutput::Leader(self.leader())),
        }
    }

    fn advance(&mut self, ctx: &mut Ctx<'_, ElectionEvent>) {
        for waiter in self.fifo.expire(ctx.time_ms()) {
            ctx.emit(waiter.session, ElectionEvent::TimedOut { req: waiter.req });
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        self.fifo.next_deadline()
    }

    fn session_closed(&mut self, ctx: &mut Ctx<'_, ElectionEvent>, session: SessionId) {
        self.listeners.remove(&session);
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::ElectionKeepsClosedLeader) {
            self.fifo.waiters.retain(|w| w.session != session);
            return;
        }
        let (lost, next) = self.fifo.session_closed(ctx, session);
        if lost {
            self.changed(ctx, next);
        }
    }

    fn sessions(&self) -> Vec<SessionId> {
        let mut all: BTreeSet<SessionId> = self.fifo.sessions().into_iter().collect();
        all.extend(self.listeners.iter().copied());
        all.into_iter().collect()
    }

    fn validate(&self, fence: u64) -> Result<(), String> {
        self.fifo.validate(fence, true)
    }
}
