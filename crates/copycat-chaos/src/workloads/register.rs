//! Linearizable registers: reads, writes and compare-and-sets on a few
//! values, checked by the project's linearizability checker, and final
//! reads on every server recorded into the same history.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use copycat_client::ServerSelection;
use copycat_primitives::Value;
use copycat_sim::history::Key;
use copycat_sim::linearizability::{check, CheckConfig, Register, Verdict};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value as Json};

use super::{bounded, finish, outcome_of, Check, Ctx};
use crate::recorder::Outcome;

/// Registers the clients share at a time.
const KEYS: u64 = 4;
/// Every this many milliseconds the clients move on to fresh registers, so
/// no key's history grows beyond what the checker decides quickly (as
/// Jepsen's independent keys do).
const ROTATE_MS: u64 = 10_000;
/// Values are drawn from 0..VALUES (a small domain, so compare-and-sets
/// succeed often).
const VALUES: i64 = 5;
/// Processes of the final reads start here.
const FINAL_PROCESS: u64 = 1 << 40;

fn name(key: u64) -> String {
    format!("chaos-register-{key}")
}

async fn worker(ctx: Arc<Ctx>, process: u64) -> Result<()> {
    let reader = process >= ctx.clients as u64;
    // Half the clients prefer followers: a follower's linearizable read
    // must be as fresh as the leader's.
    let selection = if process % 2 == 1 {
        ServerSelection::Followers
    } else {
        ServerSelection::Leader
    };
    let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed ^ (process << 8));
    let limit = ctx.request_timeout + Duration::from_secs(1);
    while !ctx.stopping() {
        let primitives = ctx.primitives_with(selection).await?;
        let mut registers: HashMap<u64, Value<i64>> = HashMap::new();
        while ctx.live(&primitives) {
            let key = (ctx.recorder.now_ms() / ROTATE_MS) * KEYS + rng.gen_range(0..KEYS);
            if let Entry::Vacant(slot) = registers.entry(key) {
                match bounded(limit, Value::<i64>::open(&primitives, &name(key))).await {
                    Some(Ok(register)) => {
                        slot.insert(register);
                    }
                    _ => continue,
                }
            }
            let register = &registers[&key];
            let recorder = &ctx.recorder;
            // Readers only read: their requests go where the client last
            // heard the leader is, so they are the first to meet a server
            // that lost leadership.
            let choice = if reader { 0 } else { rng.gen_range(0..10) };
            match choice {
                0..=3 => {
                    let id = recorder.invoke(process, "read", key, Json::Null);
                    match bounded(limit, register.get()).await {
                        Some(Ok(value)) => recorder.complete(id, Outcome::Ok, json!(value)),
                        // A read that did not answer had no effect.
                        _ => recorder.complete(id, Outcome::Fail, Json::Null),
                    }
                }
                4..=6 => {
                    let value = rng.gen_range(0..VALUES);
                    let id = recorder.invoke(process, "write", key, json!(value));
                    finish(
                        recorder,
                        id,
                        bounded(limit, register.set(&value)).await,
                        |_| json!(value),
                    );
                }
                _ => {
                    let expected = rng.gen_range(0..VALUES);
                    let new = rng.gen_range(0..VALUES);
                    let id = recorder.invoke(process, "cas", key, json!([expected, new]));
                    match bounded(limit, register.compare_and_set(Some(&expected), Some(&new)))
                        .await
                    {
                        Some(Ok(true)) => {
                            recorder.complete(id, Outcome::Ok, json!([expected, new]))
                        }
                        Some(Ok(false)) => recorder.complete(id, Outcome::Fail, Json::Null),
                        Some(Err(error)) => recorder.complete(id, outcome_of(&error), Json::Null),
                        None => recorder.complete(id, Outcome::Info, Json::Null),
                    }
                }
            }
        }
        primitives.client().clone().close().await;
    }
    Ok(())
}

