//! A replicated multimap: each key holds a set of values (no duplicates),
//! ordered naturally (by bytes) or by insertion as chosen when the multimap
//! is created, each pair with an optional TTL.

use std::collections::BTreeSet;

use bytes::Bytes;
use copycat_proto::SessionId;
use serde::{Deserialize, Serialize};

use crate::{Ctx, Resource, ResourceError, ValueOrder};

/// Commands of a multimap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MultiMapCommand {
    /// Add `value` under `key` (expiring after `ttl_ms`); answers whether
    /// the pair is new. Putting a present pair only sets its TTL.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// Time to live in ms (at least 1), or forever.
        ttl_ms: Option<u64>,
    },
    /// Remove a key; answers its values.
    Remove(Bytes),
    /// Remove one pair; answers whether it was present.
    RemoveEntry {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Remove a value from every key; answers whether any held it.
    RemoveValue(Bytes),
    /// Remove everything.
    Clear,
}

/// Queries of a multimap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MultiMapQuery {
    /// The number of pairs.
    Size,
    /// The number of values under a key.
    SizeOf(Bytes),
    /// Whether a key has values.
    ContainsKey(Bytes),
    /// Whether a pair is present.
    ContainsEntry {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Whether any key holds the value.
    ContainsValue(Bytes),
    /// The values under a key, in the multimap's order.
    Get(Bytes),
}

/// Answers of a multimap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MultiMapOutput {
    /// Done.
    Unit,
    /// A yes/no answer.
    Bool(bool),
    /// A count.
    Size(u64),
    /// Values, in order.
    Values(Vec<Bytes>),
}

/// A multimap sends no events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MultiMapEvent {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Pair {
    value: Bytes,
    expires_at: Option<u64>,
}

/// The state of a multimap.
///
/// Invariants: no key has an empty or duplicated value list; with natural
/// order each list is sorted; `expiries` holds exactly the pairs with an
/// expiry; `size` is the number of pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiMapState {
    order: ValueOrder,
    entries: imbl::OrdMap<Bytes, Vec<Pair>>,
    expiries: BTreeSet<(u64, Bytes, Bytes)>,
    size: usize,
}

impl MultiMapState {
    /// An empty multimap with the given value order.
    pub fn new(order: ValueOrder) -> Self {
        Self {
            order,
            ..Self::default()
        }
    }

    fn remove_pair(&mut self, key: &Bytes, value: &Bytes) -> bool {
        let Some(values) = self.entries.get_mut(key) else {
            return false;
        };
        let Some(at) = values.iter().position(|p| p.value == *value) else {
            return false;
        };
        let pair = values.remove(at);
        if values.is_empty() {
            self.entries.remove(key);
        }
        if let Some(t) = pair.expires_at {
            self.expiries.remove(&(t, key.clone(), value.clone()));
        }
        self.size -= 1;
        true
    }
}

impl Resource for MultiMapState {
    type Command = MultiMapCommand;
    type Query = MultiMapQuery;
    type Output = MultiMapOutput;
    type Event = MultiMapEvent;

