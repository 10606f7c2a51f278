//! Data-driven golden tests for the replica's session layer.
//!
//! Each file in `testdata/` is a script of commands, each followed by a line
//! `----` and the expected trace, then a blank line. Lines starting with `#`
//! are comments and are kept. Run with
//! `REWRITE=1 cargo test -p copycat-replica --test golden` to rewrite the
//! expected output; commit a rewrite only when you understand the diff.
//!
//! The replica under test wraps the crate's `TestMachine`, which journals
//! every callback (printed as `sm ...` lines), publishes events on request,
//! publishes `timer:ID` to every open session when a timer fires and
//! `gone:SESSION` to the other sessions when one expires.
//!
//! Commands (every log entry takes an explicit `index=`; entries carrying a
//! `LogCommand` also take the leader's timestamp `time=`):
//!
//! ```text
//! config [max-sessions=N max-results=N max-events=N max-bytes=N max-timers=N
//!         remembered=N default-timeout=MS min-timeout=MS max-timeout=MS]
//!                          start over with a fresh replica (defaults otherwise)
//! register index=I time=T client=C [timeout=MS]
//! keepalive index=I time=T session=S [seq=Q] [event=E]
//! unregister index=I time=T session=S
//! command index=I time=T session=S seq=Q OP
//!     OP: add N | fail | publish SESSION NAME | schedule MS [periodic]
//!         | cancel TIMER | raw TEXT (bytes the machine cannot decode)
//!         | bytes N (N zero bytes)
//! expire index=I time=T session=S
//! tick index=I time=T      a time-only entry
//! noop index=I             a Raft no-op (a new leader's first entry)
//! raft-config index=I      a Raft configuration entry
//! garbage index=I [kind=malformed|empty|version|trailing]
//!                          a command entry that does not decode
//! query session=S seq=Q index=I [get | raw TEXT]
//!                          prints `wait` or the answer, and whether the
//!                          replica digest changed
//! reset-events session=S from=E
//! suspects                 sessions the replica reports as suspect
//! sessions                 the session table
//! timers                   pending timers in firing order
//! status                   applied index, clock, undecodable count, digest
//! snapshot                 keep a snapshot image, print the digest
//! restore                  replace the replica with a fresh one restored
//!                          from the kept image, print the digest
//! restore-bad [kind=version|malformed]
//!                          try to restore a damaged image
//! ```
//!
//! Each applied entry prints one line `iINDEX tTIME <what> -> <outcome>`,
//! then the state machine's journal lines (`sm ...`), the event batches
//! published at that index (`push sS eINDEX<-ePREVIOUS [name:arg ...]`) and
//! the sessions expired and closed by it.

use std::path::Path;

use bytes::Bytes;
use copycat_proto::{
    ClientError, ClientId, CommandFailure, EventBatch, EventIndex, LogBody, LogCommand, Response,
    Sequence, SessionId,
};
use copycat_raft::{Configuration, Entry, EntryPayload, LogIndex, NodeId, Term};
use copycat_replica::testing::{TestCommand, TestMachine, TestQuery};
use copycat_replica::{codec, Applied, Outcome, QueryOutcome, Replica, ReplicaConfig, Typed};

type TestReplica = Replica<Typed<TestMachine>>;

struct Interpreter {
    replica: TestReplica,
    /// How many journal lines have been printed already.
    journal_seen: usize,
    snapshot: Option<Bytes>,
}

fn parse_kv<'a>(args: &[&'a str], key: &str) -> Option<&'a str> {
    args.iter().find_map(|arg| {
        arg.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('='))
    })
}

fn num(args: &[&str], key: &str) -> u64 {
    parse_kv(args, key)
        .unwrap_or_else(|| panic!("missing {key}="))
        .parse()
        .unwrap_or_else(|_| panic!("{key}= is not a number"))
}

fn num_or(args: &[&str], key: &str, default: u64) -> u64 {
    parse_kv(args, key).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{key}= is not a number"))
    })
}

/// The words that are not `key=value` arguments.
fn positional<'a>(args: &[&'a str]) -> Vec<&'a str> {
    args.iter().copied().filter(|a| !a.contains('=')).collect()
}

fn new_replica(config: ReplicaConfig) -> TestReplica {
    Replica::new(config, Typed(TestMachine::default())).expect("valid config")
}

fn entry(index: u64, payload: EntryPayload) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        payload,
    }
}

