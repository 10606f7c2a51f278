//! The contract every [`Disk`] implementation must satisfy, and the log,
//! meta and snapshot behaviour built on it, as a suite of plain functions
//! that panic on failure.
//!
//! Run it against a new implementation with [`run_all`]:
//!
//! ```
//! use std::path::Path;
//! use std::sync::Arc;
//! use copycat_storage::{conformance, Disk, MemDisk};
//!
//! conformance::run_all(&|| Arc::new(MemDisk::new()) as Arc<dyn Disk>, Path::new("/conformance"));
//! ```
//!
//! Each test asks `make_disk` for a fresh disk and works in its own
//! subdirectory of `base_dir`, so a real file system can share one temp dir.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use copycat_raft::{
    Configuration, Entry, EntryPayload, HardState, LogIndex, NodeId, SnapshotMeta, Term,
};

use crate::{
    Disk, Durability, GroupCommit, Identity, LogOptions, LogStore, Meta, MetaStore, SealedSnapshot,
    SnapshotStore, Storage, StorageOptions,
};

/// One test of the suite: a fresh disk and the directory to work in.
pub type ConformanceTest = fn(Arc<dyn Disk>, &Path);

/// Every test of the suite, by name.
pub const TESTS: &[(&str, ConformanceTest)] = &[
    ("disk_contract", disk_contract),
    ("log_append_read_reopen", log_append_read_reopen),
    ("log_rolls_segments", log_rolls_segments),
    ("log_truncate_from", log_truncate_from),
    ("log_purge_to", log_purge_to),
    ("log_reset", log_reset),
    ("log_rejects_bad_appends", log_rejects_bad_appends),
    ("log_read_bytes_max", log_read_bytes_max),
    ("meta_roundtrip", meta_roundtrip),
    ("snapshot_roundtrip", snapshot_roundtrip),
    (
        "snapshot_sealed_on_another_thread",
        snapshot_sealed_on_another_thread,
    ),
    (
        "snapshot_published_on_another_thread",
        snapshot_published_on_another_thread,
    ),
    ("storage_bootstrap_and_open", storage_bootstrap_and_open),
    ("storage_install_snapshot", storage_install_snapshot),
    ("group_commit_threads", group_commit_threads),
];

/// Runs every test in [`TESTS`], each on a fresh disk from `make_disk` and in
/// `base_dir/<test name>`.
pub fn run_all(make_disk: &dyn Fn() -> Arc<dyn Disk>, base_dir: &Path) {
    for (name, test) in TESTS {
        test(make_disk(), &base_dir.join(name));
    }
}

/// A test entry whose payload size varies with the index.
pub fn entry(index: u64, term: u64) -> Entry {
    let payload = match index % 7 {
        0 => EntryPayload::Noop,
        1 => EntryPayload::Config(Configuration::with_voters([NodeId(1), NodeId(index)])),
        _ => EntryPayload::Command(Bytes::from(vec![
            (index % 251) as u8;
            (index % 97) as usize
        ])),
    };
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload,
    }
}

/// Entries `[first, last]` in `term`.
pub fn entries(first: u64, last: u64, term: u64) -> Vec<Entry> {
    (first..=last).map(|index| entry(index, term)).collect()
}

/// Log options with small segments, so tests cross segment boundaries.
pub fn small_segments() -> LogOptions {
    LogOptions {
        segment_size_max_bytes: 512,
        record_size_max_bytes: 4096,
        write_buffer_max_bytes: 256,
        durability: Durability::Fsync,
    }
}

fn open_log(disk: &Arc<dyn Disk>, dir: &Path) -> LogStore {
    let (log, recovery) =
        LogStore::open(Arc::clone(disk), dir, small_segments()).expect("open log");
    assert!(
        recovery.discarded.is_empty(),
        "clean reopen discarded {recovery:?}"
    );
    log.invariants();
    log
}

fn all(log: &LogStore) -> Vec<Entry> {
    log.entries(log.first_index(), log.next_index(), None)
        .expect("read log")
}

