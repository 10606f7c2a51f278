//! The embedding API over real sockets: status and leadership watches,
//! membership changes, leadership transfer, graceful shutdown, start
//! errors.

mod support;

use std::time::Duration;

use copycat_client::Client;
use copycat_server::{AdminError, MemberRole, NodeId, Server, StartError};
use support::{Cluster, Notifier, NotifierApi, NotifierCommand};
use tokio::net::TcpListener;

const TEST_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_shutting_down_hands_leadership_over_first() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let mut cluster = Cluster::start(3).await;
        let leader = cluster.leader().await;
        let term = cluster.servers[&leader].status().term;
        cluster
            .servers
            .remove(&leader)
            .expect("leader")
            .shutdown()
            .await
            .expect("clean shutdown");
        // The transfer finished before shutdown returned: a survivor leads
        // already, without waiting for an election timeout.
        let leading: Vec<_> = cluster
            .servers
            .values()
            .map(|s| s.status())
            .filter(|s| s.is_leader())
            .collect();
        assert_eq!(leading.len(), 1, "{leading:?}");
        assert!(leading[0].term > term);
        cluster.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_and_transfers_through_the_handle() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let mut cluster = Cluster::start(3).await;
        let leader = cluster.leader().await;
        let follower = (1..=3).find(|id| *id != leader).expect("a follower");
        // The follower learns who leads from the leader's first message
        // (the test's deadline bounds the wait).
        while cluster.servers[&follower].status().leader != Some(NodeId(leader)) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Only the leader takes them.
        let refused = cluster.servers[&follower].remove(leader).await;
        assert!(
            matches!(refused, Err(AdminError::NotLeader { leader: Some(l) }) if l == NodeId(leader)),
            "{refused:?}"
        );

        // A fourth server joins as a learner and is promoted once caught up.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        cluster.addrs.insert(4, addr);
        let client = Client::builder()
            .servers(cluster.addresses())
            .connect()
            .await
            .expect("connect");
        let machine = client.machine::<NotifierApi>();
        for _ in 0..5 {
            machine.command(NotifierCommand::Add(1)).await.expect("add");
        }
        // It joins through a follower: the follower names the leader.
        let via = cluster.addrs[&follower].to_string();
        let fourth = cluster
            .joiner(4)
            .listener(listener)
            .join(via)
            .start()
            .await
            .expect("start 4");
        assert_eq!(fourth.cluster_id(), cluster.servers[&leader].cluster_id());
        cluster.servers.insert(4, fourth);
        let mut status = cluster.servers[&4].watch_status();
        let promoted = tokio::time::timeout(
            Duration::from_secs(10),
            status.wait_for(|s| s.member_role == Some(MemberRole::Voter) && s.applied.0 > 5),
        )
        .await
        .map(|r| r.is_ok());
        assert_eq!(promoted, Ok(true), "server 4 not promoted: {:?}", cluster.servers[&4].status());

        // Demote and promote a follower; remove it.
        let leader_handle = &cluster.servers[&leader];
        leader_handle.demote(follower).await.expect("demote");
        let role = leader_handle
            .inspect(move |node| node.raft().configuration().1.role(NodeId(follower)))
            .await
            .expect("running");
        assert_eq!(role, Some(MemberRole::Passive));
        leader_handle.promote(follower).await.expect("promote");
        leader_handle.remove(follower).await.expect("remove");
        let role = leader_handle
            .inspect(move |node| node.raft().configuration().1.role(NodeId(follower)))
            .await
            .expect("running");
        assert_eq!(role, None);

        // Hand leadership to server 4 and watch it happen.
        let mut leadership = cluster.servers[&4].watch_leadership();
        leader_handle.transfer_leadership(4).await.expect("transfer");
        assert!(cluster.servers[&4].status().is_leader());
        let seen = tokio::time::timeout(
            Duration::from_secs(5),
            leadership.wait_for(|l| l.leader == Some(NodeId(4))),
        )
        .await
        .map(|r| r.is_ok());
        assert_eq!(seen, Ok(true), "the leadership watch saw the change");
        // The cluster still serves the client.
        assert_eq!(machine.command(NotifierCommand::Add(1)).await.expect("add"), 6);
        client.close().await;
        cluster.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_errors_name_what_is_wrong() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("addr").to_string();
        let dir = tempfile::tempdir().expect("tempdir");
        let error = Server::builder(Notifier::default())
            .listen(addr.clone())
            .data_dir(dir.path().join("a"))
            .start()
            .await
            .err()
            .expect("address in use");
        assert!(matches!(error, StartError::Bind { .. }), "{error:?}");
        assert!(error.to_string().contains(&addr), "{error}");

        // A data directory that is a file.
        let file = dir.path().join("file");
        std::fs::write(&file, b"not a directory").expect("write");
        let error = Server::builder(Notifier::default())
            .listen("127.0.0.1:0")
            .data_dir(&file)
            .start()
            .await
            .err()
            .expect("bad data dir");
        assert!(matches!(error, StartError::DataDir { .. }), "{error:?}");
        assert!(
            error.to_string().contains(&file.display().to_string()),
            "{error}"
        );

        let error = Server::builder(Notifier::default())
            .id(0)
            .start()
            .await
            .err()
            .expect("id 0");
        assert!(error.to_string().contains("id must be positive"), "{error}");
        let error = Server::builder(Notifier::default())
            .listen("no-such-host.invalid:1")
            .start()
            .await
            .err()
            .expect("unresolvable");
        assert!(matches!(error, StartError::Resolve { .. }), "{error:?}");
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_failure_stops_the_server_and_stopped_says_why() {
    let disk = std::sync::Arc::new(copycat_storage::FaultDisk::new(7));
    let mut server = Server::builder(Notifier::default())
        .listen("127.0.0.1:0")
        .data_dir("/chaos/a")
        .disk(disk.clone())
        .start()
        .await
        .expect("start");
    server.wait_for_leader(TEST_DEADLINE).await.expect("leader");
    let client = Client::builder()
        .servers([server.local_addr().to_string()])
        .request_timeout(Duration::from_secs(2))
        .connect()
        .await
        .expect("connect");
    let machine = client.machine::<NotifierApi>();
    assert_eq!(
        machine.command(NotifierCommand::Add(2)).await.expect("add"),
        2
    );
    // Running: `stopped` does not resolve.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), server.stopped())
            .await
            .is_err(),
        "a healthy server must not report itself stopped"
    );
    disk.fail_next_write();
    let _ = machine.command(NotifierCommand::Add(3)).await;
    let result = tokio::time::timeout(TEST_DEADLINE, server.stopped())
        .await
        .expect("the server stops after its storage failed");
    let error = result.expect_err("the failure is reported");
    assert!(error.to_string().contains("I/O"), "{error}");
}
