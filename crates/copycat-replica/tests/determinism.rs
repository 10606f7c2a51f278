//! Property: replicas fed the same entries stay identical, and a replica
//! restored from a snapshot taken midway ends identical too.
//!
//! The entries are random session log commands: registrations of a few
//! clients (so re-registration happens), keep-alives with arbitrary
//! acknowledgements, commands with sequences that are next, duplicated or
//! gapped, for known and unknown sessions, expire entries, ticks, timestamps
//! that sometimes go backwards, Raft no-ops and undecodable garbage.

use bytes::Bytes;
use copycat_proto::{ClientId, EventIndex, LogBody, LogCommand, Sequence, SessionId};
use copycat_raft::{Entry, EntryPayload, LogIndex, Term};
use copycat_replica::codec;
use copycat_replica::testing::{TestCommand, TestMachine};
use copycat_replica::{Replica, ReplicaConfig, Typed};
use proptest::prelude::*;

fn config() -> ReplicaConfig {
    ReplicaConfig {
        max_sessions: 4,
        max_cached_results_per_session: 4,
        max_retained_events_per_session: 6,
        max_command_bytes: 32,
        max_timers: 5,
        max_remembered_sessions: 8,
        min_session_timeout_ms: 50,
        ..ReplicaConfig::default()
    }
}

fn replica() -> Replica<Typed<TestMachine>> {
    Replica::new(config(), Typed(TestMachine::default())).unwrap()
}

fn command() -> impl Strategy<Value = TestCommand> {
    prop_oneof![
        (-5i64..5).prop_map(TestCommand::Add),
        Just(TestCommand::Fail),
        (0u64..30, "[a-c]").prop_map(|(session, name)| TestCommand::Publish { session, name }),
        (0u64..300, any::<bool>())
            .prop_map(|(delay_ms, periodic)| TestCommand::Schedule { delay_ms, periodic }),
        (0u64..6).prop_map(TestCommand::Cancel),
    ]
}

fn body() -> impl Strategy<Value = LogBody> {
    // Session ids are small log indexes, so random ones often name real
    // sessions; others are unknown or expired.
    let session = (0u64..30).prop_map(SessionId);
    prop_oneof![
        (0u128..5, 0u64..400).prop_map(|(client, timeout_ms)| LogBody::Register {
            client: ClientId(client),
            timeout_ms
        }),
        (session.clone(), 0u64..6, 0u64..40).prop_map(|(session, sequence, event)| {
            LogBody::KeepAlive {
                session,
                command_sequence: Sequence(sequence),
                event_index: EventIndex(event),
            }
        }),
        session
            .clone()
            .prop_map(|session| LogBody::Unregister { session }),
        (session.clone(), 0u64..6, command()).prop_map(|(session, sequence, command)| {
            LogBody::Command {
                session,
                sequence: Sequence(sequence),
                acked: Sequence::ZERO,
                payload: codec::encode(&command),
            }
        }),
        (session.clone(), 0u64..6).prop_map(|(session, sequence)| LogBody::Command {
            session,
            sequence: Sequence(sequence),
            acked: Sequence::ZERO,
            payload: Bytes::from(vec![7; 40]),
        }),
        session.prop_map(|session| LogBody::Expire { session }),
        Just(LogBody::Tick),
    ]
}

#[derive(Clone, Debug)]
enum Item {
    Log {
        advance_ms: i64,
        body: LogBody,
    },
    Noop,
    Garbage(Vec<u8>),
    /// Re-apply (at a new index) the payload of an earlier entry.
    Duplicate(usize),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        8 => (-50i64..200, body()).prop_map(|(advance_ms, body)| Item::Log { advance_ms, body }),
        1 => Just(Item::Noop),
        1 => proptest::collection::vec(any::<u8>(), 0..8).prop_map(Item::Garbage),
        2 => any::<usize>().prop_map(Item::Duplicate),
    ]
}

fn entries(items: &[Item]) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let mut time: i64 = 0;
    for (i, item) in items.iter().enumerate() {
        let payload = match item {
            Item::Log { advance_ms, body } => {
                time = (time + advance_ms).max(0);
                EntryPayload::Command(
                    LogCommand {
                        timestamp_ms: time as u64,
                        body: body.clone(),
                    }
                    .encode(),
                )
            }
            Item::Noop => EntryPayload::Noop,
            Item::Garbage(bytes) => EntryPayload::Command(Bytes::from(bytes.clone())),
            Item::Duplicate(which) if !out.is_empty() => out[which % out.len()].payload.clone(),
            Item::Duplicate(_) => EntryPayload::Noop,
        };
        out.push(Entry {
            term: Term(1),
            index: LogIndex(i as u64 + 1),
            payload,
        });
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn replicas_fed_the_same_entries_stay_identical(
        items in proptest::collection::vec(item(), 1..120),
        cut in any::<proptest::sample::Index>(),
    ) {
        let entries = entries(&items);
        let cut = cut.index(entries.len());
        let mut a = replica();
        let mut b = replica();
        let mut restored = None;
        for (i, entry) in entries.iter().enumerate() {
            if i == cut {
                let mut fresh = replica();
                fresh.restore(&a.snapshot()).unwrap();
                prop_assert_eq!(fresh.digest(), a.digest());
                restored = Some(fresh);
            }
            let from_a = a.apply(entry);
            let from_b = b.apply(entry);
            a.invariants();
            prop_assert_eq!(&from_a, &from_b);
            prop_assert_eq!(a.digest(), b.digest());
            if let Some(fresh) = restored.as_mut() {
                prop_assert_eq!(&fresh.apply(entry), &from_a);
                fresh.invariants();
            }
        }
        let fresh = restored.expect("cut is within the entries");
        prop_assert_eq!(fresh.digest(), a.digest());
        prop_assert_eq!(fresh.snapshot(), a.snapshot());
        prop_assert_eq!(a.machine(), b.machine());
    }
}
