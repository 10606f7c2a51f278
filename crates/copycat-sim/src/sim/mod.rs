//! The deterministic cluster simulator.
//!
//! One seed drives everything: a ChaCha generator picks parameters, message
//! delays, losses, duplications, faults and client operations; an event queue
//! ordered by (time, sequence) decides what happens next; the servers are the
//! production Raft core over the production storage crate on a
//! fault-injecting disk. Nothing reads a wall clock, the OS's randomness or a
//! hash map's iteration order, so a seed replays exactly, and two runs of one
//! seed produce the same trace digest.
//!
//! See `docs/simulation.md` for the fault model, the invariants and how to
//! reproduce a seed.

mod clients;
pub mod faults;
pub mod kv;
mod liveness;
mod network;
mod nodes;
mod params;
mod primitives;
mod stats;
mod world;

pub use faults::{FaultKind, FaultPlan, FaultSetting};
pub use params::SimParams;
pub use stats::{HistoryStats, StatsSummary};
pub use world::{Outcome, RunReport, Simulation};
