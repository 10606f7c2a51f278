//! The encoding [`crate::Typed`] uses for commands, queries, outputs, errors
//! and [`crate::ApplyContext::publish_value`] payloads: plain postcard (the
//! same functions as `copycat_proto::codec`, which clients use to build
//! payloads and read answers).

pub use copycat_proto::codec::{decode, encode};
