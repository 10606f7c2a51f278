//! Lease reads (Raft thesis §6.4.1) are only safe if no other leader can be
//! elected while a lease is held. These tests isolate a leader right after a
//! confirmed round and let the rest of the cluster elect a new leader as fast
//! as it can, millisecond by millisecond, checking after every step that the
//! old leader's lease ran out first.

use bytes::Bytes;
use copycat_raft::testing::Cluster;
use copycat_raft::{Config, NodeId, ReadMode};

fn config() -> Config {
    let mut config = Config::new(NodeId(1));
    config.election_timeout_ms = 100;
    config.heartbeat_interval_ms = 20;
    config.lease_clock_drift_ms = 10;
    config
}

#[test]
fn isolated_leader_lease_expires_before_a_new_leader_is_elected() {
    let mut new_leader_elected = 0;
    for seed in 0..200 {
        let mut cluster = Cluster::new(&[1, 2, 3], config(), seed);
        cluster.tracing = false;
        let leader = cluster.elect(10, 10_000).expect("leader");
        // A few rounds so the lease is fresh.
        for _ in 0..5 {
            cluster.tick(5);
            cluster.stabilize();
        }
        assert!(
            cluster.nodes[&leader].raw.lease_until().is_some(),
            "a working leader holds a lease"
        );
        let others: Vec<u64> = cluster
            .nodes
            .keys()
            .map(|n| n.0)
            .filter(|n| *n != leader.0)
            .collect();
        cluster.partition(&[leader.0], &others);
        for _ in 0..600 {
            cluster.tick(1);
            cluster.stabilize();
            cluster.check_safety();
            // A lease read is answered at once only while the lease holds.
            let now = cluster.now;
            let raw = &mut cluster.nodes.get_mut(&leader).expect("old leader").raw;
            if raw.lease_until().is_some() {
                raw.read(u64::MAX, ReadMode::Lease, now)
                    .expect("leader accepts reads");
            }
        }
        if cluster
            .leaders
            .keys()
            .last()
            .is_some_and(|term| *term > cluster.nodes[&leader].raw.term())
        {
            new_leader_elected += 1;
        }
    }
    assert!(
        new_leader_elected > 150,
        "the majority elected a new leader in most runs ({new_leader_elected})"
    );
}

#[test]
fn leadership_transfer_ends_the_lease() {
    let mut cluster = Cluster::new(&[1, 2, 3], config(), 7);
    cluster.tracing = false;
    let leader = cluster.elect(10, 10_000).expect("leader");
    // Leases come from heartbeat rounds.
    cluster.tick(20);
    cluster.stabilize();
    assert!(cluster.nodes[&leader].raw.lease_until().is_some());
    let target = cluster
        .nodes
        .keys()
        .copied()
        .find(|id| *id != leader)
        .expect("other");
    cluster
        .nodes
        .get_mut(&leader)
        .expect("leader")
        .raw
        .transfer_leadership(target)
        .expect("transfer");
    assert_eq!(
        cluster.nodes[&leader].raw.lease_until(),
        None,
        "no lease once a transfer starts"
    );
    cluster.stabilize();
    assert_eq!(
        cluster.leader(),
        Some(target),
        "the target took over at once"
    );
}

#[test]
fn lease_read_falls_back_to_a_quorum_round_without_a_lease() {
    let mut cluster = Cluster::new(&[1, 2, 3], config(), 3);
    cluster.tracing = false;
    let leader = cluster.elect(10, 10_000).expect("leader");
    let raw = &mut cluster.nodes.get_mut(&leader).expect("leader").raw;
    raw.propose(vec![Bytes::from_static(b"x")])
        .expect("propose");
    cluster.stabilize();
    // Let the lease run out without delivering anything.
    let others: Vec<u64> = cluster
        .nodes
        .keys()
        .map(|n| n.0)
        .filter(|n| *n != leader.0)
        .collect();
    cluster.partition(&[leader.0], &others);
    for _ in 0..10 {
        cluster.tick(10);
        cluster.deliver_all();
    }
    let now = cluster.now;
    let raw = &mut cluster.nodes.get_mut(&leader).expect("leader").raw;
    assert!(raw.is_leader() && raw.lease_until().is_none());
    raw.read(1, ReadMode::Lease, now).expect("accepted");
    cluster.process_all();
    assert!(
        !cluster.nodes[&leader].reads.contains_key(&1),
        "not answered without a lease or a round"
    );
    // The read waits for a round that starts after it: the next heartbeat.
    cluster.heal();
    cluster.tick(20);
    cluster.stabilize();
    let read = &cluster.nodes[&leader].reads[&1];
    assert!(
        read.result.is_ok(),
        "answered once a quorum confirmed a round: {read:?}"
    );
}
