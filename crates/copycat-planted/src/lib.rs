//! Planted bugs: realistic mistakes that can be switched on in a copy of
//! Copycat's production code, so that tests can prove the simulator and its
//! checkers catch them.
//!
//! Every crate that can carry a bug has a `planted-bugs` cargo feature that
//! pulls this crate in; without the feature the check sites do not exist.
//! With it, a bug is active on the thread that switched it on ([`plant`]),
//! so tests running different bugs on different threads do not see each
//! other's. The simulator runs a whole cluster on one thread, which makes a
//! thread the right scope: every server and client of one run has the same
//! bug.
//!
//! A real server runs on a multi-thread async runtime, where a thread-local
//! switch cannot reach every task, so a bug can also be switched on for the
//! whole process ([`plant_process`]); `copycat server` does that from the
//! `COPYCAT_PLANTED_BUG` environment variable in a test build. A bug is
//! [`active`] if it is active on this thread or process-wide.
//!
//! A site in production code reads:
//!
//! ```ignore
//! #[cfg(feature = "planted-bugs")]
//! if copycat_planted::active(copycat_planted::PlantedBug::SkipDuplicateCheck) {
//!     // the wrong behaviour
//! }
//! ```

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

macro_rules! planted_bugs {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Every bug that can be planted, by the rule it breaks. The doc
        /// comment of each says what the code does wrong;
        /// `docs/simulation.md` lists which check catches it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum PlantedBug {
            $($(#[$doc])* $name,)*
        }

        impl PlantedBug {
            /// Every planted bug, in declaration order.
            pub const ALL: &'static [PlantedBug] = &[$(PlantedBug::$name,)*];

            /// The variant's name, as written in the source (`"DoubleVote"`).
            pub fn name(self) -> &'static str {
                match self {
                    $(PlantedBug::$name => stringify!($name),)*
                }
            }

            /// The bug whose variant name is exactly `name`, if any.
            pub fn from_name(name: &str) -> Option<PlantedBug> {
                match name {
                    $(stringify!($name) => Some(PlantedBug::$name),)*
                    _ => None,
                }
            }
        }
    };
}

planted_bugs! {
    // ----- Raft core (copycat-raft) -----
    /// A candidate counts its own vote twice.
    DoubleVote,
    /// The leader commits once one server fewer than a quorum has an entry.
    CommitWithoutQuorum,
    /// A vote is cast without being persisted.
    ForgetVote,
    /// Entries are handed out for applying as soon as they are in the log.
    ApplyUncommitted,
    /// Lease reads are served after the lease ran out.
    StaleLease,
    /// The leader commits an entry of an earlier term by counting replicas
    /// (breaks §5.4.2, Figure 8).
    CommitPreviousTerm,
    /// A follower sets its commit index to the leader's without capping it at
    /// the last entry the append proved it shares with the leader.
    FollowerCommitUncapped,
    /// A vote (not a pre-vote) is granted without checking that the
    /// candidate's log is at least as up-to-date (§5.4.1).
    VoteWithoutLogCheck,
    /// A ReadIndex read is answered at the commit index at once, without a
    /// quorum round confirming leadership.
    ReadIndexWithoutQuorum,
    /// The lease is measured from when the quorum's acknowledgements arrived
    /// instead of when the round was sent.
    LeaseFromAckTime,
    /// A follower overwrites conflicting entries in place and keeps the rest
    /// of its old suffix instead of truncating it (§5.3).
    KeepConflictingSuffix,
    /// A new leader appends no no-op entry, so it serves ReadIndex reads
    /// before committing anything in its term.
    NoNoopOnElection,
    /// The leader accepts a membership change while another is uncommitted.
    TwoConfigChanges,
    // ----- Replica (copycat-replica) -----
    /// A retry of the session's latest command is applied again instead of
    /// answered from the result cache.
    SkipDuplicateCheck,
    /// A keep-alive drops every cached result of the session, not only those
    /// the client acknowledged.
    KeepAliveDropsUnacknowledgedResults,
    /// The replica clock takes each entry's timestamp as it is, so it goes
    /// back when a leader with a slower clock takes over.
    ClockFromEntryTimestamp,
    /// A session counts as overdue after half its timeout.
    ExpireAtHalfTimeout,
    /// Snapshots leave out the sessions' cached results.
    SnapshotDropsCachedResults,
    /// A command's response names the event index before its own events,
    /// so the client may deliver the response first.
    ResponseBeforeOwnEvents,
    /// An event reset resends the retained batches but the first.
    ResetSkipsFirstBatch,
    // ----- Server core and shell (copycat-replica) -----
    /// The leader answers linearizable reads from its local state, with no
    /// ReadIndex round and no lease.
    LocalLinearizableRead,
    /// A server that is not the leader answers linearizable and lease reads
    /// from its own applied state instead of sending the client to the
    /// leader, so a lagging follower serves stale reads.
    FollowerLocalLinearizableRead,
    /// A confirmed linearizable read is answered as soon as it is confirmed,
    /// before the entries committed with it are applied (without waiting for
    /// its read index).
    ReadBeforeApply,
    /// A sequential read does not wait for the client's index and sequence.
    SequentialIgnoresClientIndex,
    /// Messages that must wait for the sync (votes, append acknowledgements)
    /// are sent as soon as the batch is written.
    SendBeforeSync,
    /// While a snapshot received from the leader is still being decoded,
    /// the entries committed after it are applied to the state from before
    /// it instead of waiting for the restore.
    ApplyBeforeRestore,
    // ----- Primitives (copycat-primitives) -----
    /// A lock request finds the holder's session silent for more than half
    /// its timeout on the replicated clock and hands the lock on at once,
    /// without waiting for the session's expiry to be committed.
    LockGrantBeforeExpiry,
    // ----- Storage (copycat-storage) -----
    /// A log sync reports the log durable without syncing the segment files.
    SyncSkipsFsync,
    /// Truncating a conflicting suffix shortens the log in memory but not
    /// the segment file, whose old tail comes back after a restart.
    TruncateKeepsFileTail,
    /// Saving term and vote skips the directory sync after the rename, so a
    /// crash can bring the old term and vote back.
    MetaSkipsDirectorySync,
    /// With the log's writes deferred, a segment roll queues the creation of
    /// the next segment but not the sync of the full one, so a power loss
    /// can take acknowledged entries from the middle of the log.
    DeferredRollSkipsSync,
    // ----- Client session (copycat-client) -----
    /// Keep-alives acknowledge every command submitted, not only those whose
    /// results arrived.
    AcknowledgeUnreceivedResults,
    /// Results are handed to the application without waiting for the events
    /// published before them.
    DeliverBeforeEvents,
    /// Queries do not carry the highest index the client has seen.
    QueryWithoutIndex,
    /// On a connection shared by several sessions, event batches go to the
    /// session registered last instead of the one they name.
    EventsToNewestSession,
    // ----- Replicated primitives (copycat-primitives) -----
    /// A semaphore release is not checked against the permits the session
    /// holds: releasing more than it holds puts them all back in the pool.
    SemaphoreReleaseUnchecked,
    /// A semaphore forgets the permits of a session that closes or expires
    /// instead of returning them to the pool.
    SemaphoreCloseKeepsPermits,
    /// An election leader whose session closes keeps leading: its waiting
    /// candidacies and its listening end, its leadership does not.
    ElectionKeepsClosedLeader,
    /// A group member whose session closes keeps the messages addressed to
    /// it: they are neither redelivered to another member nor reported
    /// failed (leaving and removal still hand them on).
    GroupCloseSkipsRedelivery,
}

