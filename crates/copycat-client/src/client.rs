//! The async client: [`Client`] drives one [`ClientSession`] over TCP with
//! tokio. A driver task owns the session core (so there is exactly one copy
//! of the session logic, the one the simulator runs); the handles talk to it
//! through channels.

use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use copycat_net::{ClientTls, Watch, TICK};
use copycat_proto::{
    codec, ClientError, ClientId, ClientRequest, CommandFailure, Consistency, EventBatch,
    EventIndex, ServerMessage, SessionId,
};
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::connections::{Attachment, Connections, NetEvent};
use crate::error::{Error, Unavailable};
use crate::session::{
    ClientConfig, ClientOutput, ClientSession, ClientState, OperationError, OperationId,
    RecoveryStrategy, ServerId, ServerSelection, MAX_REQUEST_ID_PREFIX,
};

/// Operations queued for the driver before callers wait.
const OP_QUEUE: usize = 1024;
/// Most server addresses a client keeps track of.
const MAX_ADDRESSES: usize = 64;
/// The longest an idle client sleeps before it looks at its session again
/// (a safety net: the session core says when it has work).
const MAX_IDLE: Duration = Duration::from_secs(1);

/// An event published to this client's session by the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The session it was published to.
    pub session: SessionId,
    /// The log index it was published at.
    pub index: EventIndex,
    /// Its name (chosen by the state machine).
    pub name: String,
    /// Its encoded payload.
    pub payload: Bytes,
}

impl Event {
    /// Decode the payload (published with `ApplyContext::publish_value`).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error<()>> {
        codec::decode(&self.payload).map_err(|e| Error::Decode(e.to_string()))
    }
}

/// The client's state, as [`Client::watch_status`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientStatus {
    /// Connected, suspended (no keep-alive succeeded for a session
    /// timeout) or closed.
    pub state: ClientState,
    /// The registered session, once there is one.
    pub session: Option<SessionId>,
    /// The server the session talks to now.
    pub server: Option<ServerId>,
    /// The leader the servers last named.
    pub leader: Option<ServerId>,
    /// Open server connections.
    pub connections: usize,
}

/// Settings of a [`Client`]; see [`Client::builder`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    servers: Vec<String>,
    session: ClientConfig,
    request_timeout: Duration,
    connect_timeout: Option<Duration>,
    consistency: Consistency,
    event_buffer: usize,
    ignore_events: bool,
    tls: Option<ClientTls>,
    connections: Option<Connections>,
}

impl ClientBuilder {
    fn new() -> Self {
        Self {
            servers: Vec::new(),
            session: ClientConfig::new(ClientId(random_client_id())),
            request_timeout: Duration::from_secs(10),
            connect_timeout: None,
            consistency: Consistency::Linearizable,
            event_buffer: 1024,
            ignore_events: false,
            tls: None,
            connections: None,
        }
    }

    /// Connect with TLS (default: plain TCP), verifying every server's
    /// certificate as `tls` says: it must chain to the CA bundle and name
    /// the host of the address dialed (`host:port` as given or as the
    /// servers name each other; an IP literal needs an IP address SAN).
    /// See [`ClientTls::from_ca_pem`], [`ClientTls::from_pem_with_cert`]
    /// (for servers that require client certificates) and
    /// [`ClientTls::from_config`].
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Carry this session over `connections`, shared with the other
    /// clients built with them (default: connections of its own). A
    /// process with many sessions should share one [`Connections`]: each
    /// server then sees one connection from the process, whatever the
    /// number of sessions. TLS is then set on the connections
    /// ([`Connections::with_tls`]), not here.
    pub fn connections(mut self, connections: &Connections) -> Self {
        self.connections = Some(connections.clone());
        self
    }

    /// The servers to start from, as `host:port` or IP literals (one is
    /// enough: servers name the others).
    pub fn servers<S: Into<String>>(mut self, servers: impl IntoIterator<Item = S>) -> Self {
        self.servers.extend(servers.into_iter().map(Into::into));
        self
    }

