//! The session table: open sessions with their cached results and retained
//! events, the index of sessions by client, and why recent ones went.
//!
//! It keeps the bookkeeping of registration, keep-alives, expiry, the
//! exactly-once result cache and event retention. The replica decides when
//! each happens and runs the state machine's callbacks around it.

use std::collections::BTreeMap;

use bytes::Bytes;
use copycat_proto::{
    ClientError, ClientId, CommandFailure, Event, EventBatch, EventIndex, Response, Sequence,
    SessionId,
};
use copycat_raft::LogIndex;
use serde::{Deserialize, Serialize};

/// An open session as state machines see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session id (log index of its registration).
    pub id: SessionId,
    /// The client that registered it.
    pub client: ClientId,
    /// Its timeout.
    pub timeout_ms: u64,
}

/// A command's cached outcome, answered again for duplicates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct CachedResult {
    index: LogIndex,
    event_index: EventIndex,
    output: Result<Bytes, CommandFailure>,
}

fn command_response(sequence: Sequence, cached: &CachedResult) -> Response {
    Response::Command {
        sequence,
        index: cached.index.0,
        event_index: cached.event_index,
        output: cached.output.clone(),
    }
}

/// One open session.
///
/// Invariants: every cached result's sequence is in
/// `(acked_sequence, command_sequence]`; retained batches are in
/// `(acked_event_index, last_event_index]` and chain through
/// `previous_event_index`; `retained_events` counts their events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    client: ClientId,
    timeout_ms: u64,
    last_keep_alive_ms: u64,
    command_sequence: Sequence,
    acked_sequence: Sequence,
    results: BTreeMap<Sequence, CachedResult>,
    last_event_index: EventIndex,
    acked_event_index: EventIndex,
    events: BTreeMap<EventIndex, EventBatch>,
    retained_events: usize,
}

impl Session {
    /// The client received every result up to `acked`: drop them. A client
    /// cannot have received more than was produced; clamp so a confused
    /// client cannot make the invariants lie.
    fn acknowledge(&mut self, acked: Sequence) {
        let acked = acked.min(self.command_sequence);
        if acked > self.acked_sequence {
            self.acked_sequence = acked;
            self.results = self.results.split_off(&acked.next());
        }
    }

    fn is_suspect(&self, now_ms: u64) -> bool {
        #[allow(unused_mut)]
        let mut timeout_ms = self.timeout_ms;
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::ExpireAtHalfTimeout) {
            timeout_ms /= 2;
        }
        now_ms.saturating_sub(self.last_keep_alive_ms) > timeout_ms
    }

    /// Its timeout.
    pub(crate) fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// The time of its last keep-alive (or command, or timeout restart).
    pub(crate) fn last_keep_alive_ms(&self) -> u64 {
        self.last_keep_alive_ms
    }

    /// The last command sequence applied.
    pub(crate) fn command_sequence(&self) -> Sequence {
        self.command_sequence
    }

    /// The last event index published to it.
    pub(crate) fn last_event_index(&self) -> EventIndex {
        self.last_event_index
    }

    /// The sequences of its cached results, in order.
    pub(crate) fn cached_sequences(&self) -> impl Iterator<Item = Sequence> + '_ {
        self.results.keys().copied()
    }

    /// The event indexes of its retained batches, in order.
    pub(crate) fn retained_event_indexes(&self) -> impl Iterator<Item = EventIndex> + '_ {
        self.events.keys().copied()
    }

    /// The retained batch published at `event_index`.
    pub(crate) fn batch(&self, event_index: EventIndex) -> Option<&EventBatch> {
        self.events.get(&event_index)
    }

    /// The retained batches published after `event_index`, in order.
    pub(crate) fn batches_after(
        &self,
        event_index: EventIndex,
    ) -> impl Iterator<Item = &EventBatch> + '_ {
        self.events
            .range(EventIndex(event_index.0.saturating_add(1))..)
            .map(|(_, batch)| batch)
    }
}

/// Why a session left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Gone {
    Expired,
    Closed,
}

/// A command [`SessionTable::admit`] lets through, to record with
/// [`SessionTable::record_command`] once applied.
pub(crate) struct Admitted {
    session: SessionId,
    sequence: Sequence,
    #[cfg(feature = "planted-bugs")]
    events_before: EventIndex,
}

/// What [`SessionTable::admit`] decided about a command.
pub(crate) enum Admission {
    /// A duplicate, answered from the cache.
    Cached(Response),
    /// The session's next command: apply it.
    Next(Admitted),
}

