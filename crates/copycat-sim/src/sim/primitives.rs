//! The primitive workload: with `SimParams::primitives` above zero, that
//! fraction of client operations go to the replicated primitives
//! (`copycat_primitives::Resources`, carried by the simulated state
//! machine) instead of the key-value store: two locks contended by every
//! client (lock with and without waiting, unlock), a counter incremented by
//! one, a queue of unique items offered and polled, a semaphore of three
//! permits (acquire one to three with and without waiting, try-acquire,
//! release, cancel), an election (campaign with and without waiting,
//! resign, cancel, listen, and queries of the leader) and a group (join as a persistent or ephemeral
//! member, leave, remove, listen, direct, random and broadcast sends with
//! and without a reply, acknowledgements of what members receive). The
//! safety of what the state machine does is checked on the committed log
//! (`invariants/primitives.rs` and `invariants/coordination.rs`); what the
//! clients hear is checked here, and the counter's final value against the
//! clients' acknowledgements at the end of the run.

use std::collections::{BTreeMap, BTreeSet};

use copycat_primitives::election::{ElectionCommand, ElectionEvent, ElectionOutput, ElectionQuery};
use copycat_primitives::group::{Delivery, GroupCommand, GroupEvent, GroupOutput};
use copycat_primitives::lock::{LockCommand, LockEvent, LockOutput};
use copycat_primitives::long::{LongCommand, LongOutput};
use copycat_primitives::queue::{QueueCommand, QueueOutput};
use copycat_primitives::semaphore::{SemaphoreCommand, SemaphoreEvent, SemaphoreOutput};
use copycat_primitives::{Command, Event, Notice, Output, Query, ResourceError, Spec, EVENT_NAME};
use copycat_proto::SessionId;
use copycat_replica::codec;
use rand::Rng;

use super::world::Simulation;

/// The resources every primitive run uses, and how they are created.
pub(super) const RESOURCES: [(&str, Spec); 7] = [
    ("lock0", Spec::Lock { reentrant: false }),
    ("lock1", Spec::Lock { reentrant: false }),
    ("counter", Spec::Long),
    ("queue", Spec::Queue),
    ("semaphore", Spec::Semaphore { permits: PERMITS }),
    ("election", Spec::Election),
    ("group", Spec::Group),
];
const COUNTER: &str = "counter";
const QUEUE: &str = "queue";
const SEMAPHORE: &str = "semaphore";
const ELECTION: &str = "election";
const GROUP: &str = "group";
/// The semaphore's permits.
const PERMITS: u64 = 3;

/// A group member id the workload uses: client `owner`'s persistent
/// (`p<owner>`) or ephemeral (`e<owner>`) member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct MemberId {
    persistent: bool,
    owner: usize,
}

impl MemberId {
    fn name(self) -> String {
        let kind = if self.persistent { 'p' } else { 'e' };
        format!("{kind}{}", self.owner)
    }
}

/// A primitive operation, for matching its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PrimitiveOp {
    Open(usize),
    Lock(usize),
    Unlock(usize),
    Increment,
    Offer,
    Poll,
    Acquire {
        req: u64,
        permits: u64,
    },
    Release(u64),
    CancelAcquire(u64),
    Campaign(u64),
    Resign,
    CancelCampaign(u64),
    ListenElection,
    Join(MemberId),
    Leave(MemberId),
    Remove,
    Send,
    Ack(u64),
    ListenGroup,
    /// A query (not a command) of the election's leader.
    LeaderQuery,
}

/// The query of the election's leader.
pub(super) fn leader_query() -> Query {
    Query::Election {
        name: ELECTION.to_string(),
        query: ElectionQuery::Leader,
    }
}

