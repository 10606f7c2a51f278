//! Queries that wait (for a quorum's confirmation, or for the server to
//! apply the index and command sequence their client has seen) are bounded
//! in number, and stop waiting when their connection closes: a client
//! asking for an index that never comes cannot make a server hold its
//! queries forever.

use copycat_proto::{ClientError, Consistency, Request, Response, Sequence, SessionId};
use copycat_replica::codec;
use copycat_replica::testing::{ServerCluster, TestCommand, TestQuery};

const MAX: usize = 3;

fn cluster() -> ServerCluster {
    ServerCluster::with_config(3, |config| config.max_waiting_queries = MAX)
}

fn query(session: SessionId, sequence: u64, index: u64, consistency: Consistency) -> Request {
    Request::Query {
        session,
        sequence: Sequence(sequence),
        index,
        consistency,
        payload: codec::encode(&TestQuery::Get),
    }
}

fn command(session: SessionId, sequence: u64) -> Request {
    Request::Command {
        session,
        sequence: Sequence(sequence),
        acked: Sequence::ZERO,
        payload: codec::encode(&TestCommand::Add(1)),
    }
}

fn refused_as_too_many(cluster: &ServerCluster, id: u64) -> bool {
    matches!(
        cluster.responses(id).as_slice(),
        [Err(ClientError::Unavailable(reason))] if reason.contains("too many queries waiting")
    )
}

#[test]
fn queries_beyond_the_bound_are_refused_and_answerable_ones_still_served() {
    let mut cluster = cluster();
    let leader = cluster.leader().unwrap();
    let session = cluster.register(leader, 1, 1);
    // Queries for an index no log will reach wait.
    for id in 10..10 + MAX as u64 {
        cluster.request(
            leader,
            1,
            id,
            query(session, 0, u64::MAX, Consistency::Sequential),
        );
        assert!(cluster.responses(id).is_empty(), "query {id} answered");
    }
    assert_eq!(cluster.servers[leader].waiting_queries(), MAX);
    // One more is refused, sequential or linearizable...
    cluster.request(
        leader,
        2,
        20,
        query(session, 0, u64::MAX, Consistency::Sequential),
    );
    assert!(
        refused_as_too_many(&cluster, 20),
        "{:?}",
        cluster.responses(20)
    );
    cluster.request(
        leader,
        2,
        21,
        query(session, 0, 0, Consistency::Linearizable),
    );
    assert!(
        refused_as_too_many(&cluster, 21),
        "{:?}",
        cluster.responses(21)
    );
    cluster.request(
        leader,
        2,
        22,
        query(session, 0, 0, Consistency::LinearizableLease),
    );
    assert!(
        refused_as_too_many(&cluster, 22),
        "{:?}",
        cluster.responses(22)
    );
    assert_eq!(cluster.servers[leader].waiting_queries(), MAX);
    // ... but a sequential query that need not wait is answered.
    cluster.request(leader, 2, 23, query(session, 0, 0, Consistency::Sequential));
    assert!(
        matches!(
            cluster.responses(23).as_slice(),
            [Ok(Response::Query { .. })]
        ),
        "{:?}",
        cluster.responses(23)
    );
}

#[test]
fn closing_a_connection_drops_its_waiting_queries() {
    let mut cluster = cluster();
    let leader = cluster.leader().unwrap();
    let follower = (leader + 1) % 3;
    let session = cluster.register(leader, 1, 1);
    // Connection 7 waits on the follower for command 2 of the session,
    // connection 8 for the same; both fill the bound with one to spare.
    cluster.request(
        follower,
        7,
        30,
        query(session, 2, 0, Consistency::Sequential),
    );
    cluster.request(
        follower,
        7,
        31,
        query(session, 2, 0, Consistency::Sequential),
    );
    cluster.request(
        follower,
        8,
        32,
        query(session, 2, 0, Consistency::Sequential),
    );
    assert_eq!(cluster.servers[follower].waiting_queries(), 3);
    cluster.servers[follower].connection_closed(7);
    assert_eq!(cluster.servers[follower].waiting_queries(), 1);
    // Room again.
    cluster.request(
        follower,
        8,
        33,
        query(session, 2, 0, Consistency::Sequential),
    );
    assert!(cluster.responses(33).is_empty());
    // When the session's commands apply, only the open connection's
    // queries are answered.
    cluster.request(leader, 1, 40, command(session, 1));
    cluster.request(leader, 1, 41, command(session, 2));
    cluster.advance(50);
    for id in [32, 33] {
        assert!(
            matches!(
                cluster.responses(id).as_slice(),
                [Ok(Response::Query { .. })]
            ),
            "query {id}: {:?}",
            cluster.responses(id)
        );
    }
    for id in [30, 31] {
        assert!(
            cluster.responses(id).is_empty(),
            "query {id} of the closed connection answered"
        );
    }
    assert_eq!(cluster.servers[follower].waiting_queries(), 0);
}

#[test]
fn closing_a_connection_forgets_its_reads_being_confirmed() {
    let mut cluster = cluster();
    let leader = cluster.leader().unwrap();
    let session = cluster.register(leader, 1, 1);
    // Submitted, not pumped: the read waits for the quorum round.
    cluster.submit(
        leader,
        5,
        50,
        query(session, 0, 0, Consistency::Linearizable),
    );
    assert_eq!(cluster.servers[leader].waiting_queries(), 1);
    cluster.servers[leader].connection_closed(5);
    assert_eq!(cluster.servers[leader].waiting_queries(), 0);
    cluster.advance(50);
    assert!(
        cluster.responses(50).is_empty(),
        "{:?}",
        cluster.responses(50)
    );
    // The server still confirms reads for the others.
    cluster.request(
        leader,
        6,
        51,
        query(session, 0, 0, Consistency::Linearizable),
    );
    cluster.advance(50);
    assert!(
        matches!(
            cluster.responses(51).as_slice(),
            [Ok(Response::Query { .. })]
        ),
        "{:?}",
        cluster.responses(51)
    );
}
