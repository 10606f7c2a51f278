//! Servers whose disk fills up (writes fail with `ENOSPC`) on a real file
//! system: the server does not stop, refuses client requests with
//! `DiskFull`, the rest of the cluster keeps committing, and the server
//! catches up by itself when space returns; nothing acknowledged is lost.

mod support;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use copycat_client::{Client, Consistency};
use copycat_proto::{
    decode_frame, encode_frame, ClientError, ClientId, ClientRequest, Hello, Request, RequestId,
    ServerHello, ServerMessage,
};
use copycat_storage::{Disk, FsDisk};
use support::{Cluster, NotifierApi, NotifierCommand, NotifierQuery};
use tokio::net::TcpListener;

const TEST_DEADLINE: Duration = Duration::from_secs(120);

/// The file system, except that while `full` is set every write that
/// would store data fails with `ENOSPC` (after writing nothing, or, for a
/// write of more than 64 bytes, its first 64: a torn record).
#[derive(Debug)]
struct FillableDisk {
    inner: FsDisk,
    full: Arc<AtomicBool>,
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28)
}

impl Disk for FillableDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn create(&self, path: &Path) -> io::Result<()> {
        self.inner.create(path)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner.exists(path)
    }
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(path, offset, buf)
    }
    fn write_at(&self, path: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            if data.len() > 64 {
                self.inner.write_at(path, offset, &data[..64])?;
            }
            return Err(enospc());
        }
        self.inner.write_at(path, offset, data)
    }
    fn set_len(&self, path: &Path, len: u64) -> io::Result<()> {
        if self.full.load(Ordering::SeqCst) && len > self.inner.file_len(path)? {
            return Err(enospc());
        }
        self.inner.set_len(path, len)
    }
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        self.inner.file_len(path)
    }
    fn sync_data(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_data(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(dir)
    }
}

/// Three servers, each on a disk that can be filled.
async fn start() -> (Cluster, BTreeMap<u64, Arc<AtomicBool>>) {
    let root = tempfile::tempdir().expect("tempdir");
    let mut listeners = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    for id in 1..=3 {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        addrs.insert(id, listener.local_addr().expect("addr"));
        listeners.insert(id, listener);
    }
    let mut cluster = Cluster {
        root,
        addrs,
        servers: BTreeMap::new(),
        max_connections: None,
    };
    let mut switches = BTreeMap::new();
    for (id, listener) in listeners {
        let full = Arc::new(AtomicBool::new(false));
        let disk = Arc::new(FillableDisk {
            inner: FsDisk::new(),
            full: Arc::clone(&full),
        });
        let server = cluster
            .builder(id)
            .listener(listener)
            .disk(disk)
            .start()
            .await
            .expect("start");
        cluster.servers.insert(id, server);
        switches.insert(id, full);
    }
    (cluster, switches)
}

