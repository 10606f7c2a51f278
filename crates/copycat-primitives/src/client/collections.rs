//! Handles on the data resources: values, counters, maps, multimaps, sets,
//! queues and topics. Values are encoded with postcard.

use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use copycat_client::Consistency;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{
    decode, encode, millis, unexpected, Base, NearCache, Primitives, Result, Subscription, Typed,
    Undo, Waited,
};
use crate::long::{LongCommand, LongEvent, LongOutput, LongQuery};
use crate::map::{MapCommand, MapEvent, MapEventKind, MapOutput, MapQuery};
use crate::multimap::{MultiMapCommand, MultiMapOutput, MultiMapQuery};
use crate::queue::{QueueCommand, QueueEvent, QueueOutput, QueueQuery};
use crate::set::{SetCommand, SetEvent, SetOutput, SetQuery};
use crate::topic::{TopicCommand, TopicEvent, TopicOutput, TopicQuery};
use crate::value::{ValueCommand, ValueEvent, ValueOutput, ValueQuery};
use crate::{Command, Event, Output, Query, Spec, ValueOrder};

fn opt<T: DeserializeOwned>(bytes: Option<Bytes>) -> Result<Option<T>> {
    bytes.map(|b| decode(&b)).transpose()
}

/// Page size the handles read listings in.
const PAGE: u32 = 256;

macro_rules! handle_common {
    ($name:ident) => {
        impl<T> $name<T> {
            /// This handle reading at `consistency` (linearizable by
            /// default, or the client's default).
            pub fn with_consistency(&self, consistency: Consistency) -> Self {
                let mut base = self.base.clone();
                base.consistency = Some(consistency);
                Self {
                    base,
                    _t: PhantomData,
                }
            }

            /// The resource's name.
            pub fn name(&self) -> &str {
                &self.base.name
            }
        }

        impl<T> Clone for $name<T> {
            fn clone(&self) -> Self {
                Self {
                    base: self.base.clone(),
                    _t: PhantomData,
                }
            }
        }
    };
}

// ------------------------------------------------------------------ value

/// A replicated value of type `T` ([`crate::value`]).
pub struct Value<T> {
    base: Base,
    _t: Typed<T>,
}
handle_common!(Value);

/// A change of a [`Value`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueChange<T> {
    /// Before.
    pub old: Option<T>,
    /// After.
    pub new: Option<T>,
    /// Whether its TTL ran out.
    pub expired: bool,
}

impl<T: Serialize + DeserializeOwned> Value<T> {
    /// Get or create the value `name`.
    pub async fn open(primitives: &Primitives, name: &str) -> Result<Self> {
        Ok(Self {
            base: Base::open(primitives, name, Spec::Value).await?,
            _t: PhantomData,
        })
    }

    async fn run(&self, command: ValueCommand) -> Result<ValueOutput> {
        let name = self.base.name.clone();
        match self.base.command(Command::Value { name, command }).await? {
            Output::Value(out) => Ok(out),
            other => unexpected(other),
        }
    }

    /// The value.
    pub async fn get(&self) -> Result<Option<T>> {
        let query = Query::Value {
            name: self.base.name.clone(),
            query: ValueQuery::Get,
        };
        match self.base.query(query).await? {
            Output::Value(ValueOutput::Value(v)) => opt(v),
            other => unexpected(other),
        }
    }

    /// Set it (forever).
    pub async fn set(&self, value: &T) -> Result<()> {
        self.set_ttl(Some(value), None).await
    }

    /// Set it, expiring after `ttl` (by the cluster's log clock).
    pub async fn set_with_ttl(&self, value: &T, ttl: Duration) -> Result<()> {
        self.set_ttl(Some(value), Some(ttl)).await
    }

    /// Unset it.
    pub async fn clear(&self) -> Result<()> {
        self.set_ttl(None, None).await
    }

    async fn set_ttl(&self, value: Option<&T>, ttl: Option<Duration>) -> Result<()> {
        let command = ValueCommand::Set {
            value: value.map(encode),
            ttl_ms: ttl.map(millis),
        };
        match self.run(command).await? {
            ValueOutput::Unit => Ok(()),
            other => unexpected(other),
        }
    }

    /// Set it and answer the previous value.
    pub async fn get_and_set(&self, value: &T) -> Result<Option<T>> {
        let command = ValueCommand::GetAndSet {
            value: Some(encode(value)),
            ttl_ms: None,
        };
        match self.run(command).await? {
            ValueOutput::Value(v) => opt(v),
            other => unexpected(other),
        }
    }

