//! Model-based property tests: for each resource, random operation
//! sequences against the real manager (through a replica, with TTL expiry,
//! session close and expiry, and snapshot + restore) and against a simple
//! sequential model must give identical outputs and events.

mod harness;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use copycat_primitives::election::*;
use copycat_primitives::latch::*;
use copycat_primitives::lock::*;
use copycat_primitives::long::*;
use copycat_primitives::map::*;
use copycat_primitives::multimap::*;
use copycat_primitives::queue::*;
use copycat_primitives::semaphore::*;
use copycat_primitives::set::*;
use copycat_primitives::topic::*;
use copycat_primitives::value::*;
use copycat_primitives::{Command, Event, Output, Page, Query, ResourceError, Spec, ValueOrder};
use copycat_proto::SessionId;
use harness::model::*;
use proptest::prelude::*;

fn name() -> String {
    "r".to_string()
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        ..ProptestConfig::default()
    }
}

fn to_all<E: Clone>(out: &mut Out, sessions: &BTreeSet<SessionId>, wrap: fn(E) -> Event, event: E) {
    for s in sessions {
        out.push((*s, wrap(event.clone())));
    }
}

fn listen(set: &mut BTreeSet<SessionId>, session: SessionId) -> Result<(), ResourceError> {
    if !set.contains(&session) {
        check_waiters(set.len())?;
        set.insert(session);
    }
    Ok(())
}

// ---------------------------------------------------------------- value

#[derive(Clone, Debug)]
enum ValueOp {
    Get,
    Set(Option<Bytes>, Option<u64>),
    GetAndSet(Option<Bytes>, Option<u64>),
    Cas(Option<Bytes>, Option<Bytes>, Option<u64>),
    Listen,
    Unlisten,
}

#[derive(Default)]
struct ValueModel {
    value: Option<Bytes>,
    expires: Option<u64>,
    listeners: BTreeSet<SessionId>,
}

impl ValueModel {
    fn set(
        &mut self,
        at: At,
        value: &Option<Bytes>,
        ttl: Option<u64>,
        out: &mut Out,
    ) -> Result<Option<Bytes>, ResourceError> {
        if let Some(v) = value {
            check_value(v)?;
        }
        let expires = match value {
            Some(_) => ttl_deadline(at.time, ttl)?,
            None => None,
        };
        let old = std::mem::replace(&mut self.value, value.clone());
        self.expires = expires;
        if old != self.value {
            let event = ValueEvent::Changed {
                old: old.clone(),
                new: self.value.clone(),
                expired: false,
            };
            to_all(out, &self.listeners, Event::Value, event);
        }
        Ok(old)
    }
}

impl Model for ValueModel {
    type Op = ValueOp;
    fn spec() -> Spec {
        Spec::Value
    }
    fn request(op: &ValueOp) -> Request {
        let command = |command| {
            Request::Command(Command::Value {
                name: name(),
                command,
            })
        };
        match op.clone() {
            ValueOp::Get => Request::Query(Query::Value {
                name: name(),
                query: ValueQuery::Get,
            }),
            ValueOp::Set(value, ttl_ms) => command(ValueCommand::Set { value, ttl_ms }),
            ValueOp::GetAndSet(value, ttl_ms) => command(ValueCommand::GetAndSet { value, ttl_ms }),
            ValueOp::Cas(expect, update, ttl_ms) => command(ValueCommand::CompareAndSet {
                expect,
                update,
                ttl_ms,
            }),
            ValueOp::Listen => command(ValueCommand::Listen),
            ValueOp::Unlisten => command(ValueCommand::Unlisten),
        }
    }
    fn apply(
        &mut self,
        at: At,
        session: SessionId,
        op: &ValueOp,
        out: &mut Out,
    ) -> Result<Output, ResourceError> {
        let answer = match op {
            ValueOp::Get => ValueOutput::Value(self.value.clone()),
            ValueOp::Set(v, ttl) => {
                self.set(at, v, *ttl, out)?;
                ValueOutput::Unit
            }
            ValueOp::GetAndSet(v, ttl) => ValueOutput::Value(self.set(at, v, *ttl, out)?),
            ValueOp::Cas(expect, update, ttl) => {
                if self.value != *expect {
                    ValueOutput::Bool(false)
                } else {
                    self.set(at, update, *ttl, out)?;
                    ValueOutput::Bool(true)
                }
            }
            ValueOp::Listen => {
                listen(&mut self.listeners, session)?;
                ValueOutput::Unit
            }
            ValueOp::Unlisten => {
                self.listeners.remove(&session);
                ValueOutput::Unit
            }
        };
        Ok(Output::Value(answer))
    }
    fn advance(&mut self, time: u64, out: &mut Out) {
        if self.expires.is_some_and(|t| t <= time) {
            self.expires = None;
            let old = self.value.take();
            let event = ValueEvent::Changed {
                old,
                new: None,
                expired: true,
            };
            to_all(out, &self.listeners, Event::Value, event);
        }
    }
    fn close(&mut self, _at: At, session: SessionId, _out: &mut Out) {
        self.listeners.remove(&session);
    }
}

fn value_op() -> impl Strategy<Value = ValueOp> {
    let v = || proptest::option::of(value());
    prop_oneof![
        Just(ValueOp::Get),
        (v(), ttl()).prop_map(|(v, t)| ValueOp::Set(v, t)),
        (v(), ttl()).prop_map(|(v, t)| ValueOp::GetAndSet(v, t)),
        (v(), v(), ttl()).prop_map(|(e, u, t)| ValueOp::Cas(e, u, t)),
        Just(ValueOp::Listen),
        Just(ValueOp::Unlisten),
    ]
}

// ---------------------------------------------------------------- long

#[derive(Clone, Debug)]
enum LongOp {
    Get,
    Set(i64),
    GetAndSet(i64),
    Cas(i64, i64),
    AddAndGet(i64),
    GetAndAdd(i64),
    Listen,
    Unlisten,
}

#[derive(Default)]
struct LongModel {
    value: i64,
    listeners: BTreeSet<SessionId>,
}

impl LongModel {
    fn set(&mut self, value: i64, out: &mut Out) -> i64 {
        let old = std::mem::replace(&mut self.value, value);
        if old != value {
            to_all(
                out,
                &self.listeners,
                Event::Long,
                LongEvent::Changed { old, new: value },
            );
        }
        old
    }
    fn add(&mut self, delta: i64, out: &mut Out) -> Result<i64, ResourceError> {
        match self.value.checked_add(delta) {
            Some(new) => Ok(self.set(new, out)),
            None => Err(ResourceError::Overflow {
                value: self.value,
                delta,
            }),
        }
    }
}

impl Model for LongModel {
    type Op = LongOp;
    fn spec() -> Spec {
        Spec::Long
    }
    fn request(op: &LongOp) -> Request {
        let command = |command| {
            Request::Command(Command::Long {
                name: name(),
                command,
            })
        };
        match *op {
            LongOp::Get => Request::Query(Query::Long {
                name: name(),
                query: LongQuery::Get,
            }),
            LongOp::Set(v) => command(LongCommand::Set(v)),
            LongOp::GetAndSet(v) => command(LongCommand::GetAndSet(v)),
            LongOp::Cas(expect, update) => command(LongCommand::CompareAndSet { expect, update }),
            LongOp::AddAndGet(d) => command(LongCommand::AddAndGet(d)),
            LongOp::GetAndAdd(d) => command(LongCommand::GetAndAdd(d)),
            LongOp::Listen => command(LongCommand::Listen),
            LongOp::Unlisten => command(LongCommand::Unlisten),
        }
    }
    fn apply(
        &mut self,
        _at: At,
        session: SessionId,
        op: &LongOp,
        out: &mut Out,
    ) -> Result<Output, ResourceError> {
        let answer = match *op {
            LongOp::Get => LongOutput::Value(self.value),
            LongOp::Set(v) => {
                self.set(v, out);
                LongOutput::Unit
            }
            LongOp::GetAndSet(v) => LongOutput::Value(self.set(v, out)),
            LongOp::Cas(expect, update) => {
                let hit = self.value == expect;
                if hit {
                    self.set(update, out);
                }
                LongOutput::Bool(hit)
            }
            LongOp::AddAndGet(d) => {
                self.add(d, out)?;
                LongOutput::Value(self.value)
            }
            LongOp::GetAndAdd(d) => LongOutput::Value(self.add(d, out)?),
            LongOp::Listen => {
                listen(&mut self.listeners, session)?;
                LongOutput::Unit
            }
            LongOp::Unlisten => {
                self.listeners.remove(&session);
                LongOutput::Unit
            }
        };
        Ok(Output::Long(answer))
    }
    fn advance(&mut self, _time: u64, _out: &mut Out) {}
    fn close(&mut self, _at: At, session: SessionId, _out: &mut Out) {
        self.listeners.remove(&session);
    }
}

fn long_op() -> impl Strategy<Value = LongOp> {
    let n = || {
        prop_oneof![
            -3i64..3,
            Just(i64::MAX),
            Just(i64::MIN),
            Just(i64::MAX - 1),
            Just(i64::MIN + 1)
        ]
    };
    prop_oneof![
        Just(LongOp::Get),
        n().prop_map(LongOp::Set),
        n().prop_map(LongOp::GetAndSet),
        (n(), n()).prop_map(|(e, u)| LongOp::Cas(e, u)),
        n().prop_map(LongOp::AddAndGet),
        n().prop_map(LongOp::GetAndAdd),
        Just(LongOp::AddAndGet(1)),
        Just(LongOp::GetAndAdd(-1)),
        Just(LongOp::Listen),
        Just(LongOp::Unlisten),
    ]
}

// ---------------------------------------------------------------- map

