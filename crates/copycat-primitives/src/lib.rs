//! Copycat's replicated primitives.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

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
pub mod set;
pub mod topic;
pub mod value;

pub use crate::core::{Ctx, Limits, Page, Resource, ResourceType, Spec, ValueOrder, Waiter};
pub use client::{
    CountDownLatch, Election, Error, Group, GroupChange, GroupMessage, Lock, Long, Map, MapChange,
    MultiMap, Primitives, Queue, QueueChange, Receipt, Semaphore, Set, SetChange, Subscription,
    Topic, TopicMessage, Value, ValueChange,
};
pub use error::ResourceError;
pub use manager::{
    Command, Event, Notice, Output, Query, ResourceInfo, Resources, ResourcesApi, EVENT_NAME,
    MAX_LIST_PAGE,
};
