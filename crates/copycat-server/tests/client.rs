//! The async client against embedded servers over real sockets on
//! loopback: typed commands and queries, events across failures, every
//! unavailable cause, a current-thread runtime, and session close on drop.

mod support;

use std::time::Duration;

use copycat_client::{Client, ClientState, Consistency, Error, Event, Unavailable};
use futures_util::FutureExt;
use support::{Cluster, NotifierApi, NotifierCommand, NotifierQuery, Refusal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TEST_DEADLINE: Duration = Duration::from_secs(60);

async fn connect(cluster: &Cluster) -> Client {
    Client::builder()
        .servers(cluster.addresses())
        .request_timeout(Duration::from_secs(20))
        .event_buffer(64)
        .connect()
        .await
        .expect("connect")
}

fn number(event: &Event) -> u64 {
    assert_eq!(event.name, "n");
    event.decode::<u64>().expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_commands_queries_and_application_errors_over_tcp() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let cluster = Cluster::start(3).await;
        let client = connect(&cluster).await;
        let machine = client.machine::<NotifierApi>();
        for i in 1..=10 {
            assert_eq!(
                machine.command(NotifierCommand::Add(2)).await.expect("add"),
                2 * i
            );
        }
        for consistency in [
            Consistency::Linearizable,
            Consistency::LinearizableLease,
            Consistency::Sequential,
        ] {
            let total = machine
                .query_with(NotifierQuery::Total, consistency)
                .await
                .expect("query");
            // A session's queries see its own earlier commands at every
            // consistency level.
            assert_eq!(total, 20, "{consistency:?}");
        }
        // The state machine's own error arrives as its value.
        let refused = machine
            .command(NotifierCommand::Fail("no".into()))
            .await
            .expect_err("refused");
        assert_eq!(
            refused,
            Error::App(Refusal {
                reason: "no".into()
            })
        );
        assert!(refused.to_string().contains("no"), "{refused}");
        // A payload over the client's limit is refused before it is sent.
        let small = Client::builder()
            .servers(cluster.addresses())
            .max_payload_bytes(8)
            .connect()
            .await
            .expect("connect");
        let too_large = small
            .machine::<NotifierApi>()
            .command(NotifierCommand::Fail("x".repeat(100)))
            .await
            .expect_err("too large");
        assert!(
            matches!(too_large, Error::TooLarge { limit: 8, .. }),
            "{too_large:?}"
        );
        small.close().await;
        let status = client.status();
        assert_eq!(status.state, ClientState::Connected);
        assert!(
            status.session.is_some() && status.leader.is_some(),
            "{status:?}"
        );
        client.close().await;
        cluster.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

/// 10,000 events published to one session while the leader is killed and
/// a server restarts: each arrives once, in order, and before the response
/// of the command that published it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_arrive_once_in_order_across_a_leader_kill_and_a_restart() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut cluster = Cluster::start(3).await;
        let client = connect(&cluster).await;
        let machine = client.machine::<NotifierApi>();
        let mut events = client.events();
        let mut received = 0u64;
        let mut killed = None;
        for round in 0..200 {
            if round == 60 {
                let leader = cluster.leader().await;
                // Dropping a server stops it at once, like a crash.
                drop(cluster.servers.remove(&leader));
                killed = Some(leader);
            }
            if round == 130 {
                cluster.restart(killed.expect("a server was killed")).await;
            }
            let last = machine
                .command(NotifierCommand::Publish(50))
                .await
                .expect("publish") as u64;
            // Every event up to `last` is already in the stream: nothing to
            // wait for.
            while received < last {
                let event = events
                    .next()
                    .now_or_never()
                    .expect("events arrive before the response that follows them")
                    .expect("the stream is open");
                assert_eq!(number(&event), received + 1, "in order, once each");
                received += 1;
            }
            assert!(
                events.next().now_or_never().is_none(),
                "no event beyond {last}"
            );
        }
        assert_eq!(received, 10_000);
        client.close().await;
        assert!(
            events.next().await.is_none(),
            "the stream ends with the client"
        );
        cluster.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

/// A consumer that reads events slowly loses none: the client stops taking
/// events while its buffer is full, the servers keep them, and they come
/// again when there is room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_event_consumer_loses_nothing() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let cluster = Cluster::start(1).await;
        let client = Client::builder()
            .servers(cluster.addresses())
            .event_buffer(2)
            .session_timeout(Duration::from_secs(2))
            .connect()
            .await
            .expect("connect");
        let machine = client.machine::<NotifierApi>();
        let mut events = client.events();
        // Publish far more than the buffer holds, without reading: twenty
        // commands at once, so batches keep coming while the buffer and the
        // client's parking space are full.
        let publisher = tokio::spawn({
            let machine = machine.clone();
            async move {
                let commands = (0..20).map(|_| machine.command(NotifierCommand::Publish(10)));
                for result in futures_util::future::join_all(commands).await {
                    result.expect("publish");
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        for expected in 1..=200 {
            let event = events.next().await.expect("open");
            assert_eq!(number(&event), expected);
            if expected % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        publisher.await.expect("publisher");
        client.close().await;
        cluster.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

/// The servers and the client share one current-thread runtime: nothing
/// blocks its only thread.
#[test]
fn servers_and_client_run_on_a_current_thread_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        tokio::time::timeout(TEST_DEADLINE, async {
            let cluster = Cluster::start(3).await;
            let client = connect(&cluster).await;
            let machine = client.machine::<NotifierApi>();
            for i in 1..=20 {
                assert_eq!(
                    machine.command(NotifierCommand::Add(1)).await.expect("add"),
                    i
                );
            }
            assert_eq!(
                machine.query(NotifierQuery::Total).await.expect("query"),
                20
            );
            client.close().await;
            cluster.shutdown().await;
        })
        .await
        .expect("test finished in time");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_unavailable_cause_has_its_own_error() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let quick = |servers: Vec<String>| {
            Client::builder()
                .servers(servers)
                .connect_timeout(Duration::from_millis(800))
        };

        // Nothing listens: connection refused at that address.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let closed = listener.local_addr().expect("addr");
        drop(listener);
        let error = quick(vec![closed.to_string()]).connect().await.err().expect("refused");
        assert_eq!(error, Error::Unavailable(Unavailable::Refused { addr: closed }));
        assert!(error.to_string().contains(&closed.to_string()), "{error}");

        // Something answers, but not a Copycat server.
        let impostor = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let impostor_addr = impostor.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = impostor.accept().await else { return };
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream.write_all(b"\x00\x00\x00\x05HTTP/").await;
                    tokio::time::sleep(Duration::from_secs(5)).await;
                });
            }
        });
        let error = quick(vec![impostor_addr.to_string()]).connect().await.err().expect("impostor");
        assert!(
            matches!(&error, Error::Unavailable(Unavailable::NotCopycat { addr, .. }) if *addr == impostor_addr),
            "{error:?}"
        );
        assert!(error.to_string().contains("not a Copycat server"), "{error}");

        // A hostname that does not resolve.
        let error = quick(vec!["no-such-host.invalid:5700".into()]).connect().await.err().expect("unresolvable");
        assert!(matches!(error, Error::Unavailable(Unavailable::Resolve { .. })), "{error:?}");

        // Servers answer but none leads: one of three members alone.
        let mut cluster = Cluster::start(3).await;
        for id in [2, 3] {
            drop(cluster.servers.remove(&id));
        }
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let lone = cluster.addrs[&1].to_string();
        let error = quick(vec![lone.clone()]).connect().await.err().expect("no leader");
        assert!(matches!(error, Error::Unavailable(Unavailable::NoLeader { .. })), "{error:?}");
        assert!(error.to_string().contains("no leader known since"), "{error}");

        // An operation on a connected client whose cluster loses its
        // quorum fails with the cause after its request timeout.
        cluster.restart(2).await;
        let client = Client::builder()
            .servers(cluster.addresses())
            .request_timeout(Duration::from_millis(1_500))
            // The restarted server refuses votes for an election timeout,
            // and pre-vote rounds follow: allow the election its time.
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .expect("quorum again");
        let machine = client.machine::<NotifierApi>();
        machine.command(NotifierCommand::Add(1)).await.expect("add");
        for id in [1, 2] {
            drop(cluster.servers.remove(&id));
        }
        let error = machine.command(NotifierCommand::Add(1)).await.expect_err("no servers");
        assert!(error.outcome_unknown(), "{error:?}");
        assert!(matches!(error, Error::Unavailable(Unavailable::Refused { .. })), "{error:?}");
        drop(client);
    })
    .await
    .expect("test finished in time");
}