#[derive(Clone, Debug)]
enum MapOp {
    Put(Bytes, Bytes, Option<u64>),
    PutIfAbsent(Bytes, Bytes, Option<u64>),
    Remove(Bytes),
    RemoveIf(Bytes, Bytes),
    Replace(Bytes, Bytes),
    ReplaceIf(Bytes, Bytes, Bytes),
    Clear,
    Listen(Option<Bytes>),
    Unlisten(Option<Bytes>),
    Size,
    IsEmpty,
    ContainsKey(Bytes),
    ContainsValue(Bytes),
    Get(Bytes),
    GetOrDefault(Bytes, Bytes),
    Keys(Option<Bytes>, u32),
    Values(Option<Bytes>, u32),
    Entries(Option<Bytes>, u32),
}

#[derive(Default)]
struct MapModel {
    entries: BTreeMap<Bytes, (Bytes, Option<u64>)>,
    all: BTreeSet<SessionId>,
    keyed: BTreeMap<Bytes, BTreeSet<SessionId>>,
}

fn page<T>(
    entries: &BTreeMap<Bytes, (Bytes, Option<u64>)>,
    after: &Option<Bytes>,
    limit: u32,
    f: impl Fn(&Bytes, &Bytes) -> T,
) -> Result<Page<T>, ResourceError> {
    if limit == 0 {
        return Err(ResourceError::InvalidArgument(
            "a page limit must be at least 1".into(),
        ));
    }
    let rest: Vec<(&Bytes, &Bytes)> = entries
        .iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
        .map(|(k, (v, _))| (k, v))
        .collect();
    let items: Vec<T> = rest
        .iter()
        .take(limit as usize)
        .map(|(k, v)| f(k, v))
        .collect();
    let next = if rest.len() > limit as usize {
        Some(rest[limit as usize - 1].0.clone())
    } else {
        None
    };
    Ok(Page { items, next })
}

impl MapModel {
    fn notify(&self, out: &mut Out, event: MapEvent) {
        let mut to = self.all.clone();
        if let Some(keyed) = self.keyed.get(&event.key) {
            to.extend(keyed.iter().copied());
        }
        to_all(out, &to, Event::Map, event);
    }
    fn insert(
        &mut self,
        out: &mut Out,
        key: &Bytes,
        value: &Bytes,
        at: Option<u64>,
    ) -> Option<Bytes> {
        let old = self
            .entries
            .insert(key.clone(), (value.clone(), at))
            .map(|(v, _)| v);
        let kind = if old.is_some() {
            MapEventKind::Updated
        } else {
            MapEventKind::Added
        };
        self.notify(
            out,
            MapEvent {
                kind,
                key: key.clone(),
                old: old.clone(),
                new: Some(value.clone()),
            },
        );
        old
    }
    fn remove(&mut self, out: &mut Out, key: &Bytes, kind: MapEventKind) -> Option<Bytes> {
        let (old, _) = self.entries.remove(key)?;
        self.notify(
            out,
            MapEvent {
                kind,
                key: key.clone(),
                old: Some(old.clone()),
                new: None,
            },
        );
        Some(old)
    }
    fn check_put(&self, key: &Bytes, value: &Bytes) -> Result<(), ResourceError> {
        check_value(key)?;
        check_value(value)?;
        if !self.entries.contains_key(key) {
            check_entries(self.entries.len())?;
        }
        Ok(())
    }
}

impl Model for MapModel {
    type Op = MapOp;
    fn spec() -> Spec {
        Spec::Map
    }
    fn request(op: &MapOp) -> Request {
        let command = |command| {
            Request::Command(Command::Map {
                name: name(),
                command,
            })
        };
        let query = |query| {
            Request::Query(Query::Map {
                name: name(),
                query,
            })
        };
        match op.clone() {
            MapOp::Put(key, value, ttl_ms) => command(MapCommand::Put { key, value, ttl_ms }),
            MapOp::PutIfAbsent(key, value, ttl_ms) => {
                command(MapCommand::PutIfAbsent { key, value, ttl_ms })
            }
            MapOp::Remove(key) => command(MapCommand::Remove(key)),
            MapOp::RemoveIf(key, value) => command(MapCommand::RemoveIf { key, value }),
            MapOp::Replace(key, value) => command(MapCommand::Replace { key, value }),
            MapOp::ReplaceIf(key, old, new) => command(MapCommand::ReplaceIf { key, old, new }),
            MapOp::Clear => command(MapCommand::Clear),
            MapOp::Listen(key) => command(MapCommand::Listen(key)),
            MapOp::Unlisten(key) => command(MapCommand::Unlisten(key)),
            MapOp::Size => query(MapQuery::Size),
            MapOp::IsEmpty => query(MapQuery::IsEmpty),
            MapOp::ContainsKey(k) => query(MapQuery::ContainsKey(k)),
            MapOp::ContainsValue(v) => query(MapQuery::ContainsValue(v)),
            MapOp::Get(k) => query(MapQuery::Get(k)),
            MapOp::GetOrDefault(key, default) => query(MapQuery::GetOrDefault { key, default }),
            MapOp::Keys(after, limit) => query(MapQuery::Keys { after, limit }),
            MapOp::Values(after, limit) => query(MapQuery::Values { after, limit }),
            MapOp::Entries(after, limit) => query(MapQuery::Entries { after, limit }),
        }
    }
    fn apply(
        &mut self,
        at: At,
        session: SessionId,
        op: &MapOp,
        out: &mut Out,
    ) -> Result<Output, ResourceError> {
        let answer = match op {
            MapOp::Put(k, v, ttl) => {
                self.check_put(k, v)?;
                let expiry = ttl_deadline(at.time, *ttl)?;
                MapOutput::Value(self.insert(out, k, v, expiry))
            }
            MapOp::PutIfAbsent(k, v, ttl) => {
                if let Some((existing, _)) = self.entries.get(k) {
                    MapOutput::Value(Some(existing.clone()))
                } else {
                    self.check_put(k, v)?;
                    let expiry = ttl_deadline(at.time, *ttl)?;
                    self.insert(out, k, v, expiry);
                    MapOutput::Value(None)
                }
            }
            MapOp::Remove(k) => MapOutput::Value(self.remove(out, k, MapEventKind::Removed)),
            MapOp::RemoveIf(k, v) => {
                let hit = self.entries.get(k).is_some_and(|(x, _)| x == v);
                if hit {
                    self.remove(out, k, MapEventKind::Removed);
                }
                MapOutput::Bool(hit)
            }
            MapOp::Replace(k, v) => match self.entries.get(k).cloned() {
                Some((_, expiry)) => {
                    check_value(v)?;
                    MapOutput::Value(self.insert(out, k, v, expiry))
                }
                None => MapOutput::Value(None),
            },
            MapOp::ReplaceIf(k, old, new) => match self.entries.get(k).cloned() {
                Some((x, expiry)) if x == *old => {
                    check_value(new)?;
                    self.insert(out, k, new, expiry);
                    MapOutput::Bool(true)
                }
                _ => MapOutput::Bool(false),
            },
            MapOp::Clear => {
                let keys: Vec<Bytes> = self.entries.keys().cloned().collect();
                for k in keys {
                    self.remove(out, &k, MapEventKind::Removed);
                }
                MapOutput::Unit
            }
            MapOp::Listen(key) => {
                let listening = match key {
                    None => self.all.contains(&session),
                    Some(k) => self.keyed.get(k).is_some_and(|s| s.contains(&session)),
                };
                if !listening {
                    let count =
                        self.all.len() + self.keyed.values().map(BTreeSet::len).sum::<usize>();
                    check_waiters(count)?;
                    match key {
                        None => {
                            self.all.insert(session);
                        }
                        Some(k) => {
                            check_value(k)?;
                            self.keyed.entry(k.clone()).or_default().insert(session);
                        }
                    }
                }
                MapOutput::Unit
            }
            MapOp::Unlisten(key) => {
                match key {
                    None => {
                        self.all.remove(&session);
                    }
                    Some(k) => {
                        if let Some(set) = self.keyed.get_mut(k) {
                            set.remove(&session);
                            if set.is_empty() {
                                self.keyed.remove(k);
                            }
                        }
                    }
                }
                MapOutput::Unit
            }
            MapOp::Size => MapOutput::Size(self.entries.len() as u64),
            MapOp::IsEmpty => MapOutput::Bool(self.entries.is_empty()),
            MapOp::ContainsKey(k) => MapOutput::Bool(self.entries.contains_key(k)),
            MapOp::ContainsValue(v) => MapOutput::Bool(self.entries.values().any(|(x, _)| x == v)),
            MapOp::Get(k) => MapOutput::Value(self.entries.get(k).map(|(v, _)| v.clone())),
            MapOp::GetOrDefault(k, d) => MapOutput::Value(Some(
                self.entries
                    .get(k)
                    .map(|(v, _)| v.clone())
                    .unwrap_or(d.clone()),
            )),
            MapOp::Keys(after, limit) => {
                MapOutput::Keys(page(&self.entries, after, *limit, |k, _| k.clone())?)
            }
            MapOp::Values(after, limit) => {
                MapOutput::Values(page(&self.entries, after, *limit, |_, v| v.clone())?)
            }
            MapOp::Entries(after, limit) => {
                MapOutput::Entries(page(&self.entries, after, *limit, |k, v| {
                    (k.clone(), v.clone())
                })?)
            }
        };
        Ok(Output::Map(answer))
    }
    fn advance(&mut self, time: u64, out: &mut Out) {
        let mut due: Vec<(u64, Bytes)> = self
            .entries
            .iter()
            .filter_map(|(k, (_, at))| at.filter(|t| *t <= time).map(|t| (t, k.clone())))
            .collect();
        due.sort();
        for (_, key) in due {
            self.remove(out, &key, MapEventKind::Expired);
        }
    }
    fn close(&mut self, _at: At, session: SessionId, _out: &mut Out) {
        self.all.remove(&session);
        self.keyed.retain(|_, set| {
            set.remove(&session);
            !set.is_empty()
        });
    }
}

