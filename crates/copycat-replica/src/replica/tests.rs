//! Unit tests, one per rule of `docs/semantics.md` (Sessions; Commands,
//! queries, events; Time and scheduling).

use bytes::Bytes;
use copycat_proto::{
    ClientError, ClientId, CommandFailure, EventIndex, LogBody, LogCommand, Response, Sequence,
    SessionId,
};
use copycat_raft::{Configuration, Entry, EntryPayload, LogIndex, Term};

use super::*;
use crate::codec;
use crate::testing::{command_entry, TestCommand, TestMachine, TestQuery};
use crate::Typed;

struct Harness {
    replica: Replica<Typed<TestMachine>>,
    next_index: u64,
}

impl Harness {
    fn new() -> Self {
        Self::with_config(ReplicaConfig::default())
    }

    fn with_config(config: ReplicaConfig) -> Self {
        Self {
            replica: Replica::new(config, Typed(TestMachine::default())).unwrap(),
            next_index: 1,
        }
    }

    fn entry(&mut self, payload: EntryPayload) -> Applied {
        let entry = Entry {
            term: Term(1),
            index: LogIndex(self.next_index),
            payload,
        };
        self.next_index += 1;
        let applied = self.replica.apply(&entry);
        self.replica.invariants();
        applied
    }

    fn log(&mut self, timestamp_ms: u64, body: LogBody) -> Applied {
        let data = LogCommand { timestamp_ms, body }.encode();
        self.entry(EntryPayload::Command(data))
    }

    fn register(&mut self, time: u64, client: u128, timeout_ms: u64) -> SessionId {
        let applied = self.log(
            time,
            LogBody::Register {
                client: ClientId(client),
                timeout_ms,
            },
        );
        match applied.outcome {
            Outcome::Register {
                result: Ok(Response::Registered { session, .. }),
                ..
            } => session,
            other => panic!("registration failed: {other:?}"),
        }
    }

    fn command(
        &mut self,
        time: u64,
        session: SessionId,
        sequence: u64,
        command: TestCommand,
    ) -> Applied {
        self.log(
            time,
            LogBody::Command {
                session,
                sequence: Sequence(sequence),
                acked: Sequence::ZERO,
                payload: codec::encode(&command),
            },
        )
    }

    fn keep_alive(
        &mut self,
        time: u64,
        session: SessionId,
        sequence: u64,
        event_index: u64,
    ) -> Applied {
        self.log(
            time,
            LogBody::KeepAlive {
                session,
                command_sequence: Sequence(sequence),
                event_index: EventIndex(event_index),
            },
        )
    }

    fn journal(&self) -> &[String] {
        &self.replica.machine().0.journal
    }
}

/// The command response inside an outcome.
fn command_result(applied: &Applied) -> Result<Response, ClientError> {
    match &applied.outcome {
        Outcome::Command { result, .. } => result.clone(),
        other => panic!("not a command outcome: {other:?}"),
    }
}

fn output(applied: &Applied) -> Result<i64, CommandFailure> {
    match command_result(applied) {
        Ok(Response::Command { output, .. }) => output.map(|b| codec::decode(&b).unwrap()),
        other => panic!("not a command response: {other:?}"),
    }
}

fn session_result(applied: &Applied) -> Result<Response, ClientError> {
    match &applied.outcome {
        Outcome::Session { result, .. } => result.clone(),
        other => panic!("not a session outcome: {other:?}"),
    }
}

// Reference: docs/semantics.md "Sessions": the session id is the log index
// of the register entry; the timeout is stored in the log.
#[test]
fn register_uses_the_entry_index_and_the_logged_timeout() {
    let mut h = Harness::new();
    h.entry(EntryPayload::Noop);
    let session = h.register(10, 1, 2_000);
    assert_eq!(session, SessionId(2));
    assert_eq!(h.replica.session_timing(session), Some((2_000, 10)));
    let defaulted = h.register(10, 2, 0);
    assert_eq!(h.replica.session_timing(defaulted), Some((5_000, 10)));
    let clamped = h.register(10, 3, 1);
    assert_eq!(h.replica.session_timing(clamped).unwrap().0, 100);
    assert_eq!(h.journal(), ["opened 2", "opened 3", "opened 4"]);
}