/// The raw file operations behave like a file system.
pub fn disk_contract(disk: Arc<dyn Disk>, dir: &Path) {
    disk.create_dir_all(dir).unwrap();
    assert_eq!(disk.list_dir(dir).unwrap(), Vec::<String>::new());
    let a = dir.join("a");
    let b = dir.join("b");
    assert!(!disk.exists(&a).unwrap());
    disk.create(&a).unwrap();
    assert!(disk.exists(&a).unwrap());
    assert_eq!(disk.file_len(&a).unwrap(), 0);
    disk.write_at(&a, 0, b"hello").unwrap();
    assert_eq!(disk.append(&a, b" world").unwrap(), 5);
    assert_eq!(disk.file_len(&a).unwrap(), 11);
    let mut buffer = [0u8; 32];
    assert_eq!(disk.read_at(&a, 0, &mut buffer).unwrap(), 11);
    assert_eq!(&buffer[..11], b"hello world");
    assert_eq!(disk.read_at(&a, 6, &mut buffer[..3]).unwrap(), 3);
    assert_eq!(&buffer[..3], b"wor");
    assert_eq!(disk.read_at(&a, 100, &mut buffer).unwrap(), 0);
    assert!(disk.read_exact_at(&a, 8, &mut buffer[..4]).is_err());
    // Writing past the end fills the gap with zeros.
    disk.write_at(&a, 13, b"!").unwrap();
    let mut all = [0u8; 14];
    disk.read_exact_at(&a, 0, &mut all).unwrap();
    assert_eq!(&all, b"hello world\0\0!");
    disk.set_len(&a, 5).unwrap();
    assert_eq!(disk.file_len(&a).unwrap(), 5);
    disk.set_len(&a, 7).unwrap();
    disk.read_exact_at(&a, 0, &mut all[..7]).unwrap();
    assert_eq!(&all[..7], b"hello\0\0");
    disk.sync_data(&a).unwrap();
    disk.sync_dir(dir).unwrap();
    // Rename replaces the target.
    disk.create(&b).unwrap();
    disk.write_at(&b, 0, b"old").unwrap();
    disk.rename(&a, &b).unwrap();
    assert!(!disk.exists(&a).unwrap());
    assert_eq!(disk.file_len(&b).unwrap(), 7);
    // Create truncates.
    disk.create(&b).unwrap();
    assert_eq!(disk.file_len(&b).unwrap(), 0);
    disk.create_dir_all(&dir.join("sub")).unwrap();
    assert_eq!(
        disk.list_dir(dir).unwrap(),
        vec!["b".to_string(), "sub".to_string()]
    );
    disk.remove(&b).unwrap();
    assert!(disk.remove(&b).is_err());
    assert!(disk.file_len(&b).is_err());
    assert_eq!(disk.list_dir(dir).unwrap(), vec!["sub".to_string()]);
    disk.sync_dir(dir).unwrap();
}

/// Appended and synced entries read back, before and after a reopen.
pub fn log_append_read_reopen(disk: Arc<dyn Disk>, dir: &Path) {
    let mut log = open_log(&disk, dir);
    assert!(log.is_empty());
    assert_eq!(log.first_index(), LogIndex(1));
    assert_eq!(log.last_index(), LogIndex(0));
    let written = entries(1, 20, 1);
    log.append(&written[..10]).unwrap();
    // Buffered entries are readable before the sync.
    assert_eq!(all(&log), written[..10]);
    log.append(&written[10..]).unwrap();
    assert_eq!(log.sync().unwrap(), LogIndex(20));
    assert_eq!(log.durable_index(), LogIndex(20));
    assert_eq!(log.entry(LogIndex(7)).unwrap(), written[6]);
    assert_eq!(log.term(LogIndex(20)), Some(Term(1)));
    assert_eq!(log.term(LogIndex(21)), None);
    assert_eq!(log.term(LogIndex(0)), None);
    drop(log);
    let log = open_log(&disk, dir);
    assert_eq!(all(&log), written);
    assert_eq!(log.durable_index(), LogIndex(20));
}

