//! Durable appends per second on the real file system: a raw `fdatasync`
//! after every 256-byte write (the baseline) against group-committed appends
//! from 1, 16 and 256 threads.
//!
//! Run: `cargo bench -p copycat-storage --bench group_commit`. The data goes
//! to a temp dir under `$COPYCAT_BENCH_DIR` (default: the system temp dir),
//! which must be on a real disk for the numbers to mean anything.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use copycat_raft::{EntryPayload, Term};
use copycat_storage::{Disk, FsDisk, GroupCommit, LogOptions, LogStore};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const PAYLOAD_BYTES: usize = 256;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("COPYCAT_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).expect("bench dir"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

fn durable_appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("durable_appends");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1));

    // Baseline: what a naive log does, one write and one fdatasync per entry.
    let temp = bench_dir();
    let path = temp.path().join("baseline");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("baseline file");
    let record = [0x5au8; PAYLOAD_BYTES];
    let mut offset = 0u64;
    group.bench_function("fdatasync_every_256B_write", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                file.write_all_at(&record, offset).expect("write");
                file.sync_data().expect("fdatasync");
                offset += PAYLOAD_BYTES as u64;
            }
            start.elapsed()
        })
    });

    for threads in [1u64, 16, 256] {
        let temp = bench_dir();
        let disk: Arc<dyn Disk> = Arc::new(FsDisk::new());
        let (log, _) = LogStore::open(disk, &temp.path().join("log"), LogOptions::default())
            .expect("open log");
        let committer = GroupCommit::spawn(log);
        let payload = Bytes::from(vec![0xa5u8; PAYLOAD_BYTES]);
        group.bench_function(format!("group_commit_{threads}_threads"), |b| {
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(threads);
                let start = Instant::now();
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        let committer = committer.clone();
                        let payload = payload.clone();
                        std::thread::spawn(move || {
                            for _ in 0..per_thread {
                                committer
                                    .submit(Term(1), EntryPayload::Command(payload.clone()))
                                    .expect("durable append");
                            }
                        })
                    })
                    .collect();
                for handle in handles {
                    handle.join().expect("appender thread");
                }
                // Report time per entry actually appended.
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_thread * threads) as f64)
            })
        });
        let syncs = committer.syncs();
        let log = committer.shutdown().expect("shutdown");
        eprintln!(
            "group_commit_{threads}_threads: {} entries in {syncs} syncs ({:.1} entries per sync)",
            log.last_index().get(),
            log.last_index().get() as f64 / syncs.max(1) as f64
        );
    }
    group.finish();
}

criterion_group!(benches, durable_appends);
criterion_main!(benches);
