//! Property tests: histories produced by a real sequential register are
//! linearizable; a read of a value nobody wrote is caught; and on small random
//! histories the checker agrees with a brute-force search.

use std::collections::HashMap;

use copycat_sim::history::{EventType, Function, History, OperationId, OperationStatus, ProcessId};
use copycat_sim::linearizability::{check, CheckConfig, Model, OperationView, Register, Verdict};
use proptest::prelude::*;
use serde_json::{json, Value};

/// A value no generated operation ever writes.
const NEVER_WRITTEN: i64 = 999;

/// Where a generated operation is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Invoked; not yet applied to the real register.
    Invoked,
    /// Applied; `true` if it took effect (a cas may not).
    Applied(bool),
}

struct Client {
    operation: OperationId,
    stage: Stage,
    result: Value,
}

/// Runs a real sequential register per key under a random interleaving of
/// clients. Each choice moves one client one stage forward: invoke, apply at
/// the linearization point (or time out before it), complete. Every
/// operation's effect lies inside its interval, so the history is
/// linearizable by construction.
fn linearizable_history(processes: u64, keys: u64, choices: &[(u64, u8, u8, u8)]) -> History {
    let mut history = History::new();
    let mut registers: HashMap<u64, Value> = HashMap::new();
    let mut clients: HashMap<u64, Client> = HashMap::new();
    for (time, &(process, function, argument, fate)) in choices.iter().enumerate() {
        let time = time as u64;
        let process = process % processes;
        match clients.get_mut(&process) {
            None => {
                let key = u64::from(argument) % keys;
                let current = registers.get(&key).cloned().unwrap_or(Value::Null);
                let (f, input) = match function % 3 {
                    0 => ("read", Value::Null),
                    1 => ("write", json!(argument % 10)),
                    _ => {
                        // Half of the cas expect the current value, so that
                        // some succeed.
                        let expected = if fate % 2 == 0 {
                            current
                        } else {
                            json!(fate % 4)
                        };
                        ("cas", json!([expected, argument % 10]))
                    }
                };
                let operation = history.invoke(ProcessId(process), f, key, input, time);
                clients.insert(
                    process,
                    Client {
                        operation,
                        stage: Stage::Invoked,
                        result: Value::Null,
                    },
                );
            }
            Some(client) if client.stage == Stage::Invoked => {
                if fate % 8 == 0 {
                    // A timeout before the operation reached the register.
                    history.info(client.operation, time);
                    clients.remove(&process);
                    continue;
                }
                let operation = history.operation(client.operation);
                let key = match operation.key {
                    copycat_sim::history::Key::Integer(key) => key,
                    copycat_sim::history::Key::String(_) => unreachable!(),
                };
                let register = registers.entry(key).or_insert(Value::Null);
                let took_effect = match operation.f {
                    Function::Read => {
                        client.result = register.clone();
                        true
                    }
                    Function::Write => {
                        *register = operation.input.clone();
                        client.result = operation.input.clone();
                        true
                    }
                    Function::Cas => {
                        let arguments = operation.input.as_array().unwrap();
                        client.result = operation.input.clone();
                        if *register == arguments[0] {
                            *register = arguments[1].clone();
                            true
                        } else {
                            false
                        }
                    }
                    Function::Other(_) => unreachable!(),
                };
                client.stage = Stage::Applied(took_effect);
            }
            Some(client) => {
                let Stage::Applied(took_effect) = client.stage else {
                    unreachable!()
                };
                if !took_effect {
                    history.fail(client.operation, time);
                } else if fate % 6 == 0 {
                    // Applied, but the reply was lost.
                    history.info(client.operation, time);
                } else {
                    history.ok(client.operation, client.result.clone(), time);
                }
                clients.remove(&process);
            }
        }
    }
    history
}

/// The same history with one `ok` read's result replaced.
fn with_read_result(history: &History, read: OperationId, value: Value) -> History {
    let index = history
        .operation(read)
        .complete_index
        .expect("an ok read has a completion");
    let mut events = history.events().to_vec();
    assert_eq!(events[index].event_type, EventType::Ok);
    events[index].value = value;
    History::from_events(events).unwrap()
}

fn choices(len_max: usize) -> impl Strategy<Value = Vec<(u64, u8, u8, u8)>> {
    prop::collection::vec(
        (0..u64::MAX, any::<u8>(), any::<u8>(), any::<u8>()),
        0..len_max,
    )
}

