//! Simulated power loss on the real file system: a `sync-tracking` build of
//! [`FsDisk`] records how far each file was synced, and
//! `power_loss::simulate` cuts and garbles what was not. What was synced
//! must come back, the storage must open, and nothing it was never told is
//! durable may be kept as durable.
#![cfg(feature = "sync-tracking")]

use std::path::Path;
use std::sync::Arc;

use copycat_raft::{Configuration, Entry, HardState, LogIndex, NodeId, Term};
use copycat_storage::power_loss::{self, JOURNAL_FILE};
use copycat_storage::{
    conformance, Disk, FsDisk, Identity, LogOptions, Storage, StorageOptions, RECORD_HEADER_BYTES,
};

/// The log writes a sync marker (a record header and an offset) right after
/// each sync; it becomes durable with the next one.
const SYNC_MARKER_BYTES: u64 = RECORD_HEADER_BYTES + 8;

fn options(log: LogOptions) -> StorageOptions {
    StorageOptions {
        log,
        ..StorageOptions::default()
    }
}

/// Segments of 64 KiB: unsynced tails span several pages.
fn big_segments() -> LogOptions {
    LogOptions {
        segment_size_max_bytes: 64 << 10,
        write_buffer_max_bytes: 4096,
        ..LogOptions::default()
    }
}

fn bootstrap(dir: &Path, options: &StorageOptions) -> Storage {
    let disk: Arc<dyn Disk> = Arc::new(FsDisk::new());
    let config = Configuration::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
    let identity = Identity {
        cluster: 7,
        server: 1,
    };
    Storage::bootstrap(disk.clone(), dir, options.clone(), config, identity).unwrap();
    let (storage, _, _) = Storage::open(disk, dir, options.clone()).unwrap();
    storage
}

fn reopen(dir: &Path, options: &StorageOptions) -> (Storage, copycat_raft::PersistentState) {
    let disk: Arc<dyn Disk> = Arc::new(FsDisk::new());
    let (storage, state, _) = Storage::open(disk, dir, options.clone())
        .unwrap_or_else(|error| panic!("storage does not open after the power loss: {error}"));
    (storage, state)
}

/// The log's segment files and their lengths.
fn segment_lengths(dir: &Path) -> Vec<(String, u64)> {
    let mut names: Vec<(String, u64)> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name() != JOURNAL_FILE)
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                entry.metadata().unwrap().len(),
            )
        })
        .collect();
    names.sort();
    names
}

/// Appends `entries[..synced]` and syncs, appends the rest without a sync
/// (rolls to new segments sync the full ones), stops, loses power, reopens.
/// With `one_segment`, nothing after `synced` was synced, and some seed
/// must lose all of it.
fn check_after_power_loss(
    entries: &[Entry],
    synced: usize,
    log: LogOptions,
    one_segment: bool,
    name: &str,
) {
    let options = options(log);
    let mut lost_all_unsynced = 0;
    let mut lost_some_unsynced = 0;
    let mut garbled = 0;
    for seed in 0..24 {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let mut storage = bootstrap(dir, &options);
        storage
            .save_hard_state(HardState {
                term: Term(1),
                vote: Some(NodeId(1)),
            })
            .unwrap();
        storage.append(&entries[..synced]).unwrap();
        assert_eq!(storage.sync().unwrap(), LogIndex(synced as u64));
        // Written to the files (past the write buffer), never synced.
        storage.append(&entries[synced..]).unwrap();
        storage.log_mut().flush().unwrap();
        if one_segment {
            assert_eq!(segment_lengths(dir).len(), 1, "{name}: the log rolled");
        }
        let recorded = power_loss::synced_lengths(&dir.join("log")).unwrap();
        let written: u64 = segment_lengths(dir).iter().map(|(_, len)| len).sum();
        let recorded_total: u64 = recorded.values().sum();
        assert!(
            recorded_total < written,
            "{name}: the unsynced tail counts as synced: {recorded:?}"
        );
        // The process stops (no sync, no clean shutdown), then power fails.
        drop(storage);
        let report = power_loss::simulate(dir, seed).unwrap();
        assert!(!report.is_clean(), "{name}: seed {seed}: {report:?}");
        assert!(report.bytes_dropped + report.bytes_garbled > 0);
        assert!(report.untracked.is_empty(), "{report:?}");
        garbled += u64::from(report.bytes_garbled > 0);

        let (storage, state) = reopen(dir, &options);
        assert_eq!(state.hard_state.term, Term(1), "{name}: seed {seed}");
        assert_eq!(state.hard_state.vote, Some(NodeId(1)));
        assert!(
            state.entries.len() >= synced,
            "{name}: seed {seed}: synced entries lost: {} of {synced} left; {report:?}",
            state.entries.len()
        );
        assert_eq!(
            state.entries[..],
            entries[..state.entries.len()],
            "{name}: seed {seed}: entries changed"
        );
        if state.entries.len() == synced {
            lost_all_unsynced += 1;
        }
        if state.entries.len() < entries.len() {
            lost_some_unsynced += 1;
        }
        // What the reopened storage reports durable is on disk for good: a
        // second power loss takes none of it (only the sync marker written
        // after its last sync, which is never acknowledged, may go).
        let durable = storage.log().durable_index();
        assert_eq!(durable, LogIndex(state.entries.len() as u64));
        drop(storage);
        let again = power_loss::simulate(dir, seed + 1000).unwrap();
        assert!(
            again.files_removed.is_empty(),
            "{name}: seed {seed}: {again:?}"
        );
        for cut in &again.files_cut {
            assert!(
                cut.len_before - cut.synced_len <= SYNC_MARKER_BYTES,
                "{again:?}"
            );
        }
        let (_, state_again) = reopen(dir, &options);
        assert_eq!(
            state_again.entries, state.entries,
            "{name}: seed {seed}: entries reported durable were lost"
        );
    }
    // Kept unsynced entries are allowed (a disk may write them before the
    // power goes), only never garbage.
    assert!(
        lost_some_unsynced > 0,
        "{name}: no seed lost unsynced entries"
    );
    // With many segments, every one but the newest was synced when the
    // log rolled past it, and the newest was created after the last
    // directory sync: there is no tail to garble, only files to remove.
    if one_segment {
        assert!(
            lost_all_unsynced > 0,
            "{name}: no seed lost the whole unsynced tail"
        );
        assert!(garbled > 0, "{name}: no seed garbled a tail");
    }
}

