//! The state machine the `copycat` command serves: a counter and a small
//! key-value map with delete, compare-and-set and watches. [`Kv`]
//! describes its types to the client.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use copycat_proto::SessionId;
use copycat_replica::{codec, ApplyContext, QueryContext, RestoreError, StateMachine};
use serde::{Deserialize, Serialize};

/// The name of the events a watch receives.
pub const WATCH_EVENT: &str = "kv";

/// Commands. (New variants go at the end: the log keeps the old ones.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Add to the counter; answers the new value.
    Add(i64),
    /// Set a key; answers the previous value (`Text(None)`: it was unset).
    Put(String, String),
    /// Remove a key; answers the value it had (`Text(None)`: it was unset).
    Delete(String),
    /// Set `key` to `new` if its value is `expected` (`None`: if it is
    /// unset); answers the previous value. Otherwise the command fails
    /// with an error that says what the value is.
    Cas {
        /// The key.
        key: String,
        /// The value it must have, or `None` for "must be unset".
        expected: Option<String>,
        /// The value to set.
        new: String,
    },
    /// Send this session a [`WatchEvent`] for every later change of `key`
    /// (`None`: of every key), until the session closes. Answers `Done`.
    Watch(Option<String>),
}

/// Queries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// The counter.
    Get,
    /// A key's value.
    GetKey(String),
}

/// What commands and queries answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    /// A counter value.
    Value(i64),
    /// A key's value, if set.
    Text(Option<String>),
    /// Done (a watch is registered).
    Done,
}

/// A change seen by a watch, published as the event [`WATCH_EVENT`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The key that changed.
    pub key: String,
    /// Its new value; `None` when it was deleted.
    pub value: Option<String>,
    /// The log index of the change.
    pub index: u64,
}

/// A counter, a key-value map, and the sessions watching it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCounter {
    /// The counter.
    pub value: i64,
    /// The map.
    pub map: BTreeMap<String, String>,
    /// For each watching session (by id): the keys it watches (`None`:
    /// every key).
    pub watches: BTreeMap<u64, BTreeSet<Option<String>>>,
}

impl KvCounter {
    /// Tell every session watching `key` that it changed.
    fn notify(&self, ctx: &mut ApplyContext<'_>, key: &str, value: Option<&str>) {
        let event = WatchEvent {
            key: key.to_string(),
            value: value.map(str::to_string),
            index: ctx.index().0,
        };
        for (session, keys) in &self.watches {
            if keys.contains(&None) || keys.contains(&Some(key.to_string())) {
                ctx.publish_value(SessionId(*session), WATCH_EVENT, &event);
            }
        }
    }
}

/// The text of a failed compare-and-set.
fn cas_failure(key: &str, expected: Option<&str>, found: Option<&str>) -> String {
    let want = match expected {
        Some(v) => format!("{v:?}"),
        None => "unset".to_string(),
    };
    let have = match found {
        Some(v) => format!("{v:?}"),
        None => "unset".to_string(),
    };
    format!("compare-and-set failed: {key:?} is {have}, not {want}")
}

impl StateMachine for KvCounter {
    type Command = Command;
    type Query = Query;
    type Output = Output;
    type Error = String;

    fn apply(&mut self, ctx: &mut ApplyContext<'_>, command: Command) -> Result<Output, String> {
        match command {
            Command::Add(n) => {
                self.value = self
                    .value
                    .checked_add(n)
                    .ok_or_else(|| "counter overflow".to_string())?;
                Ok(Output::Value(self.value))
            }
            Command::Put(key, value) => {
                self.notify(ctx, &key, Some(&value));
                Ok(Output::Text(self.map.insert(key, value)))
            }
            Command::Delete(key) => {
                let previous = self.map.remove(&key);
                if previous.is_some() {
                    self.notify(ctx, &key, None);
                }
                Ok(Output::Text(previous))
            }
            Command::Cas { key, expected, new } => {
                let current = self.map.get(&key);
                if current != expected.as_ref() {
                    return Err(cas_failure(
                        &key,
                        expected.as_deref(),
                        current.map(String::as_str),
                    ));
                }
                self.notify(ctx, &key, Some(&new));
                Ok(Output::Text(self.map.insert(key, new)))
            }
            Command::Watch(key) => {
                let Some(session) = ctx.session() else {
                    return Err("a watch needs a session".to_string());
                };
                self.watches.entry(session.0).or_default().insert(key);
                Ok(Output::Done)
            }
        }
    }

    fn query(&self, _ctx: &QueryContext, query: Query) -> Result<Output, String> {
        match query {
            Query::Get => Ok(Output::Value(self.value)),
            Query::GetKey(key) => Ok(Output::Text(self.map.get(&key).cloned())),
        }
    }

    fn session_closed(&mut self, _ctx: &mut ApplyContext<'_>, session: SessionId) {
        self.watches.remove(&session.0);
    }

    fn snapshot(&self) -> Bytes {
        codec::encode(self)
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        *self = codec::decode(data).map_err(|e| RestoreError(e.to_string()))?;
        Ok(())
    }
}

/// The client's view of [`KvCounter`]: `client.machine::<Kv>()`.
pub struct Kv;

impl copycat_client::Machine for Kv {
    type Command = Command;
    type Query = Query;
    type Output = Output;
    type Error = String;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_cas_says_what_the_value_is() {
        assert_eq!(
            cas_failure("k", Some("a"), Some("b")),
            r#"compare-and-set failed: "k" is "b", not "a""#
        );
        assert_eq!(
            cas_failure("k", None, Some("b")),
            r#"compare-and-set failed: "k" is "b", not unset"#
        );
        assert_eq!(
            cas_failure("k", Some("a"), None),
            r#"compare-and-set failed: "k" is unset, not "a""#
        );
    }
}
