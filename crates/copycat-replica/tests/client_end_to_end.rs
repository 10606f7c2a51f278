//! The client session core against a replica through a lossy link: a tiny
//! single-server shell turns requests into log commands, applies them and
//! routes outcomes back, while a seeded RNG drops responses and event
//! pushes. Every command must apply exactly once, results must arrive in
//! order, and events must be delivered in order without loss or repeats.

use std::collections::BTreeMap;

use copycat_client::session::{ClientConfig, ClientOutput, ClientSession};
use copycat_proto::{
    ClientId, ClientRequest, LogBody, LogCommand, Request, RequestId, ServerMessage, SessionId,
};
use copycat_raft::LogIndex;
use copycat_replica::testing::{command_entry, TestCommand, TestMachine};
use copycat_replica::{codec, Outcome, QueryOutcome, Replica, ReplicaConfig, Typed};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Shell {
    replica: Replica<Typed<TestMachine>>,
    next_index: u64,
    /// Who waits for which log outcome.
    waiting: BTreeMap<String, RequestId>,
}

impl Shell {
    fn handle(&mut self, now: u64, request: ClientRequest) -> Vec<ServerMessage> {
        let body = match request.request {
            Request::Register { client, timeout_ms } => {
                self.waiting
                    .insert(format!("register {client:?}"), request.id);
                LogBody::Register { client, timeout_ms }
            }
            Request::KeepAlive {
                session,
                command_sequence,
                event_index,
            } => {
                self.waiting
                    .insert(format!("session {session:?}"), request.id);
                LogBody::KeepAlive {
                    session,
                    command_sequence,
                    event_index,
                }
            }
            Request::Unregister { session } => {
                self.waiting
                    .insert(format!("session {session:?}"), request.id);
                LogBody::Unregister { session }
            }
            Request::Command {
                session,
                sequence,
                acked,
                payload,
            } => {
                self.waiting
                    .insert(format!("command {session:?} {sequence:?}"), request.id);
                LogBody::Command {
                    session,
                    sequence,
                    acked,
                    payload,
                }
            }
            Request::Query {
                session,
                sequence,
                index,
                payload,
                ..
            } => {
                return match self
                    .replica
                    .query(session, sequence, LogIndex(index), &payload)
                {
                    QueryOutcome::Done(result) => vec![ServerMessage::Response {
                        id: request.id,
                        result,
                    }],
                    QueryOutcome::Wait => panic!("a single server has applied everything"),
                };
            }
            Request::ResetEvents {
                session,
                from_event_index,
            } => {
                let mut out = Vec::new();
                match self.replica.reset_events(session, from_event_index) {
                    Ok((response, batches)) => {
                        out.push(ServerMessage::Response {
                            id: request.id,
                            result: Ok(response),
                        });
                        out.extend(batches.into_iter().map(ServerMessage::Events));
                    }
                    Err(error) => out.push(ServerMessage::Response {
                        id: request.id,
                        result: Err(error),
                    }),
                }
                return out;
            }
        };
        let entry = command_entry(
            self.next_index,
            LogCommand {
                timestamp_ms: now,
                body,
            }
            .encode(),
        );
        self.next_index += 1;
        let applied = self.replica.apply(&entry);
        self.replica.invariants();
        let mut out: Vec<ServerMessage> = applied
            .events
            .into_iter()
            .map(ServerMessage::Events)
            .collect();
        let (key, result) = match applied.outcome {
            Outcome::Register { client, result } => (format!("register {client:?}"), result),
            Outcome::Session { session, result } => (format!("session {session:?}"), result),
            Outcome::Command {
                session,
                sequence,
                result,
            } => (format!("command {session:?} {sequence:?}"), result),
            other => panic!("unexpected {other:?}"),
        };
        if let Some(id) = self.waiting.remove(&key) {
            out.push(ServerMessage::Response { id, result });
        }
        out
    }
}

#[test]
fn commands_apply_once_and_results_and_events_arrive_in_order_over_a_lossy_link() {
    for seed in 0..20 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut shell = Shell {
            replica: Replica::new(ReplicaConfig::default(), Typed(TestMachine::default())).unwrap(),
            next_index: 1,
            waiting: BTreeMap::new(),
        };
        let config = ClientConfig {
            session_timeout_ms: 60_000,
            request_timeout_ms: 200,
            backoff_ms: vec![50, 50, 100],
            ..ClientConfig::new(ClientId(5))
        };
        let mut client = ClientSession::new(config, 0).unwrap();
        client.connected(1);
        let mut operations = Vec::new();
        let mut results = BTreeMap::new();
        let mut events = Vec::new();
        let mut session = None;
        let mut now = 0;
        for _ in 0..2_000 {
            let round = operations.len();
            if round < 40 && session.is_some() {
                let command = if round % 2 == 0 {
                    TestCommand::Add(1)
                } else {
                    TestCommand::Publish {
                        session: session.map_or(0, |s: SessionId| s.0),
                        name: format!("ev{round}"),
                    }
                };
                operations.push((
                    client.submit_command(codec::encode(&command)).unwrap(),
                    command,
                ));
            }
            now += 10;
            client.tick(now);
            let mut outputs = client.take_outputs();
            while !outputs.is_empty() {
                for output in outputs {
                    match output {
                        ClientOutput::Send { request, .. } => {
                            for message in shell.handle(now, request) {
                                if rng.gen_bool(0.25) {
                                    continue; // lost on the way back
                                }
                                client.on_message(1, message);
                            }
                        }
                        ClientOutput::CommandDone { operation, result } => {
                            assert!(
                                results.insert(operation, result).is_none(),
                                "one result per operation"
                            );
                        }
                        ClientOutput::Event {
                            event, event_index, ..
                        } => events.push((event_index, event.name)),
                        ClientOutput::SessionOpened { session: id, .. } => session = Some(id),
                        _ => {}
                    }
                }
                outputs = client.take_outputs();
            }
            if results.len() == 40 {
                break;
            }
        }
        assert_eq!(results.len(), 40, "seed {seed}: every command answered");
        // Results came in submission order, and each Add applied once: the
        // returned counter values are 1, 2, 3, ... with no repeats.
        let order: Vec<_> = results.keys().copied().collect();
        let expected: Vec<_> = operations.iter().map(|(op, _)| *op).collect();
        assert_eq!(order, expected);
        let adds: Vec<i64> = operations
            .iter()
            .filter(|(_, c)| matches!(c, TestCommand::Add(_)))
            .map(|(op, _)| codec::decode(results[op].as_ref().unwrap()).unwrap())
            .collect();
        assert_eq!(adds, (1..=20).collect::<Vec<i64>>(), "seed {seed}");
        assert_eq!(shell.replica.machine().0.value, 20);
        let names: Vec<&str> = events.iter().map(|(_, n)| n.as_str()).collect();
        let published: Vec<String> = (0..40)
            .filter(|r| r % 2 == 1)
            .map(|r| format!("ev{r}"))
            .collect();
        assert_eq!(
            names, published,
            "seed {seed}: events in order, none lost or repeated"
        );
    }
}
