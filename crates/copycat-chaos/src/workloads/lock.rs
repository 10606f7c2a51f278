//! The lock workload: clients contend for one lock; each holder writes to a
//! protected resource that accepts a write only with a fencing token at
//! least as high as every token it accepted before.
//!
//! Checked:
//! * every grant's token is unique, and a grant that began after another
//!   ended has the higher token;
//! * two holds that both ended in a successful unlock (so both really held
//!   the lock throughout) never overlap in time;
//! * a holder whose session is alive is never refused as not holding the
//!   lock, and never fenced off the resource.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use copycat_primitives::{Error, Lock, ResourceError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value as Json};

use super::{bounded, outcome_of, Check, Ctx};
use crate::recorder::Outcome;

const LOCK: &str = "chaos-lock";

/// The resource the lock protects: it remembers the highest token it
/// accepted and refuses older ones.
#[derive(Default)]
pub struct Fenced {
    highest: u64,
    accepted: u64,
    /// Writes refused: (token, highest then, the writer's process).
    pub refused: Vec<(u64, u64, u64)>,
}

impl Fenced {
    /// A write under `token`; whether it was accepted.
    pub fn write(&mut self, token: u64, process: u64) -> bool {
        if token < self.highest {
            self.refused.push((token, self.highest, process));
            return false;
        }
        self.highest = token;
        self.accepted += 1;
        true
    }
}

/// One hold: from the grant's completion to the unlock's invocation.
#[derive(Clone, Debug)]
struct Hold {
    process: u64,
    token: u64,
    grant_invoked: u64,
    granted: u64,
    unlock_invoked: u64,
    /// The unlock succeeded: the lock was held all along.
    unlocked: bool,
    /// The unlock said the session does not hold it (so the session was
    /// alive: a command of an expired session fails as such).
    taken_while_alive: bool,
    /// The resource refused one of its writes, and the session lived on
    /// (its unlock was applied).
    fenced_while_alive: bool,
}

