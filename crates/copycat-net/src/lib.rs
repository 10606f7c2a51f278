//! The TCP plumbing Copycat's servers and clients share, so both sides
//! frame, reconnect and keep time the same way:
//!
//! * [`framed`]: frames behind a big-endian `u32` length, refusing frames
//!   over [`copycat_proto::MAX_FRAME_BYTES`] (the connection then closes),
//!   with a read buffer that grows with the bytes received, never by a
//!   declared length alone ([`FrameCodec`]).
//! * [`Backoff`] and [`connect_retrying`]: reconnect with exponential
//!   backoff, reporting every failure to the caller.
//! * [`ticker`]: the interval that drives a deterministic core's clock.
//! * [`resolve`]: `host:port` or an IP literal to socket addresses.
//! * [`Watch`]: a value that changes over time (a server's status, a
//!   client's state), read by copy so no reader can stall the writer.
//! * [`tls`]: optional TLS on those connections ([`Stream`] is plain TCP or
//!   TLS), with mutual authentication of servers by certificate.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use copycat_proto::MAX_FRAME_BYTES;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::codec::{Decoder, Encoder, Framed};

pub mod tls;
pub use tls::{ClientTls, ServerTls, Stream, TlsError};

/// How often servers and clients tick their cores when nothing else
/// happens.
pub const TICK: Duration = Duration::from_millis(10);

/// A framed connection: whole frames in, whole frames out.
pub type FramedStream<S = Stream> = Framed<S, FrameCodec>;

/// Frame `stream`: each frame behind its length as a big-endian `u32`, at
/// most [`MAX_FRAME_BYTES`] long in either direction.
pub fn framed<S: AsyncRead + AsyncWrite>(stream: S) -> FramedStream<S> {
    Framed::new(stream, FrameCodec)
}

/// How much read buffer a frame's length may make the reader reserve ahead
/// of the bytes that actually arrived.
pub const FRAME_READ_AHEAD_BYTES: usize = 64 << 10;

/// The codec of [`framed`]: a big-endian `u32` length, then that many
/// bytes; frames over [`MAX_FRAME_BYTES`] are an error both ways.
///
/// Unlike a codec that reserves room for a whole frame as soon as it has
/// read the frame's length, the reader reserves at most
/// [`FRAME_READ_AHEAD_BYTES`] beyond what it holds: the read buffer grows
/// with the bytes that arrive (at most twice them plus that bound, as a
/// growing buffer doubles), so a peer that sends only a length declaring
/// 64 MiB, on each of many connections, makes the server hold about what
/// it sent, not 64 MiB per connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameCodec;

const LENGTH_BYTES: usize = 4;

fn too_large(len: usize, kind: io::ErrorKind) -> io::Error {
    io::Error::new(
        kind,
        format!("frame of {len} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes"),
    )
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        let Some(head) = src.get(..LENGTH_BYTES) else {
            src.reserve(LENGTH_BYTES - src.len());
            return Ok(None);
        };
        let len = u32::from_be_bytes(head.try_into().expect("four bytes")) as usize;
        if len > MAX_FRAME_BYTES {
            return Err(too_large(len, io::ErrorKind::InvalidData));
        }
        let missing = (LENGTH_BYTES + len).saturating_sub(src.len());
        if missing > 0 {
            src.reserve(missing.min(FRAME_READ_AHEAD_BYTES));
            return Ok(None);
        }
        src.advance(LENGTH_BYTES);
        Ok(Some(src.split_to(len)))
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = io::Error;

    fn encode(&mut self, frame: Bytes, dst: &mut BytesMut) -> io::Result<()> {
        if frame.len() > MAX_FRAME_BYTES {
            return Err(too_large(frame.len(), io::ErrorKind::InvalidInput));
        }
        dst.reserve(LENGTH_BYTES + frame.len());
        dst.put_u32(frame.len() as u32);
        dst.extend_from_slice(&frame);
        Ok(())
    }
}

