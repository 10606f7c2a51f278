//! The replica: applies committed log entries to a state machine, keeping
//! the session table, exactly-once result cache, deterministic clock and
//! timers, and retained events.
//!
//! [`Replica::apply`] takes committed [`Entry`] values in log order and
//! returns, for each, an [`Applied`] record of what happened. It never reads
//! a clock and never performs I/O; everything it decides depends only on the
//! entries it was given (and a restored snapshot), so every server that
//! applies the same log reaches the same state, which [`Replica::digest`]
//! summarizes.
//!
//! The session table and the timer schedule keep their own bookkeeping (the
//! crate's `sessions` and `timers` modules); this module drives them in log
//! order and runs the state machine's callbacks between their steps.

use std::collections::BTreeSet;

use bytes::Bytes;
use copycat_proto::{
    ClientError, ClientId, CommandFailure, DecodeError, Event, EventBatch, EventIndex, LogBody,
    LogCommand, Response, Sequence, SessionId,
};
use copycat_raft::{Entry, EntryPayload, LogIndex};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{ReplicaConfig, ReplicaConfigError};
use crate::image::ReplicaImage;
use crate::machine::{ApplyContext, PreparedRestore, QueryContext, RawStateMachine, RestoreError};
use crate::sessions::{Admission, Gone, SessionInfo, SessionTable};
use crate::timers::{TimerId, Timers};

pub use crate::sessions::Session;

/// Format version of replica snapshots.
pub const SNAPSHOT_VERSION: u8 = 1;

/// Everything replicated except the user state: what snapshots carry
/// besides the state machine image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    applied_index: LogIndex,
    /// Invariant: never decreases.
    clock_ms: u64,
    sessions: SessionTable,
    timers: Timers,
    undecodable_entries: u64,
}

/// What applying one command entry decided, for whoever waits for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to report: a Raft no-op or configuration entry, or a tick.
    Nothing,
    /// The entry could not be decoded and was skipped (and counted).
    Skipped(DecodeError),
    /// A registration: answer the client that sent it.
    Register {
        /// The registering client.
        client: ClientId,
        /// `Registered` or why not.
        result: Result<Response, ClientError>,
    },
    /// A keep-alive or unregistration of `session`.
    Session {
        /// The session.
        session: SessionId,
        /// `KeptAlive` / `Unregistered` or why not.
        result: Result<Response, ClientError>,
    },
    /// A command of `session` with `sequence`.
    Command {
        /// The session.
        session: SessionId,
        /// The sequence.
        sequence: Sequence,
        /// `Command` (with the output or a cached failure) or why not.
        result: Result<Response, ClientError>,
    },
    /// A batch of keep-alives: each session's answer, in the entry's order.
    KeepAlives(Vec<(SessionId, Result<Response, ClientError>)>),
    /// An expire entry.
    Expire {
        /// The session named.
        session: SessionId,
        /// Whether it expired now (false if it was kept alive meanwhile or
        /// was already gone).
        expired: bool,
    },
}

/// What happened when one entry was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The entry's index.
    pub index: LogIndex,
    /// The replica clock after the entry.
    pub time_ms: u64,
    /// The answer for the entry's originator.
    pub outcome: Outcome,
    /// Event batches published at this index, one per receiving session,
    /// in session order. Push each to the server connection its session is
    /// bound to, before the command responses that follow them (the
    /// responses say up to which event index to deliver first).
    pub events: Vec<EventBatch>,
    /// Sessions expired by this entry (by an expire entry, re-registration or
    /// event overflow), in the order they expired.
    pub expired: Vec<SessionId>,
    /// Sessions closed by this entry (unregistered or expired).
    pub closed: Vec<SessionId>,
}

/// The answer to [`Replica::query`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryOutcome {
    /// Not applied far enough yet: ask again after applying more entries.
    Wait,
    /// The answer.
    Done(Result<Response, ClientError>),
}

/// A replica snapshot that could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SnapshotError {
    /// Not a replica snapshot of a version this build reads.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The state machine rejected its image.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// The image decoded, but its replica state breaks an invariant (a
    /// damaged or forged image, or one taken under larger limits than this
    /// replica's), or it is not the state at the snapshot's index.
    #[error("inconsistent replica snapshot: {0}")]
    Inconsistent(String),
}

