//! [`serve`]: one server on tokio. One TCP listener takes both peers and
//! clients; every connection opens with a [`Hello`] frame. Frames are u32
//! length-prefixed (at most [`MAX_FRAME_BYTES`]) and carry postcard payloads
//! in copycat-proto's versioned envelope.
//!
//! One task owns the [`Shell`] (no locks): connection tasks feed it through
//! a bounded channel, a 10 ms ticker drives its clock, and it syncs the disk
//! inside [`tokio::task::block_in_place`]. Each peer has an outbound task
//! with a bounded queue (messages are dropped when it is full: Raft
//! tolerates loss) that reconnects with backoff. Each client connection has
//! a bounded channel for what the server sends it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use copycat_proto::{decode_frame, encode_frame, ClientRequest, ServerMessage};
use copycat_raft::{LogIndex, Message, NodeId, Role, Term, Time};
use copycat_storage::Disk;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::shell::{Shell, ShellConfig, ShellError};
use crate::machine::RawStateMachine;
use crate::node::{ConnectionId, ServerNode};

/// The largest frame accepted or sent: 64 MiB.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

const INPUT_QUEUE: usize = 4096;
const PEER_QUEUE: usize = 4096;
const CLIENT_QUEUE: usize = 4096;
const TICK: Duration = Duration::from_millis(10);
/// Default limit on the connections (peers and clients) a server keeps open
/// at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 1024;
/// Default time a new connection has to send its hello frame before it is
/// closed (so idle connections cannot hold the connection slots).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Inputs handled per batch before the shell processes them together.
const MAX_BATCH: usize = 1024;

/// The first frame of every connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hello {
    /// A peer's outbound connection, from this server id.
    Peer(u64),
    /// A client. The server answers with [`ServerHello`].
    Client,
}

/// The server's answer to a client's [`Hello::Client`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    /// The server's id (clients name servers by it; leader hints use it).
    pub node: u64,
    /// Every server this one knows, with the address to reach it, so a
    /// client given one address can find the others (and the leader).
    pub members: Vec<(u64, SocketAddr)>,
}

/// A length-delimited framing with the runtime's frame limit.
pub fn framed(stream: TcpStream) -> Framed<TcpStream, LengthDelimitedCodec> {
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec();
    Framed::new(stream, codec)
}

/// What [`serve`] needs.
pub struct ServeOptions<M> {
    /// The shell's settings (the server id is `shell.server.raft.id`).
    pub shell: ShellConfig,
    /// The listener for peers and clients (bind it first, e.g. to port 0).
    pub listener: TcpListener,
    /// The initial members, used when the data directory is new.
    pub members: Vec<NodeId>,
    /// Where to reach the other servers.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The disk it is on.
    pub disk: Arc<dyn Disk>,
    /// The state machine (restored from the latest snapshot).
    pub machine: M,
    /// Connections kept open at once (see [`MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// Time a connection has to say hello (see [`HELLO_TIMEOUT`]).
    pub hello_timeout: Duration,
}

/// What a running server is doing, updated after every batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// This server.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its term.
    pub term: Term,
    /// Its commit index.
    pub commit: LogIndex,
    /// What its replica applied.
    pub applied: LogIndex,
}

type Inspect<M> = Box<dyn FnOnce(&ServerNode<M>) + Send>;

enum Input<M> {
    Peer(Message),
    ClientOpen(ConnectionId, mpsc::Sender<ServerMessage>),
    Request(ConnectionId, ClientRequest),
    ClientClosed(ConnectionId),
    Inspect(Inspect<M>),
}

/// A running server. Dropping it does not stop it; call
/// [`shutdown`](Self::shutdown).
pub struct ServerHandle<M> {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    status: watch::Receiver<Status>,
    inputs: mpsc::Sender<Input<M>>,
    owner: JoinHandle<Result<(), ShellError>>,
    acceptor: JoinHandle<()>,
}

