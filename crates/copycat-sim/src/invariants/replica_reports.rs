//! What replicas report against what the committed log implies:
//!
//! * each replica's record of applying an entry (its clock, the sessions it
//!   expired, the events it published) matches the [`SessionModel`] and
//!   every other replica's record of the same entry;
//! * every event a client receives is the next one published to its
//!   session (none lost, none twice, none out of order), and a command's
//!   response comes after the event the command published;
//! * a read answered from the state at index `i` returns the value the log
//!   gives the key at `i` (a reference replica replays the log to know);
//! * a replica restored from a snapshot (after a restart or an install) is
//!   the replica that replaying the log from the start gives, compared
//!   through its public view (sessions, timings, cached results, retained
//!   events, timers, clock and the state machine), not through its own
//!   snapshot encoding, which a bug could make lossy on every replica.

use std::collections::BTreeMap;

use copycat_proto::{Event, EventIndex, SessionId};
use copycat_raft::{LogIndex, NodeId};
use copycat_replica::{Applied, Replica, Typed};

use super::session_log::SessionModel;
use super::{Check, Observer};
use crate::sim::kv::KvMachine;

/// The replica type the simulator runs.
pub type SimReplica = Replica<Typed<KvMachine>>;

/// What the first replica to apply an entry reported, to compare with the
/// others.
#[derive(Debug)]
pub(super) struct FirstReport {
    node: NodeId,
    time_ms: u64,
    expired: Vec<SessionId>,
    events: Vec<copycat_proto::EventBatch>,
}

/// The log replayed: a session model, a reference replica, the values each
/// key took, and every event published.
pub(super) struct Reference {
    pub(super) model: SessionModel,
    replica: SimReplica,
    /// The next index to replay.
    next: LogIndex,
    /// Per key, the value from each index where it changed.
    values: BTreeMap<u8, BTreeMap<LogIndex, Option<u64>>>,
    /// Per session, the events published at each event index.
    published: BTreeMap<SessionId, BTreeMap<EventIndex, Vec<Event>>>,
    reports: BTreeMap<LogIndex, FirstReport>,
    /// Records not checked yet because the log is not known that far.
    unchecked: Vec<(NodeId, Applied)>,
    /// Rebuilt on demand to compare restored replicas at their index.
    restore_checker: Option<SimReplica>,
}

impl std::fmt::Debug for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reference")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Reference {
    pub(super) fn new(config: copycat_replica::ReplicaConfig) -> Self {
        let replica = Replica::new(config.clone(), Typed(KvMachine::default()))
            .expect("valid replica configuration");
        Self {
            model: SessionModel::new(config),
            replica,
            next: LogIndex(1),
            values: BTreeMap::new(),
            published: BTreeMap::new(),
            reports: BTreeMap::new(),
            unchecked: Vec::new(),
            restore_checker: None,
        }
    }
}

/// A replica as its public view shows it, for comparisons that do not
/// trust its own encoding.
fn view(replica: &SimReplica) -> String {
    let sessions: Vec<String> = replica
        .sessions()
        .iter()
        .map(|s| {
            format!(
                "{}:{:?}/{:?}/results {:?}/events {:?} last {:?}",
                s.id.0,
                s.client,
                replica.session_timing(s.id),
                replica.cached_sequences(s.id),
                replica.retained_event_indexes(s.id),
                replica.last_event_index(s.id)
            )
        })
        .collect();
    format!(
        "applied {:?}, time {}ms, timers {:?}, sessions [{}], machine {:?}",
        replica.applied_index(),
        replica.time_ms(),
        replica.pending_timers(),
        sessions.join(", "),
        replica.machine().0
    )
}

