//! Crash tests on a [`FaultDisk`]: damage in the unsynced tail is truncated
//! and reported; damage in synced data is a clear, fatal error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use copycat_raft::{Configuration, HardState, LogIndex, NodeId, SnapshotMeta, Term};
use copycat_storage::{
    conformance, Disk, Durability, FaultDisk, Identity, LogStore, Meta, MetaStore, Storage,
    StorageError, StorageOptions, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};

fn shared(disk: &FaultDisk) -> Arc<dyn Disk> {
    Arc::new(disk.clone())
}

fn segments(disk: &FaultDisk, dir: &Path) -> Vec<PathBuf> {
    disk.list_dir(dir)
        .unwrap()
        .into_iter()
        .map(|name| dir.join(name))
        .collect()
}

fn open(
    disk: &FaultDisk,
    dir: &Path,
) -> copycat_storage::Result<(LogStore, copycat_storage::LogRecovery)> {
    LogStore::open(shared(disk), dir, conformance::small_segments())
}

#[test]
fn torn_last_write_is_truncated_and_reported() {
    let mut torn_records = 0;
    for seed in 0..40 {
        let disk = FaultDisk::new(seed);
        let dir = Path::new("/torn");
        let (mut log, _) = open(&disk, dir).unwrap();
        log.append(&conformance::entries(1, 50, 1)).unwrap();
        assert_eq!(log.sync().unwrap(), LogIndex(50));
        log.append(&conformance::entries(51, 53, 1)).unwrap();
        log.flush().unwrap();
        let kept = disk.tear_last_write().expect("the last write is unsynced");
        disk.crash();
        drop(log);
        let (log, recovery) = open(&disk, dir).unwrap();
        // Everything synced survives; some of the torn write may.
        assert!(log.last_index() >= LogIndex(50) && log.last_index() <= LogIndex(53));
        let all = log
            .entries(log.first_index(), log.next_index(), None)
            .unwrap();
        assert_eq!(all, conformance::entries(1, log.last_index().get(), 1));
        if let Some(discarded) = recovery.discarded.first() {
            torn_records += 1;
            assert!(discarded.bytes > 0 && discarded.bytes <= kept);
            assert!(discarded.offset >= SEGMENT_HEADER_BYTES);
        }
    }
    assert!(torn_records > 10, "only {torn_records} seeds tore a record");
}

#[test]
fn bit_flip_in_unsynced_tail_is_truncated_and_reported() {
    let disk = FaultDisk::new(1);
    let dir = Path::new("/flip-tail");
    let (mut log, _) = open(&disk, dir).unwrap();
    log.append(&conformance::entries(1, 20, 1)).unwrap();
    log.sync().unwrap();
    log.append(&conformance::entries(21, 21, 1)).unwrap();
    log.flush().unwrap();
    // The last record lies at the end of the last segment; damage its
    // payload and let the damaged bytes reach the disk, as a crash during
    // writeback could.
    let last = segments(&disk, dir).pop().unwrap();
    let len = disk.file_len(&last).unwrap();
    disk.flip_bit(&last, Some((len - 1) * 8)).unwrap();
    disk.sync_data(&last).unwrap();
    disk.crash();
    drop(log);
    let (log, recovery) = open(&disk, dir).unwrap();
    assert_eq!(log.last_index(), LogIndex(20));
    assert_eq!(recovery.discarded.len(), 1);
    let discarded = &recovery.discarded[0];
    assert_eq!(discarded.path, last);
    assert!(discarded.reason.contains("checksum"), "{discarded:?}");
    // Truncated at the damage; reopening then syncs and writes a 16-byte
    // sync marker there.
    assert_eq!(disk.file_len(&last).unwrap(), discarded.offset + 16);
}