thread_local! {
    static ACTIVE: Cell<Option<PlantedBug>> = const { Cell::new(None) };
}

/// The process-wide bug: 0 for none, else its index in [`PlantedBug::ALL`]
/// plus one.
static PROCESS: AtomicUsize = AtomicUsize::new(0);

/// Switch `bug` on for every thread of the process (or the process-wide bug
/// off, with `None`). Bugs switched on per thread ([`plant`]) stay as they
/// are.
pub fn plant_process(bug: Option<PlantedBug>) {
    let index = bug.map_or(0, |bug| {
        PlantedBug::ALL
            .iter()
            .position(|b| *b == bug)
            .expect("PlantedBug::ALL lists every variant")
            + 1
    });
    PROCESS.store(index, Ordering::SeqCst);
}

/// The bug active for the whole process, if any.
pub fn planted_process() -> Option<PlantedBug> {
    match PROCESS.load(Ordering::SeqCst) {
        0 => None,
        index => PlantedBug::ALL.get(index - 1).copied(),
    }
}

/// Switch `bug` on for this thread (or every bug off, with `None`).
pub fn plant(bug: Option<PlantedBug>) {
    ACTIVE.with(|active| active.set(bug));
}

/// The bug active on this thread, if any.
pub fn planted() -> Option<PlantedBug> {
    ACTIVE.with(Cell::get)
}

/// Whether `bug` is active on this thread or for the whole process.
pub fn active(bug: PlantedBug) -> bool {
    planted() == Some(bug) || planted_process() == Some(bug)
}

/// Run `f` with `bug` active on this thread, then switch it off again (also
/// when `f` panics).
pub fn with<T>(bug: Option<PlantedBug>, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<PlantedBug>);
    impl Drop for Reset {
        fn drop(&mut self) {
            plant(self.0);
        }
    }
    let _reset = Reset(planted());
    plant(bug);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bug_is_active_only_on_its_thread_and_only_inside_with() {
        assert!(!active(PlantedBug::DoubleVote));
        with(Some(PlantedBug::DoubleVote), || {
            assert!(active(PlantedBug::DoubleVote));
            assert!(!active(PlantedBug::ForgetVote));
            std::thread::spawn(|| assert_eq!(planted(), None))
                .join()
                .unwrap();
        });
        assert_eq!(planted(), None);
    }

    #[test]
    fn all_lists_every_variant_once_in_order() {
        let mut sorted = PlantedBug::ALL.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, PlantedBug::ALL);
    }

    #[test]
    fn names_round_trip_exactly() {
        for bug in PlantedBug::ALL {
            assert_eq!(bug.name(), format!("{bug:?}"));
            assert_eq!(PlantedBug::from_name(bug.name()), Some(*bug));
        }
        assert_eq!(PlantedBug::from_name("doublevote"), None);
        assert_eq!(PlantedBug::from_name(" DoubleVote"), None);
        assert_eq!(PlantedBug::from_name(""), None);
    }
}
