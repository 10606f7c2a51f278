//! A full disk (`ENOSPC`) on a [`FaultDisk`] with a capacity: the stores
//! report [`StorageError::DiskFull`], are not poisoned, never report
//! unsynced data durable, and carry on once space returns.

use std::path::Path;
use std::sync::Arc;

use copycat_raft::{Configuration, HardState, LogIndex, NodeId, SnapshotMeta, Term};
use copycat_storage::{
    conformance, Disk, Durability, FaultDisk, Identity, LogStore, Meta, MetaStore, SnapshotStore,
    StorageError,
};

fn shared(disk: &FaultDisk) -> Arc<dyn Disk> {
    Arc::new(disk.clone())
}

fn open(disk: &FaultDisk, dir: &Path) -> LogStore {
    LogStore::open(shared(disk), dir, conformance::small_segments())
        .expect("open")
        .0
}

fn all(log: &LogStore) -> Vec<copycat_raft::Entry> {
    log.entries(log.first_index(), log.next_index(), None)
        .expect("read")
}

/// How the log is synced: in place, or (with its writes deferred) by a
/// job run on another thread, as the server does it, the marker it leaves
/// written by a job of its own on odd batches.
#[derive(Clone, Copy, PartialEq)]
enum Syncing {
    InPlace,
    Elsewhere,
}

fn sync(log: &mut LogStore, syncing: Syncing, end: u64) -> copycat_storage::Result<LogIndex> {
    if syncing == Syncing::InPlace {
        return log.sync();
    }
    let job = log.begin_sync()?;
    let synced = std::thread::spawn(move || job.run()).join().expect("run");
    let durable = log.finish_sync(synced)?;
    match log.begin_writes().filter(|_| end % 2 == 1) {
        Some(job) => log.finish_sync(job.run()),
        None => Ok(durable),
    }
}

/// Appends `first..=last` in batches of `batch`, syncing after each, until
/// the disk refuses; returns the index acknowledged (returned by a sync)
/// last, and whether the disk refused.
fn fill(log: &mut LogStore, first: u64, last: u64, batch: u64) -> (LogIndex, bool) {
    fill_syncing(log, first, last, batch, Syncing::InPlace)
}

fn fill_syncing(
    log: &mut LogStore,
    first: u64,
    last: u64,
    batch: u64,
    syncing: Syncing,
) -> (LogIndex, bool) {
    let mut acknowledged = log.durable_index();
    let mut next = first;
    while next <= last {
        let end = (next + batch - 1).min(last);
        let result = log
            .append(&conformance::entries(next, end, 1))
            .and_then(|()| sync(log, syncing, end));
        match result {
            Ok(durable) => {
                assert_eq!(durable, LogIndex(end));
                acknowledged = durable;
                next = end + 1;
            }
            Err(error) => {
                assert!(error.is_disk_full(), "unexpected error: {error}");
                return (acknowledged, true);
            }
        }
    }
    (acknowledged, false)
}

/// For every capacity from "no room at all" to "room for a few segments",
/// the log fills up, refuses with `DiskFull` (not poisoned), is back at what
/// was acknowledged, accepts the rest once space returns, and a reopen
/// shows exactly what was acknowledged.
#[test]
fn a_full_log_is_not_poisoned_and_resumes_when_space_returns() {
    fills_refuses_and_resumes(Syncing::InPlace, 23, 4);
}

/// The same with the log's writes deferred: a queued write that meets the
/// full disk fails the job that runs it, and the log goes back to what was
/// acknowledged. A queued marker that never ran leaves no hole for recovery
/// to stop at.
#[test]
fn a_full_disk_met_by_a_queued_write_rolls_back_and_resumes() {
    fills_refuses_and_resumes(Syncing::Elsewhere, 19, 30);
}

