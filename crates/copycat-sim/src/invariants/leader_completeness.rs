//! Leader Completeness (Raft §5.4, Figure 3): if a log entry is committed in
//! a given term, that entry is present in the logs of the leaders of all
//! higher-numbered terms.
//!
//! The observer records, for every committed entry, the lowest term of a
//! leader seen to have committed it. When a server becomes leader of term
//! `t`, every entry committed in a term below `t` (and not compacted into its
//! snapshot) must be in its log, identical.

use copycat_raft::{Entry, LogIndex, NodeId, Term};

use super::{Check, Observer};

impl Observer {
    /// The leader of `term` advanced its commit index to `commit`; `entry`
    /// gives its log's entry at an index.
    pub fn on_leader_commit<'a>(
        &mut self,
        node: NodeId,
        term: Term,
        from: LogIndex,
        commit: LogIndex,
        entry: impl Fn(LogIndex) -> Option<&'a Entry>,
    ) -> Check {
        let mut index = from.next();
        while index <= commit {
            let Some(entry) = entry(index) else {
                index = index.next();
                continue;
            };
            match self.committed.get_mut(&index) {
                Some((known, commit_term)) => {
                    if known != entry {
                        return Err(format!(
                            "state machine safety: leader {node:?} committed {entry:?} at {index:?}, but {known:?} was committed there"
                        ));
                    }
                    *commit_term = (*commit_term).min(term);
                }
                None => {
                    self.committed.insert(index, (entry.clone(), term));
                }
            }
            index = index.next();
        }
        Ok(())
    }

    /// `node` just became leader of `term`. `snapshot` is its snapshot index
    /// and `entry` reads its log.
    pub fn check_leader_completeness<'a>(
        &self,
        node: NodeId,
        term: Term,
        snapshot: LogIndex,
        entry: impl Fn(LogIndex) -> Option<&'a Entry>,
    ) -> Check {
        for (index, (committed, commit_term)) in self.committed.range(snapshot.next()..) {
            if *commit_term >= term {
                continue;
            }
            match entry(*index) {
                Some(held) if held == committed => {}
                held => {
                    return Err(format!(
                        "leader completeness: {node:?} leads {term:?} but holds {held:?} at {index:?}, \
                         where {committed:?} was committed in {commit_term:?}"
                    ))
                }
            }
        }
        Ok(())
    }
}
