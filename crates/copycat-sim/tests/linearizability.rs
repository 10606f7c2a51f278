//! Known linearizable and non-linearizable histories for the register model.
//!
//! Reference: Herlihy & Wing, "Linearizability: A Correctness Condition for
//! Concurrent Objects" (1990), for the definition; Jepsen/Knossos for the
//! meaning of `fail` and `info` completions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use copycat_sim::history::{Function, History, Key, OperationId, ProcessId};
use copycat_sim::linearizability::{
    check, BudgetExhausted, CheckConfig, CheckError, CheckReport, Register, Verdict, Violation,
};
use serde_json::{json, Value};

/// Writes histories tersely: one call per event, time advancing by 10 each.
#[derive(Default)]
struct Script {
    history: History,
    time: u64,
    pending: HashMap<u64, OperationId>,
}

impl Script {
    fn tick(&mut self) -> u64 {
        self.time += 10;
        self.time
    }

    fn invoke(&mut self, process: u64, f: &str, key: &str, value: Value) -> OperationId {
        let time = self.tick();
        let id = self.history.invoke(ProcessId(process), f, key, value, time);
        self.pending.insert(process, id);
        id
    }

    fn ok(&mut self, process: u64, value: Value) {
        let time = self.tick();
        let id = self.pending.remove(&process).expect("pending");
        self.history.ok(id, value, time);
    }

    fn fail(&mut self, process: u64) {
        let time = self.tick();
        let id = self.pending.remove(&process).expect("pending");
        self.history.fail(id, time);
    }

    fn info(&mut self, process: u64) {
        let time = self.tick();
        let id = self.pending.remove(&process).expect("pending");
        self.history.info(id, time);
    }

    /// A whole operation with no overlap: invoke then ok at once.
    fn call(
        &mut self,
        process: u64,
        f: &str,
        key: &str,
        input: Value,
        output: Value,
    ) -> OperationId {
        let id = self.invoke(process, f, key, input);
        self.ok(process, output);
        id
    }

    fn check(&self) -> CheckReport {
        check(&Register::new(), &self.history, &CheckConfig::default()).expect("valid history")
    }
}

fn violation(report: CheckReport) -> Violation {
    match report.verdict {
        Verdict::NotLinearizable(violation) => *violation,
        other => panic!("expected a violation, got {other:?}"),
    }
}

fn ids(operations: &[copycat_sim::history::Operation]) -> Vec<OperationId> {
    operations.iter().map(|operation| operation.id).collect()
}

#[test]
fn empty_history_is_linearizable() {
    let report = Script::default().check();
    assert_eq!(report.verdict, Verdict::Linearizable);
    assert_eq!(report.keys, 0);
}

#[test]
fn sequential_register_is_linearizable() {
    let mut script = Script::default();
    script.call(1, "read", "x", json!(null), json!(null));
    script.call(1, "write", "x", json!(1), json!(1));
    script.call(2, "read", "x", json!(null), json!(1));
    script.call(2, "cas", "x", json!([1, 2]), json!([1, 2]));
    script.call(1, "read", "x", json!(null), json!(2));
    assert_eq!(script.check().verdict, Verdict::Linearizable);
}

#[test]
fn stale_read_after_completed_write_is_not_linearizable() {
    let mut script = Script::default();
    let write = script.call(1, "write", "x", json!(1), json!(1));
    let read = script.call(2, "read", "x", json!(null), json!(null));
    let violation = violation(script.check());
    assert_eq!(violation.key, Key::from("x"));
    assert_eq!(ids(&violation.core), [write, read]);
    assert!(violation.possible_effects.is_empty());
    assert!(violation.minimal);
    assert_eq!(violation.longest_linearization, [write]);
}

#[test]
fn read_concurrent_with_write_may_see_either_value() {
    for observed in [json!(null), json!(1)] {
        let mut script = Script::default();
        script.invoke(1, "write", "x", json!(1));
        script.invoke(2, "read", "x", json!(null));
        script.ok(2, observed);
        script.ok(1, json!(1));
        assert_eq!(script.check().verdict, Verdict::Linearizable);
    }
}

