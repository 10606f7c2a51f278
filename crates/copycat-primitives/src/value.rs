//! A single replicated value with an optional TTL: get, set, get-and-set,
//! compare-and-set, and change events to listening sessions.

use std::collections::BTreeSet;

use bytes::Bytes;
use copycat_proto::SessionId;
use serde::{Deserialize, Serialize};

use crate::{Ctx, Resource, ResourceError};

/// Commands of a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValueCommand {
    /// Set (or with `None` clear) the value; it expires after `ttl_ms`.
    Set {
        /// The new value.
        value: Option<Bytes>,
        /// Time to live in ms (at least 1), or forever.
        ttl_ms: Option<u64>,
    },
    /// Set and answer the previous value.
    GetAndSet {
        /// The new value.
        value: Option<Bytes>,
        /// Time to live in ms (at least 1), or forever.
        ttl_ms: Option<u64>,
    },
    /// Set to `update` if the value is `expect`; answers whether it did.
    CompareAndSet {
        /// The value expected.
        expect: Option<Bytes>,
        /// The new value.
        update: Option<Bytes>,
        /// Time to live in ms (at least 1), or forever.
        ttl_ms: Option<u64>,
    },
    /// Send the calling session [`ValueEvent::Changed`] events.
    Listen,
    /// Stop sending them.
    Unlisten,
}

/// Queries of a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValueQuery {
    /// The current value.
    Get,
}

/// Answers of a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValueOutput {
    /// Done.
    Unit,
    /// A value (current or previous).
    Value(Option<Bytes>),
    /// Whether a compare-and-set applied.
    Bool(bool),
}

/// Events of a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValueEvent {
    /// The value changed (sent only when it differs from before).
    Changed {
        /// Before.
        old: Option<Bytes>,
        /// After.
        new: Option<Bytes>,
        /// Whether it changed because its TTL ran out.
        expired: bool,
    },
}

/// The state of a value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueState {
    value: Option<Bytes>,
    expires_at: Option<u64>,
    listeners: BTreeSet<SessionId>,
}

impl ValueState {
    fn set(
        &mut self,
        ctx: &mut Ctx<'_, ValueEvent>,
        value: Option<Bytes>,
        ttl_ms: Option<u64>,
    ) -> Result<Option<Bytes>, ResourceError> {
        if let Some(value) = &value {
            ctx.limits().check_value(value)?;
        }
        let expires_at = match value {
            Some(_) => ctx.ttl_deadline(ttl_ms)?,
            None => None,
        };
        let old = std::mem::replace(&mut self.value, value);
        self.expires_at = expires_at;
        self.changed(ctx, &old, false);
        Ok(old)
    }

    fn changed(&self, ctx: &mut Ctx<'_, ValueEvent>, old: &Option<Bytes>, expired: bool) {
        if *old == self.value {
            return;
        }
        for session in &self.listeners {
            ctx.emit(
                *session,
                ValueEvent::Changed {
                    old: old.clone(),
                    new: self.value.clone(),
                    expired,
                },
            );
        }
    }
}

impl Resource for ValueState {
    type Command = ValueCommand;
    type Query = ValueQuery;
    type Output = ValueOutput;
    type Event = ValueEvent;

    fn apply(
        &mut self,
        ctx: &mut Ctx<'_, ValueEvent>,
        command: ValueCommand,
    ) -> Result<ValueOutput, ResourceError> {
        match command {
            ValueCommand::Set { value, ttl_ms } => {
                self.set(ctx, value, ttl_ms)?;
                Ok(ValueOutput::Unit)
            }
            ValueCommand::GetAndSet { value, ttl_ms } => {
                Ok(ValueOutput::Value(self.set(ctx, value, ttl_ms)?))
            }
            ValueCommand::CompareAndSet {
                expect,
                update,
                ttl_ms,
            } => {
                if self.value != expect {
                    return Ok(ValueOutput::Bool(false));
                }
                self.set(ctx, update, ttl_ms)?;
                Ok(ValueOutput::Bool(true))
            }
            ValueCommand::Listen => {
                let session = ctx.caller()?;
                if !self.listeners.contains(&session) {
                    ctx.limits().check_waiters(self.listeners.len())?;
                    self.listeners.insert(session);
                }
                Ok(ValueOutput::Unit)
            }
            ValueCommand::Unlisten => {
                self.listeners.remove(&ctx.caller()?);
                Ok(ValueOutput::Unit)
            }
        }
    }

    fn query(&self, _session: SessionId, query: ValueQuery) -> Result<ValueOutput, ResourceError> {
        match query {
            ValueQuery::Get => Ok(ValueOutput::Value(self.value.clone())),
        }
    }

    fn advance(&mut self, ctx: &mut Ctx<'_, ValueEvent>) {
        if self.expires_at.is_some_and(|t| t <= ctx.time_ms()) {
            self.expires_at = None;
            let old = self.value.take();
            self.changed(ctx, &old, true);
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        self.expires_at
    }

    fn session_closed(&mut self, _ctx: &mut Ctx<'_, ValueEvent>, session: SessionId) {
        self.listeners.remove(&session);
    }

    fn sessions(&self) -> Vec<SessionId> {
        self.listeners.iter().copied().collect()
    }

    fn validate(&self, _fence: u64) -> Result<(), String> {
        if self.expires_at.is_some() && self.value.is_none() {
            return Err("an unset value has an expiry".into());
        }
        Ok(())
    }
}
