//! Copycat's server: a replicated state machine served over TCP, in your
//! program or as the `copycat` command.
//!
//! [`Server::builder`] takes your [`StateMachine`](copycat_replica::StateMachine)
//! and starts a server of it: it opens (or creates) the data directory,
//! recovers the log and the latest snapshot, and serves peers and clients on
//! one listener. The [`Server`] handle reports the server's [`Status`], has
//! the administrative calls (membership changes, leadership transfer), and
//! stops it gracefully with [`Server::shutdown`] (or at once when dropped).
//!
//! ```no_run
//! use copycat_replica::testing::TestMachine;
//! use copycat_server::Server;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let members = [(1, "127.0.0.1:5701"), (2, "127.0.0.1:5702"), (3, "127.0.0.1:5703")];
//! let mut servers = Vec::new();
//! for (id, address) in members {
//!     let server = Server::builder(TestMachine::default())
//!         .id(id)
//!         .listen(address)
//!         .data_dir(format!("./data/{id}"))
//!         .bootstrap(members)
//!         .start()
//!         .await?;
//!     servers.push(server);
//! }
//! let leader = servers[0].wait_for_leader(std::time::Duration::from_secs(5)).await?;
//! println!("{leader:?} leads");
//! # Ok(()) }
//! ```
//!
//! # How it runs
//!
//! The server core (Raft, the replica, the storage: `copycat-replica`'s
//! [`Shell`](copycat_replica::shell::Shell)) is deterministic and
//! synchronous. One thread of its own owns it and carries out its batches
//! with group commit (one disk sync covers every request that arrived
//! together); tokio tasks do the networking: an acceptor, a task per
//! connection, an outbound task per peer that reconnects with backoff, and
//! a ticker. A snapshot's file is written and synced on a thread of its
//! own, so the owner thread keeps serving while it reaches the disk.
//! Nothing blocks a tokio worker, so the server runs on the current-thread
//! runtime as well as the multi-threaded one.
//!
//! Every connection opens with a hello frame
//! ([`copycat_proto::Hello`]); frames are length-prefixed and limited to
//! [`copycat_proto::MAX_FRAME_BYTES`]. A connection that sends a bad frame
//! is closed and logged; the server keeps serving.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod admin;
mod http;
mod lock;
mod metrics;
mod net;
mod observe;
mod owner;
mod server;
mod status;

pub use lock::LOCK_FILE;
pub use net::NetCounters;
pub use server::cluster_id;

pub use copycat_net::{ClientTls, ServerTls, Stopped, TlsError, Watch};
pub use http::STUCK_AFTER_MS;
pub use server::{
    AdminError, Server, ServerBuilder, StartError, DEFAULT_DATA_DIR, DEFAULT_LISTEN, HELLO_TIMEOUT,
    MAX_CONNECTIONS,
};
pub use status::{Leadership, LoopStats, Status};

// Everything needed to write a state machine and serve it, so a program
// depends on this crate alone.
pub use copycat_proto::{
    AdminFailure, AdminRequest, AdminResponse, MemberInfo, MemberKind, ServerState, ServerStatus,
    SessionId,
};
pub use copycat_raft::{MemberRole, NodeId, Role};
pub use copycat_replica::node::ServerConfig;
pub use copycat_replica::{
    codec, prepared_as, ApplyContext, DeferredSnapshot, PreparedRestore, QueryContext,
    RawStateMachine, RestoreError, SessionInfo, StateMachine, TimerId, TooManyTimers, Typed,
};