// Reference: "Registering again with the same client id expires the old
// session"; expiry runs expire then close callbacks.
#[test]
fn registering_the_same_client_again_expires_the_old_session() {
    let mut h = Harness::new();
    let old = h.register(0, 7, 1_000);
    let other = h.register(0, 8, 1_000);
    let applied = h.log(
        5,
        LogBody::Register {
            client: ClientId(7),
            timeout_ms: 1_000,
        },
    );
    assert_eq!(applied.expired, vec![old]);
    assert_eq!(applied.closed, vec![old]);
    // The other session heard about it through an event.
    assert_eq!(applied.events.len(), 1);
    assert_eq!(applied.events[0].session, other);
    assert_eq!(
        h.journal()[2..],
        ["expired 1", "closed 1", "opened 3"].map(String::from)
    );
    let late = h.command(6, old, 1, TestCommand::Add(1));
    assert_eq!(command_result(&late), Err(ClientError::SessionExpired));
    assert_eq!(h.replica.sessions().len(), 2);
}

// Reference: "Commands carry a per-session sequence number ... Results are
// cached per sequence and returned for duplicates without re-applying."
#[test]
fn duplicates_are_answered_from_the_cache_without_reapplying() {
    let mut h = Harness::new();
    let s = h.register(0, 1, 1_000);
    assert_eq!(output(&h.command(1, s, 1, TestCommand::Add(5))), Ok(5));
    assert_eq!(output(&h.command(2, s, 2, TestCommand::Add(5))), Ok(10));
    let duplicate = h.command(3, s, 1, TestCommand::Add(5));
    assert_eq!(
        command_result(&duplicate),
        Ok(Response::Command {
            sequence: Sequence(1),
            index: 2,
            event_index: EventIndex(0),
            output: Ok(codec::encode(&5i64)),
        })
    );
    assert_eq!(h.replica.machine().0.value, 10, "applied once");
    let applies = h
        .journal()
        .iter()
        .filter(|l| l.starts_with("apply"))
        .count();
    assert_eq!(applies, 2);
}

// Reference: "a gap is rejected with the last sequence seen".
#[test]
fn a_gap_is_rejected_with_the_last_sequence() {
    let mut h = Harness::new();
    let s = h.register(0, 1, 1_000);
    h.command(1, s, 1, TestCommand::Add(1));
    let gap = h.command(2, s, 3, TestCommand::Add(1));
    assert_eq!(
        command_result(&gap),
        Err(ClientError::CommandGap {
            last_sequence: Sequence(1)
        })
    );
    assert_eq!(h.replica.machine().0.value, 1);
    // Resending from the gap works.
    assert_eq!(output(&h.command(3, s, 2, TestCommand::Add(1))), Ok(2));
    assert_eq!(output(&h.command(3, s, 3, TestCommand::Add(1))), Ok(3));
}

// Reference: "Application errors are returned to the caller and cached like
// results."
#[test]
fn application_errors_are_cached_like_results() {
    let mut h = Harness::new();
    let s = h.register(0, 1, 1_000);
    let failed = h.command(1, s, 1, TestCommand::Fail);
    let expected = Err(CommandFailure::Application(codec::encode(
        &"failed at 2".to_string(),
    )));
    assert_eq!(output(&failed).map_err(|e| e.clone()), expected.clone());
    let again = h.command(2, s, 1, TestCommand::Fail);
    assert_eq!(output(&again), expected);
    assert_eq!(
        h.journal()
            .iter()
            .filter(|l| l.starts_with("apply"))
            .count(),
        1
    );
    // An undecodable command is a cached failure too, and uses up its sequence.
    let garbage = h.log(
        3,
        LogBody::Command {
            session: s,
            sequence: Sequence(2),
            acked: Sequence::ZERO,
            payload: Bytes::from_static(&[0xff, 0xff, 0xff]),
        },
    );
    assert!(matches!(
        output(&garbage),
        Err(CommandFailure::Undecodable(_))
    ));
    assert_eq!(output(&h.command(4, s, 3, TestCommand::Add(1))), Ok(1));
}

