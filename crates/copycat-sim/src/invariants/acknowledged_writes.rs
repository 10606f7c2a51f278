//! No acknowledged write is lost: an operation a client was told succeeded
//! is a committed entry, and stays the committed entry at that index for the
//! rest of the run (through crashes, restarts and leader changes).

use copycat_raft::{EntryPayload, LogIndex};

use super::{Check, Observer};
use crate::sim::kv::KvCommand;

impl Observer {
    /// A client was told its operation `(client, op)` was applied at `index`.
    pub fn on_acknowledged(&mut self, client: u64, op: u64, index: LogIndex) -> Check {
        self.acknowledged.insert((client, op), index);
        self.check_acknowledged(client, op, index)
    }

    fn check_acknowledged(&self, client: u64, op: u64, index: LogIndex) -> Check {
        let Some((entry, _)) = self.committed.get(&index) else {
            return Err(format!(
                "acknowledged write ({client}, {op}) at {index:?} is not committed"
            ));
        };
        let matches = match &entry.payload {
            EntryPayload::Command(data) => {
                KvCommand::decode(data).is_some_and(|c| c.client == client && c.op == op)
            }
            _ => false,
        };
        if matches {
            Ok(())
        } else {
            Err(format!("acknowledged write ({client}, {op}) at {index:?} is not the committed entry {entry:?}"))
        }
    }

    /// Re-check every acknowledgement (at the end of a run).
    pub fn check_all_acknowledged(&self) -> Check {
        for ((client, op), index) in &self.acknowledged {
            self.check_acknowledged(*client, *op, *index)?;
        }
        Ok(())
    }
}
