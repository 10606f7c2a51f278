//! The sans-IO client session.
//!
//! # Driving it
//!
//! Inputs: [`ClientSession::connected`] / [`ClientSession::disconnected`]
//! when a connection to a server opens or drops, [`ClientSession::tick`] with
//! the current time, [`ClientSession::on_message`] for every frame a server
//! sends, and the application's [`ClientSession::submit_command`],
//! [`ClientSession::submit_query`] and [`ClientSession::close`]. After any
//! input, drain [`ClientSession::take_outputs`] and carry the outputs out in
//! order: send the requests, hand results and events to the application.
//!
//! # What it guarantees
//!
//! * Commands get sequence numbers 1, 2, 3, ... in submission order and are
//!   resubmitted with the same numbers after a gap, a redirect, a timeout or
//!   a reconnect, so the cluster applies each once.
//! * Results are handed over in sequence order, and only after every event
//!   the cluster published to the session before them (responses carry that
//!   event index). A query's result follows the results of the commands
//!   submitted before it.
//! * Event batches are delivered in order; a gap makes the session ask the
//!   server to resend (`ResetEvents`).
//! * A keep-alive goes out every timeout / 2, acknowledging the results and
//!   events delivered, so servers can drop them. Without a successful
//!   keep-alive for a whole timeout the state becomes
//!   [`ClientState::Suspended`]; when the cluster says the session expired it
//!   is [`ClientState::Closed`], or with [`RecoveryStrategy::Recover`] a new
//!   session is registered (guarantees do not carry across sessions:
//!   operations in flight fail).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use copycat_proto::{
    ClientError, ClientId, ClientRequest, CommandFailure, Consistency, Event, EventBatch,
    EventIndex, Request, RequestId, Response, Sequence, ServerMessage, SessionId,
};
use thiserror::Error;

/// A server, by its Raft node id.
pub type ServerId = u64;

/// Which servers the session talks to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServerSelection {
    /// Any connected server (keep the current one while it works).
    Any,
    /// The leader when known (fewest hops for commands). The default.
    #[default]
    Leader,
    /// Prefer servers other than the known leader (spreads sequential reads
    /// and event pushes away from it).
    Followers,
}

/// What to do when the cluster expires the session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryStrategy {
    /// Stop: the session is closed for good. The default.
    #[default]
    Close,
    /// Register a new session and carry on.
    Recover,
}

/// The session's state, as the application sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// Registered and recently kept alive (or registering for the first time).
    Connected,
    /// No successful keep-alive for a whole timeout: the session may have
    /// expired. Operations wait.
    Suspended,
    /// Closed or expired; nothing more will happen.
    Closed,
}

/// Settings of a [`ClientSession`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// This client's identity (random, chosen once per process).
    pub client: ClientId,
    /// The session timeout to ask for (0: the server default).
    pub session_timeout_ms: u64,
    /// Keep-alive cadence and suspension threshold while the server's
    /// granted timeout is unknown.
    pub assumed_timeout_ms: u64,
    /// How long to wait for a response before resending the request.
    pub request_timeout_ms: u64,
    /// Retry delays in order; the last repeats (Fibonacci-like by default).
    pub backoff_ms: Vec<u64>,
    /// Server selection.
    pub selection: ServerSelection,
    /// Recovery after expiry.
    pub recovery: RecoveryStrategy,
    /// Largest command or query payload accepted by `submit_*`.
    pub max_payload_bytes: usize,
    /// Most operations (commands and queries) waiting at once.
    pub max_pending_operations: usize,
    /// The high bits of this session's request ids (at most
    /// [`MAX_REQUEST_ID_PREFIX`]): sessions sharing one connection use
    /// different prefixes, so the server's answers, which echo the ids, can
    /// be routed back to their session. Zero for a session with a
    /// connection of its own.
    pub request_id_prefix: u32,
}

/// Request ids are `prefix << 40 | counter`: the counter takes the low 40
/// bits (it wraps after about 10^12 requests, long after the ones sent
/// before have been answered or given up), the prefix the 24 above.
pub const REQUEST_ID_COUNTER_BITS: u32 = 40;

/// The largest [`ClientConfig::request_id_prefix`].
pub const MAX_REQUEST_ID_PREFIX: u32 = (1 << (64 - REQUEST_ID_COUNTER_BITS)) - 1;

/// The [`ClientConfig::request_id_prefix`] a request id carries.
pub fn request_id_prefix(id: RequestId) -> u32 {
    (id.0 >> REQUEST_ID_COUNTER_BITS) as u32
}

/// Which of the sessions sharing one connection a server's message is for
/// (sans-IO: the async client's shared connections and the simulator use
/// the same table). An answer carries the prefix of its request's id; an
/// event batch names its session, whose prefix is learned from the answer
/// that registered it.
#[derive(Clone, Debug, Default)]
pub struct SessionRoutes {
    session_prefixes: BTreeMap<SessionId, u32>,
    prefix_sessions: BTreeMap<u32, SessionId>,
    #[cfg(feature = "planted-bugs")]
    newest: Option<u32>,
}

