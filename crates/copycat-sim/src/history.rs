//! Client-observed histories of operations, in the style of Jepsen and Knossos.
//!
//! A history is a sequence of [`Event`]s. Each operation appears as an
//! `invoke` event followed, optionally, by exactly one completion from the same
//! process: `ok` (it happened), `fail` (it definitely did not happen) or `info`
//! (the outcome is unknown). An invocation with no completion at all is also of
//! unknown outcome.
//!
//! The order of events in a history is the real-time order in which the
//! simulator (or any other producer) observed them. The `time` field is
//! recorded alongside and must never decrease, but the checker relies on the
//! order of events alone, so two events with the same `time` are still ordered.
//!
//! Histories are built with [`History::invoke`] and [`History::complete`] (or
//! the [`History::ok`], [`History::fail`] and [`History::info`] shortcuts), and
//! are read and written as JSON lines, one event per line, with
//! [`History::read_json_lines`] and [`History::write_json_lines`]. The format
//! is specified in `docs/simulation.md`, section "History format".

use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Identifies a client process (a logical client thread).
///
/// Invariant: a process has at most one pending operation at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProcessId(pub u64);

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// Identifies an operation within one [`History`]: its position among the
/// history's invocations, counting from zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OperationId(pub u64);

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op{}", self.0)
    }
}

/// The `type` field of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The client sent the request.
    Invoke,
    /// The operation took effect; the value is its result.
    Ok,
    /// The operation definitely did not take effect.
    Fail,
    /// The outcome is unknown (for example a timeout): the operation may take
    /// effect at any point after its invocation, or never.
    Info,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Invoke => "invoke",
            EventType::Ok => "ok",
            EventType::Fail => "fail",
            EventType::Info => "info",
        }
    }
}

/// The `f` field of an event: which function the operation calls.
///
/// The register functions have their own variants; any other name is kept
/// verbatim in [`Function::Other`] so that future models (counter, set,
/// queue, ...) can define their own functions without changing this type.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Function {
    /// Read the current value.
    Read,
    /// Overwrite the value.
    Write,
    /// Compare-and-set: `[expected, new]`.
    Cas,
    /// Any other function, by name.
    Other(String),
}

impl Function {
    /// The name used in the JSON lines format.
    pub fn as_str(&self) -> &str {
        match self {
            Function::Read => "read",
            Function::Write => "write",
            Function::Cas => "cas",
            Function::Other(name) => name,
        }
    }
}

impl From<String> for Function {
    fn from(name: String) -> Self {
        match name.as_str() {
            "read" => Function::Read,
            "write" => Function::Write,
            "cas" => Function::Cas,
            _ => Function::Other(name),
        }
    }
}

impl From<&str> for Function {
    fn from(name: &str) -> Self {
        Function::from(name.to_owned())
    }
}

impl From<Function> for String {
    fn from(function: Function) -> Self {
        match function {
            Function::Other(name) => name,
            known => known.as_str().to_owned(),
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `key` field of an event: which object the operation acts on.
///
/// The checker splits a history by key and checks each key on its own
/// (P-compositionality), so a key names one independent object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Key {
    /// A numeric key, written as a JSON number.
    Integer(u64),
    /// A string key, written as a JSON string.
    String(String),
}

impl From<u64> for Key {
    fn from(key: u64) -> Self {
        Key::Integer(key)
    }
}

impl From<&str> for Key {
    fn from(key: &str) -> Self {
        Key::String(key.to_owned())
    }
}

impl From<String> for Key {
    fn from(key: String) -> Self {
        Key::String(key)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Integer(key) => write!(f, "{key}"),
            Key::String(key) => write!(f, "{key:?}"),
        }
    }
}

/// One line of a history: an invocation or a completion.
///
/// The field order here is the field order of the JSON lines format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// The client process that issued the operation.
    pub process: ProcessId,
    /// Invocation or which kind of completion.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The function called.
    pub f: Function,
    /// The object acted on.
    pub key: Key,
    /// For an invocation, the argument (`null` for a read). For an `ok`
    /// completion, the result (the value read for a read). For `fail` and
    /// `info`, conventionally the invocation's value; the checker ignores it.
    pub value: Value,
    /// Logical time of the event. Invariant: never decreases along a history.
    pub time: u64,
}

/// What became of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperationStatus {
    /// Completed with `ok`: it took effect between invocation and completion.
    Ok,
    /// Completed with `fail`: it did not take effect.
    Fail,
    /// Completed with `info`: unknown outcome.
    Info,
    /// Never completed: unknown outcome.
    Pending,
}

impl OperationStatus {
    /// Whether the operation may or may not have taken effect, at any point
    /// after its invocation.
    pub fn is_unknown(self) -> bool {
        matches!(self, OperationStatus::Info | OperationStatus::Pending)
    }
}