    /// The session timeout to ask the cluster for (default 5 s; servers
    /// clamp it to their limits). Without a keep-alive for this long the
    /// cluster expires the session.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        let ms = (timeout.as_millis() as u64).max(2);
        self.session.session_timeout_ms = ms;
        self.session.assumed_timeout_ms = ms;
        self
    }

    /// How long an operation may take before the caller gets
    /// [`Error::Timeout`] or [`Error::Unavailable`] (default 10 s). A
    /// command given up this way may still be applied.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long [`connect`](Self::connect) waits for the session to be
    /// registered (default: the request timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How long to wait for one server's answer before resending the
    /// request (to another server if one is connected). Default 5 s.
    pub fn resend_after(mut self, timeout: Duration) -> Self {
        self.session.request_timeout_ms = (timeout.as_millis() as u64).max(1);
        self
    }

    /// The consistency of [`Client::query`] (default linearizable).
    pub fn consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }

    /// Which servers requests go to (default: the leader).
    pub fn selection(mut self, selection: ServerSelection) -> Self {
        self.session.selection = selection;
        self
    }

    /// Register a new session when the cluster expires this one (default:
    /// close the client). Guarantees do not carry across sessions.
    pub fn recover_expired_sessions(mut self, recover: bool) -> Self {
        self.session.recovery = if recover {
            RecoveryStrategy::Recover
        } else {
            RecoveryStrategy::Close
        };
        self
    }

    /// Most event groups (the events of one log index) held for the
    /// application before the client stops taking new ones from the
    /// servers (default 1024). See [`Client::events`].
    pub fn event_buffer(mut self, groups: usize) -> Self {
        self.event_buffer = groups.max(1);
        self
    }

    /// Drop the session's events instead of keeping them for
    /// [`Client::events`].
    pub fn ignore_events(mut self) -> Self {
        self.ignore_events = true;
        self
    }

    /// Largest command or query payload the client sends (default 1 MiB).
    pub fn max_payload_bytes(mut self, max: usize) -> Self {
        self.session.max_payload_bytes = max;
        self
    }

    /// Most operations waiting at once (default 10,000); more are refused.
    pub fn max_pending_operations(mut self, max: usize) -> Self {
        self.session.max_pending_operations = max;
        self
    }

    /// Resolve the servers, connect, and register a session. Fails with
    /// [`Error::Unavailable`] naming the cause when no session could be
    /// registered within the connect timeout.
    pub async fn connect(self) -> Result<Client, Error> {
        if self.servers.is_empty() {
            return Err(Error::Unavailable(Unavailable::NoServers));
        }
        let mut addrs = Vec::new();
        for server in &self.servers {
            let resolved = copycat_net::resolve(server).await.map_err(|e| {
                Error::Unavailable(Unavailable::Resolve {
                    address: server.clone(),
                    error: e.to_string(),
                })
            })?;
            addrs.push((resolved[0], server.clone()));
        }
        let connections = match self.connections {
            Some(_) if self.tls.is_some() => {
                return Err(Error::Rejected(ClientError::Malformed(
                    "a client on shared connections takes their TLS settings (Connections::with_tls), not its own".into(),
                )))
            }
            Some(connections) => connections,
            None => Connections::build(self.tls.clone()),
        };
        let net = connections.attach().ok_or_else(|| {
            Error::Rejected(ClientError::Unavailable(format!(
                "these connections already carry {} sessions",
                MAX_REQUEST_ID_PREFIX as u64 + 1
            )))
        })?;
        let mut config = self.session.clone();
        config.request_id_prefix = net.slot();
        let session = ClientSession::new(config, 0)
            .map_err(|e| Error::Rejected(ClientError::Malformed(e.to_string())))?;
        let (ops_tx, ops) = mpsc::channel(OP_QUEUE);
        let (events_tx, events_rx) = if self.ignore_events {
            (None, None)
        } else {
            let (tx, rx) = mpsc::channel(self.event_buffer);
            (Some(tx), Some(rx))
        };
        let delivered = Arc::new(AtomicU64::new(0));
        let (status_tx, status) = watch::channel(ClientStatus {
            state: ClientState::Connected,
            session: None,
            server: None,
            leader: None,
            connections: 0,
        });
        let mut driver = Driver {
            session,
            start: Instant::now(),
            last_tick_ms: 0,
            ops,
            net,
            connections,
            servers: BTreeMap::new(),
            addresses: BTreeMap::new(),
            cluster: None,
            waiting: BTreeMap::new(),
            outbox: VecDeque::new(),
            events_tx,
            delivered: delivered.clone(),
            status: status_tx,
            closing: Vec::new(),
            ops_closed: false,
            request_timeout: self.request_timeout,
            last_ok: SystemTime::now(),
            max_payload: self.session.max_payload_bytes,
            parked: VecDeque::new(),
            park_limit: self.event_buffer,
            dropped_batches: 0,
            close_deadline: None,
        };
        for (addr, name) in addrs {
            driver.learn(addr, name);
        }
        tokio::spawn(driver.run());
        let client = Client {
            ops: ops_tx,
            status,
            events: Arc::new(Mutex::new(events_rx)),
            delivered,
            consistency: self.consistency,
        };
        let wait = self.connect_timeout.unwrap_or(self.request_timeout);
        let mut status = client.status.clone();
        let registered = tokio::time::timeout(
            wait,
            status.wait_for(|s| s.session.is_some() || s.state == ClientState::Closed),
        )
        .await
        .map(|r| r.map(|s| s.state));
        match registered {
            Ok(Ok(ClientState::Closed)) | Ok(Err(_)) => Err(Error::Closed),
            Ok(Ok(_)) => Ok(client),
            Err(_) => Err(client.diagnose().await),
        }
    }
}