/// The session table.
///
/// The replica's snapshot state encodes these fields in place: their order
/// is part of the snapshot format.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionTable {
    /// Set by a leader's no-op: the next timestamped entry restarts every
    /// session's timeout, so sessions do not expire for the time an election
    /// took (the original's no-op did the same).
    reset_keep_alives: bool,
    open: BTreeMap<SessionId, Session>,
    /// Invariant: exactly the open sessions, by client.
    clients: BTreeMap<ClientId, SessionId>,
    gone: BTreeMap<SessionId, Gone>,
}

impl SessionTable {
    /// Whether `id` is open.
    pub(crate) fn contains(&self, id: SessionId) -> bool {
        self.open.contains_key(&id)
    }

    /// The open session `id`.
    pub(crate) fn get(&self, id: SessionId) -> Option<&Session> {
        self.open.get(&id)
    }

    /// The open session of `client`.
    pub(crate) fn of_client(&self, client: ClientId) -> Option<SessionId> {
        self.clients.get(&client).copied()
    }

    /// The open sessions, in id order.
    pub(crate) fn infos(&self) -> impl Iterator<Item = SessionInfo> + '_ {
        self.open.iter().map(|(id, session)| SessionInfo {
            id: *id,
            client: session.client,
            timeout_ms: session.timeout_ms,
        })
    }

    /// The error for a request naming a session that is not open.
    pub(crate) fn missing(&self, id: SessionId) -> ClientError {
        match self.gone.get(&id) {
            Some(Gone::Expired) => ClientError::SessionExpired,
            _ => ClientError::UnknownSession,
        }
    }

    /// A leader's no-op applied: restart every session's timeout at the next
    /// timestamped entry.
    pub(crate) fn leader_noop(&mut self) {
        self.reset_keep_alives = true;
    }

    /// The clock moved to `now_ms`: restart every session's timeout there if
    /// a no-op asked for it.
    pub(crate) fn clock_advanced(&mut self, now_ms: u64) {
        if self.reset_keep_alives {
            self.reset_keep_alives = false;
            for session in self.open.values_mut() {
                session.last_keep_alive_ms = now_ms;
            }
        }
    }

    /// Sessions whose last keep-alive is older than their timeout at
    /// `now_ms`, in id order.
    pub(crate) fn suspects(&self, now_ms: u64) -> Vec<SessionId> {
        // A new leader's no-op restarts every session's timer at the next
        // timestamped entry: until then nobody is suspect.
        if self.reset_keep_alives {
            return Vec::new();
        }
        self.open
            .iter()
            .filter(|(_, session)| session.is_suspect(now_ms))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether `id` is open and suspect at `now_ms` (see
    /// [`SessionTable::suspects`]).
    pub(crate) fn is_suspect(&self, id: SessionId, now_ms: u64) -> bool {
        !self.reset_keep_alives && self.open.get(&id).is_some_and(|s| s.is_suspect(now_ms))
    }

    /// Open session `id` of `client` at `now_ms`, unless `max` are open. The
    /// client must have no open session: expire its old one first.
    pub(crate) fn register(
        &mut self,
        id: SessionId,
        client: ClientId,
        timeout_ms: u64,
        now_ms: u64,
        max: usize,
    ) -> Result<(), ClientError> {
        if self.open.len() >= max {
            return Err(ClientError::TooManySessions { max: max as u64 });
        }
        self.open.insert(
            id,
            Session {
                client,
                timeout_ms,
                last_keep_alive_ms: now_ms,
                command_sequence: Sequence::ZERO,
                acked_sequence: Sequence::ZERO,
                results: BTreeMap::new(),
                last_event_index: EventIndex::ZERO,
                acked_event_index: EventIndex::ZERO,
                events: BTreeMap::new(),
                retained_events: 0,
            },
        );
        self.clients.insert(client, id);
        Ok(())
    }

    /// Drop an open session and remember why it went, forgetting the oldest
    /// beyond `max_remembered`.
    pub(crate) fn remove(&mut self, id: SessionId, reason: Gone, max_remembered: usize) {
        let session = self.open.remove(&id).expect("removing an open session");
        self.clients.remove(&session.client);
        self.gone.insert(id, reason);
        while self.gone.len() > max_remembered {
            self.gone.pop_first();
        }
    }

    /// Refresh the session at `now_ms` and drop what the client says it has
    /// received.
    /// The client of `id` received every result up to `acked`: drop them
    /// (from a keep-alive or a command; nothing if the session is gone).
    pub(crate) fn acknowledge(&mut self, id: SessionId, acked: Sequence) {
        if let Some(session) = self.open.get_mut(&id) {
            session.acknowledge(acked);
        }
    }

    pub(crate) fn keep_alive(
        &mut self,
        id: SessionId,
        command_sequence: Sequence,
        event_index: EventIndex,
        now_ms: u64,
    ) -> Result<Response, ClientError> {
        let Some(session) = self.open.get_mut(&id) else {
            return Err(self.missing(id));
        };
        session.last_keep_alive_ms = now_ms;
        #[allow(unused_mut)]
        let mut acked = command_sequence;
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::KeepAliveDropsUnacknowledgedResults)
        {
            acked = session.command_sequence;
        }
        session.acknowledge(acked);
        let acked_events = event_index.min(session.last_event_index);
        if acked_events > session.acked_event_index {
            session.acked_event_index = acked_events;
            session.events = session.events.split_off(&EventIndex(acked_events.0 + 1));
            session.retained_events = session.events.values().map(|b| b.events.len()).sum();
        }
        Ok(Response::KeptAlive {
            event_index: session.last_event_index,
        })
    }

    /// Decide a command of session `id` at `now_ms`, exactly once: the next
    /// sequence is let through, earlier ones are answered from the cache,
    /// later ones are a gap. Refused if the cache holds `max_results`.
    pub(crate) fn admit(
        &mut self,
        id: SessionId,
        sequence: Sequence,
        now_ms: u64,
        max_results: usize,
    ) -> Result<Admission, ClientError> {
        let Some(session) = self.open.get_mut(&id) else {
            return Err(self.missing(id));
        };
        // Sequences start at 1: zero is a malformed request, not a
        // duplicate of something that was applied.
        if sequence == Sequence(0) {
            return Err(ClientError::Malformed(
                "command sequence numbers start at 1".into(),
            ));
        }
        // A command proves the client is alive as much as a keep-alive does.
        session.last_keep_alive_ms = now_ms;
        #[allow(unused_mut)]
        let mut duplicate = sequence <= session.command_sequence;
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::SkipDuplicateCheck)
            && sequence == session.command_sequence
        {
            duplicate = false;
        }
        if duplicate {
            return match session.results.get(&sequence) {
                Some(cached) => Ok(Admission::Cached(command_response(sequence, cached))),
                None => Err(ClientError::ResultDiscarded { sequence }),
            };
        }
        #[allow(unused_mut)]
        let mut next = session.command_sequence.next();
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::SkipDuplicateCheck)
            && sequence == session.command_sequence
        {
            next = sequence;
        }
        if sequence != next {
            return Err(ClientError::CommandGap {
                last_sequence: session.command_sequence,
            });
        }
        if session.results.len() >= max_results {
            return Err(ClientError::ResultCacheFull {
                max: max_results as u64,
            });
        }
        Ok(Admission::Next(Admitted {
            session: id,
            sequence,
            #[cfg(feature = "planted-bugs")]
            events_before: session.last_event_index,
        }))
    }

    /// Record the output of an admitted command applied at `index` and
    /// return its response, which carries the session's last event index so
    /// the client delivers the command's own events first.
    pub(crate) fn record_command(
        &mut self,
        admitted: Admitted,
        index: LogIndex,
        output: Result<Bytes, CommandFailure>,
    ) -> Response {
        let session = self
            .open
            .get_mut(&admitted.session)
            .expect("a command cannot close its own session");
        session.command_sequence = admitted.sequence;
        #[allow(unused_mut)]
        let mut event_index = session.last_event_index;
        #[cfg(feature = "planted-bugs")]
        if copycat_planted::active(copycat_planted::PlantedBug::ResponseBeforeOwnEvents) {
            event_index = admitted.events_before;
        }
        let cached = CachedResult {
            index,
            event_index,
            output,
        };
        let response = command_response(admitted.sequence, &cached);
        session.results.insert(admitted.sequence, cached);
        response
    }

    /// Append `event` to the batch of session `id` at `event_index`, which
    /// its first event starts, chained to the session's previous batch.
    /// Returns how many events the session retains, or `None` if it is not
    /// open.
    pub(crate) fn push_event(
        &mut self,
        id: SessionId,
        event_index: EventIndex,
        event: Event,
    ) -> Option<usize> {
        let session = self.open.get_mut(&id)?;
        let previous = session.last_event_index;
        session
            .events
            .entry(event_index)
            .or_insert_with(|| EventBatch {
                session: id,
                event_index,
                previous_event_index: previous,
                events: Vec::new(),
            })
            .events
            .push(event);
        session.last_event_index = event_index;
        session.retained_events += 1;
        Some(session.retained_events)
    }

    /// Forget every cached result (a planted bug's snapshot).
    #[cfg(feature = "planted-bugs")]
    pub(crate) fn clear_cached_results(&mut self) {
        for session in self.open.values_mut() {
            session.results.clear();
        }
    }

    /// Check the invariants written on the fields and on [`Session`], with
    /// the replica's applied index and limits; panics if one is broken.
    pub(crate) fn invariants(
        &self,
        applied_index: LogIndex,
        max_sessions: usize,
        max_results: usize,
    ) {
        if let Err(broken) = self.validate(applied_index, max_sessions, max_results) {
            panic!("session table invariant: {broken}");
        }
    }

    /// The invariants of [`invariants`](Self::invariants) as a check: the
    /// first one broken, described. A restored snapshot is checked with it
    /// before it replaces anything, so a damaged or forged image is an
    /// error, never a panic later.
    pub(crate) fn validate(
        &self,
        applied_index: LogIndex,
        max_sessions: usize,
        max_results: usize,
    ) -> Result<(), String> {
        fn check(ok: bool, broken: impl FnOnce() -> String) -> Result<(), String> {
            if ok {
                Ok(())
            } else {
                Err(broken())
            }
        }
        check(self.clients.len() == self.open.len(), || {
            format!(
                "{} clients for {} open sessions (one session per client)",
                self.clients.len(),
                self.open.len()
            )
        })?;
        check(self.open.len() <= max_sessions, || {
            format!(
                "{} open sessions, over the limit of {max_sessions}",
                self.open.len()
            )
        })?;
        for (id, reason) in &self.gone {
            check(!self.open.contains_key(id), || {
                format!("session {} is both open and {reason:?}", id.0)
            })?;
            check(id.0 <= applied_index.0, || {
                format!(
                    "gone session {} is after the applied index {}",
                    id.0, applied_index.0
                )
            })?;
        }
        for (id, session) in &self.open {
            let s = id.0;
            check(self.clients.get(&session.client) == Some(id), || {
                format!("session {s} is not its client's session")
            })?;
            check(id.0 >= 1 && id.0 <= applied_index.0, || {
                format!(
                    "session {s} was not registered by an applied entry (applied index {})",
                    applied_index.0
                )
            })?;
            // One sequence per applied command entry.
            check(session.command_sequence.0 <= applied_index.0, || {
                format!(
                    "session {s} applied command {} by index {}",
                    session.command_sequence.0, applied_index.0
                )
            })?;
            check(session.acked_sequence <= session.command_sequence, || {
                format!("session {s} acknowledged results it never produced")
            })?;
            check(session.results.len() <= max_results, || {
                format!(
                    "session {s} caches {} results, over the limit of {max_results}",
                    session.results.len()
                )
            })?;
            for (sequence, cached) in &session.results {
                check(
                    *sequence > session.acked_sequence && *sequence <= session.command_sequence,
                    || {
                        format!(
                            "session {s} caches the result of sequence {} outside ({}, {}]",
                            sequence.0, session.acked_sequence.0, session.command_sequence.0
                        )
                    },
                )?;
                check(
                    cached.index.0 <= applied_index.0
                        && cached.event_index <= session.last_event_index,
                    || format!("session {s} caches a result from the future"),
                )?;
            }
            check(
                session.acked_event_index <= session.last_event_index,
                || format!("session {s} acknowledged events never published"),
            )?;
            check(session.last_event_index.0 <= applied_index.0, || {
                format!(
                    "session {s} has events up to {} after the applied index {}",
                    session.last_event_index.0, applied_index.0
                )
            })?;
            let mut count: usize = 0;
            let mut previous = None;
            for (index, batch) in &session.events {
                check(*index == batch.event_index && batch.session == *id, || {
                    format!("session {s} holds a batch filed under the wrong key")
                })?;
                check(
                    *index > session.acked_event_index && *index <= session.last_event_index,
                    || {
                        format!(
                            "session {s} retains a batch at {} outside its range",
                            index.0
                        )
                    },
                )?;
                check(batch.previous_event_index < *index, || {
                    format!("session {s} has a batch chained forward")
                })?;
                if let Some(previous) = previous {
                    check(batch.previous_event_index == previous, || {
                        format!("session {s}'s event batches do not chain at {}", index.0)
                    })?;
                }
                previous = Some(*index);
                count = count.saturating_add(batch.events.len());
            }
            if let Some(previous) = previous {
                check(previous == session.last_event_index, || {
                    format!("session {s}'s last batch is not its last event index")
                })?;
            }
            check(count == session.retained_events, || {
                format!(
                    "session {s} counts {} retained events but holds {count}",
                    session.retained_events
                )
            })?;
        }
        Ok(())
    }
}
