//! A replicated map of byte keys to byte values, with per-entry TTLs, paged
//! listings and add/update/remove/expire events, map-wide or per key.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use copycat_proto::SessionId;
use serde::{Deserialize, Serialize};

use crate::core::page_of;
use crate::{Ctx, Page, Resource, ResourceError};

/// Commands of a map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapCommand {
    /// Set `key` to `value` (expiring after `ttl_ms`); answers the previous
    /// value.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// Time to live in ms (at least 1), or forever.
        ttl_ms: Option<u64>,
    },
    /// Set `key` only if absent; answers the existing value (`None` if it
    /// was put).
    PutIfAbsent {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// Time to live in ms (at least 1), or forever.
        ttl_ms: Option<u64>,
    },
    /// Remove `key`; answers its value.
    Remove(Bytes),
    /// Remove `key` if its value is `value`; answers whether it did.
    RemoveIf {
        /// The key.
        key: Bytes,
        /// The value expected.
        value: Bytes,
    },
    /// Replace the value of a present key (keeping its expiry); answers the
    /// previous value (`None`: absent, nothing changed).
    Replace {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
    },
    /// Replace the value of `key` if it is `old` (keeping its expiry);
    /// answers whether it did.
    ReplaceIf {
        /// The key.
        key: Bytes,
        /// The value expected.
        old: Bytes,
        /// The new value.
        new: Bytes,
    },
    /// Remove every entry (a removed event each).
    Clear,
    /// Send the calling session events for `key`, or for every key.
    Listen(Option<Bytes>),
    /// Stop what [`MapCommand::Listen`] with the same argument started.
    Unlisten(Option<Bytes>),
}

/// Queries of a map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapQuery {
    /// The number of entries.
    Size,
    /// Whether there are none.
    IsEmpty,
    /// Whether `key` is present.
    ContainsKey(Bytes),
    /// Whether some key has this value.
    ContainsValue(Bytes),
    /// The value of a key.
    Get(Bytes),
    /// The value of a key, or `default`.
    GetOrDefault {
        /// The key.
        key: Bytes,
        /// The answer if it is absent.
        default: Bytes,
    },
    /// Keys in order, after `after`, at most `limit`.
    Keys {
        /// Start after this key.
        after: Option<Bytes>,
        /// Page size (at least 1).
        limit: u32,
    },
    /// Values in key order.
    Values {
        /// Start after this key.
        after: Option<Bytes>,
        /// Page size (at least 1).
        limit: u32,
    },
    /// Entries in key order.
    Entries {
        /// Start after this key.
        after: Option<Bytes>,
        /// Page size (at least 1).
        limit: u32,
    },
}

/// Answers of a map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapOutput {
    /// Done.
    Unit,
    /// A value, if any.
    Value(Option<Bytes>),
    /// A yes/no answer.
    Bool(bool),
    /// A count.
    Size(u64),
    /// A page of keys.
    Keys(Page<Bytes>),
    /// A page of values.
    Values(Page<Bytes>),
    /// A page of entries.
    Entries(Page<(Bytes, Bytes)>),
}

/// What happened to an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapEventKind {
    /// A new key.
    Added,
    /// A present key got a new value.
    Updated,
    /// A key was removed (or the map cleared).
    Removed,
    /// A key's TTL ran out.
    Expired,
}

/// An event of a map, sent to sessions listening to the whole map or to
/// the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapEvent {
    /// What happened.
    pub kind: MapEventKind,
    /// The key.
    pub key: Bytes,
    /// The value before (none for added).
    pub old: Option<Bytes>,
    /// The value after (none for removed and expired).
    pub new: Option<Bytes>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct MapEntry {
    value: Bytes,
    expires_at: Option<u64>,
}

/// The state of a map.
///
/// Invariant: `expiries` holds exactly `(expires_at, key)` of the entries
/// that have an expiry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapState {
    entries: imbl::OrdMap<Bytes, MapEntry>,
    expiries: imbl::OrdSet<(u64, Bytes)>,
    listen_all: BTreeSet<SessionId>,
    listen_keys: BTreeMap<Bytes, BTreeSet<SessionId>>,
}

impl MapState {
    fn notify(&self, ctx: &mut Ctx<'_, MapEvent>, event: MapEvent) {
        if self.listen_all.is_empty() && self.listen_keys.is_empty() {
            return;
        }
        let mut to: BTreeSet<SessionId> = self.listen_all.clone();
        if let Some(keyed) = self.listen_keys.get(&event.key) {
            to.extend(keyed.iter().copied());
        }
        for session in to {
            ctx.emit(session, event.clone());
        }
    }

