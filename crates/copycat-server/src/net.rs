//! The server's sockets. One TCP listener takes peers, clients and admin
//! connections; every connection opens with a [`Hello`] frame. A client
//! connection gets its own bounded channel for what the server sends it;
//! each peer has an outbound task with a bounded queue that reconnects with
//! backoff. A peer is let in only if it belongs to this server's cluster and
//! is a member of the configuration this server knows; both sides log a
//! refusal, with the reason.
//!
//! With TLS ([`copycat_net::ServerTls`]) every connection is TLS: the
//! handshake comes before the hello (within the hello timeout), a peer must
//! present a certificate that chains to the CA bundle (and verifies the
//! certificate of the server it calls against it), and a connection
//! without TLS, or with a certificate the CA did not sign, is closed with
//! the reason logged.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use copycat_net::{framed, Backoff, ClientTls, FramedStream, ServerTls, Stream};
use copycat_proto::{
    decode_frame, encode_frame, AdminRequest, ClientRequest, Hello, PeerAnswer, ServerMessage,
};
use copycat_raft::{Message, NodeId};
use copycat_replica::node::ConnectionId;
use copycat_replica::RawStateMachine;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::admin::Admin;
use crate::owner::Input;

/// How long a peer waits for the answer to its hello.
const PEER_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// A refusal by the same peer for the same reason is logged at most this
/// often.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Who may connect as a peer: servers of this cluster that are members of
/// the configuration this server knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PeerPolicy {
    pub(crate) cluster: u64,
    pub(crate) members: BTreeSet<u64>,
    /// The settings every server must share, this server's values.
    pub(crate) settings: Vec<(String, u64)>,
}

impl PeerPolicy {
    /// Why a peer whose settings are `settings` is refused, if it is.
    fn settings_refusal(&self, settings: &[(String, u64)]) -> Option<String> {
        if settings == self.settings.as_slice() {
            return None;
        }
        for (name, ours) in &self.settings {
            match settings.iter().find(|(n, _)| n == name) {
                Some((_, theirs)) if theirs != ours => {
                    return Some(format!(
                        "setting {name} differs: {ours} here, {theirs} on the caller (every server of a cluster must use the same value)"
                    ))
                }
                None => return Some(format!("the caller does not send setting {name}")),
                Some(_) => {}
            }
        }
        Some("the caller sends settings this server does not know".into())
    }

    /// Why a peer `id` of cluster `cluster` is refused, if it is.
    fn refusal(&self, cluster: u64, id: u64) -> Option<String> {
        if cluster != self.cluster {
            Some(format!(
                "this server belongs to cluster {:016x}, the caller to cluster {cluster:016x}",
                self.cluster
            ))
        } else if !self.members.contains(&id) {
            Some(format!(
                "server {id} is not a member of the cluster configuration (members: {:?})",
                self.members
            ))
        } else {
            None
        }
    }
}

/// Counters of the peer connections, shared by every connection task.
#[derive(Debug, Default)]
pub(crate) struct NetStats {
    peers_refused: AtomicU64,
    refused_by_peers: AtomicU64,
    wrong_sender: AtomicU64,
    tls_failed: AtomicU64,
}

impl NetStats {
    pub(crate) fn snapshot(&self) -> NetCounters {
        NetCounters {
            peers_refused: self.peers_refused.load(Ordering::Relaxed),
            refused_by_peers: self.refused_by_peers.load(Ordering::Relaxed),
            wrong_sender: self.wrong_sender.load(Ordering::Relaxed),
            tls_failed: self.tls_failed.load(Ordering::Relaxed),
        }
    }
}

/// What a server counted on its peer connections since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Incoming peer connections refused (another cluster, not a member).
    pub peers_refused: u64,
    /// Outgoing peer connections another server refused, or whose TLS
    /// handshake failed.
    pub refused_by_peers: u64,
    /// Peer messages dropped because their sender was not the server the
    /// connection's hello named.
    pub wrong_sender: u64,
    /// Incoming connections closed at the TLS handshake (no TLS, or a
    /// certificate the CA did not sign), and peer connections over TLS
    /// without a certificate.
    pub tls_failed: u64,
}

/// What the acceptor hands every connection.
pub(crate) struct Accepting<M> {
    pub(crate) hello: watch::Receiver<Bytes>,
    pub(crate) policy: watch::Receiver<PeerPolicy>,
    pub(crate) limits: Limits,
    pub(crate) admin: Admin<M>,
    pub(crate) stats: Arc<NetStats>,
    /// TLS on every connection, when set.
    pub(crate) tls: Option<ServerTls>,
}