#[test]
fn synced_entries_survive_and_unsynced_tails_are_cut_or_garbled() {
    let entries = conformance::entries(1, 1000, 1);
    check_after_power_loss(&entries, 300, big_segments(), true, "64 KiB segments");
}

#[test]
fn segments_created_after_the_last_directory_sync_are_removed() {
    let entries = conformance::entries(1, 120, 1);
    let options = options(conformance::small_segments());
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mut storage = bootstrap(dir, &options);
    storage.append(&entries[..40]).unwrap();
    storage.sync().unwrap();
    let synced_segments = segment_lengths(dir).len();
    // Rolls create new segments; the directory is synced only by a sync.
    storage.append(&entries[40..]).unwrap();
    storage.log_mut().flush().unwrap();
    assert!(segment_lengths(dir).len() > synced_segments + 1);
    drop(storage);
    let report = power_loss::simulate(dir, 3).unwrap();
    assert!(
        !report.files_removed.is_empty(),
        "unsynced segment creations survived: {report:?}"
    );
    let (_, state) = reopen(dir, &options);
    assert!(state.entries.len() >= 40);
    assert_eq!(state.entries[..], entries[..state.entries.len()]);

    check_after_power_loss(
        &entries,
        40,
        conformance::small_segments(),
        false,
        "small segments",
    );
}

#[test]
fn the_journal_is_invisible_to_the_stores_and_tracks_meta_saves() {
    let options = options(big_segments());
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mut storage = bootstrap(dir, &options);
    for term in 1..=5 {
        storage
            .save_hard_state(HardState {
                term: Term(term),
                vote: None,
            })
            .unwrap();
    }
    drop(storage);
    assert!(dir.join(JOURNAL_FILE).is_file());
    assert!(dir.join("log").join(JOURNAL_FILE).is_file());
    // Every save renamed its temp file into place and synced the directory:
    // nothing to lose but the log's last sync marker.
    let report = power_loss::simulate(dir, 1).unwrap();
    assert!(report.files_removed.is_empty(), "{report:?}");
    assert!(report.renames_undone.is_empty(), "{report:?}");
    for cut in &report.files_cut {
        assert!(cut.path.starts_with(dir.join("log")), "{report:?}");
        assert!(
            cut.len_before - cut.synced_len <= SYNC_MARKER_BYTES,
            "{report:?}"
        );
    }
    let (_, state) = reopen(dir, &options);
    assert_eq!(state.hard_state.term, Term(5));
}

/// `SyncSkipsFsync` reports the log durable without syncing it: the records
/// must not move, so the acknowledged entries vanish in a power loss.
#[cfg(feature = "planted-bugs")]
#[test]
fn a_skipped_fsync_leaves_the_records_behind() {
    use copycat_planted::PlantedBug;

    let entries = conformance::entries(1, 300, 1);
    let options = options(big_segments());
    let mut lost = 0;
    for seed in 0..8 {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let mut storage = bootstrap(dir, &options);
        let before = power_loss::synced_lengths(&dir.join("log")).unwrap();
        copycat_planted::with(Some(PlantedBug::SyncSkipsFsync), || {
            storage.append(&entries).unwrap();
            assert_eq!(storage.sync().unwrap(), LogIndex(300));
        });
        assert_eq!(
            power_loss::synced_lengths(&dir.join("log")).unwrap(),
            before,
            "a sync that skipped the fsync moved the records"
        );
        drop(storage);
        power_loss::simulate(dir, seed).unwrap();
        let (_, state) = reopen(dir, &options);
        assert!(state.entries.len() <= 300);
        assert_eq!(state.entries[..], entries[..state.entries.len()]);
        lost += u64::from(state.entries.len() < 300);
    }
    assert!(
        lost > 0,
        "acknowledged entries always survived the power loss"
    );
}

/// A snapshot installed (renamed into place, directory synced) survives;
/// one sealed but never installed leaves at most its temp file, which the
/// store removes.
#[test]
fn installed_snapshots_survive_and_uninstalled_ones_go() {
    use copycat_raft::SnapshotMeta;

    let options = options(big_segments());
    let meta = SnapshotMeta {
        index: LogIndex(10),
        term: Term(1),
        config: Configuration::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
    };
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 241) as u8).collect();
    for (seed, install) in [(0, true), (1, true), (2, false), (3, false)] {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let mut storage = bootstrap(dir, &options);
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
        drop(storage);
        let report = power_loss::simulate(dir, seed).unwrap();
        assert!(report.renames_undone.is_empty(), "{report:?}");
        let (storage, state) = reopen(dir, &options);
        if install {
            assert_eq!(state.snapshot, meta, "{report:?}");
            assert_eq!(storage.snapshots().read_all().unwrap().unwrap(), data);
        } else {
            assert_eq!(state.snapshot.index, LogIndex(0), "{report:?}");
        }
        assert_eq!(state.entries.last().map(|e| e.index), Some(LogIndex(20)));
    }
}