/// An invocation paired with its completion, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Position among the history's invocations.
    pub id: OperationId,
    /// The client process.
    pub process: ProcessId,
    /// The function called.
    pub f: Function,
    /// The object acted on.
    pub key: Key,
    /// The invocation's value (the argument).
    pub input: Value,
    /// The `ok` completion's value (the result). `None` unless the status is
    /// [`OperationStatus::Ok`].
    pub output: Option<Value>,
    /// What became of the operation.
    pub status: OperationStatus,
    /// Index of the invocation event in [`History::events`].
    pub invoke_index: usize,
    /// Index of the completion event, if any. Invariant: greater than
    /// `invoke_index`.
    pub complete_index: Option<usize>,
    /// Time of the invocation event.
    pub invoke_time: u64,
    /// Time of the completion event, if any.
    pub complete_time: Option<u64>,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} key={} input={}",
            self.id, self.process, self.f, self.key, self.input
        )?;
        match (&self.status, &self.output) {
            (OperationStatus::Ok, Some(output)) => write!(f, " -> ok {output}")?,
            (OperationStatus::Ok, None) => write!(f, " -> ok")?,
            (OperationStatus::Fail, _) => write!(f, " -> fail")?,
            (OperationStatus::Info, _) => write!(f, " -> info")?,
            (OperationStatus::Pending, _) => write!(f, " -> (pending)")?,
        }
        write!(f, " [t={}..", self.invoke_time)?;
        match self.complete_time {
            Some(time) => write!(f, "{time}]"),
            None => write!(f, "]"),
        }
    }
}

