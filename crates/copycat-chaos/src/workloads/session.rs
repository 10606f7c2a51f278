//! The session-expiry workload: lock holders are separate client processes
//! (`copycat-chaos worker`), so the harness can pause one with SIGSTOP as a
//! garbage-collection pause or an overloaded machine would.
//!
//! Each round: the holder has the lock, a second worker waits for it, the
//! holder is paused.
//! * A short pause (well inside the session timeout) must not cost the
//!   holder its lock: its unlock succeeds, and only then is the waiter
//!   granted, with a higher token.
//! * A long pause (past the session timeout) must: the waiter is granted
//!   within the timeout and a bound, with a higher token; the resumed
//!   holder learns that its session expired and cannot unlock.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use copycat_client::{Client, ClientState};
use copycat_primitives::{Error, Lock, Primitives, ResourceError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value as Json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, Mutex};

use super::{Check, Ctx};
use crate::cluster::signal;
use crate::recorder::Outcome;

const LOCK: &str = "chaos-session-lock";

/// `copycat-chaos worker`: a client process that takes commands on stdin
/// (`ID lock`, `ID unlock`, `ID state`, one a line) and answers each with a
/// JSON line carrying the same `id`. Commands run concurrently, so `state`
/// answers while a `lock` waits.
pub async fn worker_main(
    servers: Vec<String>,
    session_timeout: Duration,
    lock_name: String,
) -> Result<()> {
    let client = Client::builder()
        .servers(servers)
        .session_timeout(session_timeout)
        .request_timeout(Duration::from_secs(30))
        .connect()
        .await
        .context("connecting")?;
    let primitives = Primitives::new(client);
    let lock = Lock::open(&primitives, &lock_name).await?;
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Json>();
    let printer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = out_rx.recv().await {
            let _ = stdout.write_all(format!("{line}\n").as_bytes()).await;
            let _ = stdout.flush().await;
        }
    });
    let _ = out_tx.send(json!({"id": 0, "ready": true}));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let mut words = line.split_whitespace();
        let (Some(id), Some(command)) = (words.next(), words.next()) else {
            continue;
        };
        let id: u64 = id.parse().unwrap_or(0);
        let lock = lock.clone();
        let primitives = primitives.clone();
        let out = out_tx.clone();
        let command = command.to_string();
        tokio::spawn(async move {
            let answer = match command.as_str() {
                "lock" => match lock.lock().await {
                    Ok(token) => json!({"id": id, "granted": token}),
                    Err(error) => json!({"id": id, "error": error.to_string()}),
                },
                "unlock" => match lock.unlock().await {
                    Ok(()) => json!({"id": id, "unlocked": true}),
                    Err(Error::Resource(ResourceError::NotHolder)) => {
                        json!({"id": id, "unlocked": false, "not_holder": true})
                    }
                    Err(error) => json!({"id": id, "unlocked": false, "error": error.to_string()}),
                },
                "state" => {
                    let state = match primitives.client().status().state {
                        ClientState::Connected => "connected",
                        ClientState::Suspended => "suspended",
                        ClientState::Closed => "closed",
                    };
                    json!({"id": id, "state": state})
                }
                other => json!({"id": id, "error": format!("unknown command {other:?}")}),
            };
            let _ = out.send(answer);
        });
    }
    drop(out_tx);
    let _ = printer.await;
    Ok(())
}

/// A worker process, driven over its stdin and stdout.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    answers: Arc<Mutex<HashMap<u64, Json>>>,
    arrived: Arc<tokio::sync::Notify>,
    next: u64,
}

