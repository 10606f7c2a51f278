//! Copycat's deterministic cluster simulator and the tools that judge its runs.
//!
//! For now this crate holds the linearizability checker:
//!
//! * [`history`]: client-observed histories of operations (invocations and
//!   their `ok` / `fail` / `info` completions), built by the simulator and
//!   stored as JSON lines that external checkers can read too.
//! * [`linearizability`]: a Wing & Gong search with Lowe's memoization, split
//!   by key, generic over a sequential [`linearizability::Model`], under a step
//!   budget so that it always answers.
//!
//! `docs/simulation.md` describes the algorithm and the history format.
//!
//! # Example
//!
//! A write of 1 completes, and then a read still returns the initial `null`:
//! a stale read, which no order of the two operations explains.
//!
//! ```
//! use copycat_sim::history::{History, ProcessId};
//! use copycat_sim::linearizability::{check, CheckConfig, Register, Verdict};
//! use serde_json::json;
//!
//! let mut history = History::new();
//! let write = history.invoke(ProcessId(1), "write", "x", json!(1), 10);
//! history.ok(write, json!(1), 20);
//! let read = history.invoke(ProcessId(2), "read", "x", json!(null), 30);
//! history.ok(read, json!(null), 40);
//!
//! let report = check(&Register::new(), &history, &CheckConfig::default()).unwrap();
//! let Verdict::NotLinearizable(violation) = report.verdict else {
//!     panic!("a stale read must be caught");
//! };
//! let core: Vec<_> = violation.core.iter().map(|operation| operation.id).collect();
//! assert_eq!(core, [write, read]);
//!
//! // Had the write's outcome been unknown (a timeout), it might not have
//! // taken effect yet, and the read would be fine.
//! let mut history = History::new();
//! let write = history.invoke(ProcessId(1), "write", "x", json!(1), 10);
//! history.info(write, 20);
//! let read = history.invoke(ProcessId(2), "read", "x", json!(null), 30);
//! history.ok(read, json!(null), 40);
//! let report = check(&Register::new(), &history, &CheckConfig::default()).unwrap();
//! assert_eq!(report.verdict, Verdict::Linearizable);
//!
//! // Histories travel as JSON lines.
//! let text = history.to_json_lines();
//! assert_eq!(History::from_json_lines(&text).unwrap(), history);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod history;
pub mod invariants;
pub mod linearizability;
pub mod sim;