/// What the clients heard from the primitives.
#[derive(Debug, Default)]
pub(super) struct PrimitiveClients {
    /// Per client, the resources it saw opened.
    opened: BTreeSet<(usize, usize)>,
    /// Per client, the locks it was told it holds, and those it waits for
    /// (so that holders unlock and waiters do not queue twice).
    held: BTreeSet<(usize, usize)>,
    waiting: BTreeSet<(usize, usize)>,
    /// Increments submitted, answered with a value, refused by the manager.
    increments: u64,
    increments_ok: u64,
    increments_failed: u64,
    /// Values the counter answered increments with.
    counter_values: BTreeSet<i64>,
    /// Items clients received from polls.
    polled: BTreeSet<Vec<u8>>,
    /// Per client, the semaphore permits it was told it holds, and its
    /// waiting requests with the permits they ask.
    permits: BTreeMap<usize, u64>,
    acquiring: BTreeMap<(usize, u64), u64>,
    /// Clients told they lead the election, and their waiting candidacies.
    leading: BTreeSet<usize>,
    campaigning: BTreeSet<(usize, u64)>,
    /// Every election term clients heard of, with the session elected.
    terms: BTreeMap<u64, SessionId>,
    /// Clients listening to the election, and to the group.
    election_listeners: BTreeSet<usize>,
    group_listeners: BTreeSet<usize>,
    /// Group members each client joined as, and the messages delivered to
    /// them and not acknowledged yet.
    members: BTreeSet<(usize, MemberId)>,
    inbox: BTreeSet<(usize, u64)>,
}

impl Simulation {
    /// Choose the client's next primitive operation; `value` is unique per
    /// client operation (a queue item).
    pub(super) fn primitive_command(&mut self, client: usize, op: u64) -> (PrimitiveOp, Command) {
        let closed: Vec<usize> = (0..RESOURCES.len())
            .filter(|r| !self.primitive_clients.opened.contains(&(client, *r)))
            .collect();
        if !closed.is_empty() && self.rng.gen_bool(0.7) {
            let r = closed[self.rng.gen_range(0..closed.len())];
            let (name, spec) = RESOURCES[r];
            let command = Command::Open {
                name: name.to_string(),
                spec,
            };
            return (PrimitiveOp::Open(r), command);
        }
        match self.rng.gen_range(0..20) {
            0..=6 => self.lock_command(client, op),
            7..=8 => {
                self.primitive_clients.increments += 1;
                let command = LongCommand::AddAndGet(1);
                let name = COUNTER.to_string();
                (PrimitiveOp::Increment, Command::Long { name, command })
            }
            9..=10 => {
                let item = format!("c{client}o{op}").into_bytes().into();
                let command = QueueCommand::Offer(item);
                let name = QUEUE.to_string();
                (PrimitiveOp::Offer, Command::Queue { name, command })
            }
            11 => {
                let name = QUEUE.to_string();
                let command = QueueCommand::Poll;
                (PrimitiveOp::Poll, Command::Queue { name, command })
            }
            12..=14 => self.semaphore_command(client, op),
            15..=16 => self.election_command(client, op),
            _ => self.group_command(client, op),
        }
    }

    /// Now and then, instead of a command, a query of the election's
    /// leader (answered from some server's state, checked against the
    /// leader the log gives at the index it was answered from).
    pub(super) fn primitive_query(&mut self) -> Option<PrimitiveOp> {
        self.rng.gen_bool(0.05).then_some(PrimitiveOp::LeaderQuery)
    }

    /// A wait of no time (a try), a short one or none at all (forever).
    fn wait_timeout(&mut self) -> Option<u64> {
        match self.rng.gen_range(0..3) {
            0 => Some(0),
            1 => Some(self.rng.gen_range(1..=3 * self.params.election_timeout_ms)),
            _ => None,
        }
    }

    fn lock_command(&mut self, client: usize, op: u64) -> (PrimitiveOp, Command) {
        let p = &self.primitive_clients;
        let held: Vec<usize> = (0..2).filter(|l| p.held.contains(&(client, *l))).collect();
        let free: Vec<usize> = (0..2)
            .filter(|l| !p.held.contains(&(client, *l)) && !p.waiting.contains(&(client, *l)))
            .collect();
        // Holders mostly unlock; now and then anyone unlocks anything (and
        // is told it does not hold it).
        let unlock = if !held.is_empty() && self.rng.gen_bool(0.7) {
            Some(held[self.rng.gen_range(0..held.len())])
        } else if free.is_empty() || self.rng.gen_bool(0.1) {
            Some(self.rng.gen_range(0..2))
        } else {
            None
        };
        let lock = unlock.unwrap_or_else(|| free[self.rng.gen_range(0..free.len())]);
        let name = RESOURCES[lock].0.to_string();
        if unlock.is_none() {
            let timeout_ms = self.wait_timeout();
            let command = LockCommand::Lock {
                req: op,
                timeout_ms,
            };
            (PrimitiveOp::Lock(lock), Command::Lock { name, command })
        } else {
            let command = LockCommand::Unlock;
            (PrimitiveOp::Unlock(lock), Command::Lock { name, command })
        }
    }

