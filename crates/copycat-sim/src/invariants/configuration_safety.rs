//! Configuration safety (Raft thesis §4.1): membership changes one server at
//! a time, so a leader's log never holds more than one configuration entry
//! that is not committed (anywhere in the cluster), and consecutive
//! configurations differ in at most one voter.

use copycat_raft::{Configuration, Entry, EntryPayload, LogIndex, NodeId};

use super::{Check, Observer};

impl Observer {
    /// Check a leader's log from its commit index to its end. Entries the
    /// observer knows to be committed (by any leader) do not count as
    /// pending; a restarted leader may not know its own commit index yet.
    pub fn check_configuration_safety<'a>(
        &self,
        node: NodeId,
        commit: LogIndex,
        committed_config: &Configuration,
        uncommitted: impl Iterator<Item = &'a Entry>,
    ) -> Check {
        let mut pending = 0;
        let mut previous = committed_config.clone();
        for entry in uncommitted {
            if entry.index <= commit {
                continue;
            }
            if let EntryPayload::Config(config) = &entry.payload {
                if self.committed.contains_key(&entry.index) {
                    previous = config.clone();
                    continue;
                }
                pending += 1;
                if pending > 1 {
                    return Err(format!(
                        "configuration safety: leader {node:?} has more than one uncommitted configuration (second at {:?})",
                        entry.index
                    ));
                }
                let before: Vec<NodeId> = previous.voters().collect();
                let after: Vec<NodeId> = config.voters().collect();
                let changed = before.iter().filter(|id| !after.contains(id)).count()
                    + after.iter().filter(|id| !before.contains(id)).count();
                if changed > 1 {
                    return Err(format!(
                        "configuration safety: leader {node:?} changed {changed} voters at once at {:?}",
                        entry.index
                    ));
                }
                previous = config.clone();
            }
        }
        Ok(())
    }
}
