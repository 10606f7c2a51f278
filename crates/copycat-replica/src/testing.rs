//! A small state machine exercising every replica feature, for tests of this
//! crate, of the simulator and of runtimes built on the replica.
//!
//! [`TestMachine`] keeps an integer, records every callback it receives in
//! [`TestMachine::journal`], and interprets [`TestCommand`]s that publish
//! events, schedule and cancel timers, and fail on demand.

use bytes::Bytes;
use copycat_proto::SessionId;
use copycat_raft::{Entry, EntryPayload, LogIndex, Term};
use serde::{Deserialize, Serialize};

use crate::machine::{ApplyContext, QueryContext, RestoreError, StateMachine};
use crate::timers::TimerId;

/// The commands of [`TestMachine`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestCommand {
    /// Add to the value and return the new value.
    Add(i64),
    /// Return an application error (and change nothing).
    Fail,
    /// Publish an event named `name` to `session` (the id), returning 1 if
    /// the session was open, else 0.
    Publish {
        /// Receiving session id.
        session: u64,
        /// Event name.
        name: String,
    },
    /// Schedule a timer; returns its id.
    Schedule {
        /// Delay (or interval) in ms.
        delay_ms: u64,
        /// Whether it repeats.
        periodic: bool,
    },
    /// Cancel a timer; returns 1 if it was pending.
    Cancel(u64),
}

/// The queries of [`TestMachine`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestQuery {
    /// The current value.
    Get,
}

/// See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestMachine {
    /// The value.
    pub value: i64,
    /// Every callback, as `"<what> <detail> @<index>/<time>"` lines.
    pub journal: Vec<String>,
}

impl StateMachine for TestMachine {
    type Command = TestCommand;
    type Query = TestQuery;
    type Output = i64;
    type Error = String;

    fn apply(&mut self, ctx: &mut ApplyContext<'_>, command: TestCommand) -> Result<i64, String> {
        self.journal.push(format!(
            "apply {command:?} from {:?} @{}/{}",
            ctx.session(),
            ctx.index().0,
            ctx.time_ms()
        ));
        match command {
            TestCommand::Add(delta) => {
                self.value = self.value.wrapping_add(delta);
                Ok(self.value)
            }
            TestCommand::Fail => Err(format!("failed at {}", ctx.index().0)),
            TestCommand::Publish { session, name } => Ok(i64::from(ctx.publish(
                SessionId(session),
                name,
                Bytes::new(),
            ))),
            TestCommand::Schedule { delay_ms, periodic } => {
                let id = if periodic {
                    ctx.schedule_periodic(delay_ms)
                } else {
                    ctx.schedule(delay_ms)
                };
                id.map(|id| id.0 as i64).map_err(|e| e.to_string())
            }
            TestCommand::Cancel(id) => Ok(i64::from(ctx.cancel(TimerId(id)))),
        }
    }

    fn query(&self, _ctx: &QueryContext, query: TestQuery) -> Result<i64, String> {
        match query {
            TestQuery::Get => Ok(self.value),
        }
    }

    fn on_timer(&mut self, ctx: &mut ApplyContext<'_>, timer: TimerId) {
        self.journal.push(format!(
            "timer {} @{}/{}",
            timer.0,
            ctx.index().0,
            ctx.time_ms()
        ));
        // Tell every open session, so timers produce events too.
        let sessions: Vec<SessionId> = ctx.sessions().map(|s| s.id).collect();
        for session in sessions {
            ctx.publish(
                session,
                "timer",
                Bytes::from(timer.0.to_le_bytes().to_vec()),
            );
        }
    }

    fn session_opened(&mut self, ctx: &mut ApplyContext<'_>, session: SessionId) {
        self.journal.push(format!("opened {}", session.0));
        let _ = ctx;
    }

    fn session_expired(&mut self, ctx: &mut ApplyContext<'_>, session: SessionId) {
        self.journal.push(format!("expired {}", session.0));
        // Tell the others, as a lock or group would.
        let others: Vec<SessionId> = ctx.sessions().map(|s| s.id).collect();
        for other in others {
            ctx.publish(other, "gone", Bytes::from(session.0.to_le_bytes().to_vec()));
        }
    }

    fn session_closed(&mut self, _ctx: &mut ApplyContext<'_>, session: SessionId) {
        self.journal.push(format!("closed {}", session.0));
    }

    fn snapshot(&self) -> Bytes {
        crate::codec::encode(self)
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        *self = crate::codec::decode(data).map_err(|e| RestoreError(e.to_string()))?;
        Ok(())
    }
}

