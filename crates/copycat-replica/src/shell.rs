//! [`Shell`]: a [`ServerNode`] joined to its durable [`Storage`], carrying
//! out every [`Ready`] batch exactly as documented there, with group commit:
//! every batch pending is written, one sync makes all of them durable, and
//! only then do the messages that promise durability go out and are
//! committed entries applied.
//!
//! The shell is synchronous and clock-free: the caller (the tokio server in
//! `copycat-server`, the simulator, a test) feeds it time, peer messages and
//! client requests, and sends what [`Shell::process`] returns.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use copycat_proto::{ClientRequest, ServerMessage};
use copycat_raft::{Configuration, Entry, LogIndex, Message, NodeId, ReadState, Ready, Term, Time};
use copycat_storage::{Disk, SnapshotWriter, Storage, StorageError, StorageOptions};

use crate::machine::RawStateMachine;
use crate::node::{ConnectionId, ServerConfig, ServerError, ServerNode};
use crate::replica::SnapshotError;

/// Why a shell could not start or carry out a batch. After an error from
/// [`Shell::process`] the shell must be dropped (fail-stop): its durable
/// state is intact, but what it holds in memory may be ahead of it.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// The data directory could not be read or written.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The server refused its configuration or recovered state.
    #[error("server: {0}")]
    Server(#[from] ServerError),
    /// A snapshot received from the leader could not be restored.
    #[error("snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    /// The Raft core refused a snapshot.
    #[error("snapshot install: {0}")]
    Install(String),
    /// A socket could not be used.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// A snapshot chunk arrived out of order.
    #[error("snapshot chunk at offset {0} with no snapshot started")]
    ChunkOutOfOrder(u64),
}

/// Settings of a [`Shell`].
#[derive(Clone, Debug)]
pub struct ShellConfig {
    /// The server (its Raft id is `server.raft.id`).
    pub server: ServerConfig,
    /// The data directory's options (durability among them).
    pub storage: StorageOptions,
    /// Seeds the core's election timeouts.
    pub seed: u64,
}

/// What one [`Shell::process`] call produced, to be sent.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Messages for peers (each names its destination in `to`).
    pub peer_messages: Vec<Message>,
    /// Messages for client connections.
    pub client_messages: Vec<(ConnectionId, ServerMessage)>,
}

/// What [`Shell::write`] did, for callers that observe the shell (the
/// simulator checks its invariants with this).
#[derive(Debug, Default)]
pub struct Written {
    /// Entries appended to the log (not yet durable).
    pub entries: Vec<Entry>,
    /// Committed entries applied while writing (before installing a
    /// snapshot, everything committed earlier is applied first).
    pub applied: Vec<Entry>,
    /// A snapshot received from the leader was installed, and the replica
    /// digest right after restoring it.
    pub installed: Option<(copycat_raft::SnapshotMeta, u32)>,
    /// When a snapshot install made the shell sync in the middle of the
    /// write, the log's durable index after that sync.
    pub synced_through: Option<LogIndex>,
    /// Batches are waiting for [`Shell::sync`].
    pub pending: bool,
}

/// What [`Shell::sync`] did.
#[derive(Debug, Default)]
pub struct Synced {
    /// Committed entries applied.
    pub applied: Vec<Entry>,
    /// A snapshot was taken, and the replica digest at it.
    pub taken: Option<(copycat_raft::SnapshotMeta, u32)>,
}

/// The durable state recovered when the shell opened.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    /// Index and term of every log entry recovered.
    pub entries: Vec<(LogIndex, Term)>,
    /// Index of the snapshot recovered.
    pub snapshot: LogIndex,
    /// Bytes of torn or damaged tail discarded by recovery.
    pub discarded_bytes: u64,
}

/// A batch written but not yet synced.
#[derive(Debug, Default)]
struct Pending {
    after_persist: Vec<Message>,
    committed: Vec<Entry>,
    persisted: Option<(LogIndex, Term)>,
    reads: Vec<ReadState>,
}

/// A server and its storage. See the module docs.
pub struct Shell<M> {
    server: ServerNode<M>,
    storage: Storage,
    recovered: Recovered,
    /// Batches written and waiting for the sync.
    pending: Vec<Pending>,
    /// Outputs gathered for the caller of `process` / `write` / `sync`.
    out: Outputs,
    incoming: Option<(SnapshotWriter, Vec<u8>)>,
    now: Time,
    syncs: u64,
    /// Entries appended since the last sync.
    unsynced: bool,
}

