//! Recovery time of a large log against reading the same files
//! sequentially.
//!
//! Run by hand (it writes `COPYCAT_RECOVERY_BYTES`, default 1 GiB, and
//! measures `COPYCAT_RECOVERY_RUNS` times, default 5):
//! `cargo run --release -p copycat-storage --example recovery_1gib [dir]`
//!
//! Each run is a fresh process (as a restarting server is), which reads the
//! files once to warm the page cache, then times a plain sequential read of
//! every file into memory (4 MiB reads into one buffer), then times
//! `LogStore::open`. Both run with a warm page cache, so they compare CPU
//! cost: checksums and index building against a plain read. Prefix the
//! command with `taskset -c 0` to see the cost on one core.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use copycat_raft::{Entry, EntryPayload, LogIndex, Term};
use copycat_storage::{Disk, FsDisk, LogOptions, LogStore};

const MEASURE_FLAG: &str = "--measure";

fn read_sequentially(dir: &Path) -> u64 {
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

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".into())
}

/// One measurement, in this (fresh) process: prints
/// `bytes segments entries read_ns open_ns`.
fn measure(dir: &Path, count: u64) {
    let disk: Arc<dyn Disk> = Arc::new(FsDisk::new());
    let bytes = read_sequentially(dir);
    let start = Instant::now();
    let bytes_again = read_sequentially(dir);
    let read_time = start.elapsed();
    assert_eq!(bytes, bytes_again);

    let start = Instant::now();
    let (log, recovery) =
        LogStore::open(Arc::clone(&disk), dir, LogOptions::default()).expect("recover");
    let recovery_time = start.elapsed();
    assert_eq!(log.last_index().get(), count);
    assert_eq!(recovery.entries, count);
    assert!(recovery.discarded.is_empty());
    println!(
        "{bytes} {} {} {} {}",
        recovery.segments,
        recovery.entries,
        read_time.as_nanos(),
        recovery_time.as_nanos()
    );
}

fn median_and_range(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(|a, b| a.total_cmp(b));
    let middle = values.len() / 2;
    let median = if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    };
    (median, values[0], values[values.len() - 1])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(MEASURE_FLAG) {
        let count = args[3].parse().expect("entry count");
        measure(Path::new(&args[2]), count);
        return;
    }
    let base = args.get(1).map(PathBuf::from);
    let temp = match &base {
        Some(dir) => tempfile::tempdir_in(dir).expect("temp dir"),
        None => tempfile::tempdir().expect("temp dir"),
    };
    let dir = temp.path().join("log");
    let target_bytes: u64 = std::env::var("COPYCAT_RECOVERY_BYTES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1 << 30);
    let runs: usize = std::env::var("COPYCAT_RECOVERY_RUNS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(5)
        .max(1);
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

    let exe = std::env::current_exe().expect("current exe");
    let mut reads = Vec::new();
    let mut opens = Vec::new();
    let mut ratios = Vec::new();
    let mut mib = 0.0;
    for run in 1..=runs {
        let load = load_average();
        let output = Command::new(&exe)
            .arg(MEASURE_FLAG)
            .arg(&dir)
            .arg(count.to_string())
            .output()
            .expect("run measurement");
        assert!(
            output.status.success(),
            "measurement failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).expect("utf-8");
        let fields: Vec<u128> = text
            .split_whitespace()
            .map(|field| field.parse().expect("number"))
            .collect();
        let [bytes, segments, entries, read_ns, open_ns] = fields[..] else {
            panic!("unexpected measurement output {text:?}");
        };
        mib = bytes as f64 / (1 << 20) as f64;
        let read_time = Duration::from_nanos(read_ns as u64);
        let open_time = Duration::from_nanos(open_ns as u64);
        let ratio = open_time.as_secs_f64() / read_time.as_secs_f64();
        if run == 1 {
            println!(
                "log: {mib:.0} MiB in {segments} segments, {entries} entries of {payload_bytes} B"
            );
        }
        println!(
            "run {run}: load {load}: sequential read {read_time:.1?} ({:.0} MiB/s), \
             recovery (open) {open_time:.1?} ({:.0} MiB/s), ratio {ratio:.2}",
            mib / read_time.as_secs_f64(),
            mib / open_time.as_secs_f64(),
        );
        reads.push(read_time.as_secs_f64() * 1e3);
        opens.push(open_time.as_secs_f64() * 1e3);
        ratios.push(ratio);
    }
    let (read, read_min, read_max) = median_and_range(&mut reads);
    let (open, open_min, open_max) = median_and_range(&mut opens);
    let (ratio, ratio_min, ratio_max) = median_and_range(&mut ratios);
    println!("{runs} runs, median (range):");
    println!(
        "sequential read: {read:.1} ms ({read_min:.1}-{read_max:.1}), {:.0} MiB/s",
        mib / read * 1e3
    );
    println!(
        "recovery (open): {open:.1} ms ({open_min:.1}-{open_max:.1}), {:.0} MiB/s",
        mib / open * 1e3
    );
    println!("ratio recovery / read: {ratio:.2} ({ratio_min:.2}-{ratio_max:.2})");
    println!("load average after: {}", load_average());
}
