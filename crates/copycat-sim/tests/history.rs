//! The history builder and the JSON lines format.

use copycat_sim::history::{
    Event, EventType, Function, History, HistoryError, Key, OperationId, OperationStatus, ProcessId,
};
use serde_json::json;

/// Every kind of event: ok, fail, info, pending; string and integer keys; a
/// function the register does not know.
fn sample() -> History {
    let mut history = History::new();
    let write = history.invoke(ProcessId(1), "write", "x", json!(1), 10);
    let read = history.invoke(ProcessId(2), "read", 7, json!(null), 10);
    history.ok(write, json!(1), 20);
    history.ok(read, json!(null), 25);
    let cas = history.invoke(ProcessId(1), "cas", "x", json!([1, {"a": [2.5, "s"]}]), 30);
    history.fail(cas, 40);
    let timeout = history.invoke(ProcessId(3), "write", "x", json!("two"), 50);
    history.info(timeout, 60);
    let pending = history.invoke(ProcessId(9), "add", "counter", json!(3), 100);
    assert_eq!(pending, OperationId(4));
    history
}

#[test]
fn json_lines_have_exactly_the_documented_fields_in_order() {
    let text = sample().to_json_lines();
    let expected = r#"{"process":1,"type":"invoke","f":"write","key":"x","value":1,"time":10}
{"process":2,"type":"invoke","f":"read","key":7,"value":null,"time":10}
{"process":1,"type":"ok","f":"write","key":"x","value":1,"time":20}
{"process":2,"type":"ok","f":"read","key":7,"value":null,"time":25}
{"process":1,"type":"invoke","f":"cas","key":"x","value":[1,{"a":[2.5,"s"]}],"time":30}
{"process":1,"type":"fail","f":"cas","key":"x","value":[1,{"a":[2.5,"s"]}],"time":40}
{"process":3,"type":"invoke","f":"write","key":"x","value":"two","time":50}
{"process":3,"type":"info","f":"write","key":"x","value":"two","time":60}
{"process":9,"type":"invoke","f":"add","key":"counter","value":3,"time":100}
"#;
    assert_eq!(text, expected);
}

#[test]
fn json_lines_round_trip() {
    let history = sample();
    let text = history.to_json_lines();
    let read = History::from_json_lines(&text).unwrap();
    assert_eq!(read, history);
    assert_eq!(read.to_json_lines(), text);

    let mut buffer = Vec::new();
    history.write_json_lines(&mut buffer).unwrap();
    let read = History::read_json_lines(std::io::Cursor::new(buffer)).unwrap();
    assert_eq!(read, history);
}

#[test]
fn operations_pair_invocations_with_completions() {
    let history = sample();
    let operations = history.operations();
    assert_eq!(operations.len(), 5);
    let statuses: Vec<_> = operations
        .iter()
        .map(|operation| operation.status)
        .collect();
    assert_eq!(
        statuses,
        [
            OperationStatus::Ok,
            OperationStatus::Ok,
            OperationStatus::Fail,
            OperationStatus::Info,
            OperationStatus::Pending
        ]
    );
    let read = history.operation(OperationId(1));
    assert_eq!(read.key, Key::Integer(7));
    assert_eq!(read.f, Function::Read);
    assert_eq!(read.output, Some(json!(null)));
    assert_eq!((read.invoke_index, read.complete_index), (1, Some(3)));
    assert_eq!((read.invoke_time, read.complete_time), (10, Some(25)));
    let add = history.operation(OperationId(4));
    assert_eq!(add.f, Function::Other("add".to_owned()));
    assert_eq!(add.output, None);
    assert!(add.status.is_unknown());
    assert_eq!(
        history.operation(OperationId(3)).output,
        None,
        "info has no result"
    );
}

#[test]
fn blank_lines_are_skipped() {
    let text = "\n{\"process\":1,\"type\":\"invoke\",\"f\":\"read\",\"key\":\"x\",\"value\":null,\"time\":0}\n\n";
    assert_eq!(History::from_json_lines(text).unwrap().events().len(), 1);
}

fn parse_error(text: &str) -> HistoryError {
    History::from_json_lines(text).unwrap_err()
}

