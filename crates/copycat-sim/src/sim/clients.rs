//! The simulated clients and their workload.
//!
//! Each client is the production client session core
//! (`copycat_client::session::ClientSession`) with up to
//! `params.pipeline` operations in flight, each in a slot that is its own
//! history process. Operations are reads (linearizable, by lease or
//! ReadIndex, or sequential from whatever server the client talks to),
//! writes and compare-and-sets whose expected value is what the client last
//! saw. A client that waits longer than `params.client_timeout_ms` gives up
//! on an operation and records its outcome as unknown (`info`); the
//! operation may still take effect later, and the checker allows for that.
//!
//! Every answer is checked as it arrives, not only through the history:
//! errors are classified strictly (an error that a correct cluster never
//! gives a live session fails the run), reads must reflect every entry
//! committed before they were invoked, and events must match, one for one
//! and in order, what the state machine published to the session, each
//! before the response of the command that published it.

use std::collections::BTreeMap;

use bytes::Bytes;
use copycat_client::session::{
    ClientConfig, ClientOutput, ClientSession, OperationError, OperationId as ClientOperation,
    RecoveryStrategy, ServerSelection,
};
use copycat_proto::{ClientError, ClientId, Consistency, EventIndex, ServerMessage, SessionId};
use copycat_replica::codec;
use rand::Rng;
use serde_json::json;

use super::kv::{KvAction, KvCommand, KvOutput, KvQuery};
use super::params::SimParams;
use super::primitives::PrimitiveOp;
use super::world::{Event, Simulation};
use crate::history::{OperationId, ProcessId};

/// How often clients drive their session core (keep-alives, retries).
const CLIENT_TICK_MS: u64 = 5;
/// History processes per client: one per pipeline slot.
const SLOTS_MAX: u64 = 16;

/// What a client operation is, for completing its history entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    Read,
    /// A SEQUENTIAL read: not linearizable, so not in the history; checked
    /// for read-your-writes and never going back in time instead.
    SequentialRead,
    Write,
    Cas,
    /// An operation on the replicated primitives (not in the history).
    Primitive(PrimitiveOp),
}

/// An operation the client submitted and has not seen finish.
struct Pending {
    /// The client's operation number (carried in the command).
    op: u64,
    /// Its history entry (none for sequential reads, or once abandoned).
    id: Option<OperationId>,
    slot: usize,
    kind: OpKind,
    key: u8,
    /// The value a write or compare-and-set stores.
    value: u64,
    invoked_ms: u64,
    /// The session the operation was submitted in.
    session: Option<SessionId>,
    /// The lowest state index a read's answer may come from.
    floor: u64,
    /// The client gave up waiting (outcome recorded as unknown).
    abandoned: bool,
}

/// Where a client is in a session's event stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct EventCursor {
    /// The batch last delivered.
    event_index: EventIndex,
    /// Events of that batch delivered so far.
    delivered: usize,
}

pub(super) struct SimClient {
    session: ClientSession,
    next_op: u64,
    pending: BTreeMap<ClientOperation, Pending>,
    busy: Vec<bool>,
    next_value: u64,
    pub(super) ok_since_liveness: u64,
    /// The session the client last opened.
    pub(super) last_session: Option<SessionId>,
    /// The client crashed: it stopped talking to the cluster for good.
    pub(super) dead: bool,
    /// Session and state index of the client's latest read.
    last_read: Option<(SessionId, u64)>,
    /// Session and index of the latest command result delivered.
    last_write: Option<(SessionId, u64)>,
    /// What the client last saw in each key (read or written), for
    /// compare-and-sets that have a chance to succeed.
    seen: BTreeMap<u8, Option<u64>>,
    /// Per session, how far the client got in its event stream.
    events: BTreeMap<SessionId, EventCursor>,
}

