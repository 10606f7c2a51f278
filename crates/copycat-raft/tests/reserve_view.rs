//! A reserve learns the configuration from reserve heartbeats (it holds no
//! log). A demotion it learned that way may never commit: the leader that
//! sent it can lose it, and the next leader replicates to the server as a
//! member again. Its own view must then give way to the log.

use copycat_raft::testing::Cluster;
use copycat_raft::{
    Config, Configuration, LogIndex, MemberRole, Message, MessageBody, NodeId, Term,
};

#[test]
fn a_demotion_that_never_committed_gives_way_to_the_next_leaders_log() {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::new(NodeId(1)), 7);
    cluster.tracing = false;
    let raw = &mut cluster.nodes.get_mut(&NodeId(3)).expect("node").raw;
    assert_eq!(raw.member_role(), Some(MemberRole::Voter));
    let mut demoted = Configuration::default();
    demoted.members.insert(NodeId(1), MemberRole::Voter);
    demoted.members.insert(NodeId(2), MemberRole::Voter);
    demoted.members.insert(NodeId(3), MemberRole::Reserve);
    // n1 leads term 2 and has appended (not committed) n3's demotion at 5.
    raw.step(Message {
        from: NodeId(1),
        to: NodeId(3),
        term: Term(2),
        body: MessageBody::ReserveHeartbeat {
            commit: LogIndex(0),
            config: demoted,
            config_index: LogIndex(5),
        },
    });
    assert_eq!(raw.member_role(), Some(MemberRole::Reserve));
    // n1 lost it; n2 leads term 3 with the first configuration and
    // replicates to n3.
    raw.step(Message {
        from: NodeId(2),
        to: NodeId(3),
        term: Term(3),
        body: MessageBody::Heartbeat {
            commit: LogIndex(0),
            read_round: 1,
        },
    });
    raw.invariants();
    assert_eq!(
        raw.member_role(),
        Some(MemberRole::Voter),
        "the log's configuration, not the lost demotion"
    );
}