    /// Set it to `update` if it is `expect` (`None`: unset); answers
    /// whether it did.
    pub async fn compare_and_set(&self, expect: Option<&T>, update: Option<&T>) -> Result<bool> {
        let command = ValueCommand::CompareAndSet {
            expect: expect.map(encode),
            update: update.map(encode),
            ttl_ms: None,
        };
        match self.run(command).await? {
            ValueOutput::Bool(b) => Ok(b),
            other => unexpected(other),
        }
    }

    /// Its changes from now on.
    pub async fn listen(&self) -> Result<Subscription<ValueChange<T>>> {
        let name = &self.base.name;
        let command = |command| Command::Value {
            name: name.clone(),
            command,
        };
        self.base
            .primitives
            .subscribe(
                name,
                Some(command(ValueCommand::Listen)),
                Some(command(ValueCommand::Unlisten)),
                Box::new(|e| matches!(e, Event::Value(_))),
                |event| match event {
                    Event::Value(ValueEvent::Changed { old, new, expired }) => Some((|| {
                        Ok(ValueChange {
                            old: opt(old)?,
                            new: opt(new)?,
                            expired,
                        })
                    })(
                    )),
                    _ => None,
                },
            )
            .await
    }
}

// ------------------------------------------------------------------ long

/// A replicated 64-bit counter ([`crate::long`]). Overflow is an error.
#[derive(Clone)]
pub struct Long {
    base: Base,
}

impl Long {
    /// Get or create the counter `name`.
    pub async fn open(primitives: &Primitives, name: &str) -> Result<Self> {
        Ok(Self {
            base: Base::open(primitives, name, Spec::Long).await?,
        })
    }

    /// This handle reading at `consistency`.
    pub fn with_consistency(&self, consistency: Consistency) -> Self {
        let mut base = self.base.clone();
        base.consistency = Some(consistency);
        Self { base }
    }

    async fn run(&self, command: LongCommand) -> Result<LongOutput> {
        let name = self.base.name.clone();
        match self.base.command(Command::Long { name, command }).await? {
            Output::Long(out) => Ok(out),
            other => unexpected(other),
        }
    }

    async fn value(&self, command: LongCommand) -> Result<i64> {
        match self.run(command).await? {
            LongOutput::Value(v) => Ok(v),
            other => unexpected(other),
        }
    }

    /// The value.
    pub async fn get(&self) -> Result<i64> {
        let query = Query::Long {
            name: self.base.name.clone(),
            query: LongQuery::Get,
        };
        match self.base.query(query).await? {
            Output::Long(LongOutput::Value(v)) => Ok(v),
            other => unexpected(other),
        }
    }

    /// Set the value.
    pub async fn set(&self, value: i64) -> Result<()> {
        match self.run(LongCommand::Set(value)).await? {
            LongOutput::Unit => Ok(()),
            other => unexpected(other),
        }
    }

    /// Set and answer the previous value.
    pub async fn get_and_set(&self, value: i64) -> Result<i64> {
        self.value(LongCommand::GetAndSet(value)).await
    }

    /// Set to `update` if the value is `expect`; answers whether it did.
    pub async fn compare_and_set(&self, expect: i64, update: i64) -> Result<bool> {
        match self
            .run(LongCommand::CompareAndSet { expect, update })
            .await?
        {
            LongOutput::Bool(b) => Ok(b),
            other => unexpected(other),
        }
    }

    /// Add and answer the new value.
    pub async fn add_and_get(&self, delta: i64) -> Result<i64> {
        self.value(LongCommand::AddAndGet(delta)).await
    }

    /// Add and answer the previous value.
    pub async fn get_and_add(&self, delta: i64) -> Result<i64> {
        self.value(LongCommand::GetAndAdd(delta)).await
    }

    /// Add one and answer the new value.
    pub async fn increment_and_get(&self) -> Result<i64> {
        self.add_and_get(1).await
    }

    /// Subtract one and answer the new value.
    pub async fn decrement_and_get(&self) -> Result<i64> {
        self.add_and_get(-1).await
    }

    /// Add one and answer the previous value.
    pub async fn get_and_increment(&self) -> Result<i64> {
        self.get_and_add(1).await
    }

    /// Subtract one and answer the previous value.
    pub async fn get_and_decrement(&self) -> Result<i64> {
        self.get_and_add(-1).await
    }

    /// Its changes (old, new) from now on.
    pub async fn listen(&self) -> Result<Subscription<(i64, i64)>> {
        let name = &self.base.name;
        let command = |command| Command::Long {
            name: name.clone(),
            command,
        };
        self.base
            .primitives
            .subscribe(
                name,
                Some(command(LongCommand::Listen)),
                Some(command(LongCommand::Unlisten)),
                Box::new(|e| matches!(e, Event::Long(_))),
                |event| match event {
                    Event::Long(LongEvent::Changed { old, new }) => Some(Ok((old, new))),
                    _ => None,
                },
            )
            .await
    }
}