/// A history that is not well formed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A line is not a valid event.
    #[error("line {line}: invalid event: {source}")]
    Json {
        /// One-based line number.
        line: usize,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// Reading the input failed.
    #[error("reading history: {0}")]
    Io(#[from] std::io::Error),
    /// A completion for a process with no pending invocation.
    #[error("event {index}: {event_type} from {process} which has no pending invocation")]
    CompletionWithoutInvocation {
        /// Zero-based event index.
        index: usize,
        /// The process.
        process: ProcessId,
        /// The completion type.
        event_type: &'static str,
    },
    /// An invocation from a process that already has a pending one.
    #[error("event {index}: invocation from {process} which already has pending {pending}")]
    ProcessBusy {
        /// Zero-based event index.
        index: usize,
        /// The process.
        process: ProcessId,
        /// Its pending operation.
        pending: OperationId,
    },
    /// A completion whose `f` or `key` differs from its invocation's.
    #[error("event {index}: completion of {operation} does not match its invocation's f and key")]
    CompletionMismatch {
        /// Zero-based event index.
        index: usize,
        /// The operation being completed.
        operation: OperationId,
    },
    /// An event whose time is earlier than the previous event's.
    #[error("event {index}: time {time} is earlier than the previous event's {previous}")]
    TimeDecreased {
        /// Zero-based event index.
        index: usize,
        /// This event's time.
        time: u64,
        /// The previous event's time.
        previous: u64,
    },
}

/// A well-formed history: the events in real-time order, and the operations
/// they form.
///
/// Invariants: every completion matches the pending invocation of its process
/// (same `f` and `key`); a process has at most one pending operation; times
/// never decrease; `operations[i].id == OperationId(i)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    events: Vec<Event>,
    operations: Vec<Operation>,
    /// The pending operation of each process that has one.
    pending: HashMap<ProcessId, OperationId>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// The events, in real-time order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The operations, in invocation order (`operations()[i].id == OperationId(i)`).
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// The operation with this id.
    ///
    /// # Panics
    /// If the id does not belong to this history.
    pub fn operation(&self, id: OperationId) -> &Operation {
        &self.operations[usize::try_from(id.0).expect("operation id fits in usize")]
    }

    /// The time of the last event, or zero for an empty history.
    pub fn last_time(&self) -> u64 {
        self.events.last().map_or(0, |event| event.time)
    }

    /// Records an invocation and returns the new operation's id.
    ///
    /// # Panics
    /// If `process` already has a pending operation or `time` is earlier than
    /// the last event's: both are bugs in the caller.
    pub fn invoke(
        &mut self,
        process: ProcessId,
        f: impl Into<Function>,
        key: impl Into<Key>,
        value: Value,
        time: u64,
    ) -> OperationId {
        let event = Event {
            process,
            event_type: EventType::Invoke,
            f: f.into(),
            key: key.into(),
            value,
            time,
        };
        match self.push(event) {
            Ok(Some(id)) => id,
            Ok(None) => unreachable!("an invocation always creates an operation"),
            Err(error) => panic!("History::invoke: {error}"),
        }
    }

    /// Records the completion of a pending operation. The value matters only
    /// for `ok`: it is the operation's result (for a read, the value read).
    ///
    /// # Panics
    /// If `event_type` is `Invoke`, the operation is not pending, or `time` is
    /// earlier than the last event's.
    pub fn complete(&mut self, id: OperationId, event_type: EventType, value: Value, time: u64) {
        assert_ne!(
            event_type,
            EventType::Invoke,
            "complete() needs a completion type"
        );
        let operation = self.operation(id);
        assert_eq!(
            operation.status,
            OperationStatus::Pending,
            "{id} is already complete"
        );
        let event = Event {
            process: operation.process,
            event_type,
            f: operation.f.clone(),
            key: operation.key.clone(),
            value,
            time,
        };
        if let Err(error) = self.push(event) {
            panic!("History::complete: {error}");
        }
    }

    /// Records that the operation happened, with the given result.
    pub fn ok(&mut self, id: OperationId, value: Value, time: u64) {
        self.complete(id, EventType::Ok, value, time);
    }

    /// Records that the operation definitely did not happen.
    pub fn fail(&mut self, id: OperationId, time: u64) {
        let value = self.operation(id).input.clone();
        self.complete(id, EventType::Fail, value, time);
    }

    /// Records that the operation's outcome is unknown.
    pub fn info(&mut self, id: OperationId, time: u64) {
        let value = self.operation(id).input.clone();
        self.complete(id, EventType::Info, value, time);
    }

    /// Builds a history from events, validating that they are well formed.
    pub fn from_events(events: impl IntoIterator<Item = Event>) -> Result<Self, HistoryError> {
        let mut history = History::new();
        for event in events {
            history.push(event)?;
        }
        Ok(history)
    }

    /// Appends one event, validating it against the history so far. Returns
    /// the new operation's id for an invocation.
    pub fn push(&mut self, event: Event) -> Result<Option<OperationId>, HistoryError> {
        let index = self.events.len();
        let previous = self.last_time();
        if event.time < previous {
            return Err(HistoryError::TimeDecreased {
                index,
                time: event.time,
                previous,
            });
        }
        let created = match event.event_type {
            EventType::Invoke => {
                if let Some(&pending) = self.pending.get(&event.process) {
                    return Err(HistoryError::ProcessBusy {
                        index,
                        process: event.process,
                        pending,
                    });
                }
                let id = OperationId(self.operations.len() as u64);
                self.operations.push(Operation {
                    id,
                    process: event.process,
                    f: event.f.clone(),
                    key: event.key.clone(),
                    input: event.value.clone(),
                    output: None,
                    status: OperationStatus::Pending,
                    invoke_index: index,
                    complete_index: None,
                    invoke_time: event.time,
                    complete_time: None,
                });
                self.pending.insert(event.process, id);
                Some(id)
            }
            completion => {
                let Some(&id) = self.pending.get(&event.process) else {
                    return Err(HistoryError::CompletionWithoutInvocation {
                        index,
                        process: event.process,
                        event_type: completion.as_str(),
                    });
                };
                let position = usize::try_from(id.0).expect("operation id fits in usize");
                let operation = &mut self.operations[position];
                if operation.f != event.f || operation.key != event.key {
                    return Err(HistoryError::CompletionMismatch {
                        index,
                        operation: id,
                    });
                }
                operation.status = match completion {
                    EventType::Ok => OperationStatus::Ok,
                    EventType::Fail => OperationStatus::Fail,
                    EventType::Info => OperationStatus::Info,
                    EventType::Invoke => unreachable!("handled above"),
                };
                if completion == EventType::Ok {
                    operation.output = Some(event.value.clone());
                }
                operation.complete_index = Some(index);
                operation.complete_time = Some(event.time);
                self.pending.remove(&event.process);
                None
            }
        };
        self.events.push(event);
        Ok(created)
    }

    /// Writes the history as JSON lines: one event per line, fields in the
    /// order `process, type, f, key, value, time`.
    pub fn write_json_lines<W: Write>(&self, mut writer: W) -> std::io::Result<()> {
        for event in &self.events {
            serde_json::to_writer(&mut writer, event)?;
            writer.write_all(b"\n")?;
        }
        writer.flush()
    }

    /// The history as a JSON lines string.
    pub fn to_json_lines(&self) -> String {
        let mut buffer = Vec::new();
        self.write_json_lines(&mut buffer)
            .expect("writing to a Vec cannot fail");
        String::from_utf8(buffer).expect("serde_json writes UTF-8")
    }

    /// Reads a history written as JSON lines. Blank lines are skipped.
    pub fn read_json_lines<R: BufRead>(reader: R) -> Result<Self, HistoryError> {
        let mut history = History::new();
        for (line_index, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let event: Event =
                serde_json::from_str(&line).map_err(|source| HistoryError::Json {
                    line: line_index + 1,
                    source,
                })?;
            history.push(event)?;
        }
        Ok(history)
    }

    /// Parses a history from a JSON lines string.
    pub fn from_json_lines(text: &str) -> Result<Self, HistoryError> {
        Self::read_json_lines(text.as_bytes())
    }
}