#[test]
fn read_of_a_value_never_written_is_not_linearizable() {
    let mut script = Script::default();
    script.call(1, "write", "x", json!(1), json!(1));
    let read = script.call(2, "read", "x", json!(null), json!(7));
    let violation = violation(script.check());
    assert_eq!(ids(&violation.core), [read]);
}

/// Two long concurrent writes of 1 and 2; readers observe them meanwhile.
fn concurrent_writes(reader_1: [Value; 2], reader_2: [Value; 2]) -> Script {
    let mut script = Script::default();
    script.invoke(1, "write", "x", json!(1));
    script.invoke(2, "write", "x", json!(2));
    script.invoke(3, "read", "x", json!(null));
    script.invoke(4, "read", "x", json!(null));
    script.ok(3, reader_1[0].clone());
    script.ok(4, reader_2[0].clone());
    script.invoke(3, "read", "x", json!(null));
    script.invoke(4, "read", "x", json!(null));
    script.ok(3, reader_1[1].clone());
    script.ok(4, reader_2[1].clone());
    script.ok(1, json!(1));
    script.ok(2, json!(2));
    script
}

#[test]
fn concurrent_writes_observed_in_one_order_are_linearizable() {
    let script = concurrent_writes([json!(1), json!(2)], [json!(1), json!(2)]);
    assert_eq!(script.check().verdict, Verdict::Linearizable);
    let script = concurrent_writes([json!(null), json!(2)], [json!(1), json!(2)]);
    assert_eq!(script.check().verdict, Verdict::Linearizable);
}

#[test]
fn concurrent_writes_observed_in_both_orders_are_not_linearizable() {
    // Reader 3 sees 1 then 2, so write 1 came first; reader 4 sees 2 then 1,
    // so write 2 came first. Each write happens once.
    let script = concurrent_writes([json!(1), json!(2)], [json!(2), json!(1)]);
    let violation = violation(script.check());
    // All four reads are needed; the writes are possible effects.
    assert_eq!(violation.core.len(), 4);
    assert!(violation
        .core
        .iter()
        .all(|operation| operation.f == Function::Read));
    assert_eq!(violation.possible_effects.len(), 2);
}

#[test]
fn final_value_after_concurrent_writes_must_be_stable() {
    let mut script = Script::default();
    script.invoke(1, "write", "x", json!(1));
    script.invoke(2, "write", "x", json!(2));
    script.ok(1, json!(1));
    script.ok(2, json!(2));
    script.call(3, "read", "x", json!(null), json!(1));
    script.call(3, "read", "x", json!(null), json!(1));
    assert_eq!(script.check().verdict, Verdict::Linearizable);
    script.call(4, "read", "x", json!(null), json!(2));
    assert!(script.check().verdict.is_not_linearizable());
}

#[test]
fn conflicting_cas_successes_are_not_linearizable() {
    let mut script = Script::default();
    let write = script.call(1, "write", "x", json!(0), json!(0));
    let cas_1 = script.invoke(2, "cas", "x", json!([0, 1]));
    let cas_2 = script.invoke(3, "cas", "x", json!([0, 2]));
    script.ok(2, json!([0, 1]));
    script.ok(3, json!([0, 2]));
    let violation = violation(script.check());
    // The initial write need not be ok for the contradiction: applied once,
    // it still lets only one cas succeed. It remains a possible effect.
    assert_eq!(ids(&violation.core), [cas_1, cas_2]);
    assert_eq!(ids(&violation.possible_effects), [write]);
    assert!(violation.minimal);
}

#[test]
fn chained_cas_successes_are_linearizable() {
    let mut script = Script::default();
    script.call(1, "write", "x", json!(0), json!(0));
    script.invoke(2, "cas", "x", json!([1, 2]));
    script.invoke(3, "cas", "x", json!([0, 1]));
    script.ok(2, json!([1, 2]));
    script.ok(3, json!([0, 1]));
    script.call(1, "read", "x", json!(null), json!(2));
    assert_eq!(script.check().verdict, Verdict::Linearizable);
}

