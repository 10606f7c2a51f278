//! The errors the resource manager returns to callers (serialized into the
//! command result, so clients match on them).

use serde::{Deserialize, Serialize};

use crate::ResourceType;

/// Why the resource manager refused an operation. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ResourceError {
    /// No resource has that name.
    #[error("no resource named {name:?}")]
    NotFound {
        /// The name.
        name: String,
    },
    /// The name is taken by a resource of another type.
    #[error("resource {name:?} is a {found}, not a {expected}")]
    WrongType {
        /// The name.
        name: String,
        /// The type the operation is for.
        expected: ResourceType,
        /// The type the resource has.
        found: ResourceType,
    },
    /// Resource names must not be empty.
    #[error("a resource name must not be empty")]
    EmptyName,
    /// The name is longer than [`Limits::max_name_bytes`](crate::Limits).
    #[error("resource name of {len} bytes exceeds the limit of {limit} bytes")]
    NameTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The cluster already holds [`Limits::max_resources`](crate::Limits).
    #[error("the cluster already holds the maximum of {limit} resources")]
    TooManyResources {
        /// The limit.
        limit: usize,
    },
    /// A value (or key, or message) is larger than
    /// [`Limits::max_value_bytes`](crate::Limits).
    #[error("a value of {size} bytes exceeds the limit of {limit} bytes")]
    ValueTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The collection already holds [`Limits::max_entries`](crate::Limits).
    #[error("the resource already holds the maximum of {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: usize,
    },
    /// The resource already has [`Limits::max_waiters`](crate::Limits)
    /// waiting requests (or listeners).
    #[error("the resource already has the maximum of {limit} waiters or listeners")]
    TooManyWaiters {
        /// The limit.
        limit: usize,
    },
    /// A counter operation would overflow `i64` (it never wraps).
    #[error("{value} + {delta} overflows a 64-bit counter")]
    Overflow {
        /// The current value.
        value: i64,
        /// What was to be added.
        delta: i64,
    },
    /// The calling session does not hold the lock.
    #[error("the session does not hold the lock")]
    NotHolder,
    /// The calling session is not the leader.
    #[error("the session is not the leader")]
    NotLeader,
    /// The queue is empty (`remove`, `element`).
    #[error("the queue is empty")]
    Empty,
    /// The session does not hold as many permits as it releases.
    #[error("the session holds {held} permits and cannot release {requested}")]
    NotEnoughPermits {
        /// Permits the session holds.
        held: u64,
        /// Permits it tried to release.
        requested: u64,
    },
    /// The session already has a waiting request with that id.
    #[error("request {req} of this session is already waiting")]
    DuplicateRequest {
        /// The request id.
        req: u64,
    },
    /// No group member has that id.
    #[error("no group member {id:?}")]
    UnknownMember {
        /// The member id.
        id: String,
    },
    /// The member is alive in another session.
    #[error("group member {id:?} is alive in another session")]
    MemberInUse {
        /// The member id.
        id: String,
    },
    /// The calling session is not the member it acts for.
    #[error("group member {id:?} does not belong to this session")]
    NotMember {
        /// The member id.
        id: String,
    },
    /// A random message with no alive member to take it.
    #[error("the group has no alive member")]
    NoMembers,
    /// No message with that id is pending for the calling session.
    #[error("no pending message {id}")]
    UnknownMessage {
        /// The message id.
        id: u64,
    },
    /// The operation needs a calling session (it came from a timer).
    #[error("the operation needs a calling session")]
    NoSession,
    /// An argument is out of range; the text says which.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}
