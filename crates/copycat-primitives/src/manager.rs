//! The commands, queries, answers and events the resource manager
//! ([`crate::Resources`]) speaks: shared by servers and clients.

use serde::{Deserialize, Serialize};

use crate::election::{ElectionCommand, ElectionEvent, ElectionOutput, ElectionQuery};
use crate::group::{GroupCommand, GroupEvent, GroupOutput, GroupQuery};
use crate::latch::{LatchCommand, LatchEvent, LatchOutput, LatchQuery};
use crate::lock::{LockCommand, LockEvent, LockOutput, LockQuery};
use crate::long::{LongCommand, LongEvent, LongOutput, LongQuery};
use crate::map::{MapCommand, MapEvent, MapOutput, MapQuery};
use crate::multimap::{MultiMapCommand, MultiMapEvent, MultiMapOutput, MultiMapQuery};
use crate::queue::{QueueCommand, QueueEvent, QueueOutput, QueueQuery};
use crate::semaphore::{SemaphoreCommand, SemaphoreEvent, SemaphoreOutput, SemaphoreQuery};
use crate::set::{SetCommand, SetEvent, SetOutput, SetQuery};
use crate::topic::{TopicCommand, TopicEvent, TopicOutput, TopicQuery};
use crate::value::{ValueCommand, ValueEvent, ValueOutput, ValueQuery};
#[cfg(feature = "client")]
use crate::ResourceError;
use crate::{ResourceType, Spec};

/// The name of every event the manager publishes; its payload is a
/// [`Notice`].
pub const EVENT_NAME: &str = "copycat.primitives";

/// Largest page of names [`Query::List`] answers.
pub const MAX_LIST_PAGE: u32 = 1_000;

/// What the manager applies: open, delete, or an operation on a named
/// resource of one type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // each operation variant is `{ name, command }`
pub enum Command {
    /// Get the resource `name`, creating it per `spec` if absent; a
    /// resource of another type is [`ResourceError::WrongType`].
    Open {
        name: String,
        spec: Spec,
    },
    /// Delete a resource (its waiters and listeners are told
    /// [`Event::Deleted`]); answers whether it existed.
    Delete {
        name: String,
    },
    Value {
        name: String,
        command: ValueCommand,
    },
    Long {
        name: String,
        command: LongCommand,
    },
    Map {
        name: String,
        command: MapCommand,
    },
    MultiMap {
        name: String,
        command: MultiMapCommand,
    },
    Set {
        name: String,
        command: SetCommand,
    },
    Queue {
        name: String,
        command: QueueCommand,
    },
    Lock {
        name: String,
        command: LockCommand,
    },
    Election {
        name: String,
        command: ElectionCommand,
    },
    Group {
        name: String,
        command: GroupCommand,
    },
    Semaphore {
        name: String,
        command: SemaphoreCommand,
    },
    Latch {
        name: String,
        command: LatchCommand,
    },
    Topic {
        name: String,
        command: TopicCommand,
    },
}

/// What the manager answers without the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // each operation variant is `{ name, query }`
pub enum Query {
    /// Whether a resource exists.
    Exists {
        name: String,
    },
    /// A resource's type and spec.
    Info {
        name: String,
    },
    /// Names in order after `after`, at most `limit` (up to
    /// [`MAX_LIST_PAGE`]), optionally only of one type.
    List {
        resource_type: Option<ResourceType>,
        after: Option<String>,
        limit: u32,
    },
    Value {
        name: String,
        query: ValueQuery,
    },
    Long {
        name: String,
        query: LongQuery,
    },
    Map {
        name: String,
        query: MapQuery,
    },
    MultiMap {
        name: String,
        query: MultiMapQuery,
    },
    Set {
        name: String,
        query: SetQuery,
    },
    Queue {
        name: String,
        query: QueueQuery,
    },
    Lock {
        name: String,
        query: LockQuery,
    },
    Election {
        name: String,
        query: ElectionQuery,
    },
    Group {
        name: String,
        query: GroupQuery,
    },
    Semaphore {
        name: String,
        query: SemaphoreQuery,
    },
    Latch {
        name: String,
        query: LatchQuery,
    },
    Topic {
        name: String,
        query: TopicQuery,
    },
}

/// A resource's description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceInfo {
    /// Its name.
    pub name: String,
    /// Its type and settings.
    pub spec: Spec,
    /// The log index that created it.
    pub created_index: u64,
}

/// What the manager answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // operation answers carry the resource's own output
pub enum Output {
    /// [`Command::Open`]: whether it was created now, and what it is.
    Opened {
        created: bool,
        info: ResourceInfo,
    },
    /// A yes/no answer ([`Command::Delete`], [`Query::Exists`]).
    Bool(bool),
    /// [`Query::Info`].
    Info(Option<ResourceInfo>),
    /// [`Query::List`]: names, and where the next page starts.
    Names {
        names: Vec<String>,
        next: Option<String>,
    },
    Value(ValueOutput),
    Long(LongOutput),
    Map(MapOutput),
    MultiMap(MultiMapOutput),
    Set(SetOutput),
    Queue(QueueOutput),
    Lock(LockOutput),
    Election(ElectionOutput),
    Group(GroupOutput),
    Semaphore(SemaphoreOutput),
    Latch(LatchOutput),
    Topic(TopicOutput),
}

/// An event about one resource, the payload of every event named
/// [`EVENT_NAME`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// The resource's name.
    pub resource: String,
    /// What happened.
    pub event: Event,
}

/// What happened to a resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // each variant carries the resource's own event
pub enum Event {
    /// The resource was deleted; requests waiting on it end.
    Deleted,
    Value(ValueEvent),
    Long(LongEvent),
    Map(MapEvent),
    MultiMap(MultiMapEvent),
    Set(SetEvent),
    Queue(QueueEvent),
    Lock(LockEvent),
    Election(ElectionEvent),
    Group(GroupEvent),
    Semaphore(SemaphoreEvent),
    Latch(LatchEvent),
    Topic(TopicEvent),
}

#[cfg(feature = "client")]
/// The client's view of [`crate::Resources`], for `client.machine::<ResourcesApi>()`
/// (the typed handles use it).
pub struct ResourcesApi;

#[cfg(feature = "client")]
impl copycat_client::Machine for ResourcesApi {
    type Command = Command;
    type Query = Query;
    type Output = Output;
    type Error = ResourceError;
}