impl SimClient {
    pub(super) fn new(client: usize, params: &SimParams, rng: &mut impl Rng) -> Self {
        let mut config = ClientConfig::new(ClientId(client as u128 + 1));
        config.request_id_prefix = params.prefix_of(client);
        config.session_timeout_ms = 20 * params.election_timeout_ms;
        config.request_timeout_ms = 3 * params.election_timeout_ms;
        config.backoff_ms = vec![10, 20, 50, params.election_timeout_ms];
        // Clients differ in whom they talk to, so reads are served by
        // leaders and followers alike.
        config.selection = match rng.gen_range(0..3) {
            0 => ServerSelection::Leader,
            1 => ServerSelection::Any,
            _ => ServerSelection::Followers,
        };
        // A client whose session expired (it was cut off too long) opens a
        // new one; guarantees do not carry across sessions.
        config.recovery = RecoveryStrategy::Recover;
        let mut session = ClientSession::new(config, 0).expect("valid client config");
        for node in 1..=params.nodes {
            session.connected(node);
        }
        Self {
            session,
            next_op: 1,
            pending: BTreeMap::new(),
            busy: vec![false; params.pipeline],
            next_value: 1,
            ok_since_liveness: 0,
            last_session: None,
            dead: false,
            last_read: None,
            last_write: None,
            seen: BTreeMap::new(),
            events: BTreeMap::new(),
        }
    }

    /// Whether the client has operations it still waits for.
    pub(super) fn waiting(&self) -> bool {
        self.pending.values().any(|p| !p.abandoned)
    }

    pub(super) fn describe(&self) -> String {
        if self.dead {
            return format!("crashed, last session {:?}", self.last_session);
        }
        format!(
            "{} ok since heal, {:?}, session {:?}, waiting {}",
            self.ok_since_liveness,
            self.session.state(),
            self.session.session_id(),
            self.waiting()
        )
    }
}

impl Simulation {
    pub(super) fn client_wake(&mut self, client: usize) {
        if self.clients[client].dead {
            // A crashed client: no keep-alives, no requests. Its session
            // must expire.
            return;
        }
        let now = self.now;
        self.clients[client].session.tick(now);
        self.abandon_overdue(client);
        // Once every live client got through after the heal, clients go
        // quiet (no new operations; keep-alives go on), so that the cluster
        // can be seen to converge even with the slowest parameters.
        // A slot freed by giving up takes a new operation, but the session
        // core still carries the old one: bound what it carries in all, or
        // abandoned operations pile up behind each other without end.
        let c = &self.clients[client];
        let free = c
            .busy
            .iter()
            .position(|b| !b)
            .filter(|_| c.pending.len() < 2 * c.busy.len());
        if let Some(slot) = free {
            if !self.clients_quiet() && self.rng.gen_bool(0.8) {
                self.client_submit(client, slot);
            }
        }
        self.client_outputs(client);
        self.schedule(CLIENT_TICK_MS, Event::ClientWake { client });
    }

    pub(super) fn clients_quiet(&self) -> bool {
        self.liveness_started.is_some()
            && self
                .clients
                .iter()
                .all(|c| c.dead || c.ok_since_liveness > 0)
    }

    /// Give up on operations the client waited too long for: their outcome
    /// is unknown, and their slot takes a new operation.
    fn abandon_overdue(&mut self, client: usize) {
        let timeout = self.params.client_timeout_ms;
        let now = self.now;
        let c = &mut self.clients[client];
        for pending in c.pending.values_mut() {
            if pending.abandoned || now.saturating_sub(pending.invoked_ms) < timeout {
                continue;
            }
            pending.abandoned = true;
            c.busy[pending.slot] = false;
            if let Some(id) = pending.id.take() {
                self.history.info(id, now);
            }
            self.stats.timed_out += 1;
        }
    }

    /// The highest index known committed anywhere: a linearizable read
    /// invoked now must reflect at least this.
    fn committed_floor(&self) -> u64 {
        let nodes = self
            .nodes
            .iter()
            .filter_map(|n| n.live.as_ref())
            .map(|l| l.shell.server().raft().commit_index())
            .max()
            .unwrap_or_default();
        nodes.max(self.observer.committed_max()).0
    }

