//! Fuzzing recovery: segment files, the meta file and snapshot files with
//! bytes flipped, inserted, deleted, overwritten by a length or cut off,
//! or replaced by random bytes. Opening must return a typed error or
//! recover; never panic. What recovers must be true: a log recovers a
//! prefix of the entries written (damage is never turned into different
//! entries), a meta file or a snapshot recovers exactly what was saved.
//!
//! Everything runs on `MemDisk`, so the file takes a few seconds under
//! `cargo test`; `PROPTEST_CASES=100000 cargo test -p copycat-storage
//! --test fuzz_storage` runs longer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use copycat_raft::{Configuration, HardState, LogIndex, NodeId, SnapshotMeta, Term};
use copycat_storage::{
    conformance, Disk, Durability, Identity, LogStore, MemDisk, Meta, MetaStore, SnapshotStore,
    Storage, StorageOptions,
};
use proptest::prelude::*;

fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    /// Overwrite four bytes with a little-endian `u32` (a length field).
    Length(usize, u32),
    /// Replace everything with these bytes.
    Garbage(Vec<u8>),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), 1..=u8::MAX).prop_map(|(at, bits)| Edit::Flip(at, bits)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Insert(at, byte)),
        2 => any::<usize>().prop_map(Edit::Delete),
        2 => any::<usize>().prop_map(Edit::Truncate),
        2 => (
            any::<usize>(),
            prop_oneof![Just(u32::MAX), Just(0x8000_0008), any::<u32>(), 0u32..5000]
        )
            .prop_map(|(at, len)| Edit::Length(at, len)),
        1 => proptest::collection::vec(any::<u8>(), 0..600).prop_map(Edit::Garbage),
    ]
}

fn mutate(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len();
        match edit {
            Edit::Flip(at, bits) if len > 0 => bytes[at % len] ^= bits,
            Edit::Insert(at, byte) => bytes.insert(at % (len + 1), *byte),
            Edit::Delete(at) if len > 0 => {
                bytes.remove(at % len);
            }
            Edit::Truncate(at) => bytes.truncate(at % (len + 1)),
            Edit::Length(at, value) if len >= 4 => {
                let at = at % (len - 3);
                bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
            Edit::Garbage(garbage) => bytes = garbage.clone(),
            _ => {}
        }
    }
    bytes
}

fn read(disk: &Arc<dyn Disk>, path: &Path) -> Vec<u8> {
    let len = disk.file_len(path).unwrap() as usize;
    let mut bytes = vec![0; len];
    disk.read_exact_at(path, 0, &mut bytes).unwrap();
    bytes
}

fn replace(disk: &Arc<dyn Disk>, path: &Path, bytes: &[u8]) {
    disk.create(path).unwrap();
    disk.set_len(path, 0).unwrap();
    disk.write_at(path, 0, bytes).unwrap();
}

const ENTRIES: u64 = 40;

/// A log of `ENTRIES` entries over several small segments.
fn written_log() -> (Arc<dyn Disk>, Vec<PathBuf>) {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
    let dir = Path::new("/log");
    let (mut log, _) =
        LogStore::open(Arc::clone(&disk), dir, conformance::small_segments()).unwrap();
    log.append(&conformance::entries(1, ENTRIES, 1)).unwrap();
    log.sync().unwrap();
    drop(log);
    let mut names = disk.list_dir(dir).unwrap();
    names.sort();
    (disk, names.into_iter().map(|name| dir.join(name)).collect())
}

