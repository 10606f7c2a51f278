//! The replicated state machine the simulator runs: a tiny key-value store
//! with write and compare-and-set, its commands tagged with the client
//! operation that issued them so the simulator can match results.

use std::collections::BTreeMap;

use bytes::Bytes;
use copycat_primitives::Resources;
use copycat_proto::SessionId;
use copycat_replica::{StateMachine, TimerId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A command in a log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCommand {
    /// Client that issued it.
    pub client: u64,
    /// The client's operation number (unique per client).
    pub op: u64,
    /// What to do.
    pub action: KvAction,
}

/// A mutation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvAction {
    /// Set `key` to `value`.
    Write {
        /// Key.
        key: u8,
        /// New value.
        value: u64,
    },
    /// Set `key` to `new` if it holds `expected` (`None` = absent).
    Cas {
        /// Key.
        key: u8,
        /// Expected current value.
        expected: Option<u64>,
        /// New value.
        new: u64,
    },
    /// A command of the replicated primitives (locks, counters, queues):
    /// applied by the `Resources` manager the machine carries.
    Primitive(copycat_primitives::Command),
}

impl KvCommand {
    /// Encode for a log entry.
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("encodable"))
    }

    /// Decode from a log entry.
    pub fn decode(data: &[u8]) -> Option<Self> {
        postcard::from_bytes(data).ok()
    }
}

/// A query: a key's value, or a query of the replicated primitives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvQuery {
    /// The value of a key.
    Read(u8),
    /// A query of the replicated primitives (the election's leader),
    /// answered by the `Resources` manager the machine carries.
    Primitive(copycat_primitives::Query),
}

/// The state: key to value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    /// Current values.
    pub values: BTreeMap<u8, u64>,
}

impl KvState {
    /// Apply a command; returns whether it took effect (a failed CAS did not).
    /// A primitive command is not the store's and changes nothing here.
    pub fn apply(&mut self, action: &KvAction) -> bool {
        match action {
            KvAction::Primitive(_) => false,
            KvAction::Write { key, value } => {
                self.values.insert(*key, *value);
                true
            }
            KvAction::Cas { key, expected, new } => {
                if self.values.get(key).copied() == *expected {
                    self.values.insert(*key, *new);
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Snapshot image.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("encodable")
    }

    /// Restore from an image.
    pub fn decode(data: &[u8]) -> Option<Self> {
        if data.is_empty() {
            return Some(Self::default());
        }
        postcard::from_bytes(data).ok()
    }
}

/// What the replicated key-value machine answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOutput {
    /// A mutation: whether it took effect (a compare-and-set may not), and
    /// the index it was applied at (so clients can check their later reads
    /// see it).
    Done(bool, u64),
    /// A read: the key's value, and the index of the state it was read
    /// from (so clients can check reads never go back in time).
    Value(Option<u64>, u64),
    /// A primitive command or query: what the resource manager answered
    /// (its errors are answers too, definite failures), and the index it
    /// applied at (for a query, the index of the state it was answered
    /// from).
    Primitive(
        Result<copycat_primitives::Output, copycat_primitives::ResourceError>,
        u64,
    ),
}

/// The key-value store as a Copycat state machine, with two checks built
/// in: every client operation is applied at most once (exactly-once through
/// session sequence numbers) and each client's operations apply in the order
/// the client issued them (per-client FIFO). Every replica applies the same
/// log, so every replica runs the checks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvMachine {
    /// The replicated primitives (the primitive workload's locks, counter
    /// and queue), in the same log.
    pub resources: Primitives,
    /// The store.
    pub state: KvState,
    /// Highest operation number applied per client.
    pub last_op: BTreeMap<u64, u64>,
    /// Operations applied twice (must stay zero).
    pub duplicates: u64,
    /// Operations applied out of the client's order (must stay zero).
    pub reordered: u64,
}

impl copycat_replica::StateMachine for KvMachine {
    type Command = KvCommand;
    type Query = KvQuery;
    type Output = KvOutput;
    type Error = String;

