//! A fault-injecting TCP proxy between the servers.
//!
//! Each server advertises an address of the proxy ([`crate::cluster::proxy_addr`])
//! instead of the one it listens on, so every peer connection goes through
//! the proxy: one listener per destination server, which tells the source
//! server by the connection's first frame (the peer hello names its id).
//! Member addresses live in the replicated configuration, the same for
//! every server, so a listener per destination (demultiplexed by the
//! hello) is what gives every ordered pair (A→B) a link of its own.
//!
//! A peer connection carries Raft messages one way only (B answers on its
//! own connection to A), as length-prefixed frames (a big-endian `u32`
//! length, then that many bytes; `docs/protocol.md`). The proxy reads whole
//! frames and applies the faults of the link to each: a delay (fixed plus
//! jitter, order kept), retransmission stalls (what packet loss costs a TCP
//! stream), duplication and reordering of whole frames. It can also drop a
//! link (existing connections are reset; new ones are accepted and what
//! they send is discarded, until the link heals, when they are reset too,
//! so that no connection ever delivers a stream with a gap in it) and reset
//! connections (both sides get an RST), once or every so often. The first
//! frame (the hello) and the answer to it pass untouched.
//!
//! Connections that are not a peer's (clients, admin calls that follow a
//! member address) are forwarded byte for byte without faults.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use copycat_proto::{decode_frame, Hello, MAX_FRAME_BYTES};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a connection may take to send its first frame.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// A frame held back to be reordered goes out after the next frame, or
/// after this long if none comes.
pub const REORDER_HOLD: Duration = Duration::from_millis(40);
/// What one lost packet costs a TCP stream on loopback: the minimum
/// retransmission timeout (doubling for each further loss of the same
/// packet).
const RETRANSMISSION: Duration = Duration::from_millis(200);

/// The faults of one directed link (from one server to another).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkFaults {
    /// Nothing gets through (a partition).
    pub drop: bool,
    /// Each frame is stalled, with this probability, by a retransmission
    /// timeout (again with the same probability, twice as long): what a
    /// share of lost packets does to a TCP stream. Order is kept.
    pub loss: f64,
    /// Every frame is held this long...
    pub delay: Duration,
    /// ... plus a uniformly random share of this (order is kept: a frame
    /// never overtakes the one before it unless it is reordered).
    pub jitter: Duration,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// Probability that a frame is held back and delivered after the next.
    pub reorder: f64,
    /// Reset the link's connections about this often (between half and
    /// one and a half times it).
    pub reset_every: Option<Duration>,
}

impl LinkFaults {
    /// Whether any fault is set.
    pub fn any(&self) -> bool {
        *self != LinkFaults::default()
    }

    /// Clear the partition faults (drop, loss).
    pub fn clear_partition(&mut self) {
        self.drop = false;
        self.loss = 0.0;
    }

    /// Clear the link faults (delay, duplication, reordering, resets).
    pub fn clear_link(&mut self) {
        let LinkFaults { drop, loss, .. } = *self;
        *self = LinkFaults {
            drop,
            loss,
            ..LinkFaults::default()
        };
    }
}

/// What the proxy did since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Peer connections accepted.
    pub peer_connections: u64,
    /// Other connections (clients, admin calls) forwarded untouched.
    pub other_connections: u64,
    /// Frames forwarded on peer connections (duplicates counted once).
    pub frames: u64,
    /// Frames held by a delay or a retransmission stall.
    pub delayed: u64,
    /// Frames delivered a second time.
    pub duplicated: u64,
    /// Frames delivered after the one that followed them.
    pub reordered: u64,
    /// Frames discarded on a dropped link.
    pub discarded: u64,
    /// Connections reset (both sides).
    pub resets: u64,
}

#[derive(Default)]
struct Counters {
    peer_connections: AtomicU64,
    other_connections: AtomicU64,
    frames: AtomicU64,
    delayed: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    discarded: AtomicU64,
    resets: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct Link {
    faults: LinkFaults,
    /// Bumped to reset every connection of the link.
    resets: watch::Sender<u64>,
    next_reset: Option<Instant>,
}

impl Link {
    fn new() -> Self {
        Self {
            faults: LinkFaults::default(),
            resets: watch::channel(0).0,
            next_reset: None,
        }
    }