// ------------------------------------------------------------------ map

/// A replicated map from `K` to `V` ([`crate::map`]). Keys are ordered by
/// their encoded bytes.
pub struct Map<K, V> {
    base: Base,
    _t: Typed<(K, V)>,
}

impl<K, V> Clone for Map<K, V> {
    fn clone(&self) -> Self {
        Self {
            base: self.base.clone(),
            _t: PhantomData,
        }
    }
}

/// A change of a [`Map`] entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapChange<K, V> {
    /// What happened.
    pub kind: MapEventKind,
    /// The key.
    pub key: K,
    /// Its value before.
    pub old: Option<V>,
    /// Its value after.
    pub new: Option<V>,
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> Map<K, V> {
    /// Get or create the map `name`.
    pub async fn open(primitives: &Primitives, name: &str) -> Result<Self> {
        Ok(Self {
            base: Base::open(primitives, name, Spec::Map).await?,
            _t: PhantomData,
        })
    }

    /// This handle reading at `consistency`.
    pub fn with_consistency(&self, consistency: Consistency) -> Self {
        let mut base = self.base.clone();
        base.consistency = Some(consistency);
        Self {
            base,
            _t: PhantomData,
        }
    }

    async fn run(&self, command: MapCommand) -> Result<MapOutput> {
        let name = self.base.name.clone();
        match self.base.command(Command::Map { name, command }).await? {
            Output::Map(out) => Ok(out),
            other => unexpected(other),
        }
    }

    async fn ask(&self, query: MapQuery) -> Result<MapOutput> {
        let name = self.base.name.clone();
        match self.base.query(Query::Map { name, query }).await? {
            Output::Map(out) => Ok(out),
            other => unexpected(other),
        }
    }

    async fn previous(&self, command: MapCommand) -> Result<Option<V>> {
        match self.run(command).await? {
            MapOutput::Value(v) => opt(v),
            other => unexpected(other),
        }
    }

    async fn yes(&self, command: MapCommand) -> Result<bool> {
        match self.run(command).await? {
            MapOutput::Bool(b) => Ok(b),
            other => unexpected(other),
        }
    }

    async fn ask_yes(&self, query: MapQuery) -> Result<bool> {
        match self.ask(query).await? {
            MapOutput::Bool(b) => Ok(b),
            other => unexpected(other),
        }
    }

    /// Put; answers the previous value.
    pub async fn put(&self, key: &K, value: &V) -> Result<Option<V>> {
        self.put_ttl(key, value, None).await
    }

    /// Put, expiring after `ttl`; answers the previous value.
    pub async fn put_with_ttl(&self, key: &K, value: &V, ttl: Duration) -> Result<Option<V>> {
        self.put_ttl(key, value, Some(ttl)).await
    }

    async fn put_ttl(&self, key: &K, value: &V, ttl: Option<Duration>) -> Result<Option<V>> {
        self.previous(MapCommand::Put {
            key: encode(key),
            value: encode(value),
            ttl_ms: ttl.map(millis),
        })
        .await
    }

    /// Put if absent; answers the existing value (`None`: it was put).
    pub async fn put_if_absent(&self, key: &K, value: &V) -> Result<Option<V>> {
        self.previous(MapCommand::PutIfAbsent {
            key: encode(key),
            value: encode(value),
            ttl_ms: None,
        })
        .await
    }

    /// Remove a key; answers its value.
    pub async fn remove(&self, key: &K) -> Result<Option<V>> {
        self.previous(MapCommand::Remove(encode(key))).await
    }

    /// Remove a key if its value is `value`; answers whether it did.
    pub async fn remove_if(&self, key: &K, value: &V) -> Result<bool> {
        self.yes(MapCommand::RemoveIf {
            key: encode(key),
            value: encode(value),
        })
        .await
    }

    /// Replace a present key's value; answers the previous value.
    pub async fn replace(&self, key: &K, value: &V) -> Result<Option<V>> {
        self.previous(MapCommand::Replace {
            key: encode(key),
            value: encode(value),
        })
        .await
    }

    /// Replace a key's value if it is `old`; answers whether it did.
    pub async fn replace_if(&self, key: &K, old: &V, new: &V) -> Result<bool> {
        self.yes(MapCommand::ReplaceIf {
            key: encode(key),
            old: encode(old),
            new: encode(new),
        })
        .await
    }

    /// Remove every entry.
    pub async fn clear(&self) -> Result<()> {
        match self.run(MapCommand::Clear).await? {
            MapOutput::Unit => Ok(()),
            other => unexpected(other),
        }
    }

    /// A key's value.
    pub async fn get(&self, key: &K) -> Result<Option<V>> {
        match self.ask(MapQuery::Get(encode(key))).await? {
            MapOutput::Value(v) => opt(v),
            other => unexpected(other),
        }
    }

    /// A key's value, or `default`.
    pub async fn get_or_default(&self, key: &K, default: V) -> Result<V> {
        Ok(self.get(key).await?.unwrap_or(default))
    }

    /// The number of entries.
    pub async fn size(&self) -> Result<u64> {
        match self.ask(MapQuery::Size).await? {
            MapOutput::Size(n) => Ok(n),
            other => unexpected(other),
        }
    }

    /// Whether it is empty.
    pub async fn is_empty(&self) -> Result<bool> {
        self.ask_yes(MapQuery::IsEmpty).await
    }

    /// Whether `key` is present.
    pub async fn contains_key(&self, key: &K) -> Result<bool> {
        self.ask_yes(MapQuery::ContainsKey(encode(key))).await
    }

    /// Whether some key has `value`.
    pub async fn contains_value(&self, value: &V) -> Result<bool> {
        self.ask_yes(MapQuery::ContainsValue(encode(value))).await
    }

    /// Every entry, in key order (read page by page; each page is one
    /// read, so a map changing meanwhile may be seen across changes).
    pub async fn entries(&self) -> Result<Vec<(K, V)>> {
        self.raw_entries()
            .await?
            .into_iter()
            .map(|(k, v)| Ok((decode(&k)?, decode(&v)?)))
            .collect()
    }

    /// [`entries`](Self::entries), still encoded.
    async fn raw_entries(&self) -> Result<Vec<(Bytes, Bytes)>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            match self
                .ask(MapQuery::Entries {
                    after: after.take(),
                    limit: PAGE,
                })
                .await?
            {
                MapOutput::Entries(page) => {
                    all.extend(page.items);
                    match page.next {
                        Some(next) => after = Some(next),
                        None => return Ok(all),
                    }
                }
                other => return unexpected(other),
            }
        }
    }

    /// Every key, in order.
    pub async fn keys(&self) -> Result<Vec<K>> {
        Ok(self.entries().await?.into_iter().map(|(k, _)| k).collect())
    }

    /// Every value, in key order.
    pub async fn values(&self) -> Result<Vec<V>> {
        Ok(self.entries().await?.into_iter().map(|(_, v)| v).collect())
    }

    /// A near cache of this map: a copy held by this client, loaded now
    /// and kept current by the map's events, for reads that never leave
    /// the process ([`NearCache`] says what they may see).
    pub async fn near_cache(&self) -> Result<NearCache<K, V>> {
        let name = &self.base.name;
        let command = |command| Command::Map {
            name: name.clone(),
            command,
        };
        // Listen first, then read: every change after the read point is
        // then an event, and every change between the listen and the read
        // is both in the image and an event, which rewrites it with the
        // same or a later value.
        let events = self
            .base
            .primitives
            .subscribe(
                name,
                Some(command(MapCommand::Listen(None))),
                Some(command(MapCommand::Unlisten(None))),
                Box::new(|e| matches!(e, Event::Map(_))),
                |event| Some(Ok(event)),
            )
            .await?;
        let entries = self.raw_entries().await?;
        self.base.primitives.caught_up().await;
        Ok(NearCache::start(self.clone(), entries, events))
    }

    /// The resource's name.
    pub fn name(&self) -> &str {
        &self.base.name
    }

    /// The primitives this handle uses.
    pub(crate) fn primitives(&self) -> &Primitives {
        &self.base.primitives
    }

    /// Changes of every entry from now on.
    pub async fn listen(&self) -> Result<Subscription<MapChange<K, V>>> {
        self.listen_to(None).await
    }

    /// Changes of `key` from now on.
    pub async fn listen_key(&self, key: &K) -> Result<Subscription<MapChange<K, V>>> {
        self.listen_to(Some(encode(key))).await
    }

    async fn listen_to(&self, key: Option<Bytes>) -> Result<Subscription<MapChange<K, V>>> {
        let name = &self.base.name;
        let command = |command| Command::Map {
            name: name.clone(),
            command,
        };
        let wanted = key.clone();
        self.base
            .primitives
            .subscribe(
                name,
                Some(command(MapCommand::Listen(key.clone()))),
                Some(command(MapCommand::Unlisten(key))),
                Box::new(move |e| match e {
                    Event::Map(event) => wanted.as_ref().is_none_or(|k| *k == event.key),
                    _ => false,
                }),
                |event| match event {
                    Event::Map(MapEvent {
                        kind,
                        key,
                        old,
                        new,
                    }) => Some((|| {
                        Ok(MapChange {
                            kind,
                            key: decode(&key)?,
                            old: opt(old)?,
                            new: opt(new)?,
                        })
                    })()),
                    _ => None,
                },
            )
            .await
    }
}