impl<M: RawStateMachine + Send + 'static> ServerHandle<M> {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The latest status.
    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    /// A receiver of status updates.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Run `f` on the server between batches (for tests and tools). `None`
    /// if the server has stopped.
    pub async fn inspect<R: Send + 'static>(
        &self,
        f: impl FnOnce(&ServerNode<M>) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let call: Inspect<M> = Box::new(move |server| {
            let _ = tx.send(f(server));
        });
        self.inputs.send(Input::Inspect(call)).await.ok()?;
        rx.await.ok()
    }

    /// Stop gracefully: stop accepting, close every connection, finish the
    /// current batch. Returns the error that stopped the server, if any.
    pub async fn shutdown(self) -> Result<(), ShellError> {
        let _ = self.stop.send(true);
        let _ = self.acceptor.await;
        match self.owner.await {
            Ok(result) => result,
            Err(error) => {
                tracing::error!(%error, "server task failed");
                Ok(())
            }
        }
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Open the data directory and run the server. Needs the multi-threaded
/// tokio runtime (the disk is synced inside `block_in_place`).
pub fn serve<M: RawStateMachine + Send + 'static>(
    options: ServeOptions<M>,
) -> Result<ServerHandle<M>, ShellError> {
    let ServeOptions {
        shell,
        listener,
        members,
        peers,
        data_dir,
        disk,
        machine,
        max_connections,
        hello_timeout,
    } = options;
    let local_addr = listener.local_addr()?;
    let start = Instant::now();
    let shell = tokio::task::block_in_place(|| {
        Shell::open(
            shell,
            &data_dir,
            disk,
            &members,
            machine,
            Time(0),
            wall_ms(),
        )
    })?;
    let id = shell.id();
    let mut members: Vec<(u64, SocketAddr)> =
        peers.iter().map(|(peer, addr)| (peer.0, *addr)).collect();
    if !peers.contains_key(&id) {
        members.push((id.0, local_addr));
    }
    let hello = encode_frame(&ServerHello {
        node: id.0,
        members,
    });
    let (stop, stop_rx) = watch::channel(false);
    let (inputs, inputs_rx) = mpsc::channel(INPUT_QUEUE);
    let (status_tx, status) = watch::channel(status_of(shell.server()));
    let mut outbound = BTreeMap::new();
    for (peer, addr) in peers {
        if peer == id {
            continue;
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        tokio::spawn(peer_sender(id, peer, addr, rx, stop_rx.clone()));
        outbound.insert(peer, tx);
    }
    let owner = tokio::spawn(own_shell(
        shell,
        start,
        inputs_rx,
        outbound,
        status_tx,
        stop_rx.clone(),
    ));
    let limits = Limits {
        max_connections,
        hello_timeout,
    };
    let acceptor = tokio::spawn(accept(listener, hello, limits, inputs.clone(), stop_rx));
    tracing::info!(?id, %local_addr, "serving");
    Ok(ServerHandle {
        local_addr,
        stop,
        status,
        inputs,
        owner,
        acceptor,
    })
}

fn status_of<M: RawStateMachine>(server: &ServerNode<M>) -> Status {
    let raft = server.raft();
    Status {
        id: raft.id(),
        role: raft.role(),
        leader: raft.leader(),
        term: raft.term(),
        commit: raft.commit_index(),
        applied: server.replica().applied_index(),
    }
}

async fn own_shell<M: RawStateMachine + Send + 'static>(
    mut shell: Shell<M>,
    start: Instant,
    mut inputs: mpsc::Receiver<Input<M>>,
    peers: BTreeMap<NodeId, mpsc::Sender<Message>>,
    status: watch::Sender<Status>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ShellError> {
    let mut clients: BTreeMap<ConnectionId, mpsc::Sender<ServerMessage>> = BTreeMap::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inspects: Vec<Inspect<M>> = Vec::new();
    loop {
        let mut handle =
            |shell: &mut Shell<M>, input: Input<M>, inspects: &mut Vec<Inspect<M>>| match input {
                Input::Peer(message) => shell.step(message),
                Input::ClientOpen(conn, tx) => {
                    clients.insert(conn, tx);
                }
                Input::Request(conn, request) => {
                    shell.on_request(conn, request, Time(start.elapsed().as_millis() as u64));
                }
                Input::ClientClosed(conn) => {
                    clients.remove(&conn);
                    shell.connection_closed(conn);
                }
                Input::Inspect(call) => inspects.push(call),
            };
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = ticker.tick() => {
                let now = Time(start.elapsed().as_millis() as u64);
                shell.tick(now, wall_ms());
            }
            input = inputs.recv() => {
                let Some(input) = input else { break };
                handle(&mut shell, input, &mut inspects);
                // Take what else is queued, so one sync covers it all.
                for _ in 0..MAX_BATCH {
                    match inputs.try_recv() {
                        Ok(input) => handle(&mut shell, input, &mut inspects),
                        Err(_) => break,
                    }
                }
            }
        }
        let outputs = tokio::task::block_in_place(|| shell.process());
        let outputs = match outputs {
            Ok(outputs) => outputs,
            Err(error) => {
                tracing::error!(id = ?shell.id(), %error, "storage failed; stopping the server");
                return Err(error);
            }
        };
        for message in outputs.peer_messages {
            if let Some(tx) = peers.get(&message.to) {
                // A full queue drops the message: Raft retries.
                let _ = tx.try_send(message);
            }
        }
        for (conn, message) in outputs.client_messages {
            if let Some(tx) = clients.get(&conn) {
                if tx.try_send(message).is_err() {
                    tracing::warn!(conn, "client queue full or closed; message dropped");
                }
            }
        }
        for call in inspects.drain(..) {
            call(shell.server());
        }
        let current = status_of(shell.server());
        status.send_if_modified(|old| {
            let changed = *old != current;
            *old = current;
            changed
        });
    }
    tracing::info!(id = ?shell.id(), "server stopped");
    Ok(())
}

