//! The thread that owns a server's [`Shell`]. It is the only code that
//! touches the Raft core, the replica and the storage, so none of them
//! needs a lock: connection tasks and the handle talk to it through one
//! bounded channel, and it answers through per-connection channels and a
//! status watch. It runs on a thread of its own (not a tokio task) because
//! it blocks on the disk: syncs, recovery. That keeps every tokio worker
//! free and lets the server run in any runtime flavor.
//!
//! Writing a snapshot would block it for as long as the image takes to
//! reach the disk, so only its first and last phases run here (encoding
//! the image; installing the file and telling the core): a snapshot thread
//! writes and syncs the file in between, one at a time, and hands the
//! result back as an input.
//!
//! Restoring a snapshot received from the leader likewise: once its file is
//! installed and the core told, a restore thread reads and decodes the
//! image (the shell's `RestoreJob`) while this thread keeps driving Raft
//! (the server holds back committed entries and queries meanwhile); the
//! decoded image comes back as an input and is swapped in here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use copycat_net::TICK;
use copycat_proto::{encode_frame, ClientRequest, ServerHello, ServerMessage};
use copycat_raft::{Configuration, LogIndex, Message, NodeId, Time};
use copycat_replica::node::ConnectionId;
use copycat_replica::shell::{RestoredImage, Shell, ShellError, WrittenSnapshot};
use copycat_replica::RawStateMachine;
use copycat_storage::{LogSync, LogSynced, Removals, StorageError};
use tokio::sync::{mpsc, watch};

use crate::lock::DirLock;
use crate::net::{peer_sender, NetStats, PeerLink, PeerPolicy};
use crate::observe::{chain, Observer};
use crate::status::{LoopStats, Status};

/// Inputs handled per batch before the shell processes them together (one
/// sync covers them all).
const MAX_BATCH: usize = 1024;
/// Messages queued for one peer; more are dropped (Raft retries).
const PEER_QUEUE: usize = 4096;

/// Work the handle runs on the owner thread between batches.
pub(crate) type Call<M> = Box<dyn FnOnce(&mut Core<M>) + Send>;

/// What the owner thread is told.
pub(crate) enum Input<M> {
    Peer(Message),
    ClientOpen(ConnectionId, mpsc::Sender<ServerMessage>),
    Request(ConnectionId, ClientRequest),
    ClientClosed(ConnectionId),
    /// Time passed (sent by the ticker task; also wakes the thread).
    Tick,
    Call(Call<M>),
    /// The snapshot thread wrote and synced the snapshot file (or failed).
    SnapshotWritten(Result<WrittenSnapshot, StorageError>),
    /// A restore thread decoded a snapshot received from the leader.
    Restored(RestoredImage),
    /// The log sync thread synced the log (or failed).
    LogSynced(LogSynced),
    Stop,
}

/// What calls from the handle may touch.
pub(crate) struct Core<M> {
    pub(crate) shell: Shell<M>,
    pub(crate) peers: Peers,
    /// How promptly the loop ran since the handle last took these.
    pub(crate) stats: LoopStats,
}

/// The outbound side of every peer connection: one task per peer, fed by a
/// bounded queue, reconnecting with backoff. It follows the configuration:
/// every member other than this server with an address in it has a task,
/// and nobody else does.
pub(crate) struct Peers {
    id: NodeId,
    cluster: u64,
    settings: Vec<(String, u64)>,
    runtime: tokio::runtime::Handle,
    senders: BTreeMap<NodeId, (String, mpsc::Sender<Message>)>,
    stop: watch::Receiver<bool>,
    /// The configuration index followed last.
    followed: Option<LogIndex>,
    /// Whether this server was a member of the configuration followed.
    member: bool,
    /// The hello clients get, naming every known member.
    hello: watch::Sender<Bytes>,
    /// Who the acceptor lets in as a peer.
    policy: watch::Sender<PeerPolicy>,
    stats: Arc<NetStats>,
    /// The IP peer connections are made from, if any (see `PeerLink`).
    source: Option<std::net::IpAddr>,
    /// TLS to the peers, when this server runs TLS.
    tls: Option<copycat_net::ClientTls>,
}