/// `step`: between the capacities tried; `again`: entries appended once
/// more while still full.
fn fills_refuses_and_resumes(syncing: Syncing, step: usize, again: u64) {
    let open = |disk: &FaultDisk, dir: &Path| {
        let mut log = open(disk, dir);
        log.defer_writes(syncing == Syncing::Elsewhere)
            .expect("defer");
        log
    };
    let mut refusals = 0;
    for room in (0..1_600).step_by(step) {
        let disk = FaultDisk::new(room as u64);
        let dir = Path::new("/full");
        let mut log = open(&disk, dir);
        let (acknowledged, refused) = fill_syncing(&mut log, 1, 10, 3, syncing);
        assert!(!refused && acknowledged == LogIndex(10));
        disk.set_capacity(Some(disk.used_bytes() + room as u64));

        let (acknowledged, refused) = fill_syncing(&mut log, 11, 80, 4, syncing);
        assert!(refused, "room {room}: 70 entries do not fit");
        refusals += 1;
        // Back at the acknowledged state: nothing unsynced counts as durable.
        assert_eq!(log.durable_index(), acknowledged, "room {room}");
        assert_eq!(log.last_index(), acknowledged, "room {room}");
        log.invariants();
        assert_eq!(all(&log), conformance::entries(1, acknowledged.get(), 1));
        // Still full: refused again, still not poisoned.
        let again = log
            .append(&conformance::entries(
                acknowledged.get() + 1,
                acknowledged.get() + again,
                1,
            ))
            .and_then(|()| sync(&mut log, syncing, 0));
        assert!(
            matches!(again, Err(StorageError::DiskFull { .. })),
            "room {room}: {again:?}"
        );
        assert_eq!(log.last_index(), acknowledged);

        // A reopen while full shows exactly the acknowledged entries (no
        // partial record was left at the tail).
        drop(log);
        let mut log = open(&disk, dir);
        assert_eq!(all(&log), conformance::entries(1, acknowledged.get(), 1));

        // Space returns: the rest goes in, and survives a power loss.
        disk.set_capacity(None);
        let (done, refused) = fill_syncing(&mut log, acknowledged.get() + 1, 80, 4, syncing);
        assert!(!refused);
        assert_eq!(done, LogIndex(80));
        disk.crash();
        drop(log);
        let log = open(&disk, dir);
        assert_eq!(all(&log), conformance::entries(1, 80, 1), "room {room}");
    }
    assert!(refusals > 50);
}

/// A power loss right after the refusal loses nothing acknowledged, and
/// brings back only entries that were appended (a prefix of them).
#[test]
fn a_crash_while_full_keeps_what_was_acknowledged() {
    for room in (0..1_200).step_by(37) {
        let disk = FaultDisk::new(room);
        let dir = Path::new("/full-crash");
        let mut log = open(&disk, dir);
        fill(&mut log, 1, 10, 5);
        disk.set_capacity(Some(disk.used_bytes() + room));
        let (acknowledged, refused) = fill(&mut log, 11, 80, 3);
        assert!(refused);
        disk.crash_torn();
        drop(log);
        disk.set_capacity(None);
        let log = open(&disk, dir);
        let entries = all(&log);
        assert!(
            log.last_index() >= acknowledged,
            "room {room}: lost acknowledged entries"
        );
        assert_eq!(entries, conformance::entries(1, log.last_index().get(), 1));
    }
}

/// A sync that fails with `ENOSPC` (a file system that allocates at
/// writeback) reports nothing durable; the entries can be appended again.
#[test]
fn a_sync_refused_for_space_reports_nothing_durable() {
    let disk = FaultDisk::new(7);
    let dir = Path::new("/sync-full");
    let mut log = open(&disk, dir);
    log.append(&conformance::entries(1, 10, 1)).unwrap();
    assert_eq!(log.sync().unwrap(), LogIndex(10));
    log.append(&conformance::entries(11, 15, 1)).unwrap();
    disk.fail_next_sync_disk_full();
    let error = log.sync().unwrap_err();
    assert!(error.is_disk_full(), "{error}");
    assert_eq!(log.durable_index(), LogIndex(10));
    assert_eq!(log.last_index(), LogIndex(10));
    // Not poisoned: the same entries go in again.
    log.append(&conformance::entries(11, 15, 1)).unwrap();
    assert_eq!(log.sync().unwrap(), LogIndex(15));
    disk.crash();
    drop(log);
    let log = open(&disk, dir);
    assert_eq!(all(&log), conformance::entries(1, 15, 1));
}