    /// Start the client's next operation in `slot`.
    fn client_submit(&mut self, client: usize, slot: usize) {
        if self.params.primitives > 0.0 && self.rng.gen_bool(self.params.primitives) {
            self.primitive_submit(client, slot);
            return;
        }
        let key = self.rng.gen_range(0..self.params.keys);
        let key_name = format!("k{key}");
        let process = ProcessId(client as u64 * SLOTS_MAX + slot as u64);
        let c = &mut self.clients[client];
        let op = c.next_op;
        c.next_op += 1;
        let value = (client as u64 + 1) * 1_000_000 + c.next_value;
        c.next_value += 1;
        let session = c.session.session_id();
        let (id, kind, floor, submitted) = if self.rng.gen_bool(self.params.read_fraction) {
            let sequential = self.rng.gen_bool(self.params.sequential_fraction);
            let consistency = match (sequential, self.params.lease_reads) {
                (true, _) => Consistency::Sequential,
                (false, true) => Consistency::LinearizableLease,
                (false, false) => Consistency::Linearizable,
            };
            // Sequential reads may be stale by design: they stay out of the
            // linearizability history, but must see the session's own
            // writes and never go back behind a read the session already
            // completed; linearizable ones must see everything committed.
            let in_session = |last: Option<(SessionId, u64)>| match (last, session) {
                (Some((s, index)), Some(current)) if s == current => index,
                _ => 0,
            };
            let c = &self.clients[client];
            let session_floor = in_session(c.last_write).max(in_session(c.last_read));
            let floor = if sequential {
                session_floor
            } else {
                session_floor.max(self.committed_floor())
            };
            let id = (!sequential).then(|| {
                self.history
                    .invoke(process, "read", key_name.as_str(), json!(null), self.now)
            });
            let submitted = self.clients[client]
                .session
                .submit_query(codec::encode(&KvQuery::Read(key)), consistency);
            let kind = if sequential {
                OpKind::SequentialRead
            } else {
                OpKind::Read
            };
            (id, kind, floor, submitted)
        } else {
            let (f, input, action) = if self.rng.gen_bool(self.params.cas_fraction) {
                // Compare-and-set from what this client last saw of the key
                // (often current, so it often succeeds), or now and then
                // from another client's recent value or from absent.
                let expected = match self.clients[client].seen.get(&key) {
                    Some(seen) if self.rng.gen_bool(0.9) => *seen,
                    _ if self.rng.gen_bool(0.3) => None,
                    _ => {
                        let from = self.rng.gen_range(0..self.clients.len());
                        let back = self.rng.gen_range(1..=3);
                        let n = self.clients[from].next_value.saturating_sub(back).max(1);
                        Some((from as u64 + 1) * 1_000_000 + n)
                    }
                };
                (
                    "cas",
                    json!([expected, value]),
                    KvAction::Cas {
                        key,
                        expected,
                        new: value,
                    },
                )
            } else {
                ("write", json!(value), KvAction::Write { key, value })
            };
            let id = Some(
                self.history
                    .invoke(process, f, key_name.as_str(), input, self.now),
            );
            let command = KvCommand {
                client: client as u64,
                op,
                action,
            };
            let submitted = self.clients[client]
                .session
                .submit_command(codec::encode(&command));
            let kind = if f == "write" {
                OpKind::Write
            } else {
                OpKind::Cas
            };
            (id, kind, 0, submitted)
        };
        self.stats.invoked += 1;
        match submitted {
            Ok(operation) => {
                let c = &mut self.clients[client];
                c.busy[slot] = true;
                c.pending.insert(
                    operation,
                    Pending {
                        op,
                        id,
                        slot,
                        kind,
                        key,
                        value,
                        invoked_ms: self.now,
                        session,
                        floor,
                        abandoned: false,
                    },
                );
                let in_flight = self
                    .clients
                    .iter()
                    .map(|c| c.pending.values().filter(|p| !p.abandoned).count())
                    .sum::<usize>();
                self.stats.note_concurrency(in_flight);
            }
            Err(error) => {
                // Refused locally: never sent.
                if let Some(id) = id {
                    self.history.fail(id, self.now);
                }
                self.stats.failed += 1;
                self.trace(format_args!("client {client} op {op} refused: {error}"));
            }
        }
    }