impl Peers {
    pub(crate) fn new(
        id: NodeId,
        cluster: u64,
        settings: Vec<(String, u64)>,
        runtime: tokio::runtime::Handle,
        stop: watch::Receiver<bool>,
        source: Option<std::net::IpAddr>,
        tls: Option<copycat_net::ClientTls>,
    ) -> (Self, watch::Receiver<Bytes>, watch::Receiver<PeerPolicy>) {
        let (hello, hello_rx) = watch::channel(Bytes::new());
        let (policy, policy_rx) = watch::channel(PeerPolicy {
            cluster,
            members: Default::default(),
            settings: settings.clone(),
        });
        let peers = Self {
            id,
            cluster,
            settings,
            runtime,
            senders: BTreeMap::new(),
            stop,
            followed: None,
            member: true,
            hello,
            policy,
            stats: Arc::default(),
            source,
            tls,
        };
        (peers, hello_rx, policy_rx)
    }

    /// Messages queued for each peer, not yet taken by its sender task.
    pub(crate) fn queue_depths(&self) -> impl Iterator<Item = (NodeId, usize)> + '_ {
        self.senders
            .iter()
            .map(|(peer, (_, tx))| (*peer, tx.max_capacity() - tx.capacity()))
    }

    pub(crate) fn stats(&self) -> Arc<NetStats> {
        Arc::clone(&self.stats)
    }

    /// Connect to exactly the members of `config` (at `index`), at the
    /// addresses it gives.
    pub(crate) fn follow(&mut self, (index, config): (LogIndex, &Configuration)) {
        if self.followed == Some(index) {
            return;
        }
        self.followed = Some(index);
        let member = config.members.contains_key(&self.id);
        if self.member && !member {
            tracing::warn!(
                id = ?self.id,
                config_index = ?index,
                "this server is not a member of the cluster configuration (removed?); it takes no part: it does not campaign and refuses clients"
            );
        } else if member && !self.member {
            tracing::info!(id = ?self.id, config_index = ?index, "this server is a member of the cluster configuration again");
        }
        self.member = member;
        self.senders
            .retain(|peer, _| config.members.contains_key(peer) && config.address(*peer).is_some());
        for (peer, address) in &config.addresses {
            if *peer == self.id {
                continue;
            }
            if matches!(self.senders.get(peer), Some((known, _)) if known == address) {
                continue;
            }
            tracing::info!(id = ?self.id, ?peer, %address, "peer address from the configuration");
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            // Replacing the sender drops the old queue; its task then ends.
            self.senders.insert(*peer, (address.clone(), tx));
            self.runtime.spawn(peer_sender(
                PeerLink {
                    id: self.id,
                    cluster: self.cluster,
                    peer: *peer,
                    address: address.clone(),
                    settings: self.settings.clone(),
                    source: self.source,
                    tls: self.tls.clone(),
                },
                rx,
                self.stop.clone(),
                Arc::clone(&self.stats),
            ));
        }
        let _ = self.policy.send(PeerPolicy {
            cluster: self.cluster,
            members: config.members.keys().map(|id| id.0).collect(),
            settings: self.settings.clone(),
        });
        let members: Vec<(u64, String)> = config
            .addresses
            .iter()
            .map(|(id, address)| (id.0, address.clone()))
            .collect();
        let _ = self.hello.send(encode_frame(&ServerHello {
            node: self.id.0,
            cluster: self.cluster,
            members,
        }));
    }

    fn send(&self, message: Message) {
        if let Some((_, tx)) = self.senders.get(&message.to) {
            // A full queue drops the message: Raft retries.
            let _ = tx.try_send(message);
        }
    }
}

pub(crate) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The owner thread's state.
pub(crate) struct Owner<M> {
    pub(crate) core: Core<M>,
    /// The zero of the monotonic clock handed to the core.
    pub(crate) start: Instant,
    pub(crate) inputs: mpsc::Receiver<Input<M>>,
    pub(crate) status: watch::Sender<Status>,
    pub(crate) clients: BTreeMap<ConnectionId, mpsc::Sender<ServerMessage>>,
    /// Lets the snapshot thread send its result (weak, so that the channel
    /// still closes when every other sender is gone).
    pub(crate) inputs_tx: mpsc::WeakSender<Input<M>>,
    /// The snapshot thread, while one runs.
    pub(crate) snapshot_thread: Option<JoinHandle<()>>,
    /// The snapshot thread's result, to finish before the next batch.
    pub(crate) written: Option<Result<WrittenSnapshot, StorageError>>,
    /// The restore thread of the latest snapshot received, while one runs
    /// (one superseded by a newer snapshot is left to end on its own).
    pub(crate) restore_thread: Option<JoinHandle<()>>,
    /// Restore threads' results, to finish before the next batch.
    pub(crate) restored: Vec<RestoredImage>,
    /// The log sync thread's queue, once started (see `run`).
    pub(crate) log_sync: Option<std::sync::mpsc::Sender<LogSync>>,
    /// The log sync thread's results, to finish before the next batch.
    pub(crate) synced: Vec<LogSynced>,
    /// A job that only runs the log's queued writes is on the sync thread.
    pub(crate) writes_in_flight: bool,
    /// The removal thread's queue, once started (see `run`).
    pub(crate) removals: Option<std::sync::mpsc::Sender<Removals>>,
    /// The last message from the leader: who sent it, when it was handled.
    pub(crate) leader_seen: Option<(NodeId, Instant)>,
    /// The data directory lock, released when the thread ends.
    pub(crate) lock: Option<DirLock>,
    /// Metrics and the log lines an operator reads.
    pub(crate) observer: Observer,
}