// ------------------------------------------------------------------ multimap

/// A replicated multimap from `K` to sets of `V` ([`crate::multimap`]).
pub struct MultiMap<K, V> {
    base: Base,
    _t: Typed<(K, V)>,
}

impl<K, V> Clone for MultiMap<K, V> {
    fn clone(&self) -> Self {
        Self {
            base: self.base.clone(),
            _t: PhantomData,
        }
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> MultiMap<K, V> {
    /// Get or create the multimap `name`; `order` applies if it is created
    /// now (natural order is by the values' encoded bytes).
    pub async fn open(primitives: &Primitives, name: &str, order: ValueOrder) -> Result<Self> {
        Ok(Self {
            base: Base::open(primitives, name, Spec::MultiMap { order }).await?,
            _t: PhantomData,
        })
    }

    /// This handle reading at `consistency`.
    pub fn with_consistency(&self, consistency: Consistency) -> Self {
        let mut base = self.base.clone();
        base.consistency = Some(consistency);
        Self {
            base,
            _t: PhantomData,
        }
    }

    async fn run(&self, command: MultiMapCommand) -> Result<MultiMapOutput> {
        let name = self.base.name.clone();
        match self
            .base
            .command(Command::MultiMap { name, command })
            .await?
        {
            Output::MultiMap(out) => Ok(out),
            other => unexpected(other),
        }
    }

    async fn ask(&self, query: MultiMapQuery) -> Result<MultiMapOutput> {
        let name = self.base.name.clone();
        match self.base.query(Query::MultiMap { name, query }).await? {
            Output::MultiMap(out) => Ok(out),
            other => unexpected(other),
        }
    }

    async fn yes(&self, out: MultiMapOutput) -> Result<bool> {
        match out {
            MultiMapOutput::Bool(b) => Ok(b),
            other => unexpected(other),
        }
    }

    async fn count(&self, query: MultiMapQuery) -> Result<u64> {
        match self.ask(query).await? {
            MultiMapOutput::Size(n) => Ok(n),
            other => unexpected(other),
        }
    }

    fn values(out: MultiMapOutput) -> Result<Vec<V>> {
        match out {
            MultiMapOutput::Values(values) => values.iter().map(|v| decode(v)).collect(),
            other => unexpected(other),
        }
    }

    /// Add `value` under `key`; answers whether the pair is new.
    pub async fn put(&self, key: &K, value: &V) -> Result<bool> {
        self.put_ttl(key, value, None).await
    }

    /// Add `value` under `key`, the pair expiring after `ttl`.
    pub async fn put_with_ttl(&self, key: &K, value: &V, ttl: Duration) -> Result<bool> {
        self.put_ttl(key, value, Some(ttl)).await
    }

    async fn put_ttl(&self, key: &K, value: &V, ttl: Option<Duration>) -> Result<bool> {
        let out = self
            .run(MultiMapCommand::Put {
                key: encode(key),
                value: encode(value),
                ttl_ms: ttl.map(millis),
            })
            .await?;
        self.yes(out).await
    }

    /// Remove a key; answers its values.
    pub async fn remove(&self, key: &K) -> Result<Vec<V>> {
        Self::values(self.run(MultiMapCommand::Remove(encode(key))).await?)
    }

    /// Remove one pair; answers whether it was present.
    pub async fn remove_entry(&self, key: &K, value: &V) -> Result<bool> {
        let out = self
            .run(MultiMapCommand::RemoveEntry {
                key: encode(key),
                value: encode(value),
            })
            .await?;
        self.yes(out).await
    }

    /// Remove a value from every key; answers whether any held it.
    pub async fn remove_value(&self, value: &V) -> Result<bool> {
        let out = self
            .run(MultiMapCommand::RemoveValue(encode(value)))
            .await?;
        self.yes(out).await
    }

    /// Remove everything.
    pub async fn clear(&self) -> Result<()> {
        match self.run(MultiMapCommand::Clear).await? {
            MultiMapOutput::Unit => Ok(()),
            other => unexpected(other),
        }
    }

    /// The values under `key`, in the multimap's order.
    pub async fn get(&self, key: &K) -> Result<Vec<V>> {
        Self::values(self.ask(MultiMapQuery::Get(encode(key))).await?)
    }

    /// The number of pairs.
    pub async fn size(&self) -> Result<u64> {
        self.count(MultiMapQuery::Size).await
    }

    /// The number of values under `key`.
    pub async fn size_of(&self, key: &K) -> Result<u64> {
        self.count(MultiMapQuery::SizeOf(encode(key))).await
    }

    /// Whether `key` has values.
    pub async fn contains_key(&self, key: &K) -> Result<bool> {
        let out = self.ask(MultiMapQuery::ContainsKey(encode(key))).await?;
        self.yes(out).await
    }

    /// Whether the pair is present.
    pub async fn contains_entry(&self, key: &K, value: &V) -> Result<bool> {
        let out = self
            .ask(MultiMapQuery::ContainsEntry {
                key: encode(key),
                value: encode(value),
            })
            .await?;
        self.yes(out).await
    }

    /// Whether any key holds `value`.
    pub async fn contains_value(&self, value: &V) -> Result<bool> {
        let out = self
            .ask(MultiMapQuery::ContainsValue(encode(value)))
            .await?;
        self.yes(out).await
    }
}

// ------------------------------------------------------------------ set

/// A replicated set of `T` ([`crate::set`]).
pub struct Set<T> {
    base: Base,
    _t: Typed<T>,
}
handle_common!(Set);

/// A change of a [`Set`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetChange<T> {
    /// Added.
    Added(T),
    /// Removed (or cleared).
    Removed(T),
    /// Its TTL ran out.
    Expired(T),
}

impl<T: Serialize + DeserializeOwned> Set<T> {
    /// Get or create the set `name`.
    pub async fn open(primitives: &Primitives, name: &str) -> Result<Self> {
        Ok(Self {
            base: Base::open(primitives, name, Spec::Set).await?,
            _t: PhantomData,
        })
    }

