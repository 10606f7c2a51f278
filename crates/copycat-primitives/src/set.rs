//! A replicated set of byte values, with per-member TTLs, paged iteration
//! and add/remove/expire events.

use std::collections::BTreeSet;

use bytes::Bytes;
use copycat_proto::SessionId;
use serde::{Deserialize, Serialize};

use crate::core::page_of;
use crate::{Ctx, Page, Resource, ResourceError};

/// Commands of a set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetCommand {
    /// Add a member (expiring after `ttl_ms`); answers whether it was new.
    /// Adding a present member only sets its TTL.
    Add {
        /// The member.
        value: Bytes,
        /// Time to live in ms (at least 1), or forever.
        ttl_ms: Option<u64>,
    },
    /// Remove a member; answers whether it was present.
    Remove(Bytes),
    /// Remove every member (a removed event each).
    Clear,
    /// Send the calling session [`SetEvent`]s.
    Listen,
    /// Stop sending them.
    Unlisten,
}

/// Queries of a set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetQuery {
    /// Whether a value is a member.
    Contains(Bytes),
    /// The number of members.
    Size,
    /// Whether there are none.
    IsEmpty,
    /// Members in byte order after `after`, at most `limit`.
    Iterate {
        /// Start after this member.
        after: Option<Bytes>,
        /// Page size (at least 1).
        limit: u32,
    },
}

/// Answers of a set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetOutput {
    /// Done.
    Unit,
    /// A yes/no answer.
    Bool(bool),
    /// A count.
    Size(u64),
    /// A page of members.
    Members(Page<Bytes>),
}

/// Events of a set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetEvent {
    /// A member was added.
    Added(Bytes),
    /// A member was removed (or the set cleared).
    Removed(Bytes),
    /// A member's TTL ran out.
    Expired(Bytes),
}

/// The state of a set.
///
/// Invariant: `expiries` holds exactly `(expiry, member)` of the members
/// that have one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetState {
    members: imbl::OrdMap<Bytes, Option<u64>>,
    expiries: imbl::OrdSet<(u64, Bytes)>,
    listeners: BTreeSet<SessionId>,
}

impl SetState {
    fn notify(&self, ctx: &mut Ctx<'_, SetEvent>, event: SetEvent) {
        for session in &self.listeners {
            ctx.emit(*session, event.clone());
        }
    }

    fn take(&mut self, value: &Bytes) -> bool {
        match self.members.remove(value) {
            Some(expiry) => {
                if let Some(at) = expiry {
                    self.expiries.remove(&(at, value.clone()));
                }
                true
            }
            None => false,
        }
    }
}

impl Resource for SetState {
    type Command = SetCommand;
    type Query = SetQuery;
    type Output = SetOutput;
    type Event = SetEvent;

    fn apply(
        &mut self,
        ctx: &mut Ctx<'_, SetEvent>,
        command: SetCommand,
    ) -> Result<SetOutput, ResourceError> {
        Ok(match command {
            SetCommand::Add { value, ttl_ms } => {
                ctx.limits().check_value(&value)?;
                let expires_at = ctx.ttl_deadline(ttl_ms)?;
                let present = self.members.contains_key(&value);
                if !present {
                    ctx.limits().check_entries(self.members.len())?;
                }
                self.take(&value);
                if let Some(at) = expires_at {
                    self.expiries.insert((at, value.clone()));
                }
                self.members.insert(value.clone(), expires_at);
                if !present {
                    self.notify(ctx, SetEvent::Added(value));
                }
                SetOutput::Bool(!present)
            }
            SetCommand::Remove(value) => {
                let present = self.take(&value);
                if present {
                    self.notify(ctx, SetEvent::Removed(value));
                }
                SetOutput::Bool(present)
            }
            SetCommand::Clear => {
                let values: Vec<Bytes> = self.members.keys().cloned().collect();
                for value in values {
                    self.take(&value);
                    self.notify(ctx, SetEvent::Removed(value));
                }
                SetOutput::Unit
            }
            SetCommand::Listen => {
                let session = ctx.caller()?;
                if !self.listeners.contains(&session) {
                    ctx.limits().check_waiters(self.listeners.len())?;
                    self.listeners.insert(session);
                }
                SetOutput::Unit
            }
            SetCommand::Unlisten => {
                self.listeners.remove(&ctx.caller()?);
                SetOutput::Unit
            }
        })
    }

    fn query(&self, _session: SessionId, query: SetQuery) -> Result<SetOutput, ResourceError> {
        Ok(match query {
            SetQuery::Contains(value) => SetOutput::Bool(self.members.contains_key(&value)),
            SetQuery::Size => SetOutput::Size(self.members.len() as u64),
            SetQuery::IsEmpty => SetOutput::Bool(self.members.is_empty()),
            SetQuery::Iterate { after, limit } => SetOutput::Members(page_of(
                &self.members,
                after,
                limit,
                |k, _| k.len(),
                |k, _| k.clone(),
            )?),
        })
    }

    fn advance(&mut self, ctx: &mut Ctx<'_, SetEvent>) {
        while let Some((at, value)) = self.expiries.get_min().cloned() {
            if at > ctx.time_ms() {
                break;
            }
            self.take(&value);
            self.notify(ctx, SetEvent::Expired(value));
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        self.expiries.get_min().map(|(at, _)| *at)
    }

    fn session_closed(&mut self, _ctx: &mut Ctx<'_, SetEvent>, session: SessionId) {
        self.listeners.remove(&session);
    }

    fn sessions(&self) -> Vec<SessionId> {
        self.listeners.iter().copied().collect()
    }

    fn validate(&self, _fence: u64) -> Result<(), String> {
        let expected: imbl::OrdSet<(u64, Bytes)> = self
            .members
            .iter()
            .filter_map(|(k, at)| at.map(|at| (at, k.clone())))
            .collect();
        if expected != self.expiries {
            return Err("the expiry index does not match the members".into());
        }
        Ok(())
    }
}
