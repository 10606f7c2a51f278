//! TLS clusters on loopback with certificates made by rcgen: a cluster
//! whose servers authenticate each other by certificate elects a leader and
//! serves a TLS client; a server whose certificate another CA signed takes
//! no part; a plain client, a plain admin call and a client that trusts
//! another CA each get a clear error while the servers keep serving.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use copycat_client::{Client, Error, Unavailable};
use copycat_net::{framed, ClientTls, ServerTls};
use copycat_proto::{AdminRequest, AdminResponse, Hello, PeerAnswer};
use futures_util::{SinkExt, StreamExt};
use support::certs::{Ca, Identity};
use support::{Cluster, NotifierApi, NotifierCommand, NotifierQuery};
use tokio::net::TcpListener;

const TEST_DEADLINE: Duration = Duration::from_secs(90);

/// A server's TLS: `identity` presented, `trusted` the CA it verifies
/// others against.
fn server_tls(identity: &Identity, trusted: &Ca) -> ServerTls {
    ServerTls::from_pem(
        identity.cert.as_bytes(),
        identity.key.as_bytes(),
        trusted.pem().as_bytes(),
        false,
    )
    .expect("server TLS")
}

fn client_tls(trusted: &Ca) -> ClientTls {
    ClientTls::from_ca_pem(trusted.pem().as_bytes()).expect("client TLS")
}

/// Servers `1..=n` on 127.0.0.1, bootstrapped as one cluster, server `id`
/// with the TLS `tls(id)` gives it.
async fn tls_cluster(n: u64, tls: impl Fn(u64) -> ServerTls) -> Cluster {
    let mut listeners = BTreeMap::new();
    let mut addrs = BTreeMap::new();
    for id in 1..=n {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        addrs.insert(id, listener.local_addr().expect("addr"));
        listeners.insert(id, listener);
    }
    let mut cluster = Cluster {
        root: tempfile::tempdir().expect("tempdir"),
        addrs,
        servers: BTreeMap::new(),
        max_connections: None,
    };
    for (id, listener) in listeners {
        let server = cluster
            .builder(id)
            .listener(listener)
            .tls(tls(id))
            .start()
            .await
            .expect("start");
        cluster.servers.insert(id, server);
    }
    cluster
}

