//! The state machine the `copycat` command serves: a counter and a small
//! key-value map. [`Kv`] describes its types to the client.

use std::collections::BTreeMap;

use bytes::Bytes;
use copycat_replica::{codec, ApplyContext, QueryContext, RestoreError, StateMachine};
use serde::{Deserialize, Serialize};

/// Commands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Add to the counter; answers the new value.
    Add(i64),
    /// Set a key; answers the previous value's length or -1 if it was unset.
    Put(String, String),
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
}

/// A counter and a key-value map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCounter {
    /// The counter.
    pub value: i64,
    /// The map.
    pub map: BTreeMap<String, String>,
}

impl StateMachine for KvCounter {
    type Command = Command;
    type Query = Query;
    type Output = Output;
    type Error = String;

    fn apply(&mut self, _ctx: &mut ApplyContext<'_>, command: Command) -> Result<Output, String> {
        match command {
            Command::Add(n) => {
                self.value = self
                    .value
                    .checked_add(n)
                    .ok_or_else(|| "counter overflow".to_string())?;
                Ok(Output::Value(self.value))
            }
            Command::Put(key, value) => Ok(Output::Text(self.map.insert(key, value))),
        }
    }

    fn query(&self, _ctx: &QueryContext, query: Query) -> Result<Output, String> {
        match query {
            Query::Get => Ok(Output::Value(self.value)),
            Query::GetKey(key) => Ok(Output::Text(self.map.get(&key).cloned())),
        }
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