    async fn run(&self, command: SetCommand) -> Result<SetOutput> {
        let name = self.base.name.clone();
        match self.base.command(Command::Set { name, command }).await? {
            Output::Set(out) => Ok(out),
            other => unexpected(other),
        }
    }

    async fn ask(&self, query: SetQuery) -> Result<SetOutput> {
        let name = self.base.name.clone();
        match self.base.query(Query::Set { name, query }).await? {
            Output::Set(out) => Ok(out),
            other => unexpected(other),
        }
    }

    fn yes(out: SetOutput) -> Result<bool> {
        match out {
            SetOutput::Bool(b) => Ok(b),
            other => unexpected(other),
        }
    }

    /// Add; answers whether it was new.
    pub async fn add(&self, value: &T) -> Result<bool> {
        self.add_ttl(value, None).await
    }

    /// Add, expiring after `ttl`; answers whether it was new.
    pub async fn add_with_ttl(&self, value: &T, ttl: Duration) -> Result<bool> {
        self.add_ttl(value, Some(ttl)).await
    }

    async fn add_ttl(&self, value: &T, ttl: Option<Duration>) -> Result<bool> {
        Self::yes(
            self.run(SetCommand::Add {
                value: encode(value),
                ttl_ms: ttl.map(millis),
            })
            .await?,
        )
    }