impl Worker {
    async fn start(ctx: &Ctx) -> Result<Self> {
        let mut child = Command::new(&ctx.exe)
            .arg("worker")
            .arg("--servers")
            .arg(ctx.servers.join(","))
            .arg("--session-timeout-ms")
            .arg(ctx.session_timeout.as_millis().to_string())
            .arg("--lock")
            .arg(LOCK)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker process")?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let answers: Arc<Mutex<HashMap<u64, Json>>> = Arc::default();
        let arrived = Arc::new(tokio::sync::Notify::new());
        {
            let answers = answers.clone();
            let arrived = arrived.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(value) = serde_json::from_str::<Json>(&line) {
                        let id = value["id"].as_u64().unwrap_or(0);
                        answers.lock().await.insert(id, value);
                        arrived.notify_waiters();
                    }
                }
                arrived.notify_waiters();
            });
        }
        let mut worker = Worker {
            child,
            stdin,
            answers,
            arrived,
            next: 1,
        };
        worker
            .wait(0, Duration::from_secs(60))
            .await
            .ok_or_else(|| anyhow!("a worker did not connect within 60 s"))?;
        Ok(worker)
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    async fn send(&mut self, command: &str) -> Result<u64> {
        let id = self.next;
        self.next += 1;
        self.stdin
            .write_all(format!("{id} {command}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        Ok(id)
    }

    /// The answer to command `id`, waiting at most `limit`.
    async fn wait(&mut self, id: u64, limit: Duration) -> Option<Json> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.arrived.notified();
            if let Some(answer) = self.answers.lock().await.remove(&id) {
                return Some(answer);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// The answer if it already came.
    async fn poll(&mut self, id: u64) -> Option<Json> {
        self.answers.lock().await.get(&id).cloned()
    }

    async fn state(&mut self, limit: Duration) -> Option<String> {
        let id = self.send("state").await.ok()?;
        self.wait(id, limit)
            .await
            .and_then(|a| a["state"].as_str().map(str::to_string))
    }
}

/// Whether the waiter's answer is a grant (not an error such as its own
/// session ending).
fn was_granted(answer: &Option<Json>) -> bool {
    answer.as_ref().is_some_and(|a| a["granted"].is_u64())
}

/// What one round found.
struct Round {
    long: bool,
    problems: Vec<String>,
    handover_ms: Option<u64>,
    checked_bound: bool,
}

/// The session-expiry workload.
pub async fn run(ctx: Arc<Ctx>) -> Result<Vec<Check>> {
    let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed);
    let mut rounds = Vec::new();
    let mut holder = Worker::start(&ctx).await?;
    let id = holder.send("lock").await?;
    let first = holder
        .wait(id, Duration::from_secs(120))
        .await
        .ok_or_else(|| anyhow!("the first worker got no lock within 120 s"))?;
    let mut token = first["granted"]
        .as_u64()
        .ok_or_else(|| anyhow!("the first lock failed: {first}"))?;
    let mut process = 0u64;
    while !ctx.stopping() {
        let long = rng.gen_bool(0.5);
        let faults_before = ctx.faults_seen.load(Ordering::SeqCst);
        // Quiet for a whole session timeout before the round too: a
        // session whose keep-alives failed during a fault that just ended
        // (the leader paused, a partition) may have been silent for most
        // of its timeout when the round starts.
        let since_fault = ctx
            .recorder
            .now_ms()
            .saturating_sub(ctx.faults_last_healed_ms.load(Ordering::SeqCst));
        let quiet = ctx.faults_active.load(Ordering::SeqCst) == 0
            && (ctx.faults_seen.load(Ordering::SeqCst) == 0
                || since_fault >= ctx.session_timeout.as_millis() as u64);
        let (round, next) = round(&ctx, &mut holder, token, long, &mut process).await?;
        let clean = quiet && ctx.faults_seen.load(Ordering::SeqCst) == faults_before;
        let mut round = round;
        if !clean {
            round.checked_bound = false;
            round.problems.retain(|p| !p.starts_with("liveness:"));
        }
        rounds.push(round);
        match next {
            Some((worker, next_token)) => {
                let _ = holder.child.kill().await;
                holder = worker;
                token = next_token;
            }
            None => {
                // Start over with a fresh holder.
                let _ = holder.child.kill().await;
                holder = Worker::start(&ctx).await?;
                let id = holder.send("lock").await?;
                match holder
                    .wait(id, Duration::from_secs(120))
                    .await
                    .and_then(|a| a["granted"].as_u64())
                {
                    Some(t) => token = t,
                    None => bail!("no worker got the lock within 120 s after a failed round"),
                }
            }
        }
    }
    let _ = holder.child.kill().await;
    ctx.wait_healed().await;

    let short: Vec<&Round> = rounds.iter().filter(|r| !r.long).collect();
    let long: Vec<&Round> = rounds.iter().filter(|r| r.long).collect();
    let problems: Vec<String> = rounds.iter().flat_map(|r| r.problems.clone()).collect();
    let handovers: Vec<u64> = long
        .iter()
        .filter(|r| r.checked_bound)
        .filter_map(|r| r.handover_ms)
        .collect();
    let mut checks = vec![Check::new(
        "a paused holder keeps its lock within the session timeout, and loses it after",
        problems.is_empty(),
        if problems.is_empty() {
            format!(
                "{} short pauses kept the lock; {} long pauses handed it over (in {} ms at most, {} rounds without other faults)",
                short.len(),
                long.len(),
                handovers.iter().max().copied().unwrap_or(0),
                handovers.len()
            )
        } else {
            problems
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        },
    )];
    if rounds.is_empty() {
        checks.push(Check::new("rounds ran", false, "no round completed"));
    }
    Ok(checks)
}

/// One round; returns what it found and the new holder with its token
/// (the waiter, once granted).
async fn round(
    ctx: &Ctx,
    holder: &mut Worker,
    token: u64,
    long: bool,
    process: &mut u64,
) -> Result<(Round, Option<(Worker, u64)>)> {
    let t = ctx.session_timeout;
    let slack = Duration::from_secs(10);
    let mut problems = Vec::new();
    let mut waiter = Worker::start(ctx).await?;
    *process += 1;
    let p = *process;
    let record = ctx.recorder.invoke(p, "lock", LOCK, Json::Null);
    let pause = if long {
        t * 2 + Duration::from_secs(1)
    } else {
        t * 45 / 100
    };
    // A long pause: the waiter asks before it, and must be granted while
    // the holder is still paused. A short one: the waiter asks near its
    // end, when the holder has been silent for most of the pause (with a
    // keep-alive every half timeout, never for a whole timeout).
    let mut wait_id = 0;
    if long {
        wait_id = waiter.send("lock").await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let paused_at = Instant::now();
    signal(holder.pid(), "STOP")?;
    let mut handover_ms = None;
    let mut granted = None;
    if long {
        if let Some(answer) = waiter.wait(wait_id, pause).await {
            handover_ms = Some(paused_at.elapsed().as_millis() as u64);
            granted = Some(answer);
        }
    } else {
        tokio::time::sleep(pause * 8 / 10).await;
        wait_id = waiter.send("lock").await?;
        tokio::time::sleep(pause * 2 / 10).await;
        // Granted this early is unsafe only if the holder's session still
        // lives (its unlock below tells); otherwise the cluster's clock ran
        // ahead (a leader's wall clock jumped) and expired it early.
        if let Some(answer) = waiter.poll(wait_id).await {
            problems.push(format!(
                "liveness: round {p}: the waiter was granted ({answer}) while the holder was paused for only {} ms of a {} ms session timeout",
                pause.as_millis(),
                t.as_millis()
            ));
            granted = Some(answer);
        }
    }
    signal(holder.pid(), "CONT")?;
    if long {
        if granted.is_none() {
            granted = waiter.wait(wait_id, t + slack).await;
            match &granted {
                Some(_) => handover_ms = Some(paused_at.elapsed().as_millis() as u64),
                None => problems.push(format!(
                    "liveness: round {p}: the waiter was not granted within {} ms of the holder's pause (session timeout {} ms)",
                    (pause + t + slack).as_millis(),
                    t.as_millis()
                )),
            }
        }
        // The resumed holder must find its session gone.
        let deadline = Instant::now() + t + slack;
        let mut state = holder.state(Duration::from_secs(5)).await;
        while state.as_deref() != Some("closed") && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            state = holder.state(Duration::from_secs(5)).await;
        }
        // Time is the cluster's: a leader whose wall clock jumped back
        // holds it still, so a session may outlive the pause. Only two
        // holders at once is unsafe.
        if state.as_deref() != Some("closed") {
            problems.push(format!(
                "liveness: round {p}: after a {} ms pause the holder's client still says {state:?}, not closed",
                pause.as_millis()
            ));
        }
        let unlock = holder.send("unlock").await?;
        if let Some(answer) = holder.wait(unlock, Duration::from_secs(10)).await {
            if answer["unlocked"] == json!(true) && was_granted(&granted) {
                problems.push(format!(
                    "round {p}: the holder still held token {token} (its unlock succeeded) after the waiter was granted {answer}"
                ));
            } else if answer["not_holder"] == json!(true) && was_granted(&granted) {
                problems.push(format!(
                    "round {p}: the waiter was granted while the holder's session lived (its unlock was applied: {answer})"
                ));
            } else if answer["unlocked"] == json!(true) {
                problems.push(format!(
                    "liveness: round {p}: the holder unlocked token {token} after a {} ms pause",
                    pause.as_millis()
                ));
            }
        }
    } else {
        // A short pause: the holder still holds and unlocks; then the
        // waiter gets the lock.
        let unlock = holder.send("unlock").await?;
        match holder.wait(unlock, t + slack).await {
            Some(answer) if answer["unlocked"] == json!(true) => {
                if was_granted(&granted) {
                    problems.push(format!(
                        "round {p}: the holder still held token {token} (its unlock succeeded) after the waiter was granted"
                    ));
                }
            }
            // Applied in the holder's session, so that session lived: the
            // lock was taken from it.
            Some(answer) if answer["not_holder"] == json!(true) => problems.push(format!(
                "round {p}: after a {} ms pause the holder's lock (token {token}) was gone while its session lived ({answer})",
                pause.as_millis()
            )),
            Some(answer) => problems.push(format!(
                "liveness: round {p}: the holder's session ended during a {} ms pause ({answer})",
                pause.as_millis()
            )),
            None => problems.push(format!(
                "liveness: round {p}: the holder's unlock did not answer"
            )),
        }
        if granted.is_none() {
            granted = waiter.wait(wait_id, t + slack).await;
            if granted.is_none() {
                problems.push(format!(
                    "liveness: round {p}: the waiter was not granted after the unlock"
                ));
            }
        }
    }
    let next = match granted {
        Some(answer) => match answer["granted"].as_u64() {
            Some(next_token) => {
                ctx.recorder
                    .complete(record, Outcome::Ok, json!(next_token));
                if next_token <= token {
                    problems.push(format!(
                        "round {p}: the waiter's token {next_token} is not above the holder's {token}"
                    ));
                }
                Some((waiter, next_token))
            }
            None => {
                ctx.recorder.complete(record, Outcome::Fail, Json::Null);
                problems.push(format!(
                    "liveness: round {p}: the waiter's lock failed: {answer}"
                ));
                None
            }
        },
        None => {
            ctx.recorder.complete(record, Outcome::Info, Json::Null);
            None
        }
    };
    let checked_bound = long;
    Ok((
        Round {
            long,
            problems,
            handover_ms,
            checked_bound,
        },
        next,
    ))
}