fn random_client_id() -> u128 {
    // Unique per process and connection: the clock, the process id and an
    // address-space-dependent value, hashed by the standard library's
    // randomly keyed hasher.
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    let high = hasher.finish();
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(high);
    (u128::from(high) << 64) | u128::from(hasher.finish())
}

type Reply = oneshot::Sender<Result<Bytes, Error>>;

enum Op {
    Command(Bytes, Reply),
    Query(Bytes, Consistency, Reply),
    Diagnose(oneshot::Sender<Error>),
    Close(oneshot::Sender<()>),
}

/// A session with a Copycat cluster. Cheap to clone: clones share the
/// session (and its ordering). The session is closed by [`close`](Self::close)
/// or when the last clone is dropped.
///
/// ```no_run
/// # async fn run() -> Result<(), copycat_client::Error> {
/// use std::time::Duration;
/// use copycat_client::Client;
///
/// let client = Client::builder()
///     .servers(["127.0.0.1:5700", "127.0.0.1:5701", "127.0.0.1:5702"])
///     .session_timeout(Duration::from_secs(5))
///     .connect()
///     .await?;
/// let output = client.command_bytes(bytes::Bytes::from_static(b"...")).await?;
/// client.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    ops: mpsc::Sender<Op>,
    status: watch::Receiver<ClientStatus>,
    events: Arc<Mutex<Option<mpsc::Receiver<Vec<Event>>>>>,
    /// The index of the last event handed to the event stream.
    delivered: Arc<AtomicU64>,
    consistency: Consistency,
}

impl Client {
    /// Settings for a new client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// A typed handle on the state machine `P` speaks.
    pub fn machine<P: Machine>(&self) -> MachineClient<P> {
        MachineClient {
            client: self.clone(),
            _machine: PhantomData,
        }
    }