    /// Holders mostly release some of their permits (now and then more
    /// than they hold, and are refused); waiters now and then cancel; the
    /// others acquire one to three permits (rarely an impossible four).
    fn semaphore_command(&mut self, client: usize, op: u64) -> (PrimitiveOp, Command) {
        let name = SEMAPHORE.to_string();
        let p = &self.primitive_clients;
        let held = p.permits.get(&client).copied().unwrap_or(0);
        let waiting: Vec<u64> = p
            .acquiring
            .keys()
            .filter(|(c, _)| *c == client)
            .map(|(_, req)| *req)
            .collect();
        if held > 0 && self.rng.gen_bool(0.6) {
            let permits = if self.rng.gen_bool(0.1) {
                held + 1
            } else {
                self.rng.gen_range(1..=held)
            };
            let command = SemaphoreCommand::Release { permits };
            return (
                PrimitiveOp::Release(permits),
                Command::Semaphore { name, command },
            );
        }
        if !waiting.is_empty() && self.rng.gen_bool(0.3) {
            let req = waiting[self.rng.gen_range(0..waiting.len())];
            let command = SemaphoreCommand::Cancel { req };
            return (
                PrimitiveOp::CancelAcquire(req),
                Command::Semaphore { name, command },
            );
        }
        if held == 0 && self.rng.gen_bool(0.05) {
            // Releasing nothing held: refused.
            let command = SemaphoreCommand::Release { permits: 1 };
            return (
                PrimitiveOp::Release(1),
                Command::Semaphore { name, command },
            );
        }
        let permits = if self.rng.gen_bool(0.02) {
            PERMITS + 1
        } else {
            self.rng.gen_range(1..=PERMITS)
        };
        // A waiter asks again only with a try, so waits do not pile up.
        let timeout_ms = if waiting.is_empty() {
            self.wait_timeout()
        } else {
            Some(0)
        };
        let command = SemaphoreCommand::Acquire {
            req: op,
            permits,
            timeout_ms,
        };
        (
            PrimitiveOp::Acquire { req: op, permits },
            Command::Semaphore { name, command },
        )
    }

    /// Leaders mostly resign (or campaign again); waiting candidates now
    /// and then cancel; the others campaign; everyone listens once.
    fn election_command(&mut self, client: usize, op: u64) -> (PrimitiveOp, Command) {
        let name = ELECTION.to_string();
        let p = &self.primitive_clients;
        let leading = p.leading.contains(&client);
        let waiting: Vec<u64> = p
            .campaigning
            .iter()
            .filter(|(c, _)| *c == client)
            .map(|(_, req)| *req)
            .collect();
        let (op, command) = if !p.election_listeners.contains(&client) && self.rng.gen_bool(0.3) {
            (PrimitiveOp::ListenElection, ElectionCommand::Listen)
        } else if leading && self.rng.gen_bool(0.7) {
            (PrimitiveOp::Resign, ElectionCommand::Resign)
        } else if !waiting.is_empty() && self.rng.gen_bool(0.3) {
            let req = waiting[self.rng.gen_range(0..waiting.len())];
            (
                PrimitiveOp::CancelCampaign(req),
                ElectionCommand::Cancel { req },
            )
        } else if !leading && self.rng.gen_bool(0.1) {
            // Resigning without leading: refused.
            (PrimitiveOp::Resign, ElectionCommand::Resign)
        } else {
            let timeout_ms = if waiting.is_empty() {
                self.wait_timeout()
            } else {
                Some(0)
            };
            (
                PrimitiveOp::Campaign(op),
                ElectionCommand::Campaign {
                    req: op,
                    timeout_ms,
                },
            )
        };
        (op, Command::Election { name, command })
    }

