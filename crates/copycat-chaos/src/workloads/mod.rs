//! Workloads: many concurrent clients through the real Rust client, each
//! operation recorded, and a checker per workload.

mod collections;
mod lock;
mod register;
mod session;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use copycat_client::{Client, ClientState, Consistency, ServerSelection};
use copycat_primitives::Primitives;
use tokio::sync::watch;

use crate::cluster;
use crate::recorder::{Outcome, Recorder};
use copycat_sim::history::OperationId;

pub use session::worker_main;

/// What a run does to the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workload {
    /// Read, write and compare-and-set on a few registers; checked for
    /// linearizability.
    Register,
    /// Adds of unique elements to a set; no acknowledged add lost.
    Set,
    /// Increments of one counter; the total is exact within the unknowns.
    Counter,
    /// Offers and polls on one queue; each item delivered at most once and,
    /// after the heal, exactly once.
    Queue,
    /// Contending lock holders writing to a resource that checks fencing
    /// tokens; mutual exclusion.
    Lock,
    /// A lock holder paused (SIGSTOP) past its session timeout loses the
    /// lock to the next waiter, and only then.
    SessionExpiry,
    /// Published messages reach every subscriber once and in order.
    Events,
}

impl Workload {
    /// Every workload.
    pub const ALL: &'static [Workload] = &[
        Workload::Register,
        Workload::Set,
        Workload::Counter,
        Workload::Queue,
        Workload::Lock,
        Workload::SessionExpiry,
        Workload::Events,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Set => "set",
            Workload::Counter => "counter",
            Workload::Queue => "queue",
            Workload::Lock => "lock",
            Workload::SessionExpiry => "session-expiry",
            Workload::Events => "events",
        }
    }

    /// Parse a comma-separated list of names, or `all`.
    pub fn parse_list(text: &str) -> Result<Vec<Workload>> {
        let mut list = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "all" => list.extend_from_slice(Workload::ALL),
                name => list.push(name.parse()?),
            }
        }
        list.sort();
        list.dedup();
        if list.is_empty() {
            bail!("no workload given");
        }
        Ok(list)
    }

    /// Run it: the concurrent phase until `ctx.stop` turns true, then (after
    /// the harness healed the cluster and `ctx.healed` turns true) the final
    /// reads; returns the checkers' verdicts.
    pub async fn run(self, ctx: Arc<Ctx>) -> Result<Vec<Check>> {
        match self {
            Workload::Register => register::run(ctx).await,
            Workload::Set => collections::set(ctx).await,
            Workload::Counter => collections::counter(ctx).await,
            Workload::Queue => collections::queue(ctx).await,
            Workload::Events => collections::events(ctx).await,
            Workload::Lock => lock::run(ctx).await,
            Workload::SessionExpiry => session::run(ctx).await,
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = anyhow::Error;

    fn from_str(name: &str) -> Result<Self> {
        match Workload::ALL.iter().find(|w| w.name() == name) {
            Some(w) => Ok(*w),
            None => {
                let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
                bail!(
                    "unknown workload {name:?}: expected all or one of {}",
                    names.join(", ")
                )
            }
        }
    }
}

/// A checker's verdict.
#[derive(Clone, Debug)]
pub struct Check {
    /// What it checks.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// The numbers behind the verdict, or the violation.
    pub detail: String,
}

impl Check {
    /// A verdict.
    pub fn new(name: impl Into<String>, passed: bool, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            passed,
            detail: detail.into(),
        }
    }
}

/// What every workload is given.
pub struct Ctx {
    /// Every server's address.
    pub servers: Vec<String>,
    /// Server ids (for final per-server reads).
    pub ids: Vec<u64>,
    /// The history of the run.
    pub recorder: Recorder,
    /// Concurrent clients (each its own session).
    pub clients: usize,
    /// The session timeout the clients ask for.
    pub session_timeout: Duration,
    /// How long a client waits for one operation before calling its outcome
    /// unknown.
    pub request_timeout: Duration,
    /// Seed of the workload's choices.
    pub seed: u64,
    /// The run's directory.
    pub dir: PathBuf,
    /// This harness's own binary (worker processes are started from it).
    pub exe: PathBuf,
    /// Turns true when the concurrent phase must end.
    pub stop: watch::Receiver<bool>,
    /// Turns true once the cluster is healed and serving again.
    pub healed: watch::Receiver<bool>,
    /// Faults injected so far (a round that saw none can check liveness
    /// bounds).
    pub faults_seen: Arc<AtomicU64>,
    /// Faults in effect now.
    pub faults_active: Arc<AtomicU64>,
    /// When a fault last ended (ms on the recorder's clock): its effects
    /// (a session whose keep-alives failed, a new leader still settling)
    /// outlast it for a while.
    pub faults_last_healed_ms: Arc<AtomicU64>,
    /// Client sessions the cluster expired during the run.
    pub sessions_lost: Arc<AtomicU64>,
}

