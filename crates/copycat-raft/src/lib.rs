//! Copycat's Raft consensus core: a complete, deterministic, sans-IO Raft.
//!
//! [`RawNode`] is one server as a plain state machine. The caller feeds it
//! inputs and carries out what it asks for:
//!
//! * inputs: [`RawNode::tick`] with the current time, [`RawNode::step`] with a
//!   message from a peer, [`RawNode::propose`], [`RawNode::read`],
//!   [`RawNode::persisted`], [`RawNode::snapshot_taken`] and the snapshot
//!   transfer calls, and admin calls ([`RawNode::change_membership`],
//!   [`RawNode::transfer_leadership`]);
//! * output: one [`Ready`] batch from [`RawNode::ready`], whose fields say in
//!   which order to handle them (persist, then send, then apply).
//!
//! The core never reads a clock, never draws OS randomness (election timeouts
//! come from a caller-provided seed), never performs I/O and never blocks, so
//! the same inputs always give the same outputs. That is what lets the
//! simulator run whole clusters from one seed.
//!
//! What it implements: leader election with randomized timeouts in `[T, 2T)`,
//! pre-vote, leader stickiness and check-quorum; a no-op at the start of each
//! term and commitment by counting replicas only in the current term;
//! replication with byte and count batching, pipelining with a bounded
//! in-flight window, probe / replicate / snapshot states and fast
//! backtracking; chunked snapshot transfer; single-server membership changes
//! with learners promoted automatically, passive and reserve members, and a
//! leader that can remove itself; leadership transfer; ReadIndex reads
//! batched into rounds, and lease reads that are safe.
//!
//! # Example
//!
//! A three-server cluster, with messages carried by hand:
//!
//! ```
//! use bytes::Bytes;
//! use copycat_raft::{Config, Configuration, NodeId, PersistentState, RawNode, Role, Time};
//!
//! let ids = [NodeId(1), NodeId(2), NodeId(3)];
//! let membership = Configuration::with_voters(ids);
//! let mut nodes: Vec<RawNode> = ids
//!     .iter()
//!     .map(|id| {
//!         let state = PersistentState::bootstrap(membership.clone());
//!         RawNode::new(Config::new(*id), state, 7, Time(0)).unwrap()
//!     })
//!     .collect();
//!
//! // Carry out every Ready: "persist" (here: report durability at once),
//! // deliver messages, collect applied commands.
//! let mut applied = Vec::new();
//! let mut pump = |nodes: &mut Vec<RawNode>, applied: &mut Vec<Bytes>| {
//!     let mut moved = true;
//!     while moved {
//!         moved = false;
//!         for i in 0..nodes.len() {
//!             let ready = nodes[i].ready();
//!             if ready.is_empty() {
//!                 continue;
//!             }
//!             moved = true;
//!             if let Some(last) = ready.entries.last() {
//!                 nodes[i].persisted(last.index, last.term);
//!             }
//!             for entry in &ready.committed_entries {
//!                 if let copycat_raft::EntryPayload::Command(data) = &entry.payload {
//!                     if i == 0 {
//!                         applied.push(data.clone());
//!                     }
//!                 }
//!             }
//!             for message in ready.messages.into_iter().chain(ready.messages_after_persist) {
//!                 let to = (message.to.0 - 1) as usize;
//!                 nodes[to].step(message);
//!             }
//!         }
//!     }
//! };
//!
//! // Let time pass until someone's election timeout fires.
//! let mut now = 0;
//! while !nodes.iter().any(|n| n.role() == Role::Leader) {
//!     now += 10;
//!     for node in nodes.iter_mut() {
//!         node.tick(Time(now));
//!     }
//!     pump(&mut nodes, &mut applied);
//! }
//! let leader = nodes.iter().position(|n| n.role() == Role::Leader).unwrap();
//! nodes[leader].propose(vec![Bytes::from("hello")]).unwrap();
//! pump(&mut nodes, &mut applied);
//! assert_eq!(applied, vec![Bytes::from("hello")]);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod errors;
mod log;
mod message;
mod node;
mod progress;
mod ready;
pub mod testing;
mod types;

pub use config::Config;
pub use errors::{
    ConfigChangeError, ConfigError, ProposeError, ReadError, SnapshotError, TransferError,
};
pub use message::{Message, MessageBody, RejectHint};
pub use node::{
    IgnoreReason, Ignored, InitError, MembershipChange, RawNode, ReadMode, ReadPath, Stats,
};
pub use progress::ReplicationState;
pub use ready::{ReadState, Ready, Role, SnapshotChunk, SnapshotRequest, SoftState};
pub use types::*;
