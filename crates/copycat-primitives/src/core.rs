//! What every resource type shares: its type tag and creation spec, the
//! manager's limits, the deterministic context a resource applies in, and
//! the [`Resource`] trait.

use std::fmt;

use bytes::Bytes;
use copycat_proto::SessionId;
use serde::{Deserialize, Serialize};

use crate::ResourceError;

/// The type of a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    /// [`crate::value`].
    Value,
    /// [`crate::long`].
    Long,
    /// [`crate::map`].
    Map,
    /// [`crate::multimap`].
    MultiMap,
    /// [`crate::set`].
    Set,
    /// [`crate::queue`].
    Queue,
    /// [`crate::lock`].
    Lock,
    /// [`crate::election`].
    Election,
    /// [`crate::group`].
    Group,
    /// [`crate::semaphore`].
    Semaphore,
    /// [`crate::latch`].
    Latch,
    /// [`crate::topic`].
    Topic,
}

impl ResourceType {
    /// Every type, in declaration order.
    pub const ALL: [ResourceType; 12] = [
        ResourceType::Value,
        ResourceType::Long,
        ResourceType::Map,
        ResourceType::MultiMap,
        ResourceType::Set,
        ResourceType::Queue,
        ResourceType::Lock,
        ResourceType::Election,
        ResourceType::Group,
        ResourceType::Semaphore,
        ResourceType::Latch,
        ResourceType::Topic,
    ];
}

/// Parses the names [`fmt::Display`] writes (`value`, `multimap`, ...); the
/// error lists them.
impl std::str::FromStr for ResourceType {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.to_string() == name)
            .ok_or_else(|| {
                let names: Vec<String> = Self::ALL.iter().map(ToString::to_string).collect();
                format!(
                    "unknown resource type {name:?}; one of {}",
                    names.join(", ")
                )
            })
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ResourceType::Value => "value",
            ResourceType::Long => "long",
            ResourceType::Map => "map",
            ResourceType::MultiMap => "multimap",
            ResourceType::Set => "set",
            ResourceType::Queue => "queue",
            ResourceType::Lock => "lock",
            ResourceType::Election => "election",
            ResourceType::Group => "group",
            ResourceType::Semaphore => "semaphore",
            ResourceType::Latch => "latch",
            ResourceType::Topic => "topic",
        };
        f.write_str(name)
    }
}

/// How a multimap orders the values of one key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValueOrder {
    /// By the values' encoded bytes (lexicographic).
    #[default]
    Natural,
    /// In the order they were put.
    Insertion,
}

/// A resource's type with the settings it is created with. Settings apply
/// when the resource is created; opening an existing resource of the same
/// type returns its existing spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Spec {
    /// A single value.
    Value,
    /// A 64-bit counter.
    Long,
    /// A map.
    Map,
    /// A multimap with the given value order.
    MultiMap {
        /// Value order within a key.
        order: ValueOrder,
    },
    /// A set.
    Set,
    /// A FIFO queue.
    Queue,
    /// A fair lock.
    Lock {
        /// Whether the holding session may lock again (counted).
        reentrant: bool,
    },
    /// A leader election.
    Election,
    /// A membership group.
    Group,
    /// A counting semaphore.
    Semaphore {
        /// The permits it starts with (and holds in total).
        permits: u64,
    },
    /// A count-down latch.
    Latch {
        /// The count it starts at.
        count: u64,
    },
    /// A publish/subscribe topic.
    Topic,
}

impl Spec {
    /// The resource type.
    pub fn resource_type(&self) -> ResourceType {
        match self {
            Spec::Value => ResourceType::Value,
            Spec::Long => ResourceType::Long,
            Spec::Map => ResourceType::Map,
            Spec::MultiMap { .. } => ResourceType::MultiMap,
            Spec::Set => ResourceType::Set,
            Spec::Queue => ResourceType::Queue,
            Spec::Lock { .. } => ResourceType::Lock,
            Spec::Election => ResourceType::Election,
            Spec::Group => ResourceType::Group,
            Spec::Semaphore { .. } => ResourceType::Semaphore,
            Spec::Latch { .. } => ResourceType::Latch,
            Spec::Topic => ResourceType::Topic,
        }
    }
}

/// The manager's limits. Every server of a cluster must use the same
/// limits (they decide which commands fail). Exceeding one is a
/// [`ResourceError`], never a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Longest resource name, in bytes (default 256).
    pub max_name_bytes: usize,
    /// Most resources in the cluster (default 10,000).
    pub max_resources: usize,
    /// Largest value, key, member metadata or message, in bytes
    /// (default 1 MiB). With `max_entries` it bounds a resource's bytes.
    pub max_value_bytes: usize,
    /// Most entries of one collection: map entries, multimap pairs, set
    /// members, queue items, group members, pending group messages
    /// (default 100,000).
    pub max_entries: usize,
    /// Most waiting requests (lock, take, acquire, await, campaign) or
    /// listeners and subscribers of one resource (default 10,000).
    pub max_waiters: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_name_bytes: 256,
            max_resources: 10_000,
            max_value_bytes: 1 << 20,
            max_entries: 100_000,
            max_waiters: 10_000,
        }
    }
}