impl SessionRoutes {
    /// The prefix of the session `message` is for, if known.
    pub fn route(&mut self, message: &ServerMessage) -> Option<u32> {
        match message {
            ServerMessage::Response { id, result } => {
                let prefix = request_id_prefix(*id);
                if let Ok(Response::Registered { session, .. }) = result {
                    if let Some(old) = self.prefix_sessions.insert(prefix, *session) {
                        if old != *session {
                            self.session_prefixes.remove(&old);
                        }
                    }
                    self.session_prefixes.insert(*session, prefix);
                    #[cfg(feature = "planted-bugs")]
                    {
                        self.newest = Some(prefix);
                    }
                }
                Some(prefix)
            }
            ServerMessage::Events(batch) => {
                #[cfg(feature = "planted-bugs")]
                if copycat_planted::active(copycat_planted::PlantedBug::EventsToNewestSession) {
                    return self.newest;
                }
                self.session_prefixes.get(&batch.session).copied()
            }
        }
    }

    /// The session at `prefix` left the connection: forget it.
    pub fn forget(&mut self, prefix: u32) {
        if let Some(session) = self.prefix_sessions.remove(&prefix) {
            self.session_prefixes.remove(&session);
        }
    }
}

impl ClientConfig {
    /// Defaults for `client`: 5 s sessions, 1/1/2/3/5 s backoff.
    pub fn new(client: ClientId) -> Self {
        Self {
            client,
            session_timeout_ms: 5_000,
            assumed_timeout_ms: 5_000,
            request_timeout_ms: 5_000,
            backoff_ms: vec![1_000, 1_000, 2_000, 3_000, 5_000],
            selection: ServerSelection::default(),
            recovery: RecoveryStrategy::default(),
            max_payload_bytes: 1024 * 1024,
            max_pending_operations: 10_000,
            request_id_prefix: 0,
        }
    }

    /// Check the settings.
    pub fn validate(&self) -> Result<(), ClientConfigError> {
        if self.backoff_ms.is_empty() {
            return Err(ClientConfigError("backoff_ms must not be empty".into()));
        }
        if self.assumed_timeout_ms < 2 || self.request_timeout_ms == 0 {
            return Err(ClientConfigError(
                "assumed_timeout_ms must be at least 2 and request_timeout_ms positive".into(),
            ));
        }
        if self.request_id_prefix > MAX_REQUEST_ID_PREFIX {
            return Err(ClientConfigError(format!(
                "request_id_prefix must be at most {MAX_REQUEST_ID_PREFIX}"
            )));
        }
        if self.max_payload_bytes == 0 || self.max_pending_operations == 0 {
            return Err(ClientConfigError(
                "max_payload_bytes and max_pending_operations must be positive".into(),
            ));
        }
        Ok(())
    }

    fn backoff(&self, attempt: u32) -> u64 {
        let last = self.backoff_ms.len() - 1;
        self.backoff_ms[(attempt as usize).min(last)]
    }
}

/// A configuration [`ClientConfig::validate`] rejected.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("invalid client configuration: {0}")]
pub struct ClientConfigError(pub String);

/// Identifies one submitted command or query (local to this client; stays
/// the same across resubmissions and sessions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OperationId(pub u64);

/// Why an operation gave no output.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum OperationError {
    /// The state machine's failure (application error, undecodable, too
    /// large), as cached by the cluster.
    #[error(transparent)]
    Failed(#[from] CommandFailure),
    /// The cluster refused it (session expired, limits, ...). For a command
    /// refused because its session expired the outcome is unknown: it may
    /// have been applied before.
    #[error(transparent)]
    Rejected(#[from] ClientError),
    /// Refused locally before being sent.
    #[error("refused locally: {0}")]
    Refused(String),
    /// The session was closed by the application.
    #[error("session closed")]
    Closed,
}

/// What the caller must do or deliver, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOutput {
    /// Send `request` to `server` (which is connected).
    Send {
        /// Destination.
        server: ServerId,
        /// The request frame.
        request: ClientRequest,
    },
    /// A command finished.
    CommandDone {
        /// Which one.
        operation: OperationId,
        /// Its output or failure.
        result: Result<Bytes, OperationError>,
    },
    /// A query finished.
    QueryDone {
        /// Which one.
        operation: OperationId,
        /// Its output or failure.
        result: Result<Bytes, OperationError>,
    },
    /// An event for the application, in order.
    Event {
        /// The session it was published to.
        session: SessionId,
        /// The index it was published at.
        event_index: EventIndex,
        /// The event.
        event: Event,
    },
    /// The session is registered (first time, or again after recovery).
    SessionOpened {
        /// The new session.
        session: SessionId,
        /// The timeout the cluster granted.
        timeout_ms: u64,
    },
    /// The state changed.
    StateChanged(ClientState),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RequestKind {
    Register,
    KeepAlive,
    Unregister,
    Command(Sequence),
    Query(OperationId),
    Reset,
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    kind: RequestKind,
    server: ServerId,
    sent_ms: u64,
}

/// When an operation may be (re)sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SendState {
    /// Waiting to be sent at or after this time.
    Due(u64),
    /// In flight as this request.
    Sent(RequestId),
}

#[derive(Clone, Debug)]
struct CommandOp {
    operation: OperationId,
    payload: Bytes,
    send: SendState,
    attempts: u32,
}

#[derive(Clone, Debug)]
struct QueryOp {
    payload: Bytes,
    consistency: Consistency,
    /// Commands submitted before the query; it is answered after them.
    after_sequence: Sequence,
    send: SendState,
    attempts: u32,
}

#[derive(Clone, Debug)]
struct Finished {
    operation: OperationId,
    event_index: EventIndex,
    result: Result<Bytes, OperationError>,
}