    /// Start the client's next primitive operation in `slot`.
    fn primitive_submit(&mut self, client: usize, slot: usize) {
        let c = &mut self.clients[client];
        let op = c.next_op;
        c.next_op += 1;
        let session = c.session.session_id();
        let mut floor = 0;
        let (prim, submitted) = if let Some(prim) = self.primitive_query() {
            // Linearizable queries must reflect everything committed before
            // them; any answer must be the log's state at its index.
            let consistency = match (self.rng.gen_bool(0.3), self.params.lease_reads) {
                (true, _) => Consistency::Sequential,
                (false, true) => Consistency::LinearizableLease,
                (false, false) => Consistency::Linearizable,
            };
            if consistency != Consistency::Sequential {
                floor = self.committed_floor();
            }
            let query = KvQuery::Primitive(super::primitives::leader_query());
            let submitted = self.clients[client]
                .session
                .submit_query(codec::encode(&query), consistency);
            (prim, submitted)
        } else {
            let (prim, command) = self.primitive_command(client, op);
            let command = KvCommand {
                client: client as u64,
                op,
                action: KvAction::Primitive(command),
            };
            let submitted = self.clients[client]
                .session
                .submit_command(codec::encode(&command));
            (prim, submitted)
        };
        self.stats.invoked += 1;
        match submitted {
            Ok(operation) => {
                let c = &mut self.clients[client];
                c.busy[slot] = true;
                c.pending.insert(
                    operation,
                    Pending {
                        op,
                        id: None,
                        slot,
                        kind: OpKind::Primitive(prim),
                        key: 0,
                        value: 0,
                        invoked_ms: self.now,
                        session,
                        floor,
                        abandoned: false,
                    },
                );
            }
            Err(error) => {
                self.primitive_refused(prim);
                self.stats.failed += 1;
                self.trace(format_args!("client {client} op {op} refused: {error}"));
            }
        }
    }

    /// A server's message on a client connection: to the session it is
    /// for, found as the async client finds it (the request id's prefix,
    /// or the session an event batch names).
    pub(super) fn on_connection_reply(
        &mut self,
        connection: usize,
        node: usize,
        message: ServerMessage,
    ) {
        if let ServerMessage::Response { id, result } = &message {
            // The checker's final reads carry ids of their own.
            if self.on_final_read(node, *id, result) {
                return;
            }
        }
        let prefix = self.routes.entry(connection).or_default().route(&message);
        let Some(client) = prefix.and_then(|p| self.params.client_at(connection, p)) else {
            self.trace(format_args!(
                "n{} -> connection {connection}: for no session of it",
                node + 1
            ));
            return;
        };
        self.on_client_reply(client, node, message);
    }

    fn on_client_reply(&mut self, client: usize, node: usize, message: ServerMessage) {
        if self.cuts.client_cut(client, node) || self.clients[client].dead {
            return;
        }
        self.clients[client]
            .session
            .on_message(node as u64 + 1, message);
        self.client_outputs(client);
    }

    /// Carry out what the client's session core asks for, checking what it
    /// hands to the application.
    pub(super) fn client_outputs(&mut self, client: usize) {
        let outputs = self.clients[client].session.take_outputs();
        // When the session is lost, results already received are handed
        // over without their events (the events died with the session).
        let session_lost = outputs.iter().any(|output| {
            matches!(
                output,
                ClientOutput::CommandDone {
                    result: Err(OperationError::Rejected(ClientError::SessionExpired)),
                    ..
                } | ClientOutput::QueryDone {
                    result: Err(OperationError::Rejected(ClientError::SessionExpired)),
                    ..
                }
            )
        });
        for output in outputs {
            if self.failed() {
                return;
            }
            match output {
                ClientOutput::Send { server, request } => {
                    self.send_to_server(client, (server - 1) as usize, request);
                }
                ClientOutput::CommandDone { operation, result }
                | ClientOutput::QueryDone { operation, result } => {
                    self.client_done(client, operation, result, session_lost);
                }
                ClientOutput::Event {
                    session,
                    event_index,
                    event,
                } => {
                    let cursor = self.clients[client]
                        .events
                        .get(&session)
                        .copied()
                        .unwrap_or_default();
                    match self.observer.check_event(
                        session,
                        cursor.event_index,
                        cursor.delivered,
                        event_index,
                        &event,
                    ) {
                        Ok(delivered) => {
                            if let Err(failure) = self.primitive_event(client, session, &event) {
                                self.fail(format!("client {client}: {failure}"));
                                return;
                            }
                            self.clients[client].events.insert(
                                session,
                                EventCursor {
                                    event_index,
                                    delivered,
                                },
                            );
                            self.stats.events += 1;
                        }
                        Err(failure) => {
                            self.fail(format!("client {client}: {failure}"));
                            return;
                        }
                    }
                }
                ClientOutput::SessionOpened { session, .. } => {
                    self.trace(format_args!("client {client} opened session {}", session.0));
                    // Once a client got through after the heal, its session is
                    // alive and reachable: it must never expire again.
                    if self.clients[client].ok_since_liveness > 0 {
                        self.fail(format!(
                            "client {client}: a live session that can reach a quorum expired (new session {session:?})"
                        ));
                        return;
                    }
                    // A new session holds no locks and waits for none.
                    self.primitive_session_lost(client);
                    let c = &mut self.clients[client];
                    c.last_session = Some(session);
                    // Operations submitted while no session existed run in
                    // this one.
                    for pending in c.pending.values_mut() {
                        if pending.session.is_none() {
                            pending.session = Some(session);
                        }
                    }
                }
                ClientOutput::StateChanged(state) => {
                    self.trace(format_args!("client {client} is {state:?}"));
                }
            }
        }
    }

