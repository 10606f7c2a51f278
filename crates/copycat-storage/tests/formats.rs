//! The exact bytes of every file the storage writes: log segments (header,
//! `[len][crc32c][payload]` records, sync marker), the meta file and
//! snapshot files. Each sample is written through the public stores on a
//! [`MemDisk`], read back raw, compared with `testdata/formats/*.txt` (see
//! `copycat-raft/tests/support/golden_bytes.rs`), and reopened to check it
//! decodes to what was saved. `docs/storage-format.md` describes the bytes.
//! `REWRITE=1 cargo test -p copycat-storage --test formats` rewrites the
//! files, which is only right together with a deliberate version bump.
//! (Unknown versions of each file are rejected in `bad_input.rs`.)

#[path = "../../copycat-raft/tests/support/golden_bytes.rs"]
mod golden_bytes;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use copycat_raft::{
    Configuration, Entry, EntryPayload, HardState, LogIndex, MemberRole, NodeId, SnapshotMeta, Term,
};
use copycat_storage::{
    Disk, Durability, Identity, LogOptions, LogStore, MemDisk, Meta, MetaStore, SnapshotStore,
};
use golden_bytes::{sample, Sample};

fn read_file(disk: &MemDisk, path: &Path) -> Vec<u8> {
    let mut bytes = vec![0u8; disk.file_len(path).expect("file exists") as usize];
    disk.read_exact_at(path, 0, &mut bytes).expect("read");
    bytes
}

fn config() -> Configuration {
    let mut config = Configuration::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
    config.members.insert(NodeId(4), MemberRole::Learner);
    config.addresses.insert(NodeId(4), "127.0.0.4:5700".into());
    config
}

/// The only file in `dir`.
fn only_file(disk: &MemDisk, dir: &Path) -> std::path::PathBuf {
    let names = disk.list_dir(dir).expect("list");
    assert_eq!(names.len(), 1, "{names:?}");
    dir.join(&names[0])
}

fn segment_samples(samples: &mut Vec<Sample>) {
    let disk = MemDisk::new();
    let shared: Arc<dyn Disk> = Arc::new(disk.clone());
    let dir = Path::new("/log");

    // A new log: one segment holding only its header (and the sync marker
    // the open's sync leaves).
    let (mut log, _) = LogStore::open(Arc::clone(&shared), dir, LogOptions::default()).unwrap();
    let path = only_file(&disk, dir);
    assert_eq!(path, dir.join("00000000000000000001.log"));
    samples.push(sample("segment", "new", read_file(&disk, &path)));

    // One record of each payload kind, synced: header, records, marker.
    let entries = vec![
        Entry {
            term: Term(2),
            index: LogIndex(1),
            payload: EntryPayload::Noop,
        },
        Entry {
            term: Term(2),
            index: LogIndex(2),
            payload: EntryPayload::Command(Bytes::from_static(b"put x 1")),
        },
        Entry {
            term: Term(2),
            index: LogIndex(3),
            payload: EntryPayload::Config(config()),
        },
    ];
    log.append(&entries).unwrap();
    assert_eq!(log.sync().unwrap(), LogIndex(3));
    samples.push(sample("segment", "three-records", read_file(&disk, &path)));
    drop(log);
    let (log, recovery) = LogStore::open(Arc::clone(&shared), dir, LogOptions::default()).unwrap();
    assert!(recovery.discarded.is_empty());
    assert_eq!(
        log.entries(LogIndex(1), LogIndex(4), None).unwrap(),
        entries
    );

    // A log reset to start at 1000: the header records the first index.
    let mut log = log;
    log.reset(LogIndex(1_000)).unwrap();
    let path = only_file(&disk, dir);
    assert_eq!(path, dir.join("00000000000000001000.log"));
    let bytes = read_file(&disk, &path);
    samples.push(sample("segment", "header-first-index-1000", &bytes[..32]));
}

fn meta_samples(samples: &mut Vec<Sample>) {
    let disk = MemDisk::new();
    let shared: Arc<dyn Disk> = Arc::new(disk.clone());
    let dir = Path::new("/node");
    let metas = [
        ("default", Meta::default()),
        (
            "voted-with-config",
            Meta {
                identity: Identity {
                    cluster: 0x0123_4567_89ab_cdef,
                    server: 2,
                },
                hard_state: HardState {
                    term: Term(300),
                    vote: Some(NodeId(2)),
                },
                config: config(),
            },
        ),
    ];
    for (name, meta) in metas {
        let (mut store, _) = MetaStore::open(Arc::clone(&shared), dir, Durability::Fsync).unwrap();
        store.save(meta.clone()).unwrap();
        samples.push(sample("meta", name, read_file(&disk, &dir.join("meta"))));
        let (store, _) = MetaStore::open(Arc::clone(&shared), dir, Durability::Fsync).unwrap();
        assert_eq!(store.get(), &meta);
    }
}

fn snapshot_samples(samples: &mut Vec<Sample>) {
    let snapshots = [
        ("empty-at-zero", SnapshotMeta::default(), &b""[..]),
        (
            "with-config",
            SnapshotMeta {
                index: LogIndex(1_000),
                term: Term(4),
                config: config(),
            },
            &b"state machine image"[..],
        ),
    ];
    for (name, meta, data) in snapshots {
        let disk = MemDisk::new();
        let shared: Arc<dyn Disk> = Arc::new(disk.clone());
        let dir = Path::new("/snapshots");
        let (mut store, _) =
            SnapshotStore::open(Arc::clone(&shared), dir, Durability::Fsync, 0).unwrap();
        let mut writer = store.begin(meta.clone()).unwrap();
        writer.write(data).unwrap();
        store.install(writer).unwrap();
        let path = only_file(&disk, dir);
        samples.push(sample("snapshot", name, read_file(&disk, &path)));
        let (store, _) =
            SnapshotStore::open(Arc::clone(&shared), dir, Durability::Fsync, 0).unwrap();
        assert_eq!(store.latest(), Some(&meta));
        assert_eq!(store.read_all().unwrap().as_deref(), Some(data));
    }
}

#[test]
fn storage_files_have_the_pinned_bytes() {
    let mut samples = Vec::new();
    segment_samples(&mut samples);
    meta_samples(&mut samples);
    snapshot_samples(&mut samples);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/formats");
    golden_bytes::check(
        &dir,
        &[
            (
                "segment",
                "log segment files (32-byte header, [len][crc32c][postcard Entry] records, sync marker)",
            ),
            ("meta", "the meta file (term, vote, configuration)"),
            ("snapshot", "snapshot files (header, meta, data, trailer)"),
        ],
        samples,
    );
}
