//! Copycat's client: sessions with a Copycat cluster over TCP.
//!
//! An application depends on this crate alone to talk to a cluster:
//!
//! ```no_run
//! use std::time::Duration;
//! use copycat_client::{Client, Machine};
//! use serde::{Deserialize, Serialize};
//!
//! // The types the state machine speaks (shared with the server's crate).
//! #[derive(Serialize, Deserialize)]
//! enum Command { Put(String, String) }
//! #[derive(Serialize, Deserialize)]
//! enum Query { Get(String) }
//! struct Kv;
//! impl Machine for Kv {
//!     type Command = Command;
//!     type Query = Query;
//!     type Output = Option<String>;
//!     type Error = String;
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::builder()
//!     .servers(["10.0.0.1:5700", "10.0.0.2:5700", "10.0.0.3:5700"])
//!     .session_timeout(Duration::from_secs(5))
//!     .connect()
//!     .await?;
//! let mut events = client.events();
//! let kv = client.machine::<Kv>();
//! kv.command(Command::Put("a".into(), "1".into())).await?;
//! let value = kv.query(Query::Get("a".into())).await?;
//! while let Some(event) = events.next().await {
//!     println!("{}: {:?}", event.name, event.decode::<String>());
//! }
//! # Ok(()) }
//! ```
//!
//! # What a session guarantees
//!
//! * Commands are applied exactly once, in the order submitted, even when
//!   they are resent after timeouts, redirects and reconnects.
//! * Events published to the session arrive once each and in order
//!   ([`Client::events`]), and before the result of any command that
//!   follows them.
//! * Queries see at least the effects of the commands submitted before
//!   them, at the chosen [`Consistency`] (linearizable by default).
//!
//! # Layers
//!
//! [`session::ClientSession`] is the deterministic core of a client: it
//! registers a session, keeps it alive, numbers commands and resubmits them
//! with the same sequence numbers, delivers events in order, and recovers
//! (or closes) after expiry. It never performs I/O or reads a clock. The
//! simulator runs it against simulated clusters; [`Client`] runs the same
//! core over TCP with tokio (one driver task per client; it works on the
//! current-thread runtime as well as the multi-threaded one). Without the
//! default `tokio` feature the crate is the session core alone.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "tokio")]
mod client;
#[cfg(feature = "tokio")]
mod connections;
#[cfg(feature = "tokio")]
mod error;
pub mod session;

#[cfg(feature = "tokio")]
pub use client::{Client, ClientBuilder, ClientStatus, Event, Events, Machine, MachineClient};
#[cfg(feature = "tokio")]
pub use connections::Connections;
#[cfg(feature = "tokio")]
pub use copycat_net::{ClientTls, Stopped, Watch};
pub use copycat_proto::{Consistency, SessionId};
#[cfg(feature = "tokio")]
pub use error::{Error, Unavailable};
pub use session::{ClientState, ServerSelection};