fn key() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        Just(Bytes::from_static(b"a")),
        Just(Bytes::from_static(b"b")),
        Just(Bytes::from_static(b"c")),
        Just(Bytes::from_static(b"d")),
        Just(Bytes::from_static(b"e")),
        Just(Bytes::from_static(b"kkk")),
    ]
}

fn map_op() -> impl Strategy<Value = MapOp> {
    let after = || proptest::option::of(key());
    prop_oneof![
        4 => (key(), value(), ttl()).prop_map(|(k, v, t)| MapOp::Put(k, v, t)),
        2 => (key(), value(), ttl()).prop_map(|(k, v, t)| MapOp::PutIfAbsent(k, v, t)),
        2 => key().prop_map(MapOp::Remove),
        1 => (key(), value()).prop_map(|(k, v)| MapOp::RemoveIf(k, v)),
        1 => (key(), value()).prop_map(|(k, v)| MapOp::Replace(k, v)),
        1 => (key(), value(), value()).prop_map(|(k, o, n)| MapOp::ReplaceIf(k, o, n)),
        1 => Just(MapOp::Clear),
        2 => proptest::option::of(key()).prop_map(MapOp::Listen),
        1 => proptest::option::of(key()).prop_map(MapOp::Unlisten),
        1 => Just(MapOp::Size),
        1 => Just(MapOp::IsEmpty),
        1 => key().prop_map(MapOp::ContainsKey),
        1 => value().prop_map(MapOp::ContainsValue),
        1 => key().prop_map(MapOp::Get),
        1 => (key(), value()).prop_map(|(k, d)| MapOp::GetOrDefault(k, d)),
        1 => (after(), 0..4u32).prop_map(|(a, l)| MapOp::Keys(a, l)),
        1 => (after(), 0..4u32).prop_map(|(a, l)| MapOp::Values(a, l)),
        1 => (after(), 0..4u32).prop_map(|(a, l)| MapOp::Entries(a, l)),
    ]
}

// ---------------------------------------------------------------- multimap

#[derive(Clone, Debug)]
enum MultiMapOp {
    Put(Bytes, Bytes, Option<u64>),
    Remove(Bytes),
    RemoveEntry(Bytes, Bytes),
    RemoveValue(Bytes),
    Clear,
    Size,
    SizeOf(Bytes),
    ContainsKey(Bytes),
    ContainsEntry(Bytes, Bytes),
    ContainsValue(Bytes),
    Get(Bytes),
}

#[derive(Default)]
struct MultiMapModel<const INSERTION: bool> {
    entries: BTreeMap<Bytes, Vec<(Bytes, Option<u64>)>>,
}

impl<const INSERTION: bool> MultiMapModel<INSERTION> {
    fn size(&self) -> usize {
        self.entries.values().map(Vec::len).sum()
    }
    fn remove_pair(&mut self, k: &Bytes, v: &Bytes) -> bool {
        let Some(values) = self.entries.get_mut(k) else {
            return false;
        };
        let before = values.len();
        values.retain(|(x, _)| x != v);
        let hit = values.len() != before;
        if values.is_empty() {
            self.entries.remove(k);
        }
        hit
    }
}

impl<const INSERTION: bool> Model for MultiMapModel<INSERTION> {
    type Op = MultiMapOp;
    fn spec() -> Spec {
        Spec::MultiMap {
            order: if INSERTION {
                ValueOrder::Insertion
            } else {
                ValueOrder::Natural
            },
        }
    }
    fn request(op: &MultiMapOp) -> Request {
        let command = |command| {
            Request::Command(Command::MultiMap {
                name: name(),
                command,
            })
        };
        let query = |query| {
            Request::Query(Query::MultiMap {
                name: name(),
                query,
            })
        };
        match op.clone() {
            MultiMapOp::Put(key, value, ttl_ms) => {
                command(MultiMapCommand::Put { key, value, ttl_ms })
            }
            MultiMapOp::Remove(k) => command(MultiMapCommand::Remove(k)),
            MultiMapOp::RemoveEntry(key, value) => {
                command(MultiMapCommand::RemoveEntry { key, value })
            }
            MultiMapOp::RemoveValue(v) => command(MultiMapCommand::RemoveValue(v)),
            MultiMapOp::Clear => command(MultiMapCommand::Clear),
            MultiMapOp::Size => query(MultiMapQuery::Size),
            MultiMapOp::SizeOf(k) => query(MultiMapQuery::SizeOf(k)),
            MultiMapOp::ContainsKey(k) => query(MultiMapQuery::ContainsKey(k)),
            MultiMapOp::ContainsEntry(key, value) => {
                query(MultiMapQuery::ContainsEntry { key, value })
            }
            MultiMapOp::ContainsValue(v) => query(MultiMapQuery::ContainsValue(v)),
            MultiMapOp::Get(k) => query(MultiMapQuery::Get(k)),
        }
    }
    fn apply(
        &mut self,
        at: At,
        _session: SessionId,
        op: &MultiMapOp,
        _out: &mut Out,
    ) -> Result<Output, ResourceError> {
        let has = |m: &Self, k: &Bytes, v: &Bytes| {
            m.entries
                .get(k)
                .is_some_and(|vs| vs.iter().any(|(x, _)| x == v))
        };
        let answer = match op {
            MultiMapOp::Put(k, v, ttl) => {
                check_value(k)?;
                check_value(v)?;
                let expiry = ttl_deadline(at.time, *ttl)?;
                if has(self, k, v) {
                    let values = self.entries.get_mut(k).unwrap();
                    values.iter_mut().find(|(x, _)| x == v).unwrap().1 = expiry;
                    MultiMapOutput::Bool(false)
                } else {
                    check_entries(self.size())?;
                    let values = self.entries.entry(k.clone()).or_default();
                    values.push((v.clone(), expiry));
                    if !INSERTION {
                        values.sort_by(|a, b| a.0.cmp(&b.0));
                    }
                    MultiMapOutput::Bool(true)
                }
            }
            MultiMapOp::Remove(k) => MultiMapOutput::Values(
                self.entries
                    .remove(k)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(v, _)| v)
                    .collect(),
            ),
            MultiMapOp::RemoveEntry(k, v) => MultiMapOutput::Bool(self.remove_pair(k, v)),
            MultiMapOp::RemoveValue(v) => {
                let keys: Vec<Bytes> = self.entries.keys().cloned().collect();
                let mut any = false;
                for k in keys {
                    any |= self.remove_pair(&k, v);
                }
                MultiMapOutput::Bool(any)
            }
            MultiMapOp::Clear => {
                self.entries.clear();
                MultiMapOutput::Unit
            }
            MultiMapOp::Size => MultiMapOutput::Size(self.size() as u64),
            MultiMapOp::SizeOf(k) => {
                MultiMapOutput::Size(self.entries.get(k).map_or(0, Vec::len) as u64)
            }
            MultiMapOp::ContainsKey(k) => MultiMapOutput::Bool(self.entries.contains_key(k)),
            MultiMapOp::ContainsEntry(k, v) => MultiMapOutput::Bool(has(self, k, v)),
            MultiMapOp::ContainsValue(v) => MultiMapOutput::Bool(
                self.entries
                    .values()
                    .any(|vs| vs.iter().any(|(x, _)| x == v)),
            ),
            MultiMapOp::Get(k) => MultiMapOutput::Values(
                self.entries
                    .get(k)
                    .map(|vs| vs.iter().map(|(v, _)| v.clone()).collect())
                    .unwrap_or_default(),
            ),
        };
        Ok(Output::MultiMap(answer))
    }
    fn advance(&mut self, time: u64, _out: &mut Out) {
        for values in self.entries.values_mut() {
            values.retain(|(_, at)| !at.is_some_and(|t| t <= time));
        }
        self.entries.retain(|_, values| !values.is_empty());
    }
    fn close(&mut self, _at: At, _session: SessionId, _out: &mut Out) {}
}

fn multimap_op() -> impl Strategy<Value = MultiMapOp> {
    prop_oneof![
        5 => (key(), value(), ttl()).prop_map(|(k, v, t)| MultiMapOp::Put(k, v, t)),
        1 => key().prop_map(MultiMapOp::Remove),
        1 => (key(), value()).prop_map(|(k, v)| MultiMapOp::RemoveEntry(k, v)),
        1 => value().prop_map(MultiMapOp::RemoveValue),
        1 => Just(MultiMapOp::Clear),
        1 => Just(MultiMapOp::Size),
        1 => key().prop_map(MultiMapOp::SizeOf),
        1 => key().prop_map(MultiMapOp::ContainsKey),
        1 => (key(), value()).prop_map(|(k, v)| MultiMapOp::ContainsEntry(k, v)),
        1 => value().prop_map(MultiMapOp::ContainsValue),
        2 => key().prop_map(MultiMapOp::Get),
    ]
}

// ---------------------------------------------------------------- set

#[derive(Clone, Debug)]
enum SetOp {
    Add(Bytes, Option<u64>),
    Remove(Bytes),
    Clear,
    Listen,
    Unlisten,
    Contains(Bytes),
    Size,
    IsEmpty,
    Iterate(Option<Bytes>, u32),
}

#[derive(Default)]
struct SetModel {
    members: BTreeMap<Bytes, (Bytes, Option<u64>)>,
    listeners: BTreeSet<SessionId>,
}

