//! The log against a dumb model under random appends, syncs, truncations,
//! purges, crashes and reopenings on a [`FaultDisk`], with the log writing
//! in place or deferring its writes to syncs begun, run and finished as
//! separate steps (as when they run on another thread,
//! [`LogStore::defer_writes`]).
//!
//! Checked after every reopen:
//! - every entry that `sync()` reported durable (and that the caller did not
//!   truncate since) is present and identical;
//! - every entry present was written at that index at some point (nothing is
//!   invented, nothing comes from another index);
//! - the first index is the one the last purge left.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use copycat_raft::{Entry, LogIndex};
use copycat_storage::{conformance, Disk, FaultDisk, LogOptions, LogStore, LogSync, LogSynced};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Append {
        count: u64,
        new_term: bool,
    },
    Flush,
    Sync,
    /// Truncate at `last - back` (clamped to the log).
    TruncateFrom {
        back: u64,
    },
    /// Purge up to `first + forward`.
    PurgeTo {
        forward: u64,
    },
    /// Power loss, optionally keeping part of unsynced tails.
    Crash {
        torn: bool,
    },
    /// Tear the last write, then power loss.
    TearAndCrash,
    /// The next sync fails; the store is poisoned and reopened after a crash.
    FailSyncThenCrash,
    /// Process restart without power loss: buffered appends are lost,
    /// written but unsynced data stays.
    Reopen,
    /// Begin a sync to run later ([`LogStore::begin_sync`]).
    BeginSync,
    /// Begin a job that only runs the queued writes
    /// ([`LogStore::begin_writes`]).
    BeginWrites,
    /// Run the oldest job begun and not run.
    RunJob,
    /// Finish the oldest job run and not finished.
    FinishJob,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1u64..20, any::<bool>()).prop_map(|(count, new_term)| Op::Append { count, new_term }),
        2 => Just(Op::Flush),
        4 => Just(Op::Sync),
        2 => (0u64..30).prop_map(|back| Op::TruncateFrom { back }),
        1 => (0u64..60).prop_map(|forward| Op::PurgeTo { forward }),
        2 => any::<bool>().prop_map(|torn| Op::Crash { torn }),
        1 => Just(Op::TearAndCrash),
        1 => Just(Op::FailSyncThenCrash),
        1 => Just(Op::Reopen),
        3 => Just(Op::BeginSync),
        1 => Just(Op::BeginWrites),
        3 => Just(Op::RunJob),
        3 => Just(Op::FinishJob),
    ]
}

struct Model {
    /// The entries the store should hold, from `first`.
    entries: Vec<Entry>,
    first: u64,
    /// Highest index acknowledged durable and not truncated since.
    durable: u64,
    term: u64,
    /// Every entry ever appended, by index.
    history: BTreeMap<u64, Vec<Entry>>,
}

