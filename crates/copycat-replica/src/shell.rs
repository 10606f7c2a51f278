//! [`Shell`]: a [`ServerNode`] joined to its durable [`Storage`], carrying
//! out every [`Ready`] batch exactly as documented there, with group commit:
//! every batch pending is written, one sync makes all of them durable, and
//! only then do the messages that promise durability go out and are
//! committed entries applied.
//!
//! The shell is synchronous and clock-free: the caller (the tokio server in
//! `copycat-server`, the simulator, a test) feeds it time, peer messages and
//! client requests, and sends what [`Shell::process`] returns.
//!
//! # The log sync on another thread
//!
//! [`Shell::sync`] syncs in place. A caller that must not wait for the disk
//! on the shell's thread (the server's owner thread sends heartbeats) syncs
//! in three steps instead:
//!
//! 1. [`Shell::begin_sync`]: every batch written so far is covered by one
//!    [`LogSync`] (`Send`); the log's buffer is written to the file.
//! 2. [`LogSync::run`], on any thread: the fdatasync. The shell meanwhile
//!    writes further batches (their messages that need no durability go
//!    out at once: heartbeats keep going while the disk is slow).
//! 3. [`Shell::finish_sync`], on the shell's thread: the log records what
//!    the sync made durable (what it began with, less anything truncated
//!    since), and the batches it covered are released in order: their
//!    messages that promise durability, their committed entries applied,
//!    the core told what is durable. Batches written meanwhile wait for
//!    the next sync.
//!
//! One sync is in flight at a time. A sync in place while one is in flight
//! (before installing a snapshot received) covers both.
//!
//! # Snapshots
//!
//! Taking a snapshot has three phases, so that the slow one (writing and
//! syncing the image) can leave the thread that owns the shell:
//!
//! 1. [`Shell::start_snapshot`]: if one is due, the replica's image at its
//!    applied index is encoded (one pass) and its temp file begun; the
//!    result is a [`SnapshotJob`], which is `Send`.
//! 2. [`SnapshotJob::run`], on any thread: the image is written to the temp
//!    file, which is sealed (trailer, fdatasync) and renamed into place
//!    (directory sync). The shell meanwhile keeps carrying out batches.
//! 3. [`Shell::finish_snapshot`], on the shell's thread: the store records
//!    the durable file, and only then is the Raft core told, so it never
//!    purges entries that no durable snapshot covers.
//!
//! One job is in flight at a time. [`Shell::process`] runs all three in
//! place; [`Shell::process_batches`] leaves snapshots to the caller.
//!
//! A snapshot received from the leader is streamed to its temp file chunk
//! by chunk; when the last arrives, the file is installed (durably) and the
//! Raft core told, which resets its log to the snapshot. The replica is
//! restored from the file in two phases, so that decoding a large image can
//! leave the shell's thread too:
//!
//! 1. [`Shell::take_restore_job`]: the [`RestoreJob`] (`Send`) of the
//!    snapshot installed; the server holds back committed entries and
//!    queries until it is done, while the core keeps running (heartbeats,
//!    votes, appends).
//! 2. [`RestoreJob::run`], on any thread: the file is read, the replica
//!    image decoded and checked, and the state machine's image decoded
//!    ([`crate::StateMachine::prepare_restore`], if it implements it).
//! 3. [`Shell::finish_restore`], on the shell's thread: the image is
//!    swapped in and the entries held back are applied. A result for a
//!    snapshot that a newer one superseded meanwhile is dropped.
//!
//! [`Shell::process`] runs them in place. Before the file is installed, the
//! replica state at the start of the image is read back and checked on the
//! shell's thread (it is small): an image refused there leaves the state
//! and the disk as they were. A state machine image refused in phase 2
//! fails the shell in phase 3, its file installed by then.
//!
//! # A full disk
//!
//! A write, sync or meta save that fails because the disk is full
//! ([`StorageError::DiskFull`]) does not fail the shell: it *stalls*. The
//! storage is back at its durable state (the log cut back to its last
//! synced entry); nothing that promises durability was sent, no committed
//! entry past it applied. While stalled the shell is frozen as if its disk
//! were very slow: peer messages are dropped, the core is not ticked (so
//! it neither campaigns nor leads: the others elect a leader with room),
//! and every client request is answered with [`ClientError::DiskFull`],
//! except sequential queries, which the replica answers from what it has
//! applied (they write nothing) as long as it counts as replicating.
//! Every [`DISK_FULL_RETRY_MS`] it tries again: it rewrites the log from
//! the core's in-memory copy, redoes the batch that failed, syncs, and
//! only then releases what waited for durability. A snapshot that does not
//! fit is dropped and tried again later; the log is purged only after a
//! snapshot is durable, as always. Other I/O errors still fail the shell,
//! and so does a full disk while receiving a snapshot from the leader
//! ([`ShellError::ReceivingSnapshot`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use copycat_proto::{ClientError, ClientRequest, ServerMessage};
use copycat_raft::{
    Configuration, Entry, LogIndex, Message, NodeId, ReadState, Ready, SnapshotMeta, Term, Time,
};
use copycat_storage::{
    Disk, Identity, LogSync, LogSynced, Removals, SealedSnapshot, SnapshotFile, SnapshotWriter,
    Storage, StorageError, StorageOptions,
};

use crate::config::ReplicaConfig;
use crate::image::ReplicaImage;
use crate::machine::RawStateMachine;
use crate::node::{ConnectionId, ServerConfig, ServerError, ServerNode};
use crate::replica::{check_image_head, PreparedImage, Replica, SnapshotError};

/// Why a shell could not start or carry out a batch. After an error from
/// [`Shell::process`] the shell must be dropped (fail-stop): its durable
/// state is intact, but what it holds in memory may be ahead of it.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// The data directory could not be read or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The server refused its configuration or recovered state.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// A snapshot received from the leader could not be restored.
    #[error("cannot restore the snapshot")]
    Snapshot(#[from] SnapshotError),
    /// The Raft core refused a snapshot.
    #[error("snapshot install: {0}")]
    Install(String),
    /// The operating system refused something else (a thread, a socket).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The data directory holds no cluster and the shell was given nothing
    /// to bootstrap it with.
    #[error("{} holds no cluster data: bootstrap a new cluster or join one", path.display())]
    NotBootstrapped {
        /// The data directory.
        path: PathBuf,
    },
    /// The data directory belongs to another server.
    #[error(
        "{} holds the data of server {recorded}, not of server {configured}",
        path.display()
    )]
    WrongServer {
        /// The data directory.
        path: PathBuf,
        /// The server id the directory records.
        recorded: u64,
        /// The server id this server was started with.
        configured: u64,
    },
    /// A snapshot chunk arrived out of order.
    #[error("snapshot chunk at offset {0} with no snapshot started")]
    ChunkOutOfOrder(u64),
    /// [`Shell::finish_snapshot`] got a snapshot this shell did not start.
    #[error("snapshot at {0:?} finished but not started by this shell")]
    NotStarted(LogIndex),
    /// Writing or installing a snapshot received from the leader failed
    /// (even for lack of space: the core waits for the install, so the
    /// shell cannot stall there).
    #[error("cannot store the snapshot received from the leader")]
    ReceivingSnapshot(#[source] StorageError),
}

impl ShellError {
    /// Whether this is a storage operation refused because the disk is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, ShellError::Storage(error) if error.is_disk_full())
    }
}

/// How often a shell stalled on a full disk tries to write again, and how
/// long a snapshot that did not fit waits before the next attempt (ms).
pub const DISK_FULL_RETRY_MS: u64 = 1_000;

/// Why and since when the shell is stalled on a full disk.
#[derive(Debug)]
struct Stall {
    /// The batch that failed, with what of it is done taken out of it.
    held: Option<Held>,
    /// When the retry is due.
    retry_at: Time,
    /// Retries so far.
    retries: u64,
}

/// A batch being written: its parts are taken out as they are done, so
/// that a batch that failed half way can be carried on from where it
/// stopped.
#[derive(Debug)]
struct Held {
    ready: Ready,
    /// The last entry of the batch (what the core is told is durable).
    persisted: Option<(LogIndex, Term)>,
}