    fn apply(
        &mut self,
        ctx: &mut Ctx<'_, Self::Event>,
        command: MultiMapCommand,
    ) -> Result<MultiMapOutput, ResourceError> {
        Ok(match command {
            MultiMapCommand::Put { key, value, ttl_ms } => {
                ctx.limits().check_value(&key)?;
                ctx.limits().check_value(&value)?;
                let expires_at = ctx.ttl_deadline(ttl_ms)?;
                if let Some(pair) = self
                    .entries
                    .get_mut(&key)
                    .and_then(|values| values.iter_mut().find(|p| p.value == value))
                {
                    if let Some(t) = pair.expires_at {
                        self.expiries.remove(&(t, key.clone(), value.clone()));
                    }
                    pair.expires_at = expires_at;
                    if let Some(t) = expires_at {
                        self.expiries.insert((t, key, value));
                    }
                    return Ok(MultiMapOutput::Bool(false));
                }
                ctx.limits().check_entries(self.size)?;
                let values = self.entries.entry(key.clone()).or_default();
                let pair = Pair {
                    value: value.clone(),
                    expires_at,
                };
                match self.order {
                    ValueOrder::Insertion => values.push(pair),
                    ValueOrder::Natural => {
                        let at = values.partition_point(|p| p.value < value);
                        values.insert(at, pair);
                    }
                }
                if let Some(t) = expires_at {
                    self.expiries.insert((t, key, value));
                }
                self.size += 1;
                MultiMapOutput::Bool(true)
            }
            MultiMapCommand::Remove(key) => {
                let values = self.entries.get(&key).cloned().unwrap_or_default();
                for pair in &values {
                    self.remove_pair(&key, &pair.value);
                }
                MultiMapOutput::Values(values.into_iter().map(|p| p.value).collect())
            }
            MultiMapCommand::RemoveEntry { key, value } => {
                MultiMapOutput::Bool(self.remove_pair(&key, &value))
            }
            MultiMapCommand::RemoveValue(value) => {
                let keys: Vec<Bytes> = self
                    .entries
                    .iter()
                    .filter(|(_, values)| values.iter().any(|p| p.value == value))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in &keys {
                    self.remove_pair(key, &value);
                }
                MultiMapOutput::Bool(!keys.is_empty())
            }
            MultiMapCommand::Clear => {
                self.entries.clear();
                self.expiries.clear();
                self.size = 0;
                MultiMapOutput::Unit
            }
        })
    }

    fn query(
        &self,
        _session: SessionId,
        query: MultiMapQuery,
    ) -> Result<MultiMapOutput, ResourceError> {
        let has = |key: &Bytes, value: &Bytes| {
            self.entries
                .get(key)
                .is_some_and(|values| values.iter().any(|p| p.value == *value))
        };
        Ok(match query {
            MultiMapQuery::Size => MultiMapOutput::Size(self.size as u64),
            MultiMapQuery::SizeOf(key) => {
                MultiMapOutput::Size(self.entries.get(&key).map_or(0, Vec::len) as u64)
            }
            MultiMapQuery::ContainsKey(key) => {
                MultiMapOutput::Bool(self.entries.contains_key(&key))
            }
            MultiMapQuery::ContainsEntry { key, value } => MultiMapOutput::Bool(has(&key, &value)),
            MultiMapQuery::ContainsValue(value) => MultiMapOutput::Bool(
                self.entries
                    .values()
                    .any(|values| values.iter().any(|p| p.value == value)),
            ),
            MultiMapQuery::Get(key) => MultiMapOutput::Values(
                self.entries
                    .get(&key)
                    .map(|values| values.iter().map(|p| p.value.clone()).collect())
                    .unwrap_or_default(),
            ),
        })
    }

    fn advance(&mut self, ctx: &mut Ctx<'_, Self::Event>) {
        while let Some((t, key, value)) = self.expiries.first().cloned() {
            if t > ctx.time_ms() {
                break;
            }
            self.remove_pair(&key, &value);
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        self.expiries.first().map(|(t, _, _)| *t)
    }

    fn session_closed(&mut self, _ctx: &mut Ctx<'_, Self::Event>, _session: SessionId) {}

    fn sessions(&self) -> Vec<SessionId> {
        Vec::new()
    }

    fn validate(&self, _fence: u64) -> Result<(), String> {
        let mut size = 0;
        let mut expiries = BTreeSet::new();
        for (key, values) in &self.entries {
            if values.is_empty() {
                return Err("a key with no values".into());
            }
            let distinct: BTreeSet<&Bytes> = values.iter().map(|p| &p.value).collect();
            if distinct.len() != values.len() {
                return Err("a key holds a value twice".into());
            }
            if self.order == ValueOrder::Natural
                && !values.windows(2).all(|w| w[0].value < w[1].value)
            {
                return Err("values out of natural order".into());
            }
            for pair in values {
                if let Some(t) = pair.expires_at {
                    expiries.insert((t, key.clone(), pair.value.clone()));
                }
            }
            size += values.len();
        }
        if size != self.size {
            return Err(format!("size {} but {size} pairs", self.size));
        }
        if expiries != self.expiries {
            return Err("the expiry index does not match the pairs".into());
        }
        Ok(())
    }
}
