//! Snapshots restore to identical state: the replica (state machine, session
//! table, cached results, timers, retained events, clock) restored from a
//! snapshot has the same digest as the replica that took it, and every
//! snapshot at one index has one digest (replicas are deterministic).

use copycat_raft::{LogIndex, NodeId};

use super::{Check, Observer};

impl Observer {
    /// `node` took or restored a snapshot at `index` whose replica digest is
    /// `digest`.
    pub fn on_snapshot(&mut self, node: NodeId, index: LogIndex, digest: u32) -> Check {
        match self.snapshots.insert(index, digest) {
            Some(known) if known != digest => Err(format!(
                "snapshot identity: {node:?} has replica digest {digest:08x} at {index:?}, another server had {known:08x}"
            )),
            _ => Ok(()),
        }
    }
}
