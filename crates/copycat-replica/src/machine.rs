//! The state machine traits and the contexts the replica hands them.
//!
//! [`StateMachine`] is the typed trait users implement. The replica itself
//! drives the byte-oriented [`RawStateMachine`]; [`Typed`] adapts one to the
//! other by encoding with postcard.

use bytes::Bytes;
use copycat_proto::{CommandFailure, Event, SessionId};
use copycat_raft::LogIndex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::sessions::{SessionInfo, SessionTable};
use crate::timers::{TimerId, Timers, TooManyTimers};

/// A state machine image that could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("cannot restore state: {0}")]
pub struct RestoreError(pub String);

/// What a state machine may see and do while applying a command, a timer or
/// a session callback.
///
/// Everything here is deterministic: the index and time come from the log,
/// timer ids from replicated state, and the session list is ordered.
pub struct ApplyContext<'a> {
    pub(crate) index: LogIndex,
    pub(crate) time_ms: u64,
    pub(crate) session: Option<SessionId>,
    pub(crate) sessions: &'a SessionTable,
    pub(crate) timers: &'a mut Timers,
    pub(crate) max_timers: usize,
    pub(crate) published: &'a mut Vec<(SessionId, Event)>,
}

impl ApplyContext<'_> {
    /// The log index being applied.
    pub fn index(&self) -> LogIndex {
        self.index
    }

    /// The deterministic time, in milliseconds: the largest leader timestamp
    /// applied so far, or a timer's deadline while it fires.
    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }

    /// The session that submitted the command, or the session a lifecycle
    /// callback is about; `None` for timers.
    pub fn session(&self) -> Option<SessionId> {
        self.session
    }

    /// Whether `session` is open.
    pub fn is_open(&self, session: SessionId) -> bool {
        self.sessions.contains(session)
    }

    /// The open sessions, in id order.
    pub fn sessions(&self) -> impl Iterator<Item = SessionInfo> + '_ {
        self.sessions.infos()
    }

    /// `(timeout_ms, last_keep_alive_ms)` of an open session on the
    /// replicated clock. Only in builds with planted bugs: a state machine
    /// must not judge a session's liveness itself (the replica expires it),
    /// and the planted `LockGrantBeforeExpiry` is the mistake of doing so.
    #[cfg(feature = "planted-bugs")]
    pub fn session_timing(&self, session: SessionId) -> Option<(u64, u64)> {
        self.sessions
            .get(session)
            .map(|s| (s.timeout_ms(), s.last_keep_alive_ms()))
    }

    /// Publish an event to `session`. Events published while applying one
    /// log entry form one batch per session. Returns `false` (and drops the
    /// event) if the session is not open.
    pub fn publish(
        &mut self,
        session: SessionId,
        name: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> bool {
        if !self.is_open(session) {
            return false;
        }
        self.published.push((
            session,
            Event {
                name: name.into(),
                payload: payload.into(),
            },
        ));
        true
    }

    /// Publish `value` encoded with postcard (see [`crate::codec`]).
    pub fn publish_value<T: Serialize>(
        &mut self,
        session: SessionId,
        name: impl Into<String>,
        value: &T,
    ) -> bool {
        self.publish(session, name, crate::codec::encode(value))
    }

    /// Run [`StateMachine::on_timer`] once, `delay_ms` from now (at least
    /// 1 ms, so a timer that reschedules itself cannot loop at one instant).
    pub fn schedule(&mut self, delay_ms: u64) -> Result<TimerId, TooManyTimers> {
        self.timers
            .schedule(self.time_ms, delay_ms, None, self.max_timers)
    }

    /// Run [`StateMachine::on_timer`] every `interval_ms` (at least 1 ms),
    /// first after one interval, until cancelled.
    pub fn schedule_periodic(&mut self, interval_ms: u64) -> Result<TimerId, TooManyTimers> {
        let interval_ms = interval_ms.max(1);
        self.timers.schedule(
            self.time_ms,
            interval_ms,
            Some(interval_ms),
            self.max_timers,
        )
    }

    /// Cancel a timer. Returns whether it was pending.
    pub fn cancel(&mut self, timer: TimerId) -> bool {
        self.timers.cancel(timer)
    }
}

/// What a query may see. It has no way to publish or schedule: queries
/// run on one server only and must not change replicated state.
#[derive(Clone, Copy, Debug)]
pub struct QueryContext {
    pub(crate) index: LogIndex,
    pub(crate) time_ms: u64,
    pub(crate) session: SessionId,
}

impl QueryContext {
    /// The applied index the answer reflects.
    pub fn index(&self) -> LogIndex {
        self.index
    }