/// Messages queued for one client connection.
const CLIENT_QUEUE: usize = 4096;

/// Per-connection limits of the acceptor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) hello_timeout: Duration,
}

pub(crate) async fn accept<M: RawStateMachine + Send + 'static>(
    listener: TcpListener,
    accepting: Accepting<M>,
    inputs: mpsc::Sender<Input<M>>,
    mut stop: watch::Receiver<bool>,
) {
    let limits = accepting.limits;
    let accepting = Arc::new(accepting);
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
                        if refused.is_multiple_of(1_000) {
                            tracing::warn!(%addr, limit = limits.max_connections, refused = refused + 1, "too many connections; closing new ones");
                        }
                        refused += 1;
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    next_conn += 1;
                    let connection = connection(stream, addr, Arc::clone(&accepting), next_conn, inputs.clone(), stop.clone());
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
async fn read_frame(framed: &mut FramedStream) -> Result<Option<Bytes>, std::io::Error> {
    match framed.next().await {
        None => Ok(None),
        Some(Ok(frame)) => Ok(Some(frame.freeze())),
        Some(Err(error)) => Err(error),
    }
}

/// Whether a read error is the connection going away (reset by the other
/// side or something in between, aborted, or ended mid-frame) rather than
/// bytes that break the protocol: the first is what networks do, the
/// second a bug or a stranger.
pub(crate) fn connection_lost(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe
        | ErrorKind::UnexpectedEof
        | ErrorKind::TimedOut
        | ErrorKind::NotConnected => true,
        // The codec's "bytes remaining on stream": the connection ended
        // inside a frame.
        ErrorKind::Other => error.to_string().contains("bytes remaining on stream"),
        _ => false,
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
        Err(error) if connection_lost(&error) => {
            tracing::debug!(%addr, %error, "connection lost ({what})");
            None
        }
        Err(error) => {
            tracing::error!(%addr, %error, "bad frame ({what}); closing the connection");
            None
        }
    }
}

async fn connection<M: RawStateMachine + Send + 'static>(
    stream: TcpStream,
    addr: SocketAddr,
    accepting: Arc<Accepting<M>>,
    conn: ConnectionId,
    inputs: mpsc::Sender<Input<M>>,
    mut stop: watch::Receiver<bool>,
) {
    // The TLS handshake and the hello share the hello timeout.
    let hello_by = tokio::time::Instant::now() + accepting.limits.hello_timeout;
    let stream = tokio::select! {
        _ = stop.changed() => return,
        _ = tokio::time::sleep_until(hello_by) => {
            if accepting.tls.is_some() {
                tracing::warn!(%addr, "no TLS handshake in time; closing the connection");
            } else {
                tracing::warn!(%addr, "no hello in time; closing the connection");
            }
            return;
        }
        stream = open_stream(stream, accepting.tls.as_ref()) => stream,
    };
    let stream = match stream {
        Ok(stream) => stream,
        Err(error)
            if accepting.tls.is_some() || error.kind() == std::io::ErrorKind::InvalidData =>
        {
            accepting.stats.tls_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%addr, %error, "TLS handshake failed; closing the connection");
            return;
        }
        Err(error) => {
            tracing::debug!(%addr, %error, "connection failed before its hello");
            return;
        }
    };
    let mut framed = framed(stream);
    let hello = tokio::select! {
        _ = stop.changed() => return,
        _ = tokio::time::sleep_until(hello_by) => {
            tracing::warn!(%addr, "no hello in time; closing the connection");
            return;
        }
        hello = read_message::<Hello>(&mut framed, addr, "hello") => hello,
    };
    match hello {
        None => {}
        Some(Hello::Peer {
            cluster,
            id: from,
            settings,
        }) => {
            let refusal = {
                let policy = accepting.policy.borrow();
                policy
                    .refusal(cluster, from)
                    .or_else(|| policy.settings_refusal(&settings))
            };
            // With TLS, a peer proves it is one of the cluster's servers by
            // a certificate the CA signed (verified at the handshake).
            let refusal = match &accepting.tls {
                Some(_) if !framed.get_ref().peer_verified() => {
                    accepting.stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                    Some("this server runs TLS and a peer must present a certificate signed by the cluster's CA; the caller presented none".to_string())
                }
                _ => refusal,
            };
            if let Some(reason) = refusal {
                accepting
                    .stats
                    .peers_refused
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%addr, peer = from, %reason, "refused a peer connection");
                let _ = framed
                    .send(encode_frame(&PeerAnswer::Refused(reason)))
                    .await;
                return;
            }
            if framed
                .send(encode_frame(&PeerAnswer::Accepted))
                .await
                .is_err()
            {
                return;
            }
            let mut policy = accepting.policy.clone();
            loop {
                let message = tokio::select! {
                    _ = stop.changed() => return,
                    changed = policy.changed() => {
                        let refusal = changed.ok().and_then(|()| policy.borrow().refusal(cluster, from));
                        if let Some(reason) = refusal {
                            // It reconnects, and is told why at its hello.
                            tracing::info!(%addr, peer = from, %reason, "closing the connection of a peer no longer a member");
                            return;
                        }
                        continue;
                    }
                    message = read_message::<Message>(&mut framed, addr, "peer message") => message,
                };
                let Some(message) = message else { return };
                if message.from.0 != from {
                    let dropped = accepting.stats.wrong_sender.fetch_add(1, Ordering::Relaxed);
                    if dropped.is_multiple_of(1_000) {
                        tracing::warn!(%addr, hello = from, from = ?message.from, dropped = dropped + 1, "peer message from another server than its hello said; dropped");
                    }
                    continue;
                }
                if inputs.send(Input::Peer(message)).await.is_err() {
                    return;
                }
            }
        }
        Some(Hello::Client) => {
            let (tx, mut rx) = mpsc::channel(CLIENT_QUEUE);
            if inputs.send(Input::ClientOpen(conn, tx)).await.is_err() {
                return;
            }
            let hello_reply = accepting.hello.borrow().clone();
            if framed.send(hello_reply).await.is_ok() {
                client_loop(&mut framed, addr, conn, &inputs, &mut rx, &mut stop).await;
            }
            let _ = inputs.send(Input::ClientClosed(conn)).await;
        }
        Some(Hello::Admin) => loop {
            let request = tokio::select! {
                _ = stop.changed() => return,
                request = read_message::<AdminRequest>(&mut framed, addr, "admin request") => request,
            };
            let Some(request) = request else { return };
            tracing::info!(%addr, ?request, "admin request");
            let response = tokio::select! {
                _ = stop.changed() => return,
                response = accepting.admin.handle(request) => response,
            };
            if framed.send(encode_frame(&response)).await.is_err() {
                return;
            }
        },
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

