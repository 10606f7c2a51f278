//! An async client: drives [`ClientSession`] over TCP. It keeps a
//! connection to every given server (reconnecting with backoff), routes the
//! session's requests by server id, feeds it every frame the servers send,
//! and ticks it every 10 ms.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use copycat_client::session::{
    ClientConfig, ClientOutput, ClientSession, OperationError, OperationId, ServerId,
};
use copycat_proto::{decode_frame, encode_frame, ClientRequest, Consistency, ServerMessage};
use copycat_server::runtime::{framed, Hello, ServerHello};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const TICK: Duration = Duration::from_millis(10);

type Reply = oneshot::Sender<Result<Bytes, OperationError>>;

enum Op {
    Command(Bytes, Reply),
    Query(Bytes, Consistency, Reply),
    Close(oneshot::Sender<()>),
}

enum NetEvent {
    /// Connected to a server, which told us every member's address.
    Connected(
        ServerId,
        mpsc::Sender<ClientRequest>,
        Vec<(u64, SocketAddr)>,
    ),
    Message(ServerId, ServerMessage),
    Disconnected(ServerId),
}

/// The client's connections: the servers it knows and the tasks keeping
/// them connected.
struct Net {
    events_tx: mpsc::Sender<NetEvent>,
    known: std::collections::BTreeSet<SocketAddr>,
    connections: Vec<JoinHandle<()>>,
}

/// A client session with a cluster.
pub struct Client {
    ops: mpsc::Sender<Op>,
    driver: JoinHandle<()>,
}

impl Client {
    /// Start a session with the servers at `servers` (register happens in
    /// the background; operations wait for it).
    pub fn connect(servers: Vec<SocketAddr>, config: ClientConfig) -> Result<Self> {
        let start = Instant::now();
        let session = ClientSession::new(config, 0).map_err(|e| anyhow!("{e}"))?;
        let (events_tx, events) = mpsc::channel(1024);
        let mut connections = Vec::new();
        for addr in &servers {
            connections.push(tokio::spawn(connection(*addr, events_tx.clone())));
        }
        let (ops, ops_rx) = mpsc::channel(1024);
        let known = servers.into_iter().collect();
        let net = Net {
            events_tx,
            known,
            connections,
        };
        let driver = tokio::spawn(drive(session, start, ops_rx, events, net));
        Ok(Self { ops, driver })
    }

    /// Run a command (exactly once) and return its output.
    pub async fn command(&self, payload: Bytes) -> Result<Bytes> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(Op::Command(payload, tx))
            .await
            .map_err(|_| anyhow!("client stopped"))?;
        Ok(rx.await.context("client stopped")??)
    }

    /// Run a linearizable query and return its output.
    pub async fn query(&self, payload: Bytes) -> Result<Bytes> {
        self.query_with(payload, Consistency::Linearizable).await
    }

    /// Run a query at the given consistency.
    pub async fn query_with(&self, payload: Bytes, consistency: Consistency) -> Result<Bytes> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(Op::Query(payload, consistency, tx))
            .await
            .map_err(|_| anyhow!("client stopped"))?;
        Ok(rx.await.context("client stopped")??)
    }

    /// Unregister the session (waiting at most a second) and disconnect.
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.ops.send(Op::Close(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), rx).await;
        }
        self.driver.abort();
        let _ = self.driver.await;
    }
}

async fn drive(
    mut session: ClientSession,
    start: Instant,
    mut ops: mpsc::Receiver<Op>,
    mut events: mpsc::Receiver<NetEvent>,
    mut net: Net,
) {
    let mut servers: BTreeMap<ServerId, mpsc::Sender<ClientRequest>> = BTreeMap::new();
    let mut waiting: BTreeMap<OperationId, Reply> = BTreeMap::new();
    let mut closing: Option<oneshot::Sender<()>> = None;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => session.tick(start.elapsed().as_millis() as u64),
            op = ops.recv() => match op {
                None => break,
                Some(Op::Command(payload, reply)) => match session.submit_command(payload) {
                    Ok(operation) => { waiting.insert(operation, reply); }
                    Err(error) => { let _ = reply.send(Err(error)); }
                },
                Some(Op::Query(payload, consistency, reply)) => {
                    match session.submit_query(payload, consistency) {
                        Ok(operation) => { waiting.insert(operation, reply); }
                        Err(error) => { let _ = reply.send(Err(error)); }
                    }
                }
                Some(Op::Close(done)) => {
                    session.close();
                    closing = Some(done);
                }
            },
            event = events.recv() => match event {
                None => break,
                Some(NetEvent::Connected(server, tx, members)) => {
                    servers.insert(server, tx);
                    session.connected(server);
                    // Connect to the members we were not given, so leader
                    // hints can be followed from any starting address.
                    for (_, addr) in members {
                        if net.known.insert(addr) {
                            net.connections.push(tokio::spawn(connection(addr, net.events_tx.clone())));
                        }
                    }
                }
                Some(NetEvent::Message(server, message)) => session.on_message(server, message),
                Some(NetEvent::Disconnected(server)) => {
                    servers.remove(&server);
                    session.disconnected(server);
                }
            },
        }
        for output in session.take_outputs() {
            match output {
                ClientOutput::Send { server, request } => {
                    if let Some(tx) = servers.get(&server) {
                        // A full or closed connection loses the request; the
                        // session resends it after its timeout.
                        let _ = tx.try_send(request);
                    }
                }
                ClientOutput::CommandDone { operation, result }
                | ClientOutput::QueryDone { operation, result } => {
                    if let Some(reply) = waiting.remove(&operation) {
                        let _ = reply.send(result);
                    }
                }
                ClientOutput::SessionOpened {
                    session,
                    timeout_ms,
                } => {
                    tracing::debug!(?session, timeout_ms, "session opened");
                }
                ClientOutput::StateChanged(state) => {
                    tracing::debug!(?state, "session state changed");
                    if state == copycat_client::session::ClientState::Closed {
                        if let Some(done) = closing.take() {
                            let _ = done.send(());
                        }
                    }
                }
                ClientOutput::Event { .. } => {}
            }
        }
    }
    for connection in net.connections {
        connection.abort();
    }
}

/// Keep one server connected, reconnecting with backoff.
async fn connection(addr: SocketAddr, events: mpsc::Sender<NetEvent>) {
    let mut backoff = Duration::from_millis(20);
    loop {
        match connect_once(addr, &events).await {
            Ok(()) => backoff = Duration::from_millis(20),
            Err(error) => tracing::debug!(%addr, %error, "server connection failed"),
        }
        if events.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

async fn connect_once(addr: SocketAddr, events: &mpsc::Sender<NetEvent>) -> Result<()> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut framed = framed(stream);
    framed.send(encode_frame(&Hello::Client)).await?;
    let frame = framed
        .next()
        .await
        .ok_or_else(|| anyhow!("closed before the hello"))??;
    let ServerHello { node, members } = decode_frame(&frame)?;
    let (tx, mut rx) = mpsc::channel::<ClientRequest>(1024);
    events.send(NetEvent::Connected(node, tx, members)).await?;
    let result: Result<()> = async {
        loop {
            tokio::select! {
                request = rx.recv() => {
                    let Some(request) = request else { return Ok(()) };
                    framed.send(encode_frame(&request)).await?;
                }
                frame = framed.next() => {
                    let Some(frame) = frame else { return Ok(()) };
                    let message: ServerMessage = decode_frame(&frame?)?;
                    events.send(NetEvent::Message(node, message)).await?;
                }
            }
        }
    }
    .await;
    let _ = events.send(NetEvent::Disconnected(node)).await;
    result
}