// Reference: "Keep-alive ... carrying the highest command sequence ... and
// the highest event index ... drops cached results and delivered events."
#[test]
fn keep_alive_refreshes_and_drops_acknowledged_results_and_events() {
    let mut h = Harness::new();
    let s = h.register(0, 1, 1_000);
    for sequence in 1..=3 {
        h.command(
            sequence,
            s,
            sequence,
            TestCommand::Publish {
                session: s.0,
                name: "e".into(),
            },
        );
    }
    assert_eq!(h.replica.cached_sequences(s), [1, 2, 3].map(Sequence));
    assert_eq!(
        h.replica.retained_event_indexes(s),
        [2, 3, 4].map(EventIndex)
    );
    let applied = h.keep_alive(500, s, 2, 3);
    assert_eq!(
        session_result(&applied),
        Ok(Response::KeptAlive {
            event_index: EventIndex(4)
        })
    );
    assert_eq!(h.replica.cached_sequences(s), vec![Sequence(3)]);
    assert_eq!(h.replica.retained_event_indexes(s), vec![EventIndex(4)]);
    assert_eq!(h.replica.session_timing(s), Some((1_000, 500)));
    // An acknowledged sequence is never re-applied, even if resent.
    assert_eq!(
        command_result(&h.command(501, s, 1, TestCommand::Add(1))),
        Err(ClientError::ResultDiscarded {
            sequence: Sequence(1)
        })
    );
    // Acknowledging beyond what exists is clamped, not trusted.
    h.keep_alive(502, s, 99, 99);
    assert!(h.replica.cached_sequences(s).is_empty());
    assert!(h.replica.retained_event_indexes(s).is_empty());
    let next = h.command(503, s, 4, TestCommand::Add(1));
    assert_eq!(output(&next), Ok(1));
}

// Reference: "Expiry: ... when a session's last keep-alive is older than its
// timeout every server marks it suspect and the leader commits an expire
// entry."
#[test]
fn expiry_happens_only_through_expire_entries_and_only_if_still_suspect() {
    let mut h = Harness::new();
    let s = h.register(0, 1, 1_000);
    let t = h.register(0, 2, 5_000);
    h.log(1_000, LogBody::Tick);
    assert!(
        h.replica.suspect_sessions().is_empty(),
        "exactly the timeout is not suspect"
    );
    h.log(1_001, LogBody::Tick);
    assert_eq!(h.replica.suspect_sessions(), vec![s]);
    assert_eq!(h.replica.sessions().len(), 2, "suspect is not expired");
    // The client's keep-alive lands before the leader's expire entry.
    h.keep_alive(1_002, s, 0, 0);
    let ignored = h.log(1_003, LogBody::Expire { session: s });
    assert_eq!(
        ignored.outcome,
        Outcome::Expire {
            session: s,
            expired: false
        }
    );
    assert!(ignored.expired.is_empty());
    // Silence again: this time the expire entry takes effect.
    let expired = h.log(2_500, LogBody::Expire { session: s });
    assert_eq!(
        expired.outcome,
        Outcome::Expire {
            session: s,
            expired: true
        }
    );
    assert_eq!(expired.expired, vec![s]);
    assert_eq!(expired.closed, vec![s]);
    assert_eq!(expired.events.len(), 1, "the other session hears of it");
    assert_eq!(expired.events[0].session, t);
    assert_eq!(
        session_result(&h.keep_alive(2_501, s, 0, 0)),
        Err(ClientError::SessionExpired)
    );
    // Expiring twice, or an unknown session, changes nothing.
    let again = h.log(2_502, LogBody::Expire { session: s });
    assert_eq!(
        again.outcome,
        Outcome::Expire {
            session: s,
            expired: false
        }
    );
    assert_eq!(
        h.journal()
            .iter()
            .filter(|l| l.starts_with("expired"))
            .count(),
        1
    );
}

