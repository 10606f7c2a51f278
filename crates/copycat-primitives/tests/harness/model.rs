//! Runs random operation sequences against the real manager (through a
//! replica) and against a simple sequential model of one resource, and
//! asserts identical outputs and events, with time passing (TTLs,
//! timeouts), sessions closing and expiring, and snapshot + restore in the
//! middle.

use std::fmt::Debug;

use bytes::Bytes;
use copycat_primitives::{Command, Event, Limits, Output, Query, ResourceError, Spec};
use copycat_proto::SessionId;
use proptest::prelude::*;

use super::{group, Harness};

/// Where and when an operation applies.
#[derive(Clone, Copy, Debug)]
pub struct At {
    /// The log index of its entry.
    pub index: u64,
    /// The log's time.
    pub time: u64,
}

/// What an operation is for the manager.
pub enum Request {
    /// Through the log.
    Command(Command),
    /// A read.
    Query(Query),
}

/// Events a model emits, in order.
pub type Out = Vec<(SessionId, Event)>;

/// A sequential model of one resource named "r".
pub trait Model: Default {
    /// An operation.
    type Op: Clone + Debug;
    /// How the resource is created.
    fn spec() -> Spec;
    /// The manager request for an operation.
    fn request(op: &Self::Op) -> Request;
    /// Apply an operation of `session`; what it answers, and its events.
    fn apply(
        &mut self,
        at: At,
        session: SessionId,
        op: &Self::Op,
        out: &mut Out,
    ) -> Result<Output, ResourceError>;
    /// Time moved to `time`: expire what is due, in deadline order.
    fn advance(&mut self, time: u64, out: &mut Out);
    /// `session` closed.
    fn close(&mut self, at: At, session: SessionId, out: &mut Out);
}

/// One step of a run.
#[derive(Clone, Debug)]
pub enum Step<O> {
    /// Session slot `.0` applies an operation.
    Op(usize, O),
    /// Time passes.
    Advance(u64),
    /// Session slot closes (and is replaced by a new session).
    Close(usize),
    /// Session slot expires (and is replaced).
    Expire(usize),
    /// Snapshot and restore the replica.
    Snapshot,
}

/// Session slots in a run.
pub const SESSIONS: usize = 3;

/// The limits runs use: small, so that each is hit.
pub fn limits() -> Limits {
    Limits {
        max_name_bytes: 8,
        max_resources: 4,
        max_value_bytes: 2,
        max_entries: 4,
        max_waiters: 3,
    }
}

/// Runs of up to 60 steps, mostly operations.
pub fn steps<O: Clone + Debug + 'static>(
    op: impl Strategy<Value = O> + 'static,
) -> impl Strategy<Value = Vec<Step<O>>> {
    let step = prop_oneof![
        12 => (0..SESSIONS, op).prop_map(|(s, op)| Step::Op(s, op)),
        3 => (1..400u64).prop_map(Step::Advance),
        1 => (0..SESSIONS).prop_map(Step::Close),
        1 => (0..SESSIONS).prop_map(Step::Expire),
        1 => Just(Step::Snapshot),
    ];
    proptest::collection::vec(step, 1..60)
}

/// Small byte values, some over the 2-byte limit.
pub fn value() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        Just(Bytes::from_static(b"a")),
        Just(Bytes::from_static(b"b")),
        Just(Bytes::from_static(b"c")),
        Just(Bytes::from_static(b"dd")),
        Just(Bytes::from_static(b"eee")),
    ]
}

/// A TTL: none, invalid (0) or some ms.
pub fn ttl() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![Just(None), Just(Some(0)), (1..300u64).prop_map(Some)]
}

/// A wait: forever, not at all, or some ms.
pub fn timeout() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![Just(None), Just(Some(0)), (1..300u64).prop_map(Some)]
}

/// A fencing token the way the manager issues them.
pub fn fence(last: &mut u64, index: u64) -> u64 {
    let token = index.max(*last + 1);
    *last = token;
    token
}