/// An interval ticking every `period`. A tick missed (a paused process, a
/// busy thread) is not made up with a burst: the next one comes `period`
/// after the late one.
pub fn ticker(period: Duration) -> Interval {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

/// Exponential backoff between reconnection attempts: `initial`, doubling
/// up to `max`, back to `initial` after [`reset`](Self::reset).
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Backoff from `initial` up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The delay before the next attempt (and double the one after).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// A connection worked: start from `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

impl Default for Backoff {
    /// 20 ms doubling up to 1 s: what servers use for peers and clients for
    /// servers.
    fn default() -> Self {
        Self::new(Duration::from_millis(20), Duration::from_secs(1))
    }
}

/// Open a TCP connection to `addr` (with `TCP_NODELAY`), retrying after
/// each failure with `backoff`; `failed` hears every error first. Returns
/// once connected; cancel it by dropping the future.
pub async fn connect_retrying(
    addr: SocketAddr,
    backoff: &mut Backoff,
    mut failed: impl FnMut(&io::Error),
) -> TcpStream {
    loop {
        match connect(addr).await {
            Ok(stream) => return stream,
            Err(error) => {
                failed(&error);
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Open one TCP connection to `addr` with `TCP_NODELAY` set.
pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    connect_from(None, addr).await
}

/// Open one TCP connection to `addr` with `TCP_NODELAY` set, from the local
/// address `source` (any port) when it is given. Servers that listen on a
/// specific IP connect to their peers from it, so the peers (and firewall
/// rules) see every server under one address.
pub async fn connect_from(source: Option<IpAddr>, addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = match source {
        Some(ip) if ip.is_ipv4() == addr.is_ipv4() => {
            let socket = if ip.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(addr).await?
        }
        _ => TcpStream::connect(addr).await?,
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Resolve `address` (`host:port`, `ip:port` or `[ipv6]:port`) to the
/// socket addresses it names, IPv4 first.
pub async fn resolve(address: &str) -> io::Result<Vec<SocketAddr>> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host(address).await?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{address} resolves to no address"),
        ));
    }
    addrs.sort_by_key(|a| a.is_ipv6());
    addrs.dedup();
    Ok(addrs)
}

/// The latest value of something that changes (a server's status, a
/// client's state) and a way to wait for changes. Values are handed out by
/// copy: a reader never holds a lock the writer needs, so no caller can
/// stall the server or client that publishes them.
#[derive(Clone, Debug)]
pub struct Watch<T>(tokio::sync::watch::Receiver<T>);

/// The publisher of a [`Watch`] is gone (the server or client stopped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped")
    }
}

impl std::error::Error for Stopped {}

impl<T: Clone> Watch<T> {
    /// Watch `receiver`.
    pub fn new(receiver: tokio::sync::watch::Receiver<T>) -> Self {
        Self(receiver)
    }

    /// The latest value.
    pub fn get(&self) -> T {
        self.0.borrow().clone()
    }

    /// Whether the publisher is gone (no more changes will come).
    pub fn is_stopped(&self) -> bool {
        self.0.has_changed().is_err()
    }

    /// Wait for the next change and return the new value.
    pub async fn changed(&mut self) -> Result<T, Stopped> {
        self.0.changed().await.map_err(|_| Stopped)?;
        Ok(self.0.borrow_and_update().clone())
    }

    /// Wait until the value satisfies `condition` (perhaps at once) and
    /// return it.
    pub async fn wait_for(&mut self, condition: impl FnMut(&T) -> bool) -> Result<T, Stopped> {
        match self.0.wait_for(condition).await {
            Ok(value) => Ok(value.clone()),
            Err(_) => Err(Stopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(100));
        let delays: Vec<u128> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [20, 40, 80, 100, 100]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(20));
    }

