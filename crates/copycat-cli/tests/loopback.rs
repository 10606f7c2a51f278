//! Three servers on 127.0.0.1 (ephemeral ports, temp data dirs, fsync on),
//! driven by the async client: commands, a leader shutdown, and a restart
//! that catches up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use copycat_cli::{start_server, CopycatServer as Server, ServerSpec};
use copycat_client::Client;
use copycat_primitives::{Long, Primitives};
use copycat_raft::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn add(counter: &Long, n: i64) -> i64 {
    counter.add_and_get(n).await.expect("command")
}

/// A session and the long "counter" (the counter of `copycat client`).
async fn connect(servers: impl IntoIterator<Item = SocketAddr>) -> (Client, Long) {
    let client = Client::builder()
        .servers(servers.into_iter().map(|a| a.to_string()))
        .connect()
        .await
        .expect("client");
    let counter = Long::open(&Primitives::new(client.clone()), "counter")
        .await
        .expect("the counter");
    (client, counter)
}

async fn bind(addr: SocketAddr) -> TcpListener {
    // The port of a server that just stopped may linger for a moment.
    for _ in 0..50 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot bind {addr}");
}

fn spec(id: u64, members: &BTreeMap<u64, SocketAddr>, dir: PathBuf) -> ServerSpec {
    let mut spec = ServerSpec::new(id, members.clone(), dir, true);
    // Snapshot often and keep no trailing entries, so that a server that
    // restarts behind needs a snapshot transfer over TCP to catch up.
    spec.snapshot_every_entries = 4;
    spec.snapshot_trailing_entries = 0;
    spec
}

async fn leader_of(servers: &BTreeMap<u64, Server>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some((id, _)) = servers
            .iter()
            .find(|(_, s)| s.status().role == Role::Leader)
        {
            return *id;
        }
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_survive_a_leader_shutdown_and_the_old_leader_catches_up() {
    let test_deadline = Duration::from_secs(30);
    tokio::time::timeout(test_deadline, async {
        let root = tempfile::tempdir().expect("tempdir");
        let mut listeners = BTreeMap::new();
        let mut members = BTreeMap::new();
        for id in 1..=3u64 {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            members.insert(id, listener.local_addr().expect("addr"));
            listeners.insert(id, listener);
        }
        let dir = |id: u64| root.path().join(format!("node-{id}"));
        let mut servers = BTreeMap::new();
        for (id, listener) in listeners {
            let server = start_server(spec(id, &members, dir(id)), listener)
                .await
                .expect("start");
            servers.insert(id, server);
        }
        let (session, client) = connect(members.values().copied()).await;
        for i in 1..=20 {
            assert_eq!(add(&client, 1).await, i);
        }

        let old_leader = leader_of(&servers).await;
        let old_last = servers[&old_leader]
            .inspect(|server| server.raft().last_index())
            .await
            .expect("running");
        servers
            .remove(&old_leader)
            .expect("leader")
            .shutdown()
            .await
            .expect("clean shutdown");
        for i in 21..=30 {
            assert_eq!(add(&client, 1).await, i, "after failover");
        }
        let new_leader = leader_of(&servers).await;
        assert_ne!(new_leader, old_leader);
        // The new leader snapshotted and purged past the old leader's log, so
        // the old leader can only catch up by a snapshot transfer over TCP.
        let first = servers[&new_leader]
            .inspect(|server| server.raft().first_index())
            .await
            .expect("running");
        assert!(
            first > old_last.next(),
            "leader's log starts at {first:?}, old leader ends at {old_last:?}"
        );

        // Restart the old leader on its data directory and address.
        let listener = bind(members[&old_leader]).await;
        let restarted = start_server(spec(old_leader, &members, dir(old_leader)), listener)
            .await
            .expect("restart");
        servers.insert(old_leader, restarted);
        assert_eq!(add(&client, 5).await, 35, "after restart");
        // The restarted server applies everything the leader committed.
        let target = servers[&new_leader].status().commit;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let applied = servers[&old_leader].status().applied;
            if applied >= target {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "restarted server stuck at {applied:?}, not {target:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let read = client.get().await.expect("query");
        assert_eq!(read, 35);
        drop(client);
        session.close().await;
        for server in servers.into_values() {
            server.shutdown().await.expect("clean shutdown");
        }
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_the_connection_and_the_server_keeps_serving() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let root = tempfile::tempdir().expect("tempdir");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let members = BTreeMap::from([(1, addr)]);
        let server = start_server(spec(1, &members, root.path().join("n1")), listener)
            .await
            .expect("start");

        // A frame longer than 64 MiB: the server closes the connection.
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(&(65u32 << 20).to_be_bytes())
            .await
            .expect("write");
        let mut buf = [0u8; 16];
        assert_eq!(stream.read(&mut buf).await.expect("read"), 0, "closed");

        // An undecodable hello: closed too.
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(&[0, 0, 0, 3, 9, 9, 9])
            .await
            .expect("write");
        assert_eq!(stream.read(&mut buf).await.expect("read"), 0, "closed");

        let (session, client) = connect([addr]).await;
        assert_eq!(add(&client, 3).await, 3);
        drop(client);
        session.close().await;
        server.shutdown().await.expect("clean shutdown");
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_and_the_server_keeps_serving() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let root = tempfile::tempdir().expect("tempdir");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let members = BTreeMap::from([(1, addr)]);
        let mut spec = spec(1, &members, root.path().join("n1"));
        spec.max_connections = 2;
        spec.hello_timeout = Duration::from_millis(500);
        let server = start_server(spec, listener).await.expect("start");

        // Two idle connections take both slots; a third is closed at once.
        let first = TcpStream::connect(addr).await.expect("connect");
        let second = TcpStream::connect(addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut third = TcpStream::connect(addr).await.expect("connect");
        let mut buf = [0u8; 16];
        assert_eq!(
            third.read(&mut buf).await.expect("read"),
            0,
            "closed over the limit"
        );

        // Freeing a slot lets a client in.
        drop(first);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The other idle connection never says hello: it is closed after
        // the hello timeout, so idle sockets cannot hold the slots forever.
        let mut second = second;
        assert_eq!(
            second.read(&mut buf).await.expect("read"),
            0,
            "closed without a hello"
        );
        let (session, client) = connect([addr]).await;
        assert_eq!(add(&client, 2).await, 2);
        drop(client);
        session.close().await;
        server.shutdown().await.expect("clean shutdown");
    })
    .await
    .expect("test finished in time");
}