impl Model for SetModel {
    type Op = SetOp;
    fn spec() -> Spec {
        Spec::Set
    }
    fn request(op: &SetOp) -> Request {
        let command = |command| {
            Request::Command(Command::Set {
                name: name(),
                command,
            })
        };
        let query = |query| {
            Request::Query(Query::Set {
                name: name(),
                query,
            })
        };
        match op.clone() {
            SetOp::Add(value, ttl_ms) => command(SetCommand::Add { value, ttl_ms }),
            SetOp::Remove(v) => command(SetCommand::Remove(v)),
            SetOp::Clear => command(SetCommand::Clear),
            SetOp::Listen => command(SetCommand::Listen),
            SetOp::Unlisten => command(SetCommand::Unlisten),
            SetOp::Contains(v) => query(SetQuery::Contains(v)),
            SetOp::Size => query(SetQuery::Size),
            SetOp::IsEmpty => query(SetQuery::IsEmpty),
            SetOp::Iterate(after, limit) => query(SetQuery::Iterate { after, limit }),
        }
    }
    fn apply(
        &mut self,
        at: At,
        session: SessionId,
        op: &SetOp,
        out: &mut Out,
    ) -> Result<Output, ResourceError> {
        let answer = match op {
            SetOp::Add(v, ttl) => {
                check_value(v)?;
                let expiry = ttl_deadline(at.time, *ttl)?;
                let present = self.members.contains_key(v);
                if !present {
                    check_entries(self.members.len())?;
                }
                self.members.insert(v.clone(), (v.clone(), expiry));
                if !present {
                    to_all(out, &self.listeners, Event::Set, SetEvent::Added(v.clone()));
                }
                SetOutput::Bool(!present)
            }
            SetOp::Remove(v) => {
                let hit = self.members.remove(v).is_some();
                if hit {
                    to_all(
                        out,
                        &self.listeners,
                        Event::Set,
                        SetEvent::Removed(v.clone()),
                    );
                }
                SetOutput::Bool(hit)
            }
            SetOp::Clear => {
                for v in std::mem::take(&mut self.members).into_keys() {
                    to_all(out, &self.listeners, Event::Set, SetEvent::Removed(v));
                }
                SetOutput::Unit
            }
            SetOp::Listen => {
                listen(&mut self.listeners, session)?;
                SetOutput::Unit
            }
            SetOp::Unlisten => {
                self.listeners.remove(&session);
                SetOutput::Unit
            }
            SetOp::Contains(v) => SetOutput::Bool(self.members.contains_key(v)),
            SetOp::Size => SetOutput::Size(self.members.len() as u64),
            SetOp::IsEmpty => SetOutput::Bool(self.members.is_empty()),
            SetOp::Iterate(after, limit) => {
                SetOutput::Members(page(&self.members, after, *limit, |k, _| k.clone())?)
            }
        };
        Ok(Output::Set(answer))
    }
    fn advance(&mut self, time: u64, out: &mut Out) {
        let mut due: Vec<(u64, Bytes)> = self
            .members
            .iter()
            .filter_map(|(k, (_, at))| at.filter(|t| *t <= time).map(|t| (t, k.clone())))
            .collect();
        due.sort();
        for (_, v) in due {
            self.members.remove(&v);
            to_all(out, &self.listeners, Event::Set, SetEvent::Expired(v));
        }
    }
    fn close(&mut self, _at: At, session: SessionId, _out: &mut Out) {
        self.listeners.remove(&session);
    }
}

fn set_op() -> impl Strategy<Value = SetOp> {
    prop_oneof![
        4 => (value(), ttl()).prop_map(|(v, t)| SetOp::Add(v, t)),
        2 => value().prop_map(SetOp::Remove),
        1 => Just(SetOp::Clear),
        1 => Just(SetOp::Listen),
        1 => Just(SetOp::Unlisten),
        1 => value().prop_map(SetOp::Contains),
        1 => Just(SetOp::Size),
        1 => Just(SetOp::IsEmpty),
        1 => (proptest::option::of(value()), 0..4u32).prop_map(|(a, l)| SetOp::Iterate(a, l)),
    ]
}

// ---------------------------------------------------------------- queue

#[derive(Clone, Debug)]
enum QueueOp {
    Offer(Bytes),
    Add(Bytes),
    Poll,
    Remove,
    RemoveValue(Bytes),
    Clear,
    Take(u64, Option<u64>),
    Cancel(u64),
    Listen,
    Unlisten,
    Peek,
    Element,
    Contains(Bytes),
    Size,
    IsEmpty,
    Takers,
}

/// (session, req, deadline)
type W = (SessionId, u64, Option<u64>);

#[derive(Default)]
struct QueueModel {
    items: Vec<Bytes>,
    takers: Vec<W>,
    listeners: BTreeSet<SessionId>,
}

impl QueueModel {
    fn push(&mut self, v: &Bytes, out: &mut Out) -> Result<bool, ResourceError> {
        check_value(v)?;
        if self.takers.is_empty() && self.items.len() >= limits().max_entries {
            return Ok(false);
        }
        to_all(
            out,
            &self.listeners,
            Event::Queue,
            QueueEvent::Added(v.clone()),
        );
        if self.takers.is_empty() {
            self.items.push(v.clone());
        } else {
            let (s, req, _) = self.takers.remove(0);
            to_all(
                out,
                &self.listeners,
                Event::Queue,
                QueueEvent::Removed(v.clone()),
            );
            out.push((
                s,
                Event::Queue(QueueEvent::Taken {
                    req,
                    value: v.clone(),
                }),
            ));
        }
        Ok(true)
    }
    fn pop(&mut self, out: &mut Out) -> Option<Bytes> {
        if self.items.is_empty() {
            return None;
        }
        let v = self.items.remove(0);
        to_all(
            out,
            &self.listeners,
            Event::Queue,
            QueueEvent::Removed(v.clone()),
        );
        Some(v)
    }
}

impl Model for QueueModel {
    type Op = QueueOp;
    fn spec() -> Spec {
        Spec::Queue
    }
    fn request(op: &QueueOp) -> Request {
        let command = |command| {
            Request::Command(Command::Queue {
                name: name(),
                command,
            })
        };
        let query = |query| {
            Request::Query(Query::Queue {
                name: name(),
                query,
            })
        };
        match op.clone() {
            QueueOp::Offer(v) => command(QueueCommand::Offer(v)),
            QueueOp::Add(v) => command(QueueCommand::Add(v)),
            QueueOp::Poll => command(QueueCommand::Poll),
            QueueOp::Remove => command(QueueCommand::Remove),
            QueueOp::RemoveValue(v) => command(QueueCommand::RemoveValue(v)),
            QueueOp::Clear => command(QueueCommand::Clear),
            QueueOp::Take(req, timeout_ms) => command(QueueCommand::Take { req, timeout_ms }),
            QueueOp::Cancel(req) => command(QueueCommand::Cancel { req }),
            QueueOp::Listen => command(QueueCommand::Listen),
            QueueOp::Unlisten => command(QueueCommand::Unlisten),
            QueueOp::Peek => query(QueueQuery::Peek),
            QueueOp::Element => query(QueueQuery::Element),
            QueueOp::Contains(v) => query(QueueQuery::Contains(v)),
            QueueOp::Size => query(QueueQuery::Size),
            QueueOp::IsEmpty => query(QueueQuery::IsEmpty),
            QueueOp::Takers => query(QueueQuery::Takers),
        }
    }
    fn apply(
        &mut self,
        at: At,
        session: SessionId,
        op: &QueueOp,
        out: &mut Out,
    ) -> Result<Output, ResourceError> {
        let answer = match op {
            QueueOp::Offer(v) => QueueOutput::Bool(self.push(v, out)?),
            QueueOp::Add(v) => {
                if !self.push(v, out)? {
                    return Err(ResourceError::TooManyEntries {
                        limit: limits().max_entries,
                    });
                }
                QueueOutput::Unit
            }
            QueueOp::Poll => QueueOutput::Value(self.pop(out)),
            QueueOp::Remove => QueueOutput::Value(Some(self.pop(out).ok_or(ResourceError::Empty)?)),
            QueueOp::RemoveValue(v) => match self.items.iter().position(|x| x == v) {
                Some(i) => {
                    self.items.remove(i);
                    to_all(
                        out,
                        &self.listeners,
                        Event::Queue,
                        QueueEvent::Removed(v.clone()),
                    );
                    QueueOutput::Bool(true)
                }
                None => QueueOutput::Bool(false),
            },
            QueueOp::Clear => {
                while self.pop(out).is_some() {}
                QueueOutput::Unit
            }
            QueueOp::Take(req, timeout) => {
                if let Some(v) = self.pop(out) {
                    QueueOutput::Value(Some(v))
                } else if *timeout == Some(0) {
                    QueueOutput::Value(None)
                } else {
                    if self.takers.iter().any(|w| w.0 == session && w.1 == *req) {
                        return Err(ResourceError::DuplicateRequest { req: *req });
                    }
                    check_waiters(self.takers.len())?;
                    self.takers
                        .push((session, *req, timeout.map(|t| at.time + t)));
                    QueueOutput::Waiting
                }
            }
            QueueOp::Cancel(req) => {
                let before = self.takers.len();
                self.takers.retain(|w| !(w.0 == session && w.1 == *req));
                QueueOutput::Bool(before != self.takers.len())
            }
            QueueOp::Listen => {
                listen(&mut self.listeners, session)?;
                QueueOutput::Unit
            }
            QueueOp::Unlisten => {
                self.listeners.remove(&session);
                QueueOutput::Unit
            }
            QueueOp::Peek => QueueOutput::Value(self.items.first().cloned()),
            QueueOp::Element => QueueOutput::Value(Some(
                self.items.first().cloned().ok_or(ResourceError::Empty)?,
            )),
            QueueOp::Contains(v) => QueueOutput::Bool(self.items.contains(v)),
            QueueOp::Size => QueueOutput::Size(self.items.len() as u64),
            QueueOp::IsEmpty => QueueOutput::Bool(self.items.is_empty()),
            QueueOp::Takers => QueueOutput::Size(self.takers.len() as u64),
        };
        Ok(Output::Queue(answer))
    }
    fn advance(&mut self, time: u64, out: &mut Out) {
        expire_in_order(
            &mut self.takers,
            |w| w.2,
            time,
            |(s, req, _)| out.push((s, Event::Queue(QueueEvent::TimedOut { req }))),
            |_| {},
        );
    }
    fn close(&mut self, _at: At, session: SessionId, _out: &mut Out) {
        self.takers.retain(|w| w.0 != session);
        self.listeners.remove(&session);
    }
}