    /// Run an encoded command exactly once; its encoded output.
    pub async fn command_bytes(&self, payload: Bytes) -> Result<Bytes, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Command(payload, tx)).await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Run an encoded query at the client's default consistency.
    pub async fn query_bytes(&self, payload: Bytes) -> Result<Bytes, Error> {
        self.query_bytes_with(payload, self.consistency).await
    }

    /// Run an encoded query at `consistency`.
    pub async fn query_bytes_with(
        &self,
        payload: Bytes,
        consistency: Consistency,
    ) -> Result<Bytes, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Query(payload, consistency, tx)).await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    async fn send(&self, op: Op) -> Result<(), Error> {
        self.ops.send(op).await.map_err(|_| Error::Closed)
    }

    /// The session's events, in order, each once, and each before the
    /// result of any command that follows it. There is one stream per
    /// client: later calls get a stream that ends at once.
    ///
    /// Back-pressure: the client holds at most
    /// [`event_buffer`](ClientBuilder::event_buffer) event groups for the
    /// application. When they are full it stops taking new events from the
    /// servers, which keep them (unacknowledged) and resend them when there
    /// is room: no event is lost, keep-alives go on, and command results
    /// that follow undelivered events wait for them. A consumer that never
    /// reads therefore stalls the commands whose results follow events;
    /// build with [`ignore_events`](ClientBuilder::ignore_events) if the
    /// events are not wanted.
    pub fn events(&self) -> Events {
        let rx = self.events.lock().expect("events lock").take();
        Events {
            rx,
            current: VecDeque::new(),
        }
    }

    /// The log index of the last event handed to the [`events`](Self::events)
    /// stream (0 before the first). Events are handed over before the
    /// result of any later command or query, so once a call has returned,
    /// every event published before its result is at or below this index:
    /// a consumer that has seen an event at this index has seen them all.
    pub fn delivered_event_index(&self) -> u64 {
        self.delivered.load(AtomicOrdering::Acquire)
    }

    /// The latest state.
    pub fn status(&self) -> ClientStatus {
        *self.status.borrow()
    }

    /// The state as it changes (connected / suspended / closed, the server
    /// and leader it talks to).
    pub fn watch_status(&self) -> Watch<ClientStatus> {
        Watch::new(self.status.clone())
    }

    /// Why operations cannot complete right now, as the error they would
    /// get ([`Error::Timeout`] if the cluster looks reachable).
    pub async fn diagnose(&self) -> Error {
        let (tx, rx) = oneshot::channel();
        if self.send(Op::Diagnose(tx)).await.is_err() {
            return Error::Closed;
        }
        rx.await.unwrap_or(Error::Closed)
    }

    /// Unregister the session (waiting at most the request timeout) and
    /// disconnect. Operations still waiting fail with [`Error::Closed`];
    /// other clones of this client are closed too.
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Op::Close(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The session's events; see [`Client::events`]. A [`Stream`], and
/// [`next`](Self::next) for callers without `StreamExt`. Ends when the
/// client closes.
pub struct Events {
    rx: Option<mpsc::Receiver<Vec<Event>>>,
    current: VecDeque<Event>,
}

impl Events {
    /// The next event; `None` once the client is closed.
    pub async fn next(&mut self) -> Option<Event> {
        StreamExt::next(self).await
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            if let Some(event) = self.current.pop_front() {
                return Poll::Ready(Some(event));
            }
            let Some(rx) = self.rx.as_mut() else {
                return Poll::Ready(None);
            };
            match rx.poll_recv(cx) {
                Poll::Ready(Some(group)) => self.current.extend(group),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The types a state machine speaks, for a typed [`MachineClient`]:
/// implement it on a marker type next to the state machine's types (the
/// server's `StateMachine` has the same four).
pub trait Machine {
    /// Commands.
    type Command: Serialize;
    /// Queries.
    type Query: Serialize;
    /// Outputs of commands and queries.
    type Output: DeserializeOwned;
    /// The state machine's errors.
    type Error: DeserializeOwned;
}

/// A typed handle on a state machine: commands and queries in, outputs and
/// the machine's own errors out. From [`Client::machine`].
pub struct MachineClient<P> {
    client: Client,
    _machine: PhantomData<fn() -> P>,
}

impl<P> Clone for MachineClient<P> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            _machine: PhantomData,
        }
    }
}

impl<P: Machine> MachineClient<P> {
    /// Run a command exactly once.
    pub async fn command(&self, command: P::Command) -> Result<P::Output, Error<P::Error>> {
        let answer = self.client.command_bytes(codec::encode(&command)).await;
        decode_answer::<P>(answer)
    }

    /// Run a query at the client's default consistency.
    pub async fn query(&self, query: P::Query) -> Result<P::Output, Error<P::Error>> {
        self.query_with(query, self.client.consistency).await
    }

    /// Run a query at `consistency`.
    pub async fn query_with(
        &self,
        query: P::Query,
        consistency: Consistency,
    ) -> Result<P::Output, Error<P::Error>> {
        let answer = self
            .client
            .query_bytes_with(codec::encode(&query), consistency)
            .await;
        decode_answer::<P>(answer)
    }

    /// The untyped client underneath (events, status, close).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn decode_answer<P: Machine>(answer: Result<Bytes, Error>) -> Result<P::Output, Error<P::Error>> {
    match answer {
        Ok(output) => codec::decode(&output).map_err(|e| Error::Decode(e.to_string())),
        Err(error) => Err(error.map_app(|bytes| {
            codec::decode(&bytes).map_err(|e| format!("the state machine's error: {e}"))
        })),
    }
}

/// What goes to the application, in the order the session released it.
enum Delivery {
    Events(Vec<Event>),
    Done(OperationId, Result<Bytes, OperationError>),
}

struct Waiting {
    reply: Reply,
    deadline: tokio::time::Instant,
}

struct Driver {
    session: ClientSession,
    start: Instant,
    /// When the session core last ticked (ms since `start`).
    last_tick_ms: u64,
    ops: mpsc::Receiver<Op>,
    /// This session's place on the connections it uses.
    net: Attachment,
    connections: Connections,
    servers: BTreeMap<ServerId, (SocketAddr, mpsc::Sender<ClientRequest>)>,
    /// Every server address kept connected, with why connecting to it
    /// last failed (cleared when it connects).
    addresses: BTreeMap<SocketAddr, Option<Unavailable>>,
    /// The cluster the first server reached belongs to; servers of another
    /// cluster are not used.
    cluster: Option<u64>,
    waiting: BTreeMap<OperationId, Waiting>,
    outbox: VecDeque<Delivery>,
    events_tx: Option<mpsc::Sender<Vec<Event>>>,
    /// Shared with [`Client::delivered_event_index`].
    delivered: Arc<AtomicU64>,
    status: watch::Sender<ClientStatus>,
    closing: Vec<oneshot::Sender<()>>,
    ops_closed: bool,
    request_timeout: Duration,
    /// When a request last succeeded (or the client started).
    last_ok: SystemTime,
    max_payload: usize,
    /// Event batches received while the application's buffer was full, in
    /// order, at most `park_limit`.
    parked: VecDeque<(ServerId, EventBatch)>,
    park_limit: usize,
    /// Event batches left with the servers because `parked` was full.
    dropped_batches: u64,
    /// Closing: stop at this time even if the unregistration got no answer.
    close_deadline: Option<tokio::time::Instant>,
}

/// When a driver whose session core next has work at `deadline`, that
/// last ticked at `last_tick`, wakes at the latest (see
/// [`Driver::wake_at`]); times in ms since the driver started.
fn wake_ms(deadline: Option<u64>, last_tick: u64, now: u64) -> u64 {
    deadline.unwrap_or(u64::MAX).clamp(
        last_tick + TICK.as_millis() as u64,
        now + MAX_IDLE.as_millis() as u64,
    )
}

impl Driver {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// When the session core next has work that waits on time: its own
    /// deadline, but at least a tick after the last tick (work due that
    /// could not go out yet is retried at the old pace, not in a busy loop)
    /// and at most [`MAX_IDLE`] from now. An idle client wakes about once a
    /// second instead of a hundred times. The lower bound counts from the
    /// last tick, not from now: counted from now, a client busy with
    /// inputs more often than a tick would put its tick off for ever (no
    /// request timeout, no retry while the traffic lasts).
    fn wake_at(&self) -> tokio::time::Instant {
        let due = wake_ms(
            self.session.next_deadline(),
            self.last_tick_ms,
            self.now_ms(),
        );
        tokio::time::Instant::from_std(self.start) + Duration::from_millis(due)
    }

    /// Use the server at `addr`, named `name` (`host:port`, whose host a
    /// TLS server's certificate must name): the connections keep it
    /// connected.
    fn learn(&mut self, addr: SocketAddr, name: String) {
        if self.addresses.contains_key(&addr) || self.addresses.len() >= MAX_ADDRESSES {
            return;
        }
        self.addresses.insert(addr, None);
        self.connections.learn(addr, name);
    }

    async fn run(mut self) {
        loop {
            let next_deadline = self
                .waiting
                .values()
                .map(|w| w.deadline)
                .min()
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            let events_blocked = matches!(self.outbox.front(), Some(Delivery::Events(_)))
                || (!self.parked.is_empty() && self.events_tx.is_some());
            // Only a blocked outbox waits for room in the event stream.
            let events_tx = events_blocked.then(|| self.events_tx.clone()).flatten();
            let wake = self.wake_at();
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {
                    let now = self.now_ms();
                    self.last_tick_ms = now;
                    self.session.tick(now);
                }
                op = self.ops.recv(), if !self.ops_closed => match op {
                    Some(op) => {
                        self.session.observe_time(self.now_ms());
                        self.on_op(op)
                    }
                    None => {
                        // Every handle is gone: close the session.
                        self.ops_closed = true;
                        self.begin_close();
                    }
                },
                event = self.net.rx.recv() => match event {
                    Some(event) => {
                        self.session.observe_time(self.now_ms());
                        self.on_net(event)
                    }
                    None => break,
                },
                room = reserve(events_tx), if events_blocked => {
                    if !room {
                        // The application dropped its stream: events go
                        // nowhere from now on.
                        self.events_tx = None;
                    }
                }
                _ = tokio::time::sleep_until(next_deadline) => self.expire(),
                _ = sleep_until(self.close_deadline) => break,
            }
            self.collect();
            self.flush();
            self.unpark();
            self.publish_status();
            if self.session.state() == ClientState::Closed && self.outbox.is_empty() {
                // Nothing more will be published to this client: end the
                // event stream once it has everything.
                self.events_tx = None;
            }
            if self.session.state() == ClientState::Closed
                && self.outbox.is_empty()
                && (self.ops_closed || !self.closing.is_empty())
            {
                break;
            }
        }
        let closing = std::mem::take(&mut self.closing);
        let waiting = std::mem::take(&mut self.waiting);
        // Leave the shared connections before anyone hears that the close
        // is done: a caller that counts sessions right after `close` must
        // not see this one.
        drop(self);
        for done in closing {
            let _ = done.send(());
        }
        for (_, waiting) in waiting {
            let _ = waiting.reply.send(Err(Error::Closed));
        }
    }

    fn on_op(&mut self, op: Op) {
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        match op {
            Op::Command(payload, reply) => {
                if let Some(error) = self.too_large(&payload) {
                    let _ = reply.send(Err(error));
                    return;
                }
                match self.session.submit_command(payload) {
                    Ok(operation) => {
                        self.waiting.insert(operation, Waiting { reply, deadline });
                    }
                    Err(error) => {
                        let _ = reply.send(Err(operation_error(error)));
                    }
                }
            }
            Op::Query(payload, consistency, reply) => {
                if let Some(error) = self.too_large(&payload) {
                    let _ = reply.send(Err(error));
                    return;
                }
                match self.session.submit_query(payload, consistency) {
                    Ok(operation) => {
                        self.waiting.insert(operation, Waiting { reply, deadline });
                    }
                    Err(error) => {
                        let _ = reply.send(Err(operation_error(error)));
                    }
                }
            }
            Op::Diagnose(reply) => {
                let _ = reply.send(self.cause());
            }
            Op::Close(done) => {
                self.closing.push(done);
                self.begin_close();
            }
        }
    }

    /// Unregister the session; stop once that is done or the request
    /// timeout has passed.
    fn begin_close(&mut self) {
        self.session.close();
        if self.close_deadline.is_none() {
            self.close_deadline = Some(tokio::time::Instant::now() + self.request_timeout);
        }
    }

    fn too_large(&self, payload: &Bytes) -> Option<Error> {
        (payload.len() > self.max_payload).then(|| Error::TooLarge {
            size: payload.len() as u64,
            limit: self.max_payload as u64,
        })
    }

    fn on_net(&mut self, event: NetEvent) {
        match event {
            NetEvent::Connected {
                addr,
                server,
                tx,
                cluster,
                members,
            } => {
                let expected = *self.cluster.get_or_insert(cluster);
                if cluster != expected {
                    // Another cluster's server (on connections shared with
                    // its clients, or given by mistake): not used.
                    if let Some(last_error) = self.addresses.get_mut(&addr) {
                        *last_error = Some(Unavailable::NotCopycat {
                            addr,
                            detail: format!(
                                "it serves cluster {cluster:016x}, the other servers cluster {expected:016x}"
                            ),
                        });
                    }
                    return;
                }
                if self.addresses.len() < MAX_ADDRESSES {
                    self.addresses.insert(addr, None);
                }
                self.servers.insert(server, (addr, tx));
                self.session.connected(server);
                // Connect to the members we were not given, so leader hints
                // can be followed from any starting address.
                for (_, member, name) in members {
                    self.learn(member, name);
                }
            }
            NetEvent::Message(server, message) => {
                if let ServerMessage::Response { result: Ok(_), .. } = &message {
                    self.last_ok = SystemTime::now();
                }
                if let ServerMessage::Events(batch) = message {
                    self.on_events(server, batch);
                    return;
                }
                self.session.on_message(server, message);
            }
            NetEvent::Disconnected(addr, server) => {
                if matches!(self.servers.get(&server), Some((a, _)) if *a == addr) {
                    self.servers.remove(&server);
                    self.session.disconnected(server);
                }
            }
            NetEvent::Failed(addr, cause) => {
                if let Some(last_error) = self.addresses.get_mut(&addr) {
                    *last_error = Some(cause);
                }
            }
        }
    }

    /// Whether the application's event buffer can take what the session
    /// releases next.
    fn events_room(&self) -> bool {
        match &self.events_tx {
            None => true,
            Some(tx) => self.outbox.is_empty() && tx.capacity() > 0,
        }
    }

    /// An event batch: to the session if the application has room, else
    /// parked (once per index) until it has, else left with the server.
    fn on_events(&mut self, server: ServerId, batch: EventBatch) {
        if self.parked.is_empty() && self.events_room() {
            self.session
                .on_message(server, ServerMessage::Events(batch));
            return;
        }
        let duplicate = self
            .parked
            .iter()
            .any(|(_, b)| b.session == batch.session && b.event_index == batch.event_index);
        if duplicate {
            return;
        }
        if self.parked.len() < self.park_limit {
            self.parked.push_back((server, batch));
            return;
        }
        // The servers keep it (unacknowledged) and resend it when the
        // session asks again, after a pause.
        self.dropped_batches += 1;
        tracing::debug!(session = ?batch.session, index = ?batch.event_index, dropped = self.dropped_batches, "event buffer full; leaving the batch with the server");
    }

    /// Feed parked batches to the session while the application has room.
    fn unpark(&mut self) {
        while !self.parked.is_empty() && self.events_room() {
            let (server, batch) = self.parked.pop_front().expect("not empty");
            self.session
                .on_message(server, ServerMessage::Events(batch));
            self.collect();
            self.flush();
        }
    }

    /// Operations past their deadline fail with the reason.
    fn expire(&mut self) {
        let now = tokio::time::Instant::now();
        let late: Vec<OperationId> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(op, _)| *op)
            .collect();
        if late.is_empty() {
            return;
        }
        let cause = self.cause();
        for operation in late {
            if let Some(waiting) = self.waiting.remove(&operation) {
                let _ = waiting.reply.send(Err(cause.clone()));
            }
        }
    }

    /// Why operations are not completing.
    fn cause(&self) -> Error {
        if self.session.state() == ClientState::Closed {
            return Error::Closed;
        }
        if self.servers.is_empty() {
            let errors: Vec<&Unavailable> =
                self.addresses.values().filter_map(Option::as_ref).collect();
            // The most telling cause first: a failed TLS handshake,
            // something that is not Copycat, then a refused connection,
            // then anything else.
            let pick = errors
                .iter()
                .find(|e| matches!(e, Unavailable::Tls { .. }))
                .or_else(|| {
                    errors
                        .iter()
                        .find(|e| matches!(e, Unavailable::NotCopycat { .. }))
                })
                .or_else(|| {
                    errors
                        .iter()
                        .find(|e| matches!(e, Unavailable::Refused { .. }))
                })
                .or_else(|| errors.first());
            return match pick {
                Some(cause) => Error::Unavailable((*cause).clone()),
                None => Error::Unavailable(Unavailable::NoLeader {
                    since: self.last_ok,
                }),
            };
        }
        if self.session.session_id().is_none() || self.session.state() == ClientState::Suspended {
            return Error::Unavailable(Unavailable::NoLeader {
                since: self.last_ok,
            });
        }
        Error::Timeout(self.request_timeout)
    }

    /// Move what the session released into the outbox, in order, and send
    /// its requests.
    fn collect(&mut self) {
        for output in self.session.take_outputs() {
            match output {
                ClientOutput::Send { server, request } => {
                    if let Some((_, tx)) = self.servers.get(&server) {
                        // A full or closed connection loses the request; the
                        // session resends it after its timeout.
                        let _ = tx.try_send(request);
                    }
                }
                ClientOutput::CommandDone { operation, result }
                | ClientOutput::QueryDone { operation, result } => {
                    self.outbox.push_back(Delivery::Done(operation, result));
                }
                ClientOutput::Event {
                    session,
                    event_index,
                    event,
                } => {
                    if self.events_tx.is_none() {
                        continue;
                    }
                    let event = Event {
                        session,
                        index: event_index,
                        name: event.name,
                        payload: event.payload,
                    };
                    match self.outbox.back_mut() {
                        Some(Delivery::Events(group)) => group.push(event),
                        _ => self.outbox.push_back(Delivery::Events(vec![event])),
                    }
                }
                ClientOutput::SessionOpened {
                    session,
                    timeout_ms,
                } => {
                    self.last_ok = SystemTime::now();
                    tracing::debug!(?session, timeout_ms, "session opened");
                }
                ClientOutput::StateChanged(state) => {
                    tracing::debug!(?state, "session state changed");
                }
            }
        }
    }

    /// Hand the outbox to the application in order: events into the
    /// stream's buffer while it has room, results after the events before
    /// them.
    fn flush(&mut self) {
        while let Some(front) = self.outbox.pop_front() {
            match front {
                Delivery::Done(operation, result) => {
                    if let Some(waiting) = self.waiting.remove(&operation) {
                        let _ = waiting.reply.send(result.map_err(operation_error));
                    }
                }
                Delivery::Events(group) => {
                    let Some(tx) = &self.events_tx else { continue };
                    let last = group.last().map(|e| e.index.0);
                    match tx.try_send(group) {
                        Ok(()) => {
                            if let Some(last) = last {
                                self.delivered.fetch_max(last, AtomicOrdering::Release);
                            }
                        }
                        Err(mpsc::error::TrySendError::Full(group)) => {
                            self.outbox.push_front(Delivery::Events(group));
                            return;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => self.events_tx = None,
                    }
                }
            }
        }
    }

    fn publish_status(&self) {
        let current = ClientStatus {
            state: self.session.state(),
            session: self.session.session_id(),
            server: self.session.current_server(),
            leader: self.session.leader_hint(),
            connections: self.servers.len(),
        };
        self.status.send_if_modified(|old| {
            let changed = *old != current;
            *old = current;
            changed
        });
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Wait until the event stream has room; `false` if it is gone.
async fn reserve(tx: Option<mpsc::Sender<Vec<Event>>>) -> bool {
    match tx {
        Some(tx) => tx.reserve().await.is_ok(),
        None => std::future::pending().await,
    }
}

fn operation_error(error: OperationError) -> Error {
    match error {
        OperationError::Failed(CommandFailure::Application(bytes)) => Error::App(bytes),
        OperationError::Failed(CommandFailure::Undecodable(message)) => Error::Undecodable(message),
        OperationError::Failed(CommandFailure::TooLarge { size, max }) => {
            Error::TooLarge { size, limit: max }
        }
        OperationError::Rejected(ClientError::SessionExpired | ClientError::UnknownSession) => {
            Error::SessionExpired
        }
        OperationError::Rejected(ClientError::TooLarge { size, max }) => {
            Error::TooLarge { size, limit: max }
        }
        OperationError::Rejected(other) => Error::Rejected(other),
        OperationError::Refused(message) => Error::Rejected(ClientError::Unavailable(message)),
        OperationError::Closed => Error::Closed,
    }
}

#[cfg(test)]
mod wake_tests {
    use super::*;

    /// Work already due wakes the driver a tick after its last tick, however
    /// many inputs came since (each input recomputes the wake-up: counted
    /// from the input, it would move on with every one of them).
    #[test]
    fn work_due_is_not_put_off_by_inputs() {
        let tick = TICK.as_millis() as u64;
        let mut now = 1_000;
        let last_tick = now;
        let due = Some(now + 1);
        for _ in 0..100 {
            now += tick / 2;
            assert!(wake_ms(due, last_tick, now) <= last_tick + tick);
        }
        // Not more often than a tick, and at most MAX_IDLE ahead when idle.
        assert_eq!(wake_ms(Some(0), now, now), now + tick);
        assert_eq!(wake_ms(None, now, now), now + MAX_IDLE.as_millis() as u64);
        assert_eq!(wake_ms(Some(now + 300), now, now), now + 300);
    }
}