/// A snapshot image as it is decoded (encoded by [`ReplicaImage::encode`]:
/// the state, then the machine image as postcard bytes).
#[derive(Deserialize)]
struct SnapshotImageRef<'a> {
    state: State,
    #[serde(borrow)]
    machine: &'a [u8],
}

/// A replica snapshot image decoded and checked ahead of time, on any
/// thread ([`Replica::prepare`]), to be swapped in by
/// [`Replica::install_prepared`] on the thread that owns the replica.
pub struct PreparedImage {
    index: LogIndex,
    state: State,
    machine: PreparedMachine,
}

enum PreparedMachine {
    /// Decoded by [`RawStateMachine::prepare_restore`].
    Decoded(PreparedRestore),
    /// The state machine prepares no restores: its image, for
    /// [`RawStateMachine::restore`] at install time.
    Image(Bytes),
}

impl std::fmt::Debug for PreparedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let machine = match &self.machine {
            PreparedMachine::Decoded(_) => "decoded".to_string(),
            PreparedMachine::Image(image) => format!("{} bytes to restore", image.len()),
        };
        f.debug_struct("PreparedImage")
            .field("index", &self.index)
            .field("machine", &machine)
            .finish()
    }
}

impl PreparedImage {
    /// The index whose state it is.
    pub fn index(&self) -> LogIndex {
        self.index
    }

    /// Whether installing it only swaps a decoded state machine in (the
    /// state machine implements [`RawStateMachine::prepare_restore`]);
    /// otherwise install restores the state machine from its image.
    pub fn is_decoded(&self) -> bool {
        matches!(self.machine, PreparedMachine::Decoded(_))
    }
}

/// Decode a snapshot image's replica state and check it (format version,
/// the index it must be the state at, the replica invariants), borrowing
/// the machine image from `data`.
fn decode_image<'a>(
    config: &ReplicaConfig,
    data: &'a [u8],
    index: Option<LogIndex>,
) -> Result<SnapshotImageRef<'a>, SnapshotError> {
    let (&version, body) = data.split_first().ok_or(DecodeError::Empty)?;
    if version != SNAPSHOT_VERSION {
        return Err(DecodeError::UnknownVersion {
            found: version,
            supported: SNAPSHOT_VERSION,
        }
        .into());
    }
    // The machine image is borrowed from `data`, not copied.
    let image: SnapshotImageRef<'_> =
        postcard::from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if let Some(index) = index {
        if image.state.applied_index != index {
            return Err(SnapshotError::Inconsistent(format!(
                "the image is the state at index {}, the snapshot is at {}",
                image.state.applied_index.0, index.0
            )));
        }
    }
    image
        .state
        .validate(config)
        .map_err(SnapshotError::Inconsistent)?;
    Ok(image)
}

/// Whether `prefix`, the first bytes of an image of `total` bytes, starts
/// like a [`Replica::snapshot`] image of the state at `index`: its version,
/// and its replica state (decoded and checked as a restore checks it; the
/// state machine's image is not looked at). `Ok(false)` when the prefix is
/// too short to tell: ask again with more.
pub fn check_image_head(
    config: &ReplicaConfig,
    prefix: &[u8],
    total: u64,
    index: LogIndex,
) -> Result<bool, SnapshotError> {
    let (&version, body) = prefix.split_first().ok_or(DecodeError::Empty)?;
    if version != SNAPSHOT_VERSION {
        return Err(DecodeError::UnknownVersion {
            found: version,
            supported: SNAPSHOT_VERSION,
        }
        .into());
    }
    let state = match postcard::take_from_bytes::<State>(body) {
        Ok((state, _)) => state,
        Err(postcard::Error::DeserializeUnexpectedEnd) if (prefix.len() as u64) < total => {
            return Ok(false)
        }
        Err(e) => return Err(DecodeError::Malformed(e.to_string()).into()),
    };
    if state.applied_index != index {
        return Err(SnapshotError::Inconsistent(format!(
            "the image is the state at index {}, the snapshot is at {}",
            state.applied_index.0, index.0
        )));
    }
    state
        .validate(config)
        .map_err(SnapshotError::Inconsistent)?;
    Ok(true)
}

