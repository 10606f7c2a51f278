//! Copycat's client.
//!
//! [`session::ClientSession`] is the deterministic core of a client: it
//! registers a session, keeps it alive, numbers commands and resubmits them
//! with the same sequence numbers after gaps, redirects and reconnects,
//! delivers events in order and before the responses that follow them, and
//! recovers (or closes) after expiry. It never performs I/O or reads a clock:
//! the caller feeds it connections, responses, pushed events and the time,
//! and carries out the requests it asks to send.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod session;
