//! `copycat value|long|map|multimap|set|queue|lock|election|group|semaphore|latch|topic`:
//! one subcommand per primitive, one sub-subcommand per operation, all on
//! the resource manager every `copycat server` serves.
//!
//! Operations that only read (`get`, `size`, `holder`, ...) never create
//! the resource: on a name nobody created they fail with "no resource
//! named ...". Operations that write create it (as `open` does). A name
//! taken by another type fails with "resource ... is a X, not a Y".
//! Failures print `error: ...` and exit with code 1.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use copycat_client::Client;
use copycat_primitives::group::Delivery;
use copycat_primitives::{
    CountDownLatch, Election, Error, Group, GroupChange, Lock, Long, Map, MultiMap, Primitives,
    Queue, QueueChange, Receipt, ResourceError, ResourceType, Semaphore, Set, SetChange,
    Subscription, Topic, Value, ValueOrder,
};
use serde_json::json;

/// How to reach the cluster (accepted before or after the operation).
#[derive(Args, Debug)]
pub struct Conn {
    /// A server's address (HOST:PORT); repeat for each server (one is
    /// enough: servers name the others).
    #[arg(long = "server", global = true, default_value = "127.0.0.1:5700")]
    servers: Vec<String>,
    /// Give up on a request after this many seconds.
    #[arg(long, global = true, default_value_t = 10)]
    request_timeout_secs: u64,
    /// Print results as JSON objects (one a line).
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    tls: copycat_cli::ClientTlsArgs,
}

/// A primitive's command line: how to reach the cluster, the resource's
/// name, the operation.
#[derive(Args, Debug)]
pub struct Prim<Op: Subcommand> {
    #[command(flatten)]
    conn: Conn,
    /// The resource's name.
    name: String,
    #[command(subcommand)]
    op: Op,
}

/// The primitives' subcommands of `copycat`.
#[derive(Subcommand, Debug)]
pub enum PrimitiveCmd {
    /// A replicated value (text), with TTLs, compare-and-set and watches.
    Value(Prim<ValueOp>),
    /// A replicated 64-bit counter.
    Long(Prim<LongOp>),
    /// A replicated map of text keys to text values.
    Map(Prim<MapOp>),
    /// A replicated map of text keys to sets of text values.
    Multimap(Prim<MultiMapOp>),
    /// A replicated set of text values.
    Set(Prim<SetOp>),
    /// A replicated FIFO queue of text values, with blocking takes.
    Queue(Prim<QueueOp>),
    /// A distributed lock with fencing tokens (released when its session
    /// ends).
    Lock(Prim<LockOp>),
    /// A leader election with fencing terms.
    Election(Prim<ElectionOp>),
    /// A membership group with a leader.
    Group(Prim<GroupOp>),
    /// A counting semaphore.
    Semaphore(Prim<SemaphoreOp>),
    /// A count-down latch.
    Latch(Prim<LatchOp>),
    /// A publish/subscribe topic of text messages.
    Topic(Prim<TopicOp>),
    /// Every resource of any type: list them, describe one, delete one.
    Resources(ResourcesArgs),
}

/// `copycat resources ...`
#[derive(Args, Debug)]
pub struct ResourcesArgs {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    op: ResourcesOp,
}

/// `copycat resources ...`
#[derive(Subcommand, Debug)]
pub enum ResourcesOp {
    /// Print every resource's name and type, in name order.
    List {
        /// Only resources of this type (value, long, map, multimap, set,
        /// queue, lock, election, group, semaphore, latch or topic).
        #[arg(long = "type", value_parser = str::parse::<ResourceType>)]
        resource_type: Option<ResourceType>,
    },
    /// Print a resource's type, settings and the log index that created
    /// it; exit code 1 if there is none.
    Info {
        /// The resource.
        name: String,
    },
    /// Delete a resource (calls waiting on it fail); exit code 1 if there
    /// was none.
    Delete {
        /// The resource.
        name: String,
    },
}

/// Hold something (a lock, leadership, permits) after taking it.
#[derive(Args, Debug)]
pub struct Hold {
    /// Hold it this many seconds, then release it and exit [default: until
    /// Ctrl-C or SIGTERM, or 0 with --release].
    #[arg(long)]
    hold_secs: Option<u64>,
    /// Wait at most this many seconds to get it (exit code 1 if not).
    #[arg(long)]
    timeout_secs: Option<u64>,
}

