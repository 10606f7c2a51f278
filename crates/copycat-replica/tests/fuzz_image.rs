//! Fuzzing replica snapshot images, as they arrive from a leader or are
//! read from disk: random bytes, mutated images of a busy replica, and
//! crafted images that decode but break one invariant each. Restoring
//! never panics; an image that breaks an invariant is refused with
//! `SnapshotError::Inconsistent` and leaves the replica as it was; an
//! image that restores gives a replica that passes its invariants and
//! keeps applying entries.
//!
//! `PROPTEST_CASES=100000 cargo test -p copycat-replica --test
//! fuzz_image` runs longer.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use copycat_proto::{
    ClientId, CommandFailure, EventBatch, EventIndex, LogBody, LogCommand, Sequence, SessionId,
};
use copycat_raft::LogIndex;
use copycat_replica::replica::{Replica, SnapshotError, SNAPSHOT_VERSION};
use copycat_replica::testing::{command_entry, TestCommand, TestMachine};
use copycat_replica::{ReplicaConfig, Typed};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

type TestReplica = Replica<Typed<TestMachine>>;

fn replica() -> TestReplica {
    Replica::new(ReplicaConfig::default(), Typed(TestMachine::default())).unwrap()
}

fn apply(replica: &mut TestReplica, index: u64, time: u64, body: LogBody) {
    let command = LogCommand {
        timestamp_ms: time,
        body,
    };
    replica.apply(&command_entry(index, command.encode()));
}

fn op(command: TestCommand) -> Bytes {
    copycat_replica::codec::encode(&command)
}

/// A replica with sessions, cached results, retained events, a gone
/// session and pending timers; returns it and the next free index.
fn busy() -> (TestReplica, u64) {
    let mut r = replica();
    let mut index = 0;
    let mut next = || {
        index += 1;
        index
    };
    for client in 1..=3u128 {
        apply(
            &mut r,
            next(),
            10,
            LogBody::Register {
                client: ClientId(client),
                timeout_ms: 0,
            },
        );
    }
    for (session, sequence, command) in [
        (1, 1, TestCommand::Add(5)),
        (
            1,
            2,
            TestCommand::Publish {
                session: 2,
                name: "hi".into(),
            },
        ),
        (
            2,
            1,
            TestCommand::Schedule {
                delay_ms: 50,
                periodic: true,
            },
        ),
        (
            2,
            2,
            TestCommand::Schedule {
                delay_ms: 5_000,
                periodic: false,
            },
        ),
        (
            3,
            1,
            TestCommand::Publish {
                session: 1,
                name: "x".into(),
            },
        ),
        (3, 2, TestCommand::Fail),
    ] {
        apply(
            &mut r,
            next(),
            20,
            LogBody::Command {
                session: SessionId(session),
                sequence: Sequence(sequence),
                acked: Sequence(0),
                payload: op(command),
            },
        );
    }
    apply(&mut r, next(), 100, LogBody::Tick);
    let registered = next();
    apply(
        &mut r,
        registered,
        110,
        LogBody::Register {
            client: ClientId(9),
            timeout_ms: 0,
        },
    );
    apply(
        &mut r,
        next(),
        120,
        LogBody::Unregister {
            session: SessionId(registered),
        },
    );
    r.invariants();
    (r, index + 1)
}

/// After a restore, the replica must keep working: invariants hold and
/// entries apply (with time passing, so timers fire and sessions expire).
fn keeps_working(r: &mut TestReplica) {
    r.invariants();
    let mut index = r.applied_index().0;
    if index > u64::MAX / 2 {
        // No log gets there; the entries below would overflow the index.
        return;
    }
    let sessions: Vec<SessionId> = r.sessions().iter().map(|s| s.id).collect();
    for (n, session) in sessions.into_iter().enumerate() {
        index += 1;
        apply(
            r,
            index,
            r.time_ms().saturating_add(1),
            LogBody::KeepAlive {
                session,
                command_sequence: Sequence(u64::MAX),
                event_index: EventIndex(index / 2),
            },
        );
        index += 1;
        apply(
            r,
            index,
            r.time_ms().saturating_add(1),
            LogBody::Command {
                session,
                sequence: Sequence(n as u64 + 1),
                acked: Sequence(0),
                payload: op(TestCommand::Add(1)),
            },
        );
    }
    index += 1;
    apply(
        r,
        index,
        r.time_ms().saturating_add(1_000_000),
        LogBody::Tick,
    );
    for session in r.suspect_sessions() {
        index += 1;
        apply(r, index, r.time_ms(), LogBody::Expire { session });
    }
    r.invariants();
}

