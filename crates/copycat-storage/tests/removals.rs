//! Removals left for another thread (`Storage::defer_removals`): purged log
//! segments and old snapshots stay on the disk until their [`Removals`]
//! run, and a crash at any point leaves a directory that opens: a log that
//! starts earlier, older snapshots that the next install removes.

use std::path::Path;
use std::sync::Arc;

use copycat_raft::{Configuration, LogIndex, NodeId, SnapshotMeta, Term};
use copycat_storage::{conformance, Disk, FaultDisk, Identity, Storage, StorageOptions};

fn options() -> StorageOptions {
    StorageOptions {
        log: conformance::small_segments(),
        snapshots_retained_old: 0,
    }
}

fn open(disk: &FaultDisk, dir: &Path) -> Storage {
    let shared: Arc<dyn Disk> = Arc::new(disk.clone());
    if !disk.exists(&dir.join("log")).unwrap() {
        let config = Configuration::with_voters([NodeId(1)]);
        let identity = Identity {
            cluster: 7,
            server: 1,
        };
        Storage::bootstrap(Arc::clone(&shared), dir, options(), config, identity).unwrap();
    }
    let (mut storage, _, _) = Storage::open(shared, dir, options()).unwrap();
    storage.defer_removals(true);
    storage
}

fn files(disk: &FaultDisk, dir: &Path) -> Vec<String> {
    let mut names = disk.list_dir(dir).unwrap();
    names.sort();
    names
}

fn snapshot(storage: &mut Storage, index: u64) {
    let meta = SnapshotMeta {
        index: LogIndex(index),
        term: Term(1),
        config: Configuration::with_voters([NodeId(1)]),
    };
    let mut writer = storage.begin_snapshot(meta).unwrap();
    writer.write(&[7u8; 100]).unwrap();
    storage.install_snapshot(writer).unwrap();
}

/// A log of 100 entries over many small segments, and a snapshot at 60.
fn purged(disk: &FaultDisk, dir: &Path) -> (Storage, Vec<String>) {
    let mut storage = open(disk, dir);
    storage.append(&conformance::entries(1, 100, 1)).unwrap();
    storage.sync().unwrap();
    let before = files(disk, &dir.join("log"));
    snapshot(&mut storage, 60);
    (storage, before)
}

#[test]
fn purged_segments_stay_until_their_removals_run() {
    let disk = FaultDisk::new(1);
    let dir = Path::new("/deferred");
    let (mut storage, before) = purged(&disk, dir);
    let first = storage.log().first_index();
    assert!(
        first > LogIndex(1) && first <= LogIndex(61),
        "purged to {first:?}"
    );
    assert_eq!(
        files(&disk, &dir.join("log")),
        before,
        "nothing removed yet"
    );
    let removals = storage.take_removals().expect("segments to remove");
    assert!(!removals.is_empty());
    removals.run().unwrap();
    let after = files(&disk, &dir.join("log"));
    assert!(after.len() < before.len(), "{after:?}");
    assert!(storage.take_removals().is_none(), "taken once");
    disk.crash();
    drop(storage);
    let storage = open(&disk, dir);
    assert_eq!(storage.log().first_index(), first);
    assert_eq!(storage.log().last_index(), LogIndex(100));
}

#[test]
fn a_crash_before_the_removals_run_leaves_a_log_that_starts_earlier() {
    let disk = FaultDisk::new(2);
    let dir = Path::new("/crashed");
    let (storage, _) = purged(&disk, dir);
    let purged_to = storage.log().first_index();
    disk.crash();
    drop(storage);
    let storage = open(&disk, dir);
    assert_eq!(
        storage.log().first_index(),
        LogIndex(1),
        "nothing was removed"
    );
    assert!(purged_to > LogIndex(1));
    let all = storage
        .log()
        .entries(LogIndex(1), LogIndex(101), None)
        .unwrap();
    assert_eq!(all, conformance::entries(1, 100, 1));
}

/// A reset (a snapshot that does not continue the log) while purged
/// segments wait for their removal removes them first: left behind, they
/// would sit before a gap and the log would not open.
#[test]
fn a_reset_removes_purged_segments_still_waiting_first() {
    let disk = FaultDisk::new(3);
    let dir = Path::new("/reset");
    let (mut storage, _) = purged(&disk, dir);
    // Handed out but not run, then a snapshot far past the log.
    let stale = storage.take_removals().expect("segments to remove");
    snapshot(&mut storage, 500);
    assert_eq!(storage.log().first_index(), LogIndex(501));
    disk.crash();
    drop(storage);
    let storage = open(&disk, dir);
    assert_eq!(storage.log().first_index(), LogIndex(501));
    assert_eq!(
        files(&disk, &dir.join("log")).len(),
        1,
        "only the new segment"
    );
    // The removals handed out before run late: nothing left to remove.
    stale.run().unwrap();
    drop(storage);
    open(&disk, dir);
}

#[test]
fn old_snapshots_stay_until_their_removals_run_and_a_crash_keeps_them_harmless() {
    let disk = FaultDisk::new(4);
    let dir = Path::new("/snapshots");
    let mut storage = open(&disk, dir);
    storage.append(&conformance::entries(1, 30, 1)).unwrap();
    storage.sync().unwrap();
    let before = files(&disk, &dir.join("snapshots")).len();
    snapshot(&mut storage, 10);
    snapshot(&mut storage, 20);
    assert_eq!(storage.snapshots().all().len(), 1, "one retained");
    assert_eq!(
        files(&disk, &dir.join("snapshots")).len(),
        before + 2,
        "the old files stay"
    );
    disk.crash();
    drop(storage);
    // Back after a crash, the old file is an older snapshot again; the next
    // install (retaining none) leaves it for removal too.
    let mut storage = open(&disk, dir);
    assert_eq!(storage.snapshots().latest().unwrap().index, LogIndex(20));
    snapshot(&mut storage, 25);
    storage
        .take_removals()
        .expect("old snapshots")
        .run()
        .unwrap();
    assert_eq!(files(&disk, &dir.join("snapshots")).len(), 1);
    assert_eq!(storage.snapshots().latest().unwrap().index, LogIndex(25));
}
