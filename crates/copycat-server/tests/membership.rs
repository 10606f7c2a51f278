//! Membership with addresses, cluster identity and the data directory
//! lock, on real servers over loopback.

mod support;

use std::time::Duration;

use copycat_net::admin_call;
use copycat_proto::{AdminFailure, AdminRequest, AdminResponse, MemberKind};
use copycat_replica::shell::ShellError;
use copycat_server::{NodeId, StartError};
use support::{bind_again, Cluster};
use tokio::net::TcpListener;

const TEST_DEADLINE: Duration = Duration::from_secs(60);

/// The leader among `ids`, waiting up to `limit`.
async fn leader_among(cluster: &Cluster, ids: &[u64], limit: Duration) -> Option<u64> {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        for id in ids {
            if cluster.servers[id].status().is_leader() {
                return Some(*id);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// A server restarted with an incomplete member list still knows every
/// member's address (from its log and snapshot): when the leader dies, the
/// two survivors elect a new leader within a few election timeouts. (Before
/// addresses were replicated, the restarted server could not reach the
/// other survivor and the cluster stayed leaderless for minutes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_with_a_wrong_member_list_still_reaches_every_member() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let mut cluster = Cluster::start(3).await;
        let leader = cluster.leader().await;
        let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
        let (restarted, survivor) = (others[0], others[1]);

        // Restart one follower with a member list that leaves the other
        // follower out and names the leader at a wrong address.
        let server = cluster.servers.remove(&restarted).expect("running");
        server.shutdown().await.expect("clean shutdown");
        let listener = bind_again(cluster.addrs[&restarted]).await;
        let wrong = [
            (restarted, cluster.addrs[&restarted].to_string()),
            (leader, "127.0.0.1:1".to_string()),
        ];
        let server = cluster
            .joiner(restarted)
            .bootstrap(wrong)
            .listener(listener)
            .start()
            .await
            .expect("restart");
        let status = server.server_status().await.expect("status");
        assert_eq!(status.members.len(), 3, "{status:?}");
        for member in &status.members {
            assert_eq!(
                member.address.as_deref(),
                Some(cluster.addrs[&member.id].to_string().as_str()),
                "the persisted configuration wins: {status:?}"
            );
        }
        cluster.servers.insert(restarted, server);

        // Let it catch up with the leader, then kill the leader.
        let commit = cluster.servers[&leader].status().commit;
        let mut watch = cluster.servers[&restarted].watch_status();
        watch
            .wait_for(|s| s.commit >= commit)
            .await
            .expect("caught up");
        drop(cluster.servers.remove(&leader));

        // Election timeouts are 300-600 ms here: a few of them is plenty.
        let elected = leader_among(&cluster, &[restarted, survivor], Duration::from_secs(5)).await;
        assert!(
            elected.is_some(),
            "no new leader among {restarted} and {survivor}: {:?} / {:?}",
            cluster.servers[&restarted].status(),
            cluster.servers[&survivor].status()
        );
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_is_used_by_one_server_at_a_time_and_only_by_its_own() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let cluster = Cluster::start(1).await;
        let dir = cluster.dir(1);
        // A second process (here: a second server) on the same directory.
        let second = cluster
            .joiner(1)
            .listen("127.0.0.1:0")
            .start()
            .await
            .err()
            .expect("refused");
        match &second {
            StartError::Locked { path, holder } => {
                assert_eq!(path, &dir);
                assert_eq!(holder, &format!("pid {}", std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        let text = second.to_string();
        assert!(text.contains(&dir.display().to_string()), "{text}");
        // Stop the server but keep the directory.
        let mut cluster = cluster;
        let first = cluster.servers.remove(&1).expect("running");
        first.shutdown().await.expect("clean shutdown");

        // Once it is free, a server with another id is still refused: the
        // directory holds server 1's data.
        let other = Server2::on(&dir).await;
        match other {
            StartError::DataDir {
                path,
                source:
                    ShellError::WrongServer {
                        recorded,
                        configured,
                        ..
                    },
            } => {
                assert_eq!(path, dir);
                assert_eq!((recorded, configured), (1, 2));
            }
            other => panic!("expected WrongServer, got {other:?}"),
        }
        drop(cluster);
    })
    .await
    .expect("test finished in time");
}

/// Starting server 2 on a directory, expecting it to be refused.
struct Server2;

impl Server2 {
    async fn on(dir: &std::path::Path) -> StartError {
        copycat_server::Server::builder(support::Notifier::default())
            .id(2)
            .listen("127.0.0.1:0")
            .data_dir(dir)
            .start()
            .await
            .err()
            .expect("refused")
    }
}

/// A server of another cluster (bootstrapped from another member list)
/// that names a member of this one as its peer is refused, and both sides
/// count it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_from_another_cluster_is_refused() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let cluster = Cluster::start(1).await;
        assert_eq!(cluster.leader().await, 1);
        let ours = &cluster.servers[&1];
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let root = tempfile::tempdir().expect("temp dir");
        let stranger = copycat_server::Server::builder(support::Notifier::default())
            .id(2)
            .listener(listener)
            .data_dir(root.path().join("stranger"))
            .bootstrap([(1, cluster.addrs[&1].to_string()), (2, address.to_string())])
            .start()
            .await
            .expect("start the stranger");
        assert_ne!(stranger.cluster_id(), ours.cluster_id());
        // The stranger campaigns and asks server 1 for its vote.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while ours.net_stats().peers_refused == 0 || stranger.net_stats().refused_by_peers == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not refused: ours {:?}, stranger {:?}",
                ours.net_stats(),
                stranger.net_stats()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Server 1 goes on leading its own cluster, in its own term line.
        assert!(ours.status().is_leader());
        assert!(!stranger.status().is_leader());
        stranger.shutdown().await.expect("stop the stranger");
        cluster.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

/// The admin protocol on the server's port: status from any server, changes
/// only at the leader (others name it, with its address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requests_over_the_network() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let cluster = Cluster::start(3).await;
        let leader = cluster.leader().await;
        let follower = (1..=3).find(|id| *id != leader).expect("a follower");
        let limit = Duration::from_secs(10);
        let follower_addr = cluster.addrs[&follower].to_string();
        let status = admin_call(&follower_addr, &AdminRequest::Status, limit)
            .await
            .expect("answer");
        let AdminResponse::Status(status) = status else {
            panic!("expected a status, got {status:?}");
        };
        assert_eq!(status.id, follower);
        assert_eq!(status.cluster, cluster.servers[&leader].cluster_id());
        assert_eq!(status.kind, Some(MemberKind::Voter));
        let ids: Vec<u64> = status.members.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![1, 2, 3]);

        let refused = admin_call(
            &follower_addr,
            &AdminRequest::SetKind {
                id: follower,
                kind: MemberKind::Passive,
            },
            limit,
        )
        .await
        .expect("answer");
        assert_eq!(
            refused,
            AdminResponse::Failed(AdminFailure::NotLeader {
                leader: Some(leader),
                address: Some(cluster.addrs[&leader].to_string()),
            })
        );

        let leader_addr = cluster.addrs[&leader].to_string();
        let demoted = admin_call(
            &leader_addr,
            &AdminRequest::SetKind {
                id: follower,
                kind: MemberKind::Passive,
            },
            limit,
        )
        .await
        .expect("answer");
        assert_eq!(demoted, AdminResponse::Done);
        let role = cluster.servers[&leader]
            .inspect(move |node| node.raft().configuration().1.role(NodeId(follower)))
            .await
            .expect("running");
        assert_eq!(role, Some(copycat_server::MemberRole::Passive));

        let promoted = admin_call(
            &leader_addr,
            &AdminRequest::SetKind {
                id: follower,
                kind: MemberKind::Voter,
            },
            limit,
        )
        .await
        .expect("answer");
        assert_eq!(promoted, AdminResponse::Done);

        // A removed voter campaigns in vain: the others refuse it, and it
        // logs why.
        let removed = admin_call(&leader_addr, &AdminRequest::Remove { id: follower }, limit)
            .await
            .expect("answer");
        assert_eq!(removed, AdminResponse::Done);
        // Promoting or demoting a server that is no longer a member is
        // refused: it would come back with no address, unreachable.
        for kind in [MemberKind::Voter, MemberKind::Passive, MemberKind::Reserve] {
            let answer = admin_call(
                &leader_addr,
                &AdminRequest::SetKind { id: follower, kind },
                limit,
            )
            .await
            .expect("answer");
            let AdminResponse::Failed(AdminFailure::Refused(reason)) = &answer else {
                panic!("SetKind {kind:?} of a removed server: {answer:?}");
            };
            assert!(reason.contains("not a member"), "{reason}");
        }
        let role = cluster.servers[&leader]
            .inspect(move |node| node.raft().configuration().1.role(NodeId(follower)))
            .await
            .expect("running");
        assert_eq!(role, None, "the removed server stays out");
        // The others close its connections and refuse new ones, saying
        // why: it is not a member any more.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while cluster.servers[&follower].net_stats().refused_by_peers == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the removed server was never refused"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let transfer = admin_call(
            &leader_addr,
            &AdminRequest::TransferLeadership { to: None },
            limit,
        )
        .await
        .expect("answer");
        assert_eq!(transfer, AdminResponse::Done);
        let new_leader = cluster.leader().await;
        assert!(new_leader != leader && new_leader != follower);
        cluster.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

/// Settings every server must share (the replica's limits and session
/// timeouts decide outcomes recorded per entry) are compared at the peer
/// hello: a peer with another value is refused, naming the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_other_shared_settings_is_refused_naming_the_setting() {
    use copycat_proto::{decode_frame, encode_frame, Hello, PeerAnswer};
    use futures_util::{SinkExt, StreamExt};
    tokio::time::timeout(TEST_DEADLINE, async {
        let cluster = Cluster::start(1).await;
        let ours = &cluster.servers[&1];
        let settings = copycat_replica::ReplicaConfig::default().settings();
        let hello = |settings: Vec<(String, u64)>| Hello::Peer {
            cluster: ours.cluster_id(),
            id: 1,
            settings,
        };
        let address = cluster.addrs[&1];
        let answer = |hello: Hello| async move {
            let stream = tokio::net::TcpStream::connect(address)
                .await
                .expect("connect");
            let mut framed = copycat_net::framed(stream);
            framed.send(encode_frame(&hello)).await.expect("hello");
            let frame = framed.next().await.expect("an answer").expect("a frame");
            decode_frame::<PeerAnswer>(&frame).expect("a peer answer")
        };
        assert_eq!(answer(hello(settings.clone())).await, PeerAnswer::Accepted);
        let mut other = settings.clone();
        for (name, value) in &mut other {
            if name == "max_command_bytes" {
                *value += 1;
            }
        }
        match answer(hello(other)).await {
            PeerAnswer::Refused(reason) => {
                assert!(reason.contains("max_command_bytes"), "{reason}")
            }
            accepted => panic!("expected a refusal, got {accepted:?}"),
        }
        assert!(ours.net_stats().peers_refused >= 1);
        cluster.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

/// A server listening on a specific IP connects to its peers from that IP,
/// so a peer (and a firewall rule between two servers) sees it under one
/// address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_connections_come_from_the_listen_ip() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let listener = TcpListener::bind("127.0.0.2:0")
            .await
            .expect("bind 127.0.0.2");
        let address = listener.local_addr().expect("address");
        // The "peer" is a bare listener on another loopback address.
        let peer = TcpListener::bind("127.0.0.3:0")
            .await
            .expect("bind 127.0.0.3");
        let peer_address = peer.local_addr().expect("peer address");
        let root = tempfile::tempdir().expect("temp dir");
        let server = copycat_server::Server::builder(support::Notifier::default())
            .id(1)
            .listener(listener)
            .data_dir(root.path().join("one"))
            .bootstrap([(1, address.to_string()), (2, peer_address.to_string())])
            .start()
            .await
            .expect("start");
        // Server 1 campaigns and connects to server 2 to ask for its vote.
        let (_stream, from) = peer.accept().await.expect("a peer connection");
        assert_eq!(from.ip(), address.ip(), "connected from {from}");
        server.shutdown().await.expect("clean shutdown");
    })
    .await
    .expect("test deadline");
}

/// A joining server whose answer was lost asks again: the leader finds it
/// in the configuration already (as a learner, at that address) and answers
/// `Joined` again rather than refusing a change that changes nothing. The
/// same id at another address is still a change, and a voter is not
/// "joined" by a second request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_asked_again_after_a_lost_answer_is_answered_joined() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let cluster = Cluster::start(3).await;
        let leader = cluster.leader().await;
        let leader_addr = cluster.addrs[&leader].to_string();
        let limit = Duration::from_secs(10);
        // A log longer than the promotion lag, so that the new member
        // (nobody runs at its address) stays a learner.
        let client = copycat_client::Client::builder()
            .servers(cluster.addresses())
            .connect()
            .await
            .expect("connect");
        let machine = client.machine::<support::NotifierApi>();
        for _ in 0..200 {
            machine
                .command(support::NotifierCommand::Add(1))
                .await
                .expect("add");
        }
        let join = AdminRequest::Join {
            id: 4,
            address: "127.0.0.1:9".into(),
            kind: MemberKind::Voter,
        };
        for attempt in 1..=2 {
            let answer = admin_call(&leader_addr, &join, limit)
                .await
                .expect("answer");
            let AdminResponse::Joined { members, .. } = answer else {
                panic!("attempt {attempt}: expected Joined, got {answer:?}");
            };
            assert!(
                members
                    .iter()
                    .any(|m| m.id == 4 && m.kind == MemberKind::Learner),
                "attempt {attempt}: {members:?}"
            );
        }
        // A voter asking to join is not a lost answer: refused as before.
        let voter = AdminRequest::Join {
            id: leader,
            address: leader_addr.clone(),
            kind: MemberKind::Voter,
        };
        let refused = admin_call(&leader_addr, &voter, limit)
            .await
            .expect("answer");
        assert!(
            matches!(refused, AdminResponse::Failed(_)),
            "a voter's join: {refused:?}"
        );
        client.close().await;
        cluster.shutdown().await;
    })
    .await
    .expect("test finished in time");
}
