//! The first frame of every connection, and the framing limit both sides
//! enforce.
//!
//! A connection to a server's single listener opens with a [`Hello`] frame
//! saying who is calling: a peer (with its server id) or a client. A client
//! is answered with a [`ServerHello`] naming the server and every member it
//! knows, so a client given one address can find the others. After the
//! hello, frames are [`crate::ClientRequest`] / [`crate::ServerMessage`] on
//! client connections and Raft messages on peer connections.
//!
//! On the socket every frame is preceded by its length as a big-endian
//! `u32`; a frame longer than [`MAX_FRAME_BYTES`] is refused by the reader
//! and closes the connection.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The largest frame accepted or sent on a connection: 64 MiB.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// The first frame of every connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hello {
    /// A peer's outbound connection, from this server id.
    Peer(u64),
    /// A client. The server answers with [`ServerHello`].
    Client,
}

/// The server's answer to a client's [`Hello::Client`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    /// The server's id (clients name servers by it; leader hints use it).
    pub node: u64,
    /// Every server this one knows, with the address to reach it, so a
    /// client given one address can find the others (and the leader).
    pub members: Vec<(u64, SocketAddr)>,
}