/// Any other write error still poisons the log (fail-stop).
#[test]
fn other_write_errors_still_poison() {
    let disk = FaultDisk::new(8);
    let dir = Path::new("/eio");
    let mut log = open(&disk, dir);
    log.append(&conformance::entries(1, 5, 1)).unwrap();
    disk.fail_next_sync();
    assert!(matches!(log.sync(), Err(StorageError::Io { .. })));
    assert!(matches!(
        log.append(&conformance::entries(6, 6, 1)),
        Err(StorageError::Poisoned { .. })
    ));
}

/// Saving the term and vote on a full disk fails without pretending: the
/// old meta stays (in memory and on disk), no temp file is left, and the
/// save succeeds once space returns.
#[test]
fn a_vote_is_never_saved_on_a_full_disk() {
    let disk = FaultDisk::new(9);
    let dir = Path::new("/meta");
    disk.create_dir_all(dir).unwrap();
    let (mut meta, _) = MetaStore::open(shared(&disk), dir, Durability::Fsync).unwrap();
    let config = Configuration::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
    let old = Meta {
        identity: Identity {
            cluster: 1,
            server: 1,
        },
        hard_state: HardState {
            term: Term(3),
            vote: None,
        },
        config,
    };
    meta.save(old.clone()).unwrap();
    disk.set_capacity(Some(disk.used_bytes()));
    let vote = HardState {
        term: Term(4),
        vote: Some(NodeId(2)),
    };
    let error = meta.save_hard_state(vote).unwrap_err();
    assert!(error.is_disk_full(), "{error}");
    assert_eq!(meta.get(), &old, "the vote is not recorded as saved");
    assert_eq!(disk.list_dir(dir).unwrap(), vec!["meta".to_string()]);
    let (reopened, _) = MetaStore::open(shared(&disk), dir, Durability::Fsync).unwrap();
    assert_eq!(reopened.get(), &old);

    disk.set_capacity(None);
    meta.save_hard_state(vote).unwrap();
    disk.crash();
    let (reopened, _) = MetaStore::open(shared(&disk), dir, Durability::Fsync).unwrap();
    assert_eq!(reopened.get().hard_state, vote);
}

/// A snapshot that does not fit fails with `DiskFull` and leaves no temp
/// file taking space; the previous snapshot stays the latest.
#[test]
fn a_snapshot_that_does_not_fit_leaves_nothing_behind() {
    let disk = FaultDisk::new(10);
    let dir = Path::new("/snapshots");
    let (mut store, _) = SnapshotStore::open(shared(&disk), dir, Durability::Fsync, 0).unwrap();
    let meta = |index: u64| SnapshotMeta {
        index: LogIndex(index),
        term: Term(1),
        config: Configuration::with_voters([NodeId(1)]),
    };
    let mut writer = store.begin(meta(5)).unwrap();
    writer.write(&[1u8; 100]).unwrap();
    store.install(writer).unwrap();
    let files = disk.list_dir(dir).unwrap();

    disk.set_capacity(Some(disk.used_bytes() + 150));
    let mut writer = store.begin(meta(9)).unwrap();
    let error = writer.write(&[2u8; 1_000]).unwrap_err();
    assert!(error.is_disk_full(), "{error}");
    writer.discard().unwrap();
    assert_eq!(disk.list_dir(dir).unwrap(), files, "no temp file left");

    // The trailer does not fit: sealing fails and removes the file.
    disk.set_capacity(Some(disk.used_bytes() + 150));
    let mut writer = store.begin(meta(9)).unwrap();
    writer.write(&[3u8; 100]).unwrap();
    disk.set_capacity(Some(disk.used_bytes()));
    let error = writer.seal().unwrap_err();
    assert!(error.is_disk_full(), "{error}");
    assert_eq!(disk.list_dir(dir).unwrap(), files, "no temp file left");
    assert_eq!(store.latest(), Some(&meta(5)));

    disk.set_capacity(None);
    let mut writer = store.begin(meta(9)).unwrap();
    writer.write(&[4u8; 1_000]).unwrap();
    store.install(writer).unwrap();
    assert_eq!(store.latest(), Some(&meta(9)));
}
