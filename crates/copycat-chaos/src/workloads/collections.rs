//! Set, counter, queue and events workloads: each records its operations
//! and checks, after the heal, what every server holds against what the
//! clients were told.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use copycat_client::ClientState;
use copycat_primitives::{Long, Queue, Set, Topic};
use copycat_sim::history::{Key, OperationStatus};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value as Json};

use super::{bounded, finish, outcome_of, Check, Ctx};
use crate::recorder::Outcome;

const SET: &str = "chaos-set";

/// The set the set workload adds to at `now_ms`.
fn set_name(now_ms: u64) -> String {
    format!("{SET}-{}", now_ms / 60_000)
}
const COUNTER: &str = "chaos-counter";
const QUEUE: &str = "chaos-queue";
const TOPIC: &str = "chaos-topic";

/// A unique element: the process in the high bits, a count in the low.
fn element(process: u64, n: u64) -> u64 {
    (process << 32) | n
}

/// Wait for every worker; their errors, if any, as a failed check.
async fn join_all(workers: Vec<tokio::task::JoinHandle<Result<()>>>) -> Option<Check> {
    let mut errors = Vec::new();
    for worker in workers {
        match worker.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => errors.push(format!("{error:#}")),
            Err(error) => errors.push(format!("client task: {error}")),
        }
    }
    (!errors.is_empty()).then(|| Check::new("clients ran", false, errors.join("; ")))
}

/// The values of `f` operations with the given status, from the history.
fn inputs(ctx: &Ctx, f: &str, status: &[OperationStatus]) -> Vec<u64> {
    ctx.recorder
        .snapshot()
        .operations()
        .iter()
        .filter(|op| op.f.as_str() == f && status.contains(&op.status))
        .filter_map(|op| op.input.as_u64())
        .collect()
}

fn sample(items: &BTreeSet<u64>) -> String {
    let shown: Vec<String> = items.iter().take(8).map(|i| format!("{:#x}", i)).collect();
    if items.len() > 8 {
        format!("{} ... ({} in all)", shown.join(", "), items.len())
    } else {
        shown.join(", ")
    }
}

/// The set workload: adds of unique elements; no acknowledged add may be
/// missing on any server, and nothing never added may appear.
pub async fn set(ctx: Arc<Ctx>) -> Result<Vec<Check>> {
    let workers = (0..ctx.clients as u64)
        .map(|process| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let limit = ctx.request_timeout + Duration::from_secs(1);
                let mut n = 0;
                while !ctx.stopping() {
                    let primitives = ctx.primitives().await?;
                    let mut sets: HashMap<String, Set<u64>> = HashMap::new();
                    while ctx.live(&primitives) {
                        // A new set every minute keeps each below the
                        // cluster's limit on entries per collection.
                        let name = set_name(ctx.recorder.now_ms());
                        if let Entry::Vacant(slot) = sets.entry(name.clone()) {
                            match bounded(limit, Set::<u64>::open(&primitives, &name)).await {
                                Some(Ok(set)) => {
                                    slot.insert(set);
                                }
                                _ => continue,
                            }
                        }
                        let set = &sets[&name];
                        n += 1;
                        let value = element(process, n);
                        let id = ctx
                            .recorder
                            .invoke(process, "add", name.as_str(), json!(value));
                        let answer = bounded(limit, set.add(&value)).await;
                        finish(&ctx.recorder, id, answer, |_| json!(value));
                    }
                    primitives.client().clone().close().await;
                }
                Ok(())
            })
        })
        .collect();
    let mut checks: Vec<Check> = join_all(workers).await.into_iter().collect();
    ctx.wait_healed().await;
    let acknowledged: BTreeSet<u64> = inputs(&ctx, "add", &[OperationStatus::Ok])
        .into_iter()
        .collect();
    let attempted: BTreeSet<u64> = inputs(
        &ctx,
        "add",
        &[
            OperationStatus::Ok,
            OperationStatus::Info,
            OperationStatus::Pending,
        ],
    )
    .into_iter()
    .collect();
    let names: BTreeSet<String> = ctx
        .recorder
        .snapshot()
        .operations()
        .iter()
        .filter(|op| op.f.as_str() == "add")
        .filter_map(|op| match &op.key {
            Key::String(name) => Some(name.clone()),
            Key::Integer(_) => None,
        })
        .collect();
    let converged = ctx.converge().await;
    let mut passed = converged.is_ok();
    let mut details = vec![format!(
        "{} adds acknowledged, {} of unknown outcome, over {} sets",
        acknowledged.len(),
        attempted.len() - acknowledged.len(),
        names.len()
    )];
    if let Err(error) = &converged {
        details.push(format!("{error:#}"));
    }
    for server in &ctx.ids {
        let members = async {
            let primitives = ctx.pinned(*server).await?;
            let mut members = BTreeSet::new();
            for name in &names {
                let set = Set::<u64>::open(&primitives, name).await?;
                members.extend(set.members().await?);
            }
            primitives.client().clone().close().await;
            anyhow::Ok(members)
        };
        match members.await {
            Ok(members) => {
                let lost: BTreeSet<u64> = acknowledged.difference(&members).copied().collect();
                let phantom: BTreeSet<u64> = members.difference(&attempted).copied().collect();
                if !lost.is_empty() || !phantom.is_empty() {
                    passed = false;
                }
                let mut line = format!("server {server}: {} elements", members.len());
                if !lost.is_empty() {
                    line += &format!(", LOST {} acknowledged: {}", lost.len(), sample(&lost));
                }
                if !phantom.is_empty() {
                    line += &format!(", {} never added: {}", phantom.len(), sample(&phantom));
                }
                details.push(line);
            }
            Err(error) => {
                passed = false;
                details.push(format!("server {server}: no final read ({error:#})"));
            }
        }
    }
    checks.push(Check::new(
        "no acknowledged add lost, on every server",
        passed,
        details.join("; "),
    ));
    Ok(checks)
}

