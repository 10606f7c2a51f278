//! Copycat's durable storage: the Raft log, the term/vote/configuration meta
//! file and snapshots, all through a [`Disk`] trait so the simulator can
//! crash the disk.
//!
//! # Pieces
//!
//! - [`Disk`]: every file operation. [`FsDisk`] is the real file system,
//!   [`MemDisk`] is memory, [`FaultDisk`] is a deterministic disk that loses
//!   unsynced data on [`FaultDisk::crash`] and injects faults.
//! - [`LogStore`]: a segmented, checksummed log of [`copycat_raft::Entry`]
//!   with buffered appends and group commit ([`LogStore::sync`] covers every
//!   append since the previous sync), suffix truncation and prefix purging.
//! - [`GroupCommit`]: a writer thread batching appends from many threads into
//!   one write and one sync.
//! - [`MetaStore`]: term, vote and configuration, replaced atomically.
//! - [`SnapshotStore`]: checksummed snapshot files, streamed in and out in
//!   chunks, installed atomically; a [`SnapshotWriter`] is filled and
//!   sealed (synced) anywhere, the rename into place is the store's.
//! - [`Storage`]: all three for one data directory, with crash recovery that
//!   builds the [`copycat_raft::PersistentState`] the Raft core restarts from.
//! - [`conformance`]: the contract tests every [`Disk`] must pass.
//! - [`power_loss`]: simulated power failure of a stopped server's data
//!   directory, from the sync records [`FsDisk`] keeps when built with the
//!   test-only `sync-tracking` feature.
//!
//! The byte layout, the sync protocol and the crash analysis are in
//! `docs/storage-format.md`.
//!
//! # Example
//!
//! ```
//! use std::path::Path;
//! use std::sync::Arc;
//!
//! use bytes::Bytes;
//! use copycat_raft::{Configuration, Entry, EntryPayload, HardState, LogIndex, NodeId, Term};
//! use copycat_storage::{Disk, Identity, MemDisk, Storage, StorageOptions};
//!
//! # fn main() -> Result<(), copycat_storage::StorageError> {
//! let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
//! let dir = Path::new("/data/node-1");
//!
//! // A new server starts from a bootstrapped directory: a snapshot at index
//! // 0 that carries the initial configuration, and a record of whose data
//! // it is.
//! let config = Configuration::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
//! let identity = Identity { cluster: 0x5eed, server: 1 };
//! Storage::bootstrap(disk.clone(), dir, StorageOptions::default(), config.clone(), identity)?;
//!
//! let (mut storage, state, report) = Storage::open(disk.clone(), dir, StorageOptions::default())?;
//! assert!(report.is_clean());
//! assert_eq!(state.snapshot.config, config);
//! assert!(state.entries.is_empty());
//!
//! // Persist the term and vote before answering a vote request (§5.1).
//! storage.save_hard_state(HardState { term: Term(1), vote: Some(NodeId(1)) })?;
//!
//! // Append entries (buffered), then one sync makes all of them durable.
//! let entries: Vec<Entry> = (1..=3)
//!     .map(|i| Entry {
//!         term: Term(1),
//!         index: LogIndex(i),
//!         payload: EntryPayload::Command(Bytes::from(format!("command {i}"))),
//!     })
//!     .collect();
//! storage.append(&entries)?;
//! assert_eq!(storage.sync()?, LogIndex(3));
//! assert_eq!(storage.log().term(LogIndex(2)), Some(Term(1)));
//!
//! // After a restart, the same state comes back.
//! drop(storage);
//! let (_storage, state, _) = Storage::open(disk, dir, StorageOptions::default())?;
//! assert_eq!(state.hard_state.term, Term(1));
//! assert_eq!(state.entries, entries);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod conformance;
mod disk;
mod error;
pub mod fault;
mod group;
mod log;
mod log_writes;
mod meta;
pub mod power_loss;
mod removal;
mod snapshot;
mod storage;

pub use disk::{Disk, FsDisk, MemDisk};
pub use error::{is_disk_full_io, Result, StorageError};
pub use fault::FaultDisk;
pub use group::GroupCommit;
pub use log::{
    Discarded, Durability, LogOptions, LogRecovery, LogStore, LogSync, LogSynced,
    RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC, SEGMENT_VERSION,
};
pub use meta::{Identity, Meta, MetaStore, META_MAGIC, META_VERSION};
pub use removal::Removals;
pub use snapshot::{
    SealedSnapshot, SnapshotFile, SnapshotStore, SnapshotWriter, SNAPSHOT_MAGIC, SNAPSHOT_VERSION,
};
pub use storage::{RecoveryReport, Storage, StorageOptions};
