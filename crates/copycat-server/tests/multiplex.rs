//! Many sessions over one connection per server ([`Connections`]) against
//! embedded servers on loopback, and the leader's batching of their
//! keep-alives.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use copycat_client::{Client, Connections, Event};
use futures_util::future::join_all;
use support::{Cluster, NotifierApi, NotifierCommand};

const SESSIONS: usize = 300;

async fn open(cluster: &Cluster, connections: &Connections, timeout: Duration) -> Vec<Client> {
    let connect = (0..SESSIONS).map(|_| {
        Client::builder()
            .servers(cluster.addresses())
            .connections(connections)
            .session_timeout(timeout)
            .request_timeout(Duration::from_secs(20))
            .connect()
    });
    join_all(connect)
        .await
        .into_iter()
        .map(|c| c.expect("connect"))
        .collect()
}

fn number(event: &Event) -> u64 {
    event.decode::<u64>().expect("a number")
}

/// 300 sessions against servers that accept 12 connections each: only
/// shared connections fit. Each session's answers and events reach it and
/// no other session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_sessions_share_one_connection_per_server() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let cluster = Cluster::start_with(3, Some(12)).await;
        let leader = cluster.leader().await;
        let connections = Connections::new();
        let clients = open(&cluster, &connections, Duration::from_secs(5)).await;
        assert_eq!(connections.sessions(), SESSIONS);
        assert_eq!(connections.open(), 3, "one connection to each server");
        let ids: BTreeSet<_> = clients.iter().map(|c| c.status().session).collect();
        assert_eq!(ids.len(), SESSIONS, "a session each");
        let work = clients.iter().map(|client| async move {
            let mut events = client.events();
            let machine = client.machine::<NotifierApi>();
            let mut last = 0;
            for _ in 0..3 {
                last = machine
                    .command(NotifierCommand::Publish(2))
                    .await
                    .expect("publish");
                machine.command(NotifierCommand::Add(1)).await.expect("add");
            }
            assert_eq!(last, 6, "each session has its own numbers");
            for expected in 1..=6 {
                let event = events.next().await.expect("open");
                assert_eq!(number(&event), expected, "its own events, in order");
            }
        });
        join_all(work).await;
        let total = clients[0]
            .machine::<NotifierApi>()
            .command(NotifierCommand::Add(0))
            .await
            .expect("total");
        assert_eq!(total, 3 * SESSIONS as i64);
        let open_sessions = cluster.servers[&leader]
            .inspect(|node| node.replica().sessions().len())
            .await
            .expect("running");
        assert_eq!(open_sessions, SESSIONS);
        // Closing the clients closes their sessions; the connections stay
        // for the next ones.
        join_all(clients.into_iter().map(Client::close)).await;
        assert_eq!(connections.sessions(), 0);
        let open_sessions = cluster.servers[&leader]
            .inspect(|node| node.replica().sessions().len())
            .await
            .expect("running");
        assert_eq!(open_sessions, 0);
        cluster.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

/// 300 idle sessions of 1 s keep alive every half second: 1,800
/// keep-alives in three seconds, which the leader writes in a few dozen
/// entries, and no session expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_keep_alive_in_few_log_entries() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let cluster = Cluster::start(3).await;
        let leader = cluster.leader().await;
        let connections = Connections::new();
        let clients = open(&cluster, &connections, Duration::from_secs(1)).await;
        let last_index = || async {
            cluster.servers[&leader]
                .inspect(|node| node.raft().last_index().0)
                .await
                .expect("running")
        };
        // Let the registrations' own traffic settle.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = last_index().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let written = last_index().await - before;
        // Unbatched, one entry per keep-alive: about 1,800. Batched: a
        // batch per 125 ms at most (24) plus the idle time entries (300 ms
        // election timeout: 10), plus slack for a busy machine's late ticks.
        assert!(
            written < 120,
            "{written} entries for 300 idle sessions in 3 s"
        );
        let open_sessions = cluster.servers[&leader]
            .inspect(|node| node.replica().sessions().len())
            .await
            .expect("running");
        assert_eq!(open_sessions, SESSIONS, "no idle session expired");
        join_all(clients.into_iter().map(Client::close)).await;
        cluster.shutdown().await;
    })
    .await
    .expect("test finished in time");
}
