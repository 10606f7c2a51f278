//! Files the stores no longer need, removed away from the thread that owns
//! the stores: unlinking a large file (an old snapshot, a purged log
//! segment) waits for the file system to free its blocks, tens of
//! milliseconds on a busy disk, which the thread that sends heartbeats must
//! not spend. Opt in with [`crate::Storage::defer_removals`]; then take the
//! work with [`crate::Storage::take_removals`] and [`Removals::run`] it on
//! any thread.
//!
//! Crash safety is what it is when the stores remove in place: files go
//! oldest first, each removal made durable (directory sync) before the
//! next, so a crash leaves a contiguous log that merely starts earlier, and
//! old snapshots that the next install removes again. The log is synced as
//! it was at the purge (its first surviving segment and the directory)
//! before any of its segments goes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::disk::Disk;
use crate::error::{io_error, Result};

/// Remove `path` unless it is gone already (removed by another thread).
pub(crate) fn remove_if_present(disk: &dyn Disk, path: &Path) -> Result<()> {
    match disk.remove(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(io_error("remove", path)),
    }
}

/// One store's files to remove, in order.
#[derive(Debug)]
pub(crate) struct StoreRemovals {
    pub(crate) dir: PathBuf,
    /// Synced first (the log's first surviving segment), if it still exists.
    pub(crate) sync_first: Option<PathBuf>,
    pub(crate) files: Vec<PathBuf>,
    /// Where to report the batch done, once every file is removed.
    pub(crate) done: Option<(u64, Arc<Mutex<Vec<u64>>>)>,
}

/// Removals to run on any thread (see the module docs).
#[derive(Debug)]
pub struct Removals {
    pub(crate) disk: Arc<dyn Disk>,
    pub(crate) fsync: bool,
    pub(crate) stores: Vec<StoreRemovals>,
}

impl Removals {
    /// How many files it removes.
    pub fn len(&self) -> usize {
        self.stores.iter().map(|store| store.files.len()).sum()
    }

    /// Whether it removes nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remove the files, each durably, oldest first; stop at the first
    /// failure in a store (its later files stay, so that what is left is
    /// still contiguous). The files that were not removed stay on the disk
    /// until the directory is next opened and cleaned up by the stores.
    pub fn run(self) -> Result<()> {
        let mut first_error = None;
        for store in &self.stores {
            if let Err(error) = self.run_store(store) {
                first_error.get_or_insert(error);
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn run_store(&self, store: &StoreRemovals) -> Result<()> {
        if self.fsync {
            if let Some(first) = &store.sync_first {
                match self.disk.sync_data(first) {
                    // Removed since (a truncation or reset, durable itself).
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    other => other.map_err(io_error("sync", first))?,
                }
            }
            self.sync_dir(store)?;
        }
        for file in &store.files {
            remove_if_present(self.disk.as_ref(), file)?;
            if self.fsync {
                self.sync_dir(store)?;
            }
        }
        if let Some((batch, done)) = &store.done {
            crate::disk::lock(done).push(*batch);
        }
        Ok(())
    }

    fn sync_dir(&self, store: &StoreRemovals) -> Result<()> {
        self.disk
            .sync_dir(&store.dir)
            .map_err(io_error("sync directory", &store.dir))
    }
}
