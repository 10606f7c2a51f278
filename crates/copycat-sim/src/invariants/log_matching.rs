//! Log Matching (Raft §5.3, Figure 3): if two logs contain an entry with the
//! same index and term, the logs are identical in all entries up through that
//! index.
//!
//! Checked incrementally: every entry written to any log is recorded under
//! its `(index, term)` with its digest and the term of the entry before it.
//! Two entries with the same `(index, term)` must agree on both; by induction
//! on the index, the whole prefixes agree.

use copycat_raft::{Entry, NodeId, Term};

use super::{entry_digest, Check, Observer};

impl Observer {
    /// `node` wrote `entry` to its log, following an entry of term `previous`
    /// (`None` when that entry is compacted away and unknown).
    pub fn on_written(&mut self, node: NodeId, entry: &Entry, previous: Option<Term>) -> Check {
        let digest = entry_digest(entry);
        let key = (entry.index, entry.term);
        match self.written.get_mut(&key) {
            None => {
                self.written.insert(key, (digest, previous));
                Ok(())
            }
            Some((known_digest, known_previous)) => {
                if *known_digest != digest {
                    return Err(format!(
                        "log matching: {node:?} wrote a different entry at {:?} term {:?}",
                        entry.index, entry.term
                    ));
                }
                match (*known_previous, previous) {
                    (Some(a), Some(b)) if a != b => Err(format!(
                        "log matching: {node:?} has term {b:?} before {:?}/{:?}, another log has {a:?}",
                        entry.index, entry.term
                    )),
                    (None, Some(b)) => {
                        *known_previous = Some(b);
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}
