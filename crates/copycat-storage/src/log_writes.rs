//! The log's writes, queued instead of done on the thread that owns the
//! store ([`crate::LogStore::defer_writes`]).
//!
//! Even a small `pwrite` can wait tens of milliseconds when the file system
//! journal is busy committing someone else's large writes (a snapshot being
//! synced on the same disk), and the thread that owns the log also sends
//! the heartbeats. With writes deferred, appends, rolls and sync markers
//! become operations in one queue, run in order by whoever runs the next
//! sync ([`crate::LogSync::run`], on any thread). The store keeps the bytes
//! of every operation not run yet and answers reads of them from memory.
//!
//! Order is the whole point: the operations touch the files in exactly the
//! order the store issued them, so the files go through the same states as
//! when the store writes in place, and recovery needs no new rule. Anything
//! the store still does in place (truncations, removals, a sync in place)
//! first runs every queued operation itself (a *barrier*), so nothing
//! queued can land after it.
//!
//! After a failed operation nothing more runs until the store has rolled
//! back and discarded the queue: the operations after it assumed it done.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::disk::{lock, Disk};
use crate::error::{io_error, Result, StorageError};

/// One queued change to a segment file.
#[derive(Debug)]
pub(crate) enum WriteOp {
    /// Create the file (empty) and write its header.
    Create { path: PathBuf, header: Vec<u8> },
    /// Write bytes at an offset (records, or a sync marker).
    Write {
        path: PathBuf,
        offset: u64,
        bytes: Arc<Vec<u8>>,
    },
    /// fdatasync a segment being sealed, before its successor is created.
    Sync { path: PathBuf },
}

impl WriteOp {
    fn run(&self, disk: &dyn Disk) -> Result<()> {
        match self {
            WriteOp::Create { path, header } => {
                disk.create(path).map_err(io_error("create", path))?;
                if let Err(error) = disk.write_at(path, 0, header) {
                    // Not a segment yet: leave no torn header behind.
                    let _ = disk.remove(path);
                    return Err(io_error("write", path)(error));
                }
                Ok(())
            }
            WriteOp::Write {
                path,
                offset,
                bytes,
            } => disk
                .write_at(path, *offset, bytes)
                .map_err(io_error("write", path)),
            WriteOp::Sync { path } => match disk.sync_data(path) {
                // Purged since (its writes had all run: see `purge_inner`).
                Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other.map_err(io_error("sync", path)),
            },
        }
    }
}

/// A failure kept so that every later runner reports it too.
#[derive(Clone, Debug)]
struct Failure {
    operation: &'static str,
    path: PathBuf,
    kind: io::ErrorKind,
    message: String,
}

impl Failure {
    fn of(error: &StorageError) -> Self {
        match error {
            StorageError::DiskFull {
                operation,
                path,
                source,
            }
            | StorageError::Io {
                operation,
                path,
                source,
            } => Failure {
                operation,
                path: path.clone(),
                kind: source.kind(),
                message: source.to_string(),
            },
            other => Failure {
                operation: "write",
                path: PathBuf::new(),
                kind: io::ErrorKind::Other,
                message: other.to_string(),
            },
        }
    }

    fn error(&self) -> StorageError {
        io_error(self.operation, &self.path)(io::Error::new(self.kind, self.message.clone()))
    }
}

/// The queue shared by the store and the syncs it hands out.
#[derive(Debug, Default)]
pub(crate) struct WriteQueue {
    /// Operations not taken yet, each with its sequence number.
    ops: Mutex<VecDeque<(u64, WriteOp)>>,
    /// Held while running operations, so that runners take turns and each
    /// runs its operations in order; holds the first failure.
    runner: Mutex<Option<Failure>>,
    /// Every operation numbered below this has run.
    ran: AtomicU64,
}

impl WriteQueue {
    pub(crate) fn push(&self, seq: u64, op: WriteOp) {
        lock(&self.ops).push_back((seq, op));
    }

    /// Every operation numbered below this has run.
    pub(crate) fn ran(&self) -> u64 {
        self.ran.load(Ordering::Acquire)
    }

    /// Run the queued operations numbered below `upto` (all of them with
    /// `None`), in order, after those another runner is running. Stops at
    /// the first failure, which every later call reports too until
    /// [`discard`](Self::discard).
    pub(crate) fn run(&self, disk: &dyn Disk, upto: Option<u64>) -> Result<()> {
        let mut failed = lock(&self.runner);
        if let Some(failure) = &*failed {
            return Err(failure.error());
        }
        loop {
            let next = {
                let mut ops = lock(&self.ops);
                match ops.front() {
                    Some((seq, _)) if upto.is_none_or(|upto| *seq < upto) => ops.pop_front(),
                    _ => None,
                }
            };
            let Some((seq, op)) = next else {
                return Ok(());
            };
            if let Err(error) = op.run(disk) {
                *failed = Some(Failure::of(&error));
                // Kept until discarded: the store reads its bytes from it
                // meanwhile (it never made it to the file).
                lock(&self.ops).push_front((seq, op));
                return Err(error);
            }
            self.ran.store(seq + 1, Ordering::Release);
            // Its bytes are freed here, not on the store's thread.
            drop(op);
        }
    }

    /// Forget every operation not run and any failure (the store has rolled
    /// back, or starts over). Waits for a runner that is running. Returns
    /// the number below which every operation ran: none from it on did
    /// (though a failed one may have written part of its bytes).
    pub(crate) fn discard(&self, next_seq: u64) -> u64 {
        let mut failed = lock(&self.runner);
        lock(&self.ops).clear();
        *failed = None;
        self.ran.swap(next_seq, Ordering::AcqRel)
    }
}