/// The register workload.
pub async fn run(ctx: Arc<Ctx>) -> Result<Vec<Check>> {
    let readers = (ctx.clients as u64 / 2).max(1);
    let workers: Vec<_> = (0..ctx.clients as u64 + readers)
        .map(|process| tokio::spawn(worker(ctx.clone(), process)))
        .collect();
    let mut errors = Vec::new();
    for worker in workers {
        if let Ok(Err(error)) = worker.await {
            errors.push(format!("{error:#}"));
        }
    }
    ctx.wait_healed().await;
    let mut checks = Vec::new();
    if !errors.is_empty() {
        checks.push(Check::new("clients ran", false, errors.join("; ")));
    }

    // Every server's own state, read after it applied everything: recorded
    // as reads after the end, so a lost acknowledged write shows as a
    // violation of the register's history.
    let converged = ctx.converge().await;
    let keys: BTreeSet<u64> = ctx
        .recorder
        .snapshot()
        .operations()
        .iter()
        .filter_map(|op| match &op.key {
            Key::Integer(key) => Some(*key),
            _ => None,
        })
        .collect();
    let mut finals = Vec::new();
    let mut per_server: Vec<Vec<Option<i64>>> = Vec::new();
    for (i, server) in ctx.ids.iter().enumerate() {
        let reads = async {
            let primitives = ctx.pinned(*server).await?;
            let mut values = Vec::new();
            for key in &keys {
                let register = Value::<i64>::open(&primitives, &name(*key)).await?;
                values.push(register.get().await?);
            }
            primitives.client().clone().close().await;
            anyhow::Ok(values)
        };
        match reads.await {
            Ok(values) => {
                for (n, (key, value)) in keys.iter().zip(&values).enumerate() {
                    let process = FINAL_PROCESS + (i as u64) * keys.len() as u64 + n as u64;
                    let id = ctx.recorder.invoke(process, "read", *key, Json::Null);
                    ctx.recorder.complete(id, Outcome::Ok, json!(value));
                }
                let last: Vec<_> = values.iter().rev().take(KEYS as usize).rev().collect();
                finals.push(format!(
                    "server {server}: {} registers, the last {} {last:?}",
                    values.len(),
                    last.len()
                ));
                per_server.push(values);
            }
            Err(error) => finals.push(format!("server {server}: no final read ({error:#})")),
        }
    }
    let all_read = finals.iter().all(|f| !f.contains("no final read"));
    let differing: Vec<u64> = keys
        .iter()
        .enumerate()
        .filter(|(n, _)| per_server.windows(2).any(|w| w[0][*n] != w[1][*n]))
        .map(|(_, key)| *key)
        .collect();
    checks.push(Check::new(
        "every server holds the same registers",
        differing.is_empty() && all_read,
        if differing.is_empty() {
            format!("{} registers on {} servers", keys.len(), per_server.len())
        } else {
            format!("registers {differing:?} differ between servers")
        },
    ));
    checks.push(Check::new(
        "final reads on every server",
        converged.is_ok() && all_read,
        match &converged {
            Ok(()) => finals.join("; "),
            Err(error) => format!("{error:#}; {}", finals.join("; ")),
        },
    ));

    let history = ctx.recorder.snapshot();
    let started = Instant::now();
    let config = CheckConfig {
        deadline: Some(Instant::now() + Duration::from_secs(600)),
        ..CheckConfig::default()
    };
    let check = match check(&Register::new(), &history, &config) {
        Ok(report) => match &report.verdict {
            Verdict::Linearizable => Check::new(
                "linearizable (register model, per key)",
                true,
                format!(
                    "{} operations checked in {:.1} s",
                    history.operations().len(),
                    started.elapsed().as_secs_f64()
                ),
            ),
            Verdict::NotLinearizable(violation) => {
                let core: Vec<String> = violation.core.iter().map(|op| op.to_string()).collect();
                Check::new(
                    "linearizable (register model, per key)",
                    false,
                    format!(
                        "key {}: not linearizable; core: {}",
                        violation.key,
                        core.join(" | ")
                    ),
                )
            }
            Verdict::Unknown { reason, keys } => Check::new(
                "linearizable (register model, per key)",
                false,
                format!("undecided ({reason:?}) for keys {keys:?}"),
            ),
        },
        Err(error) => Check::new(
            "linearizable (register model, per key)",
            false,
            error.to_string(),
        ),
    };
    checks.push(check);
    Ok(checks)
}