// Reference: "New leader appends a no-op (which also resets session timers)".
#[test]
fn a_leader_noop_restarts_session_timeouts_at_the_next_timestamp() {
    let mut h = Harness::new();
    let s = h.register(0, 1, 1_000);
    h.entry(EntryPayload::Noop);
    h.entry(EntryPayload::Config(Configuration::default()));
    // The election took a while: the new leader's first entry is late.
    h.log(3_000, LogBody::Tick);
    assert!(h.replica.suspect_sessions().is_empty());
    assert_eq!(h.replica.session_timing(s), Some((1_000, 3_000)));
    let ignored = h.log(3_001, LogBody::Expire { session: s });
    assert_eq!(
        ignored.outcome,
        Outcome::Expire {
            session: s,
            expired: false
        }
    );
}

// Reference: "the executor's clock is the max of the previous clock and the
// entry time, so it never goes back across leaders."
#[test]
fn time_never_goes_back() {
    let mut h = Harness::new();
    let s = h.register(1_000, 1, 1_000);
    assert_eq!(h.log(900, LogBody::Tick).time_ms, 1_000);
    let applied = h.command(500, s, 1, TestCommand::Add(1));
    assert_eq!(applied.time_ms, 1_000);
    assert!(h.journal().last().unwrap().ends_with("/1000"));
    assert_eq!(h.log(1_200, LogBody::Tick).time_ms, 1_200);
    assert_eq!(h.replica.time_ms(), 1_200);
}

// Reference: "State machines can schedule one-shot and periodic callbacks on
// that clock; they run before applying the first entry whose time passes
// them."
#[test]
fn timers_fire_in_deadline_then_id_order_before_the_entry_that_passes_them() {
    let mut h = Harness::new();
    let s = h.register(0, 1, 60_000);
    // Timer 0 at 300, timer 1 at 100, timer 2 at 100 (same deadline: id order).
    for (sequence, delay) in [(1, 300), (2, 100), (3, 100)] {
        h.command(
            0,
            s,
            sequence,
            TestCommand::Schedule {
                delay_ms: delay,
                periodic: false,
            },
        );
    }
    assert_eq!(
        h.replica.pending_timers(),
        vec![(100, TimerId(1)), (100, TimerId(2)), (300, TimerId(0))]
    );
    h.log(99, LogBody::Tick);
    assert_eq!(h.replica.pending_timers().len(), 3, "not due yet");
    let at = h.next_index;
    h.command(250, s, 4, TestCommand::Add(1));
    let tail: Vec<&String> = h.journal().iter().rev().take(3).rev().collect();
    assert_eq!(
        tail,
        [
            format!("timer 1 @{at}/100"),
            format!("timer 2 @{at}/100"),
            format!("apply Add(1) from Some(s1) @{at}/250"),
        ]
        .iter()
        .collect::<Vec<_>>()
    );
    assert_eq!(h.replica.pending_timers(), vec![(300, TimerId(0))]);
    h.log(10_000, LogBody::Tick);
    assert!(h.replica.pending_timers().is_empty());
}