    fn reset(&self) {
        self.resets.send_modify(|n| *n += 1);
    }
}

/// The local address to connect to a server from, as server `from` (so
/// that packet filters on server addresses cut the proxied leg too).
pub type SourceIp = Arc<dyn Fn(u64) -> Option<IpAddr> + Send + Sync>;

struct Inner {
    links: Mutex<BTreeMap<(u64, u64), Link>>,
    counters: Counters,
    rng: Mutex<ChaCha8Rng>,
    shutdown: watch::Sender<bool>,
    source: SourceIp,
}

impl Inner {
    fn link<T>(&self, from: u64, to: u64, f: impl FnOnce(&mut Link) -> T) -> T {
        let mut links = self.links.lock().expect("links");
        f(links.entry((from, to)).or_insert_with(Link::new))
    }

    fn faults(&self, from: u64, to: u64) -> LinkFaults {
        self.link(from, to, |link| link.faults.clone())
    }

    fn connection_rng(&self) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(self.rng.lock().expect("rng").gen())
    }
}

/// Where one listener of the proxy forwards to.
#[derive(Clone, Debug)]
pub struct Route {
    /// The destination server.
    pub to: u64,
    /// Where the proxy listens for connections to it.
    pub listen: SocketAddr,
    /// Where the server itself listens.
    pub upstream: SocketAddr,
}

/// The running proxy; dropping it stops every listener and connection.
pub struct Proxy {
    inner: Arc<Inner>,
    addresses: BTreeMap<u64, SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Bind a listener for every route and start forwarding. `source`
    /// names the local IP to reach a server from on behalf of peer `from`.
    pub async fn start(routes: &[Route], source: SourceIp, seed: u64) -> io::Result<Proxy> {
        let inner = Arc::new(Inner {
            links: Mutex::new(BTreeMap::new()),
            counters: Counters::default(),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            shutdown: watch::channel(false).0,
            source,
        });
        let mut tasks = Vec::new();
        let mut addresses = BTreeMap::new();
        for route in routes {
            let listener = TcpListener::bind(route.listen).await.map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("proxy cannot listen on {}: {error}", route.listen),
                )
            })?;
            addresses.insert(route.to, listener.local_addr()?);
            tasks.push(tokio::spawn(serve(
                inner.clone(),
                route.to,
                listener,
                route.upstream,
            )));
        }
        tasks.push(tokio::spawn(resetter(inner.clone())));
        Ok(Proxy {
            inner,
            addresses,
            tasks,
        })
    }

    /// Where the proxy listens for connections to server `to`.
    pub fn address(&self, to: u64) -> Option<SocketAddr> {
        self.addresses.get(&to).copied()
    }

    /// Change the faults of link `from` → `to`. Dropping a link, and
    /// healing a dropped one, resets its connections.
    pub fn set(&self, from: u64, to: u64, change: impl FnOnce(&mut LinkFaults)) {
        self.inner.link(from, to, |link| {
            let was_dropped = link.faults.drop;
            change(&mut link.faults);
            if link.faults.drop != was_dropped {
                link.reset();
            }
            if link.faults.reset_every.is_none() {
                link.next_reset = None;
            }
        });
    }

    /// The faults of link `from` → `to`.
    pub fn faults(&self, from: u64, to: u64) -> LinkFaults {
        self.inner.faults(from, to)
    }

    /// Reset every connection of link `from` → `to` now (both sides get an
    /// RST).
    pub fn reset(&self, from: u64, to: u64) {
        self.inner.link(from, to, |link| link.reset());
    }

    fn each(&self, change: impl Fn(&mut LinkFaults)) {
        let keys: Vec<(u64, u64)> = self
            .inner
            .links
            .lock()
            .expect("links")
            .keys()
            .copied()
            .collect();
        for (from, to) in keys {
            self.set(from, to, &change);
        }
    }

    /// Heal every partition (drops and losses) on every link.
    pub fn heal_partitions(&self) {
        self.each(LinkFaults::clear_partition);
    }

    /// Heal every link fault (delays, duplication, reordering, resets).
    pub fn heal_links(&self) {
        self.each(LinkFaults::clear_link);
    }

    /// What the proxy did so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.inner.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ProxyStats {
            peer_connections: get(&c.peer_connections),
            other_connections: get(&c.other_connections),
            frames: get(&c.frames),
            delayed: get(&c.delayed),
            duplicated: get(&c.duplicated),
            reordered: get(&c.reordered),
            discarded: get(&c.discarded),
            resets: get(&c.resets),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.inner.shutdown.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Resets the connections of links with `reset_every` set, each after a
