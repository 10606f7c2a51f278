//! Ignored messages are counted per reason in `Stats` and listed by
//! `RawNode::take_ignored`.

use copycat_raft::testing::Cluster;
use copycat_raft::{Config, IgnoreReason, LogIndex, Message, MessageBody, NodeId, Term};

fn elected() -> Cluster {
    let mut cluster = Cluster::new(&[1, 2, 3], Config::new(NodeId(1)), 1);
    cluster.tracing = false;
    cluster.elect(10, 2_000).expect("a leader");
    cluster
}

#[test]
fn every_ignored_message_is_counted_and_listed_with_its_reason() {
    let mut cluster = elected();
    let leader = cluster.leader().expect("a leader");
    let follower = cluster
        .nodes
        .keys()
        .copied()
        .find(|id| *id != leader)
        .expect("a follower");
    let term = cluster.nodes[&leader].raw.term();
    let raw = &mut cluster.nodes.get_mut(&follower).expect("node").raw;
    let _ = raw.take_ignored();
    let before = raw.stats();
    let cases = [
        // Addressed to someone else.
        (leader, NodeId(99), term, IgnoreReason::WrongRecipient),
        // From the reserved id.
        (NodeId(0), follower, term, IgnoreReason::ReservedSender),
        // A vote answer from an older term.
        (leader, follower, Term(term.0 - 1), IgnoreReason::StaleTerm),
        // A vote answer to a follower.
        (leader, follower, term, IgnoreReason::NotCandidate),
    ];
    for (from, to, term, _) in cases {
        raw.step(Message {
            from,
            to,
            term,
            body: MessageBody::VoteResponse { granted: true },
        });
    }
    // A follower answer while not leading.
    raw.step(Message {
        from: leader,
        to: follower,
        term,
        body: MessageBody::AppendResponse {
            index: LogIndex(1),
            reject: None,
            read_round: 0,
        },
    });
    raw.invariants();
    let ignored = raw.take_ignored();
    let reasons: Vec<IgnoreReason> = ignored.iter().map(|i| i.reason).collect();
    let mut expected: Vec<IgnoreReason> = cases.iter().map(|c| c.3).collect();
    expected.push(IgnoreReason::NotLeader);
    assert_eq!(reasons, expected);
    assert_eq!(
        ignored[3].to_string(),
        format!("ignored VoteResponse {term:?} from {leader:?}: not a candidate")
    );
    assert!(raw.take_ignored().is_empty(), "drained");
    let stats = raw.stats();
    for reason in &expected {
        let count = expected.iter().filter(|r| *r == reason).count() as u64;
        assert_eq!(stats.ignored(*reason) - before.ignored(*reason), count);
    }
    assert_eq!(stats.dropped_invalid - before.dropped_invalid, 2);
    assert_eq!(stats.dropped_stale - before.dropped_stale, 3);
}

#[test]
fn reasons_are_classified_and_described() {
    for reason in IgnoreReason::ALL {
        assert!(!reason.describe().is_empty());
        assert_eq!(IgnoreReason::ALL[*reason as usize], *reason);
    }
    assert!(IgnoreReason::Malformed.is_invalid());
    assert!(!IgnoreReason::LeaderLeaseNotExpired.is_invalid());
    assert_eq!(
        IgnoreReason::LeaderLeaseNotExpired.to_string(),
        "leader lease not expired"
    );
}