fn command_payload(op: &[&str]) -> Bytes {
    let arg = |i: usize| -> &str { op.get(i).unwrap_or_else(|| panic!("missing operand {i}")) };
    let number = |i: usize| -> i64 { arg(i).parse().expect("number operand") };
    let command = match *op.first().expect("missing operation") {
        "add" => TestCommand::Add(number(1)),
        "fail" => TestCommand::Fail,
        "publish" => TestCommand::Publish {
            session: number(1) as u64,
            name: arg(2).to_string(),
        },
        "schedule" => TestCommand::Schedule {
            delay_ms: number(1) as u64,
            periodic: op.get(2) == Some(&"periodic"),
        },
        "cancel" => TestCommand::Cancel(number(1) as u64),
        "raw" => return Bytes::from(op[1..].join(" ")),
        "bytes" => return Bytes::from(vec![0u8; number(1) as usize]),
        other => panic!("unknown operation {other}"),
    };
    codec::encode(&command)
}

fn describe_output(output: &Result<Bytes, CommandFailure>) -> String {
    match output {
        Ok(bytes) => match codec::decode::<i64>(bytes) {
            Ok(value) => format!("ok={value}"),
            Err(_) => format!("ok=<{} bytes>", bytes.len()),
        },
        Err(CommandFailure::Application(bytes)) => match codec::decode::<String>(bytes) {
            Ok(message) => format!("app-error={message:?}"),
            Err(_) => format!("app-error=<{} bytes>", bytes.len()),
        },
        Err(CommandFailure::Undecodable(_)) => "undecodable".to_string(),
        Err(CommandFailure::TooLarge { size, max }) => format!("too-large {size}>{max}"),
    }
}

fn describe_result(result: &Result<Response, ClientError>) -> String {
    match result {
        Err(error) => format!("error: {error}"),
        Ok(Response::Registered {
            session,
            timeout_ms,
        }) => format!("{session:?} timeout={timeout_ms}"),
        Ok(Response::KeptAlive { event_index }) => format!("kept-alive last={event_index:?}"),
        Ok(Response::Unregistered) => "unregistered".to_string(),
        Ok(Response::Command {
            sequence,
            index,
            event_index,
            output,
        }) => format!(
            "{sequence:?} {} at=i{index} last={event_index:?}",
            describe_output(output)
        ),
        Ok(Response::Query {
            index,
            event_index,
            output,
        }) => format!(
            "{} at=i{index} last={event_index:?}",
            describe_output(output)
        ),
        Ok(Response::EventsReset { event_index }) => format!("events-reset last={event_index:?}"),
    }
}

fn describe_batch(batch: &EventBatch) -> String {
    let events: Vec<String> = batch
        .events
        .iter()
        .map(|event| match <[u8; 8]>::try_from(event.payload.as_ref()) {
            Ok(bytes) => format!("{}:{}", event.name, u64::from_le_bytes(bytes)),
            Err(_) if event.payload.is_empty() => event.name.clone(),
            Err(_) => format!("{}:<{} bytes>", event.name, event.payload.len()),
        })
        .collect();
    format!(
        "push {:?} {:?}<-{:?} [{}]",
        batch.session,
        batch.event_index,
        batch.previous_event_index,
        events.join(" ")
    )
}

