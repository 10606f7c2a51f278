//! Copycat's replica: replicated state machines with client sessions.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod codec;
mod config;
mod machine;
pub mod replica;
pub mod testing;

pub use config::{ReplicaConfig, ReplicaConfigError};
pub use machine::{
    ApplyContext, QueryContext, RawStateMachine, RestoreError, SessionInfo, StateMachine, TimerId,
    TooManyTimers, Typed,
};
pub use replica::{Applied, Outcome, QueryOutcome, Replica, SnapshotError};