/// The counter workload: increments; every acknowledged increment returns
/// a distinct value, and the final value on every server lies between the
/// acknowledged count and that plus the increments of unknown outcome.
pub async fn counter(ctx: Arc<Ctx>) -> Result<Vec<Check>> {
    let workers = (0..ctx.clients as u64)
        .map(|process| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let limit = ctx.request_timeout + Duration::from_secs(1);
                while !ctx.stopping() {
                    let primitives = ctx.primitives().await?;
                    let long = Long::open(&primitives, COUNTER).await?;
                    while ctx.live(&primitives) {
                        let id = ctx.recorder.invoke(process, "add", COUNTER, json!(1));
                        let answer = bounded(limit, long.add_and_get(1)).await;
                        finish(&ctx.recorder, id, answer, |total| json!(total));
                    }
                    primitives.client().clone().close().await;
                }
                Ok(())
            })
        })
        .collect();
    let mut checks: Vec<Check> = join_all(workers).await.into_iter().collect();
    ctx.wait_healed().await;
    let history = ctx.recorder.snapshot();
    let mut results: BTreeMap<i64, usize> = BTreeMap::new();
    let (mut ok, mut unknown_count) = (0i64, 0i64);
    for op in history
        .operations()
        .iter()
        .filter(|op| op.f.as_str() == "add")
    {
        match op.status {
            OperationStatus::Ok => {
                ok += 1;
                if let Some(value) = op.output.as_ref().and_then(Json::as_i64) {
                    *results.entry(value).or_default() += 1;
                }
            }
            OperationStatus::Info | OperationStatus::Pending => unknown_count += 1,
            OperationStatus::Fail => {}
        }
    }
    let duplicates: Vec<i64> = results
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(v, _)| *v)
        .collect();
    let highest = results.keys().next_back().copied().unwrap_or(0);
    checks.push(Check::new(
        "each acknowledged increment saw a distinct value",
        duplicates.is_empty(),
        if duplicates.is_empty() {
            format!("{ok} acknowledged, highest result {highest}")
        } else {
            format!("values returned more than once: {duplicates:?}")
        },
    ));
    let converged = ctx.converge().await;
    let mut passed = converged.is_ok();
    let mut details = vec![format!(
        "{ok} acknowledged, {unknown_count} of unknown outcome: the total must be in {ok}..={}",
        ok + unknown_count
    )];
    if let Err(error) = &converged {
        details.push(format!("{error:#}"));
    }
    for server in &ctx.ids {
        let value = async {
            let primitives = ctx.pinned(*server).await?;
            let value = Long::open(&primitives, COUNTER).await?.get().await?;
            primitives.client().clone().close().await;
            anyhow::Ok(value)
        };
        match value.await {
            Ok(value) => {
                let within = value >= ok && value <= ok + unknown_count && value >= highest;
                passed &= within;
                details.push(format!(
                    "server {server}: {value}{}",
                    if within { "" } else { " OUT OF BOUNDS" }
                ));
            }
            Err(error) => {
                passed = false;
                details.push(format!("server {server}: no final read ({error:#})"));
            }
        }
    }
    checks.push(Check::new(
        "counter exact on every server",
        passed,
        details.join("; "),
    ));
    Ok(checks)
}