impl<M: RawStateMachine> Shell<M> {
    /// Open the data directory `data_dir` on `disk` (bootstrapping it with
    /// `initial_members` if it holds nothing yet), recover, and start the
    /// server from the latest snapshot and the log.
    pub fn open(
        config: ShellConfig,
        data_dir: &Path,
        disk: Arc<dyn Disk>,
        initial_members: &[NodeId],
        machine: M,
        now: Time,
        wall_ms: u64,
    ) -> Result<Self, ShellError> {
        let members = Configuration::with_voters(initial_members.iter().copied());
        match Storage::bootstrap(Arc::clone(&disk), data_dir, config.storage.clone(), members) {
            Ok(()) | Err(StorageError::AlreadyBootstrapped { .. }) => {}
            Err(error) => return Err(error.into()),
        }
        let (storage, state, report) = Storage::open(disk, data_dir, config.storage.clone())?;
        if !report.is_clean() {
            tracing::warn!(?report, dir = %data_dir.display(), "storage recovery repaired the data directory");
        }
        let recovered = Recovered {
            entries: state.entries.iter().map(|e| (e.index, e.term)).collect(),
            snapshot: state.snapshot.index,
            discarded_bytes: report.log.discarded.iter().map(|d| d.bytes).sum(),
        };
        let snapshot_data = storage.snapshots().read_all()?.unwrap_or_default();
        let server = ServerNode::new(
            config.server,
            state,
            &snapshot_data,
            machine,
            config.seed,
            now,
            wall_ms,
        )?;
        Ok(Self {
            server,
            storage,
            recovered,
            pending: Vec::new(),
            out: Outputs::default(),
            incoming: None,
            now,
            syncs: 0,
            unsynced: false,
        })
    }

    /// The server (read-only).
    pub fn server(&self) -> &ServerNode<M> {
        &self.server
    }

    /// The server, for inputs the shell does not wrap (admin calls).
    pub fn server_mut(&mut self) -> &mut ServerNode<M> {
        &mut self.server
    }

    /// The storage (read-only).
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// What recovery found when the shell opened.
    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    /// Messages produced by [`write`](Self::write) and
    /// [`sync`](Self::sync) since the last call.
    pub fn take_outputs(&mut self) -> Outputs {
        let mut out = std::mem::take(&mut self.out);
        out.client_messages
            .extend(self.server.take_client_messages());
        out
    }

    /// This server's id.
    pub fn id(&self) -> NodeId {
        self.server.raft().id()
    }

    /// How many times [`process`](Self::process) synced the log.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    /// Advance the monotonic clock `now` and the wall clock `wall_ms`.
    pub fn tick(&mut self, now: Time, wall_ms: u64) {
        self.now = self.now.max(now);
        self.server.tick(self.now, wall_ms);
    }

    /// A message from a peer. Messages addressed to another server are
    /// dropped.
    pub fn step(&mut self, message: Message) {
        if message.to != self.id() {
            tracing::debug!(to = ?message.to, "dropping a message for another server");
            return;
        }
        self.server.raft_mut().step(message);
    }

    /// A request from client connection `conn`, arriving at `now`; for a
    /// linearizable query, how it is being confirmed (see
    /// [`ServerNode::on_request`]). The time matters: a lease is judged
    /// against the moment of the request, not the last tick (a process
    /// resuming from a pause handles queued requests before its next tick).
    pub fn on_request(
        &mut self,
        conn: ConnectionId,
        request: ClientRequest,
        now: Time,
    ) -> Option<copycat_raft::ReadPath> {
        self.now = self.now.max(now);
        self.server.on_request(conn, request, self.now)
    }

    /// Client connection `conn` closed.
    pub fn connection_closed(&mut self, conn: ConnectionId) {
        self.server.connection_closed(conn);
    }

    /// Carry out everything the server has to do, with group commit: write
    /// every pending batch, sync the disk once, then release the messages
    /// that promise durability and apply the committed entries; repeat
    /// while that produced more work.
    pub fn process(&mut self) -> Result<Outputs, ShellError> {
        while self.write()?.pending {
            self.sync()?;
        }
        Ok(self.take_outputs())
    }

    /// Step 1 for every batch the server has: write it (not yet durable).
    /// Messages that need no durability are ready to send at once. A caller
    /// that wants to overlap disk latency with other work (or a simulator
    /// that models it) calls [`sync`](Self::sync) later; nothing that
    /// promises durability leaves before.
    pub fn write(&mut self) -> Result<Written, ShellError> {
        let mut written = Written::default();
        while self.server.has_ready() {
            let ready = self.server.ready();
            self.write_one(ready, &mut written)?;
        }
        written.pending = !self.pending.is_empty();
        Ok(written)
    }

    /// Steps 2 to 4 for every written batch: one sync, then the messages
    /// that promise durability, the committed entries applied, the core
    /// told what is durable; then a snapshot if one is due.
    pub fn sync(&mut self) -> Result<Synced, ShellError> {
        let mut synced = Synced {
            applied: self.sync_and_release()?,
            ..Synced::default()
        };
        synced.taken = self.maybe_snapshot()?;
        Ok(synced)
    }