    fn apply(
        &mut self,
        ctx: &mut copycat_replica::ApplyContext<'_>,
        command: KvCommand,
    ) -> Result<KvOutput, String> {
        // Tell the issuing session, as an event, which operation applied:
        // clients check that events arrive once each and in order.
        if let Some(session) = ctx.session() {
            ctx.publish(
                session,
                "applied",
                Bytes::from(command.op.to_le_bytes().to_vec()),
            );
        }
        // Clients issue operations one at a time with increasing numbers,
        // so a number at or below the last applied one is either a
        // duplicate or a reordering.
        match self.last_op.get(&command.client) {
            Some(last) if command.op == *last => self.duplicates += 1,
            Some(last) if command.op < *last => self.reordered += 1,
            _ => {}
        }
        self.last_op.insert(command.client, command.op);
        if let KvAction::Primitive(primitive) = command.action {
            let result = StateMachine::apply(&mut self.resources.0, ctx, primitive);
            return Ok(KvOutput::Primitive(result, ctx.index().0));
        }
        Ok(KvOutput::Done(
            self.state.apply(&command.action),
            ctx.index().0,
        ))
    }

    fn query(
        &self,
        ctx: &copycat_replica::QueryContext,
        query: KvQuery,
    ) -> Result<KvOutput, String> {
        Ok(match query {
            KvQuery::Read(key) => {
                KvOutput::Value(self.state.values.get(&key).copied(), ctx.index().0)
            }
            KvQuery::Primitive(query) => KvOutput::Primitive(
                StateMachine::query(&self.resources.0, ctx, query),
                ctx.index().0,
            ),
        })
    }

    fn on_timer(&mut self, ctx: &mut copycat_replica::ApplyContext<'_>, timer: TimerId) {
        self.resources.0.on_timer(ctx, timer);
    }

    fn session_opened(&mut self, ctx: &mut copycat_replica::ApplyContext<'_>, session: SessionId) {
        self.resources.0.session_opened(ctx, session);
    }

    fn session_expired(&mut self, ctx: &mut copycat_replica::ApplyContext<'_>, session: SessionId) {
        self.resources.0.session_expired(ctx, session);
    }

    fn session_closed(&mut self, ctx: &mut copycat_replica::ApplyContext<'_>, session: SessionId) {
        self.resources.0.session_closed(ctx, session);
    }

    fn snapshot(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("encodable"))
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), copycat_replica::RestoreError> {
        *self =
            postcard::from_bytes(data).map_err(|e| copycat_replica::RestoreError(e.to_string()))?;
        Ok(())
    }

    /// The simulator decodes received snapshots ahead of time, as a server
    /// with a large state would (see `Simulation::complete_restore`).
    fn prepare_restore(
        data: &[u8],
    ) -> Option<Result<copycat_replica::PreparedRestore, copycat_replica::RestoreError>> {
        Some(
            postcard::from_bytes::<KvMachine>(data)
                .map(|machine| Box::new(machine) as copycat_replica::PreparedRestore)
                .map_err(|e| copycat_replica::RestoreError(e.to_string())),
        )
    }

    fn install_prepared(
        &mut self,
        prepared: copycat_replica::PreparedRestore,
    ) -> Result<(), copycat_replica::RestoreError> {
        *self = copycat_replica::prepared_as::<KvMachine>(prepared)?;
        Ok(())
    }
}

/// The resource manager inside [`KvMachine`], encoded in the machine's
/// snapshot as its own image (nothing while no resource exists, so runs of
/// the key-value workload keep their snapshots).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Primitives(pub Resources);

impl Serialize for Primitives {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let image = (!self.0.is_empty()).then(|| self.0.snapshot().to_vec());
        image.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Primitives {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut resources = Resources::default();
        if let Some(image) = Option::<Vec<u8>>::deserialize(deserializer)? {
            resources
                .restore(&image)
                .map_err(|e| serde::de::Error::custom(e.0))?;
        }
        Ok(Self(resources))
    }
}