async fn connect(cluster: &Cluster) -> Client {
    Client::builder()
        .servers(cluster.addresses())
        .request_timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("connect")
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request on a client connection of its own to `addr`; the answer.
async fn ask(addr: std::net::SocketAddr, request: Request) -> Result<(), ClientError> {
    use futures_util::{SinkExt, StreamExt};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut framed = copycat_net::framed(stream);
    framed
        .send(encode_frame(&Hello::Client))
        .await
        .expect("send hello");
    let hello = framed.next().await.expect("hello").expect("hello frame");
    decode_frame::<ServerHello>(&hello).expect("a server hello");
    let request = ClientRequest {
        id: RequestId(7),
        request,
    };
    framed
        .send(encode_frame(&request))
        .await
        .expect("send request");
    loop {
        let frame = framed.next().await.expect("an answer").expect("a frame");
        if let Ok(ServerMessage::Response { id, result }) = decode_frame::<ServerMessage>(&frame) {
            assert_eq!(id, RequestId(7));
            return result.map(|_| ());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_a_full_disk_stalls_and_catches_up() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let (cluster, full) = start().await;
        let leader = cluster.leader().await;
        let client = connect(&cluster).await;
        let machine = client.machine::<NotifierApi>();
        for _ in 0..20 {
            machine.command(NotifierCommand::Add(1)).await.expect("add");
        }
        let follower = *cluster.servers.keys().find(|id| **id != leader).unwrap();
        full[&follower].store(true, Ordering::SeqCst);

        // The cluster keeps committing without it; it does not stop.
        for _ in 0..40 {
            machine.command(NotifierCommand::Add(1)).await.expect("add");
        }
        let stalled = &cluster.servers[&follower];
        wait_for("the follower to stall", || stalled.status().disk_full).await;
        assert!(
            !stalled.watch_status().is_stopped(),
            "a full disk does not stop the server"
        );
        let commit = cluster.servers[&leader].status().commit;
        assert!(stalled.status().applied < commit, "it cannot keep up");
        // It refuses writes with the clear error.
        let refused = ask(
            cluster.addrs[&follower],
            Request::Register {
                client: ClientId(99),
                timeout_ms: 5_000,
            },
        )
        .await;
        assert_eq!(refused, Err(ClientError::DiskFull));

        // Space returns: it resumes by itself and catches up.
        full[&follower].store(false, Ordering::SeqCst);
        wait_for("the follower to catch up", || {
            let status = stalled.status();
            !status.disk_full && status.applied >= commit
        })
        .await;
        assert_eq!(
            machine.command(NotifierCommand::Add(1)).await.expect("add"),
            61
        );
        let total = machine
            .query_with(NotifierQuery::Total, Consistency::Linearizable)
            .await
            .expect("query");
        assert_eq!(total, 61);
        drop(client);
        cluster.shutdown().await;
    })
    .await
    .expect("test deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_with_a_full_disk_gives_way_and_loses_nothing() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let (mut cluster, full) = start().await;
        let old_leader = cluster.leader().await;
        let client = connect(&cluster).await;
        let machine = client.machine::<NotifierApi>();
        let mut acknowledged = 0;
        for _ in 0..20 {
            machine.command(NotifierCommand::Add(1)).await.expect("add");
            acknowledged += 1;
        }
        full[&old_leader].store(true, Ordering::SeqCst);

        // Commands go on: the client is refused (or times out) at the old
        // leader and finds the new one; every one is acknowledged.
        for _ in 0..30 {
            let total = machine.command(NotifierCommand::Add(1)).await.expect("add");
            acknowledged += 1;
            assert_eq!(total, acknowledged);
        }
        let stalled = &cluster.servers[&old_leader];
        wait_for("the old leader to stall", || stalled.status().disk_full).await;
        assert!(!stalled.watch_status().is_stopped());
        // The stalled server is frozen (its status still shows what it was
        // when the disk filled, with `disk_full` set); another one leads.
        let mut new_leader = None;
        wait_for("a leader with room", || {
            new_leader = cluster
                .servers
                .iter()
                .find(|(_, s)| s.status().is_leader() && !s.status().disk_full)
                .map(|(id, _)| *id);
            new_leader.is_some()
        })
        .await;
        let new_leader = new_leader.expect("a leader");
        assert_ne!(new_leader, old_leader, "a server with room leads");
        let refused = ask(
            cluster.addrs[&old_leader],
            Request::Register {
                client: ClientId(98),
                timeout_ms: 5_000,
            },
        )
        .await;
        assert_eq!(refused, Err(ClientError::DiskFull));

        // Space returns: the old leader follows and catches up.
        full[&old_leader].store(false, Ordering::SeqCst);
        let commit = cluster.servers[&new_leader].status().commit;
        wait_for("the old leader to catch up", || {
            let status = cluster.servers[&old_leader].status();
            !status.disk_full && status.applied >= commit && !status.is_leader()
        })
        .await;
        drop(client);

        // Nothing acknowledged is lost, across a restart of every server.
        for id in 1..=3 {
            let server = cluster.servers.remove(&id).expect("server");
            server.shutdown().await.expect("clean shutdown");
        }
        for id in 1..=3 {
            cluster.restart(id).await;
        }
        let client = connect(&cluster).await;
        let total = client
            .machine::<NotifierApi>()
            .query_with(NotifierQuery::Total, Consistency::Linearizable)
            .await
            .expect("query");
        assert_eq!(total, acknowledged);
        drop(client);
        cluster.shutdown().await;
    })
    .await
    .expect("test deadline");
}
