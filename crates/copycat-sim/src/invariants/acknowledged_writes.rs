//! No acknowledged write is lost: an operation a client was told succeeded
//! is a committed entry, and stays committed for the rest of the run
//! (through crashes, restarts and leader changes).

use std::collections::BTreeSet;

use copycat_proto::{LogBody, LogCommand};
use copycat_raft::EntryPayload;

use super::{Check, Observer};
use crate::sim::kv::KvCommand;

impl Observer {
    /// A client was told its operation `(client, op)` took effect.
    pub fn on_acknowledged(&mut self, client: u64, op: u64) {
        self.acknowledged.insert((client, op));
    }

    /// Every acknowledged operation is in a committed entry (at the end of a
    /// run, after the cluster converged).
    pub fn check_all_acknowledged(&self) -> Check {
        let mut committed: BTreeSet<(u64, u64)> = BTreeSet::new();
        for (entry, _) in self.committed.values() {
            let EntryPayload::Command(data) = &entry.payload else {
                continue;
            };
            let Ok(LogCommand {
                body: LogBody::Command { payload, .. },
                ..
            }) = LogCommand::decode(data)
            else {
                continue;
            };
            if let Ok(command) = copycat_replica::codec::decode::<KvCommand>(&payload) {
                committed.insert((command.client, command.op));
            }
        }
        match self.acknowledged.iter().find(|op| !committed.contains(op)) {
            Some((client, op)) => Err(format!(
                "acknowledged write ({client}, {op}) is not in any committed entry"
            )),
            None => Ok(()),
        }
    }
}
