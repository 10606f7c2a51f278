//! Copycat's replica: replicated state machines with client sessions.
//!
//! A [`Replica`] sits between the Raft log and your state machine. It is
//! given the committed log entries in order and applies them; the server
//! runtime (or the simulator, or a test) carries out what it reports. It
//! keeps everything the session semantics need, identically on every server:
//!
//! * **Sessions.** A `Register` entry opens a session whose id is the entry's
//!   index and whose timeout is in the entry. Keep-alives refresh it and
//!   acknowledge results and events. The replica reports
//!   [`suspect`](Replica::suspect_sessions) sessions; the leader proposes an
//!   `Expire` entry, and the session expires when that entry applies, if it
//!   is still suspect then.
//! * **Exactly-once commands.** Every command carries (session, sequence).
//!   The next sequence is applied and its outcome cached; duplicates are
//!   answered from the cache; a gap is refused with the last sequence.
//! * **Deterministic time.** Each log command carries the leader's clock;
//!   the replica's clock is the largest timestamp applied so far. Timers
//!   scheduled by the state machine fire before the first entry whose time
//!   reaches them.
//! * **Events.** State machines publish events to sessions; events are
//!   batched per log index, chained, retained until acknowledged and resent
//!   on request. Command responses carry the last event index published to
//!   the session, so clients deliver events before the response that follows
//!   them.
//! * **Snapshots** include all of the above, and [`Replica::digest`] lets
//!   tests and the simulator compare replicas.
//!
//! The replica is sans-IO and deterministic: no clock, no threads, no
//! randomness, no I/O. See `docs/semantics.md` for the contract.
//!
//! # Writing a state machine
//!
//! Implement [`StateMachine`] with serde types for commands, queries,
//! outputs and errors, wrap it in [`Typed`], and give it to a [`Replica`].
//! This counter publishes an event to every session when it crosses a
//! threshold, and resets itself one second after the last change:
//!
//! ```
//! use bytes::Bytes;
//! use copycat_proto::{ClientId, LogBody, LogCommand, Response, Sequence};
//! use copycat_replica::{
//!     codec, ApplyContext, Outcome, QueryContext, Replica, ReplicaConfig, RestoreError,
//!     StateMachine, TimerId, Typed,
//! };
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Counter {
//!     value: u64,
//!     reset: Option<TimerId>,
//! }
//!
//! #[derive(Serialize, Deserialize)]
//! enum Command { Add(u64) }
//!
//! impl StateMachine for Counter {
//!     type Command = Command;
//!     type Query = ();
//!     type Output = u64;
//!     type Error = String;
//!
//!     fn apply(&mut self, ctx: &mut ApplyContext<'_>, Command::Add(n): Command) -> Result<u64, String> {
//!         let before = self.value;
//!         self.value = self.value.checked_add(n).ok_or("overflow")?;
//!         if before < 100 && self.value >= 100 {
//!             let sessions: Vec<_> = ctx.sessions().map(|s| s.id).collect();
//!             for session in sessions {
//!                 ctx.publish_value(session, "crossed", &self.value);
//!             }
//!         }
//!         // Time and timers come from the log, never from a local clock.
//!         if let Some(timer) = self.reset.take() {
//!             ctx.cancel(timer);
//!         }
//!         self.reset = Some(ctx.schedule(1_000).map_err(|e| e.to_string())?);
//!         Ok(self.value)
//!     }
//!
//!     fn query(&self, _ctx: &QueryContext, (): ()) -> Result<u64, String> {
//!         Ok(self.value)
//!     }
//!
//!     fn on_timer(&mut self, _ctx: &mut ApplyContext<'_>, _timer: TimerId) {
//!         self.value = 0;
//!         self.reset = None;
//!     }
//!
//!     fn snapshot(&self) -> Bytes {
//!         codec::encode(self)
//!     }
//!
//!     fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
//!         *self = codec::decode(data).map_err(|e| RestoreError(e.to_string()))?;
//!         Ok(())
//!     }
//! }
//!
//! // Drive it by hand with committed entries (a server does this with Raft).
//! let mut replica = Replica::new(ReplicaConfig::default(), Typed(Counter::default())).unwrap();
//! let mut index = 0;
//! let mut apply = |replica: &mut Replica<Typed<Counter>>, time: u64, body: LogBody| {
//!     index += 1;
//!     let data = LogCommand { timestamp_ms: time, body }.encode();
//!     replica.apply(&copycat_replica::testing::command_entry(index, data))
//! };
//! let registered = apply(&mut replica, 0, LogBody::Register { client: ClientId(9), timeout_ms: 0 });
//! let Outcome::Register { result: Ok(Response::Registered { session, .. }), .. } = registered.outcome
//! else { panic!("registration failed") };
//!
//! let add = |sequence, n| LogBody::Command {
//!     session,
//!     sequence: Sequence(sequence),
//!     acked: Sequence(0),
//!     payload: codec::encode(&Command::Add(n)),
//! };
//! apply(&mut replica, 10, add(1, 60));
//! let applied = apply(&mut replica, 20, add(2, 50));
//! assert_eq!(applied.events.len(), 1, "the session hears that 100 was crossed");
//! // A retry of sequence 2 is answered from the cache: not added twice.
//! apply(&mut replica, 30, add(2, 50));
//! assert_eq!(replica.machine().0.value, 110);
//! // The reset fires before the first entry at or after time 1020.
//! apply(&mut replica, 1_500, LogBody::Tick);
//! assert_eq!(replica.machine().0.value, 0);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod codec;
mod config;
mod image;
mod machine;
pub mod node;
pub mod replica;
mod sessions;
pub mod shell;
pub mod testing;
mod timers;

pub use config::{ReplicaConfig, ReplicaConfigError};
pub use image::ReplicaImage;
pub use machine::{
    prepared_as, ApplyContext, DeferredSnapshot, PreparedRestore, QueryContext, RawStateMachine,
    RestoreError, StateMachine, Typed,
};
pub use replica::{Applied, Outcome, PreparedImage, QueryOutcome, Replica, SnapshotError};
pub use sessions::SessionInfo;
pub use timers::{TimerId, TooManyTimers};
