//! The first frame of every connection, and the framing limit both sides
//! enforce.
//!
//! A connection to a server's single listener opens with a [`Hello`] frame
//! saying who is calling: a peer (with its cluster id and server id), a
//! client, or an admin. A peer is answered with a [`PeerAnswer`]: accepted,
//! or refused with the reason (another cluster, not a member). A client is
//! answered with a [`ServerHello`] naming the server and every member it
//! knows, so a client given one address can find the others. After the
//! hello, frames are [`crate::ClientRequest`] / [`crate::ServerMessage`] on
//! client connections, Raft messages on peer connections, and
//! [`crate::AdminRequest`] / [`crate::AdminResponse`] on admin connections.
//!
//! On the socket every frame is preceded by its length as a big-endian
//! `u32`; a frame longer than [`MAX_FRAME_BYTES`] is refused by the reader
//! and closes the connection.

use serde::{Deserialize, Serialize};

/// The largest frame accepted or sent on a connection: 64 MiB.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// The first frame of every connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hello {
    /// A peer's outbound connection. The server answers with
    /// [`PeerAnswer`].
    Peer {
        /// The cluster the caller belongs to.
        cluster: u64,
        /// The caller's server id: every message on the connection must
        /// come from it.
        id: u64,
        /// The caller's settings that every server of a cluster must share
        /// (by name): a server refuses a peer whose settings differ from its
        /// own, naming the setting.
        settings: Vec<(String, u64)>,
    },
    /// A client. The server answers with [`ServerHello`].
    Client,
    /// An operator or a joining server (see [`crate::AdminRequest`]).
    Admin,
}

/// The server's answer to a [`Hello::Peer`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerAnswer {
    /// Raft messages may follow.
    Accepted,
    /// The connection is refused, for this reason (the server closes it).
    Refused(String),
}

/// The server's answer to a client's [`Hello::Client`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    /// The server's id (clients name servers by it; leader hints use it).
    pub node: u64,
    /// The cluster it belongs to.
    pub cluster: u64,
    /// Every member it knows, with the address to reach it (`host:port`),
    /// so a client given one address can find the others (and the leader).
    pub members: Vec<(u64, String)>,
}