/// Per-connection limits of the acceptor.
#[derive(Clone, Copy)]
struct Limits {
    max_connections: usize,
    hello_timeout: Duration,
}

async fn accept<M: Send + 'static>(
    listener: TcpListener,
    hello: Bytes,
    limits: Limits,
    inputs: mpsc::Sender<Input<M>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut next_conn: ConnectionId = 0;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        tracing::warn!(%addr, limit = limits.max_connections, "too many connections; closing this one");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    next_conn += 1;
                    let connection = connection(stream, addr, hello.clone(), limits.hello_timeout, next_conn, inputs.clone(), stop.clone());
                    tokio::spawn(async move {
                        connection.await;
                        drop(slot);
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Read one frame; `None` at a clean end of stream.
async fn read_frame(
    framed: &mut Framed<TcpStream, LengthDelimitedCodec>,
) -> Result<Option<Bytes>, String> {
    match framed.next().await {
        None => Ok(None),
        Some(Ok(frame)) => Ok(Some(frame.freeze())),
        Some(Err(error)) => Err(error.to_string()),
    }
}

async fn connection<M: Send + 'static>(
    stream: TcpStream,
    addr: SocketAddr,
    hello_reply: Bytes,
    hello_timeout: Duration,
    conn: ConnectionId,
    inputs: mpsc::Sender<Input<M>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut framed = framed(stream);
    let hello = tokio::select! {
        _ = stop.changed() => return,
        _ = tokio::time::sleep(hello_timeout) => {
            tracing::warn!(%addr, "no hello in time; closing the connection");
            return;
        }
        frame = read_frame(&mut framed) => frame,
    };
    let hello = match hello.map(|f| f.map(|f| decode_frame::<Hello>(&f))) {
        Ok(Some(Ok(hello))) => hello,
        Ok(None) => return,
        Ok(Some(Err(error))) => {
            tracing::error!(%addr, %error, "undecodable hello; closing the connection");
            return;
        }
        Err(error) => {
            tracing::error!(%addr, %error, "bad frame; closing the connection");
            return;
        }
    };
    match hello {
        Hello::Peer(from) => loop {
            let frame = tokio::select! {
                _ = stop.changed() => return,
                frame = read_frame(&mut framed) => frame,
            };
            let message = match frame.map(|f| f.map(|f| decode_frame::<Message>(&f))) {
                Ok(Some(Ok(message))) => message,
                Ok(None) => return,
                Ok(Some(Err(error))) => {
                    tracing::error!(%addr, from, %error, "undecodable peer frame; closing");
                    return;
                }
                Err(error) => {
                    tracing::error!(%addr, from, %error, "bad peer frame; closing");
                    return;
                }
            };
            if inputs.send(Input::Peer(message)).await.is_err() {
                return;
            }
        },
        Hello::Client => {
            let (tx, mut rx) = mpsc::channel(CLIENT_QUEUE);
            if inputs.send(Input::ClientOpen(conn, tx)).await.is_err() {
                return;
            }
            if framed.send(hello_reply).await.is_ok() {
                client_loop(&mut framed, addr, conn, &inputs, &mut rx, &mut stop).await;
            }
            let _ = inputs.send(Input::ClientClosed(conn)).await;
        }
    }
}

async fn client_loop<M>(
    framed: &mut Framed<TcpStream, LengthDelimitedCodec>,
    addr: SocketAddr,
    conn: ConnectionId,
    inputs: &mpsc::Sender<Input<M>>,
    rx: &mut mpsc::Receiver<ServerMessage>,
    stop: &mut watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            outgoing = rx.recv() => {
                let Some(message) = outgoing else { return };
                if let Err(error) = framed.send(encode_frame(&message)).await {
                    tracing::debug!(%addr, %error, "client write failed");
                    return;
                }
            }
            frame = read_frame(framed) => {
                match frame.map(|f| f.map(|f| decode_frame::<ClientRequest>(&f))) {
                    Ok(Some(Ok(request))) => {
                        if inputs.send(Input::Request(conn, request)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Ok(Some(Err(error))) => {
                        tracing::error!(%addr, %error, "undecodable client frame; closing");
                        return;
                    }
                    Err(error) => {
                        tracing::error!(%addr, %error, "bad client frame; closing");
                        return;
                    }
                }
            }
        }
    }
}

/// Keeps a connection to one peer and sends it what the shell queues.
async fn peer_sender(
    id: NodeId,
    peer: NodeId,
    addr: SocketAddr,
    mut rx: mpsc::Receiver<Message>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let connected = tokio::select! {
            _ = stop.changed() => return,
            connected = TcpStream::connect(addr) => connected,
        };
        let mut framed = match connected {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                framed(stream)
            }
            Err(error) => {
                tracing::debug!(?peer, %addr, %error, "cannot reach peer; retrying");
                // Messages queued meanwhile are stale: drop them.
                while rx.try_recv().is_ok() {}
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if framed.send(encode_frame(&Hello::Peer(id.0))).await.is_err() {
            continue;
        }
        backoff = Duration::from_millis(20);
        tracing::debug!(?peer, %addr, "connected to peer");
        loop {
            let message = tokio::select! {
                _ = stop.changed() => return,
                message = rx.recv() => message,
            };
            let Some(message) = message else { return };
            // Write everything queued before flushing once.
            let mut failed = framed.feed(encode_frame(&message)).await.is_err();
            while !failed {
                match rx.try_recv() {
                    Ok(message) => failed = framed.feed(encode_frame(&message)).await.is_err(),
                    Err(_) => break,
                }
            }
            if failed || SinkExt::<Bytes>::flush(&mut framed).await.is_err() {
                tracing::debug!(?peer, %addr, "peer connection lost; reconnecting");
                break;
            }
        }
    }
}