/// The accepted connection, after the TLS handshake if this server runs
/// TLS. A server without TLS refuses a connection that opens one, saying
/// so (it would otherwise read the handshake as an oversized frame).
async fn open_stream(stream: TcpStream, tls: Option<&ServerTls>) -> std::io::Result<Stream> {
    match tls {
        Some(tls) => tls.accept(stream).await,
        None => {
            let mut first = [0u8; 1];
            if stream.peek(&mut first).await? == 1 && first[0] == 0x16 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the connection starts a TLS handshake, but this server is not configured for TLS",
                ));
            }
            Ok(Stream::Plain(stream))
        }
    }
}

/// Who a peer sender connects to, and as whom.
pub(crate) struct PeerLink {
    pub(crate) id: NodeId,
    pub(crate) cluster: u64,
    pub(crate) peer: NodeId,
    pub(crate) address: String,
    pub(crate) settings: Vec<(String, u64)>,
    /// The local IP to connect from: the listen IP when it is a specific
    /// address, so peers see this server under one address.
    pub(crate) source: Option<std::net::IpAddr>,
    /// TLS to the peer (verifying it, presenting this server's
    /// certificate), when this server runs TLS.
    pub(crate) tls: Option<ClientTls>,
}

/// A TLS failure (a certificate refused by either side) is a refusal, not
/// a peer that is down: it is logged as a warning.
fn io_failure(link: &PeerLink, error: std::io::Error) -> PeerFailure {
    if link.tls.is_some() && error.kind() == std::io::ErrorKind::InvalidData {
        PeerFailure::Tls(error.to_string())
    } else {
        PeerFailure::Unreachable(error.to_string())
    }
}