/// Small segments roll; reads span segments; reopen rebuilds the index.
pub fn log_rolls_segments(disk: Arc<dyn Disk>, dir: &Path) {
    let mut log = open_log(&disk, dir);
    let written = entries(1, 200, 3);
    for chunk in written.chunks(13) {
        log.append(chunk).unwrap();
    }
    log.sync().unwrap();
    let segments = disk.list_dir(dir).unwrap().len();
    assert!(segments > 5, "only {segments} segments");
    assert_eq!(all(&log), written);
    assert_eq!(
        log.entries(LogIndex(50), LogIndex(150), None).unwrap(),
        written[49..149]
    );
    drop(log);
    let log = open_log(&disk, dir);
    assert_eq!(all(&log), written);
    for index in 1..=200 {
        assert_eq!(log.term(LogIndex(index)), Some(Term(3)));
    }
}

/// Truncation removes a suffix, within and across segments, durably.
pub fn log_truncate_from(disk: Arc<dyn Disk>, dir: &Path) {
    let mut log = open_log(&disk, dir);
    log.append(&entries(1, 150, 1)).unwrap();
    log.sync().unwrap();
    // Within the last segment, then across several.
    log.truncate_from(LogIndex(148)).unwrap();
    assert_eq!(log.last_index(), LogIndex(147));
    log.truncate_from(LogIndex(40)).unwrap();
    assert_eq!(log.last_index(), LogIndex(39));
    assert_eq!(log.durable_index(), LogIndex(39));
    let mut expected = entries(1, 39, 1);
    expected.extend(entries(40, 60, 2));
    log.append(&expected[39..]).unwrap();
    log.sync().unwrap();
    assert_eq!(all(&log), expected);
    // Truncating at next_index is a no-op; beyond it or before the first is
    // an error.
    log.truncate_from(LogIndex(61)).unwrap();
    assert!(log.truncate_from(LogIndex(62)).is_err());
    assert!(log.truncate_from(LogIndex(0)).is_err());
    drop(log);
    let mut log = open_log(&disk, dir);
    assert_eq!(all(&log), expected);
    // Truncate everything.
    log.truncate_from(LogIndex(1)).unwrap();
    assert!(log.is_empty());
    log.append(&entries(1, 3, 5)).unwrap();
    log.sync().unwrap();
    drop(log);
    let log = open_log(&disk, dir);
    assert_eq!(all(&log), entries(1, 3, 5));
}

/// Purging removes whole segments at or below the index; the new first
/// index survives a reopen.
pub fn log_purge_to(disk: Arc<dyn Disk>, dir: &Path) {
    let mut log = open_log(&disk, dir);
    let written = entries(1, 200, 1);
    log.append(&written).unwrap();
    log.sync().unwrap();
    log.purge_to(LogIndex(100)).unwrap();
    let first = log.first_index();
    assert!(
        first > LogIndex(1) && first <= LogIndex(101),
        "first {first:?}"
    );
    assert_eq!(log.last_index(), LogIndex(200));
    assert_eq!(all(&log), written[(first.get() - 1) as usize..]);
    assert!(log.entry(LogIndex(1)).is_err());
    assert_eq!(log.term(LogIndex(1)), None);
    // Purging everything keeps the active segment.
    log.purge_to(LogIndex(500)).unwrap();
    assert_eq!(log.last_index(), LogIndex(200));
    let first = log.first_index();
    drop(log);
    let log = open_log(&disk, dir);
    assert_eq!(log.first_index(), first);
    assert_eq!(all(&log), written[(first.get() - 1) as usize..]);
}

/// Reset discards the log and moves the next index.
pub fn log_reset(disk: Arc<dyn Disk>, dir: &Path) {
    let mut log = open_log(&disk, dir);
    log.append(&entries(1, 100, 1)).unwrap();
    log.sync().unwrap();
    log.reset(LogIndex(500)).unwrap();
    assert!(log.is_empty());
    assert_eq!(log.next_index(), LogIndex(500));
    drop(log);
    let mut log = open_log(&disk, dir);
    assert!(log.is_empty());
    assert_eq!(log.first_index(), LogIndex(500));
    log.append(&entries(500, 510, 4)).unwrap();
    log.sync().unwrap();
    drop(log);
    let log = open_log(&disk, dir);
    assert_eq!(all(&log), entries(500, 510, 4));
}

