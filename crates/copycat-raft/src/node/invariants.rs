//! Internal consistency checks, run after every input in tests and in the
//! simulator.
//!
//! They restate, per server, what Raft's safety argument relies on (Figure 3
//! and §5.4): the log never holds an entry from a future term, a leader voted
//! for itself and tracks exactly the members of its configuration, and (thesis
//! §6.4.1) a lease never outlasts the send time of the round that earned it
//! plus the lease length. Cross-server properties (election safety, log
//! matching, state machine safety) are checked by the test harness.

use super::{RawNode, RoleState};

impl RawNode {
    /// Check every internal invariant; panics on violation. Cheap enough to
    /// call after every step in tests and simulation.
    pub fn invariants(&self) {
        let core = &self.core;
        let id = core.config.id;
        core.log.invariants();
        assert!(
            core.log.latest_config().1.is_well_formed(),
            "the configuration is not well formed"
        );
        if let Some(last) = core.log.entry(core.log.last_index()) {
            assert!(
                last.term <= core.hard_state.term,
                "log has an entry from a future term"
            );
        }
        match &self.role {
            RoleState::Leader(state) => {
                assert_eq!(core.hard_state.vote, Some(id), "leader voted for itself");
                for (peer, progress) in &state.progress {
                    assert_ne!(*peer, id, "leader tracks no progress for itself");
                    progress.invariants(core.config.max_inflight_appends);
                    assert!(
                        progress.match_index <= core.log.last_index(),
                        "follower matches beyond our log"
                    );
                }
                state.reads.invariants(core);
                let members = &core.log.latest_config().1.members;
                assert!(
                    state.progress.keys().all(|peer| members.contains_key(peer)),
                    "progress for a non-member"
                );
            }
            RoleState::Candidate { votes } => {
                assert_eq!(core.hard_state.vote, Some(id), "candidate voted for itself");
                assert_eq!(votes.get(&id), Some(&true), "candidate counts its own vote");
            }
            RoleState::PreCandidate { votes } => {
                assert_eq!(votes.get(&id), Some(&true), "pre-candidate counts itself");
            }
            RoleState::Follower { leader } => {
                assert_ne!(*leader, Some(id), "a follower does not follow itself");
            }
        }
    }
}