/// Resolve, connect and say hello to the peer; `Err` with a reason to log.
async fn open_peer(link: &PeerLink) -> Result<FramedStream, PeerFailure> {
    let addrs = copycat_net::resolve(&link.address)
        .await
        .map_err(|e| PeerFailure::Unreachable(format!("cannot resolve: {e}")))?;
    let stream = copycat_net::connect_from(link.source, addrs[0])
        .await
        .map_err(|e| PeerFailure::Unreachable(e.to_string()))?;
    let stream = copycat_net::tls::client_stream(link.tls.as_ref(), &link.address, stream)
        .await
        .map_err(|e| io_failure(link, e))?;
    let mut framed = framed(stream);
    let hello = Hello::Peer {
        cluster: link.cluster,
        id: link.id.0,
        settings: link.settings.clone(),
    };
    framed
        .send(encode_frame(&hello))
        .await
        .map_err(|e| io_failure(link, e))?;
    let answer = tokio::time::timeout(PEER_ANSWER_TIMEOUT, framed.next())
        .await
        .map_err(|_| PeerFailure::Unreachable("no answer to the hello".into()))?;
    let frame = match answer {
        Some(Ok(frame)) => frame,
        Some(Err(error)) => return Err(io_failure(link, error)),
        None => return Err(PeerFailure::Unreachable("closed during the hello".into())),
    };
    match decode_frame::<PeerAnswer>(&frame) {
        Ok(PeerAnswer::Accepted) => Ok(framed),
        Ok(PeerAnswer::Refused(reason)) => Err(PeerFailure::Refused(reason)),
        Err(error) => Err(PeerFailure::Refused(format!(
            "undecodable answer to the hello (not a Copycat server of this version?): {error}"
        ))),
    }
}

enum PeerFailure {
    Unreachable(String),
    Refused(String),
    /// The TLS handshake failed: the peer's certificate did not verify
    /// here, or it refused this server's (an alert).
    Tls(String),
}

/// Keeps a connection to one peer and sends it what the owner queues. Ends
/// when the queue's sender is dropped or the server stops.
pub(crate) async fn peer_sender(
    link: PeerLink,
    mut rx: mpsc::Receiver<Message>,
    mut stop: watch::Receiver<bool>,
    stats: Arc<NetStats>,
) {
    let PeerLink { peer, .. } = link;
    let mut backoff = Backoff::default();
    let mut last_refusal: Option<(String, Instant)> = None;
    loop {
        let opened = tokio::select! {
            _ = stop.changed() => return,
            opened = open_peer(&link) => opened,
        };
        if rx.is_closed() {
            return;
        }
        let mut framed = match opened {
            Ok(framed) => framed,
            Err(failure) => {
                let tls = matches!(failure, PeerFailure::Tls(_));
                match failure {
                    PeerFailure::Unreachable(error) => {
                        tracing::debug!(?peer, address = %link.address, %error, "cannot reach peer; retrying");
                    }
                    PeerFailure::Refused(reason) | PeerFailure::Tls(reason) => {
                        stats.refused_by_peers.fetch_add(1, Ordering::Relaxed);
                        let repeat = matches!(&last_refusal, Some((r, at)) if *r == reason && at.elapsed() < REFUSAL_LOG_INTERVAL);
                        if !repeat {
                            if tls {
                                tracing::warn!(?peer, address = %link.address, error = %reason, "TLS with the peer failed (a certificate the CA did not sign, or one that does not name the peer's address, on either side)");
                            } else {
                                tracing::warn!(?peer, address = %link.address, %reason, "peer refused this server");
                            }
                            last_refusal = Some((reason, Instant::now()));
                        }
                    }
                }
                // Messages queued meanwhile are stale: drop them.
                while rx.try_recv().is_ok() {}
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
                continue;
            }
        };
        backoff.reset();
        last_refusal = None;
        tracing::debug!(?peer, address = %link.address, "connected to peer");
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
                tracing::debug!(?peer, address = %link.address, "peer connection lost; reconnecting");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (TcpStream, FramedStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, framed(Stream::Plain(server)))
    }

    #[tokio::test]
    async fn a_reset_or_a_cut_frame_is_a_lost_connection_not_a_bad_frame() {
        // Reset (SO_LINGER 0, as a proxy or a middlebox resets it).
        let (client, mut server) = pair().await;
        client.set_zero_linger().unwrap();
        drop(client);
        let error = read_frame(&mut server).await.unwrap_err();
        assert!(connection_lost(&error), "{error:?}");
        // Ended in the middle of a frame.
        let (mut client, mut server) = pair().await;
        client.write_all(&[0, 0, 0, 10, 1, 2]).await.unwrap();
        drop(client);
        let error = read_frame(&mut server).await.unwrap_err();
        assert!(connection_lost(&error), "{error:?}");
        // A length over the limit is a protocol error.
        let (mut client, mut server) = pair().await;
        client.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
        let error = read_frame(&mut server).await.unwrap_err();
        assert!(!connection_lost(&error), "{error:?}");
    }
}