/// The queue workload: half the clients offer unique items, half poll;
/// after the heal one client drains the queue. Every item is delivered at
/// most once, every acknowledged offer exactly once, and nothing that was
/// never offered.
pub async fn queue(ctx: Arc<Ctx>) -> Result<Vec<Check>> {
    let clients = ctx.clients.max(2) as u64;
    let workers = (0..clients)
        .map(|process| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let limit = ctx.request_timeout + Duration::from_secs(1);
                let mut n = 0;
                while !ctx.stopping() {
                    let primitives = ctx.primitives().await?;
                    let queue = Queue::<u64>::open(&primitives, QUEUE).await?;
                    while ctx.live(&primitives) {
                        if process % 2 == 0 {
                            n += 1;
                            let value = element(process, n);
                            let id = ctx.recorder.invoke(process, "offer", QUEUE, json!(value));
                            match bounded(limit, queue.offer(&value)).await {
                                Some(Ok(true)) => {
                                    ctx.recorder.complete(id, Outcome::Ok, json!(value))
                                }
                                Some(Ok(false)) => {
                                    ctx.recorder.complete(id, Outcome::Fail, Json::Null)
                                }
                                Some(Err(error)) => {
                                    ctx.recorder.complete(id, outcome_of(&error), Json::Null)
                                }
                                None => ctx.recorder.complete(id, Outcome::Info, Json::Null),
                            }
                        } else {
                            let id = ctx.recorder.invoke(process, "poll", QUEUE, Json::Null);
                            let answer = bounded(limit, queue.poll()).await;
                            if let Some(None) =
                                finish(&ctx.recorder, id, answer, |item| json!(item))
                            {
                                // Empty: let the offers catch up.
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        }
                    }
                    primitives.client().clone().close().await;
                }
                Ok(())
            })
        })
        .collect();
    let mut checks: Vec<Check> = join_all(workers).await.into_iter().collect();
    ctx.wait_healed().await;

    // Drain what is left, recorded like any other poll.
    let drain_process = 1 << 40;
    let drained = async {
        let primitives = ctx.primitives().await?;
        let queue = Queue::<u64>::open(&primitives, QUEUE).await?;
        let mut count = 0;
        loop {
            let id = ctx
                .recorder
                .invoke(drain_process, "poll", QUEUE, Json::Null);
            match queue.poll().await {
                Ok(Some(item)) => {
                    ctx.recorder.complete(id, Outcome::Ok, json!(item));
                    count += 1;
                }
                Ok(None) => {
                    ctx.recorder.complete(id, Outcome::Ok, Json::Null);
                    break;
                }
                Err(error) => {
                    ctx.recorder.complete(id, Outcome::Info, Json::Null);
                    return Err(error.into());
                }
            }
        }
        primitives.client().clone().close().await;
        anyhow::Ok(count)
    };
    let drained = drained.await;

    let history = ctx.recorder.snapshot();
    let mut offered_ok = BTreeSet::new();
    let mut offered_any = BTreeSet::new();
    let mut delivered: BTreeMap<u64, usize> = BTreeMap::new();
    for op in history.operations() {
        match (op.f.as_str(), op.status) {
            ("offer", OperationStatus::Ok) => {
                offered_ok.insert(op.input.as_u64().unwrap_or_default());
                offered_any.insert(op.input.as_u64().unwrap_or_default());
            }
            ("offer", OperationStatus::Info | OperationStatus::Pending) => {
                offered_any.insert(op.input.as_u64().unwrap_or_default());
            }
            ("poll", OperationStatus::Ok) => {
                if let Some(item) = op.output.as_ref().and_then(Json::as_u64) {
                    *delivered.entry(item).or_default() += 1;
                }
            }
            _ => {}
        }
    }
    let twice: BTreeSet<u64> = delivered
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(i, _)| *i)
        .collect();
    let phantom: BTreeSet<u64> = delivered
        .keys()
        .filter(|i| !offered_any.contains(i))
        .copied()
        .collect();
    checks.push(Check::new(
        "each item delivered at most once, and only items offered",
        twice.is_empty() && phantom.is_empty(),
        format!(
            "{} offers acknowledged, {} items delivered{}{}",
            offered_ok.len(),
            delivered.len(),
            if twice.is_empty() {
                String::new()
            } else {
                format!("; DELIVERED TWICE: {}", sample(&twice))
            },
            if phantom.is_empty() {
                String::new()
            } else {
                format!("; NEVER OFFERED: {}", sample(&phantom))
            },
        ),
    ));
    // A poll of unknown outcome may have taken an item nobody saw: an
    // acknowledged offer missing from the deliveries is lost only beyond
    // the number of such polls.
    let unknown_polls = history
        .operations()
        .iter()
        .filter(|op| op.f.as_str() == "poll" && op.status.is_unknown())
        .count();
    let lost: BTreeSet<u64> = offered_ok
        .iter()
        .filter(|i| !delivered.contains_key(i))
        .copied()
        .collect();
    checks.push(Check::new(
        "after the heal, every acknowledged offer delivered exactly once",
        lost.len() <= unknown_polls && drained.is_ok(),
        match &drained {
            Ok(count) if lost.is_empty() => format!("the drain took {count} items"),
            Ok(count) if lost.len() <= unknown_polls => format!(
                "the drain took {count} items; {} undelivered, at most the {unknown_polls} polls of unknown outcome",
                lost.len()
            ),
            Ok(count) => format!(
                "the drain took {count} items; LOST {} (only {unknown_polls} polls of unknown outcome): {}",
                lost.len(),
                sample(&lost)
            ),
            Err(error) => format!("the drain failed: {error:#}"),
        },
    ));
    Ok(checks)
}