#[test]
fn malformed_lines_are_rejected_with_their_line_number() {
    let good = r#"{"process":1,"type":"invoke","f":"read","key":"x","value":null,"time":0}"#;
    let extra_field =
        r#"{"process":1,"type":"ok","f":"read","key":"x","value":null,"time":1,"index":3}"#;
    let missing_time = r#"{"process":1,"type":"ok","f":"read","key":"x","value":null}"#;
    let bad_type = r#"{"process":1,"type":"done","f":"read","key":"x","value":null,"time":1}"#;
    let negative_key = r#"{"process":1,"type":"ok","f":"read","key":-1,"value":null,"time":1}"#;
    for bad in [
        extra_field,
        missing_time,
        bad_type,
        negative_key,
        "not json",
    ] {
        let error = parse_error(&format!("{good}\n{bad}\n"));
        assert!(
            matches!(error, HistoryError::Json { line: 2, .. }),
            "{bad}: {error}"
        );
    }
}

fn event(process: u64, event_type: EventType, f: &str, key: &str, time: u64) -> Event {
    Event {
        process: ProcessId(process),
        event_type,
        f: Function::from(f),
        key: Key::from(key),
        value: json!(null),
        time,
    }
}

#[test]
fn ill_formed_histories_are_rejected() {
    let invoke = event(1, EventType::Invoke, "read", "x", 5);
    let cases = [
        vec![event(1, EventType::Ok, "read", "x", 5)],
        vec![invoke.clone(), event(1, EventType::Invoke, "read", "x", 6)],
        vec![invoke.clone(), event(1, EventType::Ok, "write", "x", 6)],
        vec![invoke.clone(), event(1, EventType::Ok, "read", "y", 6)],
        vec![invoke.clone(), event(1, EventType::Ok, "read", "x", 4)],
    ];
    let errors: Vec<HistoryError> = cases
        .into_iter()
        .map(|events| History::from_events(events).unwrap_err())
        .collect();
    assert!(matches!(
        errors[0],
        HistoryError::CompletionWithoutInvocation { index: 0, .. }
    ));
    assert!(matches!(
        errors[1],
        HistoryError::ProcessBusy { index: 1, .. }
    ));
    assert!(matches!(
        errors[2],
        HistoryError::CompletionMismatch { index: 1, .. }
    ));
    assert!(matches!(
        errors[3],
        HistoryError::CompletionMismatch { index: 1, .. }
    ));
    assert!(matches!(
        errors[4],
        HistoryError::TimeDecreased {
            index: 1,
            time: 4,
            previous: 5
        }
    ));
}

#[test]
fn a_process_is_free_again_after_info() {
    let events = [
        event(1, EventType::Invoke, "write", "x", 0),
        event(1, EventType::Info, "write", "x", 1),
        event(1, EventType::Invoke, "read", "x", 2),
    ];
    let history = History::from_events(events).unwrap();
    assert_eq!(history.operations().len(), 2);
}

#[test]
#[should_panic(expected = "already complete")]
fn completing_twice_is_a_bug() {
    let mut history = History::new();
    let id = history.invoke(ProcessId(1), "read", "x", json!(null), 0);
    history.ok(id, json!(null), 1);
    history.ok(id, json!(null), 2);
}

#[test]
#[should_panic(expected = "already has pending")]
fn invoking_from_a_busy_process_is_a_bug() {
    let mut history = History::new();
    history.invoke(ProcessId(1), "read", "x", json!(null), 0);
    history.invoke(ProcessId(1), "read", "x", json!(null), 1);
}

/// The example in `docs/simulation.md`, section "History format", must parse,
/// round-trip byte for byte, and be linearizable as the text says.
#[test]
fn documented_example_is_valid_and_linearizable() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/simulation.md");
    let document = std::fs::read_to_string(path).unwrap();
    let section = &document[document.find("## History format").unwrap()..];
    let start = section.find("```json\n").unwrap() + "```json\n".len();
    let end = start + section[start..].find("```").unwrap();
    let example = &section[start..end];

    let history = History::from_json_lines(example).unwrap();
    assert_eq!(history.operations().len(), 6);
    assert_eq!(history.to_json_lines(), example);
    let report = copycat_sim::linearizability::check(
        &copycat_sim::linearizability::Register::new(),
        &history,
        &copycat_sim::linearizability::CheckConfig::default(),
    )
    .unwrap();
    assert_eq!(
        report.verdict,
        copycat_sim::linearizability::Verdict::Linearizable
    );
    assert_eq!(report.keys, 2);
}