    /// Step 1 of a batch (and the parts that need no sync).
    fn write_one(&mut self, ready: Ready, written: &mut Written) -> Result<(), ShellError> {
        let Ready {
            hard_state,
            // Recorded when its last chunk is installed below.
            snapshot: _,
            entries,
            purge_to,
            messages,
            messages_after_persist,
            committed_entries,
            read_states,
            snapshot_requests,
            snapshot_chunks,
            soft_state,
        } = ready;
        if let Some(soft) = soft_state {
            tracing::info!(id = ?self.id(), role = ?soft.role, term = ?soft.term, leader = ?soft.leader, "role changed");
        }
        if let Some(hard_state) = hard_state {
            self.storage.save_hard_state(hard_state)?;
        }
        if let Some(first) = entries.first() {
            if first.index <= self.storage.log().last_index() {
                self.storage.log_mut().truncate_from(first.index)?;
            }
            self.storage.append(&entries)?;
            self.unsynced = true;
            written.entries.extend(entries.iter().cloned());
        }
        if let Some(purge) = purge_to {
            self.storage.log_mut().purge_to(purge)?;
        }
        self.out.peer_messages.extend(messages);
        for request in snapshot_requests {
            let latest = self.storage.snapshots().latest().map(|meta| meta.index);
            if latest != Some(request.meta.index) {
                self.server
                    .raft_mut()
                    .snapshot_unavailable(request.to, request.meta.index);
                continue;
            }
            let (data, done) = self
                .storage
                .snapshots()
                .read_chunk(request.offset, request.max_bytes as u64)?;
            self.server.raft_mut().snapshot_chunk(
                request.to,
                request.meta.index,
                request.offset,
                Bytes::from(data),
                done,
            );
        }
        if snapshot_chunks.iter().any(|chunk| chunk.done) {
            // Everything committed before the snapshot is applied before the
            // snapshot replaces the state (the core waits for the install).
            let applied = self.sync_and_release()?;
            written.applied.extend(applied);
            written.synced_through = Some(self.storage.log().durable_index());
        }
        for chunk in snapshot_chunks {
            if chunk.offset == 0 {
                if let Some((writer, _)) = self.incoming.take() {
                    // A transfer that starts over: drop the partial file. If
                    // that fails, nothing depends on it (temp files are
                    // removed when the directory is next opened).
                    if let Err(error) = self.storage.snapshots().abort(writer) {
                        tracing::warn!(%error, "could not remove a partial snapshot");
                    }
                }
                let writer = self.storage.begin_snapshot(chunk.meta.clone())?;
                self.incoming = Some((writer, Vec::new()));
            }
            let Some((writer, buffer)) = self.incoming.as_mut() else {
                return Err(ShellError::ChunkOutOfOrder(chunk.offset));
            };
            writer.write(&chunk.data)?;
            buffer.extend_from_slice(&chunk.data);
            if chunk.done {
                let (writer, buffer) = self.incoming.take().expect("a snapshot is being received");
                self.storage.install_snapshot(writer)?;
                self.server.restore(&buffer)?;
                written.installed = Some((chunk.meta.clone(), self.server.replica().digest()));
                self.server
                    .raft_mut()
                    .snapshot_installed(&chunk.meta)
                    .map_err(|e| ShellError::Install(e.to_string()))?;
                tracing::info!(id = ?self.id(), index = ?chunk.meta.index, "installed a snapshot from the leader");
            }
        }
        #[cfg(feature = "planted-bugs")]
        let messages_after_persist =
            if copycat_planted::active(copycat_planted::PlantedBug::SendBeforeSync) {
                self.out.peer_messages.extend(messages_after_persist);
                Vec::new()
            } else {
                messages_after_persist
            };
        self.pending.push(Pending {
            after_persist: messages_after_persist,
            committed: committed_entries,
            persisted: entries.last().map(|e| (e.index, e.term)),
            reads: read_states,
        });
        Ok(())
    }

    /// One sync for every written batch, then steps 2 to 4 of each. (The
    /// hard state, purges and snapshots are durable when their calls
    /// return; appends and truncations wait for the sync, which is skipped
    /// when there were none.) Returns the entries applied.
    fn sync_and_release(&mut self) -> Result<Vec<Entry>, ShellError> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        if self.unsynced {
            self.storage.sync()?;
            self.syncs += 1;
            self.unsynced = false;
        }
        let mut applied = Vec::new();
        for batch in std::mem::take(&mut self.pending) {
            self.out.peer_messages.extend(batch.after_persist);
            applied.extend(batch.committed.iter().cloned());
            self.server.after_persist(batch.committed, batch.reads);
            if let Some((index, term)) = batch.persisted {
                self.server.raft_mut().persisted(index, term);
            }
        }
        Ok(applied)
    }

    /// Take and store a snapshot if enough entries were applied.
    fn maybe_snapshot(&mut self) -> Result<Option<(copycat_raft::SnapshotMeta, u32)>, ShellError> {
        let Some((meta, data)) = self.server.take_snapshot_if_due() else {
            return Ok(None);
        };
        let digest = self.server.replica().digest();
        let mut writer = self.storage.begin_snapshot(meta)?;
        writer.write(&data)?;
        let meta = self.storage.install_snapshot(writer)?;
        tracing::debug!(id = ?self.id(), index = ?meta.index, "took a snapshot");
        Ok(Some((meta, digest)))
    }
}

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
