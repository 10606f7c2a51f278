//! [`Storage`]: meta, snapshots and log of one server, opened together.
//!
//! Layout of a data directory:
//!
//! ```text
//! <dir>/meta            term, vote, configuration
//! <dir>/snapshots/      <index>-<term>.snap files
//! <dir>/log/            <first index>.log segment files
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use copycat_raft::{
    Configuration, Entry, HardState, LogIndex, PersistentState, SnapshotMeta, Term,
};

use crate::disk::Disk;
use crate::error::{io_error, Result, StorageError};
use crate::log::{LogOptions, LogRecovery, LogStore, LogSync, LogSynced};
use crate::meta::{Identity, Meta, MetaStore};
use crate::removal::Removals;
use crate::snapshot::{SealedSnapshot, SnapshotStore, SnapshotWriter};

/// Options of a [`Storage`].
#[derive(Clone, Debug, Default)]
pub struct StorageOptions {
    /// Log options; `log.durability` applies to meta and snapshots too.
    pub log: LogOptions,
    /// How many snapshots to keep besides the latest.
    pub snapshots_retained_old: usize,
}

impl StorageOptions {
    /// Rejects inconsistent settings.
    pub fn validate(&self) -> Result<()> {
        self.log.validate()
    }
}

/// What [`Storage::open`] found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// What the log recovery discarded.
    pub log: LogRecovery,
    /// Temp files of interrupted meta saves and snapshot writes, removed.
    pub removed_temp_files: Vec<PathBuf>,
    /// Set when the log was older than the snapshot, or conflicted with it,
    /// and was reset to start after the snapshot: the old last index.
    pub log_reset_from: Option<LogIndex>,
}

impl RecoveryReport {
    /// Whether recovery found nothing to repair.
    pub fn is_clean(&self) -> bool {
        self.log.discarded.is_empty()
            && self.removed_temp_files.is_empty()
            && self.log_reset_from.is_none()
    }
}

/// The durable state of one server: meta, snapshots and log.
#[derive(Debug)]
pub struct Storage {
    dir: PathBuf,
    meta: MetaStore,
    snapshots: SnapshotStore,
    log: LogStore,
}

fn meta_dir(dir: &Path) -> PathBuf {
    dir.to_path_buf()
}

fn snapshot_dir(dir: &Path) -> PathBuf {
    dir.join("snapshots")
}

fn log_dir(dir: &Path) -> PathBuf {
    dir.join("log")
}

impl Storage {
    /// Initialises a fresh data directory for server `identity` with
    /// `config`: a snapshot at index 0, term 0, carrying the configuration
    /// and no data, and a meta file recording the identity. Fails with
    /// [`StorageError::AlreadyBootstrapped`] if `dir` already holds state.
    pub fn bootstrap(
        disk: Arc<dyn Disk>,
        dir: &Path,
        options: StorageOptions,
        config: Configuration,
        identity: Identity,
    ) -> Result<()> {
        let (mut storage, state, _) = Self::open(disk, dir, options)?;
        if storage.meta.exists()
            || storage.snapshots.latest().is_some()
            || !state.entries.is_empty()
        {
            return Err(StorageError::AlreadyBootstrapped {
                path: dir.to_path_buf(),
            });
        }
        let meta = SnapshotMeta {
            index: LogIndex::ZERO,
            term: Term::ZERO,
            config: config.clone(),
        };
        let writer = storage.snapshots.begin(meta)?;
        storage.snapshots.install(writer)?;
        storage.meta.save(Meta {
            identity,
            hard_state: HardState::default(),
            config,
        })?;
        Ok(())
    }