    /// The replica's deterministic time at that index.
    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }

    /// The querying session.
    pub fn session(&self) -> SessionId {
        self.session
    }
}

/// A typed, replicated state machine.
///
/// Every method must be deterministic: the same calls in the same order must
/// leave every replica in the same state. Do not read clocks, draw OS
/// randomness or iterate a `HashMap` where the order matters; use
/// [`ApplyContext::time_ms`], and `BTreeMap`s.
pub trait StateMachine {
    /// A mutating operation, submitted through the log.
    type Command: Serialize + DeserializeOwned;
    /// A read-only operation.
    type Query: Serialize + DeserializeOwned;
    /// What commands and queries return.
    type Output: Serialize + DeserializeOwned;
    /// An application error, returned to the caller and cached like results.
    type Error: Serialize + DeserializeOwned;

    /// Apply a command. Runs exactly once per (session, sequence), at the
    /// same log index on every replica.
    fn apply(
        &mut self,
        ctx: &mut ApplyContext<'_>,
        command: Self::Command,
    ) -> Result<Self::Output, Self::Error>;

    /// Answer a query from the current state.
    fn query(&self, ctx: &QueryContext, query: Self::Query) -> Result<Self::Output, Self::Error>;

    /// A timer scheduled through [`ApplyContext::schedule`] or
    /// [`ApplyContext::schedule_periodic`] is due.
    fn on_timer(&mut self, ctx: &mut ApplyContext<'_>, timer: TimerId) {
        let _ = (ctx, timer);
    }

    /// A session was registered.
    fn session_opened(&mut self, ctx: &mut ApplyContext<'_>, session: SessionId) {
        let _ = (ctx, session);
    }

    /// A session expired (the cluster stopped hearing from it). Always
    /// followed by [`StateMachine::session_closed`].
    fn session_expired(&mut self, ctx: &mut ApplyContext<'_>, session: SessionId) {
        let _ = (ctx, session);
    }

    /// A session is gone (unregistered, or after expiry): release what it
    /// owned.
    fn session_closed(&mut self, ctx: &mut ApplyContext<'_>, session: SessionId) {
        let _ = (ctx, session);
    }

    /// The whole state, canonically encoded (equal states give equal bytes).
    fn snapshot(&self) -> Bytes;

    /// Optionally, the same image encoded later, on another thread: return
    /// a closure over a cheap frozen copy of the state (an `Arc` of a
    /// persistent or copy-on-write structure) that produces exactly what
    /// [`snapshot`](Self::snapshot) would have now. The server then encodes
    /// a large state without pausing Raft. The default (`None`) encodes
    /// with `snapshot` on the server's main thread.
    fn deferred_snapshot(&self) -> Option<DeferredSnapshot> {
        None
    }

    /// Replace the state with one produced by [`StateMachine::snapshot`].
    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError>;

    /// Optionally, decode an image produced by [`snapshot`](Self::snapshot)
    /// on another thread, with no access to the state machine: return the
    /// decoded state (anything `Send`), which
    /// [`install_prepared`](Self::install_prepared) then swaps in cheaply
    /// on the server's main thread. The server then restores a large state
    /// received from the leader without pausing Raft. The default (`None`)
    /// restores with [`restore`](Self::restore) on the server's main
    /// thread. Must accept and refuse exactly the images `restore` does.
    fn prepare_restore(data: &[u8]) -> Option<Result<PreparedRestore, RestoreError>>
    where
        Self: Sized,
    {
        let _ = data;
        None
    }

    /// Replace the state with what [`prepare_restore`](Self::prepare_restore)
    /// returned (called only with its values; keep it cheap: a move, not a
    /// decode). Leaves the state as [`restore`](Self::restore) of the same
    /// image would.
    fn install_prepared(&mut self, prepared: PreparedRestore) -> Result<(), RestoreError> {
        let _ = prepared;
        Err(not_prepared())
    }
}

/// A state machine image to be encoded later, anywhere; see
/// [`StateMachine::deferred_snapshot`].
pub type DeferredSnapshot = Box<dyn FnOnce() -> Bytes + Send>;

/// A state machine image decoded ahead of time, anywhere; see
/// [`StateMachine::prepare_restore`].
pub type PreparedRestore = Box<dyn std::any::Any + Send>;

fn not_prepared() -> RestoreError {
    RestoreError("this state machine does not prepare restores".into())
}

