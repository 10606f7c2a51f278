//! Copycat's Raft consensus core: deterministic and sans-IO.
#![forbid(unsafe_code)]

mod types;

pub use types::*;
