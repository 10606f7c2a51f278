//! A log sync run away from the store ([`LogStore::begin_sync`], run on
//! another thread, [`LogStore::finish_sync`]) while the store takes more
//! appends and truncations: it makes durable exactly what the log held when
//! it began, the sync marker written after it names where that ends, and
//! recovery tells damage before that end (corruption) from damage after it
//! (a torn write).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use copycat_raft::LogIndex;
use copycat_storage::{
    conformance, Disk, FaultDisk, LogOptions, LogStore, StorageError, RECORD_HEADER_BYTES,
    SEGMENT_HEADER_BYTES,
};

fn open(disk: &FaultDisk, dir: &Path) -> copycat_storage::Result<LogStore> {
    let disk: Arc<dyn Disk> = Arc::new(disk.clone());
    let options = LogOptions {
        segment_size_max_bytes: 1 << 20,
        ..conformance::small_segments()
    };
    LogStore::open(disk, dir, options).map(|(log, _)| log)
}

/// The offsets of the entry records in a segment file, in order (sync
/// markers skipped), read from the file as the storage format describes.
fn record_offsets(disk: &FaultDisk, path: &Path) -> Vec<u64> {
    let mut bytes = vec![0u8; disk.file_len(path).unwrap() as usize];
    disk.read_exact_at(path, 0, &mut bytes).unwrap();
    let mut offsets = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES as usize;
    while offset + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap());
        if len & 0x8000_0000 == 0 {
            offsets.push(offset as u64);
        }
        offset += 8 + (len & 0x7fff_ffff) as usize;
    }
    offsets
}

/// Flip a bit in the payload of entry `index`'s record.
fn damage_entry(disk: &FaultDisk, dir: &Path, index: usize) {
    let last = last_segment(disk, dir);
    let offset = record_offsets(disk, &last)[index - 1] + RECORD_HEADER_BYTES + 1;
    disk.flip_bit(&last, Some(offset * 8)).unwrap();
}

fn last_segment(disk: &FaultDisk, dir: &Path) -> PathBuf {
    let mut names = disk.list_dir(dir).unwrap();
    names.sort();
    dir.join(names.pop().unwrap())
}

/// Entries 1..=10 synced elsewhere while 11..=20 are appended and written:
/// 10 is durable, 20 is not claimed.
fn sync_beside_appends(disk: &FaultDisk, dir: &Path) -> LogStore {
    let mut log = open(disk, dir).unwrap();
    log.append(&conformance::entries(1, 10, 1)).unwrap();
    let job = log.begin_sync().unwrap();
    assert_eq!(job.through(), LogIndex(10));
    assert!(!job.is_empty(), "the segment has writes to sync");
    log.append(&conformance::entries(11, 20, 1)).unwrap();
    log.flush().unwrap();
    assert_eq!(
        log.durable_index(),
        LogIndex::ZERO,
        "nothing before it ends"
    );
    let synced = std::thread::spawn(move || job.run()).join().unwrap();
    assert_eq!(log.finish_sync(synced).unwrap(), LogIndex(10));
    assert_eq!(log.durable_index(), LogIndex(10));
    assert_eq!(log.last_index(), LogIndex(20));
    log
}

#[test]
fn a_sync_run_elsewhere_makes_durable_only_what_it_began_with() {
    let disk = FaultDisk::new(1);
    let dir = Path::new("/elsewhere");
    let mut log = sync_beside_appends(&disk, dir);
    // The next sync covers the rest.
    let job = log.begin_sync().unwrap();
    assert_eq!(log.finish_sync(job.run()).unwrap(), LogIndex(20));
    disk.crash();
    drop(log);
    let log = open(&disk, dir).unwrap();
    assert_eq!(log.last_index(), LogIndex(20));
    let all = log.entries(LogIndex(1), LogIndex(21), None).unwrap();
    assert_eq!(all, conformance::entries(1, 20, 1));
}