/// A meta file, a snapshot and a log, as a server leaves them.
fn written_storage() -> (Arc<dyn Disk>, Vec<PathBuf>) {
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
    let dir = Path::new("/data");
    let options = StorageOptions {
        log: conformance::small_segments(),
        ..StorageOptions::default()
    };
    let config = Configuration::with_voters([NodeId(1), NodeId(2)]);
    Storage::bootstrap(
        Arc::clone(&disk),
        dir,
        options.clone(),
        config.clone(),
        Identity {
            cluster: 9,
            server: 1,
        },
    )
    .unwrap();
    let (mut storage, _, _) = Storage::open(Arc::clone(&disk), dir, options).unwrap();
    storage.append(&conformance::entries(1, 30, 1)).unwrap();
    storage.sync().unwrap();
    storage
        .save_hard_state(HardState {
            term: Term(1),
            vote: Some(NodeId(2)),
        })
        .unwrap();
    let mut writer = storage
        .begin_snapshot(SnapshotMeta {
            index: LogIndex(20),
            term: Term(1),
            config,
        })
        .unwrap();
    writer.write(b"the state machine image").unwrap();
    storage.install_snapshot(writer).unwrap();
    drop(storage);
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for name in disk.list_dir(&d).unwrap() {
            let path = d.join(name);
            if disk.list_dir(&path).is_ok() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    (disk, files)
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn damaged_segments_are_an_error_or_a_prefix(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec(edit(), 1..4),
    ) {
        let (disk, segments) = written_log();
        let path = which.get(&segments);
        replace(&disk, path, &mutate(read(&disk, path), &edits));
        match LogStore::open(Arc::clone(&disk), Path::new("/log"), conformance::small_segments()) {
            Err(error) => prop_assert!(!error.to_string().is_empty()),
            Ok((log, _)) => {
                log.invariants();
                let last = log.last_index();
                prop_assert!(last.0 <= ENTRIES);
                if !log.is_empty() {
                    let entries = log.entries(log.first_index(), last.next(), None).unwrap();
                    let expected = conformance::entries(log.first_index().0, last.0, 1);
                    prop_assert_eq!(entries, expected);
                }
            }
        }
    }

    #[test]
    fn garbage_segment_files_are_an_error_or_recovered(
        name in 1u64..60,
        garbage in proptest::collection::vec(any::<u8>(), 0..400),
        alone in any::<bool>(),
    ) {
        // A file named like a segment, holding garbage, alone or after a
        // real log.
        let (disk, segments) = if alone {
            (Arc::new(MemDisk::new()) as Arc<dyn Disk>, Vec::new())
        } else {
            written_log()
        };
        prop_assume!(alone || !segments.is_empty());
        disk.create_dir_all(Path::new("/log")).unwrap();
        let path = Path::new("/log").join(format!("{name:020}.log"));
        replace(&disk, &path, &garbage);
        if let Ok((log, _)) = LogStore::open(Arc::clone(&disk), Path::new("/log"), conformance::small_segments()) {
            log.invariants();
        }
    }

    #[test]
    fn damaged_meta_is_an_error_or_what_was_saved(
        edits in proptest::collection::vec(edit(), 1..4),
    ) {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let dir = Path::new("/meta");
        let saved = Meta {
            identity: Identity { cluster: 9, server: 3 },
            hard_state: HardState { term: Term(7), vote: Some(NodeId(3)) },
            config: Configuration::with_voters([NodeId(1), NodeId(3)]),
        };
        let (mut meta, _) = MetaStore::open(Arc::clone(&disk), dir, Durability::Fsync).unwrap();
        meta.save(saved.clone()).unwrap();
        let path = dir.join("meta");
        replace(&disk, &path, &mutate(read(&disk, &path), &edits));
        if let Ok((meta, _)) = MetaStore::open(Arc::clone(&disk), dir, Durability::Fsync) {
            prop_assert_eq!(meta.get(), &saved);
        }
    }

    #[test]
    fn damaged_snapshots_are_an_error_or_what_was_written(
        edits in proptest::collection::vec(edit(), 1..4),
        data in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let disk: Arc<dyn Disk> = Arc::new(MemDisk::new());
        let dir = Path::new("/snapshots");
        let (store, _) = SnapshotStore::open(Arc::clone(&disk), dir, Durability::Fsync, 0).unwrap();
        let meta = SnapshotMeta {
            index: LogIndex(9),
            term: Term(2),
            config: Configuration::with_voters([NodeId(1)]),
        };
        let mut writer = store.begin(meta.clone()).unwrap();
        writer.write(&data).unwrap();
        let mut store = store;
        store.install(writer).unwrap();
        drop(store);
        let path = dir.join(disk.list_dir(dir).unwrap().pop().unwrap());
        replace(&disk, &path, &mutate(read(&disk, &path), &edits));
        if let Ok((store, _)) = SnapshotStore::open(Arc::clone(&disk), dir, Durability::Fsync, 0) {
            prop_assert_eq!(store.latest(), Some(&meta));
            prop_assert_eq!(store.read_all().unwrap(), Some(data));
        }
    }

    #[test]
    fn damaged_data_directories_open_or_fail_cleanly(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec(edit(), 1..4),
    ) {
        let (disk, files) = written_storage();
        let path = which.get(&files);
        replace(&disk, path, &mutate(read(&disk, path), &edits));
        let options = StorageOptions {
            log: conformance::small_segments(),
            ..StorageOptions::default()
        };
        if let Ok((storage, state, _)) = Storage::open(Arc::clone(&disk), Path::new("/data"), options) {
            storage.invariants();
            prop_assert!(state.snapshot.index.0 <= 30);
            prop_assert!(state.entries.iter().all(|e| e.index.0 <= 30));
        }
    }
}