    fn listeners(&self) -> usize {
        self.listen_all.len() + self.listen_keys.values().map(BTreeSet::len).sum::<usize>()
    }

    fn insert(
        &mut self,
        ctx: &mut Ctx<'_, MapEvent>,
        key: Bytes,
        value: Bytes,
        expires_at: Option<u64>,
    ) -> Option<Bytes> {
        // One walk down the tree: the entry replaced comes back.
        let previous = self.entries.insert(
            key.clone(),
            MapEntry {
                value: value.clone(),
                expires_at,
            },
        );
        let old = previous.map(|entry| {
            if let Some(at) = entry.expires_at {
                self.expiries.remove(&(at, key.clone()));
            }
            entry.value
        });
        if let Some(at) = expires_at {
            self.expiries.insert((at, key.clone()));
        }
        let kind = if old.is_some() {
            MapEventKind::Updated
        } else {
            MapEventKind::Added
        };
        self.notify(
            ctx,
            MapEvent {
                kind,
                key,
                old: old.clone(),
                new: Some(value),
            },
        );
        old
    }

    /// Remove an entry without telling anyone.
    fn take(&mut self, key: &Bytes) -> Option<Bytes> {
        let entry = self.entries.remove(key)?;
        if let Some(at) = entry.expires_at {
            self.expiries.remove(&(at, key.clone()));
        }
        Some(entry.value)
    }

    fn remove(
        &mut self,
        ctx: &mut Ctx<'_, MapEvent>,
        key: &Bytes,
        kind: MapEventKind,
    ) -> Option<Bytes> {
        let old = self.take(key)?;
        self.notify(
            ctx,
            MapEvent {
                kind,
                key: key.clone(),
                old: Some(old.clone()),
                new: None,
            },
        );
        Some(old)
    }

    fn check_put(
        &self,
        ctx: &Ctx<'_, MapEvent>,
        key: &Bytes,
        value: &Bytes,
    ) -> Result<(), ResourceError> {
        ctx.limits().check_value(key)?;
        ctx.limits().check_value(value)?;
        // Only a full map needs the lookup: replacing a key adds no entry.
        match ctx.limits().check_entries(self.entries.len()) {
            Err(error) if !self.entries.contains_key(key) => Err(error),
            _ => Ok(()),
        }
    }
}

impl Resource for MapState {
    type Command = MapCommand;
    type Query = MapQuery;
    type Output = MapOutput;
    type Event = MapEvent;

    fn apply(
        &mut self,
        ctx: &mut Ctx<'_, MapEvent>,
        command: MapCommand,
    ) -> Result<MapOutput, ResourceError> {
        Ok(match command {
            MapCommand::Put { key, value, ttl_ms } => {
                self.check_put(ctx, &key, &value)?;
                let expires_at = ctx.ttl_deadline(ttl_ms)?;
                MapOutput::Value(self.insert(ctx, key, value, expires_at))
            }
            MapCommand::PutIfAbsent { key, value, ttl_ms } => {
                if let Some(entry) = self.entries.get(&key) {
                    return Ok(MapOutput::Value(Some(entry.value.clone())));
                }
                self.check_put(ctx, &key, &value)?;
                let expires_at = ctx.ttl_deadline(ttl_ms)?;
                self.insert(ctx, key, value, expires_at);
                MapOutput::Value(None)
            }
            MapCommand::Remove(key) => {
                MapOutput::Value(self.remove(ctx, &key, MapEventKind::Removed))
            }
            MapCommand::RemoveIf { key, value } => {
                let matches = self.entries.get(&key).is_some_and(|e| e.value == value);
                if matches {
                    self.remove(ctx, &key, MapEventKind::Removed);
                }
                MapOutput::Bool(matches)
            }
            MapCommand::Replace { key, value } => match self.entries.get(&key) {
                Some(entry) => {
                    ctx.limits().check_value(&value)?;
                    let expires_at = entry.expires_at;
                    MapOutput::Value(self.insert(ctx, key, value, expires_at))
                }
                None => MapOutput::Value(None),
            },
            MapCommand::ReplaceIf { key, old, new } => match self.entries.get(&key) {
                Some(entry) if entry.value == old => {
                    ctx.limits().check_value(&new)?;
                    let expires_at = entry.expires_at;
                    self.insert(ctx, key, new, expires_at);
                    MapOutput::Bool(true)
                }
                _ => MapOutput::Bool(false),
            },
            MapCommand::Clear => {
                let keys: Vec<Bytes> = self.entries.keys().cloned().collect();
                for key in keys {
                    self.remove(ctx, &key, MapEventKind::Removed);
                }
                MapOutput::Unit
            }
            MapCommand::Listen(key) => {
                let session = ctx.caller()?;
                let listening = match &key {
                    None => self.listen_all.contains(&session),
                    Some(key) => self
                        .listen_keys
                        .get(key)
                        .is_some_and(|s| s.contains(&session)),
                };
                if !listening {
                    ctx.limits().check_waiters(self.listeners())?;
                    match key {
                        None => {
                            self.listen_all.insert(session);
                        }
                        Some(key) => {
                            ctx.limits().check_value(&key)?;
                            self.listen_keys.entry(key).or_default().insert(session);
                        }
                    }
                }
                MapOutput::Unit
            }
            MapCommand::Unlisten(key) => {
                let session = ctx.caller()?;
                match key {
                    None => {
                        self.listen_all.remove(&session);
                    }
                    Some(key) => {
                        if let Some(set) = self.listen_keys.get_mut(&key) {
                            set.remove(&session);
                            if set.is_empty() {
                                self.listen_keys.remove(&key);
                            }
                        }
                    }
                }
                MapOutput::Unit
            }
        })
    }