/// random share of it.
async fn resetter(inner: Arc<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = Instant::now();
        let mut links = inner.links.lock().expect("links");
        let mut rng = inner.rng.lock().expect("rng");
        for link in links.values_mut() {
            let Some(every) = link.faults.reset_every else {
                continue;
            };
            let mut draw = || every.mul_f64(rng.gen_range(0.5..1.5));
            match link.next_reset {
                None => link.next_reset = Some(now + draw()),
                Some(at) if at <= now => {
                    link.reset();
                    link.next_reset = Some(now + draw());
                }
                Some(_) => {}
            }
        }
    }
}

async fn serve(inner: Arc<Inner>, to: u64, listener: TcpListener, upstream: SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let inner = inner.clone();
                tokio::spawn(async move {
                    let mut shutdown = inner.shutdown.subscribe();
                    tokio::select! {
                        _ = shutdown.wait_for(|stop| *stop) => {}
                        _ = connection(inner.clone(), to, stream, upstream) => {}
                    }
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Read one frame (its length prefix included); `None` at a clean end of
/// the stream.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<Bytes>> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = reader.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {MAX_FRAME_BYTES}"),
        ));
    }
    let mut frame = vec![0u8; 4 + len];
    frame[..4].copy_from_slice(&prefix);
    reader.read_exact(&mut frame[4..]).await?;
    Ok(Some(Bytes::from(frame)))
}

/// Close `stream` with an RST.
fn abort(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn connection(inner: Arc<Inner>, to: u64, mut down: TcpStream, upstream: SocketAddr) {
    let _ = down.set_nodelay(true);
    let first = match tokio::time::timeout(FIRST_FRAME_TIMEOUT, read_frame(&mut down)).await {
        Ok(Ok(Some(first))) => first,
        _ => return,
    };
    match decode_frame::<Hello>(&first[4..]) {
        Ok(Hello::Peer { id: from, .. }) => peer(inner, from, to, down, first, upstream).await,
        _ => {
            bump(&inner.counters.other_connections);
            let Ok(mut up) = copycat_net::connect(upstream).await else {
                return;
            };
            if up.write_all(&first).await.is_ok() {
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            }
        }
    }
}

async fn peer(
    inner: Arc<Inner>,
    from: u64,
    to: u64,
    mut down: TcpStream,
    first: Bytes,
    upstream: SocketAddr,
) {
    bump(&inner.counters.peer_connections);
    let mut resets = inner.link(from, to, |link| link.resets.subscribe());
    resets.mark_unchanged();
    if inner.faults(from, to).drop {
        // Accept and discard: the caller waits for an answer that never
        // comes, as behind a firewall that drops.
        bump(&inner.counters.discarded);
        tokio::select! {
            _ = resets.changed() => {}
            _ = discard(&inner, &mut down) => {}
        }
        bump(&inner.counters.resets);
        abort(&down);
        return;
    }
    let source = (inner.source)(from);
    let mut up = match copycat_net::connect_from(source, upstream).await {
        Ok(up) => up,
        Err(_) => return,
    };
    if up.write_all(&first).await.is_err() {
        return;
    }
    let reset = {
        let (down_read, mut down_write) = down.split();
        let (mut up_read, mut up_write) = up.split();
        let rng = inner.connection_rng();
        tokio::select! {
            _ = resets.changed() => true,
            _ = forward(&inner, from, to, rng, down_read, &mut up_write) => false,
            // The answer to the hello, and the end of the stream.
            _ = tokio::io::copy(&mut up_read, &mut down_write) => false,
        }
    };
    if reset {
        bump(&inner.counters.resets);
        abort(&down);
        abort(&up);
    }
}

async fn discard(inner: &Inner, stream: &mut TcpStream) {
    let mut reader = tokio::io::BufReader::new(stream);
    while let Ok(Some(_)) = read_frame(&mut reader).await {
        bump(&inner.counters.discarded);
    }
}

/// Forward frames from `reader` to `writer` with the link's faults, until
/// the reader's stream ends (everything still held is delivered first) or
/// either side fails.
async fn forward<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    inner: &Inner,
    from: u64,
    to: u64,
    rng: ChaCha8Rng,
    reader: R,
    writer: &mut W,
) -> io::Result<()> {
    let (frames_tx, frames_rx) = mpsc::channel::<Bytes>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<(Instant, Bytes)>(256);
    let read = async move {
        let mut reader = tokio::io::BufReader::new(reader);
        while let Some(frame) = read_frame(&mut reader).await? {
            if frames_tx.send(frame).await.is_err() {
                break;
            }
        }
        Ok::<(), io::Error>(())
    };
    let shape = shape(inner, from, to, rng, frames_rx, out_tx);
    let write = async move {
        let mut buffer = Vec::new();
        while let Some((at, frame)) = out_rx.recv().await {
            tokio::time::sleep_until(at).await;
            buffer.clear();
            buffer.extend_from_slice(&frame);
            // Whatever else is due goes out in the same write.
            while let Ok((at, frame)) = out_rx.try_recv() {
                if at > Instant::now() {
                    writer.write_all(&buffer).await?;
                    buffer.clear();
                    tokio::time::sleep_until(at).await;
                }
                buffer.extend_from_slice(&frame);
            }
            writer.write_all(&buffer).await?;
        }
        Ok::<(), io::Error>(())
    };
    tokio::try_join!(read, shape, write).map(|_| ())
}

