//! [`GroupCommit`]: a writer thread that batches appends from many threads
//! into one write and one sync.
//!
//! Threads:
//! - Any number of submitter threads call [`GroupCommit::submit`] or
//!   [`GroupCommit::append`]. Each queues its entries under the shared lock
//!   and waits until the writer reports them durable.
//! - One writer thread owns the [`LogStore`]. It takes *everything* queued,
//!   appends it, syncs once, publishes the new durable index and wakes the
//!   submitters. While it syncs, new submissions queue up and form the next
//!   batch, so the number of syncs adapts to the load.
//!
//! The lock protects only the queue and the durable index; the log itself is
//! touched by the writer thread alone.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use copycat_raft::{Entry, EntryPayload, LogIndex, Term};

use crate::disk::lock;
use crate::error::{Result, StorageError};
use crate::log::LogStore;

#[derive(Debug)]
struct State {
    queue: Vec<Entry>,
    /// Index the next queued entry gets.
    next_index: LogIndex,
    /// Highest index the writer reported durable.
    durable_index: LogIndex,
    failure: Option<String>,
    shutting_down: bool,
    syncs: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when entries are queued or shutdown is requested.
    work: Condvar,
    /// Signalled when the durable index moves or the writer fails.
    durable: Condvar,
}

/// A handle on a group-commit writer thread. Clone it to share between
/// submitter threads; [`GroupCommit::shutdown`] stops the writer and returns
/// the log.
///
/// When the last handle is dropped without a shutdown, the writer thread is
/// stopped (after syncing what is queued) and the log closed.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    shared: Arc<Shared>,
    writer: Arc<Writer>,
}

/// Owns the writer thread; stops it when the last handle goes away.
#[derive(Debug)]
struct Writer {
    shared: Arc<Shared>,
    handle: Mutex<Option<JoinHandle<Result<LogStore>>>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(handle) = lock(&self.handle).take() {
            lock(&self.shared.state).shutting_down = true;
            self.shared.work.notify_all();
            // Errors were already reported to the submitters.
            let _ = handle.join();
        }
    }
}

impl GroupCommit {
    /// Starts the writer thread, which takes ownership of `log`.
    pub fn spawn(log: LogStore) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: Vec::new(),
                next_index: log.next_index(),
                durable_index: log.durable_index(),
                failure: None,
                shutting_down: false,
                syncs: 0,
            }),
            work: Condvar::new(),
            durable: Condvar::new(),
        });
        let writer_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("copycat-log-writer".into())
            .spawn(move || writer_loop(log, &writer_shared))
            .expect("spawning the log writer thread");
        Self {
            writer: Arc::new(Writer {
                shared: Arc::clone(&shared),
                handle: Mutex::new(Some(handle)),
            }),
            shared,
        }
    }

    /// Appends one entry with the next free index and waits until it is
    /// durable; returns its index.
    pub fn submit(&self, term: Term, payload: EntryPayload) -> Result<LogIndex> {
        let index = {
            let mut state = lock(&self.shared.state);
            check_open(&state)?;
            let index = state.next_index;
            state.next_index = index.next();
            state.queue.push(Entry {
                term,
                index,
                payload,
            });
            index
        };
        self.shared.work.notify_one();
        self.wait_durable(index)?;
        Ok(index)
    }

    /// Appends entries that must continue the log, and waits until they are
    /// durable; returns the last index.
    pub fn append(&self, entries: Vec<Entry>) -> Result<LogIndex> {
        let Some(last) = entries.last().map(|entry| entry.index) else {
            return Ok(lock(&self.shared.state).durable_index);
        };
        {
            let mut state = lock(&self.shared.state);
            check_open(&state)?;
            for entry in &entries {
                if entry.index != state.next_index {
                    return Err(StorageError::NotContiguous {
                        expected: state.next_index,
                        found: entry.index,
                    });
                }
                state.next_index = entry.index.next();
            }
            state.queue.extend(entries);
        }
        self.shared.work.notify_one();
        self.wait_durable(last)?;
        Ok(last)
    }

    /// Waits until `index` is durable.
    pub fn wait_durable(&self, index: LogIndex) -> Result<()> {
        let mut state = lock(&self.shared.state);
        loop {
            if state.durable_index >= index {
                return Ok(());
            }
            if let Some(failure) = &state.failure {
                return Err(StorageError::GroupCommit(failure.clone()));
            }
            state = self
                .shared
                .durable
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Highest index reported durable so far.
    pub fn durable_index(&self) -> LogIndex {
        lock(&self.shared.state).durable_index
    }

    /// Number of syncs the writer has performed.
    pub fn syncs(&self) -> u64 {
        lock(&self.shared.state).syncs
    }

    /// Makes everything queued durable, stops the writer thread and returns
    /// the log. Fails if another handle already shut it down or the writer
    /// failed.
    pub fn shutdown(&self) -> Result<LogStore> {
        lock(&self.shared.state).shutting_down = true;
        self.shared.work.notify_all();
        let handle = lock(&self.writer.handle)
            .take()
            .ok_or_else(|| StorageError::GroupCommit("already shut down".into()))?;
        handle
            .join()
            .map_err(|_| StorageError::GroupCommit("writer thread panicked".into()))?
    }
}

fn check_open(state: &State) -> Result<()> {
    if let Some(failure) = &state.failure {
        return Err(StorageError::GroupCommit(failure.clone()));
    }
    if state.shutting_down {
        return Err(StorageError::GroupCommit("shutting down".into()));
    }
    Ok(())
}

fn writer_loop(mut log: LogStore, shared: &Shared) -> Result<LogStore> {
    loop {
        let batch = {
            let mut state = lock(&shared.state);
            while state.queue.is_empty() && !state.shutting_down {
                state = shared
                    .work
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if state.queue.is_empty() {
                return Ok(log);
            }
            std::mem::take(&mut state.queue)
        };
        let result = log.append(&batch).and_then(|()| log.sync());
        let mut state = lock(&shared.state);
        match result {
            Ok(durable) => {
                state.durable_index = durable;
                state.syncs += 1;
            }
            Err(error) => {
                state.failure = Some(error.to_string());
                drop(state);
                shared.durable.notify_all();
                return Err(error);
            }
        }
        drop(state);
        shared.durable.notify_all();
    }
}
