//! The networked runtime: a [`Shell`] that joins a [`crate::node::ServerNode`]
//! to its durable [`copycat_storage::Storage`], and [`serve`], which runs a
//! shell behind one TCP listener with tokio.
//!
//! The shell is synchronous and clock-free; it carries out the core's
//! [`copycat_raft::Ready`] batches exactly as documented there, with group
//! commit: every batch pending is written, one sync makes all of them
//! durable, and only then go the messages that promise durability out and
//! are committed entries applied.

mod net;
mod shell;

pub use net::{
    framed, serve, Hello, ServeOptions, ServerHandle, ServerHello, Status, HELLO_TIMEOUT,
    MAX_CONNECTIONS, MAX_FRAME_BYTES,
};
pub use shell::{Outputs, Recovered, Shell, ShellConfig, ShellError, Synced, Written};

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::sync::Arc;

    use bytes::Bytes;
    use copycat_client::session::{ClientConfig, ClientOutput, ClientSession};
    use copycat_proto::ClientId;
    use copycat_raft::{Config, NodeId, Time};
    use copycat_storage::{Disk, MemDisk, StorageOptions};

    use super::*;
    use crate::codec;
    use crate::node::ServerConfig;
    use crate::testing::{TestCommand, TestMachine};
    use crate::Typed;

    type TestShell = Shell<Typed<TestMachine>>;

    fn open(disk: &Arc<dyn Disk>, id: u64, now: u64) -> TestShell {
        let mut server = ServerConfig::new(Config::new(NodeId(id)));
        server.snapshot_every_entries = 15;
        let config = ShellConfig {
            server,
            storage: StorageOptions::default(),
            seed: id,
        };
        let members = [NodeId(1), NodeId(2), NodeId(3)];
        let dir = PathBuf::from(format!("/data/{id}"));
        Shell::open(
            config,
            &dir,
            Arc::clone(disk),
            &members,
            Typed(TestMachine::default()),
            Time(now),
            now,
        )
        .expect("open")
    }

    /// Three shells and one client session, wired by hand.
    struct Cluster {
        disk: Arc<dyn Disk>,
        shells: BTreeMap<u64, TestShell>,
        session: ClientSession,
        now: u64,
        done: Vec<Result<Bytes, String>>,
    }

    impl Cluster {
        fn step(&mut self) {
            self.now += 5;
            let now = self.now;
            let mut peer = Vec::new();
            let mut to_client = Vec::new();
            for shell in self.shells.values_mut() {
                shell.tick(Time(now), now);
                let out = shell.process().expect("process");
                peer.extend(out.peer_messages);
                let from = shell.id().0;
                to_client.extend(out.client_messages.into_iter().map(|(_, m)| (from, m)));
            }
            for message in peer {
                if let Some(shell) = self.shells.get_mut(&message.to.0) {
                    shell.step(message);
                }
            }
            for (from, message) in to_client {
                self.session.on_message(from, message);
            }
            self.session.tick(now);
            for output in self.session.take_outputs() {
                match output {
                    ClientOutput::Send { server, request } => {
                        if let Some(shell) = self.shells.get_mut(&server) {
                            shell.on_request(1, request, Time(now));
                        }
                    }
                    ClientOutput::CommandDone { result, .. } => {
                        self.done.push(result.map_err(|e| e.to_string()));
                    }
                    _ => {}
                }
            }
        }

        fn run_until(&mut self, limit_steps: usize, mut done: impl FnMut(&Self) -> bool) {
            for _ in 0..limit_steps {
                if done(self) {
                    return;
                }
                self.step();
            }
            panic!("condition not reached in {limit_steps} steps");
        }

        fn value(&self, id: u64) -> i64 {
            self.shells[&id].server().replica().machine().0.value
        }
    }

    #[test]
    fn three_shells_elect_commit_and_recover_after_restart() {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let shells = (1..=3).map(|id| (id, open(&disk, id, 0))).collect();
        let mut session = ClientSession::new(ClientConfig::new(ClientId(7)), 0).expect("session");
        for id in 1..=3 {
            session.connected(id);
        }
        let mut cluster = Cluster {
            disk,
            shells,
            session,
            now: 0,
            done: Vec::new(),
        };
        cluster.run_until(2_000, |c| {
            c.shells.values().any(|s| s.server().raft().is_leader())
                && c.session.session_id().is_some()
        });
        for _ in 0..20 {
            cluster
                .session
                .submit_command(codec::encode(&TestCommand::Add(2)))
                .expect("submit");
        }
        cluster.run_until(2_000, |c| c.done.len() == 20);
        let outputs: Vec<i64> = cluster
            .done
            .iter()
            .map(|r| codec::decode(r.as_ref().expect("command ok")).expect("decode"))
            .collect();
        assert_eq!(outputs, (1..=20).map(|i| 2 * i).collect::<Vec<i64>>());
        cluster.run_until(2_000, |c| (1..=3).all(|id| c.value(id) == 40));
        assert!(cluster.shells.values().all(|s| s.syncs() > 0));

        // Group commit: five registrations proposed together, one sync.
        let leader = (1..=3)
            .find(|id| cluster.shells[id].server().raft().is_leader())
            .expect("a leader");
        let shell = cluster.shells.get_mut(&leader).expect("leader");
        let before = shell.syncs();
        for client in 100..105 {
            let request = copycat_proto::ClientRequest {
                id: copycat_proto::RequestId(client),
                request: copycat_proto::Request::Register {
                    client: ClientId(u128::from(client)),
                    timeout_ms: 5_000,
                },
            };
            shell.on_request(99, request, Time(0));
        }
        let out = shell.process().expect("process");
        assert_eq!(shell.syncs() - before, 1, "one sync for the whole batch");
        assert!(!out.peer_messages.is_empty(), "appends go to the followers");

        // Restart a follower on the same disk: it recovers from its snapshot
        // and log, and catches up with commands committed while it was down.
        let follower = (1..=3)
            .find(|id| !cluster.shells[id].server().raft().is_leader())
            .expect("a follower");
        cluster.shells.remove(&follower);
        for _ in 0..5 {
            cluster
                .session
                .submit_command(codec::encode(&TestCommand::Add(1)))
                .expect("submit");
        }
        cluster.run_until(2_000, |c| c.done.len() == 25);
        let now = cluster.now;
        let reopened = open(&cluster.disk, follower, now);
        // It restarts from the snapshot it took (every 15 entries), not
        // from an empty replica.
        assert!(reopened.server().raft().snapshot_meta().index.0 >= 15);
        assert!(reopened.server().replica().applied_index().0 >= 15);
        cluster.shells.insert(follower, reopened);
        cluster.run_until(4_000, |c| c.value(follower) == 45);
        assert_eq!(cluster.value(follower), 45);
    }
}
