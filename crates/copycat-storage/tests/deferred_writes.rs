//! A log that defers its writes ([`LogStore::defer_writes`]): appends,
//! rolls and sync markers wait in a queue for the next sync job to run them,
//! reads are answered from memory meanwhile, and the files go through the
//! same states as when the log writes in place, so a crash at any point
//! recovers exactly as it would there. (A full disk met by a queued write:
//! `tests/disk_full.rs`.)

use std::path::Path;
use std::sync::Arc;

use copycat_raft::LogIndex;
use copycat_storage::{conformance, Disk, FaultDisk, LogStore, SEGMENT_HEADER_BYTES};

fn open(disk: &FaultDisk, dir: &Path) -> LogStore {
    let (mut log, _) = LogStore::open(
        Arc::new(disk.clone()) as Arc<dyn Disk>,
        dir,
        conformance::small_segments(),
    )
    .expect("open");
    log.defer_writes(true).expect("defer");
    log
}

fn all(log: &LogStore) -> Vec<copycat_raft::Entry> {
    log.entries(log.first_index(), log.next_index(), None)
        .expect("read")
}

fn segments(disk: &FaultDisk, dir: &Path) -> Vec<String> {
    let mut names = disk.list_dir(dir).expect("list");
    names.sort();
    names
}

/// One sync as the server runs it: begun here, run (on another thread),
/// finished here. Returns what the log then holds durable.
fn sync_elsewhere(log: &mut LogStore) -> copycat_storage::Result<LogIndex> {
    let job = log.begin_sync()?;
    let synced = std::thread::spawn(move || job.run()).join().expect("run");
    log.finish_sync(synced)
}

#[test]
fn appends_wait_for_the_next_sync_and_read_back_from_memory() {
    let disk = FaultDisk::new(1);
    let dir = Path::new("/deferred");
    let mut log = open(&disk, dir);
    let first = dir.join(&segments(&disk, dir)[0]);
    let opened = disk.file_len(&first).unwrap();
    assert!(opened >= SEGMENT_HEADER_BYTES);
    // More than the write buffer holds: flushed, but only to the queue.
    log.append(&conformance::entries(1, 12, 1)).unwrap();
    assert_eq!(disk.file_len(&first).unwrap(), opened);
    assert_eq!(segments(&disk, dir).len(), 1, "no roll has run");
    assert!(log.last_index() == LogIndex(12));
    assert_eq!(all(&log), conformance::entries(1, 12, 1));
    // Rolls are queued too: the later segments do not exist yet.
    log.append(&conformance::entries(13, 120, 1)).unwrap();
    assert_eq!(segments(&disk, dir).len(), 1, "no roll has run");
    assert_eq!(all(&log), conformance::entries(1, 120, 1));
    // A power loss now loses them all, and recovery is clean.
    disk.crash();
    drop(log);
    let mut log = open(&disk, dir);
    assert_eq!(log.last_index(), LogIndex::ZERO);

    log.append(&conformance::entries(1, 120, 1)).unwrap();
    assert_eq!(sync_elsewhere(&mut log).unwrap(), LogIndex(120));
    assert!(segments(&disk, dir).len() > 3, "the rolls ran");
    disk.crash();
    drop(log);
    let log = open(&disk, dir);
    assert_eq!(all(&log), conformance::entries(1, 120, 1));
}

#[test]
fn a_job_that_only_writes_runs_the_marker_a_sync_left_queued() {
    let disk = FaultDisk::new(2);
    let dir = Path::new("/marker");
    let mut log = open(&disk, dir);
    assert!(log.begin_writes().is_none(), "nothing queued");
    log.append(&conformance::entries(1, 3, 1)).unwrap();
    assert_eq!(sync_elsewhere(&mut log).unwrap(), LogIndex(3));
    let path = dir.join(segments(&disk, dir).pop().unwrap());
    let synced_len = disk.file_len(&path).unwrap();
    // The sync's marker is queued, not written.
    let job = log.begin_writes().expect("the marker is queued");
    assert!(!job.is_empty());
    let synced = job.run();
    assert!(synced.is_writes_only());
    assert!(disk.file_len(&path).unwrap() > synced_len, "marker written");
    assert_eq!(log.finish_sync(synced).unwrap(), LogIndex(3));
    assert!(log.begin_writes().is_none(), "nothing left queued");
    assert_eq!(log.durable_index(), LogIndex(3));
}

#[test]
fn a_truncation_runs_what_is_queued_first() {
    let disk = FaultDisk::new(3);
    let dir = Path::new("/truncate");
    let mut log = open(&disk, dir);
    log.append(&conformance::entries(1, 30, 1)).unwrap();
    let job = log.begin_sync().unwrap();
    // A new leader replaces 12..=30 before the sync runs.
    log.truncate_from(LogIndex(12)).unwrap();
    log.append(&conformance::entries(12, 20, 2)).unwrap();
    let mut expected = conformance::entries(1, 11, 1);
    expected.extend(conformance::entries(12, 20, 2));
    assert_eq!(all(&log), expected);
    assert_eq!(log.finish_sync(job.run()).unwrap(), LogIndex(11));
    assert_eq!(sync_elsewhere(&mut log).unwrap(), LogIndex(20));
    disk.crash();
    drop(log);
    let log = open(&disk, dir);
    assert_eq!(all(&log), expected);
}

/// Writing in place again runs what is queued first.
#[test]
fn ending_deferral_writes_the_queue() {
    let disk = FaultDisk::new(4);
    let dir = Path::new("/undefer");
    let mut log = open(&disk, dir);
    log.append(&conformance::entries(1, 120, 1)).unwrap();
    assert_eq!(segments(&disk, dir).len(), 1);
    log.defer_writes(false).unwrap();
    assert!(segments(&disk, dir).len() > 3, "the queued rolls ran");
    assert!(log.begin_writes().is_none());
    assert_eq!(log.sync().unwrap(), LogIndex(120));
    disk.crash();
    drop(log);
    let log = open(&disk, dir);
    assert_eq!(all(&log), conformance::entries(1, 120, 1));
}
