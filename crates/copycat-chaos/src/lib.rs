//! `copycat-chaos`: tests real `copycat server` processes the way Jepsen
//! tests databases.
//!
//! A run starts 3 or 5 servers, each on its own loopback address with its
//! own data directory, inside a network namespace of its own; many clients
//! (the real Rust client, each its own session) run a workload while
//! nemeses strike (partitions and packet loss through iptables, frames
//! delayed, duplicated and reordered and connections reset by a TCP proxy
//! on every peer link, kill -9, SIGSTOP, clock jumps through libfaketime,
//! membership changes); then it
//! heals everything, requires the cluster to serve again within a bound,
//! reads every server's final state, and checks the history: the
//! linearizability checker of `copycat-sim` for registers, a checker of its
//! own for each other workload. The history (JSON lines, the format of
//! `docs/simulation.md`), a report and a latency plot stay in the run's
//! directory. `docs/testing.md` describes the runs.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cluster;
pub mod nemesis;
pub mod net;
pub mod proxy;
pub mod recorder;
pub mod report;
pub mod runner;
pub mod workloads;