impl<M: RawStateMachine + Send + 'static> Owner<M> {
    fn now(&self) -> Time {
        Time(self.start.elapsed().as_millis() as u64)
    }

    /// Run until told to stop, every sender is gone, or the storage fails
    /// (fail-stop: the durable state is intact, memory may be ahead of it).
    /// A full disk is not a failure: the shell stalls, refuses clients and
    /// retries on its own every second (the ticks keep the loop running).
    pub(crate) fn run(mut self) -> Result<(), ShellError> {
        let id = self.core.shell.id();
        let log_sync_thread = self.start_log_sync_thread()?;
        let removal_thread = self.start_removal_thread()?;
        let mut last_tick = Instant::now() - TICK;
        let mut calls = Vec::new();
        let result = loop {
            let Some(first) = self.inputs.blocking_recv() else {
                break Ok(());
            };
            let started = Instant::now();
            let mut stop = self.handle(first, &mut calls);
            let mut batch = 1;
            while !stop && batch < MAX_BATCH {
                match self.inputs.try_recv() {
                    Ok(input) => stop = self.handle(input, &mut calls),
                    Err(_) => break,
                }
                batch += 1;
            }
            if stop {
                break Ok(());
            }
            // Tick on time even when inputs keep coming faster than ticks.
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                let now = self.now();
                self.core.shell.tick(now, wall_ms());
            }
            for call in calls.drain(..) {
                call(&mut self.core);
            }
            if let Err(error) = self.process() {
                self.observer.metrics.storage_failed();
                tracing::error!(?id, error = %chain(&error), "storage failed; stopping the server");
                break Err(error);
            }
            self.observer
                .metrics
                .loop_seconds
                .observe(started.elapsed().as_secs_f64());
            self.observer.metrics.loop_done();
            let stats = &mut self.core.stats;
            stats.iterations += 1;
            stats.max_iteration = stats.max_iteration.max(started.elapsed());
        };
        // A snapshot thread still writing finds the channel closed (even if
        // it waits for room in it); its temp file is removed on next open.
        self.inputs.close();
        if let Some(thread) = self.snapshot_thread.take() {
            let _ = thread.join();
        }
        if let Some(thread) = self.restore_thread.take() {
            let _ = thread.join();
        }
        // Its queue closes: it ends after the sync it may be running.
        drop(self.log_sync.take());
        if let Some(thread) = log_sync_thread {
            let _ = thread.join();
        }
        // Removals still queued are done first (what a crash leaves, the
        // stores clean up on the next open).
        drop(self.removals.take());
        let _ = removal_thread.join();
        // Nothing touches the directory any more: another process may.
        drop(self.lock.take());
        tracing::info!(?id, "server stopped");
        result
    }

    /// Take one input; `true` to stop.
    fn handle(&mut self, input: Input<M>, calls: &mut Vec<Call<M>>) -> bool {
        match input {
            Input::Peer(message) => {
                let from = message.from;
                self.core.shell.step(message);
                if self.core.shell.server().raft().leader() == Some(from) {
                    let now = Instant::now();
                    if let Some((leader, at)) = self.leader_seen {
                        if leader == from {
                            let gap = &mut self.core.stats.max_leader_gap;
                            *gap = (*gap).max(now - at);
                        }
                    }
                    self.leader_seen = Some((from, now));
                }
            }
            Input::ClientOpen(conn, tx) => {
                self.clients.insert(conn, tx);
            }
            Input::Request(conn, request) => {
                self.observer.request(conn, &request);
                let now = self.now();
                self.core.shell.on_request(conn, request, now);
            }
            Input::ClientClosed(conn) => {
                self.clients.remove(&conn);
                self.observer.connection_closed(conn);
                self.core.shell.connection_closed(conn);
            }
            Input::Tick => {}
            Input::Call(call) => calls.push(call),
            Input::SnapshotWritten(written) => self.written = Some(written),
            Input::Restored(restored) => self.restored.push(restored),
            Input::LogSynced(synced) => self.synced.push(synced),
            Input::Stop => return true,
        }
        false
    }

    /// Finish the snapshot written, carry out the batch, send what it
    /// produced, and start a snapshot if one fell due.
    fn process(&mut self) -> Result<(), ShellError> {
        let snapshot = self.core.shell.server().raft().snapshot_meta().index;
        let mut took = false;
        if let Some(written) = self.written.take() {
            if let Some(thread) = self.snapshot_thread.take() {
                // It has sent its result: it is ending.
                let _ = thread.join();
            }
            let index = written.as_ref().ok().map(|w| w.meta().index);
            self.core.shell.finish_snapshot(written)?;
            let bytes = self.core.shell.storage().snapshots().latest_data_len();
            self.observer
                .snapshot_finished(self.core.shell.id().0, index, bytes.unwrap_or(0));
            took = index.is_some();
        }
        for restored in std::mem::take(&mut self.restored) {
            let index = restored.meta().index;
            let started = Instant::now();
            if self.core.shell.finish_restore(restored)?.is_some() {
                tracing::info!(id = ?self.core.shell.id(), ?index, install = ?started.elapsed(), "snapshot from the leader restored");
            }
        }
        for synced in std::mem::take(&mut self.synced) {
            if synced.is_writes_only() {
                self.writes_in_flight = false;
            }
            self.core.shell.finish_sync(synced)?;
        }
        self.write_and_sync()?;
        if let Some(removals) = self.core.shell.take_removals() {
            self.remove(removals);
        }
        let outputs = self.core.shell.take_outputs();
        self.start_restore()?;
        let config = self.core.shell.server().raft().configuration();
        self.core.peers.follow(config);
        for message in outputs.peer_messages {
            self.core.peers.send(message);
        }
        for (conn, message) in outputs.client_messages {
            if let Some(tx) = self.clients.get(&conn) {
                self.observer.sending(conn, &message);
                if tx.try_send(message).is_err() {
                    self.observer.client_message_dropped();
                    // The client resends what it misses (requests time
                    // out, event gaps are asked for again).
                    tracing::warn!(conn, "client queue full or closed; message dropped");
                }
            }
        }
        self.start_snapshot()?;
        let mut current = Status::of(self.core.shell.server());
        current.disk_full = self.core.shell.disk_full();
        self.observer.metrics.set_disk_full(current.disk_full);
        if current.snapshot > snapshot {
            self.core.stats.snapshots += 1;
            if !took {
                let bytes = self.core.shell.storage().snapshots().latest_data_len();
                self.observer.snapshot_installed(bytes.unwrap_or(0));
            }
        }
        let waiting = self.inputs.len();
        self.observer.after_batch(
            &self.core.shell,
            &current,
            &self.clients,
            &self.core.peers,
            waiting,
        );
        self.status.send_if_modified(|old| {
            let changed = *old != current;
            *old = current;
            changed
        });
        Ok(())
    }

    /// Write every batch the server has, and begin the log sync that covers
    /// them on the sync thread unless one is running there (batches written
    /// meanwhile wait for the next). The owner thread never waits for the
    /// log's fdatasync: heartbeats and answers that need no durability go
    /// out while the disk is slow. A sync with nothing for the disk (the
    /// batches appended nothing, or the log does not fsync) is finished
    /// here.
    fn write_and_sync(&mut self) -> Result<(), ShellError> {
        loop {
            let written = self.core.shell.write()?;
            if self.core.shell.sync_in_flight() {
                return Ok(());
            }
            if !written.pending {
                // What a finished sync left queued (its marker) is written
                // there too, not left for the next batch.
                if let Some(queue) = self.log_sync.as_ref().filter(|_| !self.writes_in_flight) {
                    if let Some(job) = self.core.shell.begin_writes() {
                        self.writes_in_flight = queue.send(job).is_ok();
                    }
                }
                return Ok(());
            }
            let Some(mut job) = self.core.shell.begin_sync()? else {
                return Ok(());
            };
            let queue = self.log_sync.as_ref().filter(|_| !job.is_empty());
            if let Some(queue) = queue {
                match queue.send(job) {
                    Ok(()) => return Ok(()),
                    // The thread is gone (the loop is ending).
                    Err(returned) => job = returned.0,
                }
            }
            // Nothing for the disk, or no sync thread: here, and on.
            self.core.shell.finish_sync(job.run())?;
        }
    }

    /// The thread that runs the log's syncs ([`LogSync::run`]) and hands
    /// each result back as an input. Without a way back (every handle is
    /// gone) the owner syncs in place.
    fn start_log_sync_thread(&mut self) -> Result<Option<JoinHandle<()>>, ShellError> {
        let Some(inputs) = self.inputs_tx.upgrade() else {
            return Ok(None);
        };
        let inputs = inputs.downgrade();
        let (queue, jobs) = std::sync::mpsc::channel::<LogSync>();
        let thread = std::thread::Builder::new()
            .name(format!("copycat-log-sync-{}", self.core.shell.id().0))
            .spawn(move || {
                for job in jobs {
                    let synced = job.run();
                    let Some(inputs) = inputs.upgrade() else {
                        return;
                    };
                    if inputs.blocking_send(Input::LogSynced(synced)).is_err() {
                        return;
                    }
                }
            })?;
        self.log_sync = Some(queue);
        // From now on the log's writes wait for the sync thread too: even a
        // small `pwrite` can wait for a busy file system journal.
        self.core.shell.defer_writes();
        Ok(Some(thread))
    }

    /// The thread that removes the files the storage no longer needs (old
    /// snapshots, purged log segments): unlinking a 200 MB file takes tens
    /// of milliseconds on a busy disk, which the owner thread must not
    /// spend. From then on the storage leaves them to it.
    fn start_removal_thread(&mut self) -> Result<JoinHandle<()>, ShellError> {
        let id = self.core.shell.id().0;
        let (queue, jobs) = std::sync::mpsc::channel::<Removals>();
        let thread = std::thread::Builder::new()
            .name(format!("copycat-remove-{id}"))
            .spawn(move || {
                for removals in jobs {
                    let files = removals.len();
                    if let Err(error) = removals.run() {
                        // The files left are removed when the directory is
                        // next opened (old snapshots by the next install).
                        tracing::warn!(id, files, error = %chain(&error), "could not remove files the storage no longer needs");
                    }
                }
            })?;
        self.core.shell.defer_removals();
        self.removals = Some(queue);
        Ok(thread)
    }

    fn remove(&mut self, removals: Removals) {
        let returned = match &self.removals {
            Some(queue) => match queue.send(removals) {
                Ok(()) => return,
                Err(returned) => returned.0,
            },
            None => removals,
        };
        if let Err(error) = returned.run() {
            tracing::warn!(id = ?self.core.shell.id(), error = %chain(&error), "could not remove files the storage no longer needs");
        }
    }

    /// The restore of a snapshot received from the leader, if one was:
    /// its image is read and decoded on a thread of its own.
    fn start_restore(&mut self) -> Result<(), ShellError> {
        let Some(job) = self.core.shell.take_restore_job() else {
            return Ok(());
        };
        let Some(inputs) = self.inputs_tx.upgrade() else {
            // The loop is about to end: restore here, as the shell would.
            self.core.shell.finish_restore(job.run())?;
            return Ok(());
        };
        tracing::info!(id = ?self.core.shell.id(), index = ?job.meta().index, bytes = job.image_len(), "restoring a snapshot from the leader on a restore thread");
        let thread = std::thread::Builder::new()
            .name(format!("copycat-restore-{}", self.core.shell.id().0))
            .spawn(move || {
                let restored = job.run();
                let _ = inputs.blocking_send(Input::Restored(restored));
            })?;
        // A thread still decoding a superseded snapshot ends on its own.
        self.restore_thread = Some(thread);
        Ok(())
    }

    /// Phase 1 of a snapshot, if one is due and none is in flight; its
    /// file is written on a thread of its own.
    fn start_snapshot(&mut self) -> Result<(), ShellError> {
        let Some(job) = self.core.shell.start_snapshot()? else {
            return Ok(());
        };
        self.observer.snapshot_started();
        let Some(inputs) = self.inputs_tx.upgrade() else {
            // Every handle is gone and the loop is about to end: write it
            // here, as the shell would.
            self.core.shell.finish_snapshot(job.run())?;
            return Ok(());
        };
        let thread = std::thread::Builder::new()
            .name(format!("copycat-snapshot-{}", self.core.shell.id().0))
            .spawn(move || {
                let written = job.run();
                let _ = inputs.blocking_send(Input::SnapshotWritten(written));
            })?;
        self.snapshot_thread = Some(thread);
        Ok(())
    }
}
