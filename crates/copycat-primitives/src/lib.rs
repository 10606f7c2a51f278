//! Copycat's replicated primitives: named values, counters, maps,
//! multimaps, sets, queues, locks, elections, groups, semaphores, latches
//! and topics, all multiplexed on one Raft log by one state machine.
//!
//! * **Servers** serve [`Resources`], the resource manager:
//!   `copycat_server::Server::builder(Resources::default())`. It holds any
//!   number of resources by name; each type is a deterministic state
//!   machine of its own module ([`value`], [`long`], [`map`], [`multimap`],
//!   [`set`], [`queue`], [`lock`], [`election`], [`group`], [`semaphore`],
//!   [`latch`], [`topic`]) implementing [`Resource`], testable without the
//!   manager through [`Ctx`].
//! * **Programs** wrap a `copycat_client::Client` in [`Primitives`] and
//!   open typed handles ([`Lock`], [`Queue`], [`Map`], ...). Blocking calls
//!   wait for the event the cluster pushes; listeners are [`Subscription`]
//!   streams; errors are [`Error`].
//!
//! ```no_run
//! use copycat_primitives::{Lock, Primitives, Queue};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = copycat_client::Client::builder()
//!     .servers(["127.0.0.1:5700"])
//!     .connect()
//!     .await?;
//! let p = Primitives::new(client);
//! let lock = Lock::open(&p, "name").await?;
//! let token = lock.lock().await?; // a fencing token: pass it on
//! let jobs = Queue::<String>::open(&p, "jobs").await?;
//! let job = jobs.take().await?; // woken by the offer, never polling
//! lock.unlock().await?;
//! # let _ = (token, job);
//! # Ok(()) }
//! ```
//!
//! The guarantees and failure behaviour of each primitive are in
//! `docs/primitives/` (whose examples are compiled as this crate's
//! doctests).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "client")]
pub mod client;
mod core;
pub mod election;
mod error;
mod fifo;
pub mod group;
pub mod latch;
pub mod lock;
pub mod long;
mod manager;
pub mod map;
pub mod multimap;
pub mod queue;
pub mod semaphore;
#[cfg(feature = "server")]
mod server;
pub mod set;
pub mod topic;
pub mod value;

pub use crate::core::{
    Ctx, Limits, Page, Resource, ResourceType, Spec, ValueOrder, Waiter, MAX_PAGE_BYTES,
};
#[cfg(feature = "client")]
pub use client::{
    CountDownLatch, Election, Error, Group, GroupChange, GroupMessage, Lock, Long, Map, MapChange,
    MultiMap, NearCache, Primitives, Queue, QueueChange, Receipt, Semaphore, Set, SetChange,
    Subscription, Topic, TopicMessage, Value, ValueChange,
};
pub use error::ResourceError;
#[cfg(feature = "client")]
pub use manager::ResourcesApi;
pub use manager::{Command, Event, Notice, Output, Query, ResourceInfo, EVENT_NAME, MAX_LIST_PAGE};
#[cfg(feature = "server")]
pub use server::Resources;

/// The pages of `docs/primitives/`, so that their examples compile as
/// doctests.
#[cfg(doctest)]
mod doc_pages {
    #[doc = include_str!("../../../docs/primitives/README.md")]
    struct Readme;
    #[doc = include_str!("../../../docs/primitives/value.md")]
    struct ValuePage;
    #[doc = include_str!("../../../docs/primitives/long.md")]
    struct LongPage;
    #[doc = include_str!("../../../docs/primitives/map.md")]
    struct MapPage;
    #[doc = include_str!("../../../docs/primitives/multimap.md")]
    struct MultiMapPage;
    #[doc = include_str!("../../../docs/primitives/set.md")]
    struct SetPage;
    #[doc = include_str!("../../../docs/primitives/queue.md")]
    struct QueuePage;
    #[doc = include_str!("../../../docs/primitives/lock.md")]
    struct LockPage;
    #[doc = include_str!("../../../docs/primitives/election.md")]
    struct ElectionPage;
    #[doc = include_str!("../../../docs/primitives/group.md")]
    struct GroupPage;
    #[doc = include_str!("../../../docs/primitives/semaphore.md")]
    struct SemaphorePage;
    #[doc = include_str!("../../../docs/primitives/latch.md")]
    struct LatchPage;
    #[doc = include_str!("../../../docs/primitives/topic.md")]
    struct TopicPage;
}