fn ids<T: std::fmt::Debug>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| format!("{i:?}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Interpreter {
    fn new() -> Self {
        Self {
            replica: new_replica(ReplicaConfig::default()),
            journal_seen: 0,
            snapshot: None,
        }
    }

    /// Journal lines not printed yet.
    fn journal(&mut self) -> String {
        let journal = &self.replica.machine().0.journal;
        let out = journal[self.journal_seen..]
            .iter()
            .map(|line| format!("sm {line}\n"))
            .collect();
        self.journal_seen = journal.len();
        out
    }

    fn apply(&mut self, entry: Entry, what: &str) -> String {
        let applied: Applied = self.replica.apply(&entry);
        let mut out = format!(
            "{:?} t{} {what} -> {}\n",
            applied.index,
            applied.time_ms,
            describe_outcome(&applied.outcome)
        );
        out.push_str(&self.journal());
        for batch in &applied.events {
            out.push_str(&describe_batch(batch));
            out.push('\n');
        }
        if !applied.expired.is_empty() {
            out.push_str(&format!("expired {}\n", ids(&applied.expired)));
        }
        if !applied.closed.is_empty() {
            out.push_str(&format!("closed {}\n", ids(&applied.closed)));
        }
        out
    }

    fn log(&mut self, args: &[&str], body: LogBody, what: &str) -> String {
        let index = num(args, "index");
        let timestamp_ms = num(args, "time");
        let data = LogCommand { timestamp_ms, body }.encode();
        self.apply(entry(index, EntryPayload::Command(data)), what)
    }

    fn run(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (command, args) = words.split_first().expect("empty command");
        let args = args.to_vec();
        let session = || SessionId(num(&args, "session"));
        match *command {
            "config" => {
                let d = ReplicaConfig::default();
                let n = |key: &str, default: usize| num_or(&args, key, default as u64) as usize;
                let config = ReplicaConfig {
                    max_sessions: n("max-sessions", d.max_sessions),
                    max_cached_results_per_session: n(
                        "max-results",
                        d.max_cached_results_per_session,
                    ),
                    max_retained_events_per_session: n(
                        "max-events",
                        d.max_retained_events_per_session,
                    ),
                    max_command_bytes: n("max-bytes", d.max_command_bytes),
                    max_timers: n("max-timers", d.max_timers),
                    max_remembered_sessions: n("remembered", d.max_remembered_sessions),
                    default_session_timeout_ms: num_or(
                        &args,
                        "default-timeout",
                        d.default_session_timeout_ms,
                    ),
                    min_session_timeout_ms: num_or(&args, "min-timeout", d.min_session_timeout_ms),
                    max_session_timeout_ms: num_or(&args, "max-timeout", d.max_session_timeout_ms),
                };
                match Replica::new(config, Typed(TestMachine::default())) {
                    Ok(replica) => {
                        self.replica = replica;
                        self.journal_seen = 0;
                        self.snapshot = None;
                        String::new()
                    }
                    Err(error) => format!("error: {error}\n"),
                }
            }
            "register" => {
                let client = ClientId(u128::from(num(&args, "client")));
                let timeout_ms = num_or(&args, "timeout", 0);
                self.log(
                    &args,
                    LogBody::Register { client, timeout_ms },
                    &format!("register {client:?}"),
                )
            }
            "keepalive" => {
                let session = session();
                let command_sequence = Sequence(num_or(&args, "seq", 0));
                let event_index = EventIndex(num_or(&args, "event", 0));
                self.log(
                    &args,
                    LogBody::KeepAlive {
                        session,
                        command_sequence,
                        event_index,
                    },
                    &format!("keepalive {session:?} {command_sequence:?} {event_index:?}"),
                )
            }
            "unregister" => {
                let session = session();
                self.log(
                    &args,
                    LogBody::Unregister { session },
                    &format!("unregister {session:?}"),
                )
            }
            "command" => {
                let session = session();
                let sequence = Sequence(num(&args, "seq"));
                let op = positional(&args);
                let payload = command_payload(&op);
                self.log(
                    &args,
                    LogBody::Command {
                        session,
                        sequence,
                        acked: Sequence::ZERO,
                        payload,
                    },
                    &format!("command {session:?} {sequence:?} {}", op.join(" ")),
                )
            }
            "expire" => {
                let session = session();
                self.log(
                    &args,
                    LogBody::Expire { session },
                    &format!("expire {session:?}"),
                )
            }
            "tick" => self.log(&args, LogBody::Tick, "tick"),
            "noop" => self.apply(entry(num(&args, "index"), EntryPayload::Noop), "noop"),
            "raft-config" => self.apply(
                entry(
                    num(&args, "index"),
                    EntryPayload::Config(Configuration::with_voters([NodeId(1)])),
                ),
                "raft-config",
            ),
            "garbage" => {
                let good = LogCommand {
                    timestamp_ms: 0,
                    body: LogBody::Tick,
                }
                .encode()
                .to_vec();
                let data = match parse_kv(&args, "kind").unwrap_or("malformed") {
                    "malformed" => vec![good[0], 0xff, 0xff, 0xff],
                    "empty" => Vec::new(),
                    "version" => {
                        let mut data = good;
                        data[0] = 99;
                        data
                    }
                    "trailing" => {
                        let mut data = good;
                        data.push(0);
                        data
                    }
                    other => panic!("unknown garbage kind {other}"),
                };
                self.apply(
                    entry(
                        num(&args, "index"),
                        EntryPayload::Command(Bytes::from(data)),
                    ),
                    "garbage",
                )
            }
            "query" => {
                let session = session();
                let sequence = Sequence(num_or(&args, "seq", 0));
                let index = LogIndex(num_or(&args, "index", 0));
                let op = positional(&args);
                let payload = match op.first().copied() {
                    None | Some("get") => codec::encode(&TestQuery::Get),
                    Some("raw") => Bytes::from(op[1..].join(" ")),
                    Some(other) => panic!("unknown query {other}"),
                };
                let before = self.replica.digest();
                let answer = match self.replica.query(session, sequence, index, &payload) {
                    QueryOutcome::Wait => "wait".to_string(),
                    QueryOutcome::Done(result) => describe_result(&result),
                };
                let after = self.replica.digest();
                let mut out = format!("query {session:?} {sequence:?} {index:?} -> {answer}\n");
                if before != after {
                    out.push_str(&format!("digest changed {before:08x} -> {after:08x}\n"));
                }
                // A query must not reach the state machine's journal either.
                out.push_str(&self.journal());
                out
            }
            "reset-events" => {
                let session = session();
                let from = EventIndex(num(&args, "from"));
                match self.replica.reset_events(session, from) {
                    Ok((response, batches)) => {
                        let mut out = format!("{}\n", describe_result(&Ok(response)));
                        for batch in &batches {
                            out.push_str(&describe_batch(batch));
                            out.push('\n');
                        }
                        out
                    }
                    Err(error) => format!("error: {error}\n"),
                }
            }
            "suspects" => {
                let suspects = self.replica.suspect_sessions();
                if suspects.is_empty() {
                    "(none)\n".to_string()
                } else {
                    format!("{}\n", ids(&suspects))
                }
            }
            "sessions" => {
                let sessions = self.replica.sessions();
                if sessions.is_empty() {
                    return "(none)\n".to_string();
                }
                sessions
                    .iter()
                    .map(|info| {
                        let (timeout, last) = self
                            .replica
                            .session_timing(info.id)
                            .expect("open session has timing");
                        let last_event = self
                            .replica
                            .last_event_index(info.id)
                            .expect("open session has an event index");
                        format!(
                            "{:?} {:?} timeout={timeout} kept-alive=t{last} cached=[{}] events=[{}] last={last_event:?}\n",
                            info.id,
                            info.client,
                            ids(&self.replica.cached_sequences(info.id)),
                            ids(&self.replica.retained_event_indexes(info.id)),
                        )
                    })
                    .collect()
            }
            "timers" => {
                let timers = self.replica.pending_timers();
                if timers.is_empty() {
                    "(none)\n".to_string()
                } else {
                    let list: Vec<String> = timers
                        .iter()
                        .map(|(deadline, id)| format!("{id:?}@t{deadline}"))
                        .collect();
                    format!("{}\n", list.join(" "))
                }
            }
            "status" => format!(
                "applied={:?} time={} undecodable={} value={} digest={:08x}\n",
                self.replica.applied_index(),
                self.replica.time_ms(),
                self.replica.undecodable_entries(),
                self.replica.machine().0.value,
                self.replica.digest()
            ),
            "snapshot" => {
                let image = self.replica.snapshot();
                self.snapshot = Some(image);
                format!(
                    "snapshot at {:?} digest={:08x}\n",
                    self.replica.applied_index(),
                    self.replica.digest()
                )
            }
            "restore" => {
                let image = self.snapshot.clone().expect("no snapshot taken");
                let before = self.replica.digest();
                let mut fresh = new_replica(self.replica.config().clone());
                fresh.restore(&image).expect("restore a replica snapshot");
                self.replica = fresh;
                self.journal_seen = self.replica.machine().0.journal.len();
                format!(
                    "restored at {:?} digest {before:08x} -> {:08x}\n",
                    self.replica.applied_index(),
                    self.replica.digest()
                )
            }
            "restore-bad" => {
                let mut image = self.replica.snapshot().to_vec();
                match parse_kv(&args, "kind").unwrap_or("malformed") {
                    "version" => image[0] = 99,
                    "malformed" => image.truncate(3),
                    other => panic!("unknown damage {other}"),
                }
                let before = self.replica.digest();
                let result = self.replica.restore(&image);
                let after = self.replica.digest();
                let mut out = match result {
                    Ok(()) => "restored\n".to_string(),
                    Err(error) => format!("error: {error}\n"),
                };
                if before != after {
                    out.push_str(&format!("digest changed {before:08x} -> {after:08x}\n"));
                }
                out
            }
            other => panic!("unknown command {other}"),
        }
    }
}

fn describe_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Nothing => "nothing".to_string(),
        Outcome::Skipped(error) => format!("skipped: {error}"),
        Outcome::Register { result, .. } => describe_result(result),
        Outcome::Session { result, .. } => describe_result(result),
        Outcome::Command { result, .. } => describe_result(result),
        Outcome::KeepAlives(results) => results
            .iter()
            .map(|(_, result)| describe_result(result))
            .collect::<Vec<_>>()
            .join("; "),
        Outcome::Expire { expired, .. } => {
            if *expired {
                "expired".to_string()
            } else {
                "ignored".to_string()
            }
        }
    }
}

#[test]
fn golden() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    copycat_raft::testing::run_golden_files(&dir, || {
        let mut interpreter = Interpreter::new();
        move |command: &str| {
            let output = interpreter.run(command);
            interpreter.replica.invariants();
            output
        }
    });
}