#[test]
fn a_truncation_while_a_sync_runs_lowers_what_it_makes_durable() {
    let disk = FaultDisk::new(2);
    let dir = Path::new("/truncated");
    let mut log = open(&disk, dir).unwrap();
    log.append(&conformance::entries(1, 10, 1)).unwrap();
    let job = log.begin_sync().unwrap();
    // A new leader's entries replace 6..=10 before the disk answers.
    log.truncate_from(LogIndex(6)).unwrap();
    log.append(&conformance::entries(6, 8, 2)).unwrap();
    assert_eq!(log.finish_sync(job.run()).unwrap(), LogIndex(5));
    assert_eq!(log.sync().unwrap(), LogIndex(8));
    disk.crash();
    drop(log);
    let log = open(&disk, dir).unwrap();
    let mut expected = conformance::entries(1, 5, 1);
    expected.extend(conformance::entries(6, 8, 2));
    assert_eq!(
        log.entries(LogIndex(1), LogIndex(9), None).unwrap(),
        expected
    );
}

#[test]
fn a_superseded_sync_changes_nothing_and_an_inline_sync_covers_it() {
    let disk = FaultDisk::new(3);
    let dir = Path::new("/superseded");
    let mut log = open(&disk, dir).unwrap();
    log.append(&conformance::entries(1, 10, 1)).unwrap();
    let first = log.begin_sync().unwrap();
    log.append(&conformance::entries(11, 12, 1)).unwrap();
    // An inline sync while one is in flight syncs everything itself.
    assert_eq!(log.sync().unwrap(), LogIndex(12));
    assert_eq!(log.finish_sync(first.run()).unwrap(), LogIndex(12));
    // A second sync begun supersedes the first; the first's end is ignored.
    log.append(&conformance::entries(13, 14, 1)).unwrap();
    let older = log.begin_sync().unwrap();
    log.append(&conformance::entries(15, 16, 1)).unwrap();
    let newer = log.begin_sync().unwrap();
    assert_eq!(log.finish_sync(older.run()).unwrap(), LogIndex(12));
    assert_eq!(log.finish_sync(newer.run()).unwrap(), LogIndex(16));
}

#[test]
fn a_failed_sync_elsewhere_poisons_the_store() {
    let disk = FaultDisk::new(4);
    let dir = Path::new("/failed");
    let mut log = open(&disk, dir).unwrap();
    log.append(&conformance::entries(1, 10, 1)).unwrap();
    let job = log.begin_sync().unwrap();
    // The disk fails the sync on the other thread.
    disk.fail_next_sync();
    let error = log.finish_sync(job.run()).unwrap_err();
    assert!(!error.is_disk_full(), "{error}");
    assert_eq!(log.durable_index(), LogIndex::ZERO);
    assert!(matches!(log.sync(), Err(StorageError::Poisoned { .. })));
}

/// Damage after the durable end a later marker names is a torn write: the
/// marker says only that the bytes before that end were synced.
#[test]
fn damage_after_the_durable_end_a_marker_names_is_a_torn_write() {
    let disk = FaultDisk::new(5);
    let dir = Path::new("/after-end");
    let log = sync_beside_appends(&disk, dir);
    drop(log);
    damage_entry(&disk, dir, 15);
    let log = open(&disk, dir).unwrap();
    assert_eq!(log.last_index(), LogIndex(14), "cut at the damaged record");
}

/// Damage before the durable end that marker names is corruption: fatal.
#[test]
fn damage_before_the_durable_end_a_marker_names_is_fatal() {
    let disk = FaultDisk::new(6);
    let dir = Path::new("/before-end");
    let log = sync_beside_appends(&disk, dir);
    drop(log);
    damage_entry(&disk, dir, 5);
    let error = open(&disk, dir).unwrap_err();
    assert!(
        matches!(&error, StorageError::Corrupt { reason, .. } if reason.contains("before a sync marker")),
        "{error}"
    );
}
