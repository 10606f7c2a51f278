//! `ServerNode` end to end in memory: three servers, messages moved by hand,
//! persistence acknowledged at once. (The simulator covers the same code
//! under faults; these tests pin down individual behaviours.)

use bytes::Bytes;
use copycat_proto::{
    ClientError, Consistency, EventBatch, EventIndex, Request, Response, Sequence, ServerMessage,
    SessionId,
};
use copycat_raft::{Entry, EntryPayload};
use copycat_replica::codec;
use copycat_replica::testing::{ServerCluster, TestCommand, TestQuery};

type Cluster = ServerCluster;

/// A command of `session` adding `n`, with `sequence`.
fn command(session: SessionId, sequence: u64, n: i64) -> Request {
    Request::Command {
        session,
        sequence: Sequence(sequence),
        acked: Sequence::ZERO,
        payload: add(n),
    }
}

fn add(n: i64) -> Bytes {
    codec::encode(&TestCommand::Add(n))
}

#[test]
fn commands_and_queries_through_the_leader() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.leader().expect("leader");
    let session = cluster.register(leader, 1, 1);
    cluster.request(leader, 1, 2, command(session, 1, 5));
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
    cluster.request(follower, 1, 4, command(session, 2, 1));
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
        let request = command(session, 1, 2);
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
    cluster.request(leader, 1, 999, command(quiet, 1, 1));
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

/// Like [`ServerCluster::pump`], except that server `lagging` does not apply
/// its committed entries: they are kept in `withheld` (its read states are
/// still handed back). This is a server whose apply lags behind its commit,
/// as when the shell hands back read states before the entries catch up.
fn pump_withholding(cluster: &mut Cluster, lagging: usize, withheld: &mut Vec<Entry>) {
    loop {
        let mut messages = Vec::new();
        let mut moved = false;
        for (i, server) in cluster.servers.iter_mut().enumerate() {
            while server.has_ready() {
                moved = true;
                let ready = server.ready();
                if let Some(last) = ready.entries.last() {
                    server.raft_mut().persisted(last.index, last.term);
                }
                messages.extend(ready.messages);
                messages.extend(ready.messages_after_persist);
                if i == lagging {
                    withheld.extend(ready.committed_entries);
                    server.after_persist(Vec::new(), ready.read_states);
                } else {
                    server.after_persist(ready.committed_entries, ready.read_states);
                }
            }
            for (connection, message) in server.take_client_messages() {
                cluster.inbox.push((i, connection, message));
            }
        }
        for message in messages {
            moved = true;
            let to = (message.to.0 - 1) as usize;
            cluster.servers[to].raft_mut().step(message);
        }
        if !moved {
            return;
        }
    }
}

/// Apply what `server` withheld, and collect what that answers.
fn catch_up(cluster: &mut Cluster, server: usize, withheld: &mut Vec<Entry>) {
    let entries = std::mem::take(withheld);
    assert!(!entries.is_empty(), "nothing was withheld");
    cluster.servers[server].after_persist(entries, Vec::new());
    for (connection, message) in cluster.servers[server].take_client_messages() {
        cluster.inbox.push((server, connection, message));
    }
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

/// The value and index of the single answer to query `id`.
fn answer(cluster: &Cluster, id: u64) -> (i64, u64) {
    match cluster.responses(id).as_slice() {
        [Ok(Response::Query {
            index,
            output: Ok(output),
            ..
        })] => (codec::decode::<i64>(output).expect("i64"), *index),
        other => panic!("query {id} answered {other:?}"),
    }
}

fn command_index(cluster: &Cluster, id: u64) -> u64 {
    match cluster.responses(id).as_slice() {
        [Ok(Response::Command { index, .. })] => *index,
        other => panic!("command {id} answered {other:?}"),
    }
}

// A linearizable read is answered at the leader's read index: once the read
// index is confirmed, the leader still waits until its replica has applied up
// to it. Here the leader commits a command but has not applied it when the
// read is confirmed; the answer must wait for the apply (and include it).
#[test]
fn a_linearizable_read_waits_until_its_read_index_is_applied() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.leader().expect("leader");
    let session = cluster.register(leader, 1, 1);
    let mut withheld = Vec::new();
    cluster.submit(leader, 1, 2, command(session, 1, 5));
    pump_withholding(&mut cluster, leader, &mut withheld);
    assert!(
        cluster.servers[leader].raft().commit_index()
            > cluster.servers[leader].replica().applied_index(),
        "the command is committed but not applied on the leader"
    );
    assert!(cluster.responses(2).is_empty());
    // The query itself asks for nothing (sequence 0, index 0): only the read
    // index can make it wait.
    cluster.submit(
        leader,
        1,
        3,
        query(session, 0, 0, Consistency::Linearizable),
    );
    pump_withholding(&mut cluster, leader, &mut withheld);
    assert!(
        cluster.responses(3).is_empty(),
        "answered before the read index was applied: {:?}",
        cluster.responses(3)
    );
    catch_up(&mut cluster, leader, &mut withheld);
    let index = command_index(&cluster, 2);
    let (value, at) = answer(&cluster, 3);
    assert_eq!(value, 5, "the answer reflects the committed command");
    assert!(at >= index, "answered at {at}, the command is at {index}");
}