/// Work collected while applying one entry.
struct Step {
    index: LogIndex,
    published: Vec<(SessionId, Event)>,
    touched: BTreeSet<SessionId>,
    overflowed: BTreeSet<SessionId>,
    expired: Vec<SessionId>,
    closed: Vec<SessionId>,
}

/// A replicated state machine with client sessions. See the module docs.
pub struct Replica<M> {
    config: ReplicaConfig,
    state: State,
    machine: M,
}

impl<M: RawStateMachine> Replica<M> {
    /// A replica of an empty log, around `machine` in its initial state.
    pub fn new(config: ReplicaConfig, machine: M) -> Result<Self, ReplicaConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            state: State::default(),
            machine,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// The state machine (for inspection; mutate it only through the log).
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The last applied index.
    pub fn applied_index(&self) -> LogIndex {
        self.state.applied_index
    }

    /// The replica clock: the largest timestamp applied.
    pub fn time_ms(&self) -> u64 {
        self.state.clock_ms
    }

    /// How many command entries could not be decoded and were skipped.
    pub fn undecodable_entries(&self) -> u64 {
        self.state.undecodable_entries
    }

    /// The open sessions, in id order.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.state.sessions.infos().collect()
    }

    /// The timeout of an open session.
    pub fn session_timeout_ms(&self, session: SessionId) -> Option<u64> {
        self.state.sessions.get(session).map(|s| s.timeout_ms())
    }

    /// The last event index published to an open session.
    pub fn last_event_index(&self, session: SessionId) -> Option<EventIndex> {
        self.state
            .sessions
            .get(session)
            .map(|s| s.last_event_index())
    }

    /// The timers pending, as (deadline, id), in firing order.
    pub fn pending_timers(&self) -> Vec<(u64, TimerId)> {
        self.state.timers.pending().collect()
    }

    /// The log time at which the next timer fires, if one is pending.
    pub fn next_timer_due(&self) -> Option<u64> {
        self.state.timers.pending().next().map(|(due, _)| due)
    }

    /// Sessions whose last keep-alive is older than their timeout by the
    /// replica clock. The leader's shell proposes an `Expire` entry for each;
    /// expiry happens only when that entry applies (and only if the session
    /// is still suspect then).
    pub fn suspect_sessions(&self) -> Vec<SessionId> {
        self.state.sessions.suspects(self.state.clock_ms)
    }

    /// The error for a read-side request (a query, an event reset) naming
    /// a session that is not open here. A session's id is the index of its
    /// registration: a replica that has not applied that far (a lagging
    /// follower, a reserve) has simply not heard of it yet, which says
    /// nothing about the session; the client should ask another server.
    fn missing_here(&self, session: SessionId) -> ClientError {
        if self.state.applied_index < LogIndex(session.0) {
            return ClientError::Unavailable(
                "this server has not caught up with the session".into(),
            );
        }
        self.state.sessions.missing(session)
    }

    /// Apply the next committed entry.
    ///
    /// Entries must come in increasing index order; the caller may skip
    /// entries that carry nothing for the replica, but passing an index at or
    /// below the applied index is a broken invariant and panics.
    pub fn apply(&mut self, entry: &Entry) -> Applied {
        assert!(
            entry.index > self.state.applied_index,
            "entries apply in order: {:?} after {:?}",
            entry.index,
            self.state.applied_index
        );
        let mut step = Step {
            index: entry.index,
            published: Vec::new(),
            touched: BTreeSet::new(),
            overflowed: BTreeSet::new(),
            expired: Vec::new(),
            closed: Vec::new(),
        };
        let outcome = match &entry.payload {
            EntryPayload::Noop => {
                self.state.sessions.leader_noop();
                Outcome::Nothing
            }
            EntryPayload::Config(_) => Outcome::Nothing,
            EntryPayload::Command(data) => match LogCommand::decode(data) {
                Ok(command) => {
                    self.advance_time(&mut step, command.timestamp_ms);
                    self.apply_body(&mut step, command.body)
                }
                Err(error) => {
                    self.state.undecodable_entries += 1;
                    tracing::warn!(index = entry.index.0, %error, "skipping undecodable entry");
                    Outcome::Skipped(error)
                }
            },
        };
        // A session that exceeded its retained-event limit is not reading
        // its events; expire it here, at a position every replica agrees on.
        // Expiry callbacks may publish and overflow others, hence the loop.
        while let Some(session) = step.overflowed.pop_first() {
            if self.state.sessions.contains(session) {
                tracing::info!(
                    session = session.0,
                    "expiring session: too many unacknowledged events"
                );
                self.expire_session(&mut step, session);
            }
        }
        // A command whose own events overflowed its session expired that
        // session at this entry: its events will never be delivered, so the
        // client must not wait for them. It learns the session expired (the
        // command's outcome is unknown to it, as after any expiry).
        let outcome = match outcome {
            Outcome::Command {
                session,
                sequence,
                result: Ok(_),
            } if !self.state.sessions.contains(session) => Outcome::Command {
                session,
                sequence,
                result: Err(ClientError::SessionExpired),
            },
            outcome => outcome,
        };
        self.state.applied_index = entry.index;
        let events = step
            .touched
            .iter()
            .filter_map(|id| {
                self.state
                    .sessions
                    .get(*id)?
                    .batch(EventIndex(entry.index.0))
            })
            .cloned()
            .collect();
        Applied {
            index: entry.index,
            time_ms: self.state.clock_ms,
            outcome,
            events,
            expired: step.expired,
            closed: step.closed,
        }
    }

    /// Move the clock to `timestamp_ms` (never back), firing every timer due
    /// on the way in (deadline, id) order, each seeing its own deadline as
    /// the time.
    fn advance_time(&mut self, step: &mut Step, timestamp_ms: u64) {
        #[allow(unused_mut)]
        let mut target = self.state.clock_ms.max(timestamp_ms);
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::ClockFromEntryTimestamp) {
            target = timestamp_ms;
        }
        while let Some((timer, deadline_ms)) = self.state.timers.pop_due(target) {
            self.state.clock_ms = self.state.clock_ms.max(deadline_ms);
            self.call(step, None, |machine, ctx| machine.on_timer(ctx, timer));
        }
        self.state.clock_ms = target;
        self.state.sessions.clock_advanced(target);
    }

    /// Run a state machine callback with a fresh context, then record what it
    /// published.
    fn call<R>(
        &mut self,
        step: &mut Step,
        session: Option<SessionId>,
        f: impl FnOnce(&mut M, &mut ApplyContext<'_>) -> R,
    ) -> R {
        let mut ctx = ApplyContext {
            index: step.index,
            time_ms: self.state.clock_ms,
            session,
            sessions: &self.state.sessions,
            timers: &mut self.state.timers,
            max_timers: self.config.max_timers,
            published: &mut step.published,
        };
        let result = f(&mut self.machine, &mut ctx);
        self.record_published(step);
        result
    }

    /// Append the events published so far in this step to their sessions'
    /// batch at this index.
    fn record_published(&mut self, step: &mut Step) {
        let event_index = EventIndex(step.index.0);
        for (id, event) in step.published.drain(..) {
            let Some(retained) = self.state.sessions.push_event(id, event_index, event) else {
                // Closed by a later callback in the same step.
                continue;
            };
            step.touched.insert(id);
            if retained > self.config.max_retained_events_per_session {
                step.overflowed.insert(id);
            }
        }
    }

    fn apply_body(&mut self, step: &mut Step, body: LogBody) -> Outcome {
        match body {
            LogBody::Register { client, timeout_ms } => {
                let result = self.register(step, client, timeout_ms);
                Outcome::Register { client, result }
            }
            LogBody::KeepAlive {
                session,
                command_sequence,
                event_index,
            } => Outcome::Session {
                session,
                result: self.keep_alive(session, command_sequence, event_index),
            },
            LogBody::Unregister { session } => {
                let result = if self.state.sessions.contains(session) {
                    self.close_session(step, session, Gone::Closed);
                    Ok(Response::Unregistered)
                } else {
                    Err(self.state.sessions.missing(session))
                };
                Outcome::Session { session, result }
            }
            LogBody::Command {
                session,
                sequence,
                acked,
                payload,
            } => {
                // What the client acknowledges goes first, so the cache
                // has room for this result.
                self.state.sessions.acknowledge(session, acked);
                Outcome::Command {
                    session,
                    sequence,
                    result: self.command(step, session, sequence, &payload),
                }
            }
            LogBody::Expire { session } => {
                // Re-check at apply time: the leader saw the session as
                // suspect, but a keep-alive may have been applied since.
                let expired = self.state.sessions.is_suspect(session, self.state.clock_ms);
                if expired {
                    self.expire_session(step, session);
                }
                Outcome::Expire { session, expired }
            }
            LogBody::Tick => Outcome::Nothing,
            LogBody::KeepAlives(batch) => Outcome::KeepAlives(
                batch
                    .into_iter()
                    .map(|k| {
                        let result = self.keep_alive(k.session, k.command_sequence, k.event_index);
                        (k.session, result)
                    })
                    .collect(),
            ),
        }
    }

    /// Register a session whose id is this entry's index. A client that
    /// registers again has lost its old session: expire it first.
    fn register(
        &mut self,
        step: &mut Step,
        client: ClientId,
        requested_timeout_ms: u64,
    ) -> Result<Response, ClientError> {
        if let Some(old) = self.state.sessions.of_client(client) {
            self.expire_session(step, old);
        }
        let id = SessionId(step.index.0);
        let timeout_ms = self.config.session_timeout_ms(requested_timeout_ms);
        self.state.sessions.register(
            id,
            client,
            timeout_ms,
            self.state.clock_ms,
            self.config.max_sessions,
        )?;
        self.call(step, Some(id), |machine, ctx| {
            machine.session_opened(ctx, id)
        });
        Ok(Response::Registered {
            session: id,
            timeout_ms,
        })
    }

    /// Refresh the session and drop what the client says it has received.
    fn keep_alive(
        &mut self,
        id: SessionId,
        command_sequence: Sequence,
        event_index: EventIndex,
    ) -> Result<Response, ClientError> {
        self.state
            .sessions
            .keep_alive(id, command_sequence, event_index, self.state.clock_ms)
    }

    /// Apply a command exactly once: the next sequence is applied, earlier
    /// ones are answered from the cache, later ones are a gap.
    fn command(
        &mut self,
        step: &mut Step,
        id: SessionId,
        sequence: Sequence,
        payload: &Bytes,
    ) -> Result<Response, ClientError> {
        let admitted = match self.state.sessions.admit(
            id,
            sequence,
            self.state.clock_ms,
            self.config.max_cached_results_per_session,
        )? {
            Admission::Cached(response) => return Ok(response),
            Admission::Next(admitted) => admitted,
        };
        let max_bytes = self.config.max_command_bytes;
        let output = if payload.len() > max_bytes {
            // Use the sequence up with a failure in place of the command, so
            // later commands of the session are not blocked behind it.
            Err(CommandFailure::TooLarge {
                size: payload.len() as u64,
                max: max_bytes as u64,
            })
        } else {
            self.call(step, Some(id), |machine, ctx| machine.apply(ctx, payload))
        };
        Ok(self
            .state
            .sessions
            .record_command(admitted, step.index, output))
    }

    /// Expire a session: run expire then close callbacks.
    fn expire_session(&mut self, step: &mut Step, id: SessionId) {
        step.expired.push(id);
        self.remove_session(id, Gone::Expired);
        self.call(step, Some(id), |machine, ctx| {
            machine.session_expired(ctx, id)
        });
        step.closed.push(id);
        self.call(step, Some(id), |machine, ctx| {
            machine.session_closed(ctx, id)
        });
    }

    fn close_session(&mut self, step: &mut Step, id: SessionId, reason: Gone) {
        self.remove_session(id, reason);
        step.closed.push(id);
        self.call(step, Some(id), |machine, ctx| {
            machine.session_closed(ctx, id)
        });
    }

    /// Drop a session from the table (before its callbacks run, so they see
    /// it closed and cannot publish to it) and remember why it went.
    fn remove_session(&mut self, id: SessionId, reason: Gone) {
        self.state
            .sessions
            .remove(id, reason, self.config.max_remembered_sessions);
    }

    /// Answer a query against the current state, or say to wait.
    ///
    /// `sequence` and `index` are the last command sequence and the highest
    /// log index the client has seen: answering only once both are applied
    /// gives read-your-writes and monotonic reads across servers. Which
    /// `index` makes a read linearizable (ReadIndex, lease) is the caller's
    /// decision; pass the larger of it and the client's index.
    pub fn query(
        &self,
        session: SessionId,
        sequence: Sequence,
        index: LogIndex,
        payload: &[u8],
    ) -> QueryOutcome {
        // Wait until this replica has seen everything the client has (its
        // session's registration included): a lagging replica must not
        // report a session it simply has not heard of yet as unknown.
        if self.state.applied_index < index {
            return QueryOutcome::Wait;
        }
        let Some(open) = self.state.sessions.get(session) else {
            return QueryOutcome::Done(Err(self.missing_here(session)));
        };
        if open.command_sequence() < sequence {
            return QueryOutcome::Wait;
        }
        let ctx = QueryContext {
            index: self.state.applied_index,
            time_ms: self.state.clock_ms,
            session,
        };
        QueryOutcome::Done(Ok(Response::Query {
            index: self.state.applied_index.0,
            event_index: open.last_event_index(),
            output: self.machine.query(&ctx, payload),
        }))
    }

    /// The retained event batches of `session` published after
    /// `from_event_index`, to resend after the client saw a gap.
    pub fn reset_events(
        &self,
        session: SessionId,
        from_event_index: EventIndex,
    ) -> Result<(Response, Vec<EventBatch>), ClientError> {
        let Some(open) = self.state.sessions.get(session) else {
            return Err(self.missing_here(session));
        };
        #[allow(unused_mut)]
        let mut skip = 0;
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::ResetSkipsFirstBatch) {
            skip = 1;
        }
        let batches = open
            .batches_after(from_event_index)
            .skip(skip)
            .cloned()
            .collect();
        Ok((
            Response::EventsReset {
                event_index: open.last_event_index(),
            },
            batches,
        ))
    }

    /// The full replica state (session table, cached results, retained
    /// events, timers, clock and the state machine image) as bytes: the
    /// [`image`](Self::image) in one buffer.
    pub fn snapshot(&self) -> Bytes {
        self.image().to_bytes()
    }

    /// The bytes of [`snapshot`](Self::snapshot) in two parts, encoded in
    /// one pass without copying the state machine's image.
    pub fn image(&self) -> ReplicaImage {
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::SnapshotDropsCachedResults) {
            let mut state = self.state.clone();
            state.sessions.clear_cached_results();
            return ReplicaImage::encode(SNAPSHOT_VERSION, &state, self.machine.snapshot());
        }
        match self.machine.deferred_snapshot() {
            Some(machine) => ReplicaImage::deferred(SNAPSHOT_VERSION, &self.state, machine),
            None => ReplicaImage::encode(SNAPSHOT_VERSION, &self.state, self.machine.snapshot()),
        }
    }

    /// Replace the whole replica state with a [`Replica::snapshot`] image.
    /// The image's replica state is checked before anything is replaced:
    /// one that breaks an invariant is [`SnapshotError::Inconsistent`]. On
    /// error the replica is unchanged unless the state machine's own
    /// restore failed half-way (then the replica must not be used).
    pub fn restore(&mut self, data: &[u8]) -> Result<(), SnapshotError> {
        self.restore_checked(data, None)
    }

    /// [`restore`](Self::restore) an image that must be the state at
    /// `index` (the index of the Raft snapshot carrying it): an image whose
    /// applied index differs is [`SnapshotError::Inconsistent`].
    pub fn restore_at(&mut self, data: &[u8], index: LogIndex) -> Result<(), SnapshotError> {
        self.restore_checked(data, Some(index))
    }

    fn restore_checked(
        &mut self,
        data: &[u8],
        index: Option<LogIndex>,
    ) -> Result<(), SnapshotError> {
        let image = decode_image(&self.config, data, index)?;
        self.machine.restore(image.machine)?;
        self.state = image.state;
        Ok(())
    }

    /// Everything [`restore_at`](Self::restore_at) does that does not touch
    /// the replica, on any thread: decode the image that must be the state
    /// at `index` and check it as `restore_at` does, and decode the state
    /// machine's image with [`RawStateMachine::prepare_restore`] if it
    /// implements it. A large image takes long: call it off the thread
    /// that drives Raft, then hand the result to
    /// [`install_prepared`](Self::install_prepared).
    pub fn prepare(
        config: &ReplicaConfig,
        data: Bytes,
        index: LogIndex,
    ) -> Result<PreparedImage, SnapshotError> {
        let image = decode_image(config, &data, Some(index))?;
        let machine = match M::prepare_restore(image.machine) {
            Some(decoded) => PreparedMachine::Decoded(decoded?),
            // Kept without a copy: a slice of `data`.
            None => PreparedMachine::Image(data.slice_ref(image.machine)),
        };
        Ok(PreparedImage {
            index,
            state: image.state,
            machine,
        })
    }

    /// Replace the whole replica state with a [`prepare`](Self::prepare)d
    /// image: cheap when the state machine decoded its part ahead of time,
    /// a [`RawStateMachine::restore`] otherwise. On error the replica is
    /// unchanged unless the state machine failed half-way (then it must not
    /// be used).
    pub fn install_prepared(&mut self, prepared: PreparedImage) -> Result<(), SnapshotError> {
        match prepared.machine {
            PreparedMachine::Decoded(decoded) => self.machine.install_prepared(decoded)?,
            PreparedMachine::Image(image) => self.machine.restore(&image)?,
        }
        self.state = prepared.state;
        Ok(())
    }

    /// A checksum of the whole replicated state (crc32c over the canonical
    /// encoding of the replica state and the state machine image). Two
    /// replicas that applied the same log have equal digests.
    pub fn digest(&self) -> u32 {
        let state = postcard::to_allocvec(&self.state).expect("replica state serializes");
        crc32c::crc32c_append(crc32c::crc32c(&state), &self.machine.snapshot())
    }

    /// Check the invariants written on the replica's fields; panics if one is
    /// broken. Cheap enough for the simulator to call after every step.
    pub fn invariants(&self) {
        let state = &self.state;
        state.sessions.invariants(
            state.applied_index,
            self.config.max_sessions,
            self.config.max_cached_results_per_session,
        );
        assert!(state.timers.len() <= self.config.max_timers);
        state.timers.invariants();
    }
}