fn queue_op() -> impl Strategy<Value = QueueOp> {
    prop_oneof![
        3 => value().prop_map(QueueOp::Offer),
        2 => value().prop_map(QueueOp::Add),
        1 => Just(QueueOp::Poll),
        1 => Just(QueueOp::Remove),
        1 => value().prop_map(QueueOp::RemoveValue),
        1 => Just(QueueOp::Clear),
        4 => (0..3u64, timeout()).prop_map(|(r, t)| QueueOp::Take(r, t)),
        1 => (0..3u64).prop_map(QueueOp::Cancel),
        1 => Just(QueueOp::Listen),
        1 => Just(QueueOp::Unlisten),
        1 => Just(QueueOp::Peek),
        1 => Just(QueueOp::Element),
        1 => value().prop_map(QueueOp::Contains),
        1 => Just(QueueOp::Size),
        1 => Just(QueueOp::IsEmpty),
        1 => Just(QueueOp::Takers),
    ]
}

// ---------------------------------------------------------------- lock

#[derive(Clone, Debug)]
enum LockOp {
    Lock(u64, Option<u64>),
    Unlock,
    Cancel(u64),
    Holder,
    IsLocked,
    IsHeldByCaller,
    Waiters,
}

/// A fair owner queue, modelled: holder (session, token, count) and
/// waiters.
#[derive(Default)]
struct Owner {
    holder: Option<(SessionId, u64, u32)>,
    waiters: Vec<W>,
    fence: u64,
}

impl Owner {
    fn acquire(
        &mut self,
        at: At,
        session: SessionId,
        req: u64,
        timeout: Option<u64>,
        reentrant: bool,
    ) -> Result<Result<u64, bool>, ResourceError> {
        match &mut self.holder {
            None => {
                let token = fence(&mut self.fence, at.index);
                self.holder = Some((session, token, 1));
                Ok(Ok(token))
            }
            Some(h) if reentrant && h.0 == session => {
                h.2 += 1;
                Ok(Ok(h.1))
            }
            Some(_) if timeout == Some(0) => Ok(Err(false)),
            Some(_) => {
                if self.waiters.iter().any(|w| w.0 == session && w.1 == req) {
                    return Err(ResourceError::DuplicateRequest { req });
                }
                check_waiters(self.waiters.len())?;
                self.waiters
                    .push((session, req, timeout.map(|t| at.time + t)));
                Ok(Err(true))
            }
        }
    }
    /// Let go of the hold entirely; the next waiter and its token.
    fn pass_on(&mut self, at: At) -> Option<(W, u64)> {
        self.holder = None;
        if self.waiters.is_empty() {
            return None;
        }
        let w = self.waiters.remove(0);
        let token = fence(&mut self.fence, at.index);
        self.holder = Some((w.0, token, 1));
        Some((w, token))
    }
    fn cancel(&mut self, session: SessionId, req: u64) -> bool {
        let before = self.waiters.len();
        self.waiters.retain(|w| !(w.0 == session && w.1 == req));
        before != self.waiters.len()
    }
    fn leader(&self) -> Option<(SessionId, u64)> {
        self.holder.map(|(s, t, _)| (s, t))
    }
}

#[derive(Default)]
struct LockModel<const REENTRANT: bool> {
    owner: Owner,
}

impl<const REENTRANT: bool> Model for LockModel<REENTRANT> {
    type Op = LockOp;
    fn spec() -> Spec {
        Spec::Lock {
            reentrant: REENTRANT,
        }
    }
    fn request(op: &LockOp) -> Request {
        let command = |command| {
            Request::Command(Command::Lock {
                name: name(),
                command,
            })
        };
        let query = |query| {
            Request::Query(Query::Lock {
                name: name(),
                query,
            })
        };
        match *op {
            LockOp::Lock(req, timeout_ms) => command(LockCommand::Lock { req, timeout_ms }),
            LockOp::Unlock => command(LockCommand::Unlock),
            LockOp::Cancel(req) => command(LockCommand::Cancel { req }),
            LockOp::Holder => query(LockQuery::Holder),
            LockOp::IsLocked => query(LockQuery::IsLocked),
            LockOp::IsHeldByCaller => query(LockQuery::IsHeldByCaller),
            LockOp::Waiters => query(LockQuery::Waiters),
        }
    }
    fn apply(
        &mut self,
        at: At,
        session: SessionId,
        op: &LockOp,
        out: &mut Out,
    ) -> Result<Output, ResourceError> {
        let answer = match *op {
            LockOp::Lock(req, timeout) => {
                match self.owner.acquire(at, session, req, timeout, REENTRANT)? {
                    Ok(token) => LockOutput::Acquired(token),
                    Err(true) => LockOutput::Waiting,
                    Err(false) => LockOutput::NotAcquired,
                }
            }
            LockOp::Unlock => {
                match &mut self.owner.holder {
                    Some(h) if h.0 == session => {
                        h.2 -= 1;
                        if h.2 == 0 {
                            if let Some(((s, req, _), token)) = self.owner.pass_on(at) {
                                out.push((s, Event::Lock(LockEvent::Granted { req, token })));
                            }
                        }
                    }
                    _ => return Err(ResourceError::NotHolder),
                }
                LockOutput::Unit
            }
            LockOp::Cancel(req) => LockOutput::Bool(self.owner.cancel(session, req)),
            LockOp::Holder => LockOutput::Holder(self.owner.leader()),
            LockOp::IsLocked => LockOutput::Bool(self.owner.holder.is_some()),
            LockOp::Waiters => LockOutput::Count(self.owner.waiters.len() as u64),
            LockOp::IsHeldByCaller => {
                LockOutput::Bool(self.owner.holder.is_some_and(|h| h.0 == session))
            }
        };
        Ok(Output::Lock(answer))
    }
    fn advance(&mut self, time: u64, out: &mut Out) {
        expire_in_order(
            &mut self.owner.waiters,
            |w| w.2,
            time,
            |(s, req, _)| out.push((s, Event::Lock(LockEvent::TimedOut { req }))),
            |_| {},
        );
    }
    fn close(&mut self, at: At, session: SessionId, out: &mut Out) {
        self.owner.waiters.retain(|w| w.0 != session);
        if self.owner.holder.is_some_and(|h| h.0 == session) {
            if let Some(((s, req, _), token)) = self.owner.pass_on(at) {
                out.push((s, Event::Lock(LockEvent::Granted { req, token })));
            }
        }
    }
}

fn lock_op() -> impl Strategy<Value = LockOp> {
    prop_oneof![
        5 => (0..3u64, timeout()).prop_map(|(r, t)| LockOp::Lock(r, t)),
        4 => Just(LockOp::Unlock),
        1 => (0..3u64).prop_map(LockOp::Cancel),
        1 => Just(LockOp::Holder),
        1 => Just(LockOp::IsLocked),
        1 => Just(LockOp::IsHeldByCaller),
        1 => Just(LockOp::Waiters),
    ]
}

// ---------------------------------------------------------------- election

#[derive(Clone, Debug)]
enum ElectionOp {
    Campaign(u64, Option<u64>),
    Resign,
    Cancel(u64),
    Listen,
    Unlisten,
    Leader,
}

#[derive(Default)]
struct ElectionModel {
    owner: Owner,
    listeners: BTreeSet<SessionId>,
}

impl ElectionModel {
    fn changed(&self, out: &mut Out, next: Option<(W, u64)>) {
        if let Some(((s, req, _), term)) = next {
            out.push((s, Event::Election(ElectionEvent::Elected { req, term })));
        }
        let leader = self.owner.leader();
        to_all(
            out,
            &self.listeners,
            Event::Election,
            ElectionEvent::Changed { leader },
        );
    }
}