// A sequential read may be served by any server, from possibly stale state,
// but never older than what the client has seen: the server waits until it
// has applied the client's last command sequence and its highest index.
#[test]
fn a_sequential_read_waits_for_the_clients_sequence_and_index() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.leader().expect("leader");
    let follower = (leader + 1) % 3;
    let session = cluster.register(leader, 1, 1);
    // Let the follower learn (and apply) the registration.
    cluster.advance(50);
    let mut withheld = Vec::new();
    cluster.submit(leader, 1, 2, command(session, 1, 5));
    pump_withholding(&mut cluster, follower, &mut withheld);
    // The leader answered the command; the follower has it, unapplied.
    let index = command_index(&cluster, 2);
    cluster.submit(
        follower,
        1,
        3,
        query(session, 1, 0, Consistency::Sequential),
    );
    cluster.submit(
        follower,
        1,
        4,
        query(session, 0, index, Consistency::Sequential),
    );
    cluster.submit(
        follower,
        1,
        5,
        query(session, 0, 0, Consistency::Sequential),
    );
    pump_withholding(&mut cluster, follower, &mut withheld);
    assert!(
        cluster.responses(3).is_empty(),
        "did not wait for sequence 1"
    );
    assert!(
        cluster.responses(4).is_empty(),
        "did not wait for index {index}"
    );
    // Asking for nothing is answered at once, from the stale state.
    assert_eq!(answer(&cluster, 5).0, 0);
    catch_up(&mut cluster, follower, &mut withheld);
    for id in [3, 4] {
        let (value, at) = answer(&cluster, id);
        assert_eq!(value, 5, "query {id}");
        assert!(at >= index, "query {id} answered at {at} < {index}");
    }
}

/// The event batches pushed to `connection`, in order.
fn batches(cluster: &Cluster, connection: u64) -> Vec<EventBatch> {
    cluster
        .inbox
        .iter()
        .filter(|(_, c, _)| *c == connection)
        .filter_map(|(_, _, message)| match message {
            ServerMessage::Events(batch) => Some(batch.clone()),
            ServerMessage::Response { .. } => None,
        })
        .collect()
}

fn publish(
    cluster: &mut Cluster,
    server: usize,
    from: SessionId,
    to: SessionId,
    seq: u64,
    id: u64,
) {
    let name = format!("event-{seq}");
    cluster.request(
        server,
        1,
        id,
        Request::Command {
            session: from,
            sequence: Sequence(seq),
            acked: Sequence::ZERO,
            payload: codec::encode(&TestCommand::Publish {
                session: to.0,
                name,
            }),
        },
    );
}

