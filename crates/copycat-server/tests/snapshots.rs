//! Snapshots in the running server: written off the owner thread while it
//! keeps serving, made durable, counted in the loop statistics, and
//! restarted from.

mod support;

use std::time::{Duration, Instant};

use copycat_client::Client;
use support::{Cluster, NotifierApi, NotifierCommand, NotifierQuery};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_written_in_the_background_and_restarted_from() {
    tokio::time::timeout(Duration::from_secs(120), async {
        // The support cluster snapshots every 500 entries.
        let mut cluster = Cluster::start(3).await;
        let client = Client::builder()
            .servers(cluster.addresses())
            .request_timeout(Duration::from_secs(20))
            .ignore_events()
            .connect()
            .await
            .expect("connect");
        let machine = client.machine::<NotifierApi>();
        // One at a time: with many in flight, the session's result cache
        // fills up and refused commands are retried (entries the count
        // below would not expect).
        for _ in 0..1100 {
            machine.command(NotifierCommand::Add(1)).await.expect("add");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while cluster
            .servers
            .values()
            .any(|s| s.status().snapshot.0 < 1000)
        {
            assert!(Instant::now() < deadline, "every server snapshots twice");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for (id, server) in &cluster.servers {
            let stats = server.take_loop_stats().await.expect("stats");
            assert!(stats.snapshots >= 2, "server {id}: {stats:?}");
            assert!(stats.iterations > 0);
            assert!(stats.max_iteration > Duration::ZERO);
            let again = server.take_loop_stats().await.expect("stats");
            assert_eq!(again.snapshots, 0, "taking the statistics restarts them");
            let names: Vec<String> = std::fs::read_dir(cluster.dir(*id).join("snapshots"))
                .expect("snapshot directory")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                names.iter().all(|n| n.ends_with(".snap")),
                "server {id} holds installed snapshots only: {names:?}"
            );
        }

        // A follower restarts from its latest snapshot and catches up.
        let leader = cluster.leader().await;
        let follower = *cluster
            .servers
            .keys()
            .find(|id| **id != leader)
            .expect("a follower");
        let server = cluster.servers.remove(&follower).expect("follower");
        server.shutdown().await.expect("clean shutdown");
        for _ in 0..10 {
            machine.command(NotifierCommand::Add(1)).await.expect("add");
        }
        cluster.restart(follower).await;
        let restarted = &cluster.servers[&follower];
        assert!(
            restarted.status().snapshot.0 >= 1000,
            "{:?}",
            restarted.status()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let total = restarted
                .inspect(|server| server.replica().machine().0.total)
                .await
                .expect("inspect");
            if total == 1110 {
                break;
            }
            assert!(Instant::now() < deadline, "caught up: {total}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            machine.query(NotifierQuery::Total).await.expect("query"),
            1110
        );
        client.close().await;
        cluster.shutdown().await;
    })
    .await
    .expect("test finished in time");
}