/// The registered session and everything numbered within it.
///
/// Invariants: `delivered_sequence < next_sequence`; every key of
/// `commands` and `results` is in `(delivered_sequence, next_sequence)`.
#[derive(Clone, Debug)]
struct Registered {
    id: SessionId,
    timeout_ms: u64,
    next_sequence: Sequence,
    /// Highest sequence whose result was handed to the application, with all
    /// before it: what keep-alives acknowledge.
    delivered_sequence: Sequence,
    /// Highest event index delivered in order.
    event_index: EventIndex,
    last_keep_alive_sent_ms: u64,
    last_keep_alive_ok_ms: u64,
    reset_in_flight: bool,
    /// The highest event index the cluster said it published: what a reset
    /// must bring the session up to.
    events_needed: EventIndex,
    /// No reset before this time: the last one went to a server that had
    /// not caught up with the session's events.
    reset_due_ms: u64,
    /// A server answered a reset without the events the cluster published:
    /// resets go to the leader from now on.
    reset_at_leader: bool,
}

/// The deterministic client session. See the module docs.
pub struct ClientSession {
    config: ClientConfig,
    now_ms: u64,
    state: ClientState,
    session: Option<Registered>,
    /// Whether the application asked to close.
    closing: bool,
    register_due_ms: u64,
    register_attempts: u32,
    connected: BTreeSet<ServerId>,
    current: Option<ServerId>,
    leader_hint: Option<ServerId>,
    /// Servers that just failed a request (unavailable, timed out), and
    /// until when the selection avoids each.
    avoid: BTreeMap<ServerId, u64>,
    next_request: u64,
    next_operation: u64,
    in_flight: BTreeMap<RequestId, InFlight>,
    commands: BTreeMap<Sequence, CommandOp>,
    /// Results received, waiting for earlier results or events.
    results: BTreeMap<Sequence, Finished>,
    queries: BTreeMap<OperationId, QueryOp>,
    query_results: BTreeMap<OperationId, (Sequence, Finished)>,
    /// Commands submitted before a session exists, in order.
    unsequenced: Vec<(OperationId, Bytes)>,
    /// Highest log index seen in any response (for monotonic reads).
    highest_index: u64,
    outputs: Vec<ClientOutput>,
}

