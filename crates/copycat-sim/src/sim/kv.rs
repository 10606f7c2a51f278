//! The replicated state machine the simulator runs: a tiny key-value store
//! with write and compare-and-set, its commands tagged with the client
//! operation that issued them so the simulator can match results.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A command in a log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCommand {
    /// Client that issued it.
    pub client: u64,
    /// The client's operation number (unique per client).
    pub op: u64,
    /// What to do.
    pub action: KvAction,
}

/// A mutation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvAction {
    /// Set `key` to `value`.
    Write {
        /// Key.
        key: u8,
        /// New value.
        value: u64,
    },
    /// Set `key` to `new` if it holds `expected` (`None` = absent).
    Cas {
        /// Key.
        key: u8,
        /// Expected current value.
        expected: Option<u64>,
        /// New value.
        new: u64,
    },
}

impl KvCommand {
    /// Encode for a log entry.
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("encodable"))
    }

    /// Decode from a log entry.
    pub fn decode(data: &[u8]) -> Option<Self> {
        postcard::from_bytes(data).ok()
    }
}

/// The state: key to value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    /// Current values.
    pub values: BTreeMap<u8, u64>,
}

impl KvState {
    /// Apply a command; returns whether it took effect (a failed CAS did not).
    pub fn apply(&mut self, action: &KvAction) -> bool {
        match action {
            KvAction::Write { key, value } => {
                self.values.insert(*key, *value);
                true
            }
            KvAction::Cas { key, expected, new } => {
                if self.values.get(key).copied() == *expected {
                    self.values.insert(*key, *new);
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Snapshot image.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("encodable")
    }

    /// Restore from an image.
    pub fn decode(data: &[u8]) -> Option<Self> {
        if data.is_empty() {
            return Some(Self::default());
        }
        postcard::from_bytes(data).ok()
    }
}