/// The lock workload.
pub async fn run(ctx: Arc<Ctx>) -> Result<Vec<Check>> {
    let resource = Arc::new(Mutex::new(Fenced::default()));
    let holds: Arc<Mutex<Vec<Hold>>> = Arc::default();
    let workers: Vec<_> = (0..ctx.clients as u64)
        .map(|process| {
            let ctx = ctx.clone();
            let resource = resource.clone();
            let holds = holds.clone();
            tokio::spawn(async move {
                let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed ^ (process << 8));
                let limit = ctx.request_timeout + Duration::from_secs(1);
                while !ctx.stopping() {
                    let primitives = ctx.primitives().await?;
                    let lock = Lock::open(&primitives, LOCK).await?;
                    while ctx.live(&primitives) {
                        let grant_invoked = ctx.recorder.now_ms();
                        let id = ctx.recorder.invoke(process, "lock", LOCK, Json::Null);
                        let token = match bounded(limit * 2, lock.try_lock_for(limit)).await {
                            Some(Ok(Some(token))) => {
                                ctx.recorder.complete(id, Outcome::Ok, json!(token));
                                token
                            }
                            Some(Ok(None)) => {
                                ctx.recorder.complete(id, Outcome::Fail, Json::Null);
                                continue;
                            }
                            Some(Err(error)) => {
                                ctx.recorder.complete(id, outcome_of(&error), Json::Null);
                                continue;
                            }
                            None => {
                                // The wait was dropped; the handle cancels it (or
                                // releases a grant that raced the cancel).
                                ctx.recorder.complete(id, Outcome::Info, Json::Null);
                                continue;
                            }
                        };
                        let granted = ctx.recorder.now_ms();
                        let mut fenced = false;
                        for _ in 0..2 {
                            let accepted = resource.lock().expect("resource").write(token, process);
                            fenced |= !accepted;
                            tokio::time::sleep(Duration::from_millis(rng.gen_range(5..60))).await;
                        }
                        let unlock_invoked = ctx.recorder.now_ms();
                        let id = ctx.recorder.invoke(process, "unlock", LOCK, json!(token));
                        let (unlocked, taken_while_alive) =
                            match bounded(limit, lock.unlock()).await {
                                Some(Ok(())) => {
                                    ctx.recorder.complete(id, Outcome::Ok, json!(token));
                                    (true, false)
                                }
                                // The unlock was applied in this session, so
                                // the session lived all along: the lock was
                                // taken from a live session.
                                Some(Err(Error::Resource(ResourceError::NotHolder))) => {
                                    ctx.recorder.complete(id, Outcome::Fail, Json::Null);
                                    (false, true)
                                }
                                Some(Err(error)) => {
                                    ctx.recorder.complete(id, outcome_of(&error), Json::Null);
                                    (false, false)
                                }
                                None => {
                                    ctx.recorder.complete(id, Outcome::Info, Json::Null);
                                    (false, false)
                                }
                            };
                        holds.lock().expect("holds").push(Hold {
                            process,
                            token,
                            grant_invoked,
                            granted,
                            unlock_invoked,
                            unlocked,
                            taken_while_alive,
                            // Fenced off while the session lived on (its
                            // unlock was applied).
                            fenced_while_alive: fenced && (unlocked || taken_while_alive),
                        });
                        if !unlocked {
                            // Make sure this session lets go before trying again.
                            let _ = bounded(limit, lock.unlock()).await;
                        }
                    }
                    primitives.client().clone().close().await;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let mut errors = Vec::new();
    for worker in workers {
        match worker.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => errors.push(format!("{error:#}")),
            Err(error) => errors.push(error.to_string()),
        }
    }
    ctx.wait_healed().await;
    let mut checks = Vec::new();
    if !errors.is_empty() {
        checks.push(Check::new("clients ran", false, errors.join("; ")));
    }
    let holds = holds.lock().expect("holds").clone();
    checks.extend(check_holds(&holds));
    let resource = resource.lock().expect("resource");
    checks.push(Check::new(
        "resource writes",
        true,
        format!(
            "{} accepted, {} refused by the fencing check",
            resource.accepted,
            resource.refused.len()
        ),
    ));
    Ok(checks)
}

fn check_holds(holds: &[Hold]) -> Vec<Check> {
    let mut checks = Vec::new();
    // Unique tokens, increasing with real-time order.
    let mut by_token: BTreeMap<u64, &Hold> = BTreeMap::new();
    let mut problems = Vec::new();
    for hold in holds {
        if let Some(other) = by_token.insert(hold.token, hold) {
            problems.push(format!(
                "token {} granted to client {} and client {}",
                hold.token, other.process, hold.process
            ));
        }
    }
    for a in holds {
        for b in holds {
            if a.granted < b.grant_invoked && a.token >= b.token {
                problems.push(format!(
                    "client {} was granted token {} at {} ms, before client {} asked at {} ms and got the lower token {}",
                    a.process, a.token, a.granted, b.process, b.grant_invoked, b.token
                ));
            }
        }
    }
    problems.truncate(5);
    checks.push(Check::new(
        "fencing tokens unique and increasing",
        problems.is_empty(),
        if problems.is_empty() {
            format!("{} grants", holds.len())
        } else {
            problems.join("; ")
        },
    ));

    // Mutual exclusion among holds that certainly held throughout.
    let mut certain: Vec<&Hold> = holds.iter().filter(|h| h.unlocked).collect();
    certain.sort_by_key(|h| h.granted);
    let mut overlaps = Vec::new();
    for pair in certain.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.granted < a.unlock_invoked {
            overlaps.push(format!(
                "client {} held token {} until {} ms, client {} was granted token {} at {} ms",
                a.process, a.token, a.unlock_invoked, b.process, b.token, b.granted
            ));
        }
    }
    overlaps.truncate(5);
    checks.push(Check::new(
        "mutual exclusion",
        overlaps.is_empty(),
        if overlaps.is_empty() {
            format!(
                "{} holds ended in a successful unlock, none overlapping",
                certain.len()
            )
        } else {
            overlaps.join("; ")
        },
    ));

    let taken: Vec<String> = holds
        .iter()
        .filter(|h| h.taken_while_alive || h.fenced_while_alive)
        .take(5)
        .map(|h| {
            format!(
                "client {} token {}{}{}",
                h.process,
                h.token,
                if h.taken_while_alive {
                    ": unlock refused (not the holder)"
                } else {
                    ""
                },
                if h.fenced_while_alive {
                    ": fenced off the resource"
                } else {
                    ""
                }
            )
        })
        .collect();
    checks.push(Check::new(
        "a live session keeps its lock",
        taken.is_empty(),
        if taken.is_empty() {
            "no holder lost the lock while its session lived".to_string()
        } else {
            format!("while their sessions lived: {}", taken.join("; "))
        },
    ));
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(
        process: u64,
        token: u64,
        grant_invoked: u64,
        granted: u64,
        unlock_invoked: u64,
    ) -> Hold {
        Hold {
            process,
            token,
            grant_invoked,
            granted,
            unlock_invoked,
            unlocked: true,
            taken_while_alive: false,
            fenced_while_alive: false,
        }
    }

    fn failed(checks: &[Check]) -> Vec<&str> {
        checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect()
    }

    #[test]
    fn sequential_holds_pass() {
        let holds = [
            hold(1, 10, 0, 5, 20),
            hold(2, 11, 6, 21, 30),
            hold(1, 12, 25, 31, 40),
        ];
        assert!(failed(&check_holds(&holds)).is_empty());
    }

    #[test]
    fn overlapping_holds_fail_mutual_exclusion() {
        let holds = [hold(1, 10, 0, 5, 20), hold(2, 11, 6, 15, 30)];
        assert_eq!(failed(&check_holds(&holds)), ["mutual exclusion"]);
    }

    #[test]
    fn a_later_grant_with_a_lower_token_fails() {
        let holds = [hold(1, 10, 0, 5, 20), hold(2, 9, 21, 22, 30)];
        assert_eq!(
            failed(&check_holds(&holds)),
            ["fencing tokens unique and increasing"]
        );
    }

    #[test]
    fn a_lock_taken_from_a_live_session_fails() {
        let mut taken = hold(1, 10, 0, 5, 20);
        taken.unlocked = false;
        taken.taken_while_alive = true;
        assert_eq!(
            failed(&check_holds(&[taken])),
            ["a live session keeps its lock"]
        );
    }

    #[test]
    fn the_resource_refuses_older_tokens() {
        let mut resource = Fenced::default();
        assert!(resource.write(5, 1));
        assert!(resource.write(7, 2));
        assert!(!resource.write(5, 1));
        assert!(resource.write(7, 2));
        assert_eq!(resource.refused, [(5, 7, 1)]);
    }
}
