//! The conformance suite against every `Disk` implementation.

use std::path::Path;
use std::sync::Arc;

use copycat_storage::{conformance, Disk, FaultDisk, FsDisk, MemDisk};

#[test]
fn fs_disk() {
    let temp = tempfile::tempdir().expect("temp dir");
    conformance::run_all(&|| Arc::new(FsDisk::new()) as Arc<dyn Disk>, temp.path());
}

#[test]
fn mem_disk() {
    conformance::run_all(
        &|| Arc::new(MemDisk::new()) as Arc<dyn Disk>,
        Path::new("/conformance"),
    );
}

#[test]
fn fault_disk_without_faults() {
    conformance::run_all(
        &|| Arc::new(FaultDisk::new(7)) as Arc<dyn Disk>,
        Path::new("/conformance"),
    );
}

/// After the suite, a crash of a fault disk loses nothing the suite synced:
/// rerunning a reopen-only check after a crash finds the same log.
#[test]
fn fault_disk_crash_after_sync_keeps_everything() {
    let disk = FaultDisk::new(11);
    let dir = Path::new("/crash-after-sync");
    let shared: Arc<dyn Disk> = Arc::new(disk.clone());
    conformance::log_rolls_segments(Arc::clone(&shared), dir);
    // Only the sync marker written after the last sync may be unsynced.
    disk.crash();
    let (log, recovery) =
        copycat_storage::LogStore::open(shared, dir, conformance::small_segments()).unwrap();
    assert!(recovery.discarded.is_empty());
    assert_eq!(log.last_index().get(), 200);
}