    /// Remove; answers whether it was present.
    pub async fn remove(&self, value: &T) -> Result<bool> {
        Self::yes(self.run(SetCommand::Remove(encode(value))).await?)
    }

    /// Remove every member.
    pub async fn clear(&self) -> Result<()> {
        match self.run(SetCommand::Clear).await? {
            SetOutput::Unit => Ok(()),
            other => unexpected(other),
        }
    }

    /// Whether `value` is a member.
    pub async fn contains(&self, value: &T) -> Result<bool> {
        Self::yes(self.ask(SetQuery::Contains(encode(value))).await?)
    }

    /// The number of members.
    pub async fn size(&self) -> Result<u64> {
        match self.ask(SetQuery::Size).await? {
            SetOutput::Size(n) => Ok(n),
            other => unexpected(other),
        }
    }

    /// Whether it is empty.
    pub async fn is_empty(&self) -> Result<bool> {
        Self::yes(self.ask(SetQuery::IsEmpty).await?)
    }

    /// Every member, in encoded-byte order (read page by page).
    pub async fn members(&self) -> Result<Vec<T>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            match self
                .ask(SetQuery::Iterate {
                    after: after.take(),
                    limit: PAGE,
                })
                .await?
            {
                SetOutput::Members(page) => {
                    for v in page.items {
                        all.push(decode(&v)?);
                    }
                    match page.next {
                        Some(next) => after = Some(next),
                        None => return Ok(all),
                    }
                }
                other => return unexpected(other),
            }
        }
    }

    /// Its changes from now on.
    pub async fn listen(&self) -> Result<Subscription<SetChange<T>>> {
        let name = &self.base.name;
        let command = |command| Command::Set {
            name: name.clone(),
            command,
        };
        self.base
            .primitives
            .subscribe(
                name,
                Some(command(SetCommand::Listen)),
                Some(command(SetCommand::Unlisten)),
                Box::new(|e| matches!(e, Event::Set(_))),
                |event| match event {
                    Event::Set(SetEvent::Added(v)) => Some(decode(&v).map(SetChange::Added)),
                    Event::Set(SetEvent::Removed(v)) => Some(decode(&v).map(SetChange::Removed)),
                    Event::Set(SetEvent::Expired(v)) => Some(decode(&v).map(SetChange::Expired)),
                    _ => None,
                },
            )
            .await
    }
}