/// `copycat value NAME ...`
#[derive(Subcommand, Debug)]
pub enum ValueOp {
    /// Print the value; exit code 1 if unset.
    Get,
    /// Set the value.
    Set {
        /// The value.
        value: String,
        /// Unset it after this many seconds.
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
    /// Set the value and print the previous one.
    GetAndSet {
        /// The value.
        value: String,
    },
    /// Set NEW if the value is EXPECTED (or, with --absent, unset); exit
    /// code 1 if not.
    Cas {
        /// EXPECTED NEW, or NEW alone with --absent.
        #[arg(num_args = 1..=2, required = true)]
        values: Vec<String>,
        /// Set only if it is unset.
        #[arg(long)]
        absent: bool,
    },
    /// Unset the value.
    Clear,
    /// Print every change as it happens.
    Watch {
        /// Exit after this many changes.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// `copycat long NAME ...`
#[derive(Subcommand, Debug)]
pub enum LongOp {
    /// Print the counter.
    Get,
    /// Set the counter.
    Set {
        /// The value.
        #[arg(allow_hyphen_values = true)]
        value: i64,
    },
    /// Add N and print the new value.
    AddAndGet {
        /// The amount (may be negative).
        #[arg(allow_hyphen_values = true)]
        n: i64,
    },
    /// Add N and print the old value.
    GetAndAdd {
        /// The amount (may be negative).
        #[arg(allow_hyphen_values = true)]
        n: i64,
    },
    /// Add 1 and print the new value.
    Increment,
    /// Subtract 1 and print the new value.
    Decrement,
    /// Set NEW if the counter is EXPECTED; exit code 1 if not.
    Cas {
        /// The value it must have.
        #[arg(allow_hyphen_values = true)]
        expected: i64,
        /// The value to set.
        #[arg(allow_hyphen_values = true)]
        new: i64,
    },
    /// Print every change as it happens.
    Watch {
        /// Exit after this many changes.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// `copycat map NAME ...`
#[derive(Subcommand, Debug)]
pub enum MapOp {
    /// Set KEY to VALUE.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Remove the key after this many seconds.
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
    /// Set KEY to VALUE only if KEY is unset; exit code 1 if it is set.
    PutIfAbsent {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Print KEY's value; exit code 1 if unset.
    Get {
        /// The key.
        key: String,
    },
    /// Remove KEY and print its value; exit code 1 if it was unset.
    Remove {
        /// The key.
        key: String,
    },
    /// Whether KEY is set (prints true or false).
    Contains {
        /// The key.
        key: String,
    },
    /// Print the number of keys.
    Size,
    /// Print the keys, one a line.
    Keys,
    /// Print every KEY VALUE, one a line.
    Entries,
    /// Remove every key.
    Clear,
    /// Print every change (of KEY, or of every key) as it happens.
    Watch {
        /// Only this key.
        #[arg(long)]
        key: Option<String>,
        /// Exit after this many changes.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// `copycat multimap NAME ...`
#[derive(Subcommand, Debug)]
pub enum MultiMapOp {
    /// Add VALUE to KEY's values (prints whether it was new).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Keep each key's values in the order they were put, not sorted
        /// (if this creates the multimap).
        #[arg(long)]
        insertion_order: bool,
    },
    /// Print KEY's values, one a line.
    Get {
        /// The key.
        key: String,
    },
    /// Remove KEY and print its values; exit code 1 if it had none.
    Remove {
        /// The key.
        key: String,
    },
    /// Remove VALUE from KEY's values; exit code 1 if it was not there.
    RemoveEntry {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Print the number of key-value entries.
    Size,
    /// Whether KEY has values (prints true or false).
    ContainsKey {
        /// The key.
        key: String,
    },
    /// Remove everything.
    Clear,
}

/// `copycat set NAME ...`
#[derive(Subcommand, Debug)]
pub enum SetOp {
    /// Add VALUE (prints whether it was new).
    Add {
        /// The value.
        value: String,
    },
    /// Remove VALUE; exit code 1 if it was not there.
    Remove {
        /// The value.
        value: String,
    },
    /// Whether VALUE is there (prints true or false).
    Contains {
        /// The value.
        value: String,
    },
    /// Print the number of values.
    Size,
    /// Print the values, one a line.
    Members,
    /// Remove every value.
    Clear,
    /// Print every change as it happens.
    Watch {
        /// Exit after this many changes.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// `copycat queue NAME ...`
#[derive(Subcommand, Debug)]
pub enum QueueOp {
    /// Append VALUE.
    Offer {
        /// The value.
        value: String,
    },
    /// Remove and print the head, waiting for one if the queue is empty.
    Take {
        /// Wait at most this many seconds (exit code 1 if none came).
        #[arg(long)]
        timeout_secs: Option<u64>,
    },
    /// Remove and print the head; exit code 1 if the queue is empty.
    Poll,
    /// Print the head without removing it; exit code 1 if empty.
    Peek,
    /// Print the number of values.
    Size,
    /// Remove every value.
    Clear,
    /// Print every change as it happens.
    Watch {
        /// Exit after this many changes.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// `copycat lock NAME ...`
#[derive(Subcommand, Debug)]
pub enum LockOp {
    /// Wait for the lock, print its fencing token, hold it, release it.
    Acquire {
        #[command(flatten)]
        hold: Hold,
    },
    /// Take the lock only if it is free (exit code 1 if not), as acquire.
    TryAcquire {
        /// Hold it this many seconds [default: until Ctrl-C or SIGTERM].
        #[arg(long)]
        hold_secs: Option<u64>,
    },
    /// Print the holder's session and token; exit code 1 if free.
    Holder,
    /// Print how many sessions wait for the lock.
    Waiters,
}

/// `copycat election NAME ...`
#[derive(Subcommand, Debug)]
pub enum ElectionOp {
    /// Wait to be elected, print the term, lead, resign.
    Campaign {
        #[command(flatten)]
        hold: Hold,
    },
    /// Print the leader's session and term; exit code 1 if none.
    Leader,
    /// Print every change of leader as it happens.
    Watch {
        /// Exit after this many changes.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// `copycat group NAME ...`
#[derive(Subcommand, Debug)]
pub enum GroupOp {
    /// Join (as ID, or a fresh id), print the id, stay a member, leave.
    /// While a member, print every message sent to it (`message ID from
    /// SESSION: TEXT`) and acknowledge it.
    Join {
        /// The member id [default: a fresh one].
        id: Option<String>,
        /// The member's metadata (text).
        #[arg(long, default_value = "")]
        metadata: String,
        /// Stay in the group (dead) if this process dies without leaving.
        #[arg(long)]
        persistent: bool,
        /// Stay this many seconds [default: until Ctrl-C or SIGTERM].
        #[arg(long)]
        hold_secs: Option<u64>,
        /// Answer messages that ask for a reply with this text.
        #[arg(long, default_value = "")]
        reply_with: String,
    },
    /// Send TEXT to one alive member picked by the group (default), to
    /// member --to, or to every alive member (--broadcast); wait until
    /// each copy is acknowledged and print its receipt (`MESSAGE delivered
    /// to MEMBER` or `MESSAGE failed`); exit code 1 if any failed.
    Send {
        /// The message.
        text: String,
        /// Send to this member (waiting for a dead persistent member to
        /// rejoin).
        #[arg(long, conflicts_with = "broadcast")]
        to: Option<String>,
        /// Send a copy to every alive member.
        #[arg(long)]
        broadcast: bool,
        /// Ask for a reply (request-reply) and print it.
        #[arg(long)]
        reply: bool,
    },
    /// Print every member: id, alive or dead, metadata.
    Members,
    /// Print the leading member and its term; exit code 1 if none.
    Leader,
    /// Remove member ID (of any session).
    Remove {
        /// The member.
        id: String,
    },
    /// Print every membership and leadership change as it happens.
    Watch {
        /// Exit after this many changes.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// `copycat semaphore NAME ...`
#[derive(Subcommand, Debug)]
pub enum SemaphoreOp {
    /// Wait for N permits, hold them, release them. (Permits belong to
    /// the session that took them, so there is no separate `release`: a
    /// process that dies gives its permits back when its session expires.)
    Acquire {
        /// How many permits.
        #[arg(default_value_t = 1)]
        n: u64,
        /// The permits of the semaphore if this creates it.
        #[arg(long, default_value_t = 1)]
        permits: u64,
        #[command(flatten)]
        hold: Hold,
    },
    /// Print the permits available.
    Available,
}

/// `copycat latch NAME ...`
#[derive(Subcommand, Debug)]
pub enum LatchOp {
    /// Count down by one and print the count left.
    CountDown {
        /// The count of the latch if this creates it.
        #[arg(long, default_value_t = 1)]
        count: u64,
    },
    /// Print the count.
    Count,
    /// Set the count (only when it is 0; exit code 1 if not).
    SetCount {
        /// The count.
        count: u64,
    },
    /// Wait until the count is 0.
    Wait {
        /// Wait at most this many seconds (exit code 1 if it is not 0 by
        /// then).
        #[arg(long)]
        timeout_secs: Option<u64>,
    },
}

/// `copycat topic NAME ...`
#[derive(Subcommand, Debug)]
pub enum TopicOp {
    /// Publish MESSAGE and print how many subscribed sessions it was sent
    /// to.
    Publish {
        /// The message.
        message: String,
    },
    /// Print every message published from now on.
    Subscribe {
        /// Exit after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Print the number of subscribed sessions.
    Subscribers,
}

/// Run a primitive's subcommand.
pub async fn run(cmd: PrimitiveCmd) -> Result<ExitCode> {
    let conn = match &cmd {
        PrimitiveCmd::Value(a) => &a.conn,
        PrimitiveCmd::Long(a) => &a.conn,
        PrimitiveCmd::Map(a) => &a.conn,
        PrimitiveCmd::Multimap(a) => &a.conn,
        PrimitiveCmd::Set(a) => &a.conn,
        PrimitiveCmd::Queue(a) => &a.conn,
        PrimitiveCmd::Lock(a) => &a.conn,
        PrimitiveCmd::Election(a) => &a.conn,
        PrimitiveCmd::Group(a) => &a.conn,
        PrimitiveCmd::Semaphore(a) => &a.conn,
        PrimitiveCmd::Latch(a) => &a.conn,
        PrimitiveCmd::Topic(a) => &a.conn,
        PrimitiveCmd::Resources(a) => &a.conn,
    };
    let mut builder = Client::builder()
        .servers(conn.servers.clone())
        .request_timeout(Duration::from_secs(conn.request_timeout_secs.max(1)));
    if let Some(tls) = conn.tls.load()? {
        builder = builder.tls(tls);
    }
    let client = builder
        .connect()
        .await
        .map_err(|e| anyhow!("cannot open a session: {e}"))?;
    let p = Primitives::new(client.clone());
    let out = Out { json: conn.json };
    let result = match cmd {
        PrimitiveCmd::Value(a) => value(&p, out, &a.name, a.op).await,
        PrimitiveCmd::Long(a) => long(&p, out, &a.name, a.op).await,
        PrimitiveCmd::Map(a) => map(&p, out, &a.name, a.op).await,
        PrimitiveCmd::Multimap(a) => multimap(&p, out, &a.name, a.op).await,
        PrimitiveCmd::Set(a) => set(&p, out, &a.name, a.op).await,
        PrimitiveCmd::Queue(a) => queue(&p, out, &a.name, a.op).await,
        PrimitiveCmd::Lock(a) => lock(&p, out, &a.name, a.op).await,
        PrimitiveCmd::Election(a) => election(&p, out, &a.name, a.op).await,
        PrimitiveCmd::Group(a) => group(&p, out, &a.name, a.op).await,
        PrimitiveCmd::Semaphore(a) => semaphore(&p, out, &a.name, a.op).await,
        PrimitiveCmd::Latch(a) => latch(&p, out, &a.name, a.op).await,
        PrimitiveCmd::Topic(a) => topic(&p, out, &a.name, a.op).await,
        PrimitiveCmd::Resources(a) => resources(&p, out, a.op).await,
    };
    drop(p);
    client.close().await;
    match result {
        Ok(code) => Ok(code),
        Err(Failure::Primitive(error)) => {
            eprintln!("error: {error}");
            Ok(ExitCode::FAILURE)
        }
        Err(Failure::Other(error)) => Err(error),
    }
}

async fn resources(p: &Primitives, out: Out, op: ResourcesOp) -> Res {
    match op {
        ResourcesOp::List { resource_type } => {
            // One listing per type (not a lookup per resource), merged into
            // name order.
            let mut all = Vec::new();
            for kind in resource_type.map_or(ResourceType::ALL.to_vec(), |t| vec![t]) {
                all.extend(
                    p.list(Some(kind))
                        .await?
                        .into_iter()
                        .map(|name| (name, kind)),
                );
            }
            all.sort();
            for (name, kind) in all {
                out.print(
                    format!("{name} {kind}"),
                    json!({"name": name, "type": kind.to_string()}),
                );
            }
        }
        ResourcesOp::Info { name } => match p.info(&name).await? {
            Some(info) => out.print(
                format!(
                    "{} {} {:?} created at index {}",
                    info.name,
                    info.spec.resource_type(),
                    info.spec,
                    info.created_index
                ),
                json!({
                    "name": info.name,
                    "type": info.spec.resource_type().to_string(),
                    "spec": format!("{:?}", info.spec),
                    "created_index": info.created_index,
                }),
            ),
            None => {
                return fail(
                    out,
                    format!("no resource {name:?}"),
                    json!({"name": name, "exists": false}),
                )
            }
        },
        ResourcesOp::Delete { name } => {
            if !p.delete(&name).await? {
                return fail(
                    out,
                    format!("no resource {name:?}"),
                    json!({"name": name, "deleted": false}),
                );
            }
            out.print("OK", json!({"name": name, "deleted": true}));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Why an operation failed.
enum Failure {
    /// The cluster refused it or could not do it: `error: ...`, code 1.
    Primitive(Error),
    /// Anything else.
    Other(anyhow::Error),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Primitive(error)
    }
}

type Res = std::result::Result<ExitCode, Failure>;

/// How results are printed.
#[derive(Clone, Copy)]
struct Out {
    json: bool,
}

impl Out {
    /// Print `text`, or `value` with --json.
    fn print(self, text: impl std::fmt::Display, value: serde_json::Value) {
        if self.json {
            println!("{value}");
        } else {
            println!("{text}");
        }
    }

    /// Print `value` with --json only.
    fn json_only(self, value: serde_json::Value) {
        if self.json {
            println!("{value}");
        }
    }
}

fn ok() -> Res {
    Ok(ExitCode::SUCCESS)
}

/// `error: MESSAGE` and exit code 1 (with `value` on stdout with --json).
fn fail(out: Out, message: String, value: serde_json::Value) -> Res {
    out.json_only(value);
    eprintln!("error: {message}");
    Ok(ExitCode::FAILURE)
}

/// Fail unless `name` exists and is a `expected` (for reads, which must
/// not create it).
async fn existing(p: &Primitives, name: &str, expected: ResourceType) -> Result<(), Error> {
    match p.info(name).await? {
        None => Err(ResourceError::NotFound { name: name.into() }.into()),
        Some(info) if info.spec.resource_type() != expected => Err(ResourceError::WrongType {
            name: name.into(),
            expected,
            found: info.spec.resource_type(),
        }
        .into()),
        Some(_) => Ok(()),
    }
}

/// Wait for Ctrl-C or SIGTERM.
async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Hold for `secs` seconds, or until a signal.
async fn hold(secs: Option<u64>) {
    match secs {
        Some(secs) => {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
                _ = signal() => {}
            }
        }
        None => signal().await,
    }
}

/// Print the items of a subscription as they come (`count` of them, or
/// until a signal).
async fn watch<T>(
    subscription: &mut Subscription<T>,
    count: Option<u64>,
    mut print: impl FnMut(T),
) -> Res {
    let mut seen = 0;
    while count.is_none_or(|count| seen < count) {
        let item = tokio::select! {
            item = subscription.next() => item,
            _ = signal() => break,
        };
        match item {
            Some(item) => print(item?),
            None => {
                return Err(Failure::Other(anyhow!(
                    "the session ended (or the resource was deleted)"
                )))
            }
        }
        seen += 1;
    }
    ok()
}

fn ttl(secs: Option<u64>) -> Option<Duration> {
    secs.map(Duration::from_secs)
}

async fn value(p: &Primitives, out: Out, name: &str, op: ValueOp) -> Res {
    if matches!(op, ValueOp::Get) {
        existing(p, name, ResourceType::Value).await?;
    }
    let v = Value::<String>::open(p, name).await?;
    match op {
        ValueOp::Get => match v.get().await? {
            Some(value) => out.print(&value, json!({"name": name, "value": value})),
            None => {
                return fail(
                    out,
                    format!("value {name:?} is unset"),
                    json!({"name": name, "value": null}),
                )
            }
        },
        ValueOp::Set { value, ttl_secs } => {
            match ttl(ttl_secs) {
                Some(ttl) => v.set_with_ttl(&value, ttl).await?,
                None => v.set(&value).await?,
            }
            out.print("OK", json!({"name": name, "ok": true}));
        }
        ValueOp::GetAndSet { value } => {
            let previous = v.get_and_set(&value).await?;
            out.print(
                previous.as_deref().unwrap_or("(unset)"),
                json!({"name": name, "previous": previous}),
            );
        }
        ValueOp::Cas { mut values, absent } => {
            let (expected, new) = match (absent, values.len()) {
                (true, 1) => (None, values.remove(0)),
                (false, 2) => {
                    let new = values.remove(1);
                    (Some(values.remove(0)), new)
                }
                _ => {
                    return Err(Failure::Other(anyhow!(
                        "cas takes EXPECTED NEW (or --absent NEW)"
                    )))
                }
            };
            if v.compare_and_set(expected.as_ref(), Some(&new)).await? {
                out.print("OK", json!({"name": name, "swapped": true}));
            } else {
                return fail(
                    out,
                    format!("compare-and-set failed: value {name:?} is not {expected:?}"),
                    json!({"name": name, "swapped": false}),
                );
            }
        }
        ValueOp::Clear => {
            v.clear().await?;
            out.print("OK", json!({"name": name, "ok": true}));
        }
        ValueOp::Watch { count } => {
            let mut changes = v.listen().await?;
            eprintln!("watching value {name:?}");
            return watch(&mut changes, count, |c| {
                let event = if c.expired {
                    "expired"
                } else if c.new.is_some() {
                    "set"
                } else {
                    "clear"
                };
                let text = match &c.new {
                    Some(new) => format!("{event} {new:?}"),
                    None => event.to_string(),
                };
                out.print(text, json!({"event": event, "old": c.old, "new": c.new}));
            })
            .await;
        }
    }
    ok()
}

async fn long(p: &Primitives, out: Out, name: &str, op: LongOp) -> Res {
    if matches!(op, LongOp::Get) {
        existing(p, name, ResourceType::Long).await?;
    }
    let l = Long::open(p, name).await?;
    let print = |value: i64| out.print(value, json!({"name": name, "value": value}));
    match op {
        LongOp::Get => print(l.get().await?),
        LongOp::Set { value } => {
            l.set(value).await?;
            print(value);
        }
        LongOp::AddAndGet { n } => print(l.add_and_get(n).await?),
        LongOp::GetAndAdd { n } => print(l.get_and_add(n).await?),
        LongOp::Increment => print(l.increment_and_get().await?),
        LongOp::Decrement => print(l.decrement_and_get().await?),
        LongOp::Cas { expected, new } => {
            if l.compare_and_set(expected, new).await? {
                out.print("OK", json!({"name": name, "swapped": true}));
            } else {
                return fail(
                    out,
                    format!("compare-and-set failed: long {name:?} is not {expected}"),
                    json!({"name": name, "swapped": false}),
                );
            }
        }
        LongOp::Watch { count } => {
            let mut changes = l.listen().await?;
            eprintln!("watching long {name:?}");
            return watch(&mut changes, count, |(old, new)| {
                out.print(new, json!({"old": old, "new": new}))
            })
            .await;
        }
    }
    ok()
}

async fn map(p: &Primitives, out: Out, name: &str, op: MapOp) -> Res {
    if matches!(
        op,
        MapOp::Get { .. } | MapOp::Contains { .. } | MapOp::Size | MapOp::Keys | MapOp::Entries
    ) {
        existing(p, name, ResourceType::Map).await?;
    }
    let m = Map::<String, String>::open(p, name).await?;
    match op {
        MapOp::Put {
            key,
            value,
            ttl_secs,
        } => {
            let previous = match ttl(ttl_secs) {
                Some(ttl) => m.put_with_ttl(&key, &value, ttl).await?,
                None => m.put(&key, &value).await?,
            };
            out.print("OK", json!({"key": key, "previous": previous}));
        }
        MapOp::PutIfAbsent { key, value } => match m.put_if_absent(&key, &value).await? {
            None => out.print("OK", json!({"key": key, "put": true})),
            Some(found) => {
                return fail(
                    out,
                    format!("key {key:?} is already set (to {found:?})"),
                    json!({"key": key, "put": false, "value": found}),
                )
            }
        },
        MapOp::Get { key } => match m.get(&key).await? {
            Some(value) => out.print(&value, json!({"key": key, "value": value})),
            None => {
                return fail(
                    out,
                    format!("key {key:?} not found"),
                    json!({"key": key, "value": null}),
                )
            }
        },
        MapOp::Remove { key } => match m.remove(&key).await? {
            Some(value) => out.print(&value, json!({"key": key, "removed": true, "value": value})),
            None => {
                return fail(
                    out,
                    format!("key {key:?} not found"),
                    json!({"key": key, "removed": false}),
                )
            }
        },
        MapOp::Contains { key } => {
            let found = m.contains_key(&key).await?;
            out.print(found, json!({"key": key, "contains": found}));
        }
        MapOp::Size => {
            let size = m.size().await?;
            out.print(size, json!({"name": name, "size": size}));
        }
        MapOp::Keys => {
            let keys = m.keys().await?;
            if out.json {
                println!("{}", json!({"name": name, "keys": keys}));
            } else {
                for key in keys {
                    println!("{key}");
                }
            }
        }
        MapOp::Entries => {
            let entries = m.entries().await?;
            if out.json {
                let object: serde_json::Map<String, serde_json::Value> =
                    entries.into_iter().map(|(k, v)| (k, v.into())).collect();
                println!("{}", json!({"name": name, "entries": object}));
            } else {
                for (key, value) in entries {
                    println!("{key:?} {value:?}");
                }
            }
        }
        MapOp::Clear => {
            m.clear().await?;
            out.print("OK", json!({"name": name, "ok": true}));
        }
        MapOp::Watch { key, count } => {
            let mut changes = match &key {
                Some(key) => m.listen_key(key).await?,
                None => m.listen().await?,
            };
            eprintln!("watching map {name:?}");
            return watch(&mut changes, count, |c| {
                let kind = format!("{:?}", c.kind).to_lowercase();
                let text = match &c.new {
                    Some(new) => format!("{kind} {:?} {new:?}", c.key),
                    None => format!("{kind} {:?}", c.key),
                };
                out.print(
                    text,
                    json!({"event": kind, "key": c.key, "old": c.old, "new": c.new}),
                );
            })
            .await;
        }
    }
    ok()
}

async fn multimap(p: &Primitives, out: Out, name: &str, op: MultiMapOp) -> Res {
    if matches!(
        op,
        MultiMapOp::Get { .. } | MultiMapOp::Size | MultiMapOp::ContainsKey { .. }
    ) {
        existing(p, name, ResourceType::MultiMap).await?;
    }
    let order = match op {
        MultiMapOp::Put {
            insertion_order: true,
            ..
        } => ValueOrder::Insertion,
        _ => ValueOrder::Natural,
    };
    let m = MultiMap::<String, String>::open(p, name, order).await?;
    let print_values = |key: &str, values: Vec<String>| {
        if out.json {
            println!("{}", json!({"key": key, "values": values}));
        } else {
            for value in values {
                println!("{value}");
            }
        }
    };
    match op {
        MultiMapOp::Put { key, value, .. } => {
            let added = m.put(&key, &value).await?;
            out.print(added, json!({"key": key, "value": value, "added": added}));
        }
        MultiMapOp::Get { key } => print_values(&key, m.get(&key).await?),
        MultiMapOp::Remove { key } => {
            let values = m.remove(&key).await?;
            if values.is_empty() {
                return fail(
                    out,
                    format!("key {key:?} not found"),
                    json!({"key": key, "values": []}),
                );
            }
            print_values(&key, values);
        }
        MultiMapOp::RemoveEntry { key, value } => {
            if m.remove_entry(&key, &value).await? {
                out.print(
                    "removed",
                    json!({"key": key, "value": value, "removed": true}),
                );
            } else {
                return fail(
                    out,
                    format!("{value:?} is not a value of key {key:?}"),
                    json!({"key": key, "value": value, "removed": false}),
                );
            }
        }
        MultiMapOp::Size => {
            let size = m.size().await?;
            out.print(size, json!({"name": name, "size": size}));
        }
        MultiMapOp::ContainsKey { key } => {
            let found = m.contains_key(&key).await?;
            out.print(found, json!({"key": key, "contains": found}));
        }
        MultiMapOp::Clear => {
            m.clear().await?;
            out.print("OK", json!({"name": name, "ok": true}));
        }
    }
    ok()
}

async fn set(p: &Primitives, out: Out, name: &str, op: SetOp) -> Res {
    if matches!(op, SetOp::Contains { .. } | SetOp::Size | SetOp::Members) {
        existing(p, name, ResourceType::Set).await?;
    }
    let s = Set::<String>::open(p, name).await?;
    match op {
        SetOp::Add { value } => {
            let added = s.add(&value).await?;
            out.print(added, json!({"value": value, "added": added}));
        }
        SetOp::Remove { value } => {
            if s.remove(&value).await? {
                out.print("removed", json!({"value": value, "removed": true}));
            } else {
                return fail(
                    out,
                    format!("{value:?} is not in set {name:?}"),
                    json!({"value": value, "removed": false}),
                );
            }
        }
        SetOp::Contains { value } => {
            let found = s.contains(&value).await?;
            out.print(found, json!({"value": value, "contains": found}));
        }
        SetOp::Size => {
            let size = s.size().await?;
            out.print(size, json!({"name": name, "size": size}));
        }
        SetOp::Members => {
            let members = s.members().await?;
            if out.json {
                println!("{}", json!({"name": name, "members": members}));
            } else {
                for member in members {
                    println!("{member}");
                }
            }
        }
        SetOp::Clear => {
            s.clear().await?;
            out.print("OK", json!({"name": name, "ok": true}));
        }
        SetOp::Watch { count } => {
            let mut changes = s.listen().await?;
            eprintln!("watching set {name:?}");
            return watch(&mut changes, count, |c| {
                let (event, value) = match c {
                    SetChange::Added(v) => ("added", v),
                    SetChange::Removed(v) => ("removed", v),
                    SetChange::Expired(v) => ("expired", v),
                };
                out.print(
                    format!("{event} {value:?}"),
                    json!({"event": event, "value": value}),
                );
            })
            .await;
        }
    }
    ok()
}

async fn queue(p: &Primitives, out: Out, name: &str, op: QueueOp) -> Res {
    if matches!(op, QueueOp::Peek | QueueOp::Size) {
        existing(p, name, ResourceType::Queue).await?;
    }
    let q = Queue::<String>::open(p, name).await?;
    let empty = |out| {
        fail(
            out,
            format!("queue {name:?} is empty"),
            json!({"name": name, "value": null}),
        )
    };
    match op {
        QueueOp::Offer { value } => {
            q.offer(&value).await?;
            out.print("OK", json!({"name": name, "ok": true}));
        }
        QueueOp::Take { timeout_secs } => {
            let value = match timeout_secs {
                Some(secs) => match q.take_timeout(Duration::from_secs(secs)).await? {
                    Some(value) => value,
                    None => {
                        return fail(
                            out,
                            format!("nothing to take from queue {name:?} in {secs} s"),
                            json!({"name": name, "value": null}),
                        )
                    }
                },
                None => q.take().await?,
            };
            out.print(&value, json!({"name": name, "value": value}));
        }
        QueueOp::Poll => match q.poll().await? {
            Some(value) => out.print(&value, json!({"name": name, "value": value})),
            None => return empty(out),
        },
        QueueOp::Peek => match q.peek().await? {
            Some(value) => out.print(&value, json!({"name": name, "value": value})),
            None => return empty(out),
        },
        QueueOp::Size => {
            let size = q.size().await?;
            out.print(size, json!({"name": name, "size": size}));
        }
        QueueOp::Clear => {
            q.clear().await?;
            out.print("OK", json!({"name": name, "ok": true}));
        }
        QueueOp::Watch { count } => {
            let mut changes = q.listen().await?;
            eprintln!("watching queue {name:?}");
            return watch(&mut changes, count, |c| {
                let (event, value) = match c {
                    QueueChange::Added(v) => ("added", v),
                    QueueChange::Removed(v) => ("removed", v),
                };
                out.print(
                    format!("{event} {value:?}"),
                    json!({"event": event, "value": value}),
                );
            })
            .await;
        }
    }
    ok()
}

async fn lock(p: &Primitives, out: Out, name: &str, op: LockOp) -> Res {
    if matches!(op, LockOp::Holder | LockOp::Waiters) {
        existing(p, name, ResourceType::Lock).await?;
    }
    let l = Lock::open(p, name).await?;
    match op {
        LockOp::Acquire { hold: h } => {
            let token = match h.timeout_secs {
                Some(secs) => match l.try_lock_for(Duration::from_secs(secs)).await? {
                    Some(token) => token,
                    None => {
                        return fail(
                            out,
                            format!("lock {name:?} not acquired in {secs} s"),
                            json!({"name": name, "acquired": false}),
                        )
                    }
                },
                None => l.lock().await?,
            };
            out.print(
                token,
                json!({"name": name, "acquired": true, "token": token}),
            );
            hold(h.hold_secs).await;
            l.unlock().await?;
        }
        LockOp::TryAcquire { hold_secs } => match l.try_lock().await? {
            Some(token) => {
                out.print(
                    token,
                    json!({"name": name, "acquired": true, "token": token}),
                );
                hold(hold_secs).await;
                l.unlock().await?;
            }
            None => {
                return fail(
                    out,
                    format!("lock {name:?} is held"),
                    json!({"name": name, "acquired": false}),
                )
            }
        },
        LockOp::Holder => match l.holder().await? {
            Some((session, token)) => out.print(
                format!("session {} token {token}", session.0),
                json!({"name": name, "session": session.0, "token": token}),
            ),
            None => {
                return fail(
                    out,
                    format!("lock {name:?} is free"),
                    json!({"name": name, "session": null}),
                )
            }
        },
        LockOp::Waiters => {
            let waiters = l.waiters().await?;
            out.print(waiters, json!({"name": name, "waiters": waiters}));
        }
    }
    ok()
}

async fn election(p: &Primitives, out: Out, name: &str, op: ElectionOp) -> Res {
    if matches!(op, ElectionOp::Leader) {
        existing(p, name, ResourceType::Election).await?;
    }
    let e = Election::open(p, name).await?;
    match op {
        ElectionOp::Campaign { hold: h } => {
            let term = match h.timeout_secs {
                Some(secs) => match e.campaign_for(Duration::from_secs(secs)).await? {
                    Some(term) => term,
                    None => {
                        return fail(
                            out,
                            format!("not elected in election {name:?} in {secs} s"),
                            json!({"name": name, "elected": false}),
                        )
                    }
                },
                None => e.campaign().await?,
            };
            out.print(term, json!({"name": name, "elected": true, "term": term}));
            hold(h.hold_secs).await;
            e.resign().await?;
        }
        ElectionOp::Leader => match e.leader().await? {
            Some((session, term)) => out.print(
                format!("session {} term {term}", session.0),
                json!({"name": name, "session": session.0, "term": term}),
            ),
            None => {
                return fail(
                    out,
                    format!("election {name:?} has no leader"),
                    json!({"name": name, "session": null}),
                )
            }
        },
        ElectionOp::Watch { count } => {
            let mut changes = e.listen().await?;
            eprintln!("watching election {name:?}");
            return watch(&mut changes, count, |leader| match leader {
                Some((session, term)) => out.print(
                    format!("leader session {} term {term}", session.0),
                    json!({"session": session.0, "term": term}),
                ),
                None => out.print("no leader", json!({"session": null})),
            })
            .await;
        }
    }
    ok()
}

async fn group(p: &Primitives, out: Out, name: &str, op: GroupOp) -> Res {
    if matches!(op, GroupOp::Members | GroupOp::Leader) {
        existing(p, name, ResourceType::Group).await?;
    }
    let g = Group::open(p, name).await?;
    match op {
        GroupOp::Join {
            id,
            metadata,
            persistent,
            hold_secs,
            reply_with,
        } => {
            let mut messages = g.messages().await?;
            let id = g
                .join(id.as_deref(), persistent, metadata.into_bytes().into())
                .await?;
            out.print(&id, json!({"name": name, "joined": true, "id": id}));
            let receive = async {
                while let Some(message) = messages.next().await {
                    let message = message?;
                    let text = String::from_utf8_lossy(&message.payload).into_owned();
                    out.print(
                        format!(
                            "message {} from session {}: {text}",
                            message.message, message.from.0
                        ),
                        json!({
                            "event": "message",
                            "message": message.message,
                            "member": message.member,
                            "from": message.from.0,
                            "text": text,
                            "reply": message.reply,
                        }),
                    );
                    if message.reply {
                        g.reply(&message, reply_with.clone().into_bytes().into())
                            .await?;
                    } else {
                        g.ack(&message).await?;
                    }
                }
                Ok::<(), copycat_primitives::Error>(())
            };
            tokio::select! {
                _ = hold(hold_secs) => {}
                received = receive => received?,
            }
            g.leave(&id).await?;
        }
        GroupOp::Send {
            text,
            to,
            broadcast,
            reply,
        } => {
            let delivery = match (to, broadcast) {
                (Some(member), _) => Delivery::Direct(member),
                (None, true) => Delivery::Broadcast,
                (None, false) => Delivery::Random,
            };
            let receipts = g.send(delivery, text.into_bytes().into(), reply).await?;
            let mut failed = false;
            for (message, receipt) in receipts {
                match receipt {
                    Receipt::Delivered { member, reply } => {
                        let reply = reply.map(|r| String::from_utf8_lossy(&r).into_owned());
                        let line = match &reply {
                            Some(reply) => format!("{message} delivered to {member}: {reply}"),
                            None => format!("{message} delivered to {member}"),
                        };
                        out.print(
                            line,
                            json!({"message": message, "delivered": true, "member": member, "reply": reply}),
                        );
                    }
                    Receipt::Failed => {
                        failed = true;
                        out.print(
                            format!("{message} failed"),
                            json!({"message": message, "delivered": false}),
                        );
                    }
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        GroupOp::Members => {
            let members = g.members().await?;
            for m in members {
                let metadata = String::from_utf8_lossy(&m.metadata).into_owned();
                let alive = m.session.is_some();
                out.print(
                    format!(
                        "{} {} {:?}",
                        m.id,
                        if alive { "alive" } else { "dead" },
                        metadata
                    ),
                    json!({
                        "id": m.id,
                        "alive": alive,
                        "session": m.session.map(|s| s.0),
                        "persistent": m.persistent,
                        "metadata": metadata,
                    }),
                );
            }
        }
        GroupOp::Leader => match g.leader().await? {
            Some((id, term)) => out.print(
                format!("{id} term {term}"),
                json!({"name": name, "leader": id, "term": term}),
            ),
            None => {
                return fail(
                    out,
                    format!("group {name:?} has no leader"),
                    json!({"name": name, "leader": null}),
                )
            }
        },
        GroupOp::Remove { id } => {
            g.remove(&id).await?;
            out.print("OK", json!({"name": name, "removed": id}));
        }
        GroupOp::Watch { count } => {
            let mut changes = g.listen().await?;
            eprintln!("watching group {name:?}");
            return watch(&mut changes, count, |c| match c {
                GroupChange::Joined(id) => {
                    out.print(format!("joined {id}"), json!({"event": "joined", "id": id}))
                }
                GroupChange::Left(id) => {
                    out.print(format!("left {id}"), json!({"event": "left", "id": id}))
                }
                GroupChange::Status { id, alive } => out.print(
                    format!("{} {id}", if alive { "alive" } else { "dead" }),
                    json!({"event": "status", "id": id, "alive": alive}),
                ),
                GroupChange::Leader(Some((id, term))) => out.print(
                    format!("leader {id} term {term}"),
                    json!({"event": "leader", "id": id, "term": term}),
                ),
                GroupChange::Leader(None) => {
                    out.print("no leader", json!({"event": "leader", "id": null}))
                }
            })
            .await;
        }
    }
    ok()
}

async fn semaphore(p: &Primitives, out: Out, name: &str, op: SemaphoreOp) -> Res {
    let permits = match &op {
        SemaphoreOp::Acquire { permits, .. } => *permits,
        SemaphoreOp::Available => {
            existing(p, name, ResourceType::Semaphore).await?;
            1
        }
    };
    let s = Semaphore::open(p, name, permits).await?;
    match op {
        SemaphoreOp::Acquire { n, hold: h, .. } => {
            match h.timeout_secs {
                Some(secs) => {
                    if !s.try_acquire_for(n, Duration::from_secs(secs)).await? {
                        return fail(
                            out,
                            format!("{n} permits of semaphore {name:?} not acquired in {secs} s"),
                            json!({"name": name, "acquired": false}),
                        );
                    }
                }
                None => s.acquire(n).await?,
            }
            out.print(
                format!("acquired {n}"),
                json!({"name": name, "acquired": true, "permits": n}),
            );
            hold(h.hold_secs).await;
            s.release(n).await?;
        }
        SemaphoreOp::Available => {
            let available = s.available().await?;
            out.print(available, json!({"name": name, "available": available}));
        }
    }
    ok()
}

async fn latch(p: &Primitives, out: Out, name: &str, op: LatchOp) -> Res {
    let count = match &op {
        LatchOp::CountDown { count } => *count,
        LatchOp::SetCount { count } => *count,
        LatchOp::Count | LatchOp::Wait { .. } => {
            existing(p, name, ResourceType::Latch).await?;
            0
        }
    };
    let l = CountDownLatch::open(p, name, count).await?;
    match op {
        LatchOp::CountDown { .. } => {
            let left = l.count_down().await?;
            out.print(left, json!({"name": name, "count": left}));
        }
        LatchOp::Count => {
            let count = l.count().await?;
            out.print(count, json!({"name": name, "count": count}));
        }
        LatchOp::SetCount { count } => {
            if l.set_count(count).await? {
                out.print("OK", json!({"name": name, "set": true}));
            } else {
                return fail(
                    out,
                    format!("latch {name:?} is still counting down"),
                    json!({"name": name, "set": false}),
                );
            }
        }
        LatchOp::Wait { timeout_secs } => {
            match timeout_secs {
                Some(secs) => {
                    if !l.wait_for(Duration::from_secs(secs)).await? {
                        return fail(
                            out,
                            format!("latch {name:?} did not reach 0 in {secs} s"),
                            json!({"name": name, "open": false}),
                        );
                    }
                }
                None => l.wait().await?,
            }
            out.print("open", json!({"name": name, "open": true}));
        }
    }
    ok()
}

async fn topic(p: &Primitives, out: Out, name: &str, op: TopicOp) -> Res {
    if matches!(op, TopicOp::Subscribers) {
        existing(p, name, ResourceType::Topic).await?;
    }
    let t = Topic::<String>::open(p, name).await?;
    match op {
        TopicOp::Publish { message } => {
            let receivers = t.publish(&message).await?;
            out.print(receivers, json!({"name": name, "receivers": receivers}));
        }
        TopicOp::Subscribe { count } => {
            let mut messages = t.subscribe().await?;
            eprintln!("subscribed to topic {name:?}");
            return watch(&mut messages, count, |m| {
                out.print(&m.message, json!({"seq": m.seq, "message": m.message}))
            })
            .await;
        }
        TopicOp::Subscribers => {
            let n = t.subscribers().await?;
            out.print(n, json!({"name": name, "subscribers": n}));
        }
    }
    ok()
}