impl Model for ElectionModel {
    type Op = ElectionOp;
    fn spec() -> Spec {
        Spec::Election
    }
    fn request(op: &ElectionOp) -> Request {
        let command = |command| {
            Request::Command(Command::Election {
                name: name(),
                command,
            })
        };
        match *op {
            ElectionOp::Campaign(req, timeout_ms) => {
                command(ElectionCommand::Campaign { req, timeout_ms })
            }
            ElectionOp::Resign => command(ElectionCommand::Resign),
            ElectionOp::Cancel(req) => command(ElectionCommand::Cancel { req }),
            ElectionOp::Listen => command(ElectionCommand::Listen),
            ElectionOp::Unlisten => command(ElectionCommand::Unlisten),
            ElectionOp::Leader => Request::Query(Query::Election {
                name: name(),
                query: ElectionQuery::Leader,
            }),
        }
    }
    fn apply(
        &mut self,
        at: At,
        session: SessionId,
        op: &ElectionOp,
        out: &mut Out,
    ) -> Result<Output, ResourceError> {
        let answer = match *op {
            ElectionOp::Campaign(req, timeout) => {
                let before = self.owner.holder.is_some();
                match self.owner.acquire(at, session, req, timeout, true)? {
                    Ok(term) => {
                        if !before {
                            self.changed(out, None);
                        }
                        ElectionOutput::Elected(term)
                    }
                    Err(true) => ElectionOutput::Waiting,
                    Err(false) => ElectionOutput::NotElected,
                }
            }
            ElectionOp::Resign => {
                if self.owner.holder.is_none_or(|h| h.0 != session) {
                    return Err(ResourceError::NotLeader);
                }
                let next = self.owner.pass_on(at);
                self.changed(out, next);
                ElectionOutput::Unit
            }
            ElectionOp::Cancel(req) => ElectionOutput::Bool(self.owner.cancel(session, req)),
            ElectionOp::Listen => {
                listen(&mut self.listeners, session)?;
                ElectionOutput::Unit
            }
            ElectionOp::Unlisten => {
                self.listeners.remove(&session);
                ElectionOutput::Unit
            }
            ElectionOp::Leader => ElectionOutput::Leader(self.owner.leader()),
        };
        Ok(Output::Election(answer))
    }
    fn advance(&mut self, time: u64, out: &mut Out) {
        expire_in_order(
            &mut self.owner.waiters,
            |w| w.2,
            time,
            |(s, req, _)| out.push((s, Event::Election(ElectionEvent::TimedOut { req }))),
            |_| {},
        );
    }
    fn close(&mut self, at: At, session: SessionId, out: &mut Out) {
        self.listeners.remove(&session);
        self.owner.waiters.retain(|w| w.0 != session);
        if self.owner.holder.is_some_and(|h| h.0 == session) {
            let next = self.owner.pass_on(at);
            self.changed(out, next);
        }
    }
}

fn election_op() -> impl Strategy<Value = ElectionOp> {
    prop_oneof![
        5 => (0..3u64, timeout()).prop_map(|(r, t)| ElectionOp::Campaign(r, t)),
        3 => Just(ElectionOp::Resign),
        1 => (0..3u64).prop_map(ElectionOp::Cancel),
        2 => Just(ElectionOp::Listen),
        1 => Just(ElectionOp::Unlisten),
        1 => Just(ElectionOp::Leader),
    ]
}

// ---------------------------------------------------------------- semaphore

const PERMITS: u64 = 3;

#[derive(Clone, Debug)]
enum SemaphoreOp {
    Acquire(u64, u64, Option<u64>),
    Release(u64),
    Cancel(u64),
    Available,
    Held,
}

struct SemaphoreModel {
    available: u64,
    held: BTreeMap<SessionId, u64>,
    /// (session, req, permits, deadline)
    waiters: Vec<(SessionId, u64, u64, Option<u64>)>,
}

impl Default for SemaphoreModel {
    fn default() -> Self {
        Self {
            available: PERMITS,
            held: BTreeMap::new(),
            waiters: Vec::new(),
        }
    }
}

fn serve(
    available: &mut u64,
    held: &mut BTreeMap<SessionId, u64>,
    waiters: &mut Vec<(SessionId, u64, u64, Option<u64>)>,
    out: &mut Out,
) {
    while let Some(&(s, req, permits, _)) = waiters.first() {
        if permits > *available {
            break;
        }
        waiters.remove(0);
        *available -= permits;
        *held.entry(s).or_default() += permits;
        out.push((s, Event::Semaphore(SemaphoreEvent::Acquired { req })));
    }
}

impl Model for SemaphoreModel {
    type Op = SemaphoreOp;
    fn spec() -> Spec {
        Spec::Semaphore { permits: PERMITS }
    }
    fn request(op: &SemaphoreOp) -> Request {
        let command = |command| {
            Request::Command(Command::Semaphore {
                name: name(),
                command,
            })
        };
        let query = |query| {
            Request::Query(Query::Semaphore {
                name: name(),
                query,
            })
        };
        match *op {
            SemaphoreOp::Acquire(req, permits, timeout_ms) => command(SemaphoreCommand::Acquire {
                req,
                permits,
                timeout_ms,
            }),
            SemaphoreOp::Release(permits) => command(SemaphoreCommand::Release { permits }),
            SemaphoreOp::Cancel(req) => command(SemaphoreCommand::Cancel { req }),
            SemaphoreOp::Available => query(SemaphoreQuery::Available),
            SemaphoreOp::Held => query(SemaphoreQuery::Held),
        }
    }
    fn apply(
        &mut self,
        at: At,
        session: SessionId,
        op: &SemaphoreOp,
        out: &mut Out,
    ) -> Result<Output, ResourceError> {
        let answer = match *op {
            SemaphoreOp::Acquire(req, permits, timeout) => {
                if permits == 0 || permits > PERMITS {
                    return Err(ResourceError::InvalidArgument(format!(
                        "cannot acquire {permits} of {PERMITS} permits"
                    )));
                }
                if self.waiters.is_empty() && permits <= self.available {
                    self.available -= permits;
                    *self.held.entry(session).or_default() += permits;
                    SemaphoreOutput::Acquired
                } else if timeout == Some(0) {
                    SemaphoreOutput::NotAcquired
                } else {
                    if self.waiters.iter().any(|w| w.0 == session && w.1 == req) {
                        return Err(ResourceError::DuplicateRequest { req });
                    }
                    check_waiters(self.waiters.len())?;
                    self.waiters
                        .push((session, req, permits, timeout.map(|t| at.time + t)));
                    SemaphoreOutput::Waiting
                }
            }
            SemaphoreOp::Release(permits) => {
                let held = self.held.get(&session).copied().unwrap_or(0);
                if permits == 0 || permits > held {
                    return Err(ResourceError::NotEnoughPermits {
                        held,
                        requested: permits,
                    });
                }
                if held == permits {
                    self.held.remove(&session);
                } else {
                    self.held.insert(session, held - permits);
                }
                self.available += permits;
                serve(&mut self.available, &mut self.held, &mut self.waiters, out);
                SemaphoreOutput::Unit
            }
            SemaphoreOp::Cancel(req) => {
                let before = self.waiters.len();
                self.waiters.retain(|w| !(w.0 == session && w.1 == req));
                let hit = before != self.waiters.len();
                serve(&mut self.available, &mut self.held, &mut self.waiters, out);
                SemaphoreOutput::Bool(hit)
            }
            SemaphoreOp::Available => SemaphoreOutput::Permits(self.available),
            SemaphoreOp::Held => {
                SemaphoreOutput::Permits(self.held.get(&session).copied().unwrap_or(0))
            }
        };
        Ok(Output::Semaphore(answer))
    }
    fn advance(&mut self, time: u64, out: &mut Out) {
        // Timeouts and grants interleave deadline by deadline.
        loop {
            let Some(first) = self
                .waiters
                .iter()
                .filter_map(|w| w.3)
                .filter(|d| *d <= time)
                .min()
            else {
                return;
            };
            let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters)
                .into_iter()
                .partition(|w| w.3.is_some_and(|d| d <= first));
            self.waiters = kept;
            for (s, req, _, _) in gone {
                out.push((s, Event::Semaphore(SemaphoreEvent::TimedOut { req })));
            }
            serve(&mut self.available, &mut self.held, &mut self.waiters, out);
        }
    }
    fn close(&mut self, _at: At, session: SessionId, out: &mut Out) {
        self.waiters.retain(|w| w.0 != session);
        if let Some(h) = self.held.remove(&session) {
            self.available += h;
        }
        serve(&mut self.available, &mut self.held, &mut self.waiters, out);
    }
}

fn semaphore_op() -> impl Strategy<Value = SemaphoreOp> {
    prop_oneof![
        5 => (0..3u64, 0..5u64, timeout()).prop_map(|(r, p, t)| SemaphoreOp::Acquire(r, p, t)),
        4 => (0..4u64).prop_map(SemaphoreOp::Release),
        1 => (0..3u64).prop_map(SemaphoreOp::Cancel),
        1 => Just(SemaphoreOp::Available),
        1 => Just(SemaphoreOp::Held),
    ]
}

// ---------------------------------------------------------------- latch

const COUNT: u64 = 2;

#[derive(Clone, Debug)]
enum LatchOp {
    CountDown,
    Await(u64, Option<u64>),
    Cancel(u64),
    SetCount(u64),
    Count,
}

struct LatchModel {
    count: u64,
    waiters: Vec<W>,
}

impl Default for LatchModel {
    fn default() -> Self {
        Self {
            count: COUNT,
            waiters: Vec::new(),
        }
    }
}

