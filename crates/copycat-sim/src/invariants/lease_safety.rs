//! Lease safety (Raft thesis §6.4.1): a leader serves a read from its lease
//! only while no other server can have been elected. The simulator checks,
//! at the instant a leader relies on its lease, that no server leads a later
//! term.

use copycat_raft::{NodeId, Term};

use super::{Check, Observer};

impl Observer {
    /// `node`, leader of `term`, answers a read from its lease while
    /// `leaders` (every server that believes it leads, with its term) lead.
    pub fn check_lease(&self, node: NodeId, term: Term, leaders: &[(NodeId, Term)]) -> Check {
        match leaders.iter().find(|(_, other)| *other > term) {
            Some((other, other_term)) => Err(format!(
                "lease safety: {node:?} serves a lease read in {term:?} while {other:?} leads {other_term:?}"
            )),
            None => Ok(()),
        }
    }
}
