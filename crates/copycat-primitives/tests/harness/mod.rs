//! Drives [`Resources`] through a real [`Replica`] with hand-made committed
//! entries: sessions register, commands apply at known indexes and times,
//! timers fire as the log's clock advances, sessions close and expire, and
//! the whole replica can be snapshotted and restored into a fresh one.

#![allow(dead_code)]

use std::collections::BTreeMap;

use copycat_primitives::{
    Command, Event, Limits, Notice, Output, Query, ResourceError, Resources, EVENT_NAME,
};
use copycat_proto::{ClientId, LogBody, LogCommand, Response, Sequence, SessionId};
use copycat_replica::{codec, testing, Outcome, QueryOutcome, Replica, ReplicaConfig, Typed};

/// The session timeout the harness registers with (the replica's minimum).
pub const SESSION_TIMEOUT_MS: u64 = 100;

/// Events per receiving session, in order.
pub type Events = BTreeMap<SessionId, Vec<Event>>;

/// Group `(session, event)` pairs per session, keeping their order.
pub fn group(events: Vec<(SessionId, Event)>) -> Events {
    let mut grouped = Events::new();
    for (session, event) in events {
        grouped.entry(session).or_default().push(event);
    }
    grouped
}

/// A replica running the resource manager, fed by hand.
pub struct Harness {
    replica: Replica<Typed<Resources>>,
    config: ReplicaConfig,
    limits: Limits,
    index: u64,
    time: u64,
    next_client: u128,
    sequences: BTreeMap<SessionId, u64>,
}

impl Harness {
    /// A fresh replica at time 1000.
    pub fn new(limits: Limits) -> Self {
        let config = ReplicaConfig {
            max_retained_events_per_session: 1_000_000,
            ..ReplicaConfig::default()
        };
        let replica = Replica::new(config.clone(), Typed(Resources::with_limits(limits)))
            .expect("valid replica config");
        Self {
            replica,
            config,
            limits,
            index: 0,
            time: 1_000,
            next_client: 1,
            sequences: BTreeMap::new(),
        }
    }

    /// The index the next entry gets.
    pub fn next_index(&self) -> u64 {
        self.index + 1
    }

    /// The log's time.
    pub fn time(&self) -> u64 {
        self.time
    }

    /// The manager's state.
    pub fn machine(&self) -> &Resources {
        &self.replica.machine().0
    }

    fn entry(&mut self, time: u64, body: LogBody) -> copycat_replica::Applied {
        self.index += 1;
        self.time = self.time.max(time);
        let data = LogCommand {
            timestamp_ms: time,
            body,
        }
        .encode();
        let applied = self
            .replica
            .apply(&testing::command_entry(self.index, data));
        self.replica.invariants();
        applied
    }

    fn events(applied: &copycat_replica::Applied) -> Events {
        let mut grouped = Events::new();
        for batch in &applied.events {
            for event in &batch.events {
                assert_eq!(event.name, EVENT_NAME, "only manager events");
                let notice: Notice = codec::decode(&event.payload).expect("a notice");
                assert_eq!(notice.resource, "r", "events name their resource");
                grouped.entry(batch.session).or_default().push(notice.event);
            }
        }
        grouped
    }

    /// Register a session.
    pub fn register(&mut self) -> SessionId {
        let client = ClientId(self.next_client);
        self.next_client += 1;
        let applied = self.entry(
            self.time,
            LogBody::Register {
                client,
                timeout_ms: SESSION_TIMEOUT_MS,
            },
        );
        match applied.outcome {
            Outcome::Register {
                result: Ok(Response::Registered { session, .. }),
                ..
            } => {
                self.sequences.insert(session, 0);
                session
            }
            other => panic!("registration answered {other:?}"),
        }
    }

    /// Apply a command of `session` now.
    pub fn command(
        &mut self,
        session: SessionId,
        command: Command,
    ) -> (Result<Output, ResourceError>, Events) {
        let sequence = self.sequences.get_mut(&session).expect("an open session");
        *sequence += 1;
        let sequence = *sequence;
        let applied = self.entry(
            self.time,
            LogBody::Command {
                session,
                sequence: Sequence(sequence),
                acked: Sequence(sequence - 1),
                payload: codec::encode(&command),
            },
        );
        let events = Self::events(&applied);
        let output = match applied.outcome {
            Outcome::Command {
                result: Ok(Response::Command { output, .. }),
                ..
            } => output,
            other => panic!("command answered {other:?}"),
        };
        (decode(output), events)
    }

    /// Answer a query of `session` from the current state.
    pub fn query(&self, session: SessionId, query: Query) -> Result<Output, ResourceError> {
        let sequence = Sequence(self.sequences[&session]);
        let outcome = self.replica.query(
            session,
            sequence,
            copycat_raft::LogIndex(self.index),
            &codec::encode(&query),
        );
        match outcome {
            QueryOutcome::Done(Ok(Response::Query { output, .. })) => decode(output),
            other => panic!("query answered {other:?}"),
        }
    }

    /// Let `ms` pass (a tick entry), firing due timers.
    pub fn advance(&mut self, ms: u64) -> Events {
        let applied = self.entry(self.time + ms, LogBody::Tick);
        Self::events(&applied)
    }

    /// Close a session (unregister).
    pub fn close(&mut self, session: SessionId) -> Events {
        let applied = self.entry(self.time, LogBody::Unregister { session });
        assert_eq!(applied.closed, vec![session], "the session closed");
        self.sequences.remove(&session);
        Self::events(&applied)
    }

    /// The time an expire entry for `session` must carry to expire it.
    pub fn expiry_time(&self, session: SessionId) -> u64 {
        let (timeout, last) = self
            .replica
            .session_timing(session)
            .expect("an open session");
        self.time.max(last + timeout + 1)
    }

    /// Expire a session (its expire entry carries [`Self::expiry_time`]).
    pub fn expire(&mut self, session: SessionId) -> Events {
        let time = self.expiry_time(session);
        let applied = self.entry(time, LogBody::Expire { session });
        assert_eq!(applied.expired, vec![session], "the session expired");
        self.sequences.remove(&session);
        Self::events(&applied)
    }

    /// Snapshot the whole replica and carry on with a fresh one restored
    /// from it; the two must agree.
    pub fn snapshot_restore(&mut self) {
        let image = self.replica.snapshot();
        let mut fresh = Replica::new(
            self.config.clone(),
            Typed(Resources::with_limits(self.limits)),
        )
        .expect("valid replica config");
        fresh.restore(&image).expect("the image restores");
        assert_eq!(
            fresh.digest(),
            self.replica.digest(),
            "restored state equals"
        );
        assert_eq!(
            fresh.machine().0,
            self.replica.machine().0,
            "restored manager equals"
        );
        self.replica = fresh;
    }
}

fn decode(
    output: Result<bytes::Bytes, copycat_proto::CommandFailure>,
) -> Result<Output, ResourceError> {
    match output {
        Ok(bytes) => Ok(codec::decode(&bytes).expect("an output")),
        Err(copycat_proto::CommandFailure::Application(bytes)) => {
            Err(codec::decode(&bytes).expect("a resource error"))
        }
        Err(other) => panic!("command failed outside the machine: {other:?}"),
    }
}
#[allow(dead_code)]
pub mod model;