    /// Clients join as their persistent or ephemeral member (now and then
    /// as another client's persistent member, taking it over if it is
    /// dead), acknowledge what their members receive, send direct, random
    /// and broadcast messages, and now and then leave or remove a member.
    fn group_command(&mut self, client: usize, op: u64) -> (PrimitiveOp, Command) {
        let name = GROUP.to_string();
        let clients = self.clients.len();
        let p = &self.primitive_clients;
        let mine: Vec<MemberId> = p
            .members
            .iter()
            .filter(|(c, _)| *c == client)
            .map(|(_, m)| *m)
            .collect();
        let inbox: Vec<u64> = p
            .inbox
            .iter()
            .filter(|(c, _)| *c == client)
            .map(|(_, m)| *m)
            .collect();
        let any_member = |sim: &mut Self| MemberId {
            persistent: sim.rng.gen_bool(0.5),
            owner: sim.rng.gen_range(0..clients),
        };
        let (op, command) = if !p.group_listeners.contains(&client) && self.rng.gen_bool(0.2) {
            (PrimitiveOp::ListenGroup, GroupCommand::Listen)
        } else if !inbox.is_empty() && self.rng.gen_bool(0.6) {
            let message = inbox[self.rng.gen_range(0..inbox.len())];
            let reply = self
                .rng
                .gen_bool(0.5)
                .then(|| format!("r{client}o{op}").into_bytes().into());
            (
                PrimitiveOp::Ack(message),
                GroupCommand::Ack { message, reply },
            )
        } else if mine.is_empty() && self.rng.gen_bool(0.5) {
            let member = if self.rng.gen_bool(0.1) {
                MemberId {
                    persistent: true,
                    owner: self.rng.gen_range(0..clients),
                }
            } else {
                MemberId {
                    persistent: self.rng.gen_bool(0.5),
                    owner: client,
                }
            };
            (
                PrimitiveOp::Join(member),
                GroupCommand::Join {
                    id: Some(member.name()),
                    persistent: member.persistent,
                    metadata: format!("c{client}").into_bytes().into(),
                },
            )
        } else if !mine.is_empty() && self.rng.gen_bool(0.1) {
            let member = mine[self.rng.gen_range(0..mine.len())];
            (
                PrimitiveOp::Leave(member),
                GroupCommand::Leave(member.name()),
            )
        } else if self.rng.gen_bool(0.03) {
            let member = any_member(self);
            (PrimitiveOp::Remove, GroupCommand::Remove(member.name()))
        } else {
            let to = match self.rng.gen_range(0..10) {
                0..=3 => Delivery::Direct(any_member(self).name()),
                4..=6 => Delivery::Random,
                _ => Delivery::Broadcast,
            };
            (
                PrimitiveOp::Send,
                GroupCommand::Send {
                    req: op,
                    to,
                    payload: format!("c{client}o{op}").into_bytes().into(),
                    reply: self.rng.gen_bool(0.5),
                },
            )
        };
        (op, Command::Group { name, command })
    }

    /// A client received an event in `session`: note the grants and
    /// timeouts of its requests, its elections and the messages its
    /// members receive. (The events themselves are checked against what the
    /// state machine published, in `clients.rs`.)
    pub(super) fn primitive_event(
        &mut self,
        client: usize,
        session: SessionId,
        event: &copycat_proto::Event,
    ) -> Result<(), String> {
        if event.name != EVENT_NAME {
            return Ok(());
        }
        let Ok(notice) = codec::decode::<Notice>(&event.payload) else {
            return Ok(());
        };
        let lock = RESOURCES[..2]
            .iter()
            .position(|(n, _)| *n == notice.resource);
        let p = &mut self.primitive_clients;
        match notice.event {
            Event::Lock(LockEvent::Granted { .. }) => {
                if let Some(lock) = lock {
                    p.waiting.remove(&(client, lock));
                    p.held.insert((client, lock));
                }
            }
            Event::Lock(LockEvent::TimedOut { .. }) => {
                if let Some(lock) = lock {
                    p.waiting.remove(&(client, lock));
                }
            }
            Event::Semaphore(SemaphoreEvent::Acquired { req }) => {
                if let Some(permits) = p.acquiring.remove(&(client, req)) {
                    *p.permits.entry(client).or_default() += permits;
                }
            }
            Event::Semaphore(SemaphoreEvent::TimedOut { req }) => {
                p.acquiring.remove(&(client, req));
            }
            Event::Election(ElectionEvent::Elected { req, term }) => {
                p.campaigning.remove(&(client, req));
                p.leading.insert(client);
                p.heard_term(term, session)?;
            }
            Event::Election(ElectionEvent::TimedOut { req }) => {
                p.campaigning.remove(&(client, req));
            }
            Event::Election(ElectionEvent::Changed {
                leader: Some((leader, term)),
            }) => {
                p.heard_term(term, leader)?;
            }
            Event::Group(GroupEvent::Message { message, .. }) => {
                p.inbox.insert((client, message));
            }
            _ => {}
        }
        Ok(())
    }

