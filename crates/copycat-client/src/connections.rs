//! Connections to the servers, shared by any number of sessions.
//!
//! A [`Connections`] keeps one TCP (or TLS) connection to each server
//! address it has learned, reconnecting with backoff, and carries the
//! requests and answers of every [`Client`](crate::Client) built with it.
//! Sessions are multiplexed by the protocol itself: each request names its
//! session, and each session draws its request ids from its own range (the
//! id's high bits are the session's slot here), so an answer, which echoes
//! the id, goes back to the session that asked; pushed events name their
//! session and go to the slot that registered it.
//!
//! A client built without one gets a `Connections` of its own. A process
//! that opens many sessions should share one: a thousand sessions then cost
//! each server one connection instead of a thousand, and the servers'
//! connection limit no longer bounds the number of sessions.
//!
//! The connection tasks run on the tokio runtime of the first client that
//! needed them: share a `Connections` only among clients of one runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use copycat_net::{framed, Backoff, ClientTls, Stream as NetStream};
use copycat_proto::{decode_frame, encode_frame, ClientRequest, Hello, ServerHello, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};

use crate::error::Unavailable;
use crate::session::{ServerId, SessionRoutes, MAX_REQUEST_ID_PREFIX};

/// Frames queued for one connection before new ones are dropped (the
/// sessions resend after their timeout).
const CONNECTION_QUEUE: usize = 8192;
/// Messages queued for one session's driver before new ones are dropped:
/// the session resends a request that got no answer, and asks again for
/// events it missed. A driver never blocks, so this fills only when it
/// cannot keep up at all.
const SESSION_QUEUE: usize = 4096;
/// Most server addresses one `Connections` learns and keeps connected.
const MAX_ADDRESSES: usize = 64;
/// How long a server has to answer the client's hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// What the connections report to a session's driver.
pub(crate) enum NetEvent {
    Connected {
        addr: SocketAddr,
        server: ServerId,
        tx: mpsc::Sender<ClientRequest>,
        cluster: u64,
        /// Each member's id, resolved address and address as named.
        members: Vec<(u64, SocketAddr, String)>,
    },
    Message(ServerId, ServerMessage),
    Disconnected(SocketAddr, ServerId),
    Failed(SocketAddr, Unavailable),
}

impl NetEvent {
    /// A copy for another driver (messages are never broadcast).
    fn status_copy(&self) -> Option<NetEvent> {
        Some(match self {
            NetEvent::Connected {
                addr,
                server,
                tx,
                cluster,
                members,
            } => NetEvent::Connected {
                addr: *addr,
                server: *server,
                tx: tx.clone(),
                cluster: *cluster,
                members: members.clone(),
            },
            NetEvent::Disconnected(addr, server) => NetEvent::Disconnected(*addr, *server),
            NetEvent::Failed(addr, cause) => NetEvent::Failed(*addr, cause.clone()),
            NetEvent::Message(..) => return None,
        })
    }
}

/// Connections to a cluster's servers, shared by the clients built with
/// it ([`ClientBuilder::connections`](crate::ClientBuilder::connections)).
/// Cheap to clone; the connections close when the last clone and the last
/// client using them are gone.
///
/// ```no_run
/// # async fn run() -> Result<(), copycat_client::Error> {
/// use copycat_client::{Client, Connections};
///
/// let connections = Connections::new();
/// let mut clients = Vec::new();
/// for _ in 0..1000 {
///     // A thousand sessions over one connection to each server.
///     let client = Client::builder()
///         .servers(["127.0.0.1:5700"])
///         .connections(&connections)
///         .connect()
///         .await?;
///     clients.push(client);
/// }
/// assert!(connections.open() <= 3);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Connections {
    shared: Arc<Shared>,
}

struct Shared {
    tls: Option<ClientTls>,
    state: Mutex<State>,
    /// Dropped with the last handle: the connection tasks stop.
    _stop: watch::Sender<()>,
    stop_rx: watch::Receiver<()>,
}

#[derive(Default)]
struct State {
    /// Each attached session driver, by slot (its request id prefix).
    drivers: BTreeMap<u32, mpsc::Sender<NetEvent>>,
    free_slots: BTreeSet<u32>,
    next_slot: u32,
    /// Which slot each message is for.
    routes: SessionRoutes,
    /// The state of each connection, replayed to drivers that attach later.
    links: BTreeMap<SocketAddr, Option<NetEvent>>,
    /// Messages dropped because a driver's queue was full.
    dropped: u64,
}

impl Default for Connections {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("open", &self.open())
            .field("sessions", &self.sessions())
            .finish()
    }
}

impl Connections {
    /// Plain TCP connections.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// TLS connections, verifying each server with `tls`.
    pub fn with_tls(tls: ClientTls) -> Self {
        Self::build(Some(tls))
    }

    pub(crate) fn build(tls: Option<ClientTls>) -> Self {
        let (stop, stop_rx) = watch::channel(());
        Self {
            shared: Arc::new(Shared {
                tls,
                state: Mutex::new(State::default()),
                _stop: stop,
                stop_rx,
            }),
        }
    }