// A client that saw a gap in its events asks to reset from the last index it
// received in order: the server answers, then resends every retained batch
// after that index, in order, on the asking connection (and pushes later
// events there).
#[test]
fn a_reset_resends_the_retained_events_after_the_index_in_order() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.leader().expect("leader");
    let sender = cluster.register(leader, 1, 1);
    let receiver = cluster.register(leader, 2, 2);
    for seq in 1..=3 {
        publish(&mut cluster, leader, sender, receiver, seq, 10 + seq);
    }
    let pushed = batches(&cluster, 2);
    assert_eq!(pushed.len(), 3, "{pushed:?}");
    let indexes: Vec<EventIndex> = pushed.iter().map(|b| b.event_index).collect();
    assert!(indexes.windows(2).all(|w| w[0] < w[1]), "{indexes:?}");

    // The client reconnects (connection 7) having received only the first.
    cluster.request(
        leader,
        7,
        20,
        Request::ResetEvents {
            session: receiver,
            from_event_index: indexes[0],
        },
    );
    assert_eq!(
        cluster.responses(20),
        [&Ok(Response::EventsReset {
            event_index: indexes[2]
        })]
    );
    assert_eq!(batches(&cluster, 7), pushed[1..].to_vec());
    // The response comes before the resent batches.
    let on_7: Vec<&ServerMessage> = cluster
        .inbox
        .iter()
        .filter(|(_, c, _)| *c == 7)
        .map(|(_, _, m)| m)
        .collect();
    assert!(
        matches!(on_7[0], ServerMessage::Response { .. }),
        "{on_7:?}"
    );
    assert_eq!(batches(&cluster, 7)[0].previous_event_index, indexes[0]);

    // From zero: everything retained, in order.
    cluster.request(
        leader,
        8,
        21,
        Request::ResetEvents {
            session: receiver,
            from_event_index: EventIndex(0),
        },
    );
    assert_eq!(batches(&cluster, 8), pushed);
    // Later events follow the session to the connection that asked last.
    publish(&mut cluster, leader, sender, receiver, 4, 14);
    let latest = batches(&cluster, 8);
    assert_eq!(latest.len(), 4);
    assert_eq!(latest[3].previous_event_index, indexes[2]);
    assert_eq!(batches(&cluster, 2).len(), 3);
}

// Found by the simulator once servers handled several inputs per batch, as
// the runtime does: a server that won an election, took a command and lost
// the leadership again before its next batch never answered the command
// (its entry may be overwritten), and retries waited on it for ever.
#[test]
fn a_command_proposed_in_a_leadership_lost_before_the_next_batch_is_answered() {
    use copycat_raft::{Message, MessageBody, NodeId, Term};
    use std::collections::VecDeque;

    let mut cluster = Cluster::new(3);
    let old = cluster.leader().expect("leader");
    let session = cluster.register(old, 1, 1);
    let new = (old + 1) % 3;
    cluster.servers[old]
        .raft_mut()
        .transfer_leadership(NodeId(new as u64 + 1))
        .expect("transfer starts");
    // Move messages by hand until `new` leads, without letting it make a
    // batch once it does.
    let mut network: VecDeque<Message> = VecDeque::new();
    while !cluster.servers[new].raft().is_leader() {
        for (i, server) in cluster.servers.iter_mut().enumerate() {
            if i == new && server.raft().is_leader() {
                continue;
            }
            while server.has_ready() {
                let ready = server.ready();
                if let Some(last) = ready.entries.last() {
                    server.raft_mut().persisted(last.index, last.term);
                }
                network.extend(ready.messages);
                network.extend(ready.messages_after_persist);
                server.after_persist(ready.committed_entries, ready.read_states);
            }
            server.take_client_messages();
        }
        let message = network.pop_front().expect("the transfer completes");
        let to = (message.to.0 - 1) as usize;
        cluster.servers[to].raft_mut().step(message);
    }
    // The new leader takes a command, then hears of a later term, all
    // before its next batch.
    cluster.submit(new, 9, 100, command(session, 1, 1));
    let raft = cluster.servers[new].raft();
    let later = Message {
        from: NodeId(old as u64 + 1),
        to: NodeId(new as u64 + 1),
        term: Term(raft.term().0 + 1),
        body: MessageBody::Vote {
            last_index: raft.last_index(),
            last_term: raft.term_at(raft.last_index()).expect("last term"),
            transfer: true,
        },
    };
    cluster.servers[new].raft_mut().step(later);
    assert!(!cluster.servers[new].raft().is_leader());
    let server = &mut cluster.servers[new];
    while server.has_ready() {
        let ready = server.ready();
        server.after_persist(ready.committed_entries, ready.read_states);
    }
    let answers: Vec<_> = server
        .take_client_messages()
        .into_iter()
        .filter_map(|(_, message)| match message {
            ServerMessage::Response { id, result } if id.0 == 100 => Some(result),
            _ => None,
        })
        .collect();
    assert!(
        matches!(answers.as_slice(), [Err(ClientError::NotLeader { .. })]),
        "the command must be answered (retry elsewhere), got {answers:?}"
    );
}