    /// A client's session is gone: it holds, waits for, leads and listens
    /// to nothing, and its members are gone or dead.
    pub(super) fn primitive_session_lost(&mut self, client: usize) {
        let p = &mut self.primitive_clients;
        p.held.retain(|(c, _)| *c != client);
        p.waiting.retain(|(c, _)| *c != client);
        p.permits.remove(&client);
        p.acquiring.retain(|(c, _), _| *c != client);
        p.leading.remove(&client);
        p.campaigning.retain(|(c, _)| *c != client);
        p.election_listeners.remove(&client);
        p.group_listeners.remove(&client);
        p.members.retain(|(c, _)| *c != client);
        p.inbox.retain(|(c, _)| *c != client);
    }

    /// An increment was refused before it was sent: it never happened.
    pub(super) fn primitive_refused(&mut self, op: PrimitiveOp) {
        if op == PrimitiveOp::Increment {
            self.primitive_clients.increments_failed += 1;
        }
    }

    /// A client heard the answer to a primitive operation it sent in
    /// `session`.
    pub(super) fn primitive_done(
        &mut self,
        client: usize,
        session: SessionId,
        op: PrimitiveOp,
        result: Result<Output, ResourceError>,
    ) -> Result<(), String> {
        let p = &mut self.primitive_clients;
        match (op, result) {
            (PrimitiveOp::Open(r), Ok(Output::Opened { .. })) => {
                p.opened.insert((client, r));
            }
            (PrimitiveOp::Lock(lock), Ok(Output::Lock(LockOutput::Acquired(_)))) => {
                p.held.insert((client, lock));
            }
            (PrimitiveOp::Lock(lock), Ok(Output::Lock(LockOutput::Waiting))) => {
                p.waiting.insert((client, lock));
            }
            (PrimitiveOp::Unlock(lock), Ok(_) | Err(ResourceError::NotHolder)) => {
                p.held.remove(&(client, lock));
            }
            (PrimitiveOp::Increment, Ok(Output::Long(LongOutput::Value(value)))) => {
                p.increments_ok += 1;
                if !p.counter_values.insert(value) {
                    return Err(format!(
                        "counter: two increments were both answered {value}"
                    ));
                }
            }
            (PrimitiveOp::Increment, Err(_)) => p.increments_failed += 1,
            (PrimitiveOp::Poll, Ok(Output::Queue(QueueOutput::Value(Some(item)))))
                if !p.polled.insert(item.to_vec()) =>
            {
                return Err(format!(
                    "queue: item {item:?} was delivered to clients twice"
                ));
            }
            (
                PrimitiveOp::Acquire { permits, .. },
                Ok(Output::Semaphore(SemaphoreOutput::Acquired)),
            ) => {
                *p.permits.entry(client).or_default() += permits;
            }
            (
                PrimitiveOp::Acquire { req, permits },
                Ok(Output::Semaphore(SemaphoreOutput::Waiting)),
            ) => {
                p.acquiring.insert((client, req), permits);
            }
            (PrimitiveOp::Release(permits), Ok(_)) => {
                let held = p.permits.entry(client).or_default();
                *held = held.saturating_sub(permits);
            }
            (PrimitiveOp::Release(_), Err(ResourceError::NotEnoughPermits { held, .. })) => {
                p.permits.insert(client, held);
            }
            (PrimitiveOp::CancelAcquire(req), Ok(_)) => {
                p.acquiring.remove(&(client, req));
            }
            (PrimitiveOp::Campaign(_), Ok(Output::Election(ElectionOutput::Elected(term)))) => {
                p.leading.insert(client);
                p.heard_term(term, session)?;
            }
            (PrimitiveOp::Campaign(req), Ok(Output::Election(ElectionOutput::Waiting))) => {
                p.campaigning.insert((client, req));
            }
            (PrimitiveOp::Resign, Ok(_) | Err(ResourceError::NotLeader)) => {
                p.leading.remove(&client);
            }
            (PrimitiveOp::CancelCampaign(req), Ok(_)) => {
                p.campaigning.remove(&(client, req));
            }
            (PrimitiveOp::ListenElection, Ok(_)) => {
                p.election_listeners.insert(client);
            }
            (PrimitiveOp::ListenGroup, Ok(_)) => {
                p.group_listeners.insert(client);
            }
            (PrimitiveOp::Join(member), Ok(Output::Group(GroupOutput::Joined(_)))) => {
                p.members.insert((client, member));
            }
            (
                PrimitiveOp::Leave(member),
                Ok(_) | Err(ResourceError::NotMember { .. } | ResourceError::UnknownMember { .. }),
            ) => {
                p.members.remove(&(client, member));
            }
            // A message rerouted away from a member, or one of a lost
            // session, is no longer the client's to acknowledge.
            (PrimitiveOp::Ack(message), Ok(_) | Err(ResourceError::UnknownMessage { .. })) => {
                p.inbox.remove(&(client, message));
            }
            (op, Err(error)) => {
                // Errors the workload provokes on purpose (unlocking a lock
                // not held, using a resource not opened yet) are definite
                // answers; anything else is a bug.
                let expected = matches!(
                    (op, &error),
                    (PrimitiveOp::Unlock(_), ResourceError::NotHolder)
                        | (_, ResourceError::NotFound { .. })
                        | (
                            PrimitiveOp::Release(_),
                            ResourceError::NotEnoughPermits { .. }
                        )
                        | (
                            PrimitiveOp::Acquire { .. },
                            ResourceError::InvalidArgument(_)
                        )
                        | (PrimitiveOp::Resign, ResourceError::NotLeader)
                        | (PrimitiveOp::Join(_), ResourceError::MemberInUse { .. })
                        | (
                            PrimitiveOp::Leave(_),
                            ResourceError::NotMember { .. } | ResourceError::UnknownMember { .. }
                        )
                        | (PrimitiveOp::Remove, ResourceError::UnknownMember { .. })
                        | (
                            PrimitiveOp::Send,
                            ResourceError::UnknownMember { .. } | ResourceError::NoMembers
                        )
                );
                if !expected {
                    return Err(format!("primitive {op:?} answered {error:?}"));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// After the heal, the counter the committed log leaves holds every
    /// acknowledged increment and at most the unknown ones besides.
    pub(super) fn check_counter(&self) -> Result<(), String> {
        let p = &self.primitive_clients;
        let value = self.observer.primitives.counter(COUNTER);
        let ok = p.increments_ok as i64;
        let unknown = (p.increments - p.increments_ok - p.increments_failed) as i64;
        if value < ok || value > ok + unknown {
            return Err(format!(
                "counter: final value {value}, but {ok} increments were acknowledged and {unknown} have an unknown outcome (allowed {ok}..={})",
                ok + unknown
            ));
        }
        if let Some(max) = p.counter_values.last() {
            if *max > value {
                return Err(format!(
                    "counter: an increment was answered {max}, above the final value {value}"
                ));
            }
        }
        Ok(())
    }
}

impl PrimitiveClients {
    /// A client heard that `session` was elected in `term`: one term, one
    /// session.
    fn heard_term(&mut self, term: u64, session: SessionId) -> Result<(), String> {
        match self.terms.insert(term, session) {
            Some(other) if other != session => Err(format!(
                "election: clients heard both session {} and session {} elected in term {term}",
                other.0, session.0
            )),
            _ => Ok(()),
        }
    }
}