impl Model for LatchModel {
    type Op = LatchOp;
    fn spec() -> Spec {
        Spec::Latch { count: COUNT }
    }
    fn request(op: &LatchOp) -> Request {
        let command = |command| {
            Request::Command(Command::Latch {
                name: name(),
                command,
            })
        };
        match *op {
            LatchOp::CountDown => command(LatchCommand::CountDown),
            LatchOp::Await(req, timeout_ms) => command(LatchCommand::Await { req, timeout_ms }),
            LatchOp::Cancel(req) => command(LatchCommand::Cancel { req }),
            LatchOp::SetCount(n) => command(LatchCommand::SetCount(n)),
            LatchOp::Count => Request::Query(Query::Latch {
                name: name(),
                query: LatchQuery::Count,
            }),
        }
    }
    fn apply(
        &mut self,
        at: At,
        session: SessionId,
        op: &LatchOp,
        out: &mut Out,
    ) -> Result<Output, ResourceError> {
        let answer = match *op {
            LatchOp::CountDown => {
                if self.count > 0 {
                    self.count -= 1;
                    if self.count == 0 {
                        for (s, req, _) in std::mem::take(&mut self.waiters) {
                            out.push((s, Event::Latch(LatchEvent::Opened { req })));
                        }
                    }
                }
                LatchOutput::Count(self.count)
            }
            LatchOp::Await(req, timeout) => {
                if self.count == 0 {
                    LatchOutput::Open
                } else if timeout == Some(0) {
                    LatchOutput::NotOpen
                } else {
                    if self.waiters.iter().any(|w| w.0 == session && w.1 == req) {
                        return Err(ResourceError::DuplicateRequest { req });
                    }
                    check_waiters(self.waiters.len())?;
                    self.waiters
                        .push((session, req, timeout.map(|t| at.time + t)));
                    LatchOutput::Waiting
                }
            }
            LatchOp::Cancel(req) => {
                let before = self.waiters.len();
                self.waiters.retain(|w| !(w.0 == session && w.1 == req));
                LatchOutput::Bool(before != self.waiters.len())
            }
            LatchOp::SetCount(n) => {
                if n == 0 {
                    return Err(ResourceError::InvalidArgument(
                        "a latch count must be at least 1".into(),
                    ));
                }
                let open = self.count == 0;
                if open {
                    self.count = n;
                }
                LatchOutput::Bool(open)
            }
            LatchOp::Count => LatchOutput::Count(self.count),
        };
        Ok(Output::Latch(answer))
    }
    fn advance(&mut self, time: u64, out: &mut Out) {
        expire_in_order(
            &mut self.waiters,
            |w| w.2,
            time,
            |(s, req, _)| out.push((s, Event::Latch(LatchEvent::TimedOut { req }))),
            |_| {},
        );
    }
    fn close(&mut self, _at: At, session: SessionId, _out: &mut Out) {
        self.waiters.retain(|w| w.0 != session);
    }
}

fn latch_op() -> impl Strategy<Value = LatchOp> {
    prop_oneof![
        3 => Just(LatchOp::CountDown),
        4 => (0..3u64, timeout()).prop_map(|(r, t)| LatchOp::Await(r, t)),
        1 => (0..3u64).prop_map(LatchOp::Cancel),
        2 => (0..3u64).prop_map(LatchOp::SetCount),
        1 => Just(LatchOp::Count),
    ]
}

// ---------------------------------------------------------------- topic

#[derive(Clone, Debug)]
enum TopicOp {
    Publish(Bytes),
    Subscribe,
    Unsubscribe,
    Subscribers,
}

#[derive(Default)]
struct TopicModel {
    published: u64,
    subscribers: BTreeSet<SessionId>,
}

impl Model for TopicModel {
    type Op = TopicOp;
    fn spec() -> Spec {
        Spec::Topic
    }
    fn request(op: &TopicOp) -> Request {
        let command = |command| {
            Request::Command(Command::Topic {
                name: name(),
                command,
            })
        };
        match op.clone() {
            TopicOp::Publish(m) => command(TopicCommand::Publish(m)),
            TopicOp::Subscribe => command(TopicCommand::Subscribe),
            TopicOp::Unsubscribe => command(TopicCommand::Unsubscribe),
            TopicOp::Subscribers => Request::Query(Query::Topic {
                name: name(),
                query: TopicQuery::Subscribers,
            }),
        }
    }
    fn apply(
        &mut self,
        _at: At,
        session: SessionId,
        op: &TopicOp,
        out: &mut Out,
    ) -> Result<Output, ResourceError> {
        let answer = match op {
            TopicOp::Publish(m) => {
                check_value(m)?;
                self.published += 1;
                let event = TopicEvent::Message {
                    seq: self.published,
                    message: m.clone(),
                };
                to_all(out, &self.subscribers, Event::Topic, event);
                TopicOutput::Count(self.subscribers.len() as u64)
            }
            TopicOp::Subscribe => {
                listen(&mut self.subscribers, session)?;
                TopicOutput::Unit
            }
            TopicOp::Unsubscribe => {
                self.subscribers.remove(&session);
                TopicOutput::Unit
            }
            TopicOp::Subscribers => TopicOutput::Count(self.subscribers.len() as u64),
        };
        Ok(Output::Topic(answer))
    }
    fn advance(&mut self, _time: u64, _out: &mut Out) {}
    fn close(&mut self, _at: At, session: SessionId, _out: &mut Out) {
        self.subscribers.remove(&session);
    }
}

fn topic_op() -> impl Strategy<Value = TopicOp> {
    prop_oneof![
        4 => value().prop_map(TopicOp::Publish),
        2 => Just(TopicOp::Subscribe),
        1 => Just(TopicOp::Unsubscribe),
        1 => Just(TopicOp::Subscribers),
    ]
}

// ---------------------------------------------------------------- the runs

proptest! {
    #![proptest_config(config())]

    #[test]
    fn value_matches_model(steps in steps(value_op())) {
        run::<ValueModel>(steps)?;
    }

    #[test]
    fn long_matches_model(steps in steps(long_op())) {
        run::<LongModel>(steps)?;
    }

    #[test]
    fn map_matches_model(steps in steps(map_op())) {
        run::<MapModel>(steps)?;
    }

    #[test]
    fn multimap_natural_matches_model(steps in steps(multimap_op())) {
        run::<MultiMapModel<false>>(steps)?;
    }

    #[test]
    fn multimap_insertion_matches_model(steps in steps(multimap_op())) {
        run::<MultiMapModel<true>>(steps)?;
    }

    #[test]
    fn set_matches_model(steps in steps(set_op())) {
        run::<SetModel>(steps)?;
    }

    #[test]
    fn queue_matches_model(steps in steps(queue_op())) {
        run::<QueueModel>(steps)?;
    }

    #[test]
    fn lock_matches_model(steps in steps(lock_op())) {
        run::<LockModel<false>>(steps)?;
    }

    #[test]
    fn reentrant_lock_matches_model(steps in steps(lock_op())) {
        run::<LockModel<true>>(steps)?;
    }

    #[test]
    fn election_matches_model(steps in steps(election_op())) {
        run::<ElectionModel>(steps)?;
    }

    #[test]
    fn semaphore_matches_model(steps in steps(semaphore_op())) {
        run::<SemaphoreModel>(steps)?;
    }

    #[test]
    fn latch_matches_model(steps in steps(latch_op())) {
        run::<LatchModel>(steps)?;
    }

    #[test]
    fn topic_matches_model(steps in steps(topic_op())) {
        run::<TopicModel>(steps)?;
    }
}

// ---------------------------------------------------------------- group

mod group_model {
    use super::*;
    use copycat_primitives::group::*;

    #[derive(Clone, Debug)]
    pub enum GroupOp {
        Join(Option<String>, bool, Bytes),
        Leave(String),
        Remove(String),
        SetMetadata(String, Bytes),
        Listen,
        Unlisten,
        Send(u64, Delivery, Bytes, bool),
        Ack(u64, Option<Bytes>),
        Members,
        Member(String),
        Leader,
    }

    #[derive(Clone)]
    struct M {
        session: Option<SessionId>,
        persistent: bool,
        metadata: Bytes,
        joined: u64,
    }

    #[derive(Clone, Copy, PartialEq)]
    enum K {
        Direct,
        Random,
        Broadcast,
    }

    #[derive(Clone)]
    struct Msg {
        req: u64,
        from: SessionId,
        to: String,
        kind: K,
        payload: Bytes,
        reply: bool,
    }

    #[derive(Default)]
    pub struct GroupModel {
        members: BTreeMap<String, M>,
        listeners: BTreeSet<SessionId>,
        leader: Option<(String, u64)>,
        messages: BTreeMap<u64, Msg>,
        next_message: u64,
        fence: u64,
    }

    /// The documented deterministic pick: splitmix64 over the log index
    /// and the message id.
    fn pick(index: u64, message: u64, n: usize) -> usize {
        let mut x = index ^ message.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        (x % n as u64) as usize
    }

    impl GroupModel {
        fn tell(&self, out: &mut Out, event: GroupEvent) {
            to_all(out, &self.listeners, Event::Group, event);
        }
        fn alive(&self) -> Vec<String> {
            self.members
                .iter()
                .filter(|(_, m)| m.session.is_some())
                .map(|(id, _)| id.clone())
                .collect()
        }
        fn deliver(&self, out: &mut Out, id: u64) {
            let m = &self.messages[&id];
            if let Some(s) = self.members.get(&m.to).and_then(|x| x.session) {
                out.push((
                    s,
                    Event::Group(GroupEvent::Message {
                        message: id,
                        member: m.to.clone(),
                        from: m.from,
                        payload: m.payload.clone(),
                        reply: m.reply,
                    }),
                ));
            }
        }
        fn reroute(&mut self, at: At, out: &mut Out, gone: &str) {
            let ids: Vec<u64> = self
                .messages
                .iter()
                .filter(|(_, m)| m.to == gone)
                .map(|(id, _)| *id)
                .collect();
            let member = self.members.contains_key(gone);
            for id in ids {
                let alive = self.alive();
                let kind = self.messages[&id].kind;
                if kind == K::Random && !alive.is_empty() {
                    self.messages.get_mut(&id).unwrap().to =
                        alive[pick(at.index, id, alive.len())].clone();
                    self.deliver(out, id);
                } else if kind == K::Direct && member {
                } else {
                    let m = self.messages.remove(&id).unwrap();
                    out.push((
                        m.from,
                        Event::Group(GroupEvent::Failed {
                            req: m.req,
                            message: id,
                        }),
                    ));
                }
            }
        }
        fn elect(&mut self, at: At, out: &mut Out) {
            if let Some((id, _)) = &self.leader {
                if self.members.get(id).is_some_and(|m| m.session.is_some()) {
                    return;
                }
            }
            let next = self
                .members
                .iter()
                .filter(|(_, m)| m.session.is_some())
                .min_by_key(|(_, m)| m.joined)
                .map(|(id, _)| id.clone());
            if next.is_none() && self.leader.is_none() {
                return;
            }
            self.leader = next.map(|id| (id, fence(&mut self.fence, at.index)));
            let leader = self.leader.clone();
            self.tell(out, GroupEvent::Leader { leader });
        }
        fn mine(&self, id: &str, s: SessionId) -> Result<(), ResourceError> {
            match self.members.get(id) {
                None => Err(ResourceError::UnknownMember { id: id.into() }),
                Some(m) if m.session != Some(s) => Err(ResourceError::NotMember { id: id.into() }),
                _ => Ok(()),
            }
        }
        fn info(&self, id: &str) -> Option<MemberInfo> {
            self.members.get(id).map(|m| MemberInfo {
                id: id.to_string(),
                session: m.session,
                persistent: m.persistent,
                metadata: m.metadata.clone(),
            })
        }
        fn gone(&mut self, at: At, out: &mut Out, id: &str) {
            self.members.remove(id);
            self.tell(out, GroupEvent::Left { id: id.into() });
            self.reroute(at, out, id);
            self.elect(at, out);
        }
    }

