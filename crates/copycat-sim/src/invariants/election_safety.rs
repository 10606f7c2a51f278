//! Election Safety (Raft §5.2, Figure 3): at most one leader can be elected
//! in a given term.

use copycat_raft::{NodeId, Term};

use super::{Check, Observer};

impl Observer {
    /// `node` reports that it leads `term`.
    pub fn on_leader(&mut self, node: NodeId, term: Term) -> Check {
        match self.leaders.insert(term, node) {
            Some(previous) if previous != node => Err(format!(
                "election safety: {previous:?} and {node:?} both lead term {term:?}"
            )),
            _ => Ok(()),
        }
    }

    /// Terms that had a leader, for reports.
    pub fn terms_with_leaders(&self) -> usize {
        self.leaders.len()
    }
}
