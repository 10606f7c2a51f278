//! A small state machine exercising every replica feature, for tests of this
//! crate, of the simulator and of runtimes built on the replica.
//!
//! [`TestMachine`] keeps an integer, records every callback it receives in
//! [`TestMachine::journal`], and interprets [`TestCommand`]s that publish
//! events, schedule and cancel timers, and fail on demand.

use bytes::Bytes;
use copycat_proto::SessionId;
use copycat_raft::{Entry, EntryPayload, LogIndex, Term};
use serde::{Deserialize, Serialize};

use crate::machine::{ApplyContext, QueryContext, RestoreError, StateMachine, TimerId};

/// The commands of [`TestMachine`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestCommand {
    /// Add to the value and return the new value.
    Add(i64),
    /// Return an application error (and change nothing).
    Fail,
    /// Publish an event named `name` to `session` (the id), returning 1 if
    /// the session was open, else 0.
    Publish {
        /// Receiving session id.
        session: u64,
        /// Event name.
        name: String,
    },
    /// Schedule a timer; returns its id.
    Schedule {
        /// Delay (or interval) in ms.
        delay_ms: u64,
        /// Whether it repeats.
        periodic: bool,
    },
    /// Cancel a timer; returns 1 if it was pending.
    Cancel(u64),
}

/// The queries of [`TestMachine`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestQuery {
    /// The current value.
    Get,
}

/// See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestMachine {
    /// The value.
    pub value: i64,
    /// Every callback, as `"<what> <detail> @<index>/<time>"` lines.
    pub journal: Vec<String>,
}

impl StateMachine for TestMachine {
    type Command = TestCommand;
    type Query = TestQuery;
    type Output = i64;
    type Error = String;

    fn apply(&mut self, ctx: &mut ApplyContext<'_>, command: TestCommand) -> Result<i64, String> {
        self.journal.push(format!(
            "apply {command:?} from {:?} @{}/{}",
            ctx.session(),
            ctx.index().0,
            ctx.time_ms()
        ));
        match command {
            TestCommand::Add(delta) => {
                self.value = self.value.wrapping_add(delta);
                Ok(self.value)
            }
            TestCommand::Fail => Err(format!("failed at {}", ctx.index().0)),
            TestCommand::Publish { session, name } => Ok(i64::from(ctx.publish(
                SessionId(session),
                name,
                Bytes::new(),
            ))),
            TestCommand::Schedule { delay_ms, periodic } => {
                let id = if periodic {
                    ctx.schedule_periodic(delay_ms)
                } else {
                    ctx.schedule(delay_ms)
                };
                id.map(|id| id.0 as i64).map_err(|e| e.to_string())
            }
            TestCommand::Cancel(id) => Ok(i64::from(ctx.cancel(TimerId(id)))),
        }
    }

    fn query(&self, _ctx: &QueryContext, query: TestQuery) -> Result<i64, String> {
        match query {
            TestQuery::Get => Ok(self.value),
        }
    }

    fn on_timer(&mut self, ctx: &mut ApplyContext<'_>, timer: TimerId) {
        self.journal.push(format!(
            "timer {} @{}/{}",
            timer.0,
            ctx.index().0,
            ctx.time_ms()
        ));
        // Tell every open session, so timers produce events too.
        let sessions: Vec<SessionId> = ctx.sessions().map(|s| s.id).collect();
        for session in sessions {
            ctx.publish(
                session,
                "timer",
                Bytes::from(timer.0.to_le_bytes().to_vec()),
            );
        }
    }

    fn session_opened(&mut self, ctx: &mut ApplyContext<'_>, session: SessionId) {
        self.journal.push(format!("opened {}", session.0));
        let _ = ctx;
    }

    fn session_expired(&mut self, ctx: &mut ApplyContext<'_>, session: SessionId) {
        self.journal.push(format!("expired {}", session.0));
        // Tell the others, as a lock or group would.
        let others: Vec<SessionId> = ctx.sessions().map(|s| s.id).collect();
        for other in others {
            ctx.publish(other, "gone", Bytes::from(session.0.to_le_bytes().to_vec()));
        }
    }

    fn session_closed(&mut self, _ctx: &mut ApplyContext<'_>, session: SessionId) {
        self.journal.push(format!("closed {}", session.0));
    }

    fn snapshot(&self) -> Bytes {
        crate::codec::encode(self)
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        *self = crate::codec::decode(data).map_err(|e| RestoreError(e.to_string()))?;
        Ok(())
    }
}

/// A committed entry carrying `data` at `index` (term 1), for feeding a
/// replica by hand.
pub fn command_entry(index: u64, data: Bytes) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        payload: EntryPayload::Command(data),
    }
}
