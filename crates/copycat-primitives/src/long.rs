//! A replicated 64-bit counter: get, set, compare-and-set, add-and-get,
//! get-and-add (increments and decrements are adds of ±1). Overflow is an
//! error, never a wrap.

use std::collections::BTreeSet;

use copycat_proto::SessionId;
use serde::{Deserialize, Serialize};

use crate::{Ctx, Resource, ResourceError};

/// Commands of a counter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LongCommand {
    /// Set the value.
    Set(i64),
    /// Set and answer the previous value.
    GetAndSet(i64),
    /// Set to `update` if the value is `expect`; answers whether it did.
    CompareAndSet {
        /// The value expected.
        expect: i64,
        /// The new value.
        update: i64,
    },
    /// Add and answer the new value.
    AddAndGet(i64),
    /// Add and answer the previous value.
    GetAndAdd(i64),
    /// Send the calling session [`LongEvent::Changed`] events.
    Listen,
    /// Stop sending them.
    Unlisten,
}

/// Queries of a counter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LongQuery {
    /// The current value.
    Get,
}

/// Answers of a counter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LongOutput {
    /// Done.
    Unit,
    /// A value.
    Value(i64),
    /// Whether a compare-and-set applied.
    Bool(bool),
}

/// Events of a counter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LongEvent {
    /// The value changed.
    Changed {
        /// Before.
        old: i64,
        /// After.
        new: i64,
    },
}

/// The state of a counter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LongState {
    value: i64,
    listeners: BTreeSet<SessionId>,
}

impl LongState {
    fn set(&mut self, ctx: &mut Ctx<'_, LongEvent>, value: i64) -> i64 {
        let old = std::mem::replace(&mut self.value, value);
        if old != value {
            for session in &self.listeners {
                ctx.emit(*session, LongEvent::Changed { old, new: value });
            }
        }
        old
    }

    fn add(&mut self, ctx: &mut Ctx<'_, LongEvent>, delta: i64) -> Result<i64, ResourceError> {
        let new = self
            .value
            .checked_add(delta)
            .ok_or(ResourceError::Overflow {
                value: self.value,
                delta,
            })?;
        Ok(self.set(ctx, new))
    }
}

impl Resource for LongState {
    type Command = LongCommand;
    type Query = LongQuery;
    type Output = LongOutput;
    type Event = LongEvent;

    fn apply(
        &mut self,
        ctx: &mut Ctx<'_, LongEvent>,
        command: LongCommand,
    ) -> Result<LongOutput, ResourceError> {
        Ok(match command {
            LongCommand::Set(value) => {
                self.set(ctx, value);
                LongOutput::Unit
            }
            LongCommand::GetAndSet(value) => LongOutput::Value(self.set(ctx, value)),
            LongCommand::CompareAndSet { expect, update } => {
                let matches = self.value == expect;
                if matches {
                    self.set(ctx, update);
                }
                LongOutput::Bool(matches)
            }
            LongCommand::AddAndGet(delta) => {
                self.add(ctx, delta)?;
                LongOutput::Value(self.value)
            }
            LongCommand::GetAndAdd(delta) => LongOutput::Value(self.add(ctx, delta)?),
            LongCommand::Listen => {
                let session = ctx.caller()?;
                if !self.listeners.contains(&session) {
                    ctx.limits().check_waiters(self.listeners.len())?;
                    self.listeners.insert(session);
                }
                LongOutput::Unit
            }
            LongCommand::Unlisten => {
                self.listeners.remove(&ctx.caller()?);
                LongOutput::Unit
            }
        })
    }

    fn query(&self, _session: SessionId, query: LongQuery) -> Result<LongOutput, ResourceError> {
        match query {
            LongQuery::Get => Ok(LongOutput::Value(self.value)),
        }
    }

    fn advance(&mut self, _ctx: &mut Ctx<'_, LongEvent>) {}

    fn next_deadline(&self) -> Option<u64> {
        None
    }

    fn session_closed(&mut self, _ctx: &mut Ctx<'_, LongEvent>, session: SessionId) {
        self.listeners.remove(&session);
    }

    fn sessions(&self) -> Vec<SessionId> {
        self.listeners.iter().copied().collect()
    }

    fn validate(&self, _fence: u64) -> Result<(), String> {
        Ok(())
    }
}