impl Held {
    fn new(ready: Ready) -> Self {
        let persisted = ready.entries.last().map(|e| (e.index, e.term));
        Self { ready, persisted }
    }
}

/// How to initialise a data directory that holds nothing yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bootstrap {
    /// Whose data it will be.
    pub identity: Identity,
    /// The configuration to start from: the initial voters of a new
    /// cluster, or the configuration a server joining a cluster was given.
    pub config: Configuration,
}

impl Bootstrap {
    /// A new cluster `cluster` of `voters`, for server `server`.
    pub fn voters(cluster: u64, server: NodeId, voters: impl IntoIterator<Item = NodeId>) -> Self {
        Self {
            identity: Identity {
                cluster,
                server: server.0,
            },
            config: Configuration::with_voters(voters),
        }
    }
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
    /// Compute the replica digest of every snapshot taken or installed
    /// ([`SnapshotReport::digest`]), for observers that compare replicas
    /// (the simulator). Off in production: it encodes the state again.
    pub compute_digests: bool,
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
    /// A snapshot received from the leader was installed in the storage
    /// and the core; its image is restored by the job that
    /// [`Shell::take_restore_job`] returns.
    pub received: Option<SnapshotMeta>,
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
}

/// A snapshot that became this server's latest durable one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotReport {
    /// Its description.
    pub meta: SnapshotMeta,
    /// The replica digest at its index, if [`ShellConfig::compute_digests`]
    /// is on.
    pub digest: Option<u32>,
}

/// Phase 2 of taking a snapshot (see the module docs): the replica's image
/// and the writer of its temp file, made by [`Shell::start_snapshot`].
/// [`run`](Self::run) it on any thread and hand the result to
/// [`Shell::finish_snapshot`]. Dropped instead, it leaves a temp file that
/// the next open removes, and the shell waiting for a result.
#[derive(Debug)]
pub struct SnapshotJob {
    writer: SnapshotWriter,
    image: ReplicaImage,
    digest: Option<u32>,
}

impl SnapshotJob {
    /// The snapshot's description.
    pub fn meta(&self) -> &SnapshotMeta {
        self.writer.meta()
    }

    /// Whether the state machine's part of the image is still to be
    /// encoded (by [`run`](Self::run)).
    pub fn is_deferred(&self) -> bool {
        self.image.is_deferred()
    }

    /// Bytes of the replica image to write (encoding a deferred part now).
    pub fn image_len(&mut self) -> u64 {
        self.image.len()
    }

    /// Encode a deferred state machine image, write the image to the temp
    /// file, seal it (trailer, fdatasync) and publish it (rename into place,
    /// directory sync: on a busy disk these wait behind other writeback).
    /// Touches nothing but that file, which is removed if this fails.
    pub fn run(self) -> Result<WrittenSnapshot, StorageError> {
        let Self {
            mut writer,
            mut image,
            digest,
        } = self;
        for part in image.parts() {
            if let Err(error) = writer.write(part) {
                // Free the space the partial file takes (a full disk is
                // the likely cause); the next open would remove it anyway.
                if let Err(discard) = writer.discard() {
                    tracing::warn!(error = %discard, "could not remove a partial snapshot");
                }
                return Err(error);
            }
        }
        drop(image);
        let mut sealed = writer.seal()?;
        sealed.publish()?;
        Ok(WrittenSnapshot { sealed, digest })
    }
}

/// Phase 2 of restoring a snapshot received from the leader (see the
/// module docs): the installed file and what decoding it needs, made when
/// the snapshot was installed and taken with [`Shell::take_restore_job`].
/// [`run`](Self::run) it on any thread and hand the result to
/// [`Shell::finish_restore`].
pub struct RestoreJob {
    file: SnapshotFile,
    config: ReplicaConfig,
    prepare: PrepareFn,
}

type PrepareFn = fn(&ReplicaConfig, Bytes, LogIndex) -> Result<PreparedImage, SnapshotError>;

impl std::fmt::Debug for RestoreJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreJob")
            .field("meta", self.file.meta())
            .field("bytes", &self.file.data_len())
            .finish()
    }
}

impl RestoreJob {
    /// The snapshot's description.
    pub fn meta(&self) -> &SnapshotMeta {
        self.file.meta()
    }

    /// Bytes of the image.
    pub fn image_len(&self) -> u64 {
        self.file.data_len()
    }

    /// Read the image and decode and check it (the slow part of a
    /// restore). Touches nothing but the file.
    pub fn run(self) -> RestoredImage {
        let meta = self.file.meta().clone();
        let prepared = self
            .file
            .read_data()
            .map_err(ShellError::from)
            .and_then(|data| {
                (self.prepare)(&self.config, Bytes::from(data), meta.index)
                    .map_err(ShellError::from)
            });
        RestoredImage { meta, prepared }
    }
}

/// A [`RestoreJob`]'s result, for [`Shell::finish_restore`].
#[derive(Debug)]
pub struct RestoredImage {
    meta: SnapshotMeta,
    prepared: Result<PreparedImage, ShellError>,
}

impl RestoredImage {
    /// The snapshot's description.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }
}

/// A [`SnapshotJob`]'s temp file, written and synced, for
/// [`Shell::finish_snapshot`].
#[derive(Debug)]
pub struct WrittenSnapshot {
    sealed: SealedSnapshot,
    digest: Option<u32>,
}

impl WrittenSnapshot {
    /// The snapshot's description.
    pub fn meta(&self) -> &SnapshotMeta {
        self.sealed.meta()
    }
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

/// The batches a log sync in flight covers.
#[derive(Debug)]
struct Syncing {
    batches: Vec<Pending>,
    /// Entries it makes durable (for the observer).
    entries: u64,
}

/// Watches the shell's disk work, for metrics. The shell never reads a
/// clock: an observer that times the syncs reads its own. Every method
/// has an empty default.
pub trait ShellObserver: Send {
    /// Entries were appended to the log (durable after the next sync):
    /// how many, and their size in bytes.
    fn appended(&mut self, _entries: u64, _bytes: u64) {}
    /// A sync of the log starts.
    fn sync_started(&mut self) {}
    /// The sync finished (`ok` is false when it failed); it made
    /// `entries` appended entries durable.
    fn sync_finished(&mut self, _ok: bool, _entries: u64) {}
}

/// A server and its storage. See the module docs.
pub struct Shell<M> {
    server: ServerNode<M>,
    storage: Storage,
    recovered: Recovered,
    /// Batches written and waiting for the sync.
    pending: Vec<Pending>,
    /// The batches the log sync in flight covers (see the module docs).
    syncing: Option<Syncing>,
    /// Outputs gathered for the caller of `process` / `write` / `sync`.
    out: Outputs,
    /// The snapshot being received from the leader.
    incoming: Option<SnapshotWriter>,
    /// The snapshot taken and not yet finished.
    taking: Option<SnapshotMeta>,
    /// The restore of the snapshot received last, until taken.
    restore_job: Option<RestoreJob>,
    compute_digests: bool,
    now: Time,
    syncs: u64,
    /// Entries appended since the last sync.
    unsynced: bool,
    /// How many (for the observer).
    unsynced_entries: u64,
    observer: Option<Box<dyn ShellObserver>>,
    /// Set while the disk is full (see the module docs).
    stall: Option<Stall>,
    /// No snapshot is started before this time (one did not fit).
    snapshot_retry_at: Time,
}

impl<M: RawStateMachine> Shell<M> {
    /// Open the data directory `data_dir` on `disk` (initialising it with
    /// `bootstrap` if it holds nothing yet; a directory that does keeps
    /// what it holds), recover, and start the server from the latest
    /// snapshot and the log. A directory of another server is refused.
    pub fn open(
        config: ShellConfig,
        data_dir: &Path,
        disk: Arc<dyn Disk>,
        bootstrap: Option<Bootstrap>,
        machine: M,
        now: Time,
        wall_ms: u64,
    ) -> Result<Self, ShellError> {
        let id = config.server.raft.id;
        let mut opened = Storage::open(Arc::clone(&disk), data_dir, config.storage.clone())?;
        if !opened.0.is_bootstrapped() {
            let Some(bootstrap) = bootstrap else {
                return Err(ShellError::NotBootstrapped {
                    path: data_dir.to_path_buf(),
                });
            };
            drop(opened);
            Storage::bootstrap(
                Arc::clone(&disk),
                data_dir,
                config.storage.clone(),
                bootstrap.config,
                bootstrap.identity,
            )?;
            opened = Storage::open(disk, data_dir, config.storage.clone())?;
        }
        let (storage, state, report) = opened;
        let recorded = storage.identity().server;
        if recorded != id.0 {
            return Err(ShellError::WrongServer {
                path: data_dir.to_path_buf(),
                recorded,
                configured: id.0,
            });
        }
        if !report.is_clean() {
            tracing::warn!(?report, dir = %data_dir.display(), "storage recovery repaired the data directory");
        }
        let recovered = Recovered {
            entries: state.entries.iter().map(|e| (e.index, e.term)).collect(),
            snapshot: state.snapshot.index,
            discarded_bytes: report.log.discarded.iter().map(|d| d.bytes).sum(),
        };
        let snapshot_data = storage.snapshots().read_all()?.unwrap_or_default();
        let compute_digests = config.compute_digests;
        let mut server = ServerNode::new(
            config.server,
            state,
            &snapshot_data,
            machine,
            config.seed,
            now,
            wall_ms,
        )?;
        server.snapshot_size_is(snapshot_data.len() as u64);
        Ok(Self {
            server,
            storage,
            recovered,
            pending: Vec::new(),
            syncing: None,
            out: Outputs::default(),
            incoming: None,
            taking: None,
            restore_job: None,
            compute_digests,
            now,
            syncs: 0,
            unsynced: false,
            unsynced_entries: 0,
            observer: None,
            stall: None,
            snapshot_retry_at: Time(0),
        })
    }

