//! Member addresses travel with the configuration: every server learns
//! where each member is reached from the log (or a snapshot), at the moment
//! it learns of the member, and a removed member's address goes with it.

use copycat_raft::testing::Cluster;
use copycat_raft::{
    Config, ConfigChangeError, Configuration, MemberRole, MembershipChange, NodeId,
    PersistentState, MAX_ADDRESS_BYTES,
};

fn config() -> Config {
    let mut config = Config::new(NodeId(1));
    config.election_timeout_ms = 100;
    config.heartbeat_interval_ms = 20;
    config.lease_clock_drift_ms = 10;
    config
}

fn settle(cluster: &mut Cluster) {
    for _ in 0..50 {
        cluster.tick(10);
        cluster.stabilize();
        cluster.check_safety();
    }
}

fn addresses_everywhere(cluster: &Cluster) -> Vec<Configuration> {
    cluster
        .nodes
        .values()
        .map(|node| node.raw.configuration().1.clone())
        .collect()
}

#[test]
fn addresses_reach_every_member_and_leave_with_removed_members() {
    let mut cluster = Cluster::new(&[1, 2, 3], config(), 7);
    let leader = cluster.elect(10, 10_000).expect("leader");
    cluster.stabilize();
    cluster.add_node(NodeId(4), PersistentState::default());
    let index = cluster
        .node_mut(leader.0)
        .raw
        .change_membership_at(
            MembershipChange::AddVoter(NodeId(4)),
            Some("h4:1".into()),
            None,
        )
        .expect("add 4");
    assert!(index.0 > 0);
    settle(&mut cluster);
    for config in addresses_everywhere(&cluster) {
        assert_eq!(config.address(NodeId(4)), Some("h4:1"), "{config:?}");
        assert_eq!(
            config.role(NodeId(4)),
            Some(MemberRole::Voter),
            "{config:?}"
        );
    }

    // A new address for an existing voter changes only the address.
    let leader = cluster.leader().expect("leader");
    cluster
        .node_mut(leader.0)
        .raw
        .change_membership_at(
            MembershipChange::AddVoter(NodeId(4)),
            Some("h4:2".into()),
            None,
        )
        .expect("move 4");
    settle(&mut cluster);
    for config in addresses_everywhere(&cluster) {
        assert_eq!(config.address(NodeId(4)), Some("h4:2"), "{config:?}");
        assert_eq!(config.role(NodeId(4)), Some(MemberRole::Voter));
    }
    // The same address again changes nothing.
    let leader = cluster.leader().expect("leader");
    let same = cluster.node_mut(leader.0).raw.change_membership_at(
        MembershipChange::AddVoter(NodeId(4)),
        Some("h4:2".into()),
        None,
    );
    assert!(
        matches!(same, Err(ConfigChangeError::Invalid(_))),
        "{same:?}"
    );
    // A demotion without an address keeps it.
    cluster
        .node_mut(leader.0)
        .raw
        .change_membership(MembershipChange::AddPassive(NodeId(4)), None)
        .expect("demote 4");
    settle(&mut cluster);
    let leader = cluster.leader().expect("leader");
    let (_, config) = cluster.node(leader.0).raw.configuration();
    assert_eq!(config.address(NodeId(4)), Some("h4:2"));
    // Removal drops the address.
    cluster
        .node_mut(leader.0)
        .raw
        .change_membership(MembershipChange::Remove(NodeId(4)), None)
        .expect("remove 4");
    settle(&mut cluster);
    let leader = cluster.leader().expect("leader");
    let (_, config) = cluster.node(leader.0).raw.configuration();
    assert_eq!(config.address(NodeId(4)), None);
    assert!(config.is_well_formed());
}

#[test]
fn oversized_or_empty_addresses_are_refused() {
    let mut cluster = Cluster::new(&[1], config(), 1);
    let leader = cluster.elect(10, 10_000).expect("leader");
    cluster.stabilize();
    for address in [String::new(), "x".repeat(MAX_ADDRESS_BYTES + 1)] {
        let refused = cluster.node_mut(leader.0).raw.change_membership_at(
            MembershipChange::AddPassive(NodeId(2)),
            Some(address),
            None,
        );
        assert!(
            matches!(refused, Err(ConfigChangeError::Invalid(_))),
            "{refused:?}"
        );
    }
}

#[test]
fn a_configuration_with_an_address_of_a_non_member_is_not_well_formed() {
    let config = Configuration::with_voters([NodeId(1)]).with_address(NodeId(2), "h2:1");
    assert!(!config.is_well_formed());
    let config = Configuration::with_voters([NodeId(1)]).with_address(NodeId(1), "h1:1");
    assert!(config.is_well_formed());
}

/// A learner is promoted only after it has acknowledged an append: a server
/// that was added but never answered must not become a voter just because
/// the leader's log is short (it would count towards quorums it cannot
/// join, and two such additions would stop the cluster).
#[test]
fn a_learner_that_never_answered_is_not_promoted() {
    let mut cluster = Cluster::new(&[1, 2, 3], config(), 11);
    let leader = cluster.elect(10, 10_000).expect("leader");
    cluster.stabilize();
    cluster.add_node(NodeId(4), PersistentState::default());
    cluster.crash(4);
    cluster
        .node_mut(leader.0)
        .raw
        .change_membership_at(MembershipChange::AddVoter(NodeId(4)), None, None)
        .expect("add 4");
    settle(&mut cluster);
    for id in [1, 2, 3] {
        let config = cluster.node(id).raw.configuration().1.clone();
        assert_eq!(
            config.role(NodeId(4)),
            Some(MemberRole::Learner),
            "promoted without an answer: {config:?}"
        );
    }
    // Once it answers, it catches up and is promoted.
    cluster.restart(4);
    settle(&mut cluster);
    for config in addresses_everywhere(&cluster) {
        assert_eq!(
            config.role(NodeId(4)),
            Some(MemberRole::Voter),
            "{config:?}"
        );
    }
}
