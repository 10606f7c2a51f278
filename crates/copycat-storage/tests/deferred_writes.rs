//! A log that defers its writes ([`LogStore::defer_writes`]): appends,
//! rolls and sync markers wait in a queue for the next sync job to run them,
//! reads are answered from memory meanwhile, and the files go through the
//! same states as when the log writes in place, so a crash at any point
//! recovers exactly as it would there. A full disk met by a queued write is
//! handled like one met in place: back to the durable state, and on.

use std::path::Path;
use std::sync::Arc;

use copycat_raft::LogIndex;
use copycat_storage::{conformance, Disk, FaultDisk, LogStore, StorageError, SEGMENT_HEADER_BYTES};

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

/// Appends `first..=last` in batches, each synced by a job run elsewhere
/// (and the marker it leaves written by a job of its own on odd batches),
/// until the disk refuses; returns the last acknowledged index and whether
/// the disk refused.
fn fill(log: &mut LogStore, first: u64, last: u64, batch: u64) -> (LogIndex, bool) {
    let mut acknowledged = log.durable_index();
    let mut next = first;
    while next <= last {
        let end = (next + batch - 1).min(last);
        let mut result = log
            .append(&conformance::entries(next, end, 1))
            .and_then(|()| sync_elsewhere(log));
        if result.is_ok() && end % 2 == 1 {
            if let Some(job) = log.begin_writes() {
                result = log.finish_sync(job.run());
            }
        }
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

/// For every capacity from "no room" to "room for a few segments": a
/// queued write that meets the full disk fails the job that runs it, the log
/// goes back to what was acknowledged (not poisoned), reopens to exactly
/// that, and once space returns takes the rest, which survives a power loss.
/// A queued marker that never ran leaves no hole for recovery to stop at.
#[test]
fn a_full_disk_met_by_a_queued_write_rolls_back_and_resumes() {
    let mut refusals = 0;
    for room in (0..1_600).step_by(19) {
        let disk = FaultDisk::new(room);
        let dir = Path::new("/full");
        let mut log = open(&disk, dir);
        let (acknowledged, refused) = fill(&mut log, 1, 10, 3);
        assert!(!refused && acknowledged == LogIndex(10));
        disk.set_capacity(Some(disk.used_bytes() + room));

        let (acknowledged, refused) = fill(&mut log, 11, 80, 4);
        assert!(refused, "room {room}: 70 entries do not fit");
        refusals += 1;
        assert_eq!(log.durable_index(), acknowledged, "room {room}");
        assert_eq!(log.last_index(), acknowledged, "room {room}");
        log.invariants();
        assert_eq!(all(&log), conformance::entries(1, acknowledged.get(), 1));
        // Still full, still refused, still not poisoned.
        let again = log
            .append(&conformance::entries(
                acknowledged.get() + 1,
                acknowledged.get() + 30,
                1,
            ))
            .and_then(|()| sync_elsewhere(&mut log));
        assert!(
            matches!(again, Err(StorageError::DiskFull { .. })),
            "room {room}: {again:?}"
        );
        assert_eq!(log.last_index(), acknowledged);

        // Space returns: the rest goes in (after the roll-back point), and
        // all of it survives a power loss.
        disk.set_capacity(None);
        let (done, refused) = fill(&mut log, acknowledged.get() + 1, 80, 4);
        assert!(!refused);
        assert_eq!(done, LogIndex(80));
        disk.crash();
        drop(log);
        let log = open(&disk, dir);
        assert_eq!(all(&log), conformance::entries(1, 80, 1), "room {room}");
    }
    assert!(refusals > 50);
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
