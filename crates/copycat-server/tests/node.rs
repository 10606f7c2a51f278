//! `ServerNode` end to end in memory: three servers, messages moved by hand,
//! persistence acknowledged at once. (The simulator covers the same code
//! under faults; these tests pin down individual behaviours.)

use bytes::Bytes;
use copycat_proto::{ClientError, Consistency, EventIndex, Request, Response, Sequence, SessionId};
use copycat_raft::EntryPayload;
use copycat_server::codec;
use copycat_server::testing::{ServerCluster, TestCommand, TestQuery};

type Cluster = ServerCluster;

fn add(n: i64) -> Bytes {
    codec::encode(&TestCommand::Add(n))
}

#[test]
fn commands_and_queries_through_the_leader() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.leader().expect("leader");
    let session = cluster.register(leader, 1, 1);
    cluster.request(
        leader,
        1,
        2,
        Request::Command {
            session,
            sequence: Sequence(1),
            payload: add(5),
        },
    );
    match cluster.responses(2).as_slice() {
        [Ok(Response::Command {
            sequence: Sequence(1),
            output: Ok(output),
            ..
        })] => {
            assert_eq!(codec::decode::<i64>(output).expect("i64"), 5);
        }
        other => panic!("command answered {other:?}"),
    }
    let query = codec::encode(&TestQuery::Get);
    cluster.request(
        leader,
        1,
        3,
        Request::Query {
            session,
            sequence: Sequence(1),
            index: 0,
            consistency: Consistency::Linearizable,
            payload: query,
        },
    );
    cluster.advance(20);
    match cluster.responses(3).as_slice() {
        [Ok(Response::Query {
            output: Ok(output), ..
        })] => assert_eq!(codec::decode::<i64>(output).expect("i64"), 5),
        other => panic!("query answered {other:?}"),
    }
    // A follower redirects commands to the leader.
    let follower = (leader + 1) % 3;
    cluster.request(
        follower,
        1,
        4,
        Request::Command {
            session,
            sequence: Sequence(2),
            payload: add(1),
        },
    );
    match cluster.responses(4).as_slice() {
        [Err(ClientError::NotLeader { hint })] => assert_eq!(*hint, Some(leader as u64 + 1)),
        other => panic!("follower answered {other:?}"),
    }
    // A sequential query is served by the follower once it applied the
    // client's last command.
    let query = codec::encode(&TestQuery::Get);
    cluster.request(
        follower,
        1,
        5,
        Request::Query {
            session,
            sequence: Sequence(1),
            index: 0,
            consistency: Consistency::Sequential,
            payload: query,
        },
    );
    assert!(matches!(
        cluster.responses(5).as_slice(),
        [Ok(Response::Query { .. })]
    ));
}

#[test]
fn a_retry_waits_on_the_entry_already_in_flight() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.leader().expect("leader");
    let session = cluster.register(leader, 1, 1);
    let before = cluster.applied.len();
    // Two sends of the same command before anything is delivered.
    for id in [10, 11] {
        let request = Request::Command {
            session,
            sequence: Sequence(1),
            payload: add(2),
        };
        cluster.submit(leader, 1, id, request);
    }
    cluster.pump();
    let commands = cluster.applied[before..]
        .iter()
        .filter(|p| matches!(p, EntryPayload::Command(_)))
        .count();
    assert_eq!(commands, 1, "one log entry for both sends");
    for id in [10, 11] {
        assert!(
            matches!(
                cluster.responses(id).as_slice(),
                [Ok(Response::Command {
                    sequence: Sequence(1),
                    ..
                })]
            ),
            "request {id} answered from the single entry"
        );
    }
}

#[test]
fn the_leader_expires_silent_sessions_and_ticks_when_idle() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.leader().expect("leader");
    let quiet = cluster.register(leader, 1, 1);
    let chatty = cluster.register(leader, 2, 2);
    let mut id = 100;
    // Nothing but keep-alives from the second client for three seconds.
    for _ in 0..30 {
        cluster.advance(100);
        id += 1;
        let request = Request::KeepAlive {
            session: chatty,
            command_sequence: Sequence(0),
            event_index: EventIndex(0),
        };
        cluster.request(leader, 2, id, request);
    }
    let open: Vec<SessionId> = cluster.servers[leader]
        .replica()
        .sessions()
        .iter()
        .map(|s| s.id)
        .collect();
    assert!(!open.contains(&quiet), "the silent session expired");
    assert!(open.contains(&chatty), "the live session did not");
    // The quiet session's commands are refused now.
    cluster.request(
        leader,
        1,
        999,
        Request::Command {
            session: quiet,
            sequence: Sequence(1),
            payload: add(1),
        },
    );
    assert!(matches!(
        cluster.responses(999).as_slice(),
        [Err(ClientError::SessionExpired)]
    ));
    // Every replica agrees.
    let digests: Vec<u32> = cluster
        .servers
        .iter()
        .map(|s| s.replica().digest())
        .collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
}