// ------------------------------------------------------------------ queue

/// A replicated FIFO queue of `T` with a blocking [`take`](Queue::take)
/// ([`crate::queue`]).
pub struct Queue<T> {
    base: Base,
    _t: Typed<T>,
}
handle_common!(Queue);

/// A change of a [`Queue`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueChange<T> {
    /// Offered.
    Added(T),
    /// Taken or removed.
    Removed(T),
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Get or create the queue `name`.
    pub async fn open(primitives: &Primitives, name: &str) -> Result<Self> {
        Ok(Self {
            base: Base::open(primitives, name, Spec::Queue).await?,
            _t: PhantomData,
        })
    }

    async fn run(&self, command: QueueCommand) -> Result<QueueOutput> {
        let name = self.base.name.clone();
        match self.base.command(Command::Queue { name, command }).await? {
            Output::Queue(out) => Ok(out),
            other => unexpected(other),
        }
    }

    async fn ask(&self, query: QueueQuery) -> Result<QueueOutput> {
        let name = self.base.name.clone();
        match self.base.query(Query::Queue { name, query }).await? {
            Output::Queue(out) => Ok(out),
            other => unexpected(other),
        }
    }

    fn item(out: QueueOutput) -> Result<Option<T>> {
        match out {
            QueueOutput::Value(v) => opt(v),
            other => unexpected(other),
        }
    }

    fn yes(out: QueueOutput) -> Result<bool> {
        match out {
            QueueOutput::Bool(b) => Ok(b),
            other => unexpected(other),
        }
    }

    /// Append; answers `false` if the queue is full.
    pub async fn offer(&self, value: &T) -> Result<bool> {
        Self::yes(self.run(QueueCommand::Offer(encode(value))).await?)
    }

    /// Append; a full queue is [`crate::ResourceError::TooManyEntries`].
    pub async fn add(&self, value: &T) -> Result<()> {
        match self.run(QueueCommand::Add(encode(value))).await? {
            QueueOutput::Unit => Ok(()),
            other => unexpected(other),
        }
    }

    /// Take the head, if any.
    pub async fn poll(&self) -> Result<Option<T>> {
        Self::item(self.run(QueueCommand::Poll).await?)
    }

    /// Take the head; an empty queue is [`crate::ResourceError::Empty`].
    pub async fn remove(&self) -> Result<T> {
        match Self::item(self.run(QueueCommand::Remove).await?)? {
            Some(v) => Ok(v),
            None => unexpected("no item"),
        }
    }

    /// Remove the first item equal to `value`; answers whether there was
    /// one.
    pub async fn remove_value(&self, value: &T) -> Result<bool> {
        Self::yes(self.run(QueueCommand::RemoveValue(encode(value))).await?)
    }

    /// Remove every item.
    pub async fn clear(&self) -> Result<()> {
        match self.run(QueueCommand::Clear).await? {
            QueueOutput::Unit => Ok(()),
            other => unexpected(other),
        }
    }

    /// The head, if any.
    pub async fn peek(&self) -> Result<Option<T>> {
        Self::item(self.ask(QueueQuery::Peek).await?)
    }

    /// The head; an empty queue is [`crate::ResourceError::Empty`].
    pub async fn element(&self) -> Result<T> {
        match Self::item(self.ask(QueueQuery::Element).await?)? {
            Some(v) => Ok(v),
            None => unexpected("no item"),
        }
    }

    /// Whether an item equals `value`.
    pub async fn contains(&self, value: &T) -> Result<bool> {
        Self::yes(self.ask(QueueQuery::Contains(encode(value))).await?)
    }

    /// The number of items.
    pub async fn size(&self) -> Result<u64> {
        match self.ask(QueueQuery::Size).await? {
            QueueOutput::Size(n) => Ok(n),
            other => unexpected(other),
        }
    }

    /// Whether it is empty.
    pub async fn is_empty(&self) -> Result<bool> {
        Self::yes(self.ask(QueueQuery::IsEmpty).await?)
    }

    /// How many takes wait for an item.
    pub async fn takers(&self) -> Result<u64> {
        match self.ask(QueueQuery::Takers).await? {
            QueueOutput::Size(n) => Ok(n),
            other => unexpected(other),
        }
    }

    /// Take the head, waiting (in FIFO order with other takers) until an
    /// item is offered. The item is pushed by the cluster, not polled.
    pub async fn take(&self) -> Result<T> {
        match self.take_wait(None).await? {
            Some(v) => Ok(v),
            None => unexpected("a take without timeout timed out"),
        }
    }

    /// Take the head, waiting at most `timeout` (by the cluster's clock);
    /// `None` if none came.
    pub async fn take_timeout(&self, timeout: Duration) -> Result<Option<T>> {
        self.take_wait(Some(millis(timeout))).await
    }

    async fn take_wait(&self, timeout_ms: Option<u64>) -> Result<Option<T>> {
        let name = self.base.name.clone();
        let waited = self
            .base
            .primitives
            .wait_for(
                &name,
                |req| Command::Queue {
                    name: name.clone(),
                    command: QueueCommand::Take { req, timeout_ms },
                },
                |out| matches!(out, Output::Queue(QueueOutput::Waiting)),
                |name, req| Command::Queue {
                    name,
                    command: QueueCommand::Cancel { req },
                },
                Undo::Offer,
            )
            .await?;
        match waited {
            Waited::Now(Output::Queue(QueueOutput::Value(v))) => opt(v),
            Waited::Event(Event::Queue(QueueEvent::Taken { value, .. })) => {
                Ok(Some(decode(&value)?))
            }
            Waited::Event(Event::Queue(QueueEvent::TimedOut { .. })) => Ok(None),
            Waited::Now(other) => unexpected(other),
            Waited::Event(other) => unexpected(other),
        }
    }

    /// Its changes from now on.
    pub async fn listen(&self) -> Result<Subscription<QueueChange<T>>> {
        let name = &self.base.name;
        let command = |command| Command::Queue {
            name: name.clone(),
            command,
        };
        self.base
            .primitives
            .subscribe(
                name,
                Some(command(QueueCommand::Listen)),
                Some(command(QueueCommand::Unlisten)),
                Box::new(|e| {
                    matches!(
                        e,
                        Event::Queue(QueueEvent::Added(_) | QueueEvent::Removed(_))
                    )
                }),
                |event| match event {
                    Event::Queue(QueueEvent::Added(v)) => Some(decode(&v).map(QueueChange::Added)),
                    Event::Queue(QueueEvent::Removed(v)) => {
                        Some(decode(&v).map(QueueChange::Removed))
                    }
                    _ => None,
                },
            )
            .await
    }
}