#[test]
fn failed_cas_is_dropped() {
    let mut script = Script::default();
    script.call(1, "write", "x", json!(0), json!(0));
    script.invoke(2, "cas", "x", json!([0, 1]));
    script.invoke(3, "cas", "x", json!([0, 2]));
    script.ok(2, json!([0, 1]));
    script.fail(3);
    script.call(1, "read", "x", json!(null), json!(1));
    assert_eq!(script.check().verdict, Verdict::Linearizable);
}

#[test]
fn failed_write_must_not_be_applied() {
    let mut script = Script::default();
    script.invoke(1, "write", "x", json!(1));
    script.fail(1);
    script.call(2, "read", "x", json!(null), json!(null));
    assert_eq!(script.check().verdict, Verdict::Linearizable);

    let read = script.call(2, "read", "x", json!(null), json!(1));
    let violation = violation(script.check());
    assert_eq!(ids(&violation.core), [read]);
    assert!(
        violation.possible_effects.is_empty(),
        "a failed write has no effect"
    );
}

#[test]
fn info_write_observed_later_is_linearizable() {
    let mut script = Script::default();
    let write = script.invoke(1, "write", "x", json!(1));
    script.info(1);
    script.call(2, "read", "x", json!(null), json!(null));
    script.call(2, "read", "x", json!(null), json!(null));
    // Long after the timeout, the write takes effect.
    script.call(2, "read", "x", json!(null), json!(1));
    assert_eq!(script.check().verdict, Verdict::Linearizable);

    // But once observed it cannot be undone.
    script.call(3, "read", "x", json!(null), json!(null));
    let violation = violation(script.check());
    assert_eq!(violation.core.len(), 2);
    assert_eq!(ids(&violation.possible_effects), [write]);
}

#[test]
fn info_write_never_observed_is_linearizable() {
    let mut script = Script::default();
    script.call(1, "write", "x", json!(0), json!(0));
    script.invoke(1, "write", "x", json!(1));
    script.info(1);
    for _ in 0..3 {
        script.call(2, "read", "x", json!(null), json!(0));
    }
    assert_eq!(script.check().verdict, Verdict::Linearizable);
}

#[test]
fn pending_write_may_take_effect_or_not() {
    let mut script = Script::default();
    script.invoke(1, "write", "x", json!(1));
    script.call(2, "read", "x", json!(null), json!(null));
    script.call(2, "read", "x", json!(null), json!(1));
    // Process 1 never hears back.
    assert_eq!(script.check().verdict, Verdict::Linearizable);
}

#[test]
fn info_cas_takes_effect_only_if_it_could_succeed() {
    let mut script = Script::default();
    script.call(1, "write", "x", json!(0), json!(0));
    script.invoke(2, "cas", "x", json!([5, 1]));
    script.info(2);
    script.call(1, "read", "x", json!(null), json!(1));
    assert!(script.check().verdict.is_not_linearizable());
}

#[test]
fn only_the_broken_key_is_reported() {
    let mut script = Script::default();
    script.call(1, "write", "a", json!(1), json!(1));
    script.call(2, "read", "a", json!(null), json!(1));
    let write = script.call(1, "write", "b", json!(1), json!(1));
    script.invoke(3, "write", "c", json!(3));
    script.call(1, "read", "c", json!(null), json!(3));
    let read = script.call(2, "read", "b", json!(null), json!(null));
    script.call(2, "read", "a", json!(null), json!(1));
    let report = script.check();
    assert_eq!(report.keys, 3);
    let violation = violation(report);
    assert_eq!(violation.key, Key::from("b"));
    assert_eq!(violation.operation_count, 2);
    assert_eq!(ids(&violation.core), [write, read]);
    let text = violation.to_string();
    assert!(text.contains("key \"b\" is not linearizable"), "{text}");
}

#[test]
fn keys_are_independent_objects() {
    // Without partitioning, a register shared by both keys would reject this.
    let mut script = Script::default();
    script.call(1, "write", "a", json!(1), json!(1));
    script.call(1, "write", "b", json!(2), json!(2));
    script.call(2, "read", "a", json!(null), json!(1));
    assert_eq!(script.check().verdict, Verdict::Linearizable);
}