#[test]
fn bit_flip_in_sealed_segment_is_fatal() {
    let disk = FaultDisk::new(2);
    let dir = Path::new("/flip-sealed");
    let (mut log, _) = open(&disk, dir).unwrap();
    log.append(&conformance::entries(1, 100, 1)).unwrap();
    log.sync().unwrap();
    drop(log);
    let files = segments(&disk, dir);
    assert!(files.len() > 3);
    let sealed = &files[1];
    // A bit in the payload of the second record.
    let bit = (SEGMENT_HEADER_BYTES + 2 * RECORD_HEADER_BYTES + 40) * 8 + 3;
    disk.flip_bit(sealed, Some(bit)).unwrap();
    disk.crash();
    match open(&disk, dir) {
        Err(StorageError::Corrupt {
            path,
            offset,
            reason,
        }) => {
            assert_eq!(&path, sealed);
            assert!(offset > SEGMENT_HEADER_BYTES);
            assert!(reason.contains("sealed"), "{reason}");
            let message = StorageError::Corrupt {
                path,
                offset,
                reason,
            }
            .to_string();
            assert!(
                message.contains(".log") && message.contains("offset"),
                "{message}"
            );
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

#[test]
fn random_bit_flips_in_synced_data_are_never_returned() {
    // Wherever a bit flips in synced log data, opening either fails with a
    // typed error or (for the last segment's tail) discards and reports the
    // damaged record; it never returns a damaged entry.
    for seed in 0..60 {
        let disk = FaultDisk::new(seed);
        let dir = Path::new("/flip-random");
        let (mut log, _) = open(&disk, dir).unwrap();
        let written = conformance::entries(1, 60, 1);
        log.append(&written).unwrap();
        log.sync().unwrap();
        drop(log);
        let files = segments(&disk, dir);
        let victim = &files[seed as usize % files.len()];
        disk.flip_bit(victim, None).unwrap();
        match open(&disk, dir) {
            Ok((log, recovery)) => {
                assert!(
                    !recovery.discarded.is_empty(),
                    "seed {seed}: damage went unnoticed"
                );
                let all = log
                    .entries(log.first_index(), log.next_index(), None)
                    .unwrap();
                assert_eq!(all, written[..all.len()]);
            }
            Err(error) => {
                let message = error.to_string();
                assert!(message.contains("/flip-random/"), "seed {seed}: {message}");
            }
        }
    }
}

#[test]
fn bit_flip_in_middle_of_active_segment_is_fatal() {
    let disk = FaultDisk::new(4);
    let dir = Path::new("/flip-active");
    let mut options = conformance::small_segments();
    options.segment_size_max_bytes = 1 << 20;
    let (mut log, _) = LogStore::open(shared(&disk), dir, options.clone()).unwrap();
    log.append(&conformance::entries(1, 30, 1)).unwrap();
    log.sync().unwrap();
    drop(log);
    let file = segments(&disk, dir).pop().unwrap();
    let bit = (SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + 2) * 8;
    disk.flip_bit(&file, Some(bit)).unwrap();
    let error = LogStore::open(shared(&disk), dir, options).unwrap_err();
    assert!(
        matches!(&error, StorageError::Corrupt { reason, .. } if reason.contains("before a sync marker")),
        "{error}"
    );
}

/// A power loss may persist the sectors of an unsynced write out of order:
/// damage in the unsynced tail followed by intact records is a torn write
/// (truncated), not corruption, because no sync marker follows it. (Found by
/// the cluster simulator: the old rule, "a valid record after the damage
/// means synced data", refused to restart such a server.)
#[test]
fn damage_before_intact_unsynced_records_is_a_torn_write() {
    let disk = FaultDisk::new(9);
    let dir = Path::new("/out-of-order");
    let (mut log, _) = open(&disk, dir).unwrap();
    log.append(&conformance::entries(1, 10, 1)).unwrap();
    log.sync().unwrap();
    log.append(&conformance::entries(11, 20, 1)).unwrap();
    log.flush().unwrap();
    let last = segments(&disk, dir).pop().unwrap();
    let durable = disk.durable_contents(&last).unwrap().len() as u64;
    // Damage the first unsynced record, then let everything reach the disk.
    disk.flip_bit(&last, Some((durable + RECORD_HEADER_BYTES + 1) * 8))
        .unwrap();
    disk.sync_data(&last).unwrap();
    disk.crash();
    drop(log);
    let (log, recovery) = open(&disk, dir).unwrap();
    assert_eq!(
        log.last_index(),
        LogIndex(10),
        "synced entries survive, the torn batch goes"
    );
    assert_eq!(recovery.discarded.len(), 1);
}

/// Damage to synced data followed by a sync marker is corruption: fatal.
#[test]
fn damage_before_a_sync_marker_is_fatal() {
    let disk = FaultDisk::new(10);
    let dir = Path::new("/before-marker");
    let (mut log, _) = open(&disk, dir).unwrap();
    log.append(&conformance::entries(1, 10, 1)).unwrap();
    log.sync().unwrap();
    log.append(&conformance::entries(11, 12, 1)).unwrap();
    log.sync().unwrap();
    drop(log);
    let last = segments(&disk, dir).pop().unwrap();
    // Entry 5 was synced; markers follow it.
    let bit = (disk.durable_contents(&last).unwrap().len() as u64 / 3) * 8;
    disk.flip_bit(&last, Some(bit)).unwrap();
    let error = open(&disk, dir).unwrap_err();
    assert!(
        matches!(&error, StorageError::Corrupt { reason, .. } if reason.contains("before a sync marker")),
        "{error}"
    );
}

#[test]
fn unsynced_segment_creation_vanishes_cleanly() {
    let disk = FaultDisk::new(5);
    let dir = Path::new("/roll");
    let (mut log, _) = open(&disk, dir).unwrap();
    log.append(&conformance::entries(1, 10, 1)).unwrap();
    log.sync().unwrap();
    // Enough to roll several segments, never synced.
    log.append(&conformance::entries(11, 120, 1)).unwrap();
    log.flush().unwrap();
    disk.crash_torn();
    drop(log);
    let (log, _) = open(&disk, dir).unwrap();
    assert!(log.last_index() >= LogIndex(10));
    let all = log
        .entries(log.first_index(), log.next_index(), None)
        .unwrap();
    assert_eq!(all, conformance::entries(1, log.last_index().get(), 1));
}

#[test]
fn interrupted_meta_and_snapshot_writes_leave_the_old_state() {
    let disk = FaultDisk::new(6);
    let dir = Path::new("/storage");
    let options = StorageOptions::default();
    Storage::bootstrap(
        shared(&disk),
        dir,
        options.clone(),
        Configuration::with_voters([NodeId(1)]),
        Identity {
            cluster: 7,
            server: 1,
        },
    )
    .unwrap();
    let (mut storage, _, _) = Storage::open(shared(&disk), dir, options.clone()).unwrap();
    let voted = HardState {
        term: Term(3),
        vote: Some(NodeId(1)),
    };
    storage.save_hard_state(voted).unwrap();
    // A snapshot is being written when power fails.
    let mut writer = storage
        .begin_snapshot(SnapshotMeta {
            index: LogIndex(0),
            term: Term(0),
            config: Configuration::with_voters([NodeId(1), NodeId(2)]),
        })
        .unwrap();
    writer.write(&[7u8; 5000]).unwrap();
    // A meta save is interrupted after writing its temp file.
    disk.create(&dir.join("meta.tmp")).unwrap();
    disk.write_at(&dir.join("meta.tmp"), 0, b"half a meta")
        .unwrap();
    disk.sync_data(&dir.join("meta.tmp")).unwrap();
    disk.sync_dir(dir).unwrap();
    disk.sync_dir(&dir.join("snapshots")).unwrap();
    disk.crash();
    drop(storage);
    let (_, state, report) = Storage::open(shared(&disk), dir, options).unwrap();
    assert_eq!(state.hard_state, voted);
    assert_eq!(
        state.snapshot.config,
        Configuration::with_voters([NodeId(1)])
    );
    assert_eq!(report.removed_temp_files.len(), 2, "{report:?}");
}

/// Sealing (trailer, fdatasync) and installing (rename, dir sync) are
/// separate steps: a crash between them leaves the previous snapshot, a
/// crash after them the new one, whole.
#[test]
fn a_sealed_snapshot_is_current_after_a_crash_only_once_installed() {
    let options = StorageOptions::default();
    let meta = SnapshotMeta {
        index: LogIndex(10),
        term: Term(1),
        config: Configuration::with_voters([NodeId(1)]),
    };
    let data: Vec<u8> = (0..30_000u32).map(|i| (i % 239) as u8).collect();
    for install in [false, true] {
        let disk = FaultDisk::new(9);
        let dir = Path::new("/sealed");
        Storage::bootstrap(
            shared(&disk),
            dir,
            options.clone(),
            Configuration::with_voters([NodeId(1)]),
            Identity {
                cluster: 7,
                server: 1,
            },
        )
        .unwrap();
        let (mut storage, _, _) = Storage::open(shared(&disk), dir, options.clone()).unwrap();
        storage.append(&conformance::entries(1, 20, 1)).unwrap();
        storage.sync().unwrap();
        let mut writer = storage.begin_snapshot(meta.clone()).unwrap();
        writer.write(&data).unwrap();
        let sealed = writer.seal().unwrap();
        if install {
            assert_eq!(storage.install_sealed_snapshot(sealed).unwrap(), meta);
        } else {
            drop(sealed);
        }
        disk.crash();
        drop(storage);
        let (storage, state, report) = Storage::open(shared(&disk), dir, options.clone()).unwrap();
        if install {
            assert_eq!(state.snapshot, meta);
            assert_eq!(storage.snapshots().read_all().unwrap().unwrap(), data);
        } else {
            assert_eq!(state.snapshot.index, LogIndex(0));
            assert!(report.removed_temp_files.len() <= 1, "{report:?}");
        }
        assert_eq!(state.entries.last().map(|e| e.index), Some(LogIndex(20)));
    }
}

/// A snapshot taken locally and the same snapshot (index and term)
/// received from the leader can be written at once: each writer has its own
/// temp file, so neither truncates or renames the other's, and both install.
#[test]
fn two_writers_of_the_same_snapshot_do_not_share_a_file() {
    let options = StorageOptions::default();
    let meta = SnapshotMeta {
        index: LogIndex(10),
        term: Term(1),
        config: Configuration::with_voters([NodeId(1)]),
    };
    let data: Vec<u8> = (0..30_000u32).map(|i| (i % 241) as u8).collect();
    let disk = FaultDisk::new(10);
    let dir = Path::new("/twice");
    Storage::bootstrap(
        shared(&disk),
        dir,
        options.clone(),
        Configuration::with_voters([NodeId(1)]),
        Identity {
            cluster: 7,
            server: 1,
        },
    )
    .unwrap();
    let (mut storage, _, _) = Storage::open(shared(&disk), dir, options.clone()).unwrap();
    storage.append(&conformance::entries(1, 20, 1)).unwrap();
    storage.sync().unwrap();
    let mut local = storage.begin_snapshot(meta.clone()).unwrap();
    local.write(&data[..1000]).unwrap();
    let mut received = storage.begin_snapshot(meta.clone()).unwrap();
    received.write(&data).unwrap();
    assert_eq!(
        storage
            .install_sealed_snapshot(received.seal().unwrap())
            .unwrap(),
        meta
    );
    local.write(&data[1000..]).unwrap();
    assert_eq!(
        storage
            .install_sealed_snapshot(local.seal().unwrap())
            .unwrap(),
        meta
    );
    assert_eq!(storage.snapshots().read_all().unwrap().unwrap(), data);
    disk.crash();
    drop(storage);
    let (storage, state, report) = Storage::open(shared(&disk), dir, options).unwrap();
    assert_eq!(state.snapshot, meta);
    assert_eq!(storage.snapshots().read_all().unwrap().unwrap(), data);
    assert!(report.removed_temp_files.is_empty(), "{report:?}");
}

#[test]
fn snapshot_newer_than_log_resets_the_log_on_open() {
    let disk = FaultDisk::new(8);
    let dir = Path::new("/reset-on-open");
    let options = StorageOptions {
        log: conformance::small_segments(),
        snapshots_retained_old: 0,
    };
    Storage::bootstrap(
        shared(&disk),
        dir,
        options.clone(),
        Configuration::with_voters([NodeId(1)]),
        Identity {
            cluster: 7,
            server: 1,
        },
    )
    .unwrap();
    let (mut storage, _, _) = Storage::open(shared(&disk), dir, options.clone()).unwrap();
    storage.append(&conformance::entries(1, 40, 1)).unwrap();
    storage.sync().unwrap();
    // Install a snapshot from the leader far ahead, then crash before the
    // log is reset (simulated by writing the snapshot through the store).
    let (mut snapshots, _) = copycat_storage::SnapshotStore::open(
        shared(&disk),
        &dir.join("snapshots"),
        copycat_storage::Durability::Fsync,
        0,
    )
    .unwrap();
    let meta = SnapshotMeta {
        index: LogIndex(100),
        term: Term(4),
        config: Configuration::with_voters([NodeId(1)]),
    };
    let writer = snapshots.begin(meta.clone()).unwrap();
    snapshots.install(writer).unwrap();
    disk.crash();
    drop(storage);
    let (storage, state, report) = Storage::open(shared(&disk), dir, options).unwrap();
    assert_eq!(state.snapshot, meta);
    assert!(state.entries.is_empty());
    assert_eq!(report.log_reset_from, Some(LogIndex(40)));
    assert_eq!(storage.log().next_index(), LogIndex(101));
}

/// A [`FaultDisk`] on which one kind of sync does nothing: the meta save
/// run on it shows which of its syncs the durability depends on.
#[derive(Debug)]
struct SkipSync {
    disk: FaultDisk,
    skip_data: bool,
    skip_dir: bool,
}

impl Disk for SkipSync {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.disk.create_dir_all(dir)
    }
    fn create(&self, path: &Path) -> std::io::Result<()> {
        self.disk.create(path)
    }
    fn exists(&self, path: &Path) -> std::io::Result<bool> {
        self.disk.exists(path)
    }
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.disk.read_at(path, offset, buf)
    }
    fn write_at(&self, path: &Path, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.disk.write_at(path, offset, data)
    }
    fn set_len(&self, path: &Path, len: u64) -> std::io::Result<()> {
        self.disk.set_len(path, len)
    }
    fn file_len(&self, path: &Path) -> std::io::Result<u64> {
        self.disk.file_len(path)
    }
    fn sync_data(&self, path: &Path) -> std::io::Result<()> {
        if self.skip_data {
            return Ok(());
        }
        self.disk.sync_data(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        if self.skip_dir {
            return Ok(());
        }
        self.disk.sync_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.disk.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.disk.remove(path)
    }
    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.disk.list_dir(dir)
    }
}

fn meta(term: u64, vote: u64, voters: &[u64]) -> Meta {
    Meta {
        identity: Identity {
            cluster: 7,
            server: vote,
        },
        hard_state: HardState {
            term: Term(term),
            vote: Some(NodeId(vote)),
        },
        config: Configuration::with_voters(voters.iter().copied().map(NodeId)),
    }
}

fn reopen_meta(disk: Arc<dyn Disk>, dir: &Path) -> copycat_storage::Result<Meta> {
    MetaStore::open(disk, dir, Durability::Fsync).map(|(store, _)| store.get().clone())
}

// The meta save is: write meta.tmp, fdatasync it, rename it over meta, sync
// the directory. Once `save` returns, a power loss must not lose the value.
#[test]
fn a_saved_meta_survives_a_crash_right_after_the_save() {
    for torn in [false, true] {
        let disk = FaultDisk::new(11);
        let dir = Path::new("/node");
        let (mut store, _) = MetaStore::open(shared(&disk), dir, Durability::Fsync).unwrap();
        store.save(meta(1, 1, &[1, 2, 3])).unwrap();
        disk.crash();
        assert_eq!(
            reopen_meta(shared(&disk), dir).unwrap(),
            meta(1, 1, &[1, 2, 3])
        );
        // A second save replaces the first, also across a crash.
        let (mut store, _) = MetaStore::open(shared(&disk), dir, Durability::Fsync).unwrap();
        store.save(meta(2, 3, &[1, 2, 3, 4])).unwrap();
        if torn {
            disk.crash_torn();
        } else {
            disk.crash();
        }
        assert_eq!(
            reopen_meta(shared(&disk), dir).unwrap(),
            meta(2, 3, &[1, 2, 3, 4])
        );
        assert!(!disk.exists(&dir.join("meta.tmp")).unwrap());
    }
}

// Each sync of the save is needed: without the directory sync the rename is
// lost and the old value comes back; without the data sync the renamed file
// is empty after the crash (a clear error, not a wrong value).
#[test]
fn the_meta_save_needs_both_its_data_sync_and_its_directory_sync() {
    let dir = Path::new("/node");
    let old = meta(1, 1, &[1, 2, 3]);
    let new = meta(2, 2, &[1, 2, 3]);

    let disk = FaultDisk::new(12);
    MetaStore::open(shared(&disk), dir, Durability::Fsync)
        .unwrap()
        .0
        .save(old.clone())
        .unwrap();
    let no_dir_sync: Arc<dyn Disk> = Arc::new(SkipSync {
        disk: disk.clone(),
        skip_data: false,
        skip_dir: true,
    });
    let (mut store, _) = MetaStore::open(no_dir_sync, dir, Durability::Fsync).unwrap();
    store.save(new.clone()).unwrap();
    assert_eq!(
        reopen_meta(shared(&disk), dir).unwrap(),
        new,
        "visible before the crash"
    );
    disk.crash();
    assert_eq!(
        reopen_meta(shared(&disk), dir).unwrap(),
        old,
        "the rename was lost"
    );

    let disk = FaultDisk::new(13);
    MetaStore::open(shared(&disk), dir, Durability::Fsync)
        .unwrap()
        .0
        .save(old)
        .unwrap();
    let no_data_sync: Arc<dyn Disk> = Arc::new(SkipSync {
        disk: disk.clone(),
        skip_data: true,
        skip_dir: false,
    });
    let (mut store, _) = MetaStore::open(no_data_sync, dir, Durability::Fsync).unwrap();
    store.save(new).unwrap();
    disk.crash();
    assert!(matches!(
        reopen_meta(shared(&disk), dir),
        Err(StorageError::TruncatedHeader { found: 0, .. })
    ));
}