/// Decide when each frame goes out: delay, stalls, duplicates, reordering.
async fn shape(
    inner: &Inner,
    from: u64,
    to: u64,
    mut rng: ChaCha8Rng,
    mut frames: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<(Instant, Bytes)>,
) -> io::Result<()> {
    let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "the writer stopped");
    let counters = &inner.counters;
    let mut last = Instant::now();
    let mut held: Option<(Bytes, Instant)> = None;
    loop {
        let next = match &held {
            Some((_, until)) => {
                let until = *until;
                tokio::select! {
                    frame = frames.recv() => frame,
                    _ = tokio::time::sleep_until(until) => {
                        let (frame, _) = held.take().expect("held");
                        last = last.max(Instant::now());
                        out.send((last, frame)).await.map_err(|_| closed())?;
                        continue;
                    }
                }
            }
            None => frames.recv().await,
        };
        let Some(frame) = next else {
            if let Some((frame, _)) = held.take() {
                out.send((last, frame)).await.map_err(|_| closed())?;
            }
            return Ok(());
        };
        bump(&counters.frames);
        let faults = inner.faults(from, to);
        let now = Instant::now();
        let mut at = now + faults.delay;
        if !faults.jitter.is_zero() {
            at += faults.jitter.mul_f64(rng.gen_range(0.0..1.0));
        }
        let mut stall = RETRANSMISSION;
        for _ in 0..4 {
            if faults.loss <= 0.0 || !rng.gen_bool(faults.loss.min(1.0)) {
                break;
            }
            at += stall;
            stall *= 2;
        }
        if at > now {
            bump(&counters.delayed);
        }
        at = at.max(last);
        last = at;
        if held.is_none() && faults.reorder > 0.0 && rng.gen_bool(faults.reorder.min(1.0)) {
            held = Some((frame, now + faults.delay + faults.jitter + REORDER_HOLD));
            continue;
        }
        let twice = faults.duplicate > 0.0 && rng.gen_bool(faults.duplicate.min(1.0));
        out.send((at, frame.clone())).await.map_err(|_| closed())?;
        if twice {
            bump(&counters.duplicated);
            out.send((at, frame)).await.map_err(|_| closed())?;
        }
        if let Some((frame, _)) = held.take() {
            bump(&counters.reordered);
            out.send((at, frame)).await.map_err(|_| closed())?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use copycat_proto::encode_frame;

    /// A proxy in front of one listener standing for server 2, with peer 1
    /// connected through it (its hello sent, the upstream side accepted).
    struct Setup {
        proxy: Proxy,
        client: TcpStream,
        server: TcpStream,
    }

    async fn setup(faults: LinkFaults) -> Setup {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let routes = [Route {
            to: 2,
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: upstream.local_addr().unwrap(),
        }];
        let proxy = Proxy::start(&routes, Arc::new(|_| None), 7).await.unwrap();
        proxy.set(1, 2, |f| *f = faults);
        let mut client = TcpStream::connect(proxy.address(2).unwrap()).await.unwrap();
        client.write_all(&hello(1)).await.unwrap();
        let (mut server, _) = tokio::time::timeout(Duration::from_secs(5), upstream.accept())
            .await
            .expect("the proxy connects upstream")
            .unwrap();
        let first = read_frame(&mut server).await.unwrap().unwrap();
        assert_eq!(first, hello(1), "the hello passes untouched");
        Setup {
            proxy,
            client,
            server,
        }
    }

    fn hello(id: u64) -> Bytes {
        framed(&encode_frame(&Hello::Peer {
            cluster: 9,
            id,
            settings: vec![],
        }))
    }

    fn framed(body: &[u8]) -> Bytes {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        Bytes::from(frame)
    }

    /// Frame `i`: its number and some bytes (lengths vary, up to 70 KB, so
    /// frames span several reads).
    fn numbered(i: u32) -> Bytes {
        let mut body = i.to_be_bytes().to_vec();
        body.extend(std::iter::repeat_n(
            (i % 251) as u8,
            (i as usize * 977) % 70_000,
        ));
        framed(&body)
    }

    async fn send_all(client: &mut TcpStream, n: u32) {
        let mut bytes = Vec::new();
        for i in 0..n {
            bytes.extend_from_slice(&numbered(i));
        }
        client.write_all(&bytes).await.unwrap();
    }

    /// Read frames until `n` arrived or nothing came for `quiet`; each
    /// must be whole (one of those sent); their numbers in arrival order.
    async fn receive(server: &mut TcpStream, n: usize, quiet: Duration) -> Vec<u32> {
        let mut got = Vec::new();
        while got.len() < n {
            match tokio::time::timeout(quiet, read_frame(server)).await {
                Ok(Ok(Some(frame))) => {
                    let i = u32::from_be_bytes(frame[4..8].try_into().unwrap());
                    assert_eq!(frame, numbered(i), "frame {i} arrived whole");
                    got.push(i);
                }
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
            }
        }
        got
    }

    #[tokio::test]
    async fn without_faults_frames_arrive_whole_in_order() {
        let mut s = setup(LinkFaults::default()).await;
        send_all(&mut s.client, 200).await;
        let got = receive(&mut s.server, 200, Duration::from_secs(5)).await;
        assert_eq!(got, (0..200).collect::<Vec<_>>());
        assert_eq!(s.proxy.stats().frames, 200);
    }

    #[tokio::test]
    async fn delayed_frames_arrive_whole_in_order_after_the_delay() {
        let mut s = setup(LinkFaults {
            delay: Duration::from_millis(150),
            jitter: Duration::from_millis(50),
            ..LinkFaults::default()
        })
        .await;
        let started = std::time::Instant::now();
        send_all(&mut s.client, 50).await;
        let got = receive(&mut s.server, 50, Duration::from_secs(5)).await;
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(got, (0..50).collect::<Vec<_>>());
        assert_eq!(s.proxy.stats().delayed, 50);
    }

    #[tokio::test]
    async fn duplicated_frames_arrive_whole_twice() {
        let mut s = setup(LinkFaults {
            duplicate: 0.5,
            ..LinkFaults::default()
        })
        .await;
        send_all(&mut s.client, 200).await;
        let got = receive(&mut s.server, 1000, Duration::from_millis(500)).await;
        let duplicated = s.proxy.stats().duplicated as usize;
        assert!(duplicated > 50 && duplicated < 150, "{duplicated}");
        assert_eq!(got.len(), 200 + duplicated);
        let mut distinct = got.clone();
        distinct.dedup();
        assert_eq!(
            distinct,
            (0..200).collect::<Vec<_>>(),
            "each once or twice, in order"
        );
    }

    #[tokio::test]
    async fn reordered_frames_arrive_whole_out_of_order_none_lost() {
        let mut s = setup(LinkFaults {
            reorder: 0.3,
            ..LinkFaults::default()
        })
        .await;
        send_all(&mut s.client, 200).await;
        let got = receive(&mut s.server, 200, Duration::from_secs(2)).await;
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, (0..200).collect::<Vec<_>>(), "every frame once");
        let swapped = got.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(swapped > 20, "{swapped} out of order: {got:?}");
        assert_eq!(s.proxy.stats().reordered as usize, swapped);
    }

    #[tokio::test]
    async fn a_reset_closes_both_sides() {
        let mut s = setup(LinkFaults::default()).await;
        send_all(&mut s.client, 3).await;
        assert_eq!(
            receive(&mut s.server, 3, Duration::from_secs(5)).await,
            [0, 1, 2]
        );
        s.proxy.reset(1, 2);
        let mut buffer = [0u8; 16];
        let upstream = tokio::time::timeout(Duration::from_secs(5), s.server.read(&mut buffer))
            .await
            .expect("the server side closes");
        assert!(
            matches!(&upstream, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "{upstream:?}"
        );
        let downstream = tokio::time::timeout(Duration::from_secs(5), s.client.read(&mut buffer))
            .await
            .expect("the caller's side closes");
        assert!(
            matches!(&downstream, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "{downstream:?}"
        );
        assert_eq!(s.proxy.stats().resets, 1);
    }

    #[tokio::test]
    async fn connections_of_a_link_with_reset_every_are_reset() {
        let s = setup(LinkFaults::default()).await;
        let mut client = s.client;
        s.proxy
            .set(1, 2, |f| f.reset_every = Some(Duration::from_millis(100)));
        let mut buffer = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buffer))
            .await
            .expect("reset within the period");
        assert!(
            read.is_err() || read.as_ref().is_ok_and(|n| *n == 0),
            "{read:?}"
        );
        assert!(s.proxy.stats().resets >= 1);
    }

    #[tokio::test]
    async fn a_dropped_link_forwards_nothing_and_heals() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let routes = [Route {
            to: 2,
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: upstream.local_addr().unwrap(),
        }];
        let proxy = Proxy::start(&routes, Arc::new(|_| None), 7).await.unwrap();
        proxy.set(1, 2, |f| f.drop = true);
        let mut client = TcpStream::connect(proxy.address(2).unwrap()).await.unwrap();
        client.write_all(&hello(1)).await.unwrap();
        send_all(&mut client, 20).await;
        // Nothing reaches the server, not even a connection.
        assert!(
            tokio::time::timeout(Duration::from_millis(500), upstream.accept())
                .await
                .is_err(),
            "a dropped link connected upstream"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(proxy.stats().discarded, 21);
        assert_eq!(proxy.stats().frames, 0);
        // Another link to the same server is not affected.
        let mut other = TcpStream::connect(proxy.address(2).unwrap()).await.unwrap();
        other.write_all(&hello(3)).await.unwrap();
        let (mut server, _) = upstream.accept().await.unwrap();
        assert_eq!(read_frame(&mut server).await.unwrap().unwrap(), hello(3));
        // The heal resets the silenced connection, so no stream resumes
        // with a gap; a new one goes through.
        proxy.set(1, 2, LinkFaults::clear_partition);
        let mut buffer = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buffer))
            .await
            .expect("closed at the heal");
        assert!(closed.is_err() || closed.is_ok_and(|n| n == 0));
        let mut again = TcpStream::connect(proxy.address(2).unwrap()).await.unwrap();
        again.write_all(&hello(1)).await.unwrap();
        send_all(&mut again, 5).await;
        let (mut server, _) = upstream.accept().await.unwrap();
        assert_eq!(read_frame(&mut server).await.unwrap().unwrap(), hello(1));
        assert_eq!(
            receive(&mut server, 5, Duration::from_secs(5)).await,
            [0, 1, 2, 3, 4]
        );
    }

    #[tokio::test]
    async fn dropping_a_connected_link_resets_it() {
        let mut s = setup(LinkFaults::default()).await;
        s.proxy.set(1, 2, |f| f.drop = true);
        let mut buffer = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), s.server.read(&mut buffer))
            .await
            .expect("the server side closes");
        assert!(read.is_err(), "{read:?}");
    }

    #[tokio::test]
    async fn loss_stalls_frames_in_order() {
        let mut s = setup(LinkFaults {
            loss: 0.5,
            ..LinkFaults::default()
        })
        .await;
        let started = std::time::Instant::now();
        send_all(&mut s.client, 20).await;
        let got = receive(&mut s.server, 20, Duration::from_secs(10)).await;
        assert_eq!(got, (0..20).collect::<Vec<_>>());
        assert!(
            started.elapsed() >= RETRANSMISSION,
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn other_connections_pass_through_untouched() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let routes = [Route {
            to: 2,
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: upstream.local_addr().unwrap(),
        }];
        let proxy = Proxy::start(&routes, Arc::new(|_| None), 7).await.unwrap();
        let mut client = TcpStream::connect(proxy.address(2).unwrap()).await.unwrap();
        let hello = framed(&encode_frame(&Hello::Client));
        client.write_all(&hello).await.unwrap();
        let (mut server, _) = upstream.accept().await.unwrap();
        assert_eq!(read_frame(&mut server).await.unwrap().unwrap(), hello);
        server.write_all(b"answer").await.unwrap();
        let mut buffer = [0u8; 6];
        client.read_exact(&mut buffer).await.unwrap();
        assert_eq!(&buffer, b"answer");
        assert_eq!(proxy.stats().other_connections, 1);
    }
}