#[test]
fn register_with_initial_value() {
    let mut script = Script::default();
    script.call(1, "read", "x", json!(null), json!(0));
    let register = Register::with_initial(json!(0));
    let report = check(&register, &script.history, &CheckConfig::default()).unwrap();
    assert_eq!(report.verdict, Verdict::Linearizable);
    assert!(script.check().verdict.is_not_linearizable());
}

#[test]
fn unsupported_operations_are_errors_not_violations() {
    let mut script = Script::default();
    let cas = script.call(1, "cas", "x", json!(1), json!(1));
    let error = check(&Register::new(), &script.history, &CheckConfig::default()).unwrap_err();
    assert!(
        matches!(error, CheckError::UnsupportedOperation { operation, .. } if operation == cas)
    );

    let mut script = Script::default();
    script.call(1, "add", "x", json!(1), json!(1));
    let error = check(&Register::new(), &script.history, &CheckConfig::default()).unwrap_err();
    assert!(error.to_string().contains("\"add\""), "{error}");
}

#[test]
fn config_is_validated() {
    let config = CheckConfig {
        steps_max: 0,
        ..CheckConfig::default()
    };
    let error = check(&Register::new(), &History::new(), &config).unwrap_err();
    assert!(matches!(error, CheckError::InvalidConfig(_)));
}

/// Many overlapping writes of distinct values, then a read of a value none of
/// them wrote: the search must consider every subset and order of the writes
/// before it can say no, which is far beyond any reasonable budget.
fn pathological(writers: u64) -> History {
    let mut script = Script::default();
    for process in 0..writers {
        script.invoke(process, "write", "x", json!(process));
    }
    for process in 0..writers {
        script.ok(process, json!(process));
    }
    script.call(writers, "read", "x", json!(null), json!("never written"));
    script.history
}

#[test]
fn pathological_history_returns_unknown_within_the_step_budget() {
    let history = pathological(40);
    let config = CheckConfig {
        steps_max: 200_000,
        ..CheckConfig::default()
    };
    let started = Instant::now();
    let report = check(&Register::new(), &history, &config).unwrap();
    assert_eq!(
        report.verdict,
        Verdict::Unknown {
            reason: BudgetExhausted::Steps,
            keys: vec![Key::from("x")]
        }
    );
    assert_eq!(report.steps, 200_000);
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn pathological_history_returns_unknown_at_the_deadline() {
    let history = pathological(60);
    let config = CheckConfig {
        steps_max: u64::MAX,
        deadline: Some(Instant::now() + Duration::from_millis(200)),
        ..CheckConfig::default()
    };
    let started = Instant::now();
    let report = check(&Register::new(), &history, &config).unwrap();
    assert!(
        matches!(
            report.verdict,
            Verdict::Unknown {
                reason: BudgetExhausted::Deadline,
                ..
            }
        ),
        "{:?}",
        report.verdict
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn small_keys_are_checked_before_a_pathological_one() {
    let mut history = pathological(40);
    let time = history.last_time() + 1;
    let write = history.invoke(ProcessId(100), "write", "y", json!(1), time);
    history.ok(write, json!(1), time + 1);
    let read = history.invoke(ProcessId(100), "read", "y", json!(null), time + 2);
    history.ok(read, json!(2), time + 3);
    let config = CheckConfig {
        steps_max: 100_000,
        ..CheckConfig::default()
    };
    let report = check(&Register::new(), &history, &config).unwrap();
    assert_eq!(violation(report).key, Key::from("y"));
}

#[test]
fn minimization_budget_only_limits_the_explanation() {
    let mut script = Script::default();
    for value in 0..10 {
        script.call(1, "write", "x", json!(value), json!(value));
    }
    script.call(2, "read", "x", json!(null), json!(3));
    let config = CheckConfig {
        minimize_steps_max: 1,
        ..CheckConfig::default()
    };
    let report = check(&Register::new(), &script.history, &config).unwrap();
    let violation = violation(report);
    assert!(!violation.minimal);
    assert_eq!(violation.core.len(), 11);
}