/// Run `steps` against the manager and the model `M`.
pub fn run<M: Model>(steps: Vec<Step<M::Op>>) -> Result<(), TestCaseError> {
    let mut h = Harness::new(limits());
    let mut sessions: Vec<SessionId> = (0..SESSIONS).map(|_| h.register()).collect();
    let (opened, _) = h.command(
        sessions[0],
        Command::Open {
            name: "r".into(),
            spec: M::spec(),
        },
    );
    let created = matches!(opened, Ok(Output::Opened { created: true, .. }));
    prop_assert!(created, "the resource is created");
    let mut model = M::default();
    for step in steps {
        let mut expected = Out::new();
        match step {
            Step::Op(slot, op) => {
                let session = sessions[slot];
                let at = At {
                    index: h.next_index(),
                    time: h.time(),
                };
                let want = model.apply(at, session, &op, &mut expected);
                let (got, events) = match M::request(&op) {
                    Request::Command(command) => h.command(session, command),
                    Request::Query(query) => (h.query(session, query), Default::default()),
                };
                prop_assert_eq!(got, want, "output of {:?} by {:?}", op, session);
                prop_assert_eq!(events, group(expected), "events of {:?}", op);
            }
            Step::Advance(ms) => {
                model.advance(h.time() + ms, &mut expected);
                let events = h.advance(ms);
                prop_assert_eq!(events, group(expected), "events while time passed");
            }
            Step::Close(slot) => {
                let session = sessions[slot];
                let at = At {
                    index: h.next_index(),
                    time: h.time(),
                };
                model.close(at, session, &mut expected);
                let events = h.close(session);
                prop_assert_eq!(events, group(expected), "events of closing {:?}", session);
                sessions[slot] = h.register();
            }
            Step::Expire(slot) => {
                let session = sessions[slot];
                let time = h.expiry_time(session);
                model.advance(time, &mut expected);
                let at = At {
                    index: h.next_index(),
                    time,
                };
                model.close(at, session, &mut expected);
                let events = h.expire(session);
                // What timers sent the expiring session in this entry dies
                // with it.
                expected.retain(|(to, _)| *to != session);
                prop_assert_eq!(events, group(expected), "events of expiring {:?}", session);
                sessions[slot] = h.register();
            }
            Step::Snapshot => h.snapshot_restore(),
        }
    }
    Ok(())
}

/// Refuse a value over the limit, as the manager does.
pub fn check_value(value: &[u8]) -> Result<(), ResourceError> {
    let limit = limits().max_value_bytes;
    if value.len() > limit {
        return Err(ResourceError::ValueTooLarge {
            size: value.len(),
            limit,
        });
    }
    Ok(())
}

/// Refuse growing past the entry limit.
pub fn check_entries(len: usize) -> Result<(), ResourceError> {
    let limit = limits().max_entries;
    if len >= limit {
        return Err(ResourceError::TooManyEntries { limit });
    }
    Ok(())
}

/// Refuse a waiter past the limit.
pub fn check_waiters(len: usize) -> Result<(), ResourceError> {
    let limit = limits().max_waiters;
    if len >= limit {
        return Err(ResourceError::TooManyWaiters { limit });
    }
    Ok(())
}

/// Refuse a zero TTL; the expiry otherwise.
pub fn ttl_deadline(time: u64, ttl: Option<u64>) -> Result<Option<u64>, ResourceError> {
    match ttl {
        Some(0) => Err(ResourceError::InvalidArgument(
            "a TTL must be at least 1 ms".into(),
        )),
        Some(t) => Ok(Some(time + t)),
        None => Ok(None),
    }
}

/// Remove the items whose deadline is at or before `time`, the way timers
/// fire: deadline by deadline, and within one deadline in list order.
/// `after_each` runs after each deadline's items are gone.
pub fn expire_in_order<W>(
    list: &mut Vec<W>,
    deadline: impl Fn(&W) -> Option<u64>,
    time: u64,
    mut on_expired: impl FnMut(W),
    mut after_each: impl FnMut(&mut Vec<W>),
) {
    loop {
        let Some(first) = list
            .iter()
            .filter_map(&deadline)
            .filter(|d| *d <= time)
            .min()
        else {
            return;
        };
        let (gone, kept): (Vec<W>, Vec<W>) = std::mem::take(list)
            .into_iter()
            .partition(|w| deadline(w).is_some_and(|d| d <= first));
        *list = kept;
        for w in gone {
            on_expired(w);
        }
        after_each(list);
    }
}