async fn tls_client(servers: Vec<String>, tls: ClientTls) -> Client {
    Client::builder()
        .servers(servers)
        .tls(tls)
        .request_timeout(Duration::from_secs(20))
        .connect()
        .await
        .expect("a TLS client connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_elects_a_leader_and_serves_a_tls_client() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let ca = Ca::new("copycat test CA");
        let identity = ca.issue("server", &["127.0.0.1", "localhost"]);
        let cluster = tls_cluster(3, |_| server_tls(&identity, &ca)).await;
        let leader = cluster.leader().await;
        assert!(cluster.servers[&leader].status().is_leader());

        let client = tls_client(cluster.addresses(), client_tls(&ca)).await;
        let machine = client.machine::<NotifierApi>();
        assert_eq!(
            machine.command(NotifierCommand::Add(5)).await.expect("add"),
            5
        );
        assert_eq!(
            machine.command(NotifierCommand::Add(2)).await.expect("add"),
            7
        );
        assert_eq!(machine.query(NotifierQuery::Total).await.expect("query"), 7);
        // Every server applies what the leader replicated over TLS.
        let deadline = Instant::now() + Duration::from_secs(10);
        let leader_commit = cluster.servers[&leader].status().commit;
        while cluster
            .servers
            .values()
            .any(|s| s.status().applied < leader_commit)
        {
            assert!(
                Instant::now() < deadline,
                "followers did not catch up over TLS"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A hostname the certificate names works as well as the IP.
        let by_name = format!("localhost:{}", cluster.addrs[&leader].port());
        let named = tls_client(vec![by_name], client_tls(&ca)).await;
        let machine = named.machine::<NotifierApi>();
        assert_eq!(machine.query(NotifierQuery::Total).await.expect("query"), 7);
        named.close().await;

        // Admin calls over TLS.
        let status = copycat_net::admin_call_tls(
            &cluster.addrs[&1].to_string(),
            &AdminRequest::Status,
            Duration::from_secs(5),
            Some(&client_tls(&ca)),
        )
        .await
        .expect("admin over TLS");
        assert!(matches!(status, AdminResponse::Status(_)), "{status:?}");
        for server in cluster.servers.values() {
            assert_eq!(server.net_stats().tls_failed, 0);
            assert_eq!(server.net_stats().peers_refused, 0);
        }
        client.close().await;
        cluster.shutdown().await;
    })
    .await
    .expect("test deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_clients_and_clients_trusting_another_ca_are_refused_clearly() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let ca = Ca::new("copycat test CA");
        let identity = ca.issue("server", &["127.0.0.1"]);
        let cluster = tls_cluster(3, |_| server_tls(&identity, &ca)).await;
        cluster.leader().await;
        let addr = cluster.addrs[&1];

        // A client without TLS: an error naming the cause, well before its
        // connect timeout would make it a bare timeout.
        let started = Instant::now();
        let error = Client::builder()
            .servers([addr.to_string()])
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .err()
            .expect("a plain client is refused");
        assert!(
            matches!(&error, Error::Unavailable(Unavailable::NotCopycat { detail, .. }) if detail.contains("TLS")),
            "{error:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(cluster.servers[&1].net_stats().tls_failed >= 1);

        // A plain admin call is refused too, saying why.
        let error = copycat_net::admin_call(&addr.to_string(), &AdminRequest::Status, Duration::from_secs(5))
            .await
            .expect_err("a plain admin call is refused");
        assert!(error.to_string().contains("TLS"), "{error}");

        // A client that trusts another CA refuses the servers' certificate.
        let other = Ca::new("another CA");
        let error = Client::builder()
            .servers([addr.to_string()])
            .tls(client_tls(&other))
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .err()
            .expect("the server's certificate does not verify");
        match &error {
            Error::Unavailable(Unavailable::Tls { addr: at, error: detail }) => {
                assert_eq!(*at, addr);
                assert!(detail.contains("certificate"), "{detail}");
            }
            other => panic!("expected a TLS error, got {other:?}"),
        }
        assert!(error.to_string().contains("TLS with"), "{error}");

        // A certificate that does not name the address dialed is refused:
        // this one names only 127.0.0.1, not localhost.
        let error = Client::builder()
            .servers([format!("localhost:{}", addr.port())])
            .tls(client_tls(&ca))
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .err()
            .expect("the certificate does not name localhost");
        assert!(
            matches!(&error, Error::Unavailable(Unavailable::Tls { error, .. }) if error.contains("not valid for name") || error.contains("NotValidForName")),
            "{error:?}"
        );

        // The servers keep serving TLS clients.
        let client = tls_client(cluster.addresses(), client_tls(&ca)).await;
        let machine = client.machine::<NotifierApi>();
        assert_eq!(machine.command(NotifierCommand::Add(3)).await.expect("add"), 3);
        client.close().await;
        cluster.shutdown().await;
    })
    .await
    .expect("test deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_must_present_a_certificate_when_the_servers_require_one() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let ca = Ca::new("copycat test CA");
        let identity = ca.issue("server", &["127.0.0.1"]);
        let cluster = tls_cluster(1, |_| {
            ServerTls::from_pem(
                identity.cert.as_bytes(),
                identity.key.as_bytes(),
                ca.pem().as_bytes(),
                true,
            )
            .expect("server TLS")
        })
        .await;
        cluster.leader().await;
        let addr = cluster.addrs[&1].to_string();
        let error = Client::builder()
            .servers([addr.clone()])
            .tls(client_tls(&ca))
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .err()
            .expect("a client without a certificate is refused");
        assert!(
            matches!(&error, Error::Unavailable(Unavailable::Tls { .. })),
            "{error:?}"
        );
        let user = ca.issue("a client", &["client.invalid"]);
        let with_cert = ClientTls::from_pem_with_cert(
            ca.pem().as_bytes(),
            user.cert.as_bytes(),
            user.key.as_bytes(),
        )
        .expect("client TLS with a certificate");
        let client = tls_client(vec![addr], with_cert).await;
        let machine = client.machine::<NotifierApi>();
        assert_eq!(
            machine.command(NotifierCommand::Add(1)).await.expect("add"),
            1
        );
        client.close().await;
        cluster.shutdown().await;
    })
    .await
    .expect("test deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_certificate_another_ca_signed_takes_no_part() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let ca = Ca::new("copycat test CA");
        let rogue = Ca::new("rogue CA");
        let good = ca.issue("server", &["127.0.0.1"]);
        let bad = rogue.issue("impostor", &["127.0.0.1"]);
        // Server 3 trusts the cluster's CA (it could verify the others) but
        // presents a certificate the rogue CA signed.
        let cluster = tls_cluster(3, |id| {
            if id == 3 {
                server_tls(&bad, &ca)
            } else {
                server_tls(&good, &ca)
            }
        })
        .await;
        let leader = cluster.leader().await;
        assert_ne!(leader, 3, "the impostor cannot lead");
        let good_servers = vec![cluster.addrs[&1].to_string(), cluster.addrs[&2].to_string()];
        let client = tls_client(good_servers, client_tls(&ca)).await;
        let machine = client.machine::<NotifierApi>();
        for i in 1..=5 {
            assert_eq!(
                machine.command(NotifierCommand::Add(1)).await.expect("add"),
                i
            );
        }
        // Give the impostor a few election timeouts to try.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let impostor = cluster.servers[&3].status();
        let leader_status = cluster.servers[&leader].status();
        assert_eq!(
            impostor.leader, None,
            "the impostor heard from the leader: {impostor:?}"
        );
        assert!(
            impostor.commit < leader_status.commit,
            "the impostor got the log: {impostor:?} vs {leader_status:?}"
        );
        assert!(!impostor.is_leader());
        // The good servers closed its connections at the handshake, and it
        // was told its certificate was refused.
        let refused: u64 = [1, 2]
            .iter()
            .map(|id| cluster.servers[id].net_stats().tls_failed)
            .sum();
        assert!(refused > 0, "the good servers refused no TLS handshake");
        assert!(cluster.servers[&3].net_stats().refused_by_peers > 0);
        // The two good servers still agree on the leader and serve.
        assert_eq!(
            cluster.servers[&1].status().leader,
            cluster.servers[&2].status().leader
        );
        assert_eq!(machine.query(NotifierQuery::Total).await.expect("query"), 5);
        client.close().await;
        cluster.shutdown().await;
    })
    .await
    .expect("test deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_tls_without_a_certificate_is_refused() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let ca = Ca::new("copycat test CA");
        let identity = ca.issue("server", &["127.0.0.1"]);
        let cluster = tls_cluster(1, |_| server_tls(&identity, &ca)).await;
        cluster.leader().await;
        let addr = cluster.addrs[&1];
        let server = &cluster.servers[&1];
        let tcp = copycat_net::connect(addr).await.expect("connect");
        let stream = client_tls(&ca)
            .connect(&addr.to_string(), tcp)
            .await
            .expect("the handshake succeeds without a client certificate");
        let mut framed = framed(stream);
        let hello = Hello::Peer {
            cluster: server.cluster_id(),
            id: 1,
            settings: Vec::new(),
        };
        framed
            .send(copycat_proto::encode_frame(&hello))
            .await
            .expect("send hello");
        let answer = framed.next().await.expect("an answer").expect("a frame");
        match copycat_proto::decode_frame::<PeerAnswer>(&answer).expect("a peer answer") {
            PeerAnswer::Refused(reason) => {
                assert!(reason.contains("certificate"), "{reason}")
            }
            PeerAnswer::Accepted => panic!("a peer without a certificate was accepted"),
        }
        assert_eq!(server.net_stats().tls_failed, 1);
        cluster.shutdown().await;
    })
    .await
    .expect("test deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_of_a_server_without_tls_gets_a_tls_error() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let cluster = Cluster::start(1).await;
        cluster.leader().await;
        let addr = cluster.addrs[&1];
        let ca = Ca::new("copycat test CA");
        let error = Client::builder()
            .servers([addr.to_string()])
            .tls(client_tls(&ca))
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .err()
            .expect("a plain server does not do TLS");
        assert!(
            matches!(&error, Error::Unavailable(Unavailable::Tls { addr: at, .. }) if *at == addr),
            "{error:?}"
        );
        assert!(cluster.servers[&1].net_stats().tls_failed >= 1);
        // It keeps serving plain clients.
        let client = Client::builder()
            .servers(cluster.addresses())
            .connect()
            .await
            .expect("a plain client");
        let machine = client.machine::<NotifierApi>();
        assert_eq!(
            machine.command(NotifierCommand::Add(4)).await.expect("add"),
            4
        );
        client.close().await;
        cluster.shutdown().await;
    })
    .await
    .expect("test deadline");
}
