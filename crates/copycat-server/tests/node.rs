//! `ServerNode` end to end in memory: three servers, messages moved by hand,
//! persistence acknowledged at once. (The simulator covers the same code
//! under faults; these tests pin down individual behaviours.)

use bytes::Bytes;
use copycat_proto::{
    ClientError, ClientId, ClientRequest, Consistency, EventIndex, Request, RequestId, Response,
    Sequence, ServerMessage, SessionId,
};
use copycat_raft::{Config, Configuration, EntryPayload, NodeId, PersistentState, Time};
use copycat_server::codec;
use copycat_server::node::{ServerConfig, ServerNode};
use copycat_server::testing::{TestCommand, TestMachine, TestQuery};
use copycat_server::Typed;

type Server = ServerNode<Typed<TestMachine>>;

struct Cluster {
    servers: Vec<Server>,
    now: u64,
    /// Client messages received: (server index, connection, message).
    inbox: Vec<(usize, u64, ServerMessage)>,
    /// Log entries applied on server 0, by kind, for counting.
    entries: Vec<EntryPayload>,
}

impl Cluster {
    fn new() -> Self {
        let ids = [NodeId(1), NodeId(2), NodeId(3)];
        let membership = Configuration::with_voters(ids);
        let servers = ids
            .iter()
            .map(|id| {
                let mut raft = Config::new(*id);
                raft.election_timeout_ms = 100;
                raft.heartbeat_interval_ms = 20;
                raft.lease_clock_drift_ms = 10;
                let config = ServerConfig::new(raft);
                let state = PersistentState::bootstrap(membership.clone());
                ServerNode::new(
                    config,
                    state,
                    &[],
                    Typed(TestMachine::default()),
                    7,
                    Time(0),
                    0,
                )
                .expect("server")
            })
            .collect();
        let mut cluster = Self {
            servers,
            now: 0,
            inbox: Vec::new(),
            entries: Vec::new(),
        };
        while cluster.leader().is_none() {
            cluster.advance(10);
        }
        cluster
    }

    fn leader(&self) -> Option<usize> {
        self.servers.iter().position(|s| s.raft().is_leader())
    }

    /// Carry out every ready and deliver every message until quiet.
    fn pump(&mut self) {
        loop {
            let mut messages = Vec::new();
            let mut moved = false;
            for (i, server) in self.servers.iter_mut().enumerate() {
                while server.has_ready() {
                    moved = true;
                    let ready = server.ready();
                    if let Some(last) = ready.entries.last() {
                        server.raft_mut().persisted(last.index, last.term);
                    }
                    if i == 0 {
                        self.entries
                            .extend(ready.committed_entries.iter().map(|e| e.payload.clone()));
                    }
                    messages.extend(ready.messages);
                    messages.extend(ready.messages_after_persist);
                    server.after_persist(ready.committed_entries, ready.read_states);
                }
                for (connection, message) in server.take_client_messages() {
                    self.inbox.push((i, connection, message));
                }
            }
            for message in messages {
                moved = true;
                let to = (message.to.0 - 1) as usize;
                self.servers[to].raft_mut().step(message);
            }
            if !moved {
                return;
            }
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        for server in &mut self.servers {
            server.tick(Time(self.now), self.now);
        }
        self.pump();
    }

    fn request(&mut self, server: usize, connection: u64, id: u64, request: Request) {
        let now = Time(self.now);
        self.servers[server].on_request(
            connection,
            ClientRequest {
                id: RequestId(id),
                request,
            },
            now,
        );
        self.pump();
    }

    fn response(&self, id: u64) -> Vec<&Result<Response, ClientError>> {
        self.inbox
            .iter()
            .filter_map(|(_, _, m)| match m {
                ServerMessage::Response { id: r, result } if *r == RequestId(id) => Some(result),
                _ => None,
            })
            .collect()
    }

    fn register(&mut self, server: usize, client: u128, id: u64) -> SessionId {
        self.request(
            server,
            client as u64,
            id,
            Request::Register {
                client: ClientId(client),
                timeout_ms: 1_000,
            },
        );
        match self.response(id).as_slice() {
            [Ok(Response::Registered { session, .. })] => *session,
            other => panic!("registration answered {other:?}"),
        }
    }
}

fn add(n: i64) -> Bytes {
    codec::encode(&TestCommand::Add(n))
}

#[test]
fn commands_and_queries_through_the_leader() {
    let mut cluster = Cluster::new();
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
    match cluster.response(2).as_slice() {
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
    match cluster.response(3).as_slice() {
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
    match cluster.response(4).as_slice() {
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
        cluster.response(5).as_slice(),
        [Ok(Response::Query { .. })]
    ));
}

#[test]
fn a_retry_waits_on_the_entry_already_in_flight() {
    let mut cluster = Cluster::new();
    let leader = cluster.leader().expect("leader");
    let session = cluster.register(leader, 1, 1);
    let before = cluster.entries.len();
    // Two sends of the same command before anything is delivered.
    let now = Time(cluster.now);
    for id in [10, 11] {
        let request = Request::Command {
            session,
            sequence: Sequence(1),
            payload: add(2),
        };
        cluster.servers[leader].on_request(
            1,
            ClientRequest {
                id: RequestId(id),
                request,
            },
            now,
        );
    }
    cluster.pump();
    let commands = cluster.entries[before..]
        .iter()
        .filter(|p| matches!(p, EntryPayload::Command(_)))
        .count();
    assert_eq!(commands, 1, "one log entry for both sends");
    for id in [10, 11] {
        assert!(
            matches!(
                cluster.response(id).as_slice(),
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
    let mut cluster = Cluster::new();
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
        cluster.response(999).as_slice(),
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