/// One session's subscription of an events subscriber.
#[derive(Clone, Debug)]
struct Life {
    /// When it subscribed (the recorder's clock).
    subscribed_at: u64,
    /// (sequence, message) as received.
    messages: Vec<(u64, u64)>,
    /// Its session ended before the run did.
    ended: bool,
}

/// The events workload: clients subscribe to a topic, one publishes
/// numbers in order. Every subscriber receives each message at most once,
/// in publication order, and every acknowledged message published while
/// its session lived. A subscriber whose session ends (it expired under a
/// partition, a pause or a clock jump) subscribes again with a new session
/// and goes on; each session's subscription is one "life", checked on its
/// own.
pub async fn events(ctx: Arc<Ctx>) -> Result<Vec<Check>> {
    let subscribers = ctx.clients.max(2) - 1;
    type Received = Arc<Mutex<Vec<Life>>>;
    let mut streams: Vec<(
        Received,
        tokio::sync::oneshot::Receiver<u64>,
        tokio::task::JoinHandle<Result<()>>,
    )> = Vec::new();
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    for _ in 0..subscribers {
        let ctx = ctx.clone();
        let received: Received = Arc::default();
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let sink = received.clone();
        let mut done = done_rx.clone();
        let task = tokio::spawn(async move {
            let mut first = Some(subscribed_tx);
            let mut attempts = 0u32;
            loop {
                if *done.borrow() {
                    return Ok(());
                }
                // A new session and subscription; under faults this may
                // fail for a while: retry until the run ends.
                let subscribed = async {
                    let primitives = ctx.primitives().await?;
                    let topic = Topic::<u64>::open(&primitives, TOPIC).await?;
                    let subscription = topic.subscribe().await?;
                    anyhow::Ok((primitives, subscription))
                };
                let (primitives, mut subscription) = match subscribed.await {
                    Ok(pair) => pair,
                    Err(error) => {
                        attempts += 1;
                        if first.is_some() && attempts >= 20 {
                            return Err(error.context("the first subscription"));
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                };
                let at = ctx.recorder.now_ms();
                sink.lock().expect("received").push(Life {
                    subscribed_at: at,
                    messages: Vec::new(),
                    ended: false,
                });
                if let Some(tx) = first.take() {
                    let _ = tx.send(at);
                }
                let session_ended = loop {
                    tokio::select! {
                        message = subscription.next() => match message {
                            Some(Ok(m)) => sink
                                .lock()
                                .expect("received")
                                .last_mut()
                                .expect("a life")
                                .messages
                                .push((m.seq, m.message)),
                            Some(Err(error)) => anyhow::bail!("subscription: {error}"),
                            None => break true,
                        },
                        _ = done.wait_for(|d| *d) => break false,
                    }
                };
                let ended =
                    session_ended || primitives.client().status().state == ClientState::Closed;
                if ended {
                    sink.lock()
                        .expect("received")
                        .last_mut()
                        .expect("a life")
                        .ended = true;
                }
                primitives.client().clone().close().await;
                if !session_ended {
                    return Ok(());
                }
            }
        });
        streams.push((received, subscribed_rx, task));
    }
    for (_, rx, _) in streams.iter_mut() {
        // Wait for every first subscription (or its failure) before
        // publishing.
        let _ = rx.await;
    }

    // One publisher, numbers in order.
    let publisher = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let limit = ctx.request_timeout + Duration::from_secs(1);
            let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed);
            let mut n = 0u64;
            while !ctx.stopping() {
                let primitives = ctx.primitives().await?;
                let topic = Topic::<u64>::open(&primitives, TOPIC).await?;
                while ctx.live(&primitives) {
                    n += 1;
                    let id = ctx.recorder.invoke(0, "publish", TOPIC, json!(n));
                    let answer = bounded(limit, topic.publish(&n)).await;
                    finish(&ctx.recorder, id, answer, |_| json!(n));
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(0..20))).await;
                }
                primitives.client().clone().close().await;
            }
            anyhow::Ok(())
        })
    };
    let mut checks: Vec<Check> = join_all(vec![publisher]).await.into_iter().collect();
    ctx.wait_healed().await;
    // Give the pushes time to arrive after the heal.
    tokio::time::sleep(ctx.session_timeout.min(Duration::from_secs(5))).await;
    let _ = done_tx.send(true);

    let history = ctx.recorder.snapshot();
    let published: Vec<(u64, u64, OperationStatus)> = history
        .operations()
        .iter()
        .filter(|op| op.f.as_str() == "publish")
        .map(|op| {
            (
                op.input.as_u64().unwrap_or_default(),
                op.invoke_time,
                op.status,
            )
        })
        .collect();
    let acknowledged = published
        .iter()
        .filter(|p| p.2 == OperationStatus::Ok)
        .count();
    let mut order_ok = true;
    let mut complete_ok = true;
    let mut details = vec![format!(
        "{} publishes acknowledged of {}; {subscribers} subscribers",
        acknowledged,
        published.len()
    )];
    let mut lives_total = 0;
    for (i, (received, _, task)) in streams.into_iter().enumerate() {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                details.push(format!("subscriber {i}: {error:#}"));
                complete_ok = false;
            }
            Err(error) => {
                details.push(format!("subscriber {i}: {error}"));
                complete_ok = false;
            }
        }
        let lives = received.lock().expect("received").clone();
        lives_total += lives.len();
        let mut line = format!("subscriber {i}: {} sessions", lives.len());
        for (l, life) in lives.iter().enumerate() {
            let messages: Vec<u64> = life.messages.iter().map(|(_, m)| *m).collect();
            let in_order = messages.windows(2).all(|w| w[0] < w[1])
                && life.messages.windows(2).all(|w| w[0].0 < w[1].0);
            if !in_order {
                order_ok = false;
                let bad = messages.windows(2).position(|w| w[0] >= w[1]).unwrap_or(0);
                line += &format!(
                    "; life {l}: OUT OF ORDER or DUPLICATE at position {bad}: {:?}",
                    &messages[bad..(bad + 2).min(messages.len())]
                );
            }
            // Completeness only for a life whose session lived to the end
            // of the run: one that ended may have lost what was published
            // after the cluster expired it and before it noticed.
            let got: BTreeSet<u64> = messages.iter().copied().collect();
            let missing: Vec<u64> = if life.ended {
                Vec::new()
            } else {
                published
                    .iter()
                    .filter(|(_, invoked, status)| {
                        *status == OperationStatus::Ok && *invoked > life.subscribed_at
                    })
                    .map(|(n, _, _)| *n)
                    .filter(|n| !got.contains(n))
                    .collect()
            };
            if !missing.is_empty() {
                complete_ok = false;
            }
            line += &format!(
                "; life {l}: {} received{}{}",
                messages.len(),
                if life.ended {
                    " (session ended: completeness not required)"
                } else {
                    ""
                },
                if missing.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", MISSING {} acknowledged: {:?}",
                        missing.len(),
                        &missing[..missing.len().min(8)]
                    )
                }
            );
        }
        if lives.last().is_none_or(|life| life.ended) {
            // Not a violation (the new session may still have been on its
            // way when the run ended), but worth seeing in the report.
            line += "; not subscribed again by the end";
        }
        details.push(line);
    }
    checks.push(Check::new(
        "events once each and in order",
        order_ok,
        details.join("; "),
    ));
    checks.push(Check::new(
        "every acknowledged event reached every live subscriber",
        complete_ok,
        format!("{acknowledged} acknowledged publishes, {lives_total} subscriber sessions"),
    ));
    Ok(checks)
}