impl Limits {
    /// Refuse a value larger than `max_value_bytes`.
    pub fn check_value(&self, value: &[u8]) -> Result<(), ResourceError> {
        if value.len() > self.max_value_bytes {
            return Err(ResourceError::ValueTooLarge {
                size: value.len(),
                limit: self.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Refuse growing a collection of `len` entries past `max_entries`.
    pub fn check_entries(&self, len: usize) -> Result<(), ResourceError> {
        if len >= self.max_entries {
            return Err(ResourceError::TooManyEntries {
                limit: self.max_entries,
            });
        }
        Ok(())
    }

    /// Refuse a waiter or listener past `max_waiters`.
    pub fn check_waiters(&self, len: usize) -> Result<(), ResourceError> {
        if len >= self.max_waiters {
            return Err(ResourceError::TooManyWaiters {
                limit: self.max_waiters,
            });
        }
        Ok(())
    }
}

/// The deterministic context a resource applies a command, a timer or a
/// session callback in. The manager builds it from the replica's
/// `ApplyContext`; tests of a single resource build it with [`Ctx::new`].
pub struct Ctx<'a, E> {
    index: u64,
    time_ms: u64,
    session: Option<SessionId>,
    limits: &'a Limits,
    fence: &'a mut u64,
    events: Vec<(SessionId, E)>,
}

impl<'a, E> Ctx<'a, E> {
    /// A context at log `index` and time `time_ms`, for a command of
    /// `session` (`None` for timers and callbacks). `fence` is the highest
    /// fencing token issued so far; [`Ctx::next_fence`] raises it.
    pub fn new(
        index: u64,
        time_ms: u64,
        session: Option<SessionId>,
        limits: &'a Limits,
        fence: &'a mut u64,
    ) -> Self {
        Self {
            index,
            time_ms,
            session,
            limits,
            fence,
            events: Vec::new(),
        }
    }

    /// The log index being applied.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The deterministic time in milliseconds.
    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }

    /// The calling session, or [`ResourceError::NoSession`].
    pub fn caller(&self) -> Result<SessionId, ResourceError> {
        self.session.ok_or(ResourceError::NoSession)
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        self.limits
    }

    /// A new fencing token: the log index of this entry, or one more than
    /// the last token if that was issued at this index already. Tokens are
    /// unique and strictly increasing over the cluster's whole history
    /// (they come from the log, not from a counter that can restart).
    pub fn next_fence(&mut self) -> u64 {
        let token = self.index.max(*self.fence + 1);
        *self.fence = token;
        token
    }

    /// The highest fencing token issued so far.
    pub fn fence(&self) -> u64 {
        *self.fence
    }

    /// Send `event` to `session`.
    pub fn emit(&mut self, session: SessionId, event: E) {
        self.events.push((session, event));
    }

    /// The events emitted so far, in order (drained).
    pub fn take_events(&mut self) -> Vec<(SessionId, E)> {
        std::mem::take(&mut self.events)
    }

    /// A deadline `timeout_ms` from now, or `None` for "no deadline".
    pub fn deadline(&self, timeout_ms: Option<u64>) -> Option<u64> {
        timeout_ms.map(|t| self.time_ms.saturating_add(t))
    }

    /// The expiry time of a TTL (which must be at least 1 ms).
    pub fn ttl_deadline(&self, ttl_ms: Option<u64>) -> Result<Option<u64>, ResourceError> {
        match ttl_ms {
            Some(0) => Err(ResourceError::InvalidArgument(
                "a TTL must be at least 1 ms".into(),
            )),
            other => Ok(self.deadline(other)),
        }
    }
}

/// A resource's deterministic state machine. It sees only its arguments:
/// everything it decides depends on the commands, the context's index and
/// time, and the session callbacks, in log order.
pub trait Resource {
    /// Its commands.
    type Command;
    /// Its queries.
    type Query;
    /// What its commands and queries answer.
    type Output;
    /// The events it sends to sessions.
    type Event;

    /// Apply a command.
    fn apply(
        &mut self,
        ctx: &mut Ctx<'_, Self::Event>,
        command: Self::Command,
    ) -> Result<Self::Output, ResourceError>;

    /// Answer a query for `session` from the current state.
    fn query(&self, session: SessionId, query: Self::Query) -> Result<Self::Output, ResourceError>;

    /// Time advanced to `ctx.time_ms()`: expire what is due (TTLs, waiters'
    /// timeouts).
    fn advance(&mut self, ctx: &mut Ctx<'_, Self::Event>);

    /// The earliest time at which [`Resource::advance`] has work.
    fn next_deadline(&self) -> Option<u64>;

    /// `session` is gone: release what it held, drop its waiters and
    /// listeners.
    fn session_closed(&mut self, ctx: &mut Ctx<'_, Self::Event>, session: SessionId);

    /// Every session that waits on, holds or listens to the resource (told
    /// when it is deleted).
    fn sessions(&self) -> Vec<SessionId>;

    /// Check the invariants of a restored image; `fence` is the highest
    /// token the manager has issued.
    fn validate(&self, fence: u64) -> Result<(), String>;
}

/// A request waiting on a resource: the session, the request id the client
/// chose (echoed in the event that ends the wait) and when it gives up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    /// The waiting session.
    pub session: SessionId,
    /// The client's request id.
    pub req: u64,
    /// When the wait times out, if ever.
    pub deadline: Option<u64>,
}

/// One page of a paged listing: the items and the cursor to pass as
/// `after` for the next page (`None` at the end).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items, in order.
    pub items: Vec<T>,
    /// Where the next page starts (exclusive), if there is one.
    pub next: Option<Bytes>,
}

/// The earliest deadline among waiters.
pub(crate) fn earliest<'w>(waiters: impl IntoIterator<Item = &'w Waiter>) -> Option<u64> {
    waiters.into_iter().filter_map(|w| w.deadline).min()
}

/// Refuse a request id the session already waits with.
pub(crate) fn check_unique<'w>(
    waiters: impl IntoIterator<Item = &'w Waiter>,
    session: SessionId,
    req: u64,
) -> Result<(), ResourceError> {
    if waiters
        .into_iter()
        .any(|w| w.session == session && w.req == req)
    {
        return Err(ResourceError::DuplicateRequest { req });
    }
    Ok(())
}

