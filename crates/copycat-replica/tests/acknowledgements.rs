//! Results are acknowledged on the command path: a client that keeps one
//! command in flight never fills its session's result cache, however long
//! it goes without a keep-alive (Raft thesis §6.3).

use copycat_proto::{ClientError, ClientId, LogBody, LogCommand, Sequence, SessionId};
use copycat_replica::testing::{command_entry, TestCommand, TestMachine};
use copycat_replica::{codec, Outcome, Replica, ReplicaConfig, Typed};

fn replica(max_cached: usize) -> Replica<Typed<TestMachine>> {
    let config = ReplicaConfig {
        max_cached_results_per_session: max_cached,
        ..ReplicaConfig::default()
    };
    let mut replica = Replica::new(config, Typed(TestMachine::default())).expect("replica");
    let register = LogBody::Register {
        client: ClientId(1),
        timeout_ms: 600_000,
    };
    apply(&mut replica, 1, register);
    replica
}

fn apply(replica: &mut Replica<Typed<TestMachine>>, index: u64, body: LogBody) -> Outcome {
    let data = LogCommand {
        timestamp_ms: index,
        body,
    }
    .encode();
    replica.apply(&command_entry(index, data)).outcome
}

/// Run `count` commands one after another, each acknowledging what
/// `acked(sequence)` says; the first refusal, if any.
fn run(
    replica: &mut Replica<Typed<TestMachine>>,
    count: u64,
    acked: impl Fn(u64) -> u64,
) -> Option<(u64, ClientError)> {
    for sequence in 1..=count {
        let body = LogBody::Command {
            session: SessionId(1),
            sequence: Sequence(sequence),
            acked: Sequence(acked(sequence)),
            payload: codec::encode(&TestCommand::Add(1)),
        };
        if let Outcome::Command {
            result: Err(error), ..
        } = apply(replica, sequence + 1, body)
        {
            return Some((sequence, error));
        }
    }
    None
}

#[test]
fn commands_that_acknowledge_what_came_back_never_fill_the_cache() {
    let mut replica = replica(16);
    assert_eq!(run(&mut replica, 1_000, |sequence| sequence - 1), None);
    assert_eq!(replica.machine().0.value, 1_000);
}

#[test]
fn without_acknowledgements_the_cache_fills_at_its_limit() {
    let mut replica = replica(16);
    let refused = run(&mut replica, 1_000, |_| 0);
    assert_eq!(
        refused,
        Some((17, ClientError::ResultCacheFull { max: 16 })),
        "the 17th unacknowledged result does not fit"
    );
}

#[test]
fn an_acknowledgement_beyond_what_was_applied_is_clamped() {
    let mut replica = replica(16);
    // A confused client acknowledges far ahead: only what exists is dropped,
    // and later commands still apply in order.
    assert_eq!(run(&mut replica, 40, |sequence| sequence + 100), None);
    assert_eq!(replica.machine().0.value, 40);
}

/// A retry that was sent before its answer arrived can reach the log after
/// a later command has acknowledged that answer (and so dropped its cached
/// result): it must not run again, and whatever it is answered, the client
/// already has the real result.
#[test]
fn a_retry_that_crosses_its_own_acknowledgement_is_not_applied_again() {
    let mut replica = replica(16);
    assert_eq!(run(&mut replica, 5, |sequence| sequence - 1), None);
    // Command 6 acknowledges 5: the result of 5 leaves the cache.
    let six = LogBody::Command {
        session: SessionId(1),
        sequence: Sequence(6),
        acked: Sequence(5),
        payload: codec::encode(&TestCommand::Add(1)),
    };
    assert!(matches!(
        apply(&mut replica, 7, six),
        Outcome::Command { result: Ok(_), .. }
    ));
    assert_eq!(replica.machine().0.value, 6);
    // The stale retry of 5 (it still carries acked = 4) arrives now.
    let retry = LogBody::Command {
        session: SessionId(1),
        sequence: Sequence(5),
        acked: Sequence(4),
        payload: codec::encode(&TestCommand::Add(1)),
    };
    let outcome = apply(&mut replica, 8, retry);
    assert_eq!(
        replica.machine().0.value,
        6,
        "the retry ran a second time: {outcome:?}"
    );
    // And the session goes on: command 7 runs once.
    assert_eq!(
        run_from(&mut replica, 7, 9),
        None,
        "the session still takes new commands"
    );
    assert_eq!(replica.machine().0.value, 7);
}

fn run_from(
    replica: &mut Replica<Typed<TestMachine>>,
    sequence: u64,
    index: u64,
) -> Option<ClientError> {
    let body = LogBody::Command {
        session: SessionId(1),
        sequence: Sequence(sequence),
        acked: Sequence(sequence - 1),
        payload: codec::encode(&TestCommand::Add(1)),
    };
    match apply(replica, index, body) {
        Outcome::Command {
            result: Err(error), ..
        } => Some(error),
        _ => None,
    }
}