#[test]
fn a_timer_fires_on_time_on_an_idle_log() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.leader().expect("leader");
    let session = cluster.register(leader, 1, 1);
    let schedule = Request::Command {
        session,
        sequence: Sequence(1),
        acked: Sequence::ZERO,
        payload: codec::encode(&TestCommand::Schedule {
            delay_ms: 130,
            periodic: false,
        }),
    };
    cluster.request(leader, 1, 2, schedule);
    let scheduled_at = cluster.now;
    let fired = |cluster: &Cluster| {
        cluster.servers[leader]
            .replica()
            .machine()
            .0
            .journal
            .iter()
            .any(|line| line.starts_with("timer "))
    };
    // Nothing else is proposed: the idle ticks (every election timeout,
    // 100 ms here) would fire it at 200 ms; the leader appends a time entry
    // as soon as the timer is due instead.
    while !fired(&cluster) {
        cluster.advance(10);
        assert!(
            cluster.now - scheduled_at <= 150,
            "timer due after 130 ms not fired after {} ms",
            cluster.now - scheduled_at
        );
    }
    assert!(cluster.now - scheduled_at >= 130, "fired early");
}

#[test]
fn a_command_that_would_find_the_cache_full_is_refused_before_the_log() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.leader().expect("leader");
    let session = cluster.register(leader, 1, 1);
    let unacknowledged = |sequence: u64| Request::Command {
        session,
        sequence: Sequence(sequence),
        acked: Sequence::ZERO,
        payload: add(1),
    };
    // 1,024 results the client never acknowledges fill the cache.
    for sequence in 1..=1_024 {
        cluster.request(leader, 1, 1_000 + sequence, unacknowledged(sequence));
    }
    let entries = |cluster: &Cluster| cluster.servers[leader].raft().last_index();
    let before = entries(&cluster);
    cluster.request(leader, 1, 5_000, unacknowledged(1_025));
    assert!(matches!(
        cluster.responses(5_000).as_slice(),
        [Err(ClientError::ResultCacheFull { max: 1_024 })]
    ));
    assert_eq!(entries(&cluster), before, "nothing written to the log");
    // A retry of an applied command is still answered from the cache.
    cluster.request(leader, 1, 5_001, unacknowledged(7));
    assert!(matches!(
        cluster.responses(5_001).as_slice(),
        [Ok(Response::Command {
            sequence: Sequence(7),
            ..
        })]
    ));
    // Acknowledging what came back makes room at once.
    let acknowledging = Request::Command {
        session,
        sequence: Sequence(1_025),
        acked: Sequence(1_024),
        payload: add(1),
    };
    cluster.request(leader, 1, 5_002, acknowledging);
    assert!(matches!(
        cluster.responses(5_002).as_slice(),
        [Ok(Response::Command {
            sequence: Sequence(1_025),
            ..
        })]
    ));
}

