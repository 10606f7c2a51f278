//! Replicas on top of the Raft harness: one replica per node, fed that
//! node's committed entries, across a leader crash. The client resubmits
//! what it has no answer for (with the same sequences), sometimes twice, so
//! the log holds duplicates; every replica must apply each command once and
//! all replicas must agree.

use std::collections::BTreeMap;

use copycat_proto::{ClientId, EventIndex, LogBody, LogCommand, Response, Sequence, SessionId};
use copycat_raft::testing::Cluster;
use copycat_raft::{Config, LogIndex, NodeId};
use copycat_replica::testing::{TestCommand, TestMachine};
use copycat_replica::{codec, Outcome, Replica, ReplicaConfig, Typed};

type TestReplica = Replica<Typed<TestMachine>>;

struct World {
    cluster: Cluster,
    replicas: BTreeMap<NodeId, TestReplica>,
    /// Command answers seen on any replica, by sequence; all replicas must
    /// produce the same answer.
    answers: BTreeMap<(SessionId, Sequence), Response>,
    registered: BTreeMap<ClientId, SessionId>,
}

fn fresh_replica() -> TestReplica {
    let config = ReplicaConfig {
        min_session_timeout_ms: 50,
        ..ReplicaConfig::default()
    };
    Replica::new(config, Typed(TestMachine::default())).unwrap()
}

impl World {
    fn new(seed: u64) -> Self {
        let mut config = Config::new(NodeId(1));
        config.election_timeout_ms = 150;
        config.heartbeat_interval_ms = 30;
        config.lease_clock_drift_ms = 30;
        let mut cluster = Cluster::new(&[1, 2, 3], config, seed);
        cluster.tracing = false;
        let replicas = cluster
            .nodes
            .keys()
            .map(|id| (*id, fresh_replica()))
            .collect();
        Self {
            cluster,
            replicas,
            answers: BTreeMap::new(),
            registered: BTreeMap::new(),
        }
    }

    /// Feed every node's newly applied entries to its replica.
    fn feed(&mut self) {
        for (id, node) in &self.cluster.nodes {
            let replica = self.replicas.get_mut(id).expect("replica per node");
            if node.applied_index <= replica.applied_index() {
                continue;
            }
            let range = replica.applied_index().next()..=node.applied_index;
            for (_, entry) in self.cluster.committed.range(range) {
                let applied = replica.apply(entry);
                replica.invariants();
                match applied.outcome {
                    Outcome::Command {
                        session,
                        sequence,
                        result: Ok(response),
                    } => {
                        let previous = self.answers.insert((session, sequence), response.clone());
                        if let Some(previous) = previous {
                            assert_eq!(previous, response, "replicas answer alike");
                        }
                    }
                    Outcome::Register {
                        client,
                        result: Ok(Response::Registered { session, .. }),
                    } => {
                        self.registered.insert(client, session);
                    }
                    _ => {}
                }
            }
        }
    }

    fn settle(&mut self) {
        self.cluster.stabilize();
        self.feed();
    }

    fn leader(&mut self) -> NodeId {
        loop {
            if let Some(leader) = self.cluster.leader() {
                return leader;
            }
            self.cluster.tick(10);
            self.settle();
        }
    }

    /// Propose on the leader, stamped with the leader's clock.
    fn propose(&mut self, body: LogBody) {
        let leader = self.leader();
        let data = LogCommand {
            timestamp_ms: self.cluster.now.0,
            body,
        }
        .encode();
        let raw = &mut self.cluster.nodes.get_mut(&leader).expect("leader").raw;
        raw.propose(vec![data]).expect("leader accepts");
    }

    /// What the leader's shell does on every tick: propose an expire entry
    /// for each suspect session, and a tick when there is nothing else, so
    /// time (and expiry) advances without traffic.
    fn leader_duties(&mut self) {
        let leader = self.leader();
        let suspects = self.replicas[&leader].suspect_sessions();
        for session in suspects {
            self.propose(LogBody::Expire { session });
        }
        self.propose(LogBody::Tick);
    }
}