#[test]
fn periodic_timers_repeat_until_cancelled() {
    let mut h = Harness::new();
    let s = h.register(0, 1, 60_000);
    h.command(
        0,
        s,
        1,
        TestCommand::Schedule {
            delay_ms: 100,
            periodic: true,
        },
    );
    let applied = h.log(350, LogBody::Tick);
    let fired: Vec<&String> = h
        .journal()
        .iter()
        .filter(|l| l.starts_with("timer"))
        .collect();
    assert_eq!(
        fired,
        ["timer 0 @3/100", "timer 0 @3/200", "timer 0 @3/300"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .iter()
            .collect::<Vec<_>>()
    );
    // Events published by timers while applying one entry form one batch.
    assert_eq!(applied.events.len(), 1);
    assert_eq!(applied.events[0].events.len(), 3);
    assert_eq!(output(&h.command(360, s, 2, TestCommand::Cancel(0))), Ok(1));
    h.log(1_000, LogBody::Tick);
    assert_eq!(
        h.journal()
            .iter()
            .filter(|l| l.starts_with("timer"))
            .count(),
        3
    );
}

// Reference: "Events are grouped per log index with the previous event
// index, kept on every server until acknowledged ... a client that sees a
// gap asks for a reset and the server resends from there. Responses carry
// the last event index published before them."
#[test]
fn events_are_batched_per_index_chained_retained_and_resent() {
    let mut h = Harness::new();
    let a = h.register(0, 1, 60_000);
    let b = h.register(0, 2, 60_000);
    let first = h.command(
        1,
        a,
        1,
        TestCommand::Publish {
            session: b.0,
            name: "x".into(),
        },
    );
    assert_eq!(first.events.len(), 1);
    assert_eq!(first.events[0].event_index, EventIndex(3));
    assert_eq!(first.events[0].previous_event_index, EventIndex(0));
    // The response to a's command carries a's last event index (none).
    assert!(matches!(
        command_result(&first),
        Ok(Response::Command {
            event_index: EventIndex(0),
            ..
        })
    ));
    let second = h.command(
        2,
        b,
        1,
        TestCommand::Publish {
            session: b.0,
            name: "y".into(),
        },
    );
    assert_eq!(second.events[0].previous_event_index, EventIndex(3));
    // b's own response says: deliver events up to index 4 first.
    assert!(matches!(
        command_result(&second),
        Ok(Response::Command {
            event_index: EventIndex(4),
            ..
        })
    ));
    assert_eq!(
        output(&h.command(
            3,
            a,
            2,
            TestCommand::Publish {
                session: 99,
                name: "z".into()
            }
        )),
        Ok(0)
    );
    let (response, batches) = h.replica.reset_events(b, EventIndex(0)).unwrap();
    assert_eq!(
        response,
        Response::EventsReset {
            event_index: EventIndex(4)
        }
    );
    assert_eq!(
        batches.iter().map(|b| b.event_index).collect::<Vec<_>>(),
        [EventIndex(3), EventIndex(4)]
    );
    let (_, batches) = h.replica.reset_events(b, EventIndex(3)).unwrap();
    assert_eq!(batches.len(), 1);
    h.keep_alive(4, b, 1, 4);
    assert!(h
        .replica
        .reset_events(b, EventIndex(0))
        .unwrap()
        .1
        .is_empty());
    // Index 3 holds a command, not a session: unknown. Index 77 is beyond
    // this replica: it has not caught up.
    assert_eq!(
        h.replica.reset_events(SessionId(3), EventIndex(0)),
        Err(ClientError::UnknownSession)
    );
    assert!(matches!(
        h.replica.reset_events(SessionId(77), EventIndex(0)),
        Err(ClientError::Unavailable(_))
    ));
}

#[test]
fn unregister_closes_without_expiring() {
    let mut h = Harness::new();
    let s = h.register(0, 1, 1_000);
    let applied = h.log(1, LogBody::Unregister { session: s });
    assert_eq!(session_result(&applied), Ok(Response::Unregistered));
    assert!(applied.expired.is_empty());
    assert_eq!(applied.closed, vec![s]);
    assert_eq!(h.journal(), ["opened 1", "closed 1"]);
    assert_eq!(
        session_result(&h.log(2, LogBody::Unregister { session: s })),
        Err(ClientError::UnknownSession)
    );
    assert_eq!(
        command_result(&h.command(3, SessionId(42), 1, TestCommand::Add(1))),
        Err(ClientError::UnknownSession)
    );
}

// Reference: "Queries carry the last command sequence and the highest index
// the client has seen; any server waits until it has applied both."
#[test]
fn queries_wait_for_the_clients_sequence_and_index() {
    let mut h = Harness::new();
    let s = h.register(0, 1, 1_000);
    h.command(1, s, 1, TestCommand::Add(3));
    let get = codec::encode(&TestQuery::Get);
    assert_eq!(
        h.replica.query(s, Sequence(2), LogIndex(1), &get),
        QueryOutcome::Wait
    );
    assert_eq!(
        h.replica.query(s, Sequence(1), LogIndex(3), &get),
        QueryOutcome::Wait
    );
    assert_eq!(
        h.replica.query(s, Sequence(1), LogIndex(2), &get),
        QueryOutcome::Done(Ok(Response::Query {
            index: 2,
            event_index: EventIndex(0),
            output: Ok(codec::encode(&3i64)),
        }))
    );
    assert!(matches!(
        h.replica.query(s, Sequence(0), LogIndex(0), b"\xff\xff"),
        QueryOutcome::Done(Ok(Response::Query {
            output: Err(CommandFailure::Undecodable(_)),
            ..
        }))
    ));
    // Index 2 was a command, never a session: unknown.
    assert_eq!(
        h.replica
            .query(SessionId(2), Sequence(0), LogIndex(0), &get),
        QueryOutcome::Done(Err(ClientError::UnknownSession))
    );
    // A session registered beyond what this replica applied is not unknown:
    // this replica is behind, the client should ask another server.
    assert!(matches!(
        h.replica
            .query(SessionId(9), Sequence(0), LogIndex(0), &get),
        QueryOutcome::Done(Err(ClientError::Unavailable(_)))
    ));
}

#[test]
fn limits_give_clear_errors() {
    let config = ReplicaConfig {
        max_sessions: 2,
        max_cached_results_per_session: 2,
        max_retained_events_per_session: 2,
        max_command_bytes: 64,
        max_timers: 1,
        ..ReplicaConfig::default()
    };
    let mut h = Harness::with_config(config);
    let a = h.register(0, 1, 60_000);
    let b = h.register(0, 2, 60_000);
    let refused = h.log(
        0,
        LogBody::Register {
            client: ClientId(3),
            timeout_ms: 0,
        },
    );
    assert_eq!(
        refused.outcome,
        Outcome::Register {
            client: ClientId(3),
            result: Err(ClientError::TooManySessions { max: 2 })
        }
    );
    // Too large: failure cached, sequence used up.
    let large = h.log(
        1,
        LogBody::Command {
            session: a,
            sequence: Sequence(1),
            acked: Sequence::ZERO,
            payload: Bytes::from(vec![0; 65]),
        },
    );
    assert_eq!(
        output(&large),
        Err(CommandFailure::TooLarge { size: 65, max: 64 })
    );
    assert_eq!(
        output(&h.command(
            1,
            a,
            2,
            TestCommand::Schedule {
                delay_ms: 10_000,
                periodic: false
            }
        )),
        Ok(0)
    );
    // Result cache full: not applied, sequence not used.
    let full = h.command(1, a, 3, TestCommand::Add(1));
    assert_eq!(
        command_result(&full),
        Err(ClientError::ResultCacheFull { max: 2 })
    );
    h.keep_alive(2, a, 2, 0);
    // Timer limit: the state machine sees the error and reports it.
    let timers = h.command(
        3,
        a,
        3,
        TestCommand::Schedule {
            delay_ms: 5,
            periodic: false,
        },
    );
    assert_eq!(
        output(&timers),
        Err(CommandFailure::Application(codec::encode(
            &"too many pending timers (limit 1)".to_string()
        )))
    );
    // Event overflow: b never acknowledges, so it is expired at the third.
    h.command(
        4,
        a,
        4,
        TestCommand::Publish {
            session: b.0,
            name: "1".into(),
        },
    );
    h.keep_alive(4, a, 4, 0);
    h.command(
        5,
        a,
        5,
        TestCommand::Publish {
            session: b.0,
            name: "2".into(),
        },
    );
    h.keep_alive(5, a, 5, 0);
    let overflow = h.command(
        6,
        a,
        6,
        TestCommand::Publish {
            session: b.0,
            name: "3".into(),
        },
    );
    assert_eq!(overflow.expired, vec![b]);
    let receivers: Vec<SessionId> = overflow.events.iter().map(|b| b.session).collect();
    assert_eq!(
        receivers,
        vec![a],
        "no batch pushed to the expired session; a hears of it"
    );
    assert_eq!(h.replica.sessions().len(), 1);
}

#[test]
fn undecodable_entries_are_skipped_and_counted() {
    let mut h = Harness::new();
    let s = h.register(0, 1, 1_000);
    let skipped = h.entry(EntryPayload::Command(Bytes::from_static(b"\x07garbage")));
    assert!(matches!(
        skipped.outcome,
        Outcome::Skipped(copycat_proto::DecodeError::UnknownVersion { found: 7, .. })
    ));
    let skipped = h.entry(EntryPayload::Command(Bytes::from_static(
        b"\x01\xff\xff\xff",
    )));
    assert!(matches!(skipped.outcome, Outcome::Skipped(_)));
    h.entry(EntryPayload::Command(Bytes::new()));
    assert_eq!(h.replica.undecodable_entries(), 3);
    assert_eq!(h.replica.applied_index(), LogIndex(4));
    assert_eq!(output(&h.command(1, s, 1, TestCommand::Add(1))), Ok(1));
}

#[test]
#[should_panic(expected = "entries apply in order")]
fn applying_out_of_order_is_a_broken_invariant() {
    let mut h = Harness::new();
    h.register(0, 1, 1_000);
    h.replica.apply(&command_entry(
        1,
        LogCommand {
            timestamp_ms: 0,
            body: LogBody::Tick,
        }
        .encode(),
    ));
}

#[test]
fn snapshot_restore_reproduces_the_state_and_the_future() {
    let mut h = Harness::new();
    let a = h.register(0, 1, 1_000);
    let b = h.register(0, 2, 1_000);
    h.command(
        1,
        a,
        1,
        TestCommand::Publish {
            session: b.0,
            name: "x".into(),
        },
    );
    h.command(
        2,
        a,
        2,
        TestCommand::Schedule {
            delay_ms: 50,
            periodic: true,
        },
    );
    h.command(3, b, 1, TestCommand::Fail);
    h.entry(EntryPayload::Noop);
    let image = h.replica.snapshot();
    let mut copy = Replica::new(ReplicaConfig::default(), Typed(TestMachine::default())).unwrap();
    copy.restore(&image).unwrap();
    assert_eq!(copy.digest(), h.replica.digest());
    assert_eq!(copy.snapshot(), image);
    let rest = [
        LogBody::Tick,
        LogBody::Command {
            session: a,
            sequence: Sequence(3),
            acked: Sequence::ZERO,
            payload: codec::encode(&TestCommand::Add(2)),
        },
        LogBody::Command {
            session: b,
            sequence: Sequence(1),
            acked: Sequence::ZERO,
            payload: codec::encode(&TestCommand::Fail),
        },
        LogBody::Expire { session: b },
    ];
    for (i, body) in rest.into_iter().enumerate() {
        let index = h.next_index + i as u64;
        let entry = command_entry(
            index,
            LogCommand {
                timestamp_ms: 400 + 2_000 * i as u64,
                body,
            }
            .encode(),
        );
        assert_eq!(h.replica.apply(&entry), copy.apply(&entry));
        assert_eq!(h.replica.digest(), copy.digest());
    }
    assert_ne!(
        copy.digest(),
        Replica::new(ReplicaConfig::default(), Typed(TestMachine::default()))
            .unwrap()
            .digest()
    );
    // Corrupt images are errors, not panics.
    assert!(matches!(
        copy.restore(&image[..image.len() / 2]),
        Err(SnapshotError::Decode(_))
    ));
    assert!(matches!(
        copy.restore(b"\x02"),
        Err(SnapshotError::Decode(
            copycat_proto::DecodeError::UnknownVersion { .. }
        ))
    ));
}

/// [`TestMachine`] decoding its images ahead of time.
#[derive(Default)]
struct Preparing(Typed<TestMachine>);

impl RawStateMachine for Preparing {
    fn apply(
        &mut self,
        ctx: &mut ApplyContext<'_>,
        command: &[u8],
    ) -> Result<Bytes, CommandFailure> {
        self.0.apply(ctx, command)
    }
    fn query(&self, ctx: &QueryContext, query: &[u8]) -> Result<Bytes, CommandFailure> {
        self.0.query(ctx, query)
    }
    fn on_timer(&mut self, ctx: &mut ApplyContext<'_>, timer: TimerId) {
        self.0.on_timer(ctx, timer);
    }
    fn session_opened(&mut self, ctx: &mut ApplyContext<'_>, session: SessionId) {
        self.0.session_opened(ctx, session);
    }
    fn session_expired(&mut self, ctx: &mut ApplyContext<'_>, session: SessionId) {
        self.0.session_expired(ctx, session);
    }
    fn session_closed(&mut self, ctx: &mut ApplyContext<'_>, session: SessionId) {
        self.0.session_closed(ctx, session);
    }
    fn snapshot(&self) -> Bytes {
        self.0.snapshot()
    }
    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        self.0.restore(data)
    }
    fn prepare_restore(data: &[u8]) -> Option<Result<PreparedRestore, RestoreError>> {
        Some(
            codec::decode::<TestMachine>(data)
                .map(|m| Box::new(m) as PreparedRestore)
                .map_err(|e| RestoreError(e.to_string())),
        )
    }
    fn install_prepared(&mut self, prepared: PreparedRestore) -> Result<(), RestoreError> {
        self.0 .0 = crate::machine::prepared_as::<TestMachine>(prepared)?;
        Ok(())
    }
}

