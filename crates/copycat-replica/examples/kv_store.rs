//! A replicated key-value store with TTL keys and change events, driven
//! through a replica by hand: the entries a Raft log would commit are built
//! here and applied one by one, and the program prints what the replica
//! reports for each.
//!
//! Run it with `cargo run -p copycat-replica --example kv_store`.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use copycat_proto::{ClientId, EventIndex, LogBody, LogCommand, Response, Sequence, SessionId};
use copycat_raft::LogIndex;
use copycat_replica::testing::command_entry;
use copycat_replica::{
    codec, Applied, ApplyContext, Outcome, QueryContext, QueryOutcome, Replica, ReplicaConfig,
    RestoreError, StateMachine, TimerId, Typed,
};
use serde::{Deserialize, Serialize};

/// The store: values, the TTL timer of each expiring key, and watchers.
#[derive(Default, Serialize, Deserialize)]
struct KvStore {
    values: BTreeMap<String, String>,
    /// Key to its TTL timer, and back.
    ttl_timers: BTreeMap<String, TimerId>,
    timer_keys: BTreeMap<TimerId, String>,
    /// Sessions that receive change events.
    watchers: BTreeSet<SessionId>,
}

#[derive(Debug, Serialize, Deserialize)]
enum KvCommand {
    Put {
        key: String,
        value: String,
        ttl_ms: Option<u64>,
    },
    Delete {
        key: String,
    },
    Watch,
}

#[derive(Debug, Serialize, Deserialize)]
enum KvQuery {
    Get { key: String },
}

#[derive(Debug, Serialize, Deserialize)]
enum KvOutput {
    Previous(Option<String>),
    Value(Option<String>),
    Watching,
}

#[derive(Debug, Serialize, Deserialize)]
enum KvError {
    TooManyTimers,
}

#[derive(Debug, Serialize, Deserialize)]
enum Change {
    Put { key: String, value: String },
    Removed { key: String, expired: bool },
}

impl KvStore {
    fn clear_ttl(&mut self, ctx: &mut ApplyContext<'_>, key: &str) {
        if let Some(timer) = self.ttl_timers.remove(key) {
            ctx.cancel(timer);
            self.timer_keys.remove(&timer);
        }
    }

    fn notify(&self, ctx: &mut ApplyContext<'_>, change: &Change) {
        for watcher in &self.watchers {
            ctx.publish_value(*watcher, "change", change);
        }
    }
}

impl StateMachine for KvStore {
    type Command = KvCommand;
    type Query = KvQuery;
    type Output = KvOutput;
    type Error = KvError;

    fn apply(
        &mut self,
        ctx: &mut ApplyContext<'_>,
        command: KvCommand,
    ) -> Result<KvOutput, KvError> {
        match command {
            KvCommand::Put { key, value, ttl_ms } => {
                self.clear_ttl(ctx, &key);
                if let Some(ttl_ms) = ttl_ms {
                    let timer = ctx.schedule(ttl_ms).map_err(|_| KvError::TooManyTimers)?;
                    self.ttl_timers.insert(key.clone(), timer);
                    self.timer_keys.insert(timer, key.clone());
                }
                let previous = self.values.insert(key.clone(), value.clone());
                self.notify(ctx, &Change::Put { key, value });
                Ok(KvOutput::Previous(previous))
            }
            KvCommand::Delete { key } => {
                self.clear_ttl(ctx, &key);
                let previous = self.values.remove(&key);
                if previous.is_some() {
                    self.notify(
                        ctx,
                        &Change::Removed {
                            key,
                            expired: false,
                        },
                    );
                }
                Ok(KvOutput::Previous(previous))
            }
            KvCommand::Watch => {
                let session = ctx.session().expect("commands come from sessions");
                self.watchers.insert(session);
                Ok(KvOutput::Watching)
            }
        }
    }

    fn query(&self, _ctx: &QueryContext, query: KvQuery) -> Result<KvOutput, KvError> {
        match query {
            KvQuery::Get { key } => Ok(KvOutput::Value(self.values.get(&key).cloned())),
        }
    }

    fn on_timer(&mut self, ctx: &mut ApplyContext<'_>, timer: TimerId) {
        if let Some(key) = self.timer_keys.remove(&timer) {
            self.ttl_timers.remove(&key);
            self.values.remove(&key);
            self.notify(ctx, &Change::Removed { key, expired: true });
        }
    }

    fn session_closed(&mut self, _ctx: &mut ApplyContext<'_>, session: SessionId) {
        self.watchers.remove(&session);
    }

    fn snapshot(&self) -> Bytes {
        codec::encode(self)
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        *self = codec::decode(data).map_err(|e| RestoreError(e.to_string()))?;
        Ok(())
    }
}

/// Stands in for the Raft log: numbers entries and applies them.
struct Log {
    replica: Replica<Typed<KvStore>>,
    next_index: u64,
}

impl Log {
    fn commit(&mut self, timestamp_ms: u64, body: LogBody) -> Applied {
        let entry = command_entry(self.next_index, LogCommand { timestamp_ms, body }.encode());
        self.next_index += 1;
        let applied = self.replica.apply(&entry);
        self.replica.invariants();
        report(&applied);
        applied
    }
}

