//! Damaged and foreign files: each is a typed error or a reported
//! truncation of an unsynced tail, never a panic or a huge allocation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use copycat_raft::{Configuration, NodeId};
use copycat_storage::{
    conformance, Disk, Durability, LogStore, MemDisk, MetaStore, SnapshotStore, Storage,
    StorageError, StorageOptions, SEGMENT_HEADER_BYTES,
};

fn disk() -> Arc<dyn Disk> {
    Arc::new(MemDisk::new())
}

fn open_log(
    disk: &Arc<dyn Disk>,
    dir: &Path,
) -> copycat_storage::Result<(LogStore, copycat_storage::LogRecovery)> {
    LogStore::open(Arc::clone(disk), dir, conformance::small_segments())
}

/// A log of 100 entries over several segments; returns the segment paths.
fn write_log(disk: &Arc<dyn Disk>, dir: &Path) -> Vec<PathBuf> {
    let (mut log, _) = open_log(disk, dir).unwrap();
    log.append(&conformance::entries(1, 100, 1)).unwrap();
    log.sync().unwrap();
    disk.list_dir(dir)
        .unwrap()
        .into_iter()
        .map(|name| dir.join(name))
        .collect()
}

fn write_file(disk: &Arc<dyn Disk>, path: &Path, bytes: &[u8]) {
    disk.create(path).unwrap();
    disk.write_at(path, 0, bytes).unwrap();
}

#[test]
fn garbage_file_in_log_directory() {
    let disk = disk();
    let dir = Path::new("/log");
    write_log(&disk, dir);
    write_file(&disk, &dir.join("notes.txt"), b"hello");
    let error = open_log(&disk, dir).unwrap_err();
    assert!(matches!(&error, StorageError::UnexpectedFile { path } if path.ends_with("notes.txt")));
    assert!(error.to_string().contains("/log/notes.txt"));
}

#[test]
fn garbage_file_named_like_a_segment() {
    let disk = disk();
    let dir = Path::new("/log");
    let segments = write_log(&disk, dir);
    // Garbage in place of a sealed segment.
    write_file(&disk, &segments[0], &[0xAB; 4096]);
    let error = open_log(&disk, dir).unwrap_err();
    assert!(matches!(error, StorageError::BadMagic { .. }), "{error}");
}

