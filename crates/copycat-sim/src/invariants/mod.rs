//! Cross-server invariants, one per file, each tied to the Raft paper or
//! thesis. The simulator feeds the [`Observer`] what happens (entries written,
//! commits, applies, leadership, client acknowledgements) and it checks, as
//! events happen, that nothing a correct Raft forbids ever occurs.
//!
//! Every check returns `Err(description)` on a violation; the simulator stops
//! the run and reports the seed.

mod acknowledged_writes;
mod commit_durability;
mod configuration_safety;
mod coordination;
mod election_safety;
mod leader_completeness;
mod lease_safety;
mod log_matching;
mod primitives;
mod replica_reports;
mod session_log;
mod snapshot_identity;
mod state_machine_safety;

use std::collections::BTreeMap;

use copycat_raft::{Entry, LogIndex, NodeId, Term};
use copycat_replica::ReplicaConfig;

pub use commit_durability::DurableLog;
pub use primitives::{PrimitiveChecker, PrimitiveStats, PrimitiveStep};
pub use replica_reports::SimReplica;
pub use session_log::SessionModel;

/// Result of a check.
pub type Check = Result<(), String>;

/// What the checks remember across the run.
#[derive(Debug)]
pub struct Observer {
    /// Term to leader (election safety).
    leaders: BTreeMap<Term, NodeId>,
    /// `(index, term)` to (entry digest, term of the previous entry) for every
    /// entry ever written to any log (log matching).
    written: BTreeMap<(LogIndex, Term), (u64, Option<Term>)>,
    /// Every committed entry, with the lowest term of a leader known to have
    /// committed it (leader completeness, state machine safety).
    committed: BTreeMap<LogIndex, (Entry, Term)>,
    /// Client operations acknowledged as applied: (client, op).
    acknowledged: std::collections::BTreeSet<(u64, u64)>,
    /// Per node, the highest commit index seen in its current incarnation.
    commit_seen: BTreeMap<NodeId, LogIndex>,
    /// Replica digest at each snapshot index.
    snapshots: BTreeMap<LogIndex, u32>,
    /// The replicas' configuration (the log model and the reference
    /// replicas use it).
    replica_config: ReplicaConfig,
    /// The committed log replayed, to judge what replicas report.
    reference: replica_reports::Reference,
    /// The primitives' safety, on the committed log as replayed.
    pub primitives: PrimitiveChecker,
}

impl Observer {
    /// A fresh observer for replicas configured by `replica_config`.
    pub fn new(replica_config: ReplicaConfig) -> Self {
        Self {
            leaders: BTreeMap::new(),
            written: BTreeMap::new(),
            committed: BTreeMap::new(),
            acknowledged: Default::default(),
            commit_seen: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            reference: replica_reports::Reference::new(replica_config.clone()),
            replica_config,
            primitives: PrimitiveChecker::default(),
        }
    }

    /// Number of committed entries seen so far.
    pub fn committed_count(&self) -> usize {
        self.committed.len()
    }

    /// Highest committed index seen so far.
    pub fn committed_max(&self) -> LogIndex {
        self.committed
            .keys()
            .next_back()
            .copied()
            .unwrap_or(LogIndex::ZERO)
    }

    /// The committed entry at `index`, if any.
    pub fn committed_entry(&self, index: LogIndex) -> Option<&Entry> {
        self.committed.get(&index).map(|(entry, _)| entry)
    }

    /// A node restarted: its volatile commit index starts over.
    pub fn node_restarted(&mut self, node: NodeId) {
        self.commit_seen.remove(&node);
    }
}

/// A cheap, stable digest of an entry (FNV-1a over its encoding).
pub fn entry_digest(entry: &Entry) -> u64 {
    let bytes = postcard::to_allocvec(entry).expect("entries encode");
    fnv1a(&bytes)
}

/// FNV-1a, 64-bit.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash
}