impl Observer {
    /// Replay every newly known committed entry, then check the records
    /// that were waiting for it.
    fn advance_reference(&mut self) -> Check {
        while let Some((entry, _)) = self.committed.get(&self.reference.next) {
            let entry = entry.clone();
            let reference = &mut self.reference;
            reference.model.apply(&entry);
            let before = reference.replica.machine().0.state.values.clone();
            let record = reference.replica.apply(&entry);
            // Judged after the reference moves past the entry, so that a
            // failure here does not make the next call apply it again.
            let primitives = self.primitives.on_applied(&entry, &record);
            let reference = &mut self.reference;
            let after = &reference.replica.machine().0.state.values;
            for key in before.keys().chain(after.keys()) {
                if before.get(key) != after.get(key) {
                    reference
                        .values
                        .entry(*key)
                        .or_default()
                        .insert(entry.index, after.get(key).copied());
                }
            }
            reference.next = entry.index.next();
            primitives?;
        }
        let next = self.reference.next;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reference.unchecked)
            .into_iter()
            .partition(|(_, record)| record.index < next);
        self.reference.unchecked = waiting;
        for (node, record) in ready {
            self.check_record(node, record)?;
        }
        Ok(())
    }

    /// `node` applied entries and reported what each did.
    pub fn on_applied_records(&mut self, node: NodeId, records: &[Applied]) -> Check {
        self.reference
            .unchecked
            .extend(records.iter().map(|r| (node, r.clone())));
        self.advance_reference()
    }

    fn check_record(&mut self, node: NodeId, record: Applied) -> Check {
        let index = record.index;
        let model = &self.reference.model;
        let clock = model.clock_at(index).expect("replayed that far");
        if record.time_ms != clock {
            return Err(format!(
                "replica time: {node:?} has clock {}ms after applying {index:?}, but the largest timestamp in the log up to there is {clock}ms",
                record.time_ms
            ));
        }
        if record.expired != model.expired_at(index) {
            let descriptions: Vec<String> = record
                .expired
                .iter()
                .map(|s| format!("{}: {}", s.0, model.describe(*s)))
                .collect();
            return Err(format!(
                "session expiry: {node:?} expired {:?} at {index:?}, but the log expires {:?} there ({})",
                record.expired,
                model.expired_at(index),
                descriptions.join("; ")
            ));
        }
        match self.reference.reports.get(&index) {
            Some(first) => {
                if first.time_ms != record.time_ms
                    || first.expired != record.expired
                    || first.events != record.events
                {
                    return Err(format!(
                        "replica determinism: applying {index:?}, {node:?} reported time {}ms, expired {:?}, events {:?}; {:?} reported {}ms, {:?}, {:?}",
                        record.time_ms,
                        record.expired,
                        record.events,
                        first.node,
                        first.time_ms,
                        first.expired,
                        first.events
                    ));
                }
            }
            None => {
                for batch in &record.events {
                    self.reference
                        .published
                        .entry(batch.session)
                        .or_default()
                        .insert(batch.event_index, batch.events.clone());
                }
                self.reference.reports.insert(
                    index,
                    FirstReport {
                        node,
                        time_ms: record.time_ms,
                        expired: record.expired,
                        events: record.events,
                    },
                );
            }
        }
        Ok(())
    }

    /// A client of `session` received `event` in the batch `event_index`,
    /// having received `delivered` events of the batch `cursor` so far. It
    /// must be the next event published to the session. Returns how many
    /// events of `event_index` the client now has.
    pub fn check_event(
        &self,
        session: SessionId,
        cursor: EventIndex,
        delivered: usize,
        event_index: EventIndex,
        event: &Event,
    ) -> Result<usize, String> {
        let Some(batches) = self.reference.published.get(&session) else {
            return Err(format!(
                "received an event for session {session:?}, to which nothing was published"
            ));
        };
        let position = if event_index == cursor && cursor != EventIndex::ZERO {
            delivered
        } else {
            if cursor != EventIndex::ZERO {
                let previous = batches.get(&cursor).map_or(0, Vec::len);
                if delivered != previous {
                    return Err(format!(
                        "session {session:?} moved on to events of {event_index:?} after {delivered} of the {previous} events of {cursor:?}"
                    ));
                }
            }
            let next = batches
                .range(EventIndex(cursor.0 + 1)..)
                .next()
                .map(|(index, _)| *index);
            if next != Some(event_index) {
                return Err(format!(
                    "session {session:?} received events of {event_index:?} after {cursor:?}, but the next events published to it are at {next:?}"
                ));
            }
            0
        };
        match batches.get(&event_index).and_then(|b| b.get(position)) {
            Some(expected) if expected == event => Ok(position + 1),
            expected => Err(format!(
                "session {session:?} received {event:?} as event {position} of {event_index:?}, but {expected:?} was published there"
            )),
        }
    }

    /// A command of `session` applied at `index` answered; the client had
    /// received events up to `cursor`. The command published an event at
    /// its own index, which must have come first.
    pub fn check_event_before_response(
        &self,
        session: SessionId,
        cursor: Option<EventIndex>,
        index: u64,
    ) -> Check {
        let published = self
            .reference
            .published
            .get(&session)
            .is_some_and(|b| b.contains_key(&EventIndex(index)));
        if !published {
            return Err(format!(
                "the command applied at {index} in session {session:?} published no event to it"
            ));
        }
        if cursor.unwrap_or(EventIndex::ZERO) < EventIndex(index) {
            return Err(format!(
                "the response of the command applied at {index} in session {session:?} came before its event (events delivered up to {cursor:?})"
            ));
        }
        Ok(())
    }

    /// A client was told `session` expired (or is unknown).
    pub fn check_session_gone(&mut self, session: SessionId) -> Check {
        self.advance_reference()?;
        if self.reference.model.is_gone(session) {
            return Ok(());
        }
        Err(format!(
            "session {session:?} was reported expired to its client, but the log shows it {}",
            self.reference.model.describe(session)
        ))
    }

    /// A query of the primitives answered `result` from the state at
    /// `index` (see `PrimitiveChecker::check_query`).
    pub fn check_primitive_query(
        &mut self,
        query: &copycat_primitives::Query,
        result: &Result<copycat_primitives::Output, copycat_primitives::ResourceError>,
        index: LogIndex,
    ) -> Check {
        self.advance_reference()?;
        if index >= self.reference.next {
            // The log is not known that far yet (see `check_read_value`).
            return Ok(());
        }
        self.primitives.check_query(query, result, index.0)
    }

    /// A read of `key` answered `value` from the state at `index`.
    pub fn check_read_value(&mut self, key: u8, value: Option<u64>, index: LogIndex) -> Check {
        self.advance_reference()?;
        if index >= self.reference.next {
            // The log is not known that far yet (cannot happen for a state
            // some server applied, but do not guess).
            return Ok(());
        }
        let expected = self
            .reference
            .values
            .get(&key)
            .and_then(|changes| changes.range(..=index).next_back())
            .and_then(|(_, value)| *value);
        if expected != value {
            return Err(format!(
                "read of k{key} at {index:?} returned {value:?}, but the log gives {expected:?} there"
            ));
        }
        Ok(())
    }

    /// `node`'s replica was restored from a snapshot (`what` says how): it
    /// must be the replica that replaying the log up to its index gives.
    pub fn check_restored(&mut self, node: NodeId, replica: &SimReplica, what: &str) -> Check {
        let target = replica.applied_index();
        if target == LogIndex::ZERO {
            return Ok(());
        }
        if self
            .reference
            .restore_checker
            .as_ref()
            .is_none_or(|r| r.applied_index() > target)
        {
            self.reference.restore_checker = Some(
                Replica::new(self.replica_config.clone(), Typed(KvMachine::default()))
                    .expect("valid replica configuration"),
            );
        }
        let checker = self.reference.restore_checker.as_mut().expect("just set");
        while checker.applied_index() < target {
            let next = checker.applied_index().next();
            let Some((entry, _)) = self.committed.get(&next) else {
                // Not every entry before the snapshot is known (cannot
                // happen: someone applied them to take it); skip.
                return Ok(());
            };
            checker.apply(entry);
        }
        let restored = view(replica);
        let replayed = view(checker);
        if restored != replayed {
            return Err(format!(
                "restored replica: {node:?} after {what} at {target:?} is\n  {restored}\nbut replaying the log gives\n  {replayed}"
            ));
        }
        Ok(())
    }
}
