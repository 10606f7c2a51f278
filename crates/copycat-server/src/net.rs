//! The server's sockets. One TCP listener takes both peers and clients;
//! every connection opens with a [`Hello`] frame. A client connection gets
//! its own bounded channel for what the server sends it; each peer has an
//! outbound task with a bounded queue that reconnects with backoff.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use copycat_net::{framed, Backoff, FramedStream};
use copycat_proto::{decode_frame, encode_frame, ClientRequest, Hello, ServerMessage};
use copycat_raft::{Message, NodeId};
use copycat_replica::node::ConnectionId;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::owner::Input;

/// Messages queued for one client connection.
const CLIENT_QUEUE: usize = 4096;

/// Per-connection limits of the acceptor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) hello_timeout: Duration,
}

pub(crate) async fn accept<M: Send + 'static>(
    listener: TcpListener,
    hello: watch::Receiver<Bytes>,
    limits: Limits,
    inputs: mpsc::Sender<Input<M>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut next_conn: ConnectionId = 0;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut refused: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        // One line per 1,000 refusals, not one per refusal.
                        if refused % 1_000 == 0 {
                            tracing::warn!(%addr, limit = limits.max_connections, refused = refused + 1, "too many connections; closing new ones");
                        }
                        refused += 1;
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    next_conn += 1;
                    let connection = connection(stream, addr, hello.borrow().clone(), limits.hello_timeout, next_conn, inputs.clone(), stop.clone());
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
async fn read_frame(framed: &mut FramedStream) -> Result<Option<Bytes>, String> {
    match framed.next().await {
        None => Ok(None),
        Some(Ok(frame)) => Ok(Some(frame.freeze())),
        Some(Err(error)) => Err(error.to_string()),
    }
}

/// Read and decode one frame; `None` at the end of the stream or after an
/// error (logged, naming the peer address and what was expected).
async fn read_message<T: serde::de::DeserializeOwned>(
    framed: &mut FramedStream,
    addr: SocketAddr,
    what: &str,
) -> Option<T> {
    match read_frame(framed).await {
        Ok(Some(frame)) => match decode_frame::<T>(&frame) {
            Ok(message) => Some(message),
            Err(error) => {
                tracing::error!(%addr, %error, "undecodable {what}; closing the connection");
                None
            }
        },
        Ok(None) => None,
        Err(error) => {
            tracing::error!(%addr, %error, "bad frame ({what}); closing the connection");
            None
        }
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
        hello = read_message::<Hello>(&mut framed, addr, "hello") => hello,
    };
    match hello {
        None => {}
        Some(Hello::Peer(from)) => loop {
            let message = tokio::select! {
                _ = stop.changed() => return,
                message = read_message::<Message>(&mut framed, addr, "peer message") => message,
            };
            let Some(message) = message else { return };
            if message.from.0 != from {
                tracing::warn!(%addr, hello = from, from = ?message.from, "peer message from another server than its hello said; dropped");
                continue;
            }
            if inputs.send(Input::Peer(message)).await.is_err() {
                return;
            }
        },
        Some(Hello::Client) => {
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
    framed: &mut FramedStream,
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
                // Write everything queued before flushing once.
                let mut failed = framed.feed(encode_frame(&message)).await.is_err();
                while !failed {
                    match rx.try_recv() {
                        Ok(message) => failed = framed.feed(encode_frame(&message)).await.is_err(),
                        Err(_) => break,
                    }
                }
                if failed || SinkExt::<Bytes>::flush(framed).await.is_err() {
                    tracing::debug!(%addr, "client write failed");
                    return;
                }
            }
            request = read_message::<ClientRequest>(framed, addr, "client request") => {
                let Some(request) = request else { return };
                if inputs.send(Input::Request(conn, request)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Keeps a connection to one peer and sends it what the owner queues. Ends
/// when the queue's sender is dropped or the server stops.
pub(crate) async fn peer_sender(
    id: NodeId,
    peer: NodeId,
    addr: SocketAddr,
    mut rx: mpsc::Receiver<Message>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    loop {
        let connect = copycat_net::connect_retrying(addr, &mut backoff, |error| {
            tracing::debug!(?peer, %addr, %error, "cannot reach peer; retrying");
            // Messages queued meanwhile are stale: drop them.
            while rx.try_recv().is_ok() {}
        });
        let stream = tokio::select! {
            _ = stop.changed() => return,
            stream = connect => stream,
        };
        if rx.is_closed() {
            return;
        }
        let mut framed = framed(stream);
        if framed.send(encode_frame(&Hello::Peer(id.0))).await.is_err() {
            continue;
        }
        backoff.reset();
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