#[test]
fn truncated_header_of_sealed_segment_is_an_error() {
    let disk = disk();
    let dir = Path::new("/log");
    let segments = write_log(&disk, dir);
    disk.set_len(&segments[1], 10).unwrap();
    let error = open_log(&disk, dir).unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::TruncatedHeader {
                found: 10,
                needed: 32,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn truncated_header_of_last_segment_is_a_reported_torn_creation() {
    let disk = disk();
    let dir = Path::new("/log");
    let segments = write_log(&disk, dir);
    let last = segments.last().unwrap();
    disk.set_len(last, 7).unwrap();
    let (log, recovery) = open_log(&disk, dir).unwrap();
    assert_eq!(recovery.discarded.len(), 1);
    assert_eq!(&recovery.discarded[0].path, last);
    assert!(recovery.discarded[0].reason.contains("torn segment header"));
    // The entries of the lost segment are gone; the rest is intact.
    let all = log
        .entries(log.first_index(), log.next_index(), None)
        .unwrap();
    assert_eq!(all, conformance::entries(1, log.last_index().get(), 1));
}

#[test]
fn wrong_version_in_segment_header() {
    let disk = disk();
    let dir = Path::new("/log");
    let segments = write_log(&disk, dir);
    disk.write_at(&segments[0], 8, &99u32.to_le_bytes())
        .unwrap();
    let error = open_log(&disk, dir).unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::UnsupportedVersion {
                found: 99,
                supported: 1,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("unsupported format version 99"));
}

#[test]
fn header_first_index_must_match_file_name() {
    let disk = disk();
    let dir = Path::new("/log");
    let segments = write_log(&disk, dir);
    let renamed = dir.join(format!("{:020}.log", 0));
    disk.rename(&segments[0], &renamed).unwrap();
    let error = open_log(&disk, dir).unwrap_err();
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
}

#[test]
fn missing_middle_segment_is_a_gap() {
    let disk = disk();
    let dir = Path::new("/log");
    let segments = write_log(&disk, dir);
    disk.remove(&segments[1]).unwrap();
    let error = open_log(&disk, dir).unwrap_err();
    assert!(matches!(error, StorageError::SegmentGap { .. }), "{error}");
}

#[test]
fn huge_length_field() {
    let disk = disk();
    let dir = Path::new("/log");
    let segments = write_log(&disk, dir);
    // In the last segment: a torn tail, truncated and reported, with no
    // attempt to allocate 4 GiB.
    let last = segments.last().unwrap();
    let len = disk.file_len(last).unwrap();
    let mut record = u32::MAX.to_le_bytes().to_vec();
    record.extend_from_slice(&[0u8; 4]);
    disk.write_at(last, len, &record).unwrap();
    let (log, recovery) = open_log(&disk, dir).unwrap();
    assert_eq!(log.last_index().get(), 100);
    assert_eq!(recovery.discarded.len(), 1);
    assert!(
        recovery.discarded[0].reason.contains("exceeds the maximum"),
        "{recovery:?}"
    );
    assert_eq!(recovery.discarded[0].offset, len);
    drop(log);
    // In a sealed segment: fatal.
    disk.write_at(&segments[0], SEGMENT_HEADER_BYTES, &u32::MAX.to_le_bytes())
        .unwrap();
    let error = open_log(&disk, dir).unwrap_err();
    assert!(
        matches!(&error, StorageError::Corrupt { offset, reason, .. } if *offset == SEGMENT_HEADER_BYTES && reason.contains("exceeds the maximum")),
        "{error}"
    );
}

#[test]
fn length_past_end_of_sealed_segment() {
    let disk = disk();
    let dir = Path::new("/log");
    let segments = write_log(&disk, dir);
    // Within the record size maximum but beyond the file.
    disk.write_at(&segments[0], SEGMENT_HEADER_BYTES, &4000u32.to_le_bytes())
        .unwrap();
    let error = open_log(&disk, dir).unwrap_err();
    assert!(
        error.to_string().contains("past the end of the file"),
        "{error}"
    );
}

#[test]
fn meta_damage() {
    let disk = disk();
    let dir = Path::new("/meta");
    let (mut meta, _) = MetaStore::open(Arc::clone(&disk), dir, Durability::Fsync).unwrap();
    meta.save_config(Configuration::with_voters([NodeId(1)]))
        .unwrap();
    let path = dir.join("meta");
    let good = {
        let len = disk.file_len(&path).unwrap() as usize;
        let mut bytes = vec![0u8; len];
        disk.read_exact_at(&path, 0, &mut bytes).unwrap();
        bytes
    };
    let reopen = || MetaStore::open(Arc::clone(&disk), dir, Durability::Fsync).map(|_| ());

    write_file(&disk, &path, &good[..10]);
    assert!(matches!(
        reopen(),
        Err(StorageError::TruncatedHeader { .. })
    ));

    let mut bytes = good.clone();
    let other = copycat_storage::META_VERSION + 1;
    bytes[8..12].copy_from_slice(&other.to_le_bytes());
    write_file(&disk, &path, &bytes);
    assert!(matches!(
        reopen(),
        Err(StorageError::UnsupportedVersion { found, .. }) if found == other
    ));

    let mut bytes = good.clone();
    bytes[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    write_file(&disk, &path, &bytes);
    assert!(matches!(reopen(), Err(StorageError::Corrupt { .. })));

    let mut bytes = good.clone();
    let last = bytes.len() - 5;
    bytes[last] ^= 1;
    write_file(&disk, &path, &bytes);
    let error = reopen().unwrap_err();
    assert!(error.to_string().contains("checksum"), "{error}");

    write_file(&disk, &path, b"definitely not a meta file");
    assert!(matches!(reopen(), Err(StorageError::BadMagic { .. })));

    write_file(&disk, &path, &good);
    reopen().unwrap();
}

#[test]
fn snapshot_damage() {
    let disk = disk();
    let dir = Path::new("/snapshots");
    let reopen = || SnapshotStore::open(Arc::clone(&disk), dir, Durability::Fsync, 0).map(|_| ());
    let path = {
        let (mut store, _) =
            SnapshotStore::open(Arc::clone(&disk), dir, Durability::Fsync, 0).unwrap();
        let mut writer = store.begin(Default::default()).unwrap();
        writer.write(&[5u8; 3000]).unwrap();
        store.install(writer).unwrap();
        dir.join(disk.list_dir(dir).unwrap().pop().unwrap())
    };
    let len = disk.file_len(&path).unwrap() as usize;
    let mut good = vec![0u8; len];
    disk.read_exact_at(&path, 0, &mut good).unwrap();

    let mut bytes = good.clone();
    bytes[1000] ^= 0x10;
    write_file(&disk, &path, &bytes);
    let error = reopen().unwrap_err();
    assert!(
        error.to_string().contains("data checksum mismatch"),
        "{error}"
    );

    write_file(&disk, &path, &good[..len - 3]);
    assert!(matches!(reopen(), Err(StorageError::Corrupt { .. })));

    let mut bytes = good.clone();
    bytes[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    write_file(&disk, &path, &bytes);
    assert!(matches!(reopen(), Err(StorageError::Corrupt { .. })));

    let mut bytes = good.clone();
    bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
    write_file(&disk, &path, &bytes);
    assert!(matches!(
        reopen(),
        Err(StorageError::UnsupportedVersion { found: 7, .. })
    ));

    write_file(&disk, &path, &good[..5]);
    assert!(matches!(
        reopen(),
        Err(StorageError::TruncatedHeader { .. })
    ));

    write_file(&disk, &path, &good);
    write_file(&disk, &dir.join("junk"), b"?");
    assert!(matches!(reopen(), Err(StorageError::UnexpectedFile { .. })));
}

#[test]
fn invalid_options_are_rejected() {
    let mut options = StorageOptions::default();
    options.log.segment_size_max_bytes = 10;
    let error = Storage::open(disk(), Path::new("/x"), options).unwrap_err();
    assert!(matches!(error, StorageError::InvalidOptions(_)));
}

#[test]
fn snapshot_missing_while_log_starts_late_is_inconsistent() {
    let disk = disk();
    let dir = Path::new("/data");
    let (mut log, _) = open_log(&disk, &dir.join("log")).unwrap();
    log.reset(copycat_raft::LogIndex(50)).unwrap();
    drop(log);
    let error = Storage::open(disk, dir, StorageOptions::default()).unwrap_err();
    assert!(
        matches!(error, StorageError::Inconsistent { .. }),
        "{error}"
    );
}