    #[tokio::test]
    async fn resolve_takes_literals_and_hostnames() {
        assert_eq!(
            resolve("127.0.0.1:5700").await.unwrap(),
            vec!["127.0.0.1:5700".parse::<SocketAddr>().unwrap()]
        );
        let local = resolve("localhost:5700").await.unwrap();
        assert!(local
            .iter()
            .all(|a| a.port() == 5700 && a.ip().is_loopback()));
        assert!(resolve("no-port-here").await.is_err());
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_by_the_reader() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = tokio::spawn(async move {
            let mut stream = connect(addr).await.unwrap();
            use tokio::io::AsyncWriteExt;
            // A length just over the limit, then a little data.
            let length = (MAX_FRAME_BYTES as u32 + 1).to_be_bytes();
            stream.write_all(&length).await.unwrap();
            stream.write_all(&[0; 16]).await.unwrap();
            stream
        });
        let (stream, _) = listener.accept().await.unwrap();
        let mut framed = framed(stream);
        let read = framed.next().await.expect("an error, not the end");
        assert!(read.is_err(), "oversized frame accepted");
        drop(writer.await);
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut backoff = Backoff::default();
        let client = tokio::spawn(async move {
            let stream = connect_retrying(addr, &mut backoff, |_| {}).await;
            let mut framed = framed(stream);
            framed.send(Bytes::from_static(b"hello")).await.unwrap();
            framed.next().await.unwrap().unwrap()
        });
        let (stream, _) = listener.accept().await.unwrap();
        let mut server = framed(stream);
        let frame = server.next().await.unwrap().unwrap();
        assert_eq!(&frame[..], b"hello");
        server.send(Bytes::from_static(b"world")).await.unwrap();
        assert_eq!(&client.await.unwrap()[..], b"world");
    }
}

/// Why an admin call failed before the server answered.
#[derive(Debug)]
pub enum AdminCallError {
    /// The address did not resolve or the connection failed.
    Unreachable {
        /// The address as given.
        address: String,
        /// What went wrong.
        error: io::Error,
    },
    /// The other side answered with something that is not an admin
    /// response (not a Copycat server, or another version).
    NotCopycat {
        /// The address as given.
        address: String,
        /// What was wrong.
        detail: String,
    },
    /// No answer within the time limit.
    Timeout {
        /// The address as given.
        address: String,
        /// The limit.
        limit: Duration,
    },
}

impl std::fmt::Display for AdminCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminCallError::Unreachable { address, error } => {
                write!(f, "cannot reach {address}: {error}")
            }
            AdminCallError::NotCopycat { address, detail } => {
                write!(f, "{address} is not a Copycat server: {detail}")
            }
            AdminCallError::Timeout { address, limit } => {
                write!(f, "{address} did not answer within {limit:?}")
            }
        }
    }
}

impl std::error::Error for AdminCallError {}

/// Send one admin request to the server at `address` and wait up to
/// `limit` for its answer (on a connection of its own, closed after).
pub async fn admin_call(
    address: &str,
    request: &copycat_proto::AdminRequest,
    limit: Duration,
) -> Result<copycat_proto::AdminResponse, AdminCallError> {
    admin_call_tls(address, request, limit, None).await
}

/// [`admin_call`] over TLS when `tls` is given (to a server that serves
/// TLS), plain TCP otherwise.
pub async fn admin_call_tls(
    address: &str,
    request: &copycat_proto::AdminRequest,
    limit: Duration,
    tls: Option<&ClientTls>,
) -> Result<copycat_proto::AdminResponse, AdminCallError> {
    use futures_util::{SinkExt, StreamExt};
    let call = async {
        let unreachable = |error: io::Error| AdminCallError::Unreachable {
            address: address.to_string(),
            error,
        };
        let addrs = resolve(address).await.map_err(unreachable)?;
        let stream = connect(addrs[0]).await.map_err(unreachable)?;
        let stream = tls::client_stream(tls, address, stream)
            .await
            .map_err(unreachable)?;
        let mut framed = framed(stream);
        framed
            .feed(copycat_proto::encode_frame(&copycat_proto::Hello::Admin))
            .await
            .map_err(unreachable)?;
        framed
            .send(copycat_proto::encode_frame(request))
            .await
            .map_err(unreachable)?;
        let not_copycat = |detail: String| AdminCallError::NotCopycat {
            address: address.to_string(),
            detail,
        };
        match framed.next().await {
            None => Err(not_copycat(
                "it closed the connection without answering (a server that serves TLS closes connections without it)".into(),
            )),
            Some(Err(error)) => Err(not_copycat(format!("bad frame: {error}"))),
            Some(Ok(frame)) => copycat_proto::decode_frame(&frame)
                .map_err(|error| not_copycat(format!("undecodable answer: {error}"))),
        }
    };
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(AdminCallError::Timeout {
            address: address.to_string(),
            limit,
        })
    })
}