/// Take the value of type `T` out of a [`PreparedRestore`] (in
/// [`StateMachine::install_prepared`]); a value of another type is a
/// [`RestoreError`].
pub fn prepared_as<T: 'static>(prepared: PreparedRestore) -> Result<T, RestoreError> {
    prepared
        .downcast::<T>()
        .map(|value| *value)
        .map_err(|_| RestoreError("a prepared restore of another type".into()))
}

/// The byte-oriented interface the replica drives. Implement it directly to
/// use your own encoding; [`Typed`] implements it for any [`StateMachine`].
pub trait RawStateMachine {
    /// Apply an encoded command.
    fn apply(
        &mut self,
        ctx: &mut ApplyContext<'_>,
        command: &[u8],
    ) -> Result<Bytes, CommandFailure>;
    /// Answer an encoded query.
    fn query(&self, ctx: &QueryContext, query: &[u8]) -> Result<Bytes, CommandFailure>;
    /// See [`StateMachine::on_timer`].
    fn on_timer(&mut self, ctx: &mut ApplyContext<'_>, timer: TimerId);
    /// See [`StateMachine::session_opened`].
    fn session_opened(&mut self, ctx: &mut ApplyContext<'_>, session: SessionId);
    /// See [`StateMachine::session_expired`].
    fn session_expired(&mut self, ctx: &mut ApplyContext<'_>, session: SessionId);
    /// See [`StateMachine::session_closed`].
    fn session_closed(&mut self, ctx: &mut ApplyContext<'_>, session: SessionId);
    /// See [`StateMachine::snapshot`].
    fn snapshot(&self) -> Bytes;
    /// See [`StateMachine::deferred_snapshot`].
    fn deferred_snapshot(&self) -> Option<DeferredSnapshot> {
        None
    }
    /// See [`StateMachine::restore`].
    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError>;
    /// See [`StateMachine::prepare_restore`].
    fn prepare_restore(data: &[u8]) -> Option<Result<PreparedRestore, RestoreError>>
    where
        Self: Sized,
    {
        let _ = data;
        None
    }
    /// See [`StateMachine::install_prepared`].
    fn install_prepared(&mut self, prepared: PreparedRestore) -> Result<(), RestoreError> {
        let _ = prepared;
        Err(not_prepared())
    }
}

/// Adapts a typed [`StateMachine`] to [`RawStateMachine`], decoding commands
/// and queries and encoding outputs and errors with [`crate::codec`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Typed<S>(pub S);

fn encode_outcome<O: Serialize, E: Serialize>(
    result: Result<O, E>,
) -> Result<Bytes, CommandFailure> {
    match result {
        Ok(output) => Ok(crate::codec::encode(&output)),
        Err(error) => Err(CommandFailure::Application(crate::codec::encode(&error))),
    }
}

impl<S: StateMachine> RawStateMachine for Typed<S> {
    fn apply(
        &mut self,
        ctx: &mut ApplyContext<'_>,
        command: &[u8],
    ) -> Result<Bytes, CommandFailure> {
        let command = crate::codec::decode::<S::Command>(command)
            .map_err(|e| CommandFailure::Undecodable(e.to_string()))?;
        encode_outcome(self.0.apply(ctx, command))
    }

    fn query(&self, ctx: &QueryContext, query: &[u8]) -> Result<Bytes, CommandFailure> {
        let query = crate::codec::decode::<S::Query>(query)
            .map_err(|e| CommandFailure::Undecodable(e.to_string()))?;
        encode_outcome(self.0.query(ctx, query))
    }

    fn on_timer(&mut self, ctx: &mut ApplyContext<'_>, timer: TimerId) {
        self.0.on_timer(ctx, timer);
    }

    fn session_opened(&mut self, ctx: &mut ApplyContext<'_>, session: SessionId) {
        self.0.session_opened(ctx, session);
    }

    fn session_expired(&mut self, ctx: &mut ApplyContext<'_>, session: SessionId) {
        self.0.session_expired(ctx, session);
    }

    fn session_closed(&mut self, ctx: &mut ApplyContext<'_>, session: SessionId) {
        self.0.session_closed(ctx, session);
    }

    fn snapshot(&self) -> Bytes {
        self.0.snapshot()
    }

    fn deferred_snapshot(&self) -> Option<DeferredSnapshot> {
        self.0.deferred_snapshot()
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        self.0.restore(data)
    }

    fn prepare_restore(data: &[u8]) -> Option<Result<PreparedRestore, RestoreError>> {
        S::prepare_restore(data)
    }

    fn install_prepared(&mut self, prepared: PreparedRestore) -> Result<(), RestoreError> {
        self.0.install_prepared(prepared)
    }
}