    /// Whether these connections use TLS.
    pub fn uses_tls(&self) -> bool {
        self.shared.tls.is_some()
    }

    /// How many servers are connected now.
    pub fn open(&self) -> usize {
        self.shared
            .lock()
            .links
            .values()
            .filter(|l| matches!(l, Some(NetEvent::Connected { .. })))
            .count()
    }

    /// How many clients (sessions) use these connections now.
    pub fn sessions(&self) -> usize {
        self.shared.lock().drivers.len()
    }

    /// Messages dropped because a client could not keep up (their requests
    /// are resent, their events asked for again).
    pub fn dropped_messages(&self) -> u64 {
        self.shared.lock().dropped
    }

    /// Attach a session driver: its slot (request id prefix) and the
    /// channel it hears on, with the state of every connection so far.
    pub(crate) fn attach(&self) -> Option<Attachment> {
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let mut state = self.shared.lock();
        let slot = match state.free_slots.pop_first() {
            Some(slot) => slot,
            None if state.next_slot <= MAX_REQUEST_ID_PREFIX => {
                state.next_slot += 1;
                state.next_slot - 1
            }
            None => return None,
        };
        for link in state.links.values().flatten() {
            if let Some(copy) = link.status_copy() {
                let _ = tx.try_send(copy);
            }
        }
        state.drivers.insert(slot, tx);
        Some(Attachment {
            shared: self.shared.clone(),
            slot,
            rx,
        })
    }