async fn sessions(cluster: &Cluster, server: u64) -> usize {
    cluster.servers[&server]
        .inspect(|node| node.replica().sessions().len())
        .await
        .expect("running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_client_closes_its_session() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let cluster = Cluster::start(3).await;
        let leader = cluster.leader().await;
        let client = connect(&cluster).await;
        client
            .machine::<NotifierApi>()
            .command(NotifierCommand::Add(1))
            .await
            .expect("add");
        assert_eq!(sessions(&cluster, leader).await, 1);
        drop(client);
        // Unregistered long before the 5 s session timeout could expire it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while sessions(&cluster, leader).await != 0 {
            assert!(tokio::time::Instant::now() < deadline, "session still open");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // And `close` does the same, waiting for it.
        let client = connect(&cluster).await;
        assert_eq!(sessions(&cluster, leader).await, 1);
        client.close().await;
        assert_eq!(sessions(&cluster, leader).await, 0);
        cluster.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

/// A client kept busy by eight tasks stays on the leader and connected:
/// nothing it sends looks unanswered for longer than it was, and it never
/// goes looking for another server. (The unit tests `wake_tests` and
/// `a_request_sent_between_ticks_is_stamped_with_the_time_it_is_sent_at`
/// pin the two causes of such resends seen in a release build's benchmark:
/// a tick put off by every input, and requests stamped with the time of
/// the last tick.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_client_is_never_suspended_and_never_resends() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let cluster = Cluster::start(3).await;
        let client = Client::builder()
            .servers(cluster.addresses())
            .session_timeout(Duration::from_secs(2))
            .resend_after(Duration::from_millis(400))
            .request_timeout(Duration::from_secs(20))
            .connect()
            .await
            .expect("connect");
        let machine = client.machine::<NotifierApi>();
        machine.command(NotifierCommand::Add(1)).await.expect("add");
        let watched = client.clone();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let watcher = tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let status = watched.status();
                let seen_now = (status.state, status.server);
                if seen.last() != Some(&seen_now) {
                    seen.push(seen_now);
                }
                if (&mut stopped).now_or_never().is_some() {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        // Eight tasks, so that answers come more often than the client's
        // tick.
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let machine = machine.clone();
                tokio::spawn(async move {
                    let start = tokio::time::Instant::now();
                    let mut slowest = Duration::ZERO;
                    while start.elapsed() < Duration::from_secs(4) {
                        let sent = tokio::time::Instant::now();
                        machine.command(NotifierCommand::Add(1)).await.expect("add");
                        slowest = slowest.max(sent.elapsed());
                    }
                    slowest
                })
            })
            .collect();
        let mut slowest = Duration::ZERO;
        for task in tasks {
            slowest = slowest.max(task.await.expect("task"));
        }
        stop.send(()).expect("watcher runs");
        let seen = watcher.await.expect("watcher");
        assert_eq!(
            seen.len(),
            1,
            "state and server changed while busy: {seen:?} (slowest command {slowest:?})"
        );
        assert_eq!(seen[0].0, ClientState::Connected);
        client.close().await;
        cluster.shutdown().await;
    })
    .await
    .expect("test finished in time");
}