fn report(applied: &Applied) {
    let what = match &applied.outcome {
        Outcome::Register {
            client,
            result:
                Ok(Response::Registered {
                    session,
                    timeout_ms,
                }),
        } => {
            format!("client {client:?} registered session {session:?} (timeout {timeout_ms} ms)")
        }
        Outcome::Command {
            session,
            sequence,
            result:
                Ok(Response::Command {
                    output,
                    event_index,
                    ..
                }),
        } => {
            let output = match output {
                Ok(bytes) => format!("{:?}", codec::decode::<KvOutput>(bytes).expect("output")),
                Err(failure) => format!("failed: {failure}"),
            };
            format!("{session:?} command {sequence:?} -> {output} (deliver events up to {event_index:?} first)")
        }
        Outcome::Nothing => "tick".to_string(),
        other => format!("{other:?}"),
    };
    println!(
        "[index {:>2}, time {:>5} ms] {what}",
        applied.index.0, applied.time_ms
    );
    for batch in &applied.events {
        for event in &batch.events {
            let change: Change = codec::decode(&event.payload).expect("change event");
            println!(
                "      event to {:?} at {:?} (previous {:?}): {} {change:?}",
                batch.session, batch.event_index, batch.previous_event_index, event.name
            );
        }
    }
    for session in &applied.expired {
        println!("      session {session:?} expired");
    }
}

fn put(session: SessionId, sequence: u64, key: &str, value: &str, ttl_ms: Option<u64>) -> LogBody {
    let command = KvCommand::Put {
        key: key.into(),
        value: value.into(),
        ttl_ms,
    };
    LogBody::Command {
        session,
        sequence: Sequence(sequence),
        acked: Sequence::ZERO,
        payload: codec::encode(&command),
    }
}

fn registered(applied: &Applied) -> SessionId {
    match applied.outcome {
        Outcome::Register {
            result: Ok(Response::Registered { session, .. }),
            ..
        } => session,
        _ => panic!("registration failed"),
    }
}

fn main() {
    let replica =
        Replica::new(ReplicaConfig::default(), Typed(KvStore::default())).expect("valid config");
    let mut log = Log {
        replica,
        next_index: 1,
    };

    println!("Two clients register; the second watches for changes.");
    let writer = registered(&log.commit(
        0,
        LogBody::Register {
            client: ClientId(1),
            timeout_ms: 2_000,
        },
    ));
    let watcher = registered(&log.commit(
        5,
        LogBody::Register {
            client: ClientId(2),
            timeout_ms: 2_000,
        },
    ));
    let watch = LogBody::Command {
        session: watcher,
        sequence: Sequence(1),
        acked: Sequence::ZERO,
        payload: codec::encode(&KvCommand::Watch),
    };
    log.commit(10, watch);

    println!("\nThe writer puts a permanent key and a key with a 500 ms TTL.");
    log.commit(100, put(writer, 1, "color", "blue", None));
    log.commit(150, put(writer, 2, "lease", "held", Some(500)));

    println!("\nThe writer's retry of sequence 2 is answered from the cache (no second event).");
    log.commit(200, put(writer, 2, "lease", "held", Some(500)));

    println!("\nThe writer skips a sequence: the gap is refused.");
    log.commit(210, put(writer, 4, "oops", "x", None));

    println!("\nTime passes through keep-alives; the TTL timer fires before the entry at 700 ms.");
    let keep_alive = |session, sequence, event_index| LogBody::KeepAlive {
        session,
        command_sequence: Sequence(sequence),
        event_index: EventIndex(event_index),
    };
    log.commit(700, keep_alive(writer, 2, 0));
    log.commit(710, keep_alive(watcher, 1, 0));

    let get = codec::encode(&KvQuery::Get {
        key: "lease".into(),
    });
    let answer = log.replica.query(watcher, Sequence(1), LogIndex(0), &get);
    if let QueryOutcome::Done(Ok(Response::Query {
        output: Ok(bytes),
        index,
        ..
    })) = answer
    {
        let value: KvOutput = codec::decode(&bytes).expect("output");
        println!("      query get(lease) at index {index}: {value:?}");
    }

    println!(
        "\nThe watcher falls silent; only the writer keeps alive. The leader sees it suspect."
    );
    log.commit(1_500, keep_alive(writer, 2, 0));
    log.commit(2_800, keep_alive(writer, 2, 0));
    let suspects = log.replica.suspect_sessions();
    println!("      suspect sessions: {suspects:?}");
    for session in suspects {
        log.commit(2_801, LogBody::Expire { session });
    }

    println!("\nA change now notifies no one: the watcher's session is gone.");
    log.commit(2_900, put(writer, 3, "color", "green", None));

    let image = log.replica.snapshot();
    let mut copy =
        Replica::new(ReplicaConfig::default(), Typed(KvStore::default())).expect("valid config");
    copy.restore(&image).expect("own snapshot restores");
    println!(
        "\nSnapshot of {} bytes; restored copy has digest {:08x} = {:08x}.",
        image.len(),
        copy.digest(),
        log.replica.digest()
    );
}
