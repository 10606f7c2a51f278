//! A three-server Raft cluster in one process, in memory: elect a leader,
//! replicate commands, crash the leader, elect another, keep going.
//!
//! Run it with `cargo run -p copycat-raft --example cluster`.

use bytes::Bytes;
use copycat_raft::testing::Cluster;
use copycat_raft::{Config, EntryPayload, NodeId};

fn main() {
    let mut config = Config::new(NodeId(1));
    config.election_timeout_ms = 150;
    config.heartbeat_interval_ms = 30;
    config.lease_clock_drift_ms = 30;
    let mut cluster = Cluster::new(&[1, 2, 3], config, 42);
    cluster.tracing = false;

    println!("Three servers start with no leader. Letting time pass...");
    let leader = cluster.elect(10, 10_000).expect("a leader is elected");
    let term = cluster.nodes[&leader].raw.term();
    println!(
        "  at {:?}: {leader:?} is leader of term {term:?}",
        cluster.now
    );

    for word in ["alpha", "beta", "gamma"] {
        let raw = &mut cluster.nodes.get_mut(&leader).expect("leader").raw;
        let (index, _) = raw
            .propose(vec![Bytes::from(word)])
            .expect("leader accepts");
        cluster.stabilize();
        println!("  proposed {word:?} at {index:?}; committed on every server");
    }

    println!("Crashing the leader {leader:?}...");
    cluster.crash(leader.0);
    let next = loop {
        cluster.tick(10);
        cluster.stabilize();
        if let Some(next) = cluster.leader() {
            break next;
        }
    };
    let term = cluster.nodes[&next].raw.term();
    println!(
        "  at {:?}: {next:?} is leader of term {term:?}",
        cluster.now
    );

    let raw = &mut cluster.nodes.get_mut(&next).expect("leader").raw;
    let (index, _) = raw
        .propose(vec![Bytes::from("delta")])
        .expect("leader accepts");
    cluster.stabilize();
    println!("  proposed \"delta\" at {index:?}");

    println!("Restarting {leader:?}; it catches up from the new leader...");
    cluster.restart(leader.0);
    for _ in 0..20 {
        cluster.tick(10);
        cluster.stabilize();
    }
    cluster.check_safety();

    for (id, node) in &cluster.nodes {
        let commands: Vec<String> = node
            .applied
            .iter()
            .map(|(_, data)| String::from_utf8_lossy(data).into_owned())
            .collect();
        println!(
            "  {id:?} ({:?}, term {:?}) applied {commands:?}",
            node.raw.role(),
            node.raw.term()
        );
    }
    let reference = &cluster.nodes[&next].applied;
    assert!(
        cluster.nodes.values().all(|n| &n.applied == reference),
        "every server applied the same commands"
    );
    let committed = cluster
        .committed
        .values()
        .filter(|e| matches!(e.payload, EntryPayload::Command(_)))
        .count();
    println!("All servers applied the same {committed} commands in the same order.");
}