/// Check that no session waits twice with one request id.
pub(crate) fn validate_waiters<'w>(
    waiters: impl IntoIterator<Item = &'w Waiter>,
) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for w in waiters {
        if !seen.insert((w.session, w.req)) {
            return Err(format!("request {} of {} waits twice", w.req, w.session));
        }
    }
    Ok(())
}

/// Most bytes of keys and values one page carries (it holds at least one
/// item, however large), so a page always fits in a response.
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// Listing of a sorted map's keys from `after` (exclusive): at most `limit`
/// items, and no more once [`MAX_PAGE_BYTES`] (counted by `size`) are in.
pub(crate) fn page_of<'m, V: Clone + 'm, T>(
    map: &'m imbl::OrdMap<Bytes, V>,
    after: Option<Bytes>,
    limit: u32,
    size: impl Fn(&Bytes, &V) -> usize,
    item: impl Fn(&Bytes, &V) -> T,
) -> Result<Page<T>, ResourceError> {
    use std::ops::Bound;
    if limit == 0 {
        return Err(ResourceError::InvalidArgument(
            "a page limit must be at least 1".into(),
        ));
    }
    let start = match &after {
        Some(key) => Bound::Excluded(key.clone()),
        None => Bound::Unbounded,
    };
    let mut items = Vec::new();
    let mut last = None;
    let mut bytes = 0usize;
    let mut range = map.range((start, Bound::Unbounded)).peekable();
    while let Some((key, value)) = range.peek() {
        if items.len() == limit as usize || (bytes >= MAX_PAGE_BYTES && !items.is_empty()) {
            break;
        }
        bytes = bytes.saturating_add(size(key, value));
        items.push(item(key, value));
        last = Some((*key).clone());
        range.next();
    }
    let next = if range.peek().is_some() { last } else { None };
    Ok(Page { items, next })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn resource_types_parse_from_their_display_names_only() {
        for kind in ResourceType::ALL {
            assert_eq!(kind.to_string().parse::<ResourceType>(), Ok(kind));
        }
        let error = "MultiMap".parse::<ResourceType>().unwrap_err();
        assert!(
            error.contains("one of value, long, map, multimap"),
            "{error}"
        );
    }

    #[test]
    fn a_page_stops_at_its_byte_budget_but_holds_one_item() {
        let big = Bytes::from(vec![0u8; MAX_PAGE_BYTES * 3 / 5]);
        let map: imbl::OrdMap<Bytes, Bytes> = ["a", "b", "c"]
            .into_iter()
            .map(|k| (Bytes::from(k), big.clone()))
            .collect();
        let size = |_: &Bytes, v: &Bytes| v.len();
        let page = page_of(&map, None, 10, size, |k, _| k.clone()).expect("page");
        assert_eq!(page.items, vec![Bytes::from("a"), Bytes::from("b")]);
        assert_eq!(page.next, Some(Bytes::from("b")));
        let rest = page_of(&map, page.next, 10, size, |k, _| k.clone()).expect("page");
        assert_eq!((rest.items, rest.next), (vec![Bytes::from("c")], None));
        let huge = imbl::OrdMap::from_iter([(
            Bytes::from("x"),
            Bytes::from(vec![0u8; MAX_PAGE_BYTES * 2]),
        )]);
        let one = page_of(&huge, None, 10, size, |k, _| k.clone()).expect("page");
        assert_eq!(
            one.items.len(),
            1,
            "an item larger than the budget still comes"
        );
        assert!(matches!(
            page_of(&map, None, 0, size, |k, _| k.clone()),
            Err(ResourceError::InvalidArgument(_))
        ));
    }
}