// ---- mutations ---------------------------------------------------------

#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    Varint(usize, u64),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), 1..=u8::MAX).prop_map(|(at, bits)| Edit::Flip(at, bits)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Insert(at, byte)),
        2 => any::<usize>().prop_map(Edit::Delete),
        1 => any::<usize>().prop_map(Edit::Truncate),
        2 => (any::<usize>(), prop_oneof![Just(u64::MAX), 0u64..300, any::<u64>()])
            .prop_map(|(at, value)| Edit::Varint(at, value)),
    ]
}

fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn mutate(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len();
        match *edit {
            Edit::Flip(at, bits) if len > 0 => bytes[at % len] ^= bits,
            Edit::Insert(at, byte) => bytes.insert(at % (len + 1), byte),
            Edit::Delete(at) if len > 0 => {
                bytes.remove(at % len);
            }
            Edit::Truncate(at) => bytes.truncate(at % (len + 1)),
            Edit::Varint(at, value) => {
                let at = at % (len + 1);
                let encoded = varint(value);
                let end = (at + encoded.len()).min(len);
                bytes.splice(at..end, encoded);
            }
            _ => {}
        }
    }
    bytes
}

/// Restore `image` into a fresh replica; an image that breaks an
/// invariant must be refused without touching it.
fn restore_fresh(image: &[u8]) -> Result<TestReplica, SnapshotError> {
    let mut r = replica();
    let before = r.digest();
    match r.restore(image) {
        Ok(()) => Ok(r),
        Err(error) => {
            if let SnapshotError::Inconsistent(_) | SnapshotError::Decode(_) = error {
                assert_eq!(r.digest(), before, "a refused image changed the replica");
            }
            Err(error)
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn random_images_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut image = bytes;
        image.insert(0, SNAPSHOT_VERSION);
        if let Ok(mut r) = restore_fresh(&image) {
            keeps_working(&mut r);
        }
    }

    #[test]
    fn mutated_images_are_refused_or_work(edits in proptest::collection::vec(edit(), 1..4)) {
        let (r, _) = busy();
        let image = mutate(r.snapshot().to_vec(), &edits);
        if let Ok(mut restored) = restore_fresh(&image) {
            keeps_working(&mut restored);
        }
    }
}

// ---- crafted images ------------------------------------------------------
//
// The replica state as the image encodes it (the order of fields is the
// snapshot format, pinned by the golden files): crafting an image means
// decoding a real one into these, breaking one thing, encoding it again.

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Image {
    state: State,
    machine: Bytes,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct State {
    applied_index: u64,
    clock_ms: u64,
    sessions: Table,
    timers: Timers,
    undecodable_entries: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Table {
    reset_keep_alives: bool,
    open: BTreeMap<u64, Session>,
    clients: BTreeMap<u128, u64>,
    gone: BTreeMap<u64, Gone>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
enum Gone {
    Expired,
    Closed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Session {
    client: u128,
    timeout_ms: u64,
    last_keep_alive_ms: u64,
    command_sequence: u64,
    acked_sequence: u64,
    results: BTreeMap<u64, Cached>,
    last_event_index: u64,
    acked_event_index: u64,
    events: BTreeMap<u64, EventBatch>,
    retained_events: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Cached {
    index: u64,
    event_index: u64,
    output: Result<Bytes, CommandFailure>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Timers {
    next_id: u64,
    queue: BTreeSet<(u64, u64)>,
    entries: BTreeMap<u64, TimerEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct TimerEntry {
    deadline_ms: u64,
    interval_ms: Option<u64>,
}

fn decode(image: &[u8]) -> Image {
    assert_eq!(image[0], SNAPSHOT_VERSION);
    postcard::from_bytes(&image[1..]).expect("the mirror reads a real image")
}

fn encode(image: &Image) -> Vec<u8> {
    postcard::to_extend(image, vec![SNAPSHOT_VERSION]).unwrap()
}

#[test]
fn the_mirror_reads_and_writes_real_images_exactly() {
    let (r, _) = busy();
    let bytes = r.snapshot().to_vec();
    let image = decode(&bytes);
    assert_eq!(encode(&image), bytes);
    // The busy replica has everything the crafted images below break.
    assert!(image.state.sessions.open.len() >= 3);
    assert!(!image.state.sessions.gone.is_empty());
    assert!(image.state.timers.entries.len() >= 2);
    assert!(image
        .state
        .sessions
        .open
        .values()
        .any(|s| !s.results.is_empty()));
    assert!(image
        .state
        .sessions
        .open
        .values()
        .any(|s| !s.events.is_empty()));
    let mut restored = replica();
    restored.restore(&bytes).unwrap();
    assert_eq!(restored.digest(), r.digest());
}

/// A way of breaking an image, named.
type Breakage = (&'static str, fn(&mut State));

/// Each way of breaking an image.
fn breakages() -> Vec<Breakage> {
    fn first(state: &mut State) -> &mut Session {
        state.sessions.open.values_mut().next().unwrap()
    }
    fn with_events(state: &mut State) -> &mut Session {
        state
            .sessions
            .open
            .values_mut()
            .find(|s| !s.events.is_empty())
            .unwrap()
    }
    fn with_results(state: &mut State) -> &mut Session {
        state
            .sessions
            .open
            .values_mut()
            .find(|s| !s.results.is_empty())
            .unwrap()
    }
    vec![
        ("a session without its client", |s| {
            s.sessions.clients.pop_first();
        }),
        ("two sessions of one client", |s| {
            let client = first(s).client;
            s.sessions.open.values_mut().nth(1).unwrap().client = client;
        }),
        ("a client naming a session that is not open", |s| {
            let (client, _) = s.sessions.clients.pop_first().unwrap();
            s.sessions.clients.insert(client, 999);
        }),
        ("a session registered after the applied index", |s| {
            let (id, session) = s.sessions.open.pop_last().unwrap();
            s.sessions.open.insert(s.applied_index + 5, session.clone());
            let client = s
                .sessions
                .clients
                .iter()
                .find(|(_, v)| **v == id)
                .unwrap()
                .0;
            s.sessions.clients.insert(*client, s.applied_index + 5);
        }),
        ("session id zero", |s| {
            let (id, session) = s.sessions.open.pop_first().unwrap();
            s.sessions.open.insert(0, session);
            let client = *s
                .sessions
                .clients
                .iter()
                .find(|(_, v)| **v == id)
                .unwrap()
                .0;
            s.sessions.clients.insert(client, 0);
        }),
        ("a session both open and gone", |s| {
            let id = *s.sessions.open.keys().next().unwrap();
            s.sessions.gone.insert(id, Gone::Expired);
        }),
        ("a command sequence beyond the log", |s| {
            let applied = s.applied_index;
            first(s).command_sequence = applied + 1;
        }),
        ("the largest command sequence", |s| {
            first(s).command_sequence = u64::MAX;
        }),
        ("acknowledged beyond what was applied", |s| {
            let session = first(s);
            session.acked_sequence = session.command_sequence + 1;
        }),
        ("a cached result outside the unacknowledged range", |s| {
            let session = with_results(s);
            let cached = session.results.values().next().unwrap().clone();
            session.results.insert(session.command_sequence + 1, cached);
        }),
        ("a cached result from the future", |s| {
            let applied = s.applied_index;
            with_results(s).results.values_mut().next().unwrap().index = applied + 1;
        }),
        ("events beyond the applied index", |s| {
            let applied = s.applied_index;
            with_events(s).last_event_index = applied + 1;
        }),
        ("a miscounted event total", |s| {
            with_events(s).retained_events += 1;
        }),
        ("a batch filed under another index", |s| {
            let session = with_events(s);
            let (index, batch) = session.events.pop_first().unwrap();
            session.events.insert(index - 1, batch);
        }),
        ("a batch of another session", |s| {
            let batch = with_events(s).events.values_mut().next().unwrap();
            batch.session = SessionId(batch.session.0 + 1);
        }),
        ("a batch chained forward", |s| {
            let batch = with_events(s).events.values_mut().next().unwrap();
            batch.previous_event_index = batch.event_index;
        }),
        ("events acknowledged beyond those published", |s| {
            let session = with_events(s);
            session.acked_event_index = session.last_event_index + 1;
        }),
        ("a gone session after the applied index", |s| {
            let applied = s.applied_index;
            s.sessions.gone.insert(applied + 1, Gone::Closed);
        }),
        ("a queued timer that is not scheduled", |s| {
            let id = s.timers.next_id;
            s.timers.next_id += 1;
            s.timers.queue.insert((1, id));
        }),
        ("a timer queued at another deadline", |s| {
            let (deadline, id) = s.timers.queue.pop_first().unwrap();
            s.timers.queue.insert((deadline + 1, id));
        }),
        ("a timer id never assigned", |s| {
            s.timers.next_id = 0;
        }),
        ("a timer repeating every 0 ms", |s| {
            let periodic = s
                .timers
                .entries
                .values_mut()
                .find(|e| e.interval_ms.is_some())
                .unwrap();
            periodic.interval_ms = Some(0);
        }),
    ]
}

#[test]
fn crafted_inconsistent_images_are_refused_and_change_nothing() {
    let (source, _) = busy();
    let good = decode(&source.snapshot());
    for (what, breakage) in breakages() {
        let mut image = good.clone();
        breakage(&mut image.state);
        assert_ne!(image, good, "{what}: the breakage changed nothing");
        let bytes = encode(&image);
        let mut target = replica();
        apply(
            &mut target,
            1,
            5,
            LogBody::Register {
                client: ClientId(77),
                timeout_ms: 0,
            },
        );
        let before = target.digest();
        match target.restore(&bytes) {
            Err(SnapshotError::Inconsistent(reason)) => {
                assert!(!reason.is_empty());
            }
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(
            target.digest(),
            before,
            "{what}: the refused image changed the replica"
        );
        target.invariants();
    }
}

#[test]
fn images_over_this_replicas_limits_are_refused() {
    let (source, _) = busy();
    let bytes = source.snapshot();
    for config in [
        ReplicaConfig {
            max_sessions: 1,
            ..ReplicaConfig::default()
        },
        ReplicaConfig {
            max_timers: 1,
            ..ReplicaConfig::default()
        },
    ] {
        let mut r = Replica::new(config, Typed(TestMachine::default())).unwrap();
        assert!(matches!(
            r.restore(&bytes),
            Err(SnapshotError::Inconsistent(_))
        ));
    }
}

#[test]
fn an_image_of_another_index_is_refused_by_restore_at() {
    let (source, _) = busy();
    let bytes = source.snapshot();
    let applied = source.applied_index();
    let mut r = replica();
    let error = r.restore_at(&bytes, LogIndex(applied.0 + 1)).unwrap_err();
    assert!(matches!(error, SnapshotError::Inconsistent(_)), "{error}");
    assert!(error.to_string().contains("index"), "{error}");
    r.restore_at(&bytes, applied).unwrap();
    assert_eq!(r.digest(), source.digest());
}

#[test]
fn a_periodic_timer_at_the_end_of_time_does_not_fire_forever() {
    // Found while writing the image checks: a periodic timer whose next
    // deadline saturated at u64::MAX was rescheduled at that same deadline
    // and fired in an endless loop once the clock reached it (without the
    // fix this test never returns).
    let (source, next) = busy();
    let mut image = decode(&source.snapshot());
    let periodic = *image
        .state
        .timers
        .entries
        .iter()
        .find(|(_, e)| e.interval_ms.is_some())
        .unwrap()
        .0;
    let old = image.state.timers.entries[&periodic].deadline_ms;
    image.state.timers.queue.remove(&(old, periodic));
    image.state.timers.queue.insert((u64::MAX - 1, periodic));
    image
        .state
        .timers
        .entries
        .get_mut(&periodic)
        .unwrap()
        .deadline_ms = u64::MAX - 1;
    let mut r = replica();
    r.restore(&encode(&image)).unwrap();
    apply(&mut r, next, u64::MAX, LogBody::Tick);
    r.invariants();
    assert!(r.pending_timers().iter().all(|(_, id)| id.0 != periodic));
    let fired = format!("timer {periodic} @{next}/");
    let journal = &r.machine().0.journal;
    assert_eq!(
        journal.iter().filter(|l| l.starts_with(&fired)).count(),
        1,
        "{journal:?}"
    );
}