/// A committed entry carrying `data` at `index` (term 1), for feeding a
/// replica by hand.
pub fn command_entry(index: u64, data: Bytes) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        payload: EntryPayload::Command(data),
    }
}

/// Three (or more) [`ServerNode`](crate::node::ServerNode)s running
/// [`TestMachine`] in memory: persistence is acknowledged at once and
/// messages move between in-process queues. For tests and benchmarks of the
/// server core; the simulator covers the same code under faults.
pub struct ServerCluster {
    /// The servers; server `i` has node id `i + 1`.
    pub servers: Vec<crate::node::ServerNode<crate::machine::Typed<TestMachine>>>,
    /// Current time (ms), used for both clocks.
    pub now: u64,
    /// Client messages produced: (server index, connection, message).
    pub inbox: Vec<(usize, u64, copycat_proto::ServerMessage)>,
    /// Payloads of the entries applied by server 0, in order.
    pub applied: Vec<EntryPayload>,
}

impl ServerCluster {
    /// `size` servers with fast timeouts (election 100 ms), run until one
    /// leads.
    pub fn new(size: u64) -> Self {
        Self::with_config(size, |_| {})
    }

    /// [`new`](Self::new), with each server's configuration changed by
    /// `adjust` first.
    pub fn with_config(size: u64, adjust: impl Fn(&mut crate::node::ServerConfig)) -> Self {
        use copycat_raft::{Config, Configuration, NodeId, PersistentState, Time};
        let ids: Vec<NodeId> = (1..=size).map(NodeId).collect();
        let membership = Configuration::with_voters(ids.iter().copied());
        let servers = ids
            .iter()
            .map(|id| {
                let mut raft = Config::new(*id);
                raft.election_timeout_ms = 100;
                raft.heartbeat_interval_ms = 20;
                raft.lease_clock_drift_ms = 10;
                raft.max_uncommitted_bytes = 1 << 30;
                let mut config = crate::node::ServerConfig::new(raft);
                adjust(&mut config);
                let state = PersistentState::bootstrap(membership.clone());
                let machine = crate::machine::Typed(TestMachine::default());
                crate::node::ServerNode::new(config, state, &[], machine, 7, Time(0), 0)
                    .expect("valid test server")
            })
            .collect();
        let mut cluster = Self {
            servers,
            now: 0,
            inbox: Vec::new(),
            applied: Vec::new(),
        };
        while cluster.leader().is_none() {
            cluster.advance(10);
        }
        cluster
    }

    /// The index of the leading server, if any.
    pub fn leader(&self) -> Option<usize> {
        self.servers.iter().position(|s| s.raft().is_leader())
    }

    /// Carry out every ready and deliver every message until nothing moves.
    pub fn pump(&mut self) {
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
                        self.applied
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

    /// Advance both clocks of every server by `ms`, then pump.
    pub fn advance(&mut self, ms: u64) {
        self.now += ms;
        for server in &mut self.servers {
            server.tick(copycat_raft::Time(self.now), self.now);
        }
        self.pump();
    }

    /// Hand a request to a server (without pumping).
    pub fn submit(
        &mut self,
        server: usize,
        connection: u64,
        id: u64,
        request: copycat_proto::Request,
    ) {
        let request = copycat_proto::ClientRequest {
            id: copycat_proto::RequestId(id),
            request,
        };
        let now = copycat_raft::Time(self.now);
        self.servers[server].on_request(connection, request, now);
    }

    /// Submit and pump.
    pub fn request(
        &mut self,
        server: usize,
        connection: u64,
        id: u64,
        request: copycat_proto::Request,
    ) {
        self.submit(server, connection, id, request);
        self.pump();
    }

    /// The responses received so far for request `id`.
    pub fn responses(
        &self,
        id: u64,
    ) -> Vec<&Result<copycat_proto::Response, copycat_proto::ClientError>> {
        self.inbox
            .iter()
            .filter_map(|(_, _, message)| match message {
                copycat_proto::ServerMessage::Response { id: r, result } if r.0 == id => {
                    Some(result)
                }
                _ => None,
            })
            .collect()
    }

    /// Register a session for `client` through `server`; panics unless it
    /// is granted.
    pub fn register(&mut self, server: usize, client: u128, id: u64) -> SessionId {
        let request = copycat_proto::Request::Register {
            client: copycat_proto::ClientId(client),
            timeout_ms: 1_000,
        };
        self.request(server, client as u64, id, request);
        match self.responses(id).as_slice() {
            [Ok(copycat_proto::Response::Registered { session, .. })] => *session,
            other => panic!("registration answered {other:?}"),
        }
    }
}
