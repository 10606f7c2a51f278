//! Recovery time of a large log against reading the same files
//! sequentially.
//!
//! Run by hand (it writes `COPYCAT_RECOVERY_BYTES`, default 1 GiB):
//! `cargo run --release -p copycat-storage --example recovery_1gib [dir]`
//!
//! Both measurements run with a warm page cache (the log was just written
//! and is read once before timing), so they compare CPU cost: checksums and
//! index building against a plain read.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use copycat_raft::{Entry, EntryPayload, LogIndex, Term};
use copycat_storage::{Disk, FsDisk, LogOptions, LogStore};

fn read_sequentially(dir: &std::path::Path) -> u64 {
    let mut buffer = vec![0u8; 4 << 20];
    let mut total = 0u64;
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| entry.expect("dir entry").path())
        .collect();
    names.sort();
    for path in names {
        let mut file = std::fs::File::open(&path).expect("open segment");
        loop {
            let read = file.read(&mut buffer).expect("read");
            if read == 0 {
                break;
            }
            total += read as u64;
        }
    }
    total
}

fn main() {
    let base = std::env::args().nth(1).map(PathBuf::from);
    let temp = match &base {
        Some(dir) => tempfile::tempdir_in(dir).expect("temp dir"),
        None => tempfile::tempdir().expect("temp dir"),
    };
    let dir = temp.path().join("log");
    let target_bytes: u64 = std::env::var("COPYCAT_RECOVERY_BYTES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1 << 30);
    let payload_bytes: usize = 1024;
    let disk: Arc<dyn Disk> = Arc::new(FsDisk::new());

    // Written durably (one fdatasync per segment roll and one at the end),
    // so that recovery finds the state a real server leaves behind.
    let (mut log, _) =
        LogStore::open(Arc::clone(&disk), &dir, LogOptions::default()).expect("open");
    let payload = Bytes::from(vec![0x42u8; payload_bytes]);
    let count = target_bytes / (payload_bytes as u64 + 16);
    let start = Instant::now();
    let mut batch = Vec::with_capacity(1024);
    for index in 1..=count {
        batch.push(Entry {
            term: Term(1 + index / 100_000),
            index: LogIndex(index),
            payload: EntryPayload::Command(payload.clone()),
        });
        if batch.len() == 1024 {
            log.append(&batch).expect("append");
            batch.clear();
        }
    }
    log.append(&batch).expect("append");
    log.sync().expect("sync");
    drop(log);
    println!("wrote {count} entries in {:?}", start.elapsed());

    // Warm the cache, then time a plain sequential read.
    let bytes = read_sequentially(&dir);
    let start = Instant::now();
    let bytes_again = read_sequentially(&dir);
    let read_time = start.elapsed();
    assert_eq!(bytes, bytes_again);

    let start = Instant::now();
    let (log, recovery) =
        LogStore::open(Arc::clone(&disk), &dir, LogOptions::default()).expect("recover");
    let recovery_time = start.elapsed();
    assert_eq!(log.last_index().get(), count);
    assert!(recovery.discarded.is_empty());

    let mib = bytes as f64 / (1 << 20) as f64;
    println!(
        "log: {mib:.0} MiB in {} segments, {count} entries of {payload_bytes} B",
        recovery.segments
    );
    println!(
        "sequential read: {read_time:?} ({:.0} MiB/s)",
        mib / read_time.as_secs_f64()
    );
    println!(
        "recovery (open): {recovery_time:?} ({:.0} MiB/s)",
        mib / recovery_time.as_secs_f64()
    );
    println!(
        "ratio recovery / read: {:.2}",
        recovery_time.as_secs_f64() / read_time.as_secs_f64()
    );
}