/// The keep-alives in the entries server 0 applied: (entries with one,
/// batched entries with the number of keep-alives in each).
fn keep_alive_entries(cluster: &Cluster) -> (usize, Vec<usize>) {
    let mut single = 0;
    let mut batched = Vec::new();
    for payload in &cluster.applied {
        let EntryPayload::Command(data) = payload else {
            continue;
        };
        match copycat_proto::LogCommand::decode(data)
            .expect("decodes")
            .body
        {
            copycat_proto::LogBody::KeepAlive { .. } => single += 1,
            copycat_proto::LogBody::KeepAlives(batch) => batched.push(batch.len()),
            _ => {}
        }
    }
    (single, batched)
}

fn keep_alive(session: SessionId) -> Request {
    Request::KeepAlive {
        session,
        command_sequence: Sequence(0),
        event_index: EventIndex(0),
    }
}

#[test]
fn keep_alives_of_many_sessions_share_one_entry() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.leader().expect("leader");
    let sessions: Vec<SessionId> = (0..50)
        .map(|i| cluster.register(leader, 10 + i, 10 + i as u64))
        .collect();
    for (i, session) in sessions.iter().enumerate() {
        cluster.submit(
            leader,
            10 + i as u64,
            1_000 + i as u64,
            keep_alive(*session),
        );
    }
    cluster.pump();
    assert_eq!(cluster.servers[leader].batched_keep_alives(), 50);
    assert!(cluster.responses(1_000).is_empty(), "waits for the batch");
    // Sessions of 1 s: a keep-alive waits at most an eighth of that.
    for _ in 0..13 {
        cluster.advance(10);
    }
    for i in 0..50 {
        assert!(
            matches!(
                cluster.responses(1_000 + i).as_slice(),
                [Ok(Response::KeptAlive { .. })]
            ),
            "keep-alive {i}: {:?}",
            cluster.responses(1_000 + i)
        );
    }
    assert_eq!(keep_alive_entries(&cluster), (0, vec![50]));
    assert_eq!(cluster.servers[leader].batched_keep_alives(), 0);
}

/// A keep-alive waiting in a batch when its session turns suspect goes
/// into the log before the leader's expiry of the session, which then
/// finds it alive.
#[test]
fn a_batched_keep_alive_is_applied_before_its_session_is_expired() {
    // Time entries every 10 ms, so log time follows the clock closely.
    let mut cluster = Cluster::with_config(3, |config| config.idle_tick_ms = 10);
    let leader = cluster.leader().expect("leader");
    let session = cluster.register(leader, 1, 1);
    let registered = cluster.servers[leader].replica().time_ms();
    // Late: 15 ms before the 1 s session turns suspect, so the keep-alive
    // is still in its batch (which may wait 125 ms) when that happens.
    while cluster.servers[leader].replica().time_ms() < registered + 985 {
        cluster.advance(5);
    }
    let leader = cluster.leader().expect("leader");
    cluster.submit(leader, 1, 2, keep_alive(session));
    cluster.pump();
    assert_eq!(cluster.servers[leader].batched_keep_alives(), 1);
    let mut waited = 0;
    while cluster.responses(2).is_empty() {
        assert!(waited < 3_000, "the keep-alive was never answered");
        cluster.advance(5);
        waited += 5;
    }
    assert!(
        matches!(
            cluster.responses(2).as_slice(),
            [Ok(Response::KeptAlive { .. })]
        ),
        "{:?}",
        cluster.responses(2)
    );
    let open = cluster.servers[leader].replica().sessions();
    assert!(
        open.iter().any(|s| s.id == session),
        "the session was expired although its keep-alive came in time: {open:?}"
    );
}

/// A follower does not batch: it answers at once with the leader's id.
#[test]
fn a_follower_refuses_a_keep_alive_at_once() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.leader().expect("leader");
    let follower = (leader + 1) % 3;
    let session = cluster.register(leader, 1, 1);
    cluster.request(follower, 1, 2, keep_alive(session));
    assert!(
        matches!(
            cluster.responses(2).as_slice(),
            [Err(ClientError::NotLeader { hint: Some(_) })]
        ),
        "{:?}",
        cluster.responses(2)
    );
    assert_eq!(cluster.servers[follower].batched_keep_alives(), 0);
}