    /// Keep a connection to `addr`, named `name` (`host:port`, whose host
    /// a TLS server's certificate must name), once.
    pub(crate) fn learn(&self, addr: SocketAddr, name: String) {
        {
            let mut state = self.shared.lock();
            if state.links.contains_key(&addr) || state.links.len() >= MAX_ADDRESSES {
                return;
            }
            state.links.insert(addr, None);
        }
        tokio::spawn(connection(
            addr,
            name,
            self.shared.tls.clone(),
            Arc::downgrade(&self.shared),
            self.shared.stop_rx.clone(),
        ));
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain data behind.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record a connection's new state and tell every driver, in order.
    async fn publish(&self, addr: SocketAddr, event: NetEvent) {
        let drivers: Vec<mpsc::Sender<NetEvent>> = {
            let mut state = self.lock();
            let kept = match &event {
                NetEvent::Disconnected(..) => None,
                other => other.status_copy(),
            };
            state.links.insert(addr, kept);
            state.drivers.values().cloned().collect()
        };
        for driver in drivers {
            if let Some(copy) = event.status_copy() {
                let _ = driver.send(copy).await;
            }
        }
    }

    /// Hand a message to the session it is for.
    fn route(&self, server: ServerId, message: ServerMessage) {
        let mut state = self.lock();
        let slot = state.routes.route(&message);
        let Some(driver) = slot.and_then(|slot| state.drivers.get(&slot)) else {
            return;
        };
        if driver.try_send(NetEvent::Message(server, message)).is_err() {
            state.dropped += 1;
            tracing::debug!(
                dropped = state.dropped,
                "a session's queue is full; message dropped"
            );
        }
    }
}

/// A session driver's place on a [`Connections`]; detaches when dropped.
pub(crate) struct Attachment {
    shared: Arc<Shared>,
    slot: u32,
    pub(crate) rx: mpsc::Receiver<NetEvent>,
}

impl Attachment {
    /// The request id prefix the session must use.
    pub(crate) fn slot(&self) -> u32 {
        self.slot
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.drivers.remove(&self.slot);
        state.routes.forget(self.slot);
        state.free_slots.insert(self.slot);
    }
}

/// Keep one server address connected, reconnecting with backoff, and
/// report what happens, until the `Connections` is gone.
async fn connection(
    addr: SocketAddr,
    name: String,
    tls: Option<ClientTls>,
    shared: Weak<Shared>,
    mut stop: watch::Receiver<()>,
) {
    let mut backoff = Backoff::default();
    let report = |event: NetEvent| {
        let shared = shared.clone();
        async move {
            if let Some(shared) = shared.upgrade() {
                shared.publish(addr, event).await;
            }
        }
    };
    loop {
        let (failed_tx, mut failed_rx) = mpsc::unbounded_channel();
        let stream = {
            let connecting = copycat_net::connect_retrying(addr, &mut backoff, |error| {
                let cause = if error.kind() == std::io::ErrorKind::ConnectionRefused {
                    Unavailable::Refused { addr }
                } else {
                    Unavailable::Unreachable {
                        addr,
                        error: error.to_string(),
                    }
                };
                let _ = failed_tx.send(cause);
            });
            tokio::pin!(connecting);
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    Some(cause) = failed_rx.recv() => report(NetEvent::Failed(addr, cause)).await,
                    stream = &mut connecting => break stream,
                }
            }
        };
        let stream = match &tls {
            None => NetStream::Plain(stream),
            Some(tls) => {
                let handshake = tokio::time::timeout(HELLO_TIMEOUT, tls.connect(&name, stream));
                let handshake = tokio::select! {
                    _ = stop.changed() => return,
                    handshake = handshake => handshake,
                };
                match handshake {
                    Ok(Ok(stream)) => stream,
                    failed => {
                        let error = match failed {
                            Ok(Err(error)) => error.to_string(),
                            _ => format!("no TLS handshake within {HELLO_TIMEOUT:?}"),
                        };
                        tracing::debug!(%addr, %error, "TLS handshake failed");
                        report(NetEvent::Failed(addr, Unavailable::Tls { addr, error })).await;
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                }
            }
        };
        let served = tokio::select! {
            _ = stop.changed() => return,
            served = serve_connection(stream, addr, tls.is_some(), &shared) => served,
        };
        match served {
            Ok(()) => backoff.reset(),
            Err(cause) => {
                tracing::debug!(%addr, %cause, "server connection failed");
                report(NetEvent::Failed(addr, cause)).await;
            }
        }
        if shared.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// One connection: hello, then requests out and messages in until it
/// drops. `Ok` if the hello succeeded.
async fn serve_connection(
    stream: NetStream,
    addr: SocketAddr,
    tls: bool,
    shared: &Weak<Shared>,
) -> Result<(), Unavailable> {
    let mut framed = framed(stream);
    let unreachable = |error: std::io::Error| Unavailable::Unreachable {
        addr,
        error: error.to_string(),
    };
    framed
        .send(encode_frame(&Hello::Client))
        .await
        .map_err(unreachable)?;
    let answer = tokio::time::timeout(HELLO_TIMEOUT, framed.next()).await;
    let frame = match answer {
        Err(_) => {
            return Err(Unavailable::NotCopycat {
                addr,
                detail: format!("no answer to the hello within {HELLO_TIMEOUT:?}"),
            })
        }
        Ok(None) if tls => {
            return Err(Unavailable::NotCopycat {
                addr,
                detail: "it closed the connection instead of answering the hello (or is at its connection limit)".into(),
            })
        }
        Ok(None) => {
            return Err(Unavailable::NotCopycat {
                addr,
                detail: "it closed the connection instead of answering the hello (a server that serves TLS only does that to a client without TLS; or it is at its connection limit)".into(),
            })
        }
        // With TLS 1.3 the server checks the client's certificate after
        // the client's side of the handshake is done: a refusal arrives as
        // an alert on the first read.
        Ok(Some(Err(error))) if tls && error.kind() == std::io::ErrorKind::InvalidData => {
            return Err(Unavailable::Tls {
                addr,
                error: error.to_string(),
            })
        }
        Ok(Some(Err(error))) => {
            let hint = if !tls && error.kind() == std::io::ErrorKind::ConnectionReset {
                " (a server that serves TLS only closes a client without TLS)"
            } else {
                ""
            };
            return Err(Unavailable::NotCopycat {
                addr,
                detail: format!("bad answer to the hello: {error}{hint}"),
            });
        }
        Ok(Some(Ok(frame))) => frame,
    };
    let ServerHello {
        node,
        cluster,
        members,
    } = decode_frame(&frame).map_err(|error| Unavailable::NotCopycat {
        addr,
        detail: format!("undecodable answer to the hello: {error}"),
    })?;
    // Members are named by `host:port`; one that does not resolve now is
    // left out (it is learned again on the next connection).
    let mut resolved = Vec::with_capacity(members.len());
    for (id, address) in members {
        match copycat_net::resolve(&address).await {
            Ok(addrs) => resolved.extend(addrs.first().map(|a| (id, *a, address.clone()))),
            Err(error) => tracing::debug!(%address, %error, "member address does not resolve"),
        }
    }
    let (tx, mut rx) = mpsc::channel::<ClientRequest>(CONNECTION_QUEUE);
    let connected = NetEvent::Connected {
        addr,
        server: node,
        tx,
        cluster,
        members: resolved,
    };
    let Some(owner) = shared.upgrade() else {
        return Ok(());
    };
    owner.publish(addr, connected).await;
    drop(owner);
    loop {
        tokio::select! {
            request = rx.recv() => {
                let Some(request) = request else { break };
                // Write everything queued before flushing once.
                let mut failed = framed.feed(encode_frame(&request)).await.is_err();
                while !failed {
                    match rx.try_recv() {
                        Ok(request) => failed = framed.feed(encode_frame(&request)).await.is_err(),
                        Err(_) => break,
                    }
                }
                if failed || SinkExt::<bytes::Bytes>::flush(&mut framed).await.is_err() {
                    break;
                }
            }
            frame = framed.next() => {
                let Some(Ok(frame)) = frame else { break };
                match decode_frame::<ServerMessage>(&frame) {
                    Ok(message) => match shared.upgrade() {
                        Some(owner) => owner.route(node, message),
                        None => return Ok(()),
                    },
                    Err(error) => {
                        tracing::warn!(%addr, %error, "undecodable frame from the server; reconnecting");
                        break;
                    }
                }
            }
        }
    }
    if let Some(owner) = shared.upgrade() {
        owner
            .publish(addr, NetEvent::Disconnected(addr, node))
            .await;
    }
    Ok(())
}