#[test]
fn a_prepared_image_installs_the_state_restore_at_gives() {
    let mut h = Harness::new();
    let a = h.register(0, 1, 1_000);
    h.command(1, a, 1, TestCommand::Add(5));
    h.entry(EntryPayload::Noop);
    let index = h.replica.applied_index();
    let image = h.replica.snapshot();
    let config = ReplicaConfig::default();

    // Decoded ahead of time by the state machine: install is a swap.
    let prepared = Replica::<Preparing>::prepare(&config, image.clone(), index).unwrap();
    assert!(prepared.is_decoded());
    assert_eq!(prepared.index(), index);
    let mut copy = Replica::new(config.clone(), Preparing::default()).unwrap();
    copy.install_prepared(prepared).unwrap();
    assert_eq!(copy.snapshot(), image);
    assert_eq!(copy.machine().0 .0.value, 5);

    // A state machine that prepares nothing is restored at install.
    let prepared = Replica::<Typed<TestMachine>>::prepare(&config, image.clone(), index).unwrap();
    assert!(!prepared.is_decoded());
    let mut plain = Replica::new(config.clone(), Typed(TestMachine::default())).unwrap();
    plain.install_prepared(prepared).unwrap();
    assert_eq!(plain.digest(), h.replica.digest());

    // The checks restore_at makes happen while preparing.
    assert!(matches!(
        Replica::<Preparing>::prepare(&config, image.clone(), index.next()),
        Err(SnapshotError::Inconsistent(_))
    ));
    assert!(matches!(
        Replica::<Preparing>::prepare(&config, Bytes::new(), index),
        Err(SnapshotError::Decode(_))
    ));
    let mut damaged = image.to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    assert!(Replica::<Preparing>::prepare(&config, Bytes::from(damaged), index).is_err());
}