fn add(session: SessionId, sequence: u64) -> LogBody {
    LogBody::Command {
        session,
        sequence: Sequence(sequence),
        acked: Sequence::ZERO,
        payload: codec::encode(&TestCommand::Add(sequence as i64)),
    }
}

#[test]
fn replicas_agree_and_apply_each_command_once_across_a_leader_crash() {
    for seed in 0..10 {
        let mut world = World::new(seed);
        world.leader();
        world.propose(LogBody::Register {
            client: ClientId(1),
            timeout_ms: 2_000,
        });
        world.propose(LogBody::Register {
            client: ClientId(2),
            timeout_ms: 300,
        });
        world.settle();
        let session = world.registered[&ClientId(1)];
        let silent = world.registered[&ClientId(2)];

        // Commands 1..=10, each proposed once, some twice (a client retry).
        for sequence in 1..=10 {
            world.propose(add(session, sequence));
            if sequence % 3 == 0 {
                world.propose(add(session, sequence));
            }
        }
        world.settle();
        // Commands 11..=20 proposed and the leader crashes before sending
        // them anywhere (they may be lost).
        for sequence in 11..=20 {
            world.propose(add(session, sequence));
        }
        let old = world.leader();
        if seed % 2 == 0 {
            // Let some replication happen first, so part of them survive.
            world.cluster.deliver_all();
            world.cluster.process_all();
        }
        world.cluster.crash(old.0);
        let new = world.leader();
        assert_ne!(new, old);
        // The client keeps its session alive, then resubmits everything it
        // has no answer for, in order, with the same sequence numbers.
        world.propose(LogBody::KeepAlive {
            session,
            command_sequence: Sequence(10),
            event_index: EventIndex(0),
        });
        for sequence in 11..=20 {
            if !world.answers.contains_key(&(session, Sequence(sequence))) {
                world.propose(add(session, sequence));
            }
        }
        world.settle();
        // The old leader comes back and catches up from the log.
        world.cluster.restart(old.0);
        world.replicas.insert(old, fresh_replica());
        // Time passes: the silent session must be expired through the log.
        for _ in 0..20 {
            world.cluster.tick(50);
            world.leader_duties();
            world.propose(LogBody::KeepAlive {
                session,
                command_sequence: Sequence(20),
                event_index: EventIndex(0),
            });
            world.settle();
        }
        world.cluster.check_safety();

        // The log really holds duplicates (the retries of 3, 6 and 9 at
        // least), so "applied once" below is not vacuous.
        let command_entries = world
            .cluster
            .committed
            .values()
            .filter(|entry| match &entry.payload {
                copycat_raft::EntryPayload::Command(data) => matches!(
                    LogCommand::decode(data).map(|c| c.body),
                    Ok(LogBody::Command { .. })
                ),
                _ => false,
            })
            .count();
        assert!(
            command_entries >= 23,
            "seed {seed}: {command_entries} command entries"
        );
        for sequence in 1..=20 {
            assert!(
                world.answers.contains_key(&(session, Sequence(sequence))),
                "seed {seed}: command {sequence} answered"
            );
        }
        let digests: Vec<u32> = world.replicas.values().map(|r| r.digest()).collect();
        let applied: Vec<LogIndex> = world.replicas.values().map(|r| r.applied_index()).collect();
        assert!(
            applied.windows(2).all(|w| w[0] == w[1]),
            "seed {seed}: all caught up {applied:?}"
        );
        assert!(
            digests.windows(2).all(|w| w[0] == w[1]),
            "seed {seed}: replicas agree {digests:?}"
        );
        for replica in world.replicas.values() {
            let machine = &replica.machine().0;
            assert_eq!(
                machine.value,
                (1..=20).sum::<i64>(),
                "seed {seed}: each add applied once"
            );
            let applies = machine
                .journal
                .iter()
                .filter(|l| l.starts_with("apply"))
                .count();
            assert_eq!(applies, 20, "seed {seed}");
            let sessions: Vec<SessionId> = replica.sessions().iter().map(|s| s.id).collect();
            assert_eq!(
                sessions,
                vec![session],
                "seed {seed}: the silent session expired"
            );
            assert!(machine.journal.contains(&format!("expired {}", silent.0)));
        }
    }
}