    impl Model for GroupModel {
        type Op = GroupOp;
        fn spec() -> Spec {
            Spec::Group
        }
        fn request(op: &GroupOp) -> Request {
            let command = |command| {
                Request::Command(Command::Group {
                    name: name(),
                    command,
                })
            };
            let query = |query| {
                Request::Query(Query::Group {
                    name: name(),
                    query,
                })
            };
            match op.clone() {
                GroupOp::Join(id, persistent, metadata) => command(GroupCommand::Join {
                    id,
                    persistent,
                    metadata,
                }),
                GroupOp::Leave(id) => command(GroupCommand::Leave(id)),
                GroupOp::Remove(id) => command(GroupCommand::Remove(id)),
                GroupOp::SetMetadata(id, metadata) => {
                    command(GroupCommand::SetMetadata { id, metadata })
                }
                GroupOp::Listen => command(GroupCommand::Listen),
                GroupOp::Unlisten => command(GroupCommand::Unlisten),
                GroupOp::Send(req, to, payload, reply) => command(GroupCommand::Send {
                    req,
                    to,
                    payload,
                    reply,
                }),
                GroupOp::Ack(message, reply) => command(GroupCommand::Ack { message, reply }),
                GroupOp::Members => query(GroupQuery::Members),
                GroupOp::Member(id) => query(GroupQuery::Member(id)),
                GroupOp::Leader => query(GroupQuery::Leader),
            }
        }
        fn apply(
            &mut self,
            at: At,
            s: SessionId,
            op: &GroupOp,
            out: &mut Out,
        ) -> Result<Output, ResourceError> {
            let answer = match op.clone() {
                GroupOp::Join(id, persistent, metadata) => {
                    let id = id.unwrap_or_else(|| format!("m{}", at.index));
                    if id.is_empty() {
                        return Err(ResourceError::InvalidArgument(
                            "a member id must not be empty".into(),
                        ));
                    }
                    let limit = limits().max_name_bytes;
                    if id.len() > limit {
                        return Err(ResourceError::NameTooLong {
                            len: id.len(),
                            limit,
                        });
                    }
                    check_value(&metadata)?;
                    match self.members.get(&id).cloned() {
                        Some(m) if m.session == Some(s) => {
                            self.members.get_mut(&id).unwrap().metadata = metadata;
                            return Ok(Output::Group(GroupOutput::Joined(id)));
                        }
                        Some(m) if m.session.is_some() => {
                            return Err(ResourceError::MemberInUse { id })
                        }
                        Some(m) => {
                            self.members.insert(
                                id.clone(),
                                M {
                                    session: Some(s),
                                    persistent,
                                    metadata,
                                    joined: m.joined,
                                },
                            );
                            self.tell(
                                out,
                                GroupEvent::Status {
                                    id: id.clone(),
                                    alive: true,
                                },
                            );
                            let waiting: Vec<u64> = self
                                .messages
                                .iter()
                                .filter(|(_, m)| m.to == id)
                                .map(|(k, _)| *k)
                                .collect();
                            for k in waiting {
                                self.deliver(out, k);
                            }
                        }
                        None => {
                            check_entries(self.members.len())?;
                            self.members.insert(
                                id.clone(),
                                M {
                                    session: Some(s),
                                    persistent,
                                    metadata,
                                    joined: at.index,
                                },
                            );
                            self.tell(out, GroupEvent::Joined { id: id.clone() });
                        }
                    }
                    self.elect(at, out);
                    GroupOutput::Joined(id)
                }
                GroupOp::Leave(id) => {
                    self.mine(&id, s)?;
                    self.gone(at, out, &id);
                    GroupOutput::Unit
                }
                GroupOp::Remove(id) => {
                    if !self.members.contains_key(&id) {
                        return Err(ResourceError::UnknownMember { id });
                    }
                    self.gone(at, out, &id);
                    GroupOutput::Unit
                }
                GroupOp::SetMetadata(id, metadata) => {
                    self.mine(&id, s)?;
                    check_value(&metadata)?;
                    self.members.get_mut(&id).unwrap().metadata = metadata;
                    GroupOutput::Unit
                }
                GroupOp::Listen => {
                    listen(&mut self.listeners, s)?;
                    GroupOutput::Unit
                }
                GroupOp::Unlisten => {
                    self.listeners.remove(&s);
                    GroupOutput::Unit
                }
                GroupOp::Send(req, to, payload, reply) => {
                    check_value(&payload)?;
                    let alive = self.alive();
                    let (kind, to) = match to {
                        Delivery::Direct(id) => {
                            if !self.members.contains_key(&id) {
                                return Err(ResourceError::UnknownMember { id });
                            }
                            (K::Direct, vec![id])
                        }
                        Delivery::Random => {
                            if alive.is_empty() {
                                return Err(ResourceError::NoMembers);
                            }
                            let i = pick(at.index, self.next_message, alive.len());
                            (K::Random, vec![alive[i].clone()])
                        }
                        Delivery::Broadcast => (K::Broadcast, alive),
                    };
                    let limit = limits().max_entries;
                    if self.messages.len() + to.len() > limit {
                        return Err(ResourceError::TooManyEntries { limit });
                    }
                    let mut ids = Vec::new();
                    for to in to {
                        let id = self.next_message;
                        self.next_message += 1;
                        self.messages.insert(
                            id,
                            Msg {
                                req,
                                from: s,
                                to,
                                kind,
                                payload: payload.clone(),
                                reply,
                            },
                        );
                        self.deliver(out, id);
                        ids.push(id);
                    }
                    GroupOutput::Sent(ids)
                }
                GroupOp::Ack(message, reply) => {
                    let recipient = self
                        .messages
                        .get(&message)
                        .and_then(|m| self.members.get(&m.to).and_then(|x| x.session));
                    if recipient != Some(s) {
                        return Err(ResourceError::UnknownMessage { id: message });
                    }
                    if let Some(r) = &reply {
                        check_value(r)?;
                    }
                    let m = self.messages.remove(&message).unwrap();
                    out.push((
                        m.from,
                        Event::Group(GroupEvent::Delivered {
                            req: m.req,
                            message,
                            member: m.to,
                            reply,
                        }),
                    ));
                    GroupOutput::Unit
                }
                GroupOp::Members => GroupOutput::Members(
                    self.members.keys().filter_map(|id| self.info(id)).collect(),
                ),
                GroupOp::Member(id) => GroupOutput::Member(self.info(&id)),
                GroupOp::Leader => GroupOutput::Leader(self.leader.clone()),
            };
            Ok(Output::Group(answer))
        }
        fn advance(&mut self, _time: u64, _out: &mut Out) {}
        fn close(&mut self, at: At, s: SessionId, out: &mut Out) {
            self.listeners.remove(&s);
            self.messages.retain(|_, m| m.from != s);
            let mine: Vec<String> = self
                .members
                .iter()
                .filter(|(_, m)| m.session == Some(s))
                .map(|(id, _)| id.clone())
                .collect();
            for id in &mine {
                if self.members[id].persistent {
                    self.members.get_mut(id).unwrap().session = None;
                    self.tell(
                        out,
                        GroupEvent::Status {
                            id: id.clone(),
                            alive: false,
                        },
                    );
                } else {
                    self.members.remove(id);
                    self.tell(out, GroupEvent::Left { id: id.clone() });
                }
            }
            for id in &mine {
                self.reroute(at, out, id);
            }
            self.elect(at, out);
        }
    }

    fn member() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("c".to_string()),
            Just("toolong-id".to_string()),
        ]
    }

    pub fn group_op() -> impl Strategy<Value = GroupOp> {
        let delivery = prop_oneof![
            member().prop_map(Delivery::Direct),
            Just(Delivery::Random),
            Just(Delivery::Broadcast),
        ];
        prop_oneof![
            5 => (proptest::option::of(member()), any::<bool>(), value())
                .prop_map(|(id, p, m)| GroupOp::Join(id, p, m)),
            1 => member().prop_map(GroupOp::Leave),
            1 => member().prop_map(GroupOp::Remove),
            1 => (member(), value()).prop_map(|(id, m)| GroupOp::SetMetadata(id, m)),
            2 => Just(GroupOp::Listen),
            1 => Just(GroupOp::Unlisten),
            4 => (0..3u64, delivery, value(), any::<bool>())
                .prop_map(|(r, d, p, reply)| GroupOp::Send(r, d, p, reply)),
            4 => (0..8u64, proptest::option::of(value())).prop_map(|(m, r)| GroupOp::Ack(m, r)),
            1 => Just(GroupOp::Members),
            1 => member().prop_map(GroupOp::Member),
            1 => Just(GroupOp::Leader),
        ]
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn group_matches_model(steps in steps(group_model::group_op())) {
        run::<group_model::GroupModel>(steps)?;
    }
}