impl State {
    /// The invariants [`Replica::invariants`] asserts, as a check of a
    /// state that is not in use yet (a restored image): the first broken.
    fn validate(&self, config: &ReplicaConfig) -> Result<(), String> {
        self.sessions.validate(
            self.applied_index,
            config.max_sessions,
            config.max_cached_results_per_session,
        )?;
        if self.timers.len() > config.max_timers {
            return Err(format!(
                "{} timers pending, over the limit of {}",
                self.timers.len(),
                config.max_timers
            ));
        }
        self.timers.validate()
    }
}

/// A session's timeout and last keep-alive, for tests and diagnostics.
impl<M> Replica<M> {
    /// `(timeout_ms, last_keep_alive_ms)` of an open session.
    pub fn session_timing(&self, session: SessionId) -> Option<(u64, u64)> {
        self.state
            .sessions
            .get(session)
            .map(|s| (s.timeout_ms(), s.last_keep_alive_ms()))
    }

    /// Whether command `sequence` of `session`, acknowledging `acked`, would
    /// be refused for a full result cache by this replica's applied state
    /// (never for a sequence already applied: that is answered from the
    /// cache).
    pub fn result_cache_full(
        &self,
        session: SessionId,
        sequence: Sequence,
        acked: Sequence,
    ) -> bool {
        self.state.sessions.get(session).is_some_and(|s| {
            let kept = s.cached_sequences().filter(|seq| *seq > acked).count();
            sequence > s.command_sequence() && kept >= self.config.max_cached_results_per_session
        })
    }

    /// The sequences of the results cached for an open session.
    pub fn cached_sequences(&self, session: SessionId) -> Vec<Sequence> {
        self.state
            .sessions
            .get(session)
            .map(|s| s.cached_sequences().collect())
            .unwrap_or_default()
    }

    /// The event indexes of the batches retained for an open session.
    pub fn retained_event_indexes(&self, session: SessionId) -> Vec<EventIndex> {
        self.state
            .sessions
            .get(session)
            .map(|s| s.retained_event_indexes().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
