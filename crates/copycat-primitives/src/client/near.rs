//! A client-side copy of a map kept current by its events.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc::error::TryRecvError;

use super::{decode, encode, Error, Map, Result, Subscription};
use crate::map::MapEvent;
use crate::Event;

/// A near cache of a [`Map`] (from [`Map::near_cache`]): this client's own
/// copy of the map, loaded when it is made and kept current by the map's
/// change events, so that its reads are served from memory without asking
/// the cluster.
///
/// What a read may see:
/// - **a state the map really had**, at some point of its history: events
///   arrive in log order and each carries the entry's new value, so the
///   copy moves from one committed state to a later one, never backwards
///   (sequential consistency, monotonic for this cache);
/// - **possibly stale**: another client's change shows once its event has
///   reached this client (about one round trip after it commits), and
///   not at all while this client is cut off from the cluster;
/// - **this client's own writes** once [`sync`](Self::sync) has returned
///   after them; [`put`](Self::put) and [`remove`](Self::remove) on the
///   cache do that for you. A linearizable read goes to the [`Map`]
///   ([`map`](Self::map)).
///
/// When the session ends (closed, or expired after a long partition) or the
/// map is deleted, the copy can no longer be kept current and every read
/// fails ([`Error::SessionEnded`], [`Error::Deleted`]) rather than answer
/// from a copy that silently stopped changing: make a new cache from a
/// handle of the new session. Clones share one copy.
pub struct NearCache<K, V> {
    map: Map<K, V>,
    shared: Arc<Shared>,
}

impl<K, V> Clone for NearCache<K, V> {
    fn clone(&self) -> Self {
        Self {
            map: self.map.clone(),
            shared: self.shared.clone(),
        }
    }
}

struct Shared {
    name: String,
    state: Mutex<Held>,
    /// The task that applies events as they come; stopped with the cache.
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().expect("near cache task lock").take() {
            task.abort();
        }
    }
}

/// The copy and the events that change it.
struct Held {
    entries: BTreeMap<Bytes, Bytes>,
    events: Subscription<Event>,
    /// Why the copy stopped following the map.
    ended: Option<Error>,
}

impl Held {
    fn apply(&mut self, event: Event, name: &str) {
        match event {
            Event::Map(MapEvent { key, new, .. }) => match new {
                Some(value) => {
                    self.entries.insert(key, value);
                }
                None => {
                    self.entries.remove(&key);
                }
            },
            Event::Deleted => self.end(Error::Deleted(name.to_string())),
            _ => {}
        }
    }

    fn end(&mut self, why: Error) {
        if self.ended.is_none() {
            self.ended = Some(why);
            self.entries.clear();
        }
    }

    /// Apply every event that has already arrived.
    fn catch_up(&mut self, name: &str) {
        while self.ended.is_none() {
            match self.events.rx.try_recv() {
                Ok(event) => self.apply(event, name),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => self.end(Error::SessionEnded),
            }
        }
    }

    /// The entries, current with every arrived event, or why there are none.
    fn current(&mut self, name: &str) -> Result<&BTreeMap<Bytes, Bytes>> {
        self.catch_up(name);
        match &self.ended {
            Some(why) => Err(why.clone()),
            None => Ok(&self.entries),
        }
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> NearCache<K, V> {
    /// A cache of `map` holding `entries` (read after `events` started).
    pub(crate) fn start(
        map: Map<K, V>,
        entries: Vec<(Bytes, Bytes)>,
        events: Subscription<Event>,
    ) -> Self {
        let name = map.name().to_string();
        let mut copy = Held {
            entries: entries.into_iter().collect(),
            events,
            ended: None,
        };
        copy.catch_up(&name);
        let shared = Arc::new(Shared {
            name,
            state: Mutex::new(copy),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(follow(Arc::downgrade(&shared)));
        *shared.task.lock().expect("near cache task lock") = Some(task.abort_handle());
        Self { map, shared }
    }

    fn read<T>(&self, f: impl FnOnce(&BTreeMap<Bytes, Bytes>) -> Result<T>) -> Result<T> {
        let mut copy = self.shared.state.lock().expect("near cache lock");
        f(copy.current(&self.shared.name)?)
    }

    /// A key's value in the copy.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let key = encode(key);
        self.read(|entries| entries.get(&key).map(|v| decode(v)).transpose())
    }

    /// A key's value in the copy, or `default`.
    pub fn get_or_default(&self, key: &K, default: V) -> Result<V> {
        Ok(self.get(key)?.unwrap_or(default))
    }

    /// Whether `key` is in the copy.
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        let key = encode(key);
        self.read(|entries| Ok(entries.contains_key(&key)))
    }

    /// The number of entries in the copy.
    pub fn len(&self) -> Result<usize> {
        self.read(|entries| Ok(entries.len()))
    }

    /// Whether the copy is empty.
    pub fn is_empty(&self) -> Result<bool> {
        self.read(|entries| Ok(entries.is_empty()))
    }

    /// Every entry of the copy, in key order (one consistent state).
    pub fn entries(&self) -> Result<Vec<(K, V)>> {
        self.read(|entries| {
            entries
                .iter()
                .map(|(k, v)| Ok((decode(k)?, decode(v)?)))
                .collect()
        })
    }

    /// Wait until the copy holds every change whose event this client had
    /// received when called: after a write through any handle of the same
    /// [`Primitives`](super::Primitives) has returned, `sync` makes the copy show it
    /// (or a later value).
    pub async fn sync(&self) -> Result<()> {
        self.map.primitives().caught_up().await;
        self.read(|_| Ok(()))
    }

    /// Put through the map, then [`sync`](Self::sync); answers the previous value.
    pub async fn put(&self, key: &K, value: &V) -> Result<Option<V>> {
        let previous = self.map.put(key, value).await?;
        self.sync().await?;
        Ok(previous)
    }

    /// Remove through the map, then [`sync`](Self::sync); answers the previous value.
    pub async fn remove(&self, key: &K) -> Result<Option<V>> {
        let previous = self.map.remove(key).await?;
        self.sync().await?;
        Ok(previous)
    }

    /// The map this caches, for writes and linearizable reads.
    pub fn map(&self) -> &Map<K, V> {
        &self.map
    }
}

/// Apply the map's events to the copy as they arrive, until the copy is
/// dropped or ends.
async fn follow(shared: Weak<Shared>) {
    std::future::poll_fn(|cx| {
        let Some(shared) = shared.upgrade() else {
            return Poll::Ready(());
        };
        let mut copy = shared.state.lock().expect("near cache lock");
        loop {
            if copy.ended.is_some() {
                return Poll::Ready(());
            }
            match copy.events.rx.poll_recv(cx) {
                Poll::Ready(Some(event)) => copy.apply(event, &shared.name),
                Poll::Ready(None) => copy.end(Error::SessionEnded),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}