impl ClientSession {
    /// A session that will register as soon as a server is connected.
    pub fn new(config: ClientConfig, now_ms: u64) -> Result<Self, ClientConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            now_ms,
            state: ClientState::Connected,
            session: None,
            closing: false,
            register_due_ms: now_ms,
            register_attempts: 0,
            connected: BTreeSet::new(),
            current: None,
            leader_hint: None,
            avoid: BTreeMap::new(),
            next_request: 1,
            next_operation: 1,
            in_flight: BTreeMap::new(),
            commands: BTreeMap::new(),
            results: BTreeMap::new(),
            queries: BTreeMap::new(),
            query_results: BTreeMap::new(),
            unsequenced: Vec::new(),
            highest_index: 0,
            outputs: Vec::new(),
        })
    }

    /// The current state.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The registered session, if any.
    pub fn session_id(&self) -> Option<SessionId> {
        self.session.as_ref().map(|s| s.id)
    }

    /// The server requests go to now, if any.
    pub fn current_server(&self) -> Option<ServerId> {
        self.current
    }

    /// The leader the servers last named, if any.
    pub fn leader_hint(&self) -> Option<ServerId> {
        self.leader_hint
    }

    /// Everything to do since the last call, in order.
    pub fn take_outputs(&mut self) -> Vec<ClientOutput> {
        std::mem::take(&mut self.outputs)
    }

    /// A connection to `server` is open.
    pub fn connected(&mut self, server: ServerId) {
        self.connected.insert(server);
        self.pump();
    }

    /// The connection to `server` dropped: requests in flight there are
    /// resent elsewhere (commands with the same sequence numbers).
    pub fn disconnected(&mut self, server: ServerId) {
        self.connected.remove(&server);
        if self.current == Some(server) {
            self.current = None;
        }
        let lost: Vec<RequestId> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.server == server)
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            self.lose(id, 0);
        }
        self.pump();
    }

    /// The time is now `now_ms` (it never goes back), without doing what
    /// falls due ([`tick`](Self::tick) does that). A driver that ticks only
    /// when [`next_deadline`](Self::next_deadline) comes calls this before
    /// every other input, so that what the input sends is stamped with the
    /// time it is sent at: a request stamped with an older time would look
    /// unanswered for too long at the next tick.
    pub fn observe_time(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// Time passes: keep-alives, request timeouts, retries, suspension.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let now = self.now_ms;
        let request_timeout = self.config.request_timeout_ms;
        // A keep-alive is worth waiting for only until the next one is due:
        // waiting a full request timeout could let the session expire.
        let keep_alive_timeout = self
            .session
            .as_ref()
            .map_or(request_timeout, |s| request_timeout.min(s.timeout_ms / 2));
        let expired: Vec<(RequestId, ServerId)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| {
                let limit = if f.kind == RequestKind::KeepAlive {
                    keep_alive_timeout
                } else {
                    request_timeout
                };
                now.saturating_sub(f.sent_ms) >= limit
            })
            .map(|(id, f)| (*id, f.server))
            .collect();
        for (id, server) in expired {
            // No answer in time: the server may be down or cut off from us;
            // try the next one.
            if let Some(flight) = self.in_flight.get(&id) {
                tracing::debug!(
                    ?id,
                    kind = ?flight.kind,
                    ?server,
                    waited_ms = now.saturating_sub(flight.sent_ms),
                    "no answer in time; trying the next server"
                );
            }
            self.move_past(server);
            self.lose(id, 1);
        }
        if let Some(session) = &self.session {
            if self.state == ClientState::Connected
                && now.saturating_sub(session.last_keep_alive_ok_ms) > session.timeout_ms
            {
                self.set_state(ClientState::Suspended);
            }
        }
        self.pump();
    }

    /// The earliest time at which [`tick`](Self::tick) may have work to do:
    /// a request timing out, a keep-alive, a registration, a reset or a
    /// retry falling due, or the session to be suspended. It may be in the
    /// past (work that could not go out yet, for want of a server) and may
    /// be early; it is never later than the next time `tick` would act, so
    /// a driver can sleep until then (or until an input arrives) instead of
    /// ticking on a fixed period. `None` once the session is closed.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.state == ClientState::Closed {
            return None;
        }
        let request_timeout = self.config.request_timeout_ms;
        let keep_alive_timeout = self
            .session
            .as_ref()
            .map_or(request_timeout, |s| request_timeout.min(s.timeout_ms / 2));
        let flights = self.in_flight.values().map(|f| {
            let limit = if f.kind == RequestKind::KeepAlive {
                keep_alive_timeout
            } else {
                request_timeout
            };
            f.sent_ms.saturating_add(limit)
        });
        let sends = self
            .commands
            .values()
            .map(|op| op.send)
            .chain(self.queries.values().map(|op| op.send))
            .filter_map(|send| match send {
                SendState::Due(at) => Some(at),
                SendState::Sent(_) => None,
            });
        let in_flight = |kind: RequestKind| self.in_flight.values().any(|f| f.kind == kind);
        let mut session = Vec::new();
        match &self.session {
            None => {
                if !self.closing && !in_flight(RequestKind::Register) {
                    session.push(self.register_due_ms);
                }
            }
            Some(s) => {
                if !in_flight(RequestKind::KeepAlive) {
                    session.push(s.last_keep_alive_sent_ms.saturating_add(s.timeout_ms / 2));
                }
                if self.state == ClientState::Connected {
                    session.push(s.last_keep_alive_ok_ms.saturating_add(s.timeout_ms + 1));
                }
                let awaited = self
                    .results
                    .values()
                    .chain(self.query_results.values().map(|(_, f)| f))
                    .map(|f| f.event_index)
                    .max()
                    .unwrap_or(EventIndex::ZERO);
                let wanted = s.events_needed.max(awaited) > s.event_index;
                if wanted && !s.reset_in_flight {
                    session.push(s.reset_due_ms);
                }
            }
        }
        flights.chain(sends).chain(session).min()
    }

    /// Submit a command. Its result comes as [`ClientOutput::CommandDone`].
    pub fn submit_command(&mut self, payload: Bytes) -> Result<OperationId, OperationError> {
        self.admit(&payload)?;
        let operation = self.operation_id();
        self.unsequenced.push((operation, payload));
        self.pump();
        Ok(operation)
    }

    /// Submit a query. Its result comes as [`ClientOutput::QueryDone`],
    /// after the results of every command submitted before it.
    pub fn submit_query(
        &mut self,
        payload: Bytes,
        consistency: Consistency,
    ) -> Result<OperationId, OperationError> {
        self.admit(&payload)?;
        let operation = self.operation_id();
        // Commands not numbered yet will be numbered before the query is
        // sent; count them so the query waits for them.
        let after_sequence = match &self.session {
            Some(s) => Sequence(s.next_sequence.0 - 1 + self.unsequenced.len() as u64),
            None => Sequence(self.unsequenced.len() as u64),
        };
        self.queries.insert(
            operation,
            QueryOp {
                payload,
                consistency,
                after_sequence,
                send: SendState::Due(self.now_ms),
                attempts: 0,
            },
        );
        self.pump();
        Ok(operation)
    }

    /// Close the session: unregister, then [`ClientState::Closed`]. Pending
    /// operations fail with [`OperationError::Closed`].
    pub fn close(&mut self) {
        if self.state == ClientState::Closed || self.closing {
            return;
        }
        self.closing = true;
        self.fail_all(|| OperationError::Closed);
        match self.session.as_ref().map(|s| s.id) {
            Some(session) => {
                self.send(RequestKind::Unregister, Request::Unregister { session });
            }
            None => {
                let registering = self
                    .in_flight
                    .values()
                    .any(|f| f.kind == RequestKind::Register);
                // A registration in flight is unregistered when it lands.
                if !registering {
                    self.set_state(ClientState::Closed);
                }
            }
        }
    }

    /// A frame from `server`.
    pub fn on_message(&mut self, server: ServerId, message: ServerMessage) {
        match message {
            ServerMessage::Events(batch) => self.on_event_batch(batch),
            ServerMessage::Response { id, result } => self.on_response(server, id, result),
        }
        self.deliver(false);
        self.pump();
    }

    fn admit(&self, payload: &Bytes) -> Result<(), OperationError> {
        if self.state == ClientState::Closed || self.closing {
            return Err(OperationError::Closed);
        }
        if payload.len() > self.config.max_payload_bytes {
            return Err(OperationError::Refused(format!(
                "payload of {} bytes exceeds {}",
                payload.len(),
                self.config.max_payload_bytes
            )));
        }
        let pending = self.unsequenced.len()
            + self.commands.len()
            + self.results.len()
            + self.queries.len()
            + self.query_results.len();
        if pending >= self.config.max_pending_operations {
            return Err(OperationError::Refused(format!(
                "{pending} operations pending (limit {})",
                self.config.max_pending_operations
            )));
        }
        Ok(())
    }

    fn operation_id(&mut self) -> OperationId {
        let id = OperationId(self.next_operation);
        self.next_operation += 1;
        id
    }

    fn set_state(&mut self, state: ClientState) {
        if self.state != state {
            self.state = state;
            self.outputs.push(ClientOutput::StateChanged(state));
        }
    }

    /// Whether a request of `kind` can only be served by the leader: every
    /// request that proposes a log entry, and linearizable queries. The
    /// selection policy applies to the others (sequential queries, event
    /// resets); sending a leader-only request to a follower by policy would
    /// only bounce back as a redirect, for ever.
    fn needs_leader(&self, kind: RequestKind) -> bool {
        match kind {
            RequestKind::Register
            | RequestKind::KeepAlive
            | RequestKind::Unregister
            | RequestKind::Command(_) => true,
            RequestKind::Query(operation) => self
                .queries
                .get(&operation)
                .is_none_or(|q| q.consistency != Consistency::Sequential),
            RequestKind::Reset => self.session.as_ref().is_some_and(|s| s.reset_at_leader),
        }
    }

    /// Pick the server to send a request of `kind` to: the known leader
    /// for leader-only requests, otherwise by the selection policy.
    fn choose_server(&mut self, kind: RequestKind) -> Option<ServerId> {
        let selection = if self.needs_leader(kind) {
            ServerSelection::Leader
        } else {
            self.config.selection
        };
        let connected = |s: &Option<ServerId>| s.filter(|s| self.connected.contains(s));
        let avoided = |s: ServerId| self.avoid.get(&s).is_some_and(|until| self.now_ms < *until);
        // The next connected server after `after` other than `skip`,
        // preferring one not avoided.
        let first_after = |after: Option<ServerId>, skip: Option<ServerId>| {
            let after = after.unwrap_or(0);
            let mut order = self
                .connected
                .range(after + 1..)
                .chain(self.connected.range(..=after))
                .copied()
                .filter(|s| Some(*s) != skip);
            let first = order.clone().next();
            order.find(|s| !avoided(*s)).or(first)
        };
        let chosen = match selection {
            ServerSelection::Leader => connected(&self.leader_hint)
                .or(connected(&self.current))
                .or_else(|| first_after(self.current, None)),
            ServerSelection::Any => {
                connected(&self.current).or_else(|| first_after(self.current, None))
            }
            // A follower that just failed us is avoided for a while; when no
            // other follower is left, the leader serves.
            ServerSelection::Followers => connected(&self.current)
                .filter(|s| Some(*s) != self.leader_hint && !avoided(*s))
                .or_else(|| first_after(self.current, self.leader_hint).filter(|s| !avoided(*s)))
                .or_else(|| connected(&self.current))
                .or_else(|| first_after(self.current, None)),
        };
        self.current = chosen;
        chosen
    }

    /// Make the next request go to the connected server after `server`.
    fn move_past(&mut self, server: ServerId) {
        let now = self.now_ms;
        self.avoid.retain(|_, until| *until > now);
        self.avoid
            .insert(server, now + self.config.request_timeout_ms);
        if self.current == Some(server) {
            self.current = self
                .connected
                .range(server + 1..)
                .chain(self.connected.range(..server))
                .copied()
                .next();
        }
    }

    fn send(&mut self, kind: RequestKind, request: Request) -> Option<RequestId> {
        let server = self.choose_server(kind)?;
        let counter = self.next_request & ((1 << REQUEST_ID_COUNTER_BITS) - 1);
        let id = RequestId(
            u64::from(self.config.request_id_prefix) << REQUEST_ID_COUNTER_BITS | counter,
        );
        // The counter runs 1, 2, ..., 2^40 - 1, 1, ...: zero is never used.
        self.next_request = counter % ((1 << REQUEST_ID_COUNTER_BITS) - 1) + 1;
        self.in_flight.insert(
            id,
            InFlight {
                kind,
                server,
                sent_ms: self.now_ms,
            },
        );
        self.outputs.push(ClientOutput::Send {
            server,
            request: ClientRequest { id, request },
        });
        Some(id)
    }

    /// A request got no usable answer: forget it and make its operation due
    /// again, after a backoff if `backoff` is non-zero.
    fn lose(&mut self, id: RequestId, backoff: u32) {
        let Some(flight) = self.in_flight.remove(&id) else {
            return;
        };
        let now = self.now_ms;
        match flight.kind {
            RequestKind::Register => {
                self.register_attempts += backoff;
                self.register_due_ms = now + self.retry_delay(self.register_attempts, backoff);
            }
            RequestKind::KeepAlive => {}
            RequestKind::Unregister => {
                // No answer: give up; the cluster expires the session on its
                // own once keep-alives stop.
                self.session = None;
                self.set_state(ClientState::Closed);
            }
            RequestKind::Reset => {
                if let Some(session) = self.session.as_mut() {
                    session.reset_in_flight = false;
                }
            }
            RequestKind::Command(sequence) => {
                let delay = self
                    .commands
                    .get(&sequence)
                    .map(|op| self.retry_delay(op.attempts + backoff, backoff));
                if let Some(op) = self.commands.get_mut(&sequence) {
                    if op.send == SendState::Sent(id) {
                        op.attempts += backoff;
                        op.send = SendState::Due(now + delay.unwrap_or(0));
                    }
                }
            }
            RequestKind::Query(operation) => {
                let delay = self
                    .queries
                    .get(&operation)
                    .map(|op| self.retry_delay(op.attempts + backoff, backoff));
                if let Some(op) = self.queries.get_mut(&operation) {
                    if op.send == SendState::Sent(id) {
                        op.attempts += backoff;
                        op.send = SendState::Due(now + delay.unwrap_or(0));
                    }
                }
            }
        }
    }

    fn retry_delay(&self, attempts: u32, backoff: u32) -> u64 {
        if backoff == 0 {
            0
        } else {
            self.config.backoff(attempts.saturating_sub(1))
        }
    }

    fn on_response(
        &mut self,
        server: ServerId,
        id: RequestId,
        result: Result<Response, ClientError>,
    ) {
        let Some(flight) = self.in_flight.get(&id).copied() else {
            // Late or duplicate: already resent or answered.
            return;
        };
        if flight.server != server {
            return;
        }
        if result.is_ok() && flight.kind != RequestKind::Reset && self.needs_leader(flight.kind) {
            // Only the leader answers these: it leads (or did just now).
            self.leader_hint = Some(server);
        }
        match result {
            Err(ClientError::NotLeader { hint }) => {
                if hint.is_none() || hint == Some(server) {
                    // That server knows no leader (it may be cut off, or no
                    // longer a member): try the next one, or the client
                    // would ask it forever.
                    self.leader_hint = None;
                    self.move_past(server);
                    self.lose(id, 1);
                } else {
                    // Follow the redirect at once.
                    self.leader_hint = hint;
                    self.current = None;
                    self.lose(id, 0);
                }
            }
            Err(ClientError::Unavailable(_))
            | Err(ClientError::Timeout)
            | Err(ClientError::DiskFull) => {
                // A hint naming this server is stale (it may have lost
                // leadership, or been removed): the client would otherwise
                // ask it again and again.
                if self.leader_hint == Some(server) {
                    self.leader_hint = None;
                }
                self.move_past(server);
                self.lose(id, 1);
            }
            Err(ClientError::ResultCacheFull { .. }) | Err(ClientError::TooManySessions { .. }) => {
                self.lose(id, 1)
            }
            Ok(Response::EventsReset { event_index }) if flight.kind == RequestKind::Reset => {
                self.in_flight.remove(&id);
                let now = self.now_ms;
                let backoff = self.config.backoff(0);
                let lagging = self
                    .session
                    .as_ref()
                    .is_some_and(|s| event_index < s.events_needed);
                if lagging {
                    // This server has not applied the events the cluster
                    // already told us about (it lags, or was removed and
                    // does not know): ask another one, after a pause, or
                    // the client would ask it again and again.
                    self.move_past(server);
                }
                if let Some(session) = self.session.as_mut() {
                    session.reset_in_flight = false;
                    if lagging {
                        session.reset_due_ms = now + backoff;
                        session.reset_at_leader = true;
                    } else if session.event_index < event_index {
                        // The server resent what we lacked before this
                        // answer, yet it did not arrive (lost, or left with
                        // the server by a client whose application is not
                        // reading): ask again after a pause, not at once, or
                        // client and server would loop.
                        session.reset_due_ms = now + backoff;
                    }
                }
            }
            Err(error @ (ClientError::UnknownSession | ClientError::SessionExpired))
                if flight.kind != RequestKind::Register =>
            {
                self.in_flight.remove(&id);
                self.on_session_lost(error);
            }
            result => {
                self.in_flight.remove(&id);
                self.on_answer(flight.kind, id, result);
            }
        }
    }

    fn on_answer(
        &mut self,
        kind: RequestKind,
        id: RequestId,
        result: Result<Response, ClientError>,
    ) {
        match (kind, result) {
            (
                RequestKind::Register,
                Ok(Response::Registered {
                    session,
                    timeout_ms,
                }),
            ) => self.on_registered(session, timeout_ms),
            (RequestKind::Register, Err(_)) => {
                self.register_attempts += 1;
                self.register_due_ms =
                    self.now_ms + self.config.backoff(self.register_attempts - 1);
            }
            (RequestKind::KeepAlive, Ok(Response::KeptAlive { event_index })) => {
                if let Some(session) = self.session.as_mut() {
                    session.last_keep_alive_ok_ms = self.now_ms;
                }
                if self.state == ClientState::Suspended {
                    self.set_state(ClientState::Connected);
                }
                self.need_events(event_index);
            }
            (RequestKind::Unregister, _) => {
                self.session = None;
                self.set_state(ClientState::Closed);
            }
            (RequestKind::Reset, _) => {
                if let Some(session) = self.session.as_mut() {
                    session.reset_in_flight = false;
                }
            }
            (RequestKind::Command(sequence), result) => {
                self.on_command_answer(sequence, id, result)
            }
            (RequestKind::Query(operation), result) => {
                let Some(op) = self.queries.remove(&operation) else {
                    return;
                };
                let (event_index, result) = match result {
                    Ok(Response::Query {
                        index,
                        event_index,
                        output,
                    }) => {
                        self.highest_index = self.highest_index.max(index);
                        (event_index, output.map_err(OperationError::from))
                    }
                    Ok(other) => (
                        EventIndex::ZERO,
                        Err(OperationError::Refused(format!("unexpected {other:?}"))),
                    ),
                    Err(error) => (EventIndex::ZERO, Err(error.into())),
                };
                self.query_results.insert(
                    operation,
                    (
                        op.after_sequence,
                        Finished {
                            operation,
                            event_index,
                            result,
                        },
                    ),
                );
                self.need_events(event_index);
            }
            (kind, result) => {
                tracing::warn!(?kind, ?result, "unexpected response; ignoring");
            }
        }
    }

    fn on_command_answer(
        &mut self,
        sequence: Sequence,
        id: RequestId,
        result: Result<Response, ClientError>,
    ) {
        match result {
            Ok(Response::Command {
                index,
                event_index,
                output,
                ..
            }) => {
                let Some(op) = self.commands.remove(&sequence) else {
                    return;
                };
                self.highest_index = self.highest_index.max(index);
                self.results.insert(
                    sequence,
                    Finished {
                        operation: op.operation,
                        event_index,
                        result: output.map_err(OperationError::from),
                    },
                );
                self.need_events(event_index);
            }
            Err(ClientError::CommandGap { last_sequence }) => {
                // Resend, in order, every command after the last applied one
                // up to this one that was sent no later than this request
                // (those sent since are already a resubmission). This sends
                // each lost command once per gap, not once per gap response.
                let now = self.now_ms;
                let mut resend = Vec::new();
                for (seq, op) in self.commands.range_mut(last_sequence.next()..=sequence) {
                    match op.send {
                        SendState::Sent(sent) if sent <= id => {
                            op.send = SendState::Due(now);
                            resend.push(sent);
                        }
                        _ => {}
                    }
                    let _ = seq;
                }
                for sent in resend {
                    self.in_flight.remove(&sent);
                }
            }
            other => {
                let Some(op) = self.commands.remove(&sequence) else {
                    return;
                };
                let result = match other {
                    Err(error) => Err(OperationError::Rejected(error)),
                    Ok(unexpected) => Err(OperationError::Refused(format!(
                        "unexpected {unexpected:?}"
                    ))),
                };
                self.results.insert(
                    sequence,
                    Finished {
                        operation: op.operation,
                        event_index: EventIndex::ZERO,
                        result,
                    },
                );
            }
        }
    }

    fn on_registered(&mut self, session: SessionId, timeout_ms: u64) {
        let now = self.now_ms;
        self.register_attempts = 0;
        self.session = Some(Registered {
            id: session,
            timeout_ms: timeout_ms.max(2),
            next_sequence: Sequence(1),
            delivered_sequence: Sequence::ZERO,
            event_index: EventIndex::ZERO,
            last_keep_alive_sent_ms: now,
            last_keep_alive_ok_ms: now,
            reset_in_flight: false,
            events_needed: EventIndex::ZERO,
            reset_due_ms: 0,
            reset_at_leader: false,
        });
        self.outputs.push(ClientOutput::SessionOpened {
            session,
            timeout_ms,
        });
        self.set_state(ClientState::Connected);
        if self.closing {
            // Closed while registering: unregister right away.
            self.send(RequestKind::Unregister, Request::Unregister { session });
        }
    }

    /// The cluster no longer knows the session.
    fn on_session_lost(&mut self, error: ClientError) {
        if self.session.is_none() {
            return;
        }
        tracing::info!(?error, "session lost");
        // Results already received were applied: hand them over even if
        // their events are lost with the session.
        self.deliver(true);
        self.session = None;
        self.in_flight
            .retain(|_, f| f.kind == RequestKind::Register);
        self.fail_all(|| OperationError::Rejected(ClientError::SessionExpired));
        match (self.config.recovery, self.closing) {
            (RecoveryStrategy::Recover, false) => {
                self.set_state(ClientState::Suspended);
                self.register_due_ms = self.now_ms;
            }
            _ => self.set_state(ClientState::Closed),
        }
    }

    fn fail_all(&mut self, error: impl Fn() -> OperationError) {
        let mut failed: Vec<(bool, OperationId)> = Vec::new();
        failed.extend(self.results.values().map(|f| (true, f.operation)));
        failed.extend(self.commands.values().map(|op| (true, op.operation)));
        failed.extend(self.unsequenced.iter().map(|(op, _)| (true, *op)));
        failed.extend(self.query_results.keys().map(|op| (false, *op)));
        failed.extend(self.queries.keys().map(|op| (false, *op)));
        self.results.clear();
        self.commands.clear();
        self.unsequenced.clear();
        self.query_results.clear();
        self.queries.clear();
        self.in_flight
            .retain(|_, f| !matches!(f.kind, RequestKind::Command(_) | RequestKind::Query(_)));
        for (command, operation) in failed {
            let result = Err(error());
            self.outputs.push(if command {
                ClientOutput::CommandDone { operation, result }
            } else {
                ClientOutput::QueryDone { operation, result }
            });
        }
    }

    /// Ask for a reset if the cluster published events we have not seen.
    fn need_events(&mut self, event_index: EventIndex) {
        let now = self.now_ms;
        let Some(session) = self.session.as_mut() else {
            return;
        };
        session.events_needed = session.events_needed.max(event_index);
        if event_index > session.event_index
            && !session.reset_in_flight
            && now >= session.reset_due_ms
        {
            let request = Request::ResetEvents {
                session: session.id,
                from_event_index: session.event_index,
            };
            if self.send(RequestKind::Reset, request).is_some() {
                if let Some(session) = self.session.as_mut() {
                    session.reset_in_flight = true;
                }
            }
        }
    }

    /// Deliver a pushed batch if it continues the chain; otherwise drop it
    /// and ask for a reset from the last index delivered.
    pub fn on_event_batch(&mut self, batch: EventBatch) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if batch.session != session.id || batch.event_index <= session.event_index {
            return;
        }
        if batch.previous_event_index != session.event_index {
            // A gap: a batch between them was lost.
            let missing = batch.event_index;
            self.need_events(missing);
            return;
        }
        session.event_index = batch.event_index;
        let id = session.id;
        for event in batch.events {
            self.outputs.push(ClientOutput::Event {
                session: id,
                event_index: batch.event_index,
                event,
            });
        }
        self.deliver(false);
    }

    /// Hand over results in sequence order, each once the events before it
    /// are delivered (or regardless of events if `force`).
    fn deliver(&mut self, force: bool) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        loop {
            let next = session.delivered_sequence.next();
            let ready = self
                .results
                .get(&next)
                .is_some_and(|f| force || deliver_anyway() || f.event_index <= session.event_index);
            if !ready {
                break;
            }
            let finished = self.results.remove(&next).expect("checked");
            session.delivered_sequence = next;
            self.outputs.push(ClientOutput::CommandDone {
                operation: finished.operation,
                result: finished.result,
            });
        }
        let ready: Vec<OperationId> = self
            .query_results
            .iter()
            .filter(|(_, (after, f))| {
                *after <= session.delivered_sequence
                    && (force || f.event_index <= session.event_index)
            })
            .map(|(op, _)| *op)
            .collect();
        for operation in ready {
            let (_, finished) = self.query_results.remove(&operation).expect("listed");
            self.outputs.push(ClientOutput::QueryDone {
                operation,
                result: finished.result,
            });
        }
    }

    /// Send whatever is due.
    fn pump(&mut self) {
        if self.state == ClientState::Closed {
            return;
        }
        let now = self.now_ms;
        let Some(session) = self.session.as_mut() else {
            let registering = self
                .in_flight
                .values()
                .any(|f| f.kind == RequestKind::Register);
            if !registering && !self.closing && now >= self.register_due_ms {
                let request = Request::Register {
                    client: self.config.client,
                    timeout_ms: self.config.session_timeout_ms,
                };
                self.send(RequestKind::Register, request);
            }
            return;
        };
        if self.closing {
            return;
        }
        // Number the commands submitted before the session existed.
        for (operation, payload) in self.unsequenced.drain(..) {
            let sequence = session.next_sequence;
            session.next_sequence = sequence.next();
            self.commands.insert(
                sequence,
                CommandOp {
                    operation,
                    payload,
                    send: SendState::Due(now),
                    attempts: 0,
                },
            );
        }
        let id = session.id;
        // Results waiting for events we never got (a push and the reset
        // answer both lost): ask again, so they cannot wait forever.
        let awaited = self
            .results
            .values()
            .chain(self.query_results.values().map(|(_, f)| f))
            .map(|f| f.event_index)
            .max()
            .unwrap_or(EventIndex::ZERO);
        if awaited > session.event_index && !session.reset_in_flight {
            self.need_events(awaited);
        }
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let keep_alive_due = now.saturating_sub(session.last_keep_alive_sent_ms)
            >= session.timeout_ms / 2
            && !self
                .in_flight
                .values()
                .any(|f| f.kind == RequestKind::KeepAlive);
        if keep_alive_due {
            let request = Request::KeepAlive {
                session: id,
                command_sequence: acknowledged(session),
                event_index: session.event_index,
            };
            if self.send(RequestKind::KeepAlive, request).is_some() {
                if let Some(session) = self.session.as_mut() {
                    session.last_keep_alive_sent_ms = now;
                }
            }
        }
        // Commands in sequence order, so the leader sees no gap when nothing
        // is lost.
        let due: Vec<Sequence> = self
            .commands
            .iter()
            .filter(|(_, op)| matches!(op.send, SendState::Due(at) if at <= now))
            .map(|(seq, _)| *seq)
            .collect();
        for sequence in due {
            let payload = self.commands[&sequence].payload.clone();
            // Acknowledge on the command path too, so the servers' result
            // cache holds only what is in flight, not everything since the
            // last keep-alive.
            let acked = self.session.as_ref().map_or(Sequence::ZERO, acknowledged);
            let request = Request::Command {
                session: id,
                sequence,
                acked,
                payload,
            };
            let Some(request_id) = self.send(RequestKind::Command(sequence), request) else {
                break;
            };
            self.commands.get_mut(&sequence).expect("due").send = SendState::Sent(request_id);
        }
        let due: Vec<OperationId> = self
            .queries
            .iter()
            .filter(|(_, op)| matches!(op.send, SendState::Due(at) if at <= now))
            .map(|(op, _)| *op)
            .collect();
        for operation in due {
            let op = &self.queries[&operation];
            let request = Request::Query {
                session: id,
                sequence: op.after_sequence,
                index: query_index(self.highest_index),
                consistency: op.consistency,
                payload: op.payload.clone(),
            };
            let Some(request_id) = self.send(RequestKind::Query(operation), request) else {
                break;
            };
            self.queries.get_mut(&operation).expect("due").send = SendState::Sent(request_id);
        }
    }
}

#[cfg(test)]
mod tests;

/// The command sequence keep-alives and commands acknowledge: every result
/// the application was handed, in order.
fn acknowledged(session: &Registered) -> Sequence {
    #[cfg(feature = "planted-bugs")]
    if copycat_planted::active(copycat_planted::PlantedBug::AcknowledgeUnreceivedResults) {
        return Sequence(session.next_sequence.0 - 1);
    }
    session.delivered_sequence
}

/// The index a query carries: the highest the client has seen.
fn query_index(highest: u64) -> u64 {
    #[cfg(feature = "planted-bugs")]
    if copycat_planted::active(copycat_planted::PlantedBug::QueryWithoutIndex) {
        return 0;
    }
    highest
}

/// Whether results go to the application without their events.
fn deliver_anyway() -> bool {
    #[cfg(feature = "planted-bugs")]
    if copycat_planted::active(copycat_planted::PlantedBug::DeliverBeforeEvents) {
        return true;
    }
    false
}
