//! State Machine Safety (Raft §5.4.3, Figure 3): if a server has applied a
//! log entry at a given index, no other server ever applies a different log
//! entry for the same index.

use copycat_raft::{Entry, NodeId};

use super::{Check, Observer};

impl Observer {
    /// `node` applied `entry`.
    pub fn on_applied(&mut self, node: NodeId, entry: &Entry) -> Check {
        match self.committed.get(&entry.index) {
            Some((known, _)) if known != entry => Err(format!(
                "state machine safety: {node:?} applied {entry:?} at {:?}, another server applied {known:?}",
                entry.index
            )),
            Some(_) => Ok(()),
            None => {
                // Applied before any leader's commit was observed (a follower
                // learned the commit first): no commit term known yet.
                self.committed.insert(entry.index, (entry.clone(), copycat_raft::Term(u64::MAX)));
                Ok(())
            }
        }
    }
}