    fn query(&self, _session: SessionId, query: MapQuery) -> Result<MapOutput, ResourceError> {
        Ok(match query {
            MapQuery::Size => MapOutput::Size(self.entries.len() as u64),
            MapQuery::IsEmpty => MapOutput::Bool(self.entries.is_empty()),
            MapQuery::ContainsKey(key) => MapOutput::Bool(self.entries.contains_key(&key)),
            MapQuery::ContainsValue(value) => {
                MapOutput::Bool(self.entries.values().any(|e| e.value == value))
            }
            MapQuery::Get(key) => MapOutput::Value(self.entries.get(&key).map(|e| e.value.clone())),
            MapQuery::GetOrDefault { key, default } => MapOutput::Value(Some(
                self.entries
                    .get(&key)
                    .map(|e| e.value.clone())
                    .unwrap_or(default),
            )),
            MapQuery::Keys { after, limit } => MapOutput::Keys(page_of(
                &self.entries,
                after,
                limit,
                |k, _| k.len(),
                |k, _| k.clone(),
            )?),
            MapQuery::Values { after, limit } => MapOutput::Values(page_of(
                &self.entries,
                after,
                limit,
                |_, e| e.value.len(),
                |_, e| e.value.clone(),
            )?),
            MapQuery::Entries { after, limit } => MapOutput::Entries(page_of(
                &self.entries,
                after,
                limit,
                |k, e| k.len() + e.value.len(),
                |k, e| (k.clone(), e.value.clone()),
            )?),
        })
    }

    fn advance(&mut self, ctx: &mut Ctx<'_, MapEvent>) {
        while let Some((at, key)) = self.expiries.get_min().cloned() {
            if at > ctx.time_ms() {
                break;
            }
            self.remove(ctx, &key, MapEventKind::Expired);
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        self.expiries.get_min().map(|(at, _)| *at)
    }

    fn session_closed(&mut self, _ctx: &mut Ctx<'_, MapEvent>, session: SessionId) {
        self.listen_all.remove(&session);
        self.listen_keys.retain(|_, set| {
            set.remove(&session);
            !set.is_empty()
        });
    }

    fn sessions(&self) -> Vec<SessionId> {
        let mut all = self.listen_all.clone();
        for set in self.listen_keys.values() {
            all.extend(set.iter().copied());
        }
        all.into_iter().collect()
    }

    fn validate(&self, _fence: u64) -> Result<(), String> {
        let expected: imbl::OrdSet<(u64, Bytes)> = self
            .entries
            .iter()
            .filter_map(|(k, e)| e.expires_at.map(|at| (at, k.clone())))
            .collect();
        if expected != self.expiries {
            return Err("the expiry index does not match the entries".into());
        }
        if self.listen_keys.values().any(BTreeSet::is_empty) {
            return Err("a key has an empty listener set".into());
        }
        Ok(())
    }
}