/// Appends that do not continue the log, or are too large, are rejected.
pub fn log_rejects_bad_appends(disk: Arc<dyn Disk>, dir: &Path) {
    let mut log = open_log(&disk, dir);
    assert!(log.append(&[entry(2, 1)]).is_err());
    log.append(&entries(1, 5, 1)).unwrap();
    assert!(log.append(&[entry(5, 1)]).is_err());
    assert!(log.append(&[entry(7, 1)]).is_err());
    let huge = Entry {
        term: Term(1),
        index: LogIndex(6),
        payload: EntryPayload::Command(Bytes::from(vec![0u8; 10_000])),
    };
    assert!(matches!(
        log.append(&[huge]),
        Err(crate::StorageError::RecordTooLarge { .. })
    ));
    log.append(&entries(6, 8, 1)).unwrap();
    log.sync().unwrap();
    assert_eq!(all(&log), entries(1, 8, 1));
    assert!(log.entries(LogIndex(0), LogIndex(3), None).is_err());
    assert!(log.entries(LogIndex(5), LogIndex(10), None).is_err());
}

/// `bytes_max` limits a read but always returns at least one entry.
pub fn log_read_bytes_max(disk: Arc<dyn Disk>, dir: &Path) {
    let mut log = open_log(&disk, dir);
    log.append(&entries(1, 100, 1)).unwrap();
    log.sync().unwrap();
    let one = log.entries(LogIndex(10), LogIndex(100), Some(1)).unwrap();
    assert_eq!(one, vec![entry(10, 1)]);
    let some = log
        .entries(LogIndex(10), LogIndex(100), Some(1000))
        .unwrap();
    assert!(some.len() > 1 && some.len() < 90, "{}", some.len());
    assert_eq!(some, entries(10, 9 + some.len() as u64, 1));
}

/// Meta defaults when absent, and saves survive a reopen.
pub fn meta_roundtrip(disk: Arc<dyn Disk>, dir: &Path) {
    let (mut meta, removed) = MetaStore::open(Arc::clone(&disk), dir, Durability::Fsync).unwrap();
    assert!(removed.is_empty());
    assert!(!meta.exists());
    assert_eq!(meta.get(), &Meta::default());
    let hard_state = HardState {
        term: Term(7),
        vote: Some(NodeId(3)),
    };
    meta.save_hard_state(hard_state).unwrap();
    let config = Configuration::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
    meta.save_config(config.clone()).unwrap();
    drop(meta);
    let (meta, _) = MetaStore::open(Arc::clone(&disk), dir, Durability::Fsync).unwrap();
    assert!(meta.exists());
    assert_eq!(
        meta.get(),
        &Meta {
            identity: Identity::default(),
            hard_state,
            config
        }
    );
}

/// Snapshots stream in and out in chunks, install atomically, keep the
/// configured number of old ones, and survive a reopen; temp files of
/// unfinished snapshots are removed on open.
pub fn snapshot_roundtrip(disk: Arc<dyn Disk>, dir: &Path) {
    let (mut store, _) = SnapshotStore::open(Arc::clone(&disk), dir, Durability::Fsync, 1).unwrap();
    assert!(store.latest().is_none());
    assert!(store.read_chunk(0, 10).is_err());
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    for (round, index) in [10u64, 20, 30].into_iter().enumerate() {
        let meta = SnapshotMeta {
            index: LogIndex(index),
            term: Term(2),
            config: Configuration::with_voters([NodeId(1)]),
        };
        let mut writer = store.begin(meta.clone()).unwrap();
        for chunk in data[round..].chunks(999) {
            writer.write_at(writer.data_len(), chunk).unwrap();
        }
        assert!(writer.write_at(0, b"x").is_err());
        assert_eq!(store.install(writer).unwrap(), meta);
        assert_eq!(store.latest(), Some(&meta));
    }
    assert_eq!(store.all().len(), 2, "the latest and one old snapshot");
    // An unfinished snapshot leaves only a temp file.
    let mut unfinished = store
        .begin(SnapshotMeta {
            index: LogIndex(40),
            ..SnapshotMeta::default()
        })
        .unwrap();
    unfinished.write(b"partial").unwrap();
    drop(unfinished);
    drop(store);
    let (store, removed) =
        SnapshotStore::open(Arc::clone(&disk), dir, Durability::Fsync, 1).unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(store.latest().unwrap().index, LogIndex(30));
    let mut read = Vec::new();
    loop {
        let (chunk, done) = store.read_chunk(read.len() as u64, 1000).unwrap();
        read.extend_from_slice(&chunk);
        if done {
            break;
        }
    }
    assert_eq!(read, data[2..]);
    assert_eq!(store.read_all().unwrap().unwrap(), data[2..]);
    assert!(store.read_chunk(read.len() as u64 + 1, 10).is_err());
}