// ------------------------------------------------------------------ topic

/// A publish/subscribe topic of `T` messages ([`crate::topic`]).
pub struct Topic<T> {
    base: Base,
    _t: Typed<T>,
}
handle_common!(Topic);

/// A message of a [`Topic`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicMessage<T> {
    /// Its number, in publication order from 1.
    pub seq: u64,
    /// The message.
    pub message: T,
}

impl<T: Serialize + DeserializeOwned> Topic<T> {
    /// Get or create the topic `name`.
    pub async fn open(primitives: &Primitives, name: &str) -> Result<Self> {
        Ok(Self {
            base: Base::open(primitives, name, Spec::Topic).await?,
            _t: PhantomData,
        })
    }

    /// Publish; answers how many sessions it was sent to.
    pub async fn publish(&self, message: &T) -> Result<u64> {
        let command = Command::Topic {
            name: self.base.name.clone(),
            command: TopicCommand::Publish(encode(message)),
        };
        match self.base.command(command).await? {
            Output::Topic(TopicOutput::Count(n)) => Ok(n),
            other => unexpected(other),
        }
    }

    /// How many sessions are subscribed.
    pub async fn subscribers(&self) -> Result<u64> {
        let query = Query::Topic {
            name: self.base.name.clone(),
            query: TopicQuery::Subscribers,
        };
        match self.base.query(query).await? {
            Output::Topic(TopicOutput::Count(n)) => Ok(n),
            other => unexpected(other),
        }
    }

    /// Every message published from now on, in order.
    pub async fn subscribe(&self) -> Result<Subscription<TopicMessage<T>>> {
        let name = &self.base.name;
        let command = |command| Command::Topic {
            name: name.clone(),
            command,
        };
        self.base
            .primitives
            .subscribe(
                name,
                Some(command(TopicCommand::Subscribe)),
                Some(command(TopicCommand::Unsubscribe)),
                Box::new(|e| matches!(e, Event::Topic(_))),
                |event| match event {
                    Event::Topic(TopicEvent::Message { seq, message }) => {
                        Some(decode(&message).map(|message| TopicMessage { seq, message }))
                    }
                    _ => None,
                },
            )
            .await
    }
}
