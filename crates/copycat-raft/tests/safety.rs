//! Property tests: random message delivery orders, drops, duplicates,
//! partitions, crashes and restarts, snapshots, membership changes and
//! leadership transfers on 3 and 5 voters, checking Raft's safety properties
//! (Figure 3) after every step:
//!
//! * Election Safety: at most one leader per term (checked by the harness
//!   whenever a node reports becoming leader);
//! * Log Matching: logs that agree on an entry's term agree on everything up
//!   to it;
//! * Leader Completeness: a leader of the newest term holds every committed
//!   entry;
//! * State Machine Safety: no two servers apply different entries at one
//!   index (checked by the harness on every apply);
//! * plus every node's internal `invariants()` after each step.
//!
//! Each case ends with a liveness phase: heal everything, restart crashed
//! nodes, let time pass, and require a leader that commits a new entry.

use bytes::Bytes;
use copycat_raft::testing::Cluster;
use copycat_raft::{Config, MembershipChange, NodeId, ReadMode};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Action {
    Tick(u64),
    Deliver(usize),
    DeliverAll,
    Drop(usize),
    Duplicate(usize),
    Propose(u64, u8),
    Crash(u64),
    Restart(u64),
    Isolate(u64),
    Heal,
    Snapshot(u64),
    Read(u64, bool),
    Transfer(u64, u64),
    Demote(u64),
    Promote(u64),
}

fn action(nodes: u64) -> impl Strategy<Value = Action> {
    let node = 1..=nodes;
    prop_oneof![
        10 => (1u64..40).prop_map(Action::Tick),
        12 => any::<usize>().prop_map(Action::Deliver),
        8 => Just(Action::DeliverAll),
        2 => any::<usize>().prop_map(Action::Drop),
        1 => any::<usize>().prop_map(Action::Duplicate),
        6 => (0..=nodes, 1u8..4).prop_map(|(n, k)| Action::Propose(n, k)),
        1 => node.clone().prop_map(Action::Crash),
        4 => node.clone().prop_map(Action::Restart),
        1 => node.clone().prop_map(Action::Isolate),
        3 => Just(Action::Heal),
        1 => node.clone().prop_map(Action::Snapshot),
        1 => (node.clone(), any::<bool>()).prop_map(|(n, l)| Action::Read(n, l)),
        1 => (node.clone(), node.clone()).prop_map(|(a, b)| Action::Transfer(a, b)),
        1 => node.clone().prop_map(Action::Demote),
        1 => node.prop_map(Action::Promote),
    ]
}

fn config() -> Config {
    let mut config = Config::new(NodeId(1));
    config.election_timeout_ms = 100;
    config.heartbeat_interval_ms = 20;
    config.max_append_entries = 3;
    config.max_inflight_appends = 3;
    config.snapshot_trailing_entries = 2;
    config.snapshot_chunk_bytes = 8;
    config.lease_clock_drift_ms = 10;
    config.promote_lag_entries = 2;
    config
}

