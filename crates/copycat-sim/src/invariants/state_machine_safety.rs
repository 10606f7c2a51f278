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

    /// `node`'s commit index moved from `from` to `commit`: every entry it
    /// holds in between is the entry known committed at that index (a
    /// direct check of the commit rules: a server must never count an entry
    /// as committed that differs from the committed one).
    pub fn on_node_commit<'a>(
        &mut self,
        node: NodeId,
        from: copycat_raft::LogIndex,
        commit: copycat_raft::LogIndex,
        entry: impl Fn(copycat_raft::LogIndex) -> Option<&'a Entry>,
    ) -> Check {
        let mut index = from.next();
        while index <= commit {
            if let Some(entry) = entry(index) {
                match self.committed.get(&index) {
                    Some((known, _)) if known != entry => {
                        return Err(format!(
                            "commit safety: {node:?} counts {entry:?} at {index:?} as committed, but {known:?} was committed there"
                        ));
                    }
                    Some(_) => {}
                    None => {
                        self.committed
                            .insert(index, (entry.clone(), copycat_raft::Term(u64::MAX)));
                    }
                }
            }
            index = index.next();
        }
        Ok(())
    }
}