    /// An operation finished: check it and record it in the history.
    fn client_done(
        &mut self,
        client: usize,
        operation: ClientOperation,
        result: Result<Bytes, OperationError>,
        session_lost: bool,
    ) {
        let Some(pending) = self.clients[client].pending.remove(&operation) else {
            self.fail(format!(
                "client {client}: the session core finished {operation:?}, which was never submitted or already finished"
            ));
            return;
        };
        if !pending.abandoned {
            self.clients[client].busy[pending.slot] = false;
        }
        let op = pending.op;
        let current = self.clients[client].session.session_id();
        let output = match &result {
            Ok(bytes) => match codec::decode::<KvOutput>(bytes) {
                Ok(output) => Some(output),
                Err(error) => {
                    self.fail(format!(
                        "client {client} op {op}: undecodable result: {error}"
                    ));
                    return;
                }
            },
            Err(error) => {
                self.classify_error(client, &pending, error);
                return;
            }
        };
        let Some(session) = pending.session.or(current) else {
            self.fail(format!(
                "client {client} op {op}: a result without a session"
            ));
            return;
        };
        match (pending.kind, output) {
            (OpKind::Read | OpKind::SequentialRead, Some(KvOutput::Value(value, index))) => {
                if index < pending.floor {
                    let what = if pending.kind == OpKind::Read {
                        "was committed or seen by the session before the linearizable read was invoked"
                    } else {
                        "was seen by the session (its own write or an earlier read) before the read was invoked"
                    };
                    self.fail(format!(
                        "client {client} op {op}: read of k{} answered from the state at index {index}, but index {} {what}",
                        pending.key, pending.floor
                    ));
                    return;
                }
                if let Err(failure) = self.observer.check_read_value(
                    pending.key,
                    value,
                    copycat_raft::LogIndex(index),
                ) {
                    self.fail(format!("client {client} op {op}: {failure}"));
                    return;
                }
                let c = &mut self.clients[client];
                if c.last_read.is_none_or(|(s, i)| s != session || i < index) {
                    c.last_read = Some((session, index));
                }
                c.seen.insert(pending.key, value);
                if pending.kind == OpKind::SequentialRead {
                    self.stats.sequential_reads += 1;
                } else {
                    self.stats.reads += 1;
                }
                if let Some(id) = pending.id {
                    self.history.ok(id, json!(value), self.now);
                    self.stats.ok += 1;
                }
            }
            (OpKind::Write | OpKind::Cas, Some(KvOutput::Done(applied, index))) => {
                // The command's own event comes before its response.
                if !session_lost {
                    if let Err(failure) = self.observer.check_event_before_response(
                        session,
                        self.clients[client]
                            .events
                            .get(&session)
                            .map(|c| c.event_index),
                        index,
                    ) {
                        self.fail(format!("client {client} op {op}: {failure}"));
                        return;
                    }
                }
                let c = &mut self.clients[client];
                if c.last_write.is_none_or(|(s, i)| s != session || i < index) {
                    c.last_write = Some((session, index));
                }
                if applied {
                    self.clients[client]
                        .seen
                        .insert(pending.key, Some(pending.value));
                    self.observer.on_acknowledged(client as u64, op);
                    if pending.kind == OpKind::Cas {
                        self.stats.cas_ok += 1;
                    }
                    if let Some(id) = pending.id {
                        let input = self.history.operation(id).input.clone();
                        self.history.ok(id, input, self.now);
                        self.stats.ok += 1;
                    }
                    self.count_liveness_success(client, pending.invoked_ms);
                } else {
                    // The compare-and-set found another value: it changed
                    // nothing, a definite failure.
                    self.clients[client].seen.remove(&pending.key);
                    if let Some(id) = pending.id {
                        self.history.fail(id, self.now);
                        self.stats.failed += 1;
                    }
                    self.count_liveness_success(client, pending.invoked_ms);
                }
            }
            (
                OpKind::Primitive(PrimitiveOp::LeaderQuery),
                Some(KvOutput::Primitive(result, index)),
            ) => {
                if index < pending.floor {
                    self.fail(format!(
                        "client {client} op {op}: a linearizable leader query was answered from the state at index {index}, but index {} was committed before it was invoked",
                        pending.floor
                    ));
                    return;
                }
                let query = super::primitives::leader_query();
                if let Err(failure) = self.observer.check_primitive_query(
                    &query,
                    &result,
                    copycat_raft::LogIndex(index),
                ) {
                    self.fail(format!("client {client} op {op}: {failure}"));
                    return;
                }
                self.stats.primitive_queries += 1;
            }
            (OpKind::Primitive(prim), Some(KvOutput::Primitive(result, index))) => {
                if !session_lost {
                    if let Err(failure) = self.observer.check_event_before_response(
                        session,
                        self.clients[client]
                            .events
                            .get(&session)
                            .map(|c| c.event_index),
                        index,
                    ) {
                        self.fail(format!("client {client} op {op}: {failure}"));
                        return;
                    }
                }
                let c = &mut self.clients[client];
                if c.last_write.is_none_or(|(s, i)| s != session || i < index) {
                    c.last_write = Some((session, index));
                }
                self.observer.on_acknowledged(client as u64, op);
                if let Err(failure) = self.primitive_done(client, session, prim, result) {
                    self.fail(format!("client {client} op {op}: {failure}"));
                    return;
                }
                self.count_liveness_success(client, pending.invoked_ms);
            }
            (kind, other) => {
                self.fail(format!(
                    "client {client} op {op}: unexpected result {other:?} for a {kind:?}"
                ));
            }
        }
    }

