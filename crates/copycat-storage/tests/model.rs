//! The log against a dumb model under random appends, syncs, truncations,
//! purges, crashes and reopenings on a [`FaultDisk`].
//!
//! Checked after every reopen:
//! - every entry that `sync()` reported durable (and that the caller did not
//!   truncate since) is present and identical;
//! - every entry present was written at that index at some point (nothing is
//!   invented, nothing comes from another index);
//! - the first index is the one the last purge left.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use copycat_raft::{Entry, LogIndex};
use copycat_storage::{conformance, Disk, FaultDisk, LogOptions, LogStore};
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

fn open(disk: &FaultDisk, dir: &Path) -> LogStore {
    let (log, _) = LogStore::open(Arc::new(disk.clone()) as Arc<dyn Disk>, dir, options())
        .expect("reopen after a crash must succeed");
    log.invariants();
    log
}

/// Reopens and checks the recovered log against the model; returns the log.
fn reopen_and_check(disk: &FaultDisk, dir: &Path, model: &mut Model, crashed: bool) -> LogStore {
    let log = open(disk, dir);
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

fn run(seed: u64, ops: Vec<Op>) {
    let disk = FaultDisk::new(seed);
    let dir = Path::new("/model/log");
    let mut log = open(&disk, dir);
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
                log = reopen_and_check(&disk, dir, &mut model, true);
            }
            Op::TearAndCrash => {
                disk.tear_last_write();
                disk.crash();
                drop(log);
                log = reopen_and_check(&disk, dir, &mut model, true);
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
                log = reopen_and_check(&disk, dir, &mut model, true);
            }
            Op::Reopen => {
                drop(log);
                log = reopen_and_check(&disk, dir, &mut model, false);
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
    fn log_matches_model(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..80)) {
        run(seed, ops);
    }
}

#[test]
fn poisoned_store_refuses_work() {
    let disk = FaultDisk::new(3);
    let dir = Path::new("/poisoned");
    let mut log = open(&disk, dir);
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
    let log = open(&disk, dir);
    assert!(log.last_index() >= LogIndex(10));
}