/// A snapshot at `index`, term 3, of a one-voter configuration.
fn one_voter_meta(index: u64) -> SnapshotMeta {
    SnapshotMeta {
        index: LogIndex(index),
        term: Term(3),
        config: Configuration::with_voters([NodeId(1)]),
    }
}

/// A store whose latest snapshot is at index 10, and the snapshot at index
/// 20 holding `data`, written and sealed (and published if `publish`) on
/// another thread.
fn sealed_elsewhere(
    disk: &Arc<dyn Disk>,
    dir: &Path,
    data: &[u8],
    publish: bool,
) -> (SnapshotStore, SealedSnapshot) {
    let (mut store, _) = SnapshotStore::open(Arc::clone(disk), dir, Durability::Fsync, 0).unwrap();
    let first = store.begin(one_voter_meta(10)).unwrap();
    store.install(first).unwrap();
    let mut writer = store.begin(one_voter_meta(20)).unwrap();
    let sealed = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                for chunk in data.chunks(7_000) {
                    writer.write(chunk).unwrap();
                }
                let mut sealed = writer.seal().unwrap();
                assert!(!sealed.is_published());
                if publish {
                    sealed.publish().unwrap();
                }
                sealed
            })
            .join()
            .unwrap()
    });
    (store, sealed)
}

/// A snapshot is filled and sealed on another thread than the store's, then
/// installed by the store; until then the previous snapshot stays current.
/// A sealed snapshot older than the latest is refused and removed, and an
/// abandoned one leaves no file.
pub fn snapshot_sealed_on_another_thread(disk: Arc<dyn Disk>, dir: &Path) {
    let meta = one_voter_meta;
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 241) as u8).collect();
    let (mut store, sealed) = sealed_elsewhere(&disk, dir, &data, false);
    assert_eq!(sealed.meta(), &meta(20));
    assert_eq!(sealed.data_len(), data.len() as u64);
    assert_eq!(store.latest(), Some(&meta(10)), "sealed is not installed");
    assert_eq!(store.install_sealed(sealed).unwrap(), meta(20));
    assert_eq!(store.latest(), Some(&meta(20)));
    assert_eq!(store.read_all().unwrap().unwrap(), data);

    let older = store.begin(meta(15)).unwrap().seal().unwrap();
    assert!(store.install_sealed(older).is_err());
    let abandoned = store.begin(meta(30)).unwrap().seal().unwrap();
    store.abort_sealed(abandoned).unwrap();
    let names = disk.list_dir(dir).unwrap();
    assert_eq!(
        names.len(),
        1,
        "only the latest snapshot is left: {names:?}"
    );
    drop(store);
    let (store, removed) = SnapshotStore::open(disk, dir, Durability::Fsync, 0).unwrap();
    assert!(removed.is_empty());
    assert_eq!(store.latest(), Some(&meta(20)));
    assert_eq!(store.read_all().unwrap().unwrap(), data);
}

