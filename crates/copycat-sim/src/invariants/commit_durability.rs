//! The commit index moves only forward, and never beyond what a quorum holds
//! durably (Raft §5.3, §5.4.2: an entry is committed once the leader that
//! created it has replicated it on a majority; "replicated" means on stable
//! storage, Figure 2).
//!
//! Each node's durable log is tracked by the simulator as the terms of the
//! entries its storage reported synced, plus the index of its installed
//! snapshot.

use std::collections::BTreeMap;

use copycat_raft::{Configuration, LogIndex, NodeId, Term};

use super::{Check, Observer};

/// What one node holds on stable storage, as far as the simulator knows.
#[derive(Clone, Debug, Default)]
pub struct DurableLog {
    /// Terms of durable entries by index.
    pub terms: BTreeMap<LogIndex, Term>,
    /// Everything up to here is covered by a durable snapshot.
    pub snapshot: LogIndex,
}

impl DurableLog {
    /// Whether the entry `(index, term)` is durable here.
    pub fn holds(&self, index: LogIndex, term: Term) -> bool {
        index <= self.snapshot || self.terms.get(&index) == Some(&term)
    }
}

impl Observer {
    /// `node` reports commit index `commit`: it must not go back within one
    /// incarnation.
    pub fn check_commit_monotonic(&mut self, node: NodeId, commit: LogIndex) -> Check {
        let seen = self.commit_seen.entry(node).or_insert(commit);
        if commit < *seen {
            return Err(format!(
                "commit index of {node:?} went back from {seen:?} to {commit:?}"
            ));
        }
        *seen = commit;
        Ok(())
    }

    /// A leader committed `(index, term)`: some configuration in effect from
    /// `index` on must have a majority of voters holding it durably.
    pub fn check_commit_durable(
        &self,
        node: NodeId,
        index: LogIndex,
        term: Term,
        configurations: &[Configuration],
        durable: &BTreeMap<NodeId, DurableLog>,
    ) -> Check {
        let held_by_quorum = configurations.iter().any(|config| {
            let holders = config
                .voters()
                .filter(|voter| durable.get(voter).is_some_and(|log| log.holds(index, term)))
                .count();
            holders >= config.quorum()
        });
        if held_by_quorum {
            Ok(())
        } else {
            Err(format!(
                "commit durability: {node:?} committed {index:?}/{term:?} but no quorum holds it on stable storage"
            ))
        }
    }
}