/// A deliberately simple and slow checker: tries every order of every subset
/// of operations that respects real time, with no memoization.
fn brute_force_linearizable<M: Model>(model: &M, history: &History) -> bool {
    let operations: Vec<_> = history
        .operations()
        .iter()
        .filter(|operation| operation.status != OperationStatus::Fail)
        .collect();
    let mut done = vec![false; operations.len()];
    fn explore<M: Model>(
        model: &M,
        operations: &[&copycat_sim::history::Operation],
        done: &mut [bool],
        state: &M::State,
    ) -> bool {
        let ok_left = (0..operations.len())
            .any(|index| !done[index] && operations[index].status == OperationStatus::Ok);
        if !ok_left {
            return true;
        }
        for candidate in 0..operations.len() {
            if done[candidate] {
                continue;
            }
            // Real time: an ok operation that returned before this one was
            // invoked must come first.
            let blocked = (0..operations.len()).any(|other| {
                !done[other]
                    && operations[other].status == OperationStatus::Ok
                    && operations[other].complete_index.unwrap()
                        < operations[candidate].invoke_index
            });
            if blocked {
                continue;
            }
            let operation = operations[candidate];
            let view = OperationView {
                f: &operation.f,
                input: &operation.input,
                output: operation.output.as_ref(),
            };
            if let Some(next) = model.step(state, &view) {
                done[candidate] = true;
                let found = explore(model, operations, done, &next);
                done[candidate] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }
    explore(model, &operations, &mut done, &model.init())
}

/// Random histories of a few operations on one key, with results drawn at
/// random, so that some are linearizable and some are not.
fn random_history(choices: &[(u64, u8, u8, u8)]) -> History {
    let mut history = History::new();
    let mut pending: HashMap<u64, OperationId> = HashMap::new();
    let small = |byte: u8| match byte % 3 {
        0 => Value::Null,
        n => json!(n),
    };
    for (time, &(process, function, argument, fate)) in choices.iter().enumerate() {
        let time = time as u64;
        let process = process % 3;
        match pending.remove(&process) {
            None => {
                let (f, input) = match function % 3 {
                    0 => ("read", Value::Null),
                    1 => ("write", small(argument)),
                    _ => ("cas", json!([small(argument), small(fate)])),
                };
                let id = history.invoke(ProcessId(process), f, "k", input, time);
                pending.insert(process, id);
            }
            Some(id) => {
                let operation = history.operation(id);
                let result = match operation.f {
                    Function::Read => small(argument),
                    _ => operation.input.clone(),
                };
                match fate % 6 {
                    0 => history.info(id, time),
                    1 => history.fail(id, time),
                    _ => history.ok(id, result, time),
                }
            }
        }
    }
    history
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn real_register_histories_are_linearizable(
        processes in 1u64..6,
        keys in 1u64..4,
        choices in choices(120),
    ) {
        let history = linearizable_history(processes, keys, &choices);
        let report = check(&Register::new(), &history, &CheckConfig::default()).unwrap();
        prop_assert_eq!(&report.verdict, &Verdict::Linearizable, "{}", history.to_json_lines());
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught(
        processes in 1u64..6,
        keys in 1u64..4,
        choices in choices(90),
        pick in any::<prop::sample::Index>(),
    ) {
        let history = linearizable_history(processes, keys, &choices);
        let reads: Vec<OperationId> = history
            .operations()
            .iter()
            .filter(|operation| operation.f == Function::Read && operation.status == OperationStatus::Ok)
            .map(|operation| operation.id)
            .collect();
        prop_assume!(!reads.is_empty());
        let read = reads[pick.index(reads.len())];
        let mutated = with_read_result(&history, read, json!(NEVER_WRITTEN));
        // Debug builds are slow; shrinking is best effort under its budget.
        let config = CheckConfig { minimize_steps_max: 200_000, ..CheckConfig::default() };
        let report = check(&Register::new(), &mutated, &config).unwrap();
        let Verdict::NotLinearizable(violation) = report.verdict else {
            panic!("expected a violation, got {:?}\n{}", report.verdict, mutated.to_json_lines());
        };
        // Every other result came from a real register, so relaxing the bad
        // read always makes the history linearizable: it is always in the
        // core, and a minimal core is the bad read alone.
        let core: Vec<OperationId> = violation.core.iter().map(|operation| operation.id).collect();
        prop_assert!(core.contains(&read), "{}", violation);
        if violation.minimal {
            prop_assert_eq!(core, vec![read]);
        }
        prop_assert_eq!(&violation.key, &history.operation(read).key);
    }

    #[test]
    fn generated_histories_round_trip_through_json_lines(
        processes in 1u64..6,
        keys in 1u64..4,
        choices in choices(60),
    ) {
        let history = linearizable_history(processes, keys, &choices);
        let text = history.to_json_lines();
        prop_assert_eq!(History::from_json_lines(&text).unwrap(), history);
    }

    #[test]
    fn checker_agrees_with_brute_force_on_small_histories(choices in choices(16)) {
        let history = random_history(&choices);
        let expected = brute_force_linearizable(&Register::new(), &history);
        let report = check(&Register::new(), &history, &CheckConfig::default()).unwrap();
        prop_assert!(!report.verdict.is_unknown());
        prop_assert_eq!(report.verdict.is_linearizable(), expected, "{}", history.to_json_lines());
    }
}