/// A snapshot sealed and published (renamed into place, directory synced)
/// on another thread is the latest on disk at once, before the store
/// installs it: a store opened then finds it. Installing it renames
/// nothing more. A published snapshot older than the latest is refused and
/// removed; an abandoned one leaves no file, except when an installed
/// snapshot has its name (the same snapshot, installed meanwhile), which
/// stays.
pub fn snapshot_published_on_another_thread(disk: Arc<dyn Disk>, dir: &Path) {
    let meta = one_voter_meta;
    let data: Vec<u8> = (0..30_000u32).map(|i| (i % 239) as u8).collect();
    let (mut store, sealed) = sealed_elsewhere(&disk, dir, &data, true);
    assert!(sealed.is_published());
    assert_eq!(
        store.latest(),
        Some(&meta(10)),
        "published is not installed"
    );
    {
        // What a crash now would find.
        let (reopened, _) =
            SnapshotStore::open(Arc::clone(&disk), dir, Durability::Fsync, 1).unwrap();
        assert_eq!(reopened.latest(), Some(&meta(20)));
        assert_eq!(reopened.read_all().unwrap().unwrap(), data);
    }
    assert_eq!(store.install_sealed(sealed).unwrap(), meta(20));
    assert_eq!(store.latest(), Some(&meta(20)));
    assert_eq!(store.read_all().unwrap().unwrap(), data);

    let mut older = store.begin(meta(15)).unwrap().seal().unwrap();
    older.publish().unwrap();
    assert!(store.install_sealed(older).is_err());
    let mut abandoned = store.begin(meta(30)).unwrap().seal().unwrap();
    abandoned.publish().unwrap();
    store.abort_sealed(abandoned).unwrap();
    // The same snapshot as the installed one, published and abandoned.
    let mut same = store.begin(meta(20)).unwrap();
    same.write(&data).unwrap();
    let mut same = same.seal().unwrap();
    same.publish().unwrap();
    store.abort_sealed(same).unwrap();
    let names = disk.list_dir(dir).unwrap();
    assert_eq!(
        names.len(),
        1,
        "only the latest snapshot is left: {names:?}"
    );
    drop(store);
    let (store, _) = SnapshotStore::open(disk, dir, Durability::Fsync, 0).unwrap();
    assert_eq!(store.latest(), Some(&meta(20)));
    assert_eq!(store.read_all().unwrap().unwrap(), data);
}