    /// An operation ended in an error: decide whether a correct cluster
    /// could have given it, and what the history learns.
    fn classify_error(&mut self, client: usize, pending: &Pending, error: &OperationError) {
        let op = pending.op;
        let now = self.now;
        let unknown = |sim: &mut Self| {
            if let Some(id) = pending.id {
                sim.history.info(id, now);
                sim.stats.unknown += 1;
            }
        };
        match error {
            OperationError::Rejected(ClientError::SessionExpired | ClientError::UnknownSession) => {
                // The session is gone: whatever was in flight may or may not
                // have applied. But the log must show it expired.
                if let Some(session) = pending.session {
                    if let Err(failure) = self.observer.check_session_gone(session) {
                        self.fail(format!("client {client} op {op}: {failure}"));
                        return;
                    }
                }
                unknown(self);
            }
            OperationError::Closed => unknown(self),
            OperationError::Refused(reason) => {
                self.fail(format!(
                    "client {client} op {op}: the session core refused a sent operation: {reason}"
                ));
            }
            OperationError::Rejected(error) => {
                // Not leader, unavailable, gaps and full caches are retried
                // inside the session core; what reaches the application is
                // a server answer no correct cluster gives these requests
                // (a result discarded before the client acknowledged it, a
                // well-formed request called malformed, ...).
                self.fail(format!(
                    "client {client} op {op} ({:?}): a live session got {error:?}",
                    pending.kind
                ));
            }
            OperationError::Failed(failure) => {
                self.fail(format!(
                    "client {client} op {op}: the state machine failed: {failure:?}"
                ));
            }
        }
    }

    /// A command invoked after the heal was applied: the client's session
    /// is alive in the healed cluster (applying a command refreshes it). A
    /// result held back from before the heal proves nothing about now.
    fn count_liveness_success(&mut self, client: usize, invoked: u64) {
        if self
            .liveness_started
            .is_some_and(|started| invoked >= started)
        {
            self.clients[client].ok_since_liveness += 1;
        }
    }
}