fn run(nodes: u64, seed: u64, actions: Vec<Action>) {
    let voters: Vec<u64> = (1..=nodes).collect();
    let mut cluster = Cluster::new(&voters, config(), seed);
    cluster.tracing = false;
    let mut counter = 0u64;
    let mut read_id = 0u64;
    for action in actions {
        match action {
            Action::Tick(ms) => cluster.tick(ms),
            Action::Deliver(i) => {
                if !cluster.network.is_empty() {
                    let message = cluster.network.remove(i % cluster.network.len());
                    cluster.deliver(message);
                }
            }
            Action::DeliverAll => cluster.deliver_all(),
            Action::Drop(i) => {
                if !cluster.network.is_empty() {
                    let len = cluster.network.len();
                    cluster.network.remove(i % len);
                }
            }
            Action::Duplicate(i) => {
                if !cluster.network.is_empty() {
                    let message = cluster.network[i % cluster.network.len()].clone();
                    cluster.network.push(message);
                }
            }
            Action::Propose(id, count) => {
                // Node 0 stands for "whoever leads now".
                let id = if id == 0 {
                    cluster.leader().map_or(1, |l| l.0)
                } else {
                    id
                };
                let node = cluster.node_mut(id);
                if !node.down {
                    let commands = (0..count)
                        .map(|_| {
                            counter += 1;
                            Bytes::from(format!("c{counter}"))
                        })
                        .collect();
                    let _ = node.raw.propose(commands);
                }
            }
            Action::Crash(id) => {
                let live = cluster.nodes.values().filter(|n| !n.down).count();
                if live > 1 {
                    cluster.crash(id);
                }
            }
            Action::Restart(id) => {
                if cluster.node(id).down {
                    cluster.restart(id);
                }
            }
            Action::Isolate(id) => {
                let others: Vec<u64> = cluster
                    .nodes
                    .keys()
                    .map(|n| n.0)
                    .filter(|n| *n != id)
                    .collect();
                cluster.partition(&[id], &others);
            }
            Action::Heal => cluster.heal(),
            Action::Snapshot(id) => {
                if !cluster.node(id).down {
                    cluster.snapshot(id);
                }
            }
            Action::Read(id, lease) => {
                read_id += 1;
                let mode = if lease {
                    ReadMode::Lease
                } else {
                    ReadMode::ReadIndex
                };
                let cluster_now = cluster.now;
                let node = cluster.node_mut(id);
                if !node.down {
                    let _ = node.raw.read(read_id, mode, cluster_now);
                }
            }
            Action::Transfer(from, to) => {
                let node = cluster.node_mut(from);
                if !node.down {
                    let _ = node.raw.transfer_leadership(NodeId(to));
                }
            }
            Action::Demote(id) => {
                if let Some(leader) = cluster.leader() {
                    let raw = &mut cluster.nodes.get_mut(&leader).expect("leader").raw;
                    let _ = raw.change_membership(MembershipChange::AddPassive(NodeId(id)), None);
                }
            }
            Action::Promote(id) => {
                if let Some(leader) = cluster.leader() {
                    let raw = &mut cluster.nodes.get_mut(&leader).expect("leader").raw;
                    let _ = raw.change_membership(MembershipChange::AddVoter(NodeId(id)), None);
                }
            }
        }
        cluster.process_all();
        cluster.check_safety();
    }
    // Liveness: heal, restart everyone, and require a leader that commits.
    cluster.heal();
    let down: Vec<u64> = cluster
        .nodes
        .iter()
        .filter(|(_, n)| n.down)
        .map(|(id, _)| id.0)
        .collect();
    for id in down {
        cluster.restart(id);
    }
    cluster.tracing = std::env::var_os("SAFETY_TRACE").is_some();
    let Some(leader) = cluster.elect(10, 5_000) else {
        let trace = cluster.take_trace();
        let lines: Vec<&str> = trace.lines().collect();
        for line in &lines[lines.len().saturating_sub(60)..] {
            eprintln!("{line}");
        }
        for (id, node) in &cluster.nodes {
            let raw = &node.raw;
            eprintln!(
                "{id:?} {:?} term={:?} vote={:?} member={:?} config={:?} last={:?}/{:?} commit={:?} snapshot={:?}",
                raw.role(),
                raw.term(),
                raw.hard_state().vote,
                raw.member_role(),
                raw.configuration(),
                raw.last_index(),
                raw.term_at(raw.last_index()),
                raw.commit_index(),
                raw.snapshot_meta().index,
            );
            eprintln!("   snapshot config {:?}", raw.snapshot_meta().config);
            let mut index = raw.first_index();
            while index <= raw.last_index() {
                eprintln!("   {:?}", raw.entry(index));
                index = index.next();
            }
        }
        panic!("a leader is elected once the cluster is healed");
    };
    let mut committed = false;
    for _ in 0..200 {
        let Some(leader) = cluster.leader() else {
            cluster.tick(10);
            cluster.stabilize();
            continue;
        };
        let raw = &mut cluster.nodes.get_mut(&leader).expect("leader").raw;
        if let Ok((_, index)) = raw.propose(vec![Bytes::from_static(b"final")]) {
            for _ in 0..100 {
                cluster.tick(10);
                cluster.stabilize();
                cluster.check_safety();
                if cluster.committed.contains_key(&index) {
                    break;
                }
            }
            if cluster.committed.get(&index).is_some_and(|e| {
                e.payload == copycat_raft::EntryPayload::Command(Bytes::from_static(b"final"))
            }) {
                committed = true;
                break;
            }
        } else {
            cluster.tick(10);
            cluster.stabilize();
        }
    }
    assert!(
        committed,
        "healed cluster (first leader {leader:?}) commits a new entry"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn three_nodes(seed in any::<u64>(), actions in proptest::collection::vec(action(3), 1..2000)) {
        run(3, seed, actions);
    }

    #[test]
    fn five_nodes(seed in any::<u64>(), actions in proptest::collection::vec(action(5), 1..2000)) {
        run(5, seed, actions);
    }
}