/// Bootstrap writes the initial configuration; open returns it; a second
/// bootstrap is refused.
pub fn storage_bootstrap_and_open(disk: Arc<dyn Disk>, dir: &Path) {
    let options = StorageOptions {
        log: small_segments(),
        snapshots_retained_old: 0,
    };
    let config = Configuration::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
    let identity = Identity {
        cluster: 0xC1,
        server: 1,
    };
    Storage::bootstrap(
        Arc::clone(&disk),
        dir,
        options.clone(),
        config.clone(),
        identity,
    )
    .unwrap();
    assert!(matches!(
        Storage::bootstrap(
            Arc::clone(&disk),
            dir,
            options.clone(),
            config.clone(),
            identity
        ),
        Err(crate::StorageError::AlreadyBootstrapped { .. })
    ));
    let (mut storage, state, report) =
        Storage::open(Arc::clone(&disk), dir, options.clone()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(state.snapshot.index, LogIndex::ZERO);
    assert_eq!(state.snapshot.config, config);
    assert_eq!(state.hard_state, HardState::default());
    assert_eq!(storage.identity(), identity);
    assert!(storage.is_bootstrapped());
    assert!(state.entries.is_empty());
    let hard_state = HardState {
        term: Term(2),
        vote: Some(NodeId(2)),
    };
    storage.save_hard_state(hard_state).unwrap();
    storage.append(&entries(1, 30, 2)).unwrap();
    storage.sync().unwrap();
    drop(storage);
    let (_, state, report) = Storage::open(disk, dir, options).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(state.hard_state, hard_state);
    assert_eq!(state.entries, entries(1, 30, 2));
}

/// Installing a snapshot purges a matching log and resets a conflicting or
/// shorter one; open reconciles the same way.
pub fn storage_install_snapshot(disk: Arc<dyn Disk>, dir: &Path) {
    let options = StorageOptions {
        log: small_segments(),
        snapshots_retained_old: 0,
    };
    Storage::bootstrap(
        Arc::clone(&disk),
        dir,
        options.clone(),
        Configuration::with_voters([NodeId(1)]),
        Identity {
            cluster: 0xC1,
            server: 1,
        },
    )
    .unwrap();
    let (mut storage, _, _) = Storage::open(Arc::clone(&disk), dir, options.clone()).unwrap();
    storage.append(&entries(1, 200, 1)).unwrap();
    storage.sync().unwrap();
    // A matching snapshot: entries after it are kept.
    let meta = SnapshotMeta {
        index: LogIndex(150),
        term: Term(1),
        config: Configuration::with_voters([NodeId(1)]),
    };
    let writer = storage.begin_snapshot(meta.clone()).unwrap();
    storage.install_snapshot(writer).unwrap();
    assert!(storage.log().first_index() > LogIndex(1));
    assert!(storage.log().first_index() <= LogIndex(151));
    assert_eq!(storage.log().last_index(), LogIndex(200));
    drop(storage);
    let (mut storage, state, report) =
        Storage::open(Arc::clone(&disk), dir, options.clone()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(state.snapshot, meta);
    assert_eq!(state.entries.last().unwrap().index, LogIndex(200));
    assert!(state.entries[0].index <= LogIndex(151));
    // A snapshot from a newer term at an index the log holds with another
    // term: the log is discarded.
    let meta = SnapshotMeta {
        index: LogIndex(180),
        term: Term(2),
        config: Configuration::with_voters([NodeId(1)]),
    };
    let mut writer = storage.begin_snapshot(meta.clone()).unwrap();
    writer.write(b"state").unwrap();
    storage.install_snapshot(writer).unwrap();
    assert!(storage.log().is_empty());
    assert_eq!(storage.log().next_index(), LogIndex(181));
    drop(storage);
    let (_, state, _) = Storage::open(disk, dir, options).unwrap();
    assert_eq!(state.snapshot, meta);
    assert!(state.entries.is_empty());
}

/// Many threads append through [`GroupCommit`]; every acknowledged entry
/// is in the log, in index order, and fewer syncs than entries happen.
pub fn group_commit_threads(disk: Arc<dyn Disk>, dir: &Path) {
    let (log, _) = LogStore::open(Arc::clone(&disk), dir, LogOptions::default()).unwrap();
    let group = GroupCommit::spawn(log);
    let threads: Vec<_> = (0..8)
        .map(|thread| {
            let group = group.clone();
            std::thread::spawn(move || {
                let mut indexes = Vec::new();
                for i in 0..25u64 {
                    let payload = EntryPayload::Command(Bytes::from(format!("{thread}-{i}")));
                    let index = group.submit(Term(1), payload).unwrap();
                    assert!(group.durable_index() >= index);
                    indexes.push(index);
                }
                indexes
            })
        })
        .collect();
    let mut all_indexes: Vec<LogIndex> = threads
        .into_iter()
        .flat_map(|thread| thread.join().unwrap())
        .collect();
    all_indexes.sort();
    assert_eq!(all_indexes, (1..=200).map(LogIndex).collect::<Vec<_>>());
    assert!(group.syncs() <= 200);
    group.append(entries(201, 210, 1)).unwrap();
    assert!(group.append(entries(300, 301, 1)).is_err());
    let log = group.shutdown().unwrap();
    assert!(group.shutdown().is_err());
    assert_eq!(log.last_index(), LogIndex(210));
    drop(log);
    // Dropping every handle without a shutdown stops the writer too.
    let (log, _) = LogStore::open(Arc::clone(&disk), dir, LogOptions::default()).unwrap();
    let dropped = GroupCommit::spawn(log);
    let index = dropped.submit(Term(1), EntryPayload::Noop).unwrap();
    assert_eq!(index, LogIndex(211));
    drop(dropped);
    let (log, _) = LogStore::open(disk, dir, LogOptions::default()).unwrap();
    assert_eq!(log.last_index(), LogIndex(211));
    let read = log.entries(LogIndex(1), LogIndex(201), None).unwrap();
    assert!(read.iter().all(|entry| entry.term == Term(1)));
}
