//! The `copycat` command's library: the state machine it serves, an async
//! client, and how it starts a server.
#![forbid(unsafe_code)]

pub mod client;
pub mod machine;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use copycat_raft::{Config, NodeId};
use copycat_server::node::ServerConfig;
use copycat_server::runtime::{serve, ServeOptions, ServerHandle, ShellConfig};
use copycat_server::Typed;
use copycat_storage::{Durability, FsDisk, StorageOptions};
use tokio::net::TcpListener;

use crate::machine::KvCounter;

/// A running server of the `copycat` state machine.
pub type Server = ServerHandle<Typed<KvCounter>>;

/// How to start one server.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    /// Its id.
    pub id: u64,
    /// Every member's address (its own included).
    pub members: BTreeMap<u64, SocketAddr>,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Sync the disk before acknowledging anything (`false` is for tests
    /// and demos only: a power loss can then lose acknowledged writes).
    pub fsync: bool,
    /// Take a snapshot every this many applied entries.
    pub snapshot_every_entries: u64,
    /// Entries kept in memory before a snapshot, so slightly lagging
    /// servers get entries instead of a snapshot transfer.
    pub snapshot_trailing_entries: u64,
    /// Connections kept open at once; more are closed when accepted.
    pub max_connections: usize,
    /// Time a new connection has to say hello before it is closed.
    pub hello_timeout: std::time::Duration,
}

impl ServerSpec {
    /// A server with the default snapshot policy.
    pub fn new(
        id: u64,
        members: BTreeMap<u64, SocketAddr>,
        data_dir: PathBuf,
        fsync: bool,
    ) -> Self {
        Self {
            id,
            members,
            data_dir,
            fsync,
            snapshot_every_entries: 10_000,
            snapshot_trailing_entries: 1_024,
            max_connections: copycat_server::runtime::MAX_CONNECTIONS,
            hello_timeout: copycat_server::runtime::HELLO_TIMEOUT,
        }
    }
}

/// Start a server on an already bound listener.
pub fn start_server(spec: ServerSpec, listener: TcpListener) -> Result<Server> {
    let mut storage = StorageOptions::default();
    if !spec.fsync {
        storage.log.durability = Durability::None;
    }
    let mut raft = Config::new(NodeId(spec.id));
    raft.snapshot_trailing_entries = spec.snapshot_trailing_entries;
    let mut server = ServerConfig::new(raft);
    server.snapshot_every_entries = spec.snapshot_every_entries;
    let shell = ShellConfig {
        server,
        storage,
        seed: spec.id ^ std::process::id() as u64,
    };
    std::fs::create_dir_all(&spec.data_dir)?;
    let options = ServeOptions {
        shell,
        listener,
        members: spec.members.keys().map(|id| NodeId(*id)).collect(),
        peers: spec
            .members
            .iter()
            .map(|(id, addr)| (NodeId(*id), *addr))
            .collect(),
        data_dir: spec.data_dir,
        disk: Arc::new(FsDisk::new()),
        machine: Typed(KvCounter::default()),
        max_connections: spec.max_connections,
        hello_timeout: spec.hello_timeout,
    };
    Ok(serve(options)?)
}