impl Model {
    fn next(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    fn last(&self) -> u64 {
        self.next() - 1
    }
}

fn options() -> LogOptions {
    let mut options = conformance::small_segments();
    options.segment_size_max_bytes = 700;
    options
}

fn open(disk: &FaultDisk, dir: &Path, deferred: bool) -> LogStore {
    let (mut log, _) = LogStore::open(Arc::new(disk.clone()) as Arc<dyn Disk>, dir, options())
        .expect("reopen after a crash must succeed");
    log.defer_writes(deferred).unwrap();
    log.invariants();
    log
}

/// Syncs begun and not finished yet: not run, and run.
#[derive(Default)]
struct Jobs {
    begun: VecDeque<LogSync>,
    ran: VecDeque<LogSynced>,
}

/// Reopens and checks the recovered log against the model; returns the log.
fn reopen_and_check(
    disk: &FaultDisk,
    dir: &Path,
    model: &mut Model,
    crashed: bool,
    deferred: bool,
) -> LogStore {
    let log = open(disk, dir, deferred);
    let recovered = log
        .entries(log.first_index(), log.next_index(), None)
        .expect("read recovered log");
    assert_eq!(
        log.first_index().get(),
        model.first,
        "first index after purge"
    );
    assert!(
        log.last_index().get() >= model.durable,
        "lost durable entries: last {:?}, durable {}",
        log.last_index(),
        model.durable
    );
    for entry in &recovered {
        let index = entry.index.get();
        if index <= model.durable {
            assert_eq!(
                entry,
                &model.entries[(index - model.first) as usize],
                "durable entry changed"
            );
        }
        assert!(
            model
                .history
                .get(&index)
                .is_some_and(|written| written.contains(entry)),
            "entry {entry:?} was never written"
        );
    }
    model.entries = recovered;
    // Opening syncs what it recovered: all of it is durable now.
    let _ = crashed;
    model.durable = log.last_index().get();
    model.term += 1;
    log
}

fn run(seed: u64, deferred: bool, ops: Vec<Op>) {
    let disk = FaultDisk::new(seed);
    let dir = Path::new("/model/log");
    let mut log = open(&disk, dir, deferred);
    let mut jobs = Jobs::default();
    let mut model = Model {
        entries: Vec::new(),
        first: 1,
        durable: 0,
        term: 1,
        history: BTreeMap::new(),
    };
    for op in ops {
        match op {
            Op::Append { count, new_term } => {
                if new_term {
                    model.term += 1;
                }
                let start = model.next();
                let batch: Vec<Entry> = (start..start + count)
                    .map(|index| conformance::entry(index, model.term))
                    .collect();
                log.append(&batch).unwrap();
                for entry in &batch {
                    model
                        .history
                        .entry(entry.index.get())
                        .or_default()
                        .push(entry.clone());
                }
                model.entries.extend(batch);
            }
            Op::Flush => log.flush().unwrap(),
            Op::Sync => {
                let durable = log.sync().unwrap();
                assert_eq!(durable.get(), model.last());
                model.durable = durable.get();
            }
            Op::TruncateFrom { back } => {
                let at = model.next().saturating_sub(back).max(model.first);
                log.truncate_from(LogIndex(at)).unwrap();
                model.entries.truncate((at - model.first) as usize);
                model.durable = model.durable.min(at - 1);
            }
            Op::PurgeTo { forward } => {
                log.purge_to(LogIndex(model.first + forward)).unwrap();
                let first = log.first_index().get();
                assert!(first >= model.first && first <= model.first + forward + 1);
                model.entries.drain(..(first - model.first) as usize);
                model.first = first;
            }
            Op::Crash { torn } => {
                if torn {
                    disk.crash_torn();
                } else {
                    disk.crash();
                }
                drop(log);
                jobs = Jobs::default();
                log = reopen_and_check(&disk, dir, &mut model, true, deferred);
            }
            Op::TearAndCrash => {
                disk.tear_last_write();
                disk.crash();
                drop(log);
                jobs = Jobs::default();
                log = reopen_and_check(&disk, dir, &mut model, true, deferred);
            }
            Op::FailSyncThenCrash => {
                disk.fail_next_sync();
                if log.sync().is_ok() {
                    // Nothing needed syncing, so the failure did not fire.
                    model.durable = model.last();
                }
                // A poisoned store refuses further work.
                disk.crash();
                drop(log);
                jobs = Jobs::default();
                log = reopen_and_check(&disk, dir, &mut model, true, deferred);
            }
            Op::Reopen => {
                drop(log);
                jobs = Jobs::default();
                log = reopen_and_check(&disk, dir, &mut model, false, deferred);
            }
            Op::BeginSync => {
                let job = log.begin_sync().unwrap();
                assert_eq!(job.through().get(), model.last());
                jobs.begun.push_back(job);
            }
            Op::BeginWrites => {
                if let Some(job) = log.begin_writes() {
                    assert!(deferred, "only deferred writes wait for a job");
                    jobs.begun.push_back(job);
                }
            }
            Op::RunJob => {
                if let Some(job) = jobs.begun.pop_front() {
                    jobs.ran.push_back(job.run());
                }
            }
            Op::FinishJob => {
                if let Some(synced) = jobs.ran.pop_front() {
                    let durable = log.finish_sync(synced).unwrap().get();
                    assert!(durable <= model.last(), "durable past the end");
                    model.durable = model.durable.max(durable);
                }
            }
        }
        log.invariants();
        assert_eq!(log.first_index().get(), model.first);
        assert_eq!(log.next_index().get(), model.next());
        for (offset, entry) in model.entries.iter().enumerate().step_by(7) {
            assert_eq!(
                log.term(LogIndex(model.first + offset as u64)),
                Some(entry.term)
            );
        }
    }
    // Finally everything the model holds reads back.
    let all = log
        .entries(log.first_index(), log.next_index(), None)
        .unwrap();
    assert_eq!(all, model.entries);
}

/// 96 cases by default; `PROPTEST_CASES` asks for more (or fewer).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(96)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), .. ProptestConfig::default() })]

    #[test]
    fn log_matches_model(
        seed in any::<u64>(),
        deferred in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        run(seed, deferred, ops);
    }
}

#[test]
fn poisoned_store_refuses_work() {
    let disk = FaultDisk::new(3);
    let dir = Path::new("/poisoned");
    let mut log = open(&disk, dir, false);
    log.append(&conformance::entries(1, 10, 1)).unwrap();
    log.sync().unwrap();
    log.append(&conformance::entries(11, 12, 1)).unwrap();
    disk.fail_next_sync();
    assert!(log.sync().is_err());
    assert!(matches!(
        log.append(&conformance::entries(13, 13, 1)),
        Err(copycat_storage::StorageError::Poisoned { .. })
    ));
    assert!(log.sync().is_err());
    disk.crash();
    drop(log);
    let log = open(&disk, dir, false);
    assert!(log.last_index() >= LogIndex(10));
}