    /// Opens the data directory `dir`, recovers from a crash, and returns the
    /// storage, the state the Raft core restarts from, and what recovery
    /// repaired.
    ///
    /// The log is reconciled with the latest snapshot: if the log ends
    /// before the snapshot, or holds a different term at the snapshot's
    /// index, it is reset to start right after the snapshot. The returned
    /// entries are contiguous; when there are some, the first index is at
    /// most `snapshot.index + 1` and the last at least `snapshot.index`.
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: &Path,
        options: StorageOptions,
    ) -> Result<(Self, PersistentState, RecoveryReport)> {
        options.validate()?;
        let durability = options.log.durability;
        let mut report = RecoveryReport::default();
        let (meta, removed) = MetaStore::open(Arc::clone(&disk), &meta_dir(dir), durability)?;
        report.removed_temp_files.extend(removed);
        let (snapshots, removed) = SnapshotStore::open(
            Arc::clone(&disk),
            &snapshot_dir(dir),
            durability,
            options.snapshots_retained_old,
        )?;
        report.removed_temp_files.extend(removed);
        let (mut log, log_recovery) =
            LogStore::open(Arc::clone(&disk), &log_dir(dir), options.log)?;
        report.log = log_recovery;

        let snapshot = snapshots.latest().cloned().unwrap_or_default();
        let after_snapshot = snapshot.index.next();
        if log.first_index() > after_snapshot {
            return Err(StorageError::Inconsistent {
                path: dir.to_path_buf(),
                reason: format!(
                    "the log starts at {:?} but the latest snapshot ends at {:?}",
                    log.first_index(),
                    snapshot.index
                ),
            });
        }
        let conflicts = snapshot.index >= log.first_index()
            && snapshot.index <= log.last_index()
            && log.term(snapshot.index) != Some(snapshot.term);
        if log.next_index() < after_snapshot || conflicts {
            tracing::warn!(
                last_index = ?log.last_index(),
                snapshot_index = ?snapshot.index,
                conflicts,
                "log is older than or conflicts with the snapshot; resetting it"
            );
            report.log_reset_from = Some(log.last_index());
            log.reset(after_snapshot)?;
        }
        let entries = log.entries(log.first_index(), log.next_index(), None)?;
        let state = PersistentState {
            hard_state: meta.get().hard_state,
            snapshot,
            entries,
        };
        let storage = Self {
            dir: dir.to_path_buf(),
            meta,
            snapshots,
            log,
        };
        storage.invariants();
        Ok((storage, state, report))
    }

    /// Whether `dir` holds a bootstrapped data directory (without opening
    /// or recovering it).
    pub fn is_bootstrapped_dir(disk: &dyn Disk, dir: &Path) -> Result<bool> {
        let meta = meta_dir(dir).join(crate::meta::META_FILE);
        disk.exists(&meta).map_err(io_error("stat", &meta))
    }

    /// Whose data this is (all zero for a directory never bootstrapped).
    pub fn identity(&self) -> Identity {
        self.meta.get().identity
    }

    /// Whether the directory was ever bootstrapped (or joined a cluster).
    pub fn is_bootstrapped(&self) -> bool {
        self.meta.exists()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log.
    pub fn log(&self) -> &LogStore {
        &self.log
    }

    /// The log, for appending, syncing, truncating and purging.
    pub fn log_mut(&mut self) -> &mut LogStore {
        &mut self.log
    }

    /// Gives up the storage and returns its log (e.g. to hand it to a
    /// [`crate::GroupCommit`] writer thread).
    pub fn into_log(self) -> LogStore {
        self.log
    }

    /// The meta store.
    pub fn meta(&self) -> &MetaStore {
        &self.meta
    }

    /// Durably saves the term and vote.
    pub fn save_hard_state(&mut self, hard_state: HardState) -> Result<()> {
        self.meta.save_hard_state(hard_state)
    }

    /// Durably saves the latest configuration.
    pub fn save_config(&mut self, config: Configuration) -> Result<()> {
        self.meta.save_config(config)
    }

    /// The snapshot store.
    pub fn snapshots(&self) -> &SnapshotStore {
        &self.snapshots
    }

    /// Starts writing a snapshot.
    pub fn begin_snapshot(&self, meta: SnapshotMeta) -> Result<SnapshotWriter> {
        self.snapshots.begin(meta)
    }

    /// Installs a written snapshot, then brings the log in line with it:
    /// if the log holds the snapshot's last entry with the same term, the
    /// segments wholly covered by the snapshot are purged (Raft §7: keep the
    /// entries that follow); otherwise the log is discarded and restarts
    /// after the snapshot.
    pub fn install_snapshot(&mut self, writer: SnapshotWriter) -> Result<SnapshotMeta> {
        let meta = self.snapshots.install(writer)?;
        self.align_log(&meta)?;
        Ok(meta)
    }

    /// [`install_snapshot`](Self::install_snapshot) for a snapshot already
    /// sealed ([`SnapshotWriter::seal`], e.g. on another thread): only the
    /// rename, the directory sync and the log's alignment remain.
    pub fn install_sealed_snapshot(&mut self, sealed: SealedSnapshot) -> Result<SnapshotMeta> {
        let meta = self.snapshots.install_sealed(sealed)?;
        self.align_log(&meta)?;
        Ok(meta)
    }

    /// Abandons a sealed snapshot and removes its temp file.
    pub fn abort_sealed_snapshot(&self, sealed: SealedSnapshot) -> Result<()> {
        self.snapshots.abort_sealed(sealed)
    }

    fn align_log(&mut self, meta: &SnapshotMeta) -> Result<()> {
        // A snapshot ending right before the log (or re-installed) leaves
        // the log as it is; the leader's consistency check truncates any
        // conflicting suffix later.
        let continues_log = meta.index < self.log.first_index();
        if continues_log || self.log.term(meta.index) == Some(meta.term) {
            self.log.purge_to(meta.index)?;
        } else {
            self.log.reset(meta.index.next())?;
        }
        self.invariants();
        Ok(())
    }

    /// Appends entries to the log (buffered; see [`LogStore::sync`]).
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.log.append(entries)
    }

    /// Makes all appended entries durable; returns the durable last index.
    pub fn sync(&mut self) -> Result<LogIndex> {
        self.log.sync()
    }

    /// Leave the files the stores no longer need (purged log segments, old
    /// snapshots) for [`take_removals`](Self::take_removals), to remove on
    /// another thread, instead of removing them in place. Off by default.
    pub fn defer_removals(&mut self, defer: bool) {
        self.log.defer_removals(defer);
        self.snapshots.defer_removals(defer);
    }

    /// The files to remove elsewhere ([`Removals::run`]), if any.
    pub fn take_removals(&mut self) -> Option<Removals> {
        let stores: Vec<_> = [self.snapshots.take_removals(), self.log.take_removals()]
            .into_iter()
            .flatten()
            .collect();
        if stores.is_empty() {
            return None;
        }
        Some(Removals {
            disk: self.log.disk(),
            fsync: self.log.options().durability == crate::log::Durability::Fsync,
            stores,
        })
    }

    /// Queue the log's writes for the syncs to run, wherever they run,
    /// instead of writing in place (see [`LogStore::defer_writes`]). Off by
    /// default.
    pub fn defer_writes(&mut self, defer: bool) -> Result<()> {
        self.log.defer_writes(defer)
    }

    /// A job that only runs the log's queued writes, if any (see
    /// [`LogStore::begin_writes`]).
    pub fn begin_writes(&mut self) -> Option<LogSync> {
        self.log.begin_writes()
    }

    /// Begins a sync of the log to run on another thread (see
    /// [`LogStore::begin_sync`]).
    pub fn begin_sync(&mut self) -> Result<LogSync> {
        self.log.begin_sync()
    }

    /// Finishes a sync begun by [`Storage::begin_sync`] (see
    /// [`LogStore::finish_sync`]); returns the durable last index.
    pub fn finish_sync(&mut self, synced: LogSynced) -> Result<LogIndex> {
        self.log.finish_sync(synced)
    }

    /// Checks the invariants tying the snapshot to the log; panics if one is
    /// broken.
    pub fn invariants(&self) {
        self.log.invariants();
        if let Some(snapshot) = self.snapshots.latest() {
            assert!(
                self.log.first_index() <= snapshot.index.next(),
                "the log continues the snapshot"
            );
            assert!(
                self.log.next_index() > snapshot.index,
                "the log reaches the snapshot"
            );
        }
    }
}