    /// Report appends and syncs to `observer` from now on (metrics).
    pub fn set_observer(&mut self, observer: Box<dyn ShellObserver>) {
        self.observer = Some(observer);
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

    /// Whether the shell is stalled because the disk is full (see the
    /// module docs).
    pub fn disk_full(&self) -> bool {
        self.stall.is_some()
    }

    /// Advance the monotonic clock `now` and the wall clock `wall_ms`.
    /// While the disk is full only the shell's clock moves (it times the
    /// retries); the core is frozen.
    pub fn tick(&mut self, now: Time, wall_ms: u64) {
        self.now = self.now.max(now);
        if self.stall.is_none() {
            self.server.tick(self.now, wall_ms);
        }
    }

    /// A message from a peer. Messages addressed to another server are
    /// dropped.
    pub fn step(&mut self, message: Message) {
        if message.to != self.id() {
            tracing::debug!(to = ?message.to, "dropping a message for another server");
            return;
        }
        if self.stall.is_some() {
            // Frozen: the sender retries (Raft resends what is lost).
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
        // A sequential query that need not wait for more to be applied.
        let applied = self.server.replica().applied_index().0;
        let local_read = matches!(
            request.request,
            copycat_proto::Request::Query {
                consistency: copycat_proto::Consistency::Sequential,
                index,
                ..
            } if index <= applied
        );
        if self.stall.is_some() && !local_read {
            self.out.client_messages.push((
                conn,
                ServerMessage::Response {
                    id: request.id,
                    result: Err(ClientError::DiskFull),
                },
            ));
            return None;
        }
        self.server.on_request(conn, request, self.now)
    }

    /// Client connection `conn` closed.
    pub fn connection_closed(&mut self, conn: ConnectionId) {
        self.server.connection_closed(conn);
    }

    /// Carry out everything the server has to do, with group commit: write
    /// every pending batch, sync the disk once, then release the messages
    /// that promise durability and apply the committed entries; repeat
    /// while that produced more work. A snapshot that falls due is taken,
    /// written and installed in place (all three phases), unless one
    /// started with [`start_snapshot`](Self::start_snapshot) is in flight;
    /// a snapshot received from the leader is restored in place (unless
    /// its job was taken with [`take_restore_job`](Self::take_restore_job)).
    pub fn process(&mut self) -> Result<Outputs, ShellError> {
        loop {
            self.carry_out()?;
            if let Some(job) = self.take_restore_job() {
                self.finish_restore(job.run())?;
                continue;
            }
            let Some(job) = self.start_snapshot()? else {
                break;
            };
            self.finish_snapshot(job.run())?;
        }
        Ok(self.take_outputs())
    }

    /// [`process`](Self::process) without taking snapshots: the caller
    /// takes them with [`start_snapshot`](Self::start_snapshot).
    pub fn process_batches(&mut self) -> Result<Outputs, ShellError> {
        self.carry_out()?;
        Ok(self.take_outputs())
    }

    fn carry_out(&mut self) -> Result<(), ShellError> {
        while self.write()?.pending {
            self.sync()?;
        }
        Ok(())
    }

    /// Step 1 for every batch the server has: write it (not yet durable).
    /// Messages that need no durability are ready to send at once. A caller
    /// that wants to overlap disk latency with other work (or a simulator
    /// that models it) calls [`sync`](Self::sync) later; nothing that
    /// promises durability leaves before.
    pub fn write(&mut self) -> Result<Written, ShellError> {
        let mut written = Written::default();
        if self.stall.is_some() {
            self.retry_stalled(&mut written)?;
            if self.stall.is_some() {
                return Ok(written);
            }
        }
        while self.server.has_ready() {
            let mut held = Held::new(self.server.ready());
            if let Err(error) = self.write_one(&mut held, &mut written) {
                self.stall_or_fail(error, Some(held))?;
                return Ok(written);
            }
        }
        written.pending = !self.pending.is_empty();
        Ok(written)
    }

    /// Stall on a full disk (keeping the batch that failed, if any), or
    /// fail with any other error.
    fn stall_or_fail(&mut self, error: ShellError, held: Option<Held>) -> Result<(), ShellError> {
        if !error.is_disk_full() {
            return Err(error);
        }
        tracing::warn!(
            id = ?self.id(),
            dir = %self.storage.dir().display(),
            error = %error_chain(&error),
            durable_index = ?self.storage.log().durable_index(),
            retry_ms = DISK_FULL_RETRY_MS,
            "disk full: refusing client requests and taking no part in Raft until writes succeed again"
        );
        // Requests waiting for this server's proposals are told to go
        // elsewhere now, not left to time out.
        self.server.refuse_proposals(ClientError::DiskFull);
        // Batches a sync in flight covered wait again, first in line: the
        // log went back to its durable state, and the sync in place after
        // the retry covers them.
        self.pending = self.waiting_batches();
        // What was appended and is not durable is gone from the log.
        self.unsynced = false;
        self.unsynced_entries = 0;
        self.stall = Some(Stall {
            held,
            retry_at: Time(self.now.0 + DISK_FULL_RETRY_MS),
            retries: 0,
        });
        Ok(())
    }

    /// If the retry is due: write the log again from the core's copy, carry
    /// on with the batch that failed, sync, and release everything that
    /// waited. Still full: stay stalled.
    fn retry_stalled(&mut self, written: &mut Written) -> Result<(), ShellError> {
        let now = self.now;
        let stall = self.stall.as_mut().expect("stalled");
        if now < stall.retry_at {
            return Ok(());
        }
        stall.retry_at = Time(now.0 + DISK_FULL_RETRY_MS);
        stall.retries += 1;
        let mut held = stall.held.take();
        match self.resume(&mut held, written) {
            Ok(()) => {
                let stall = self.stall.take().expect("stalled");
                tracing::info!(
                    id = ?self.id(),
                    dir = %self.storage.dir().display(),
                    retries = stall.retries,
                    durable_index = ?self.storage.log().durable_index(),
                    "disk has room again: writes succeed, resuming"
                );
                Ok(())
            }
            Err(error) if error.is_disk_full() => {
                tracing::debug!(id = ?self.id(), error = %error_chain(&error), "disk still full");
                self.unsynced = false;
                self.unsynced_entries = 0;
                self.stall.as_mut().expect("stalled").held = held;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    fn resume(&mut self, held: &mut Option<Held>, written: &mut Written) -> Result<(), ShellError> {
        self.repair_log()?;
        if let Some(batch) = held.as_mut() {
            self.write_one(batch, written)?;
            *held = None;
        }
        let applied = self.sync_and_release()?;
        written.applied.extend(applied);
        Ok(())
    }

    /// Make the stored log hold what the core holds in memory: keep the
    /// longest prefix both agree on (by the Log Matching Property, the
    /// last index with the same term), write the rest from the core. After
    /// a full disk the log is back at its durable state while the core is
    /// ahead of it by what the failed batches appended (or truncated).
    fn repair_log(&mut self) -> Result<(), ShellError> {
        let raft = self.server.raft();
        let log = self.storage.log();
        let core_last = raft.last_index();
        let mut matched = log.last_index().min(core_last);
        while matched >= log.first_index() && log.term(matched) != raft.term_at(matched) {
            matched = LogIndex(matched.0 - 1);
        }
        let mut entries = Vec::new();
        let mut index = matched.next();
        while index <= core_last {
            let Some(entry) = raft.entry(index) else {
                return Err(ShellError::Storage(StorageError::Inconsistent {
                    path: self.storage.dir().to_path_buf(),
                    reason: format!(
                        "cannot rewrite the log after a full disk: entry {index:?} is no longer in memory"
                    ),
                }));
            };
            entries.push(entry.clone());
            index = index.next();
        }
        if matched < log.last_index() {
            self.storage.log_mut().truncate_from(matched.next())?;
            self.unsynced = true;
        }
        if !entries.is_empty() {
            self.storage.append(&entries)?;
            self.unsynced = true;
            self.unsynced_entries += entries.len() as u64;
        }
        Ok(())
    }

    /// Steps 2 to 4 for every written batch: one sync, then the messages
    /// that promise durability, the committed entries applied, the core
    /// told what is durable. (A snapshot that falls due is left to
    /// [`start_snapshot`](Self::start_snapshot).)
    pub fn sync(&mut self) -> Result<Synced, ShellError> {
        if self.stall.is_some() {
            return Ok(Synced::default());
        }
        match self.sync_and_release() {
            Ok(applied) => Ok(Synced { applied }),
            Err(error) => {
                self.stall_or_fail(error, None)?;
                Ok(Synced::default())
            }
        }
    }

    /// Step 1 of a sync on another thread (see the module docs): if batches
    /// wait for a sync and none is in flight, cover them all with one
    /// [`LogSync`] to [`run`](LogSync::run) anywhere and hand back to
    /// [`finish_sync`](Self::finish_sync). Batches that appended nothing
    /// get a job too ([`LogSync::is_empty`]: nothing for the disk), so
    /// they are released in order with the others.
    pub fn begin_sync(&mut self) -> Result<Option<LogSync>, ShellError> {
        if self.stall.is_some()
            || self.syncing.is_some()
            || (self.pending.is_empty() && !self.unsynced)
        {
            return Ok(None);
        }
        if let Some(observer) = self.observer.as_mut() {
            observer.sync_started();
        }
        match self.storage.begin_sync() {
            Ok(job) => {
                self.syncing = Some(Syncing {
                    batches: std::mem::take(&mut self.pending),
                    entries: std::mem::take(&mut self.unsynced_entries),
                });
                self.unsynced = false;
                Ok(Some(job))
            }
            Err(error) => {
                if let Some(observer) = self.observer.as_mut() {
                    observer.sync_finished(false, 0);
                }
                self.stall_or_fail(error.into(), None)?;
                Ok(None)
            }
        }
    }

    /// Leave the files the storage no longer needs (purged log segments,
    /// old snapshots) for [`take_removals`](Self::take_removals), to remove
    /// on another thread: unlinking a large file can take tens of
    /// milliseconds on a busy disk.
    pub fn defer_removals(&mut self) {
        self.storage.defer_removals(true);
    }

    /// Queue the log's writes for the syncs begun with
    /// [`begin_sync`](Self::begin_sync) (and [`begin_writes`](Self::begin_writes))
    /// to run, instead of writing in place: a small `pwrite` can wait tens
    /// of milliseconds for a busy file system journal, and the shell's
    /// thread sends the heartbeats.
    pub fn defer_writes(&mut self) {
        self.storage
            .defer_writes(true)
            .expect("starting to defer writes runs nothing");
    }

    /// With writes deferred and no sync in flight: a job that runs what is
    /// still queued (the sync marker a finished sync leaves), so that the
    /// files do not wait for the next batch. Finish it with
    /// [`finish_sync`](Self::finish_sync); it releases nothing.
    pub fn begin_writes(&mut self) -> Option<LogSync> {
        if self.stall.is_some() || self.syncing.is_some() {
            return None;
        }
        self.storage.begin_writes()
    }

    /// The files to remove elsewhere ([`Removals::run`]), if any.
    pub fn take_removals(&mut self) -> Option<Removals> {
        self.storage.take_removals()
    }

    /// Whether a sync begun with [`begin_sync`](Self::begin_sync) has not
    /// been finished yet.
    pub fn sync_in_flight(&self) -> bool {
        self.syncing.is_some()
    }

    /// Step 3 of a sync on another thread: record what it made durable and
    /// release the batches it covered, in order (their messages that
    /// promise durability, their committed entries applied, the core told).
    /// A sync that a sync in place superseded releases nothing more. A
    /// failed sync is handled like one that failed in place: a full disk
    /// stalls the shell, any other error fails it.
    pub fn finish_sync(&mut self, synced: LogSynced) -> Result<Synced, ShellError> {
        let writes_only = synced.is_writes_only();
        let syncing = if writes_only {
            None
        } else {
            self.syncing.take()
        };
        let Some(syncing) = syncing else {
            match self.storage.finish_sync(synced) {
                Ok(_) => {}
                // Already stalled by what this sync's failure also saw.
                Err(error) if error.is_disk_full() && self.stall.is_some() => {}
                Err(error) => self.stall_or_fail(error.into(), None)?,
            }
            return Ok(Synced::default());
        };
        let result = self.storage.finish_sync(synced);
        if let Some(observer) = self.observer.as_mut() {
            observer.sync_finished(result.is_ok(), syncing.entries);
        }
        if let Err(error) = result {
            self.syncing = Some(syncing);
            self.stall_or_fail(error.into(), None)?;
            return Ok(Synced::default());
        }
        self.syncs += 1;
        let applied = self.release(syncing.batches);
        Ok(Synced { applied })
    }

    /// Every written batch not released yet, in the order written: those a
    /// sync in flight covers, then the rest.
    fn waiting_batches(&mut self) -> Vec<Pending> {
        let mut batches = self
            .syncing
            .take()
            .map(|syncing| syncing.batches)
            .unwrap_or_default();
        batches.append(&mut self.pending);
        batches
    }

    /// Steps 2 to 4 of written batches once their sync is done: the
    /// messages that promise durability, the committed entries applied, the
    /// core told what is durable. Returns the entries applied.
    fn release(&mut self, batches: Vec<Pending>) -> Vec<Entry> {
        let mut applied = Vec::new();
        for batch in batches {
            self.out.peer_messages.extend(batch.after_persist);
            applied.extend(batch.committed.iter().cloned());
            self.server.after_persist(batch.committed, batch.reads);
            if let Some((index, term)) = batch.persisted {
                self.server.raft_mut().persisted(index, term);
            }
        }
        applied
    }

    /// Phase 1 of taking a snapshot (see the module docs): if one is due
    /// and none is in flight, encode the replica's image at its applied
    /// index and begin its temp file. The core is not told yet.
    pub fn start_snapshot(&mut self) -> Result<Option<SnapshotJob>, ShellError> {
        if self.taking.is_some() || self.stall.is_some() || self.now < self.snapshot_retry_at {
            return Ok(None);
        }
        let Some((meta, image)) = self.server.snapshot_if_due() else {
            return Ok(None);
        };
        let digest = self.compute_digests.then(|| self.server.replica().digest());
        let writer = match self.storage.begin_snapshot(meta.clone()) {
            Ok(writer) => writer,
            Err(error) if error.is_disk_full() => {
                self.snapshot_did_not_fit(&error);
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        tracing::debug!(id = ?self.id(), index = ?meta.index, deferred = image.is_deferred(), "taking a snapshot");
        self.taking = Some(meta);
        Ok(Some(SnapshotJob {
            writer,
            image,
            digest,
        }))
    }

    /// The snapshot started and not yet finished, if any.
    pub fn snapshot_in_flight(&self) -> Option<&SnapshotMeta> {
        self.taking.as_ref()
    }

    /// Phase 3 of taking a snapshot: install the file `written` (already
    /// renamed into place by [`SnapshotJob::run`]), then tell the core,
    /// which may now purge its log.
    /// Returns the snapshot, or `None` if a newer one was installed from
    /// the leader meanwhile (the file is then removed). An error from
    /// [`SnapshotJob::run`] is returned as it is: the shell must be dropped.
    ///
    /// A snapshot that did not fit ([`StorageError::DiskFull`], its temp
    /// file removed) is dropped: `Ok(None)`, and the next is tried after
    /// [`DISK_FULL_RETRY_MS`]. The log keeps everything meanwhile.
    pub fn finish_snapshot(
        &mut self,
        written: Result<WrittenSnapshot, StorageError>,
    ) -> Result<Option<SnapshotReport>, ShellError> {
        let taking = self.taking.take();
        let written = match written {
            Ok(written) => written,
            Err(error) if error.is_disk_full() => {
                self.snapshot_did_not_fit(&error);
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        if taking.as_ref() != Some(written.meta()) {
            return Err(ShellError::NotStarted(written.meta().index));
        }
        if self.server.raft().snapshot_meta().index >= written.meta().index {
            tracing::debug!(id = ?self.id(), index = ?written.meta().index, "dropping a snapshot a newer one replaced");
            self.storage.abort_sealed_snapshot(written.sealed)?;
            return Ok(None);
        }
        let taken = written.meta().clone();
        let meta = match self.storage.install_sealed_snapshot(written.sealed) {
            Ok(meta) => meta,
            Err(error) if error.is_disk_full() => {
                if self.storage.snapshots().latest() != Some(&taken) {
                    // Not installed (the old snapshot is still the latest).
                    self.snapshot_did_not_fit(&error);
                    return Ok(None);
                }
                // Installed and durable, but purging the log behind it
                // needed a sync that did not fit, and the log went back to
                // its durable state: the core may record the snapshot; the
                // log is written again when the disk has room.
                self.stall_or_fail(ShellError::Storage(error), None)?;
                taken
            }
            Err(error) => return Err(error.into()),
        };
        self.server
            .snapshot_stored(&meta)
            .map_err(|e| ShellError::Install(e.to_string()))?;
        let bytes = self.storage.snapshots().latest_data_len().unwrap_or(0);
        self.server.snapshot_size_is(bytes);
        tracing::debug!(id = ?self.id(), index = ?meta.index, "took a snapshot");
        Ok(Some(SnapshotReport {
            meta,
            digest: written.digest,
        }))
    }

    /// Phase 1 of restoring a snapshot received from the leader (see the
    /// module docs): the job of the one installed last, once. A job taken
    /// earlier whose snapshot a newer one superseded may still be run; its
    /// result is dropped.
    pub fn take_restore_job(&mut self) -> Option<RestoreJob> {
        self.restore_job.take()
    }

    /// The index of the snapshot whose image is being restored, if one is.
    pub fn restore_pending(&self) -> Option<LogIndex> {
        self.server.restore_pending()
    }

    /// Phase 3 of restoring a snapshot: swap the decoded image in and apply
    /// the entries held back meanwhile (carry out the batches this produced
    /// with [`process_batches`](Self::process_batches)). Returns the
    /// snapshot, or `None` for a result a newer snapshot superseded. An
    /// image that could not be read or was refused fails the shell.
    pub fn finish_restore(
        &mut self,
        restored: RestoredImage,
    ) -> Result<Option<SnapshotReport>, ShellError> {
        let RestoredImage { meta, prepared } = restored;
        if self.server.restore_pending() != Some(meta.index) {
            tracing::debug!(id = ?self.id(), index = ?meta.index, "dropping the restore of a superseded snapshot");
            return Ok(None);
        }
        let Some(digest) = self
            .server
            .install_restore(prepared?, self.compute_digests)?
        else {
            unreachable!("the image of the pending restore");
        };
        tracing::info!(id = ?self.id(), index = ?meta.index, "restored a snapshot from the leader");
        Ok(Some(SnapshotReport { meta, digest }))
    }

    /// Snapshots wait: this one, and the next for [`DISK_FULL_RETRY_MS`].
    fn snapshot_did_not_fit(&mut self, error: &StorageError) {
        tracing::warn!(
            id = ?self.id(),
            error = %error_chain(error),
            retry_ms = DISK_FULL_RETRY_MS,
            "disk full: snapshot dropped, to be taken again later (the log keeps every entry meanwhile)"
        );
        self.snapshot_retry_at = Time(self.now.0 + DISK_FULL_RETRY_MS);
    }

    /// Step 1 of a batch (and the parts that need no sync). Each part is
    /// taken out of `held` once done, so that after a full disk the batch
    /// is carried on where it stopped.
    fn write_one(&mut self, held: &mut Held, written: &mut Written) -> Result<(), ShellError> {
        let ready = &mut held.ready;
        // A snapshot received is recorded when its last chunk is installed
        // below (`ready.snapshot` is not needed).
        if let Some(soft) = ready.soft_state.take() {
            tracing::info!(id = ?self.id(), role = ?soft.role, term = ?soft.term, leader = ?soft.leader, "role changed");
        }
        if let Some(hard_state) = ready.hard_state {
            self.storage.save_hard_state(hard_state)?;
            ready.hard_state = None;
        }
        if let Some(first) = ready.entries.first() {
            if first.index <= self.storage.log().last_index() {
                self.storage.log_mut().truncate_from(first.index)?;
            }
            self.storage.append(&ready.entries)?;
            let entries = std::mem::take(&mut ready.entries);
            self.unsynced = true;
            self.unsynced_entries += entries.len() as u64;
            if let Some(observer) = self.observer.as_mut() {
                let bytes = entries.iter().map(|e| e.size_bytes() as u64).sum();
                observer.appended(entries.len() as u64, bytes);
            }
            written.entries.extend(entries);
        }
        if let Some(purge) = ready.purge_to {
            self.storage.log_mut().purge_to(purge)?;
            ready.purge_to = None;
        }
        self.out
            .peer_messages
            .extend(std::mem::take(&mut ready.messages));
        for request in std::mem::take(&mut ready.snapshot_requests) {
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
        if ready.snapshot_chunks.iter().any(|chunk| chunk.done) {
            // Everything committed before the snapshot is applied before the
            // snapshot replaces the state (the core waits for the install).
            let applied = self.sync_and_release()?;
            written.applied.extend(applied);
            written.synced_through = Some(self.storage.log().durable_index());
        }
        let chunks = std::mem::take(&mut ready.snapshot_chunks);
        self.receive_chunks(chunks, written)
            .map_err(|error| match error {
                ShellError::Storage(error) => ShellError::ReceivingSnapshot(error),
                other => other,
            })?;
        let ready = &mut held.ready;
        #[cfg(feature = "planted-bugs")]
        let messages_after_persist =
            if copycat_planted::active(copycat_planted::PlantedBug::SendBeforeSync) {
                self.out
                    .peer_messages
                    .extend(std::mem::take(&mut ready.messages_after_persist));
                Vec::new()
            } else {
                std::mem::take(&mut ready.messages_after_persist)
            };
        #[cfg(not(feature = "planted-bugs"))]
        let messages_after_persist = std::mem::take(&mut ready.messages_after_persist);
        self.pending.push(Pending {
            after_persist: messages_after_persist,
            committed: std::mem::take(&mut ready.committed_entries),
            persisted: held.persisted,
            reads: std::mem::take(&mut ready.read_states),
        });
        Ok(())
    }

    /// The chunks of a snapshot received from the leader: written to its
    /// temp file; the last one installs it.
    fn receive_chunks(
        &mut self,
        snapshot_chunks: Vec<copycat_raft::SnapshotChunk>,
        written: &mut Written,
    ) -> Result<(), ShellError> {
        for chunk in snapshot_chunks {
            if chunk.offset == 0 {
                if let Some(writer) = self.incoming.take() {
                    // A transfer that starts over: drop the partial file. If
                    // that fails, nothing depends on it (temp files are
                    // removed when the directory is next opened).
                    if let Err(error) = self.storage.snapshots().abort(writer) {
                        let cause = std::error::Error::source(&error)
                            .map(|c| format!(": {c}"))
                            .unwrap_or_default();
                        tracing::warn!(error = %format_args!("{error}{cause}"), "could not remove a partial snapshot");
                    }
                }
                let writer = self.storage.begin_snapshot(chunk.meta.clone())?;
                self.incoming = Some(writer);
            }
            let Some(writer) = self.incoming.as_mut() else {
                return Err(ShellError::ChunkOutOfOrder(chunk.offset));
            };
            writer.write(&chunk.data)?;
            if chunk.done {
                let writer = self.incoming.take().expect("a snapshot is being received");
                let sealed = writer.seal()?;
                if self
                    .storage
                    .snapshots()
                    .latest()
                    .is_some_and(|latest| latest.index > chunk.meta.index)
                {
                    if let Err(abort) = self.storage.abort_sealed_snapshot(sealed) {
                        tracing::warn!(error = %abort, "could not remove a refused snapshot");
                    }
                    return Err(ShellError::Install(format!(
                        "snapshot at {:?} is older than the one installed",
                        chunk.meta.index
                    )));
                }
                // The replica state at the start of the image (sessions,
                // timers: small next to the state machine's image) is
                // checked before the image replaces the snapshot on disk: a
                // refused one leaves the state and the disk as they were,
                // so the server still restarts. The rest is decoded and
                // checked by the restore job.
                if let Err(error) = self.check_received_head(&sealed) {
                    if let Err(abort) = self.storage.abort_sealed_snapshot(sealed) {
                        tracing::warn!(error = %abort, "could not remove a refused snapshot");
                    }
                    return Err(error);
                }
                // Durable first (a crash now restarts from it), then the
                // core resets its log to it and moves on; the image is
                // decoded by the restore job meanwhile, while the server
                // holds back what the core commits after it.
                self.storage.install_sealed_snapshot(sealed)?;
                self.server
                    .raft_mut()
                    .snapshot_installed(&chunk.meta)
                    .map_err(|e| ShellError::Install(e.to_string()))?;
                self.server.begin_restore(chunk.meta.index);
                let file = self
                    .storage
                    .snapshots()
                    .latest_file()
                    .expect("the snapshot just installed");
                self.server.snapshot_size_is(file.data_len());
                let superseded = self.restore_job.replace(RestoreJob {
                    file,
                    config: self.server.replica().config().clone(),
                    prepare: Replica::<M>::prepare,
                });
                if let Some(old) = superseded {
                    tracing::debug!(id = ?self.id(), index = ?old.meta().index, "a newer snapshot supersedes one not restored yet");
                }
                written.received = Some(chunk.meta.clone());
                tracing::info!(id = ?self.id(), index = ?chunk.meta.index, "installed a snapshot from the leader");
            }
        }
        Ok(())
    }

    /// Read the start of a received image back and check its replica
    /// state ([`check_image_head`]), reading more while it is too short.
    fn check_received_head(&self, sealed: &SealedSnapshot) -> Result<(), ShellError> {
        let total = sealed.data_len();
        let config = self.server.replica().config();
        let mut len = 64 << 10;
        loop {
            let prefix = sealed.read_prefix(len)?;
            if check_image_head(config, &prefix, total, sealed.meta().index)? {
                return Ok(());
            }
            len = len.saturating_mul(4);
        }
    }

    /// One sync for every written batch, then steps 2 to 4 of each. (The
    /// hard state, purges and snapshots are durable when their calls
    /// return; appends and truncations wait for the sync, which is skipped
    /// when there were none.) Returns the entries applied.
    /// A sync in flight is covered too: its batches come first, and its
    /// own end later releases nothing more.
    fn sync_and_release(&mut self) -> Result<Vec<Entry>, ShellError> {
        if self.pending.is_empty() && !self.unsynced && self.syncing.is_none() {
            return Ok(Vec::new());
        }
        if self.unsynced || self.syncing.is_some() {
            if let Some(observer) = self.observer.as_mut() {
                observer.sync_started();
            }
            let synced = self.storage.sync();
            let entries = std::mem::take(&mut self.unsynced_entries);
            if let Some(observer) = self.observer.as_mut() {
                observer.sync_finished(synced.is_ok(), entries);
            }
            synced?;
            self.syncs += 1;
            self.unsynced = false;
        }
        let batches = self.waiting_batches();
        Ok(self.release(batches))
    }
}

/// An error and its sources, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
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
        open_with(disk, id, now, |_| {})
    }

    /// A shell snapshotting every 15 entries, adjusted by `configure`.
    fn open_with(
        disk: &Arc<dyn Disk>,
        id: u64,
        now: u64,
        configure: impl FnOnce(&mut ShellConfig),
    ) -> TestShell {
        let mut server = ServerConfig::new(Config::new(NodeId(id)));
        server.snapshot_every_entries = 15;
        let mut config = ShellConfig {
            server,
            storage: StorageOptions::default(),
            seed: id,
            compute_digests: false,
        };
        configure(&mut config);
        let members = [NodeId(1), NodeId(2), NodeId(3)];
        let dir = PathBuf::from(format!("/data/{id}"));
        Shell::open(
            config,
            &dir,
            Arc::clone(disk),
            Some(Bootstrap::voters(1, NodeId(id), members)),
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
        /// Shells that take no snapshot on their own
        /// ([`Shell::process_batches`]): the test takes theirs.
        manual_snapshots: BTreeSet<u64>,
        /// Shells cut off from their peers.
        isolated: BTreeSet<u64>,
        /// Shells whose restores of snapshots from the leader finish this
        /// many milliseconds after the snapshot was installed (as if
        /// decoded on another thread), not in place.
        slow_restores: BTreeMap<u64, u64>,
        /// Their restores under way: shell, when done, the job.
        restores: Vec<(u64, u64, RestoreJob)>,
        /// Shells that sync their log "on another thread": a sync begun in
        /// one step is run and finished in the next.
        sync_elsewhere: BTreeSet<u64>,
        /// Their syncs under way.
        sync_jobs: BTreeMap<u64, LogSync>,
        /// Steps in which a shell wrote a batch while its sync ran, and the
        /// most entries its log held beyond its durable index then.
        overlapped: (u64, u64),
    }

    impl Cluster {
        fn new(shells: BTreeMap<u64, TestShell>, disk: Arc<dyn Disk>) -> Self {
            let mut session =
                ClientSession::new(ClientConfig::new(ClientId(7)), 0).expect("session");
            for id in shells.keys() {
                session.connected(*id);
            }
            Self {
                disk,
                shells,
                session,
                now: 0,
                done: Vec::new(),
                manual_snapshots: BTreeSet::new(),
                isolated: BTreeSet::new(),
                slow_restores: BTreeMap::new(),
                restores: Vec::new(),
                sync_elsewhere: BTreeSet::new(),
                sync_jobs: BTreeMap::new(),
                overlapped: (0, 0),
            }
        }

        fn step(&mut self) {
            self.now += 5;
            let now = self.now;
            let mut peer = Vec::new();
            let mut to_client = Vec::new();
            let (due, later) = std::mem::take(&mut self.restores)
                .into_iter()
                .partition::<Vec<_>, _>(|(_, at, _)| *at <= now);
            self.restores = later;
            for (id, _, job) in due {
                if let Some(shell) = self.shells.get_mut(&id) {
                    shell.finish_restore(job.run()).expect("restore");
                }
            }
            for (id, shell) in self.shells.iter_mut() {
                shell.tick(Time(now), now);
                // Shells that take their own snapshots restore by hand too
                // (at the next step).
                let slow = self
                    .slow_restores
                    .get(id)
                    .copied()
                    .or(self.manual_snapshots.contains(id).then_some(0));
                let out = if self.sync_elsewhere.contains(id) {
                    // Written while the sync begun in the last step runs.
                    let written = shell.write().expect("write");
                    if written.pending && shell.sync_in_flight() {
                        let log = shell.storage().log();
                        let ahead = log.last_index().0 - log.durable_index().0;
                        self.overlapped.0 += 1;
                        self.overlapped.1 = self.overlapped.1.max(ahead);
                    }
                    if let Some(job) = self.sync_jobs.remove(id) {
                        shell.finish_sync(job.run()).expect("finish sync");
                    }
                    shell.write().expect("write");
                    if let Some(job) = shell.begin_sync().expect("begin sync") {
                        self.sync_jobs.insert(*id, job);
                    }
                    Ok(shell.take_outputs())
                } else if self.manual_snapshots.contains(id) || slow.is_some() {
                    shell.process_batches()
                } else {
                    shell.process()
                };
                let out = out.expect("process");
                if let Some(delay) = slow {
                    if let Some(job) = shell.take_restore_job() {
                        self.restores.push((*id, now + delay, job));
                    }
                }
                peer.extend(out.peer_messages);
                let from = shell.id().0;
                to_client.extend(out.client_messages.into_iter().map(|(_, m)| (from, m)));
            }
            for message in peer {
                if self.isolated.contains(&message.from.0) || self.isolated.contains(&message.to.0)
                {
                    continue;
                }
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

        /// Elect a leader and register the session; returns the leader.
        fn start(&mut self) -> u64 {
            self.run_until(2_000, |c| {
                c.shells.values().any(|s| s.server().raft().is_leader())
                    && c.session.session_id().is_some()
            });
            self.leader()
        }

        fn leader(&self) -> u64 {
            *self
                .shells
                .iter()
                .find(|(_, s)| s.server().raft().is_leader())
                .expect("a leader")
                .0
        }

        /// Submit `count` commands adding `amount` and wait for them.
        fn add(&mut self, count: usize, amount: i64) {
            let target = self.done.len() + count;
            for _ in 0..count {
                self.session
                    .submit_command(codec::encode(&TestCommand::Add(amount)))
                    .expect("submit");
            }
            self.run_until(4_000, |c| c.done.len() == target);
        }

        /// Names of the temp files in `id`'s snapshot directory.
        fn snapshot_temp_files(&self, id: u64) -> Vec<String> {
            let dir = PathBuf::from(format!("/data/{id}/snapshots"));
            let names = self.disk.list_dir(&dir).expect("list");
            names.into_iter().filter(|n| n.ends_with(".tmp")).collect()
        }
    }

    /// Three shells snapshotting every 15 entries and keeping two entries
    /// behind a snapshot, with digests; `manual` take no snapshots on
    /// their own.
    fn cluster(manual: &[u64]) -> Cluster {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let shells = (1..=3)
            .map(|id| {
                let shell = open_with(&disk, id, 0, |config| {
                    config.server.raft.snapshot_trailing_entries = 2;
                    config.server.snapshot_log_percent = 0;
                    config.compute_digests = true;
                });
                (id, shell)
            })
            .collect();
        let mut cluster = Cluster::new(shells, disk);
        cluster.manual_snapshots = manual.iter().copied().collect();
        cluster
    }

    /// By entry count, a snapshot waits until the payloads applied since
    /// the last one are in proportion to its size (or ten times the count
    /// went by): a large state is not written again for a few commands.
    #[test]
    fn a_snapshot_by_entries_waits_for_payloads_in_proportion_to_its_size() {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let shells = (1..=3)
            .map(|id| {
                let shell = open_with(&disk, id, 0, |config| {
                    config.server.snapshot_every_entries = 20;
                    config.server.snapshot_log_percent = 1_000;
                });
                (id, shell)
            })
            .collect();
        let mut cluster = Cluster::new(shells, disk);
        let leader = cluster.start();
        let snapshot = |c: &Cluster| c.shells[&leader].server().raft().snapshot_meta().index;
        // No snapshot yet: the first comes after 20 entries (its size is 0).
        cluster.add(25, 1);
        let first = snapshot(&cluster);
        assert!(first > LogIndex(0), "the first snapshot by entry count");
        let size = cluster.shells[&leader]
            .storage()
            .snapshots()
            .latest_data_len()
            .expect("a snapshot");
        // 20 small commands are far less than ten times its size.
        let payload = codec::encode(&TestCommand::Add(1)).len() as u64;
        assert!(
            25 * payload < 10 * size,
            "{payload} B commands, {size} B image"
        );
        cluster.add(25, 1);
        assert_eq!(snapshot(&cluster), first, "not yet in proportion");
        // Ten times the entry count: taken anyway.
        cluster.add(200, 1);
        assert!(snapshot(&cluster) > first, "taken at ten times the count");
    }

    #[test]
    fn a_snapshot_is_taken_by_log_bytes_as_well_as_by_entries() {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let shells = (1..=3)
            .map(|id| {
                let shell = open_with(&disk, id, 0, |config| {
                    // Never by entries; by 2,000 bytes of commands.
                    config.server.snapshot_every_entries = u64::MAX / 2;
                    config.server.snapshot_every_bytes = 2_000;
                });
                (id, shell)
            })
            .collect();
        let mut cluster = Cluster::new(shells, disk);
        let leader = cluster.start();
        cluster.add(10, 1);
        let snapshot = |c: &Cluster| c.shells[&leader].server().raft().snapshot_meta().index;
        assert_eq!(
            snapshot(&cluster),
            LogIndex(0),
            "10 small commands: not yet"
        );
        cluster.add(300, 1);
        assert!(snapshot(&cluster) > LogIndex(0), "taken by bytes");
    }

    #[test]
    fn a_snapshot_job_finishes_later_and_the_core_purges_only_then() {
        let mut cluster = cluster(&[1, 2, 3]);
        let leader = cluster.start();
        cluster.add(20, 1);
        let shell = cluster.shells.get_mut(&leader).expect("leader");
        let applied = shell.server().replica().applied_index();
        let digest = shell.server().replica().digest();
        let first = shell.server().raft().first_index();

        // Phase 1: the image at the applied index; the core is not told.
        let job = shell.start_snapshot().expect("start").expect("due");
        let meta = job.meta().clone();
        assert_eq!(meta.index, applied);
        assert_eq!(shell.server().raft().term_at(applied), Some(meta.term));
        assert_eq!(meta.config, shell.server().raft().configuration().1.clone());
        let mut job = job;
        assert!(job.image_len() > 0);
        assert_eq!(shell.snapshot_in_flight(), Some(&meta));
        assert!(
            shell.start_snapshot().expect("start").is_none(),
            "one job at a time"
        );

        // Batches go on while the job waits, and past the next due point.
        cluster.add(20, 1);
        let shell = &cluster.shells[&leader];
        assert!(shell.server().replica().applied_index().0 >= applied.0 + 20);
        assert_eq!(shell.server().raft().snapshot_meta().index, LogIndex(0));
        assert_eq!(shell.server().raft().first_index(), first, "nothing purged");
        assert_eq!(
            shell.storage().snapshots().latest().expect("one").index,
            LogIndex(0)
        );
        assert_eq!(cluster.snapshot_temp_files(leader).len(), 1);

        // Phase 2: written and synced, still not current.
        let written = job.run().expect("run");
        assert_eq!(written.meta(), &meta);
        cluster.add(5, 1);
        let shell = cluster.shells.get_mut(&leader).expect("leader");
        assert_eq!(shell.server().raft().snapshot_meta().index, LogIndex(0));
        assert_eq!(shell.server().raft().first_index(), first, "nothing purged");

        // Phase 3: installed, then the core records it and purges.
        let report = shell
            .finish_snapshot(Ok(written))
            .expect("finish")
            .expect("installed");
        assert_eq!(report.meta, meta);
        assert_eq!(report.digest, Some(digest), "the digest at the snapshot");
        assert_eq!(shell.snapshot_in_flight(), None);
        assert_eq!(shell.server().raft().snapshot_meta(), &meta);
        assert_eq!(shell.storage().snapshots().latest(), Some(&meta));
        assert_eq!(
            shell.server().raft().first_index(),
            LogIndex(meta.index.0 - 1),
            "purged up to two entries before the snapshot"
        );
        assert!(cluster.snapshot_temp_files(leader).is_empty());

        // The next one is due already; the cluster keeps going, and the
        // server restarts from the snapshot.
        let shell = cluster.shells.get_mut(&leader).expect("leader");
        let next = shell.start_snapshot().expect("start").expect("due again");
        assert!(next.meta().index > meta.index);
        let written = next.run();
        shell.finish_snapshot(written).expect("finish");
        cluster.add(3, 1);
        cluster.run_until(2_000, |c| (1..=3).all(|id| c.value(id) == 48));
        let now = cluster.now;
        cluster.shells.remove(&leader);
        let reopened = open(&cluster.disk, leader, now);
        assert!(reopened.server().raft().snapshot_meta().index > meta.index);
        assert!(reopened.server().replica().applied_index() > meta.index);
    }

    #[test]
    fn a_snapshot_job_overtaken_by_one_from_the_leader_is_dropped() {
        let mut cluster = cluster(&[1, 2, 3]);
        let leader = cluster.start();
        cluster.manual_snapshots.remove(&leader);
        let follower = (1..=3).find(|id| *id != leader).expect("a follower");
        cluster.add(20, 1);
        cluster.run_until(2_000, |c| c.value(follower) == 20);
        let shell = cluster.shells.get_mut(&follower).expect("follower");
        let job = shell.start_snapshot().expect("start").expect("due");

        // Cut off, the follower falls behind the leader's snapshots and
        // purges; back, it gets the leader's snapshot while its job runs.
        cluster.isolated.insert(follower);
        cluster.add(40, 1);
        assert!(
            cluster.shells[&leader]
                .server()
                .raft()
                .snapshot_meta()
                .index
                > job.meta().index
        );
        cluster.isolated.clear();
        cluster.run_until(4_000, |c| c.value(follower) == 60);
        let shell = cluster.shells.get_mut(&follower).expect("follower");
        let installed = shell.server().raft().snapshot_meta().clone();
        assert!(
            installed.index > job.meta().index,
            "installed from the leader"
        );

        let dropped = shell.finish_snapshot(job.run()).expect("finish");
        assert_eq!(dropped, None, "an older snapshot than the installed one");
        assert_eq!(shell.snapshot_in_flight(), None);
        assert_eq!(shell.server().raft().snapshot_meta(), &installed);
        assert_eq!(shell.storage().snapshots().latest(), Some(&installed));
        assert!(cluster.snapshot_temp_files(follower).is_empty());
    }

    #[test]
    fn a_snapshot_another_shell_started_is_refused() {
        let mut cluster = cluster(&[1, 2, 3]);
        let leader = cluster.start();
        cluster.add(20, 1);
        let follower = (1..=3).find(|id| *id != leader).expect("a follower");
        cluster.run_until(2_000, |c| c.value(follower) == 20);
        let job = cluster
            .shells
            .get_mut(&leader)
            .expect("leader")
            .start_snapshot()
            .expect("start")
            .expect("due");
        let other = cluster.shells.get_mut(&follower).expect("follower");
        assert!(matches!(
            other.finish_snapshot(job.run()),
            Err(ShellError::NotStarted(_))
        ));
    }

    #[test]
    fn a_received_snapshot_is_streamed_to_disk_and_restored_from_it() {
        let mut cluster = cluster(&[]);
        let leader = cluster.start();
        let follower = (1..=3).find(|id| *id != leader).expect("a follower");
        cluster.isolated.insert(follower);
        cluster.add(40, 1);
        let behind = cluster.shells[&follower].server().raft().last_index();
        assert!(
            cluster.shells[&leader].server().raft().first_index() > behind.next(),
            "the leader purged what the follower lacks: only a snapshot helps"
        );
        cluster.isolated.clear();
        let applied = |c: &Cluster, id: u64| c.shells[&id].server().replica().applied_index();
        cluster.run_until(4_000, |c| {
            c.value(follower) == 40 && applied(c, follower) == applied(c, leader)
        });
        let shell = &cluster.shells[&follower];
        assert!(shell.server().raft().snapshot_meta().index.0 >= 15);
        assert_eq!(
            shell.storage().snapshots().latest(),
            Some(shell.server().raft().snapshot_meta())
        );
        assert!(shell.incoming.is_none(), "nothing held once installed");
        assert!(cluster.snapshot_temp_files(follower).is_empty());
        assert_eq!(
            shell.server().replica().digest(),
            cluster.shells[&leader].server().replica().digest()
        );
    }

    #[test]
    fn a_pending_restore_keeps_raft_running_and_holds_back_entries() {
        let mut cluster = cluster(&[]);
        let leader = cluster.start();
        let follower = (1..=3).find(|id| *id != leader).expect("a follower");
        cluster.isolated.insert(follower);
        cluster.add(40, 1);
        let term = cluster.shells[&leader].server().raft().term();
        let election_timeout = cluster.shells[&follower]
            .server()
            .raft()
            .config()
            .election_timeout_ms;
        // The follower's restore takes three election timeouts.
        let delay = 3 * election_timeout;
        cluster.slow_restores.insert(follower, delay);
        cluster.isolated.clear();
        cluster.run_until(4_000, |c| c.shells[&follower].restore_pending().is_some());
        let snapshot = cluster.shells[&follower]
            .restore_pending()
            .expect("pending");
        let pending_since = cluster.now;
        let before = cluster.shells[&follower].server().replica().applied_index();
        assert!(before < snapshot, "the replica is from before the snapshot");
        // Commands commit meanwhile (the follower acknowledges appends and
        // heartbeats: it is a voter of the quorum the leader counts).
        cluster.add(10, 2);
        let mut held_back = 0;
        while cluster.shells[&follower].restore_pending().is_some() {
            let shell = &cluster.shells[&follower];
            held_back = held_back.max(shell.server().held_back_entries());
            assert_eq!(
                shell.server().replica().applied_index(),
                before,
                "nothing applied while the restore is pending"
            );
            assert!(cluster.now - pending_since <= delay + 5);
            cluster.step();
        }
        assert!(cluster.now - pending_since >= delay, "the restore was held");
        assert!(held_back >= 10, "the commands committed meanwhile waited");
        // Raft ran all along: no election (the follower heard the leader and
        // never campaigned), and the follower's log moved past the snapshot.
        assert_eq!(cluster.leader(), leader);
        assert_eq!(cluster.shells[&leader].server().raft().term(), term);
        assert_eq!(cluster.shells[&follower].server().raft().term(), term);
        let shell = &cluster.shells[&follower];
        assert!(shell.server().raft().commit_index() > snapshot);
        assert_eq!(shell.server().held_back_entries(), 0, "applied at install");
        let applied = |c: &Cluster, id: u64| c.shells[&id].server().replica().applied_index();
        cluster.run_until(400, |c| applied(c, follower) == applied(c, leader));
        assert_eq!(cluster.value(follower), 60);
        assert_eq!(
            cluster.shells[&follower].server().replica().digest(),
            cluster.shells[&leader].server().replica().digest()
        );
    }

    /// Every shell syncs its log on "another thread" (a step later): the
    /// shells keep writing batches while a sync runs, the batches are
    /// released in order once theirs is done, and every command applies
    /// once, in order, on every replica.
    #[test]
    fn shells_that_sync_elsewhere_keep_writing_and_release_in_order() {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let shells = (1..=3).map(|id| (id, open(&disk, id, 0))).collect();
        let mut cluster = Cluster::new(shells, disk);
        cluster.sync_elsewhere = (1..=3).collect();
        cluster.start();
        // One command a step: new entries arrive while syncs run.
        for _ in 0..50 {
            cluster
                .session
                .submit_command(codec::encode(&TestCommand::Add(3)))
                .expect("submit");
            cluster.step();
        }
        cluster.run_until(4_000, |c| c.done.len() == 50);
        let outputs: Vec<i64> = cluster
            .done
            .iter()
            .map(|r| codec::decode(r.as_ref().expect("command ok")).expect("decode"))
            .collect();
        assert_eq!(outputs, (1..=50).map(|i| 3 * i).collect::<Vec<i64>>());
        cluster.run_until(2_000, |c| (1..=3).all(|id| c.value(id) == 150));
        let (overlaps, ahead) = cluster.overlapped;
        assert!(
            overlaps > 0 && ahead > 0,
            "batches were written while a sync ran ({overlaps} times, up to {ahead} entries ahead of the durable index)"
        );
        for shell in cluster.shells.values() {
            shell.storage().invariants();
            assert!(shell.syncs() > 0);
        }
    }

    #[test]
    fn three_shells_elect_commit_and_recover_after_restart() {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let shells = (1..=3).map(|id| (id, open(&disk, id, 0))).collect();
        let mut cluster = Cluster::new(shells, disk);
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