impl Ctx {
    /// Whether a worker goes on with this client: the phase is not over
    /// and its session lives. A session the cluster expired (a pause, a
    /// clock jump, a long partition) is counted, and the worker opens a new
    /// one after a short wait.
    pub fn live(&self, primitives: &Primitives) -> bool {
        if self.stopping() {
            return false;
        }
        if primitives.client().status().state == ClientState::Closed {
            self.sessions_lost.fetch_add(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Whether the concurrent phase is over.
    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Wait until the harness has healed the cluster.
    pub async fn wait_healed(&self) {
        let mut healed = self.healed.clone();
        let _ = healed.wait_for(|h| *h).await;
    }

    /// A client with its own session, connected to any server, retrying
    /// until the run stops (servers may be down when it starts).
    pub async fn primitives(&self) -> Result<Primitives> {
        self.primitives_with(ServerSelection::Leader).await
    }

    /// A client as [`Ctx::primitives`] that talks to the servers `selection`
    /// picks (followers, for instance: their reads must be linearizable
    /// too).
    pub async fn primitives_with(&self, selection: ServerSelection) -> Result<Primitives> {
        let mut last = None;
        for _ in 0..60 {
            let client = Client::builder()
                .servers(self.servers.clone())
                .selection(selection)
                .session_timeout(self.session_timeout)
                .request_timeout(self.request_timeout)
                .connect()
                .await;
            match client {
                Ok(client) => return Ok(Primitives::new(client)),
                Err(error) => last = Some(error),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!("no client could connect: {}", last.expect("an error"))
    }

    /// A client bound to server `id` alone, reading its local state
    /// (sequential consistency), for the final per-server reads.
    pub async fn pinned(&self, id: u64) -> Result<Primitives> {
        let client = Client::builder()
            .servers([cluster::node_addr(id)])
            .selection(ServerSelection::Any)
            .consistency(Consistency::Sequential)
            .session_timeout(self.session_timeout)
            .request_timeout(Duration::from_secs(10))
            .connect()
            .await?;
        Ok(Primitives::new(client))
    }

    /// Wait until every server has applied everything the leader has
    /// committed, so per-server reads see the final state.
    pub async fn converge(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let statuses = cluster::statuses(&self.ids, Duration::from_secs(2)).await;
            let commit = statuses.values().map(|s| s.commit).max().unwrap_or(0);
            let behind: Vec<u64> = self
                .ids
                .iter()
                .copied()
                .filter(|id| statuses.get(id).is_none_or(|s| s.applied < commit))
                .collect();
            if behind.is_empty() && commit > 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("servers {behind:?} did not apply index {commit} within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// How an error of a primitive call ends its operation: a refusal by the
/// state machine certainly did not take effect; anything else (timeout,
/// lost connection, expired session) may have.
pub fn outcome_of(error: &copycat_primitives::Error) -> Outcome {
    match error {
        copycat_primitives::Error::Resource(_) => Outcome::Fail,
        _ => Outcome::Info,
    }
}

/// Record how a bounded primitive call (see [`bounded`]) ended: `ok` with
/// `value` of its result, the outcome its error implies, or unknown when it
/// did not answer in time. Returns the result when there is one.
pub fn finish<T>(
    recorder: &Recorder,
    id: OperationId,
    answer: Option<Result<T, copycat_primitives::Error>>,
    value: impl FnOnce(&T) -> serde_json::Value,
) -> Option<T> {
    match answer {
        Some(Ok(result)) => {
            recorder.complete(id, Outcome::Ok, value(&result));
            Some(result)
        }
        Some(Err(error)) => {
            recorder.complete(id, outcome_of(&error), serde_json::Value::Null);
            None
        }
        None => {
            recorder.complete(id, Outcome::Info, serde_json::Value::Null);
            None
        }
    }
}

/// Run `call`, bounded by `limit`: `None` when it took longer.
pub async fn bounded<T>(limit: Duration, call: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(limit, call).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_lists_parse() {
        assert_eq!(Workload::parse_list("all").unwrap(), Workload::ALL);
        assert_eq!(
            Workload::parse_list("queue,register").unwrap(),
            [Workload::Register, Workload::Queue]
        );
        assert!(Workload::parse_list("").is_err());
        let error = Workload::parse_list("regsiter").unwrap_err().to_string();
        assert!(error.contains("session-expiry"), "{error}");
        for workload in Workload::ALL {
            assert_eq!(workload.name().parse::<Workload>().unwrap(), *workload);
        }
    }
}
