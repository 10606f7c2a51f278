//! Safety of the coordination primitives of the primitive workload (a
//! semaphore, an election and a group), judged on the committed log as the
//! reference replica replays it, one [`PrimitiveStep`] per entry: the
//! answers the entry gave its caller and the events it pushed to sessions
//! are exactly what clients receive (the event checks in
//! `replica_reports.rs` hold clients to that), so a grant learned from a
//! response and one learned from an event count alike.
//!
//! The events of one entry arrive grouped by receiving session, so their
//! order across sessions is lost; an entry is also one instant for every
//! client (they all see its effects at its index). The checks therefore
//! take an entry's effects in an order that cannot raise false alarms
//! (what timers did first, then the command, then the sessions it closed,
//! then the remaining events) and judge totals after the whole entry.
//!
//! - **Semaphore**: after every entry, the permits held by live sessions
//!   (grants minus releases) never exceed the total; a session's permits
//!   return when it closes; a release succeeds exactly when the session
//!   holds that many; a grant to a waiter names a request that waits, never
//!   overtakes an earlier waiter still waiting, and an acquisition answered
//!   at once never overtakes a waiter; no request is refused or queued
//!   while nobody waits and its permits are free; and no waiter whose
//!   permits are free is left waiting at the end of an entry (so permits
//!   returned by a release or a closing session go to the waiters).
//! - **Election**: at most one leader at a time; each term is granted to
//!   one session only, and successive leaders have strictly increasing
//!   terms; a leader campaigning again is answered its own term; a resign
//!   succeeds exactly for the leader; nobody is refused or queued while
//!   nobody leads; a candidate is elected by event only while it waits,
//!   in FIFO order; a leader whose session closed is never reported leader
//!   again, and every listener hears of each change and last hears the
//!   leader the entry leaves; a query of the leader answers the leader the
//!   log gives at the index it was answered from.
//! - **Group**: every message a send creates goes to its recipient's
//!   session (a broadcast to every alive member once); a message is
//!   delivered only to an alive member, never to one that left; a
//!   recipient that dies or leaves before acknowledging has its message
//!   redelivered to another alive member (a random message), kept for its
//!   rejoin (a direct message to a persistent member, delivered again to
//!   its new session), or reported failed to the sender, within the same
//!   entry; an acknowledgement comes from the message's current recipient
//!   and is told to the sender once; no message is acknowledged twice or
//!   both acknowledged and failed; the group's leader is an alive member
//!   and each of its terms names one member.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use copycat_primitives::election::{ElectionCommand, ElectionEvent, ElectionOutput};
use copycat_primitives::group::{Delivery, GroupCommand, GroupEvent, GroupOutput};
use copycat_primitives::semaphore::{SemaphoreCommand, SemaphoreEvent, SemaphoreOutput};
use copycat_primitives::{Command, Event, Output, ResourceError, Spec};
use copycat_proto::SessionId;

use super::primitives::{PrimitiveStats, PrimitiveStep};
use super::Check;

/// A semaphore as the log shows it.
#[derive(Debug, Default)]
struct SemaphoreTrack {
    total: u64,
    /// Permits held per session.
    held: BTreeMap<SessionId, u64>,
    /// Waiting requests in order: session, request id, permits.
    waiting: VecDeque<(SessionId, u64, u64)>,
}

impl SemaphoreTrack {
    fn in_use(&self) -> u64 {
        self.held.values().sum()
    }

    fn available(&self) -> u64 {
        self.total.saturating_sub(self.in_use())
    }

    fn position(&self, session: SessionId, req: u64) -> Option<usize> {
        self.waiting
            .iter()
            .position(|(s, r, _)| *s == session && *r == req)
    }
}

/// An election as the log shows it.
#[derive(Debug, Default)]
struct ElectionTrack {
    leader: Option<(SessionId, u64)>,
    /// Waiting candidacies in order: session, request id.
    waiting: VecDeque<(SessionId, u64)>,
    /// Every term granted, to whom.
    terms: BTreeMap<u64, SessionId>,
    /// The last term granted.
    last_term: u64,
    listeners: BTreeSet<SessionId>,
    /// Leaders whose session closed, with their term.
    lost: BTreeMap<SessionId, u64>,
    /// The leader from each index where it changed (from the index that
    /// opened the election), to judge leader queries.
    history: BTreeMap<u64, Option<(SessionId, u64)>>,
}

/// A group member as the log shows it.
#[derive(Debug)]
struct MemberTrack {
    session: Option<SessionId>,
    persistent: bool,
}

/// A pending group message.
#[derive(Debug)]
struct MessageTrack {
    req: u64,
    from: SessionId,
    kind: Kind,
    /// The member it is addressed to (learned from its delivery for a
    /// random or broadcast message).
    to: Option<String>,
    /// The session it was last delivered to.
    delivered: Option<SessionId>,
    payload: Bytes,
    reply: bool,
    /// The log index of its send.
    sent: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Direct,
    Random,
    Broadcast,
}

/// A group as the log shows it.
#[derive(Debug, Default)]
struct GroupTrack {
    members: BTreeMap<String, MemberTrack>,
    messages: BTreeMap<u64, MessageTrack>,
    /// Messages that ended: acknowledged (by which member), failed, or
    /// dropped with their sender's session.
    acked: BTreeMap<u64, String>,
    failed: BTreeSet<u64>,
    dropped: BTreeSet<u64>,
    /// The highest message id created so far.
    last_message: Option<u64>,
    /// Every leader term the group reported, to which member.
    leader_terms: BTreeMap<u64, String>,
}

impl GroupTrack {
    fn alive(&self) -> BTreeSet<String> {
        self.members
            .iter()
            .filter(|(_, m)| m.session.is_some())
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn session_of(&self, id: &str) -> Option<SessionId> {
        self.members.get(id).and_then(|m| m.session)
    }

    fn ended(&self, message: u64) -> Option<&'static str> {
        if self.acked.contains_key(&message) {
            Some("acknowledged")
        } else if self.failed.contains(&message) {
            Some("reported failed")
        } else if self.dropped.contains(&message) {
            Some("dropped with its sender's session")
        } else {
            None
        }
    }
}

/// The coordination primitives the log created, by name.
#[derive(Debug, Default)]
pub(super) struct Coordination {
    semaphores: BTreeMap<String, SemaphoreTrack>,
    elections: BTreeMap<String, ElectionTrack>,
    groups: BTreeMap<String, GroupTrack>,
}

impl Coordination {
    /// Check one entry's step; `live` holds the sessions open after it.
    pub(super) fn on_step(
        &mut self,
        step: &PrimitiveStep,
        live: &BTreeSet<SessionId>,
        stats: &mut PrimitiveStats,
    ) -> Check {
        if let Some((
            _,
            Command::Open { name, .. },
            Ok(Output::Opened {
                info: copycat_primitives::ResourceInfo { spec, .. },
                ..
            }),
        )) = &step.command
        {
            match spec {
                Spec::Semaphore { permits } => {
                    self.semaphores
                        .entry(name.clone())
                        .or_insert_with(|| SemaphoreTrack {
                            total: *permits,
                            ..Default::default()
                        });
                }
                Spec::Election => {
                    self.elections
                        .entry(name.clone())
                        .or_insert_with(|| ElectionTrack {
                            history: BTreeMap::from([(step.index, None)]),
                            ..Default::default()
                        });
                }
                Spec::Group => {
                    self.groups.entry(name.clone()).or_default();
                }
                _ => {}
            }
        }
        self.semaphore_step(step, live, stats)?;
        self.election_step(step, live, stats)?;
        self.group_step(step, stats)
    }

    fn semaphore_step(
        &mut self,
        step: &PrimitiveStep,
        live: &BTreeSet<SessionId>,
        stats: &mut PrimitiveStats,
    ) -> Check {
        let index = step.index;
        let start: BTreeMap<String, Vec<(SessionId, u64)>> = self
            .semaphores
            .iter()
            .map(|(name, s)| {
                let order = s.waiting.iter().map(|(s, r, _)| (*s, *r)).collect();
                (name.clone(), order)
            })
            .collect();
        // Timeouts (timers run first in an entry), then grants to waiters.
        let mut granted: BTreeMap<String, Vec<(SessionId, u64)>> = BTreeMap::new();
        for (session, notice) in &step.events {
            let Event::Semaphore(event) = &notice.event else {
                continue;
            };
            let name = &notice.resource;
            let Some(sem) = self.semaphores.get_mut(name) else {
                return Err(format!(
                    "semaphore {name}: event {event:?} at {index} to session {} before the semaphore was opened",
                    session.0
                ));
            };
            match event {
                SemaphoreEvent::TimedOut { req } => match sem.position(*session, *req) {
                    Some(at) => {
                        sem.waiting.remove(at);
                    }
                    None => {
                        return Err(format!(
                            "semaphore {name}: request {req} of session {} timed out at {index} but was not waiting",
                            session.0
                        ))
                    }
                },
                SemaphoreEvent::Acquired { req } => {
                    let Some(at) = sem.position(*session, *req) else {
                        return Err(format!(
                            "semaphore {name}: request {req} of session {} granted at {index} but was not waiting",
                            session.0
                        ));
                    };
                    if !live.contains(session) {
                        return Err(format!(
                            "semaphore {name}: request {req} granted at {index} to session {}, which is closed",
                            session.0
                        ));
                    }
                    let (_, _, permits) = sem.waiting.remove(at).expect("position");
                    *sem.held.entry(*session).or_default() += permits;
                    stats.permits_waited += permits;
                    granted
                        .entry(name.clone())
                        .or_default()
                        .push((*session, *req));
                }
            }
        }
        let quiet = step.closed.is_empty();
        if let Some((session, Command::Semaphore { name, command }, result)) = &step.command {
            let session = *session;
            let Some(sem) = self.semaphores.get_mut(name) else {
                if result.is_ok() {
                    return Err(format!(
                        "semaphore {name}: {command:?} at {index} answered {result:?} before the semaphore was opened"
                    ));
                }
                return Ok(());
            };
            let held = sem.held.get(&session).copied().unwrap_or(0);
            match (command, result) {
                (SemaphoreCommand::Acquire { permits, .. }, result)
                    if *permits == 0 || *permits > sem.total =>
                {
                    let invalid = matches!(result, Err(ResourceError::InvalidArgument(_)));
                    if !invalid {
                        return Err(format!(
                            "semaphore {name}: acquiring {permits} of {} permits at {index} answered {result:?}, not an invalid argument",
                            sem.total
                        ));
                    }
                }
                (
                    SemaphoreCommand::Acquire { permits, .. },
                    Ok(Output::Semaphore(SemaphoreOutput::Acquired)),
                ) => {
                    if let Some((s, r, p)) = sem.waiting.front() {
                        return Err(format!(
                            "semaphore {name}: session {} acquired {permits} permits at once at {index}, overtaking request {r} of session {} waiting for {p}",
                            session.0, s.0
                        ));
                    }
                    *sem.held.entry(session).or_default() += permits;
                    stats.permits_now += permits;
                }
                (
                    SemaphoreCommand::Acquire { req, permits, .. },
                    Ok(Output::Semaphore(
                        answer @ (SemaphoreOutput::Waiting | SemaphoreOutput::NotAcquired),
                    )),
                ) => {
                    if quiet && sem.waiting.is_empty() && *permits <= sem.available() {
                        return Err(format!(
                            "semaphore {name}: session {} asking {permits} permits was answered {answer:?} at {index} while nobody waited and {} of {} were free",
                            session.0,
                            sem.available(),
                            sem.total
                        ));
                    }
                    if *answer == SemaphoreOutput::Waiting {
                        if sem.position(session, *req).is_some() {
                            return Err(format!(
                                "semaphore {name}: request {req} of session {} queued twice at {index}",
                                session.0
                            ));
                        }
                        sem.waiting.push_back((session, *req, *permits));
                    }
                }
                (
                    SemaphoreCommand::Release { permits },
                    Ok(Output::Semaphore(SemaphoreOutput::Unit)),
                ) => {
                    if *permits == 0 || *permits > held {
                        return Err(format!(
                            "semaphore {name}: session {} released {permits} permits at {index} but holds {held}",
                            session.0
                        ));
                    }
                    if *permits == held {
                        sem.held.remove(&session);
                    } else {
                        sem.held.insert(session, held - permits);
                    }
                }
                (
                    SemaphoreCommand::Release { permits },
                    Err(ResourceError::NotEnoughPermits {
                        held: reported,
                        requested,
                    }),
                ) => {
                    if *permits > 0 && *permits <= held {
                        return Err(format!(
                            "semaphore {name}: session {} holding {held} permits was refused releasing {permits} at {index}",
                            session.0
                        ));
                    }
                    if quiet && (*reported != held || requested != permits) {
                        return Err(format!(
                            "semaphore {name}: release of {permits} by session {} at {index} was refused saying it holds {reported} (of {requested} requested), but it holds {held}",
                            session.0
                        ));
                    }
                }
                (
                    SemaphoreCommand::Cancel { req },
                    Ok(Output::Semaphore(SemaphoreOutput::Bool(cancelled))),
                ) => {
                    let at = sem.position(session, *req);
                    if at.is_some() != *cancelled {
                        return Err(format!(
                            "semaphore {name}: cancel of request {req} by session {} at {index} answered {cancelled}, but the request was {}waiting",
                            session.0,
                            if at.is_some() { "" } else { "not " }
                        ));
                    }
                    if let Some(at) = at {
                        sem.waiting.remove(at);
                    }
                }
                (command, Ok(output)) => {
                    return Err(format!(
                        "semaphore {name}: {command:?} by session {} at {index} answered {output:?}",
                        session.0
                    ));
                }
                _ => {}
            }
        }
        // The sessions the entry closed give their permits back.
        for session in &step.closed {
            for sem in self.semaphores.values_mut() {
                if let Some(permits) = sem.held.remove(session) {
                    stats.permits_returned_by_close += permits;
                }
                sem.waiting.retain(|(s, _, _)| s != session);
            }
        }
        for (name, sem) in &self.semaphores {
            let in_use = sem.in_use();
            if in_use > sem.total {
                let holders: Vec<String> = sem
                    .held
                    .iter()
                    .map(|(s, p)| format!("session {} holds {p}", s.0))
                    .collect();
                return Err(format!(
                    "semaphore {name}: over-granted after {index}: live sessions hold {in_use} of {} permits ({})",
                    sem.total,
                    holders.join(", ")
                ));
            }
            if let Some((s, r, p)) = sem.waiting.front() {
                if *p <= sem.available() {
                    return Err(format!(
                        "semaphore {name}: after {index}, request {r} of session {} still waits for {p} permits although {} of {} are free (released or returned permits did not reach the waiters)",
                        s.0,
                        sem.available(),
                        sem.total
                    ));
                }
            }
            // A grant never overtakes a waiter that still waits.
            let order = start.get(name).map(Vec::as_slice).unwrap_or_default();
            let waits: BTreeSet<(SessionId, u64)> =
                sem.waiting.iter().map(|(s, r, _)| (*s, *r)).collect();
            for granted in granted.get(name).into_iter().flatten() {
                let at = order.iter().position(|w| w == granted);
                if let Some(ahead) = order[..at.unwrap_or(0)].iter().find(|w| waits.contains(w)) {
                    return Err(format!(
                        "semaphore {name}: request {} of session {} was granted at {index} ahead of request {} of session {}, which waited before it and still waits",
                        granted.1, granted.0 .0, ahead.1, ahead.0 .0
                    ));
                }
            }
        }
        Ok(())
    }

    fn election_step(
        &mut self,
        step: &PrimitiveStep,
        live: &BTreeSet<SessionId>,
        stats: &mut PrimitiveStats,
    ) -> Check {
        let index = step.index;
        let before: BTreeMap<String, Option<(SessionId, u64)>> = self
            .elections
            .iter()
            .map(|(name, e)| (name.clone(), e.leader))
            .collect();
        let listening: BTreeMap<String, BTreeSet<SessionId>> = self
            .elections
            .iter()
            .map(|(name, e)| (name.clone(), e.listeners.clone()))
            .collect();
        let start: BTreeMap<String, Vec<(SessionId, u64)>> = self
            .elections
            .iter()
            .map(|(name, e)| (name.clone(), e.waiting.iter().copied().collect()))
            .collect();
        // Timeouts first: timers run before the entry's command.
        for (session, notice) in &step.events {
            if let Event::Election(ElectionEvent::TimedOut { req }) = &notice.event {
                let name = &notice.resource;
                let Some(election) = self.elections.get_mut(name) else {
                    return Err(format!(
                        "election {name}: a timeout at {index} before the election was opened"
                    ));
                };
                match election
                    .waiting
                    .iter()
                    .position(|w| *w == (*session, *req))
                {
                    Some(at) => {
                        election.waiting.remove(at);
                    }
                    None => {
                        return Err(format!(
                            "election {name}: candidacy {req} of session {} timed out at {index} but was not waiting",
                            session.0
                        ))
                    }
                }
            }
        }
        if let Some((session, Command::Election { name, command }, result)) = &step.command {
            let session = *session;
            let Some(election) = self.elections.get_mut(name) else {
                if result.is_ok() {
                    return Err(format!(
                        "election {name}: {command:?} at {index} answered {result:?} before the election was opened"
                    ));
                }
                return Ok(());
            };
            match (command, result) {
                (
                    ElectionCommand::Campaign { .. },
                    Ok(Output::Election(ElectionOutput::Elected(term))),
                ) => match election.leader {
                    Some((leader, held)) if leader == session => {
                        if *term != held {
                            return Err(format!(
                                "election {name}: the leader, session {}, campaigned again at {index} and was answered term {term}, not its term {held}",
                                session.0
                            ));
                        }
                    }
                    _ => {
                        elect(election, name, index, session, *term, live)?;
                        stats.elected += 1;
                    }
                },
                (
                    ElectionCommand::Campaign { req, .. },
                    Ok(Output::Election(
                        answer @ (ElectionOutput::Waiting | ElectionOutput::NotElected),
                    )),
                ) => {
                    match election.leader {
                        None => {
                            return Err(format!(
                                "election {name}: session {} was answered {answer:?} at {index} while nobody led",
                                session.0
                            ))
                        }
                        Some((leader, term)) if leader == session => {
                            return Err(format!(
                                "election {name}: the leader, session {} (term {term}), campaigned again at {index} and was answered {answer:?}",
                                session.0
                            ))
                        }
                        Some(_) => {}
                    }
                    if *answer == ElectionOutput::Waiting {
                        if election.waiting.contains(&(session, *req)) {
                            return Err(format!(
                                "election {name}: candidacy {req} of session {} queued twice at {index}",
                                session.0
                            ));
                        }
                        election.waiting.push_back((session, *req));
                    }
                }
                (ElectionCommand::Resign, Ok(Output::Election(ElectionOutput::Unit))) => {
                    if election.leader.map(|(s, _)| s) != Some(session) {
                        return Err(format!(
                            "election {name}: session {} resigned at {index} but the leader is {:?}",
                            session.0, election.leader
                        ));
                    }
                    election.leader = None;
                }
                (ElectionCommand::Resign, Err(ResourceError::NotLeader)) => {
                    if let Some((leader, term)) = election.leader {
                        if leader == session {
                            return Err(format!(
                                "election {name}: the leader, session {} (term {term}), was refused its resignation at {index}",
                                session.0
                            ));
                        }
                    }
                }
                (
                    ElectionCommand::Cancel { req },
                    Ok(Output::Election(ElectionOutput::Bool(cancelled))),
                ) => {
                    let at = election.waiting.iter().position(|w| *w == (session, *req));
                    if at.is_some() != *cancelled {
                        return Err(format!(
                            "election {name}: cancel of candidacy {req} by session {} at {index} answered {cancelled}, but it was {}waiting",
                            session.0,
                            if at.is_some() { "" } else { "not " }
                        ));
                    }
                    if let Some(at) = at {
                        election.waiting.remove(at);
                    }
                }
                (ElectionCommand::Listen, Ok(_)) => {
                    election.listeners.insert(session);
                }
                (ElectionCommand::Unlisten, Ok(_)) => {
                    election.listeners.remove(&session);
                }
                (command, Ok(output)) => {
                    return Err(format!(
                        "election {name}: {command:?} by session {} at {index} answered {output:?}",
                        session.0
                    ));
                }
                _ => {}
            }
        }
        for session in &step.closed {
            for election in self.elections.values_mut() {
                election.listeners.remove(session);
                election.waiting.retain(|(s, _)| s != session);
                if let Some((leader, term)) = election.leader {
                    if leader == *session {
                        election.leader = None;
                        election.lost.insert(leader, term);
                        stats.leaders_lost_by_close += 1;
                    }
                }
            }
        }
        // Candidates elected by event (a resignation or a closed leader
        // handed leadership on), then what listeners were told.
        // (Elections first: the events of one entry come grouped by
        // session, and a listener may come before the new leader.)
        let mut last_told: BTreeMap<(String, SessionId), Option<(SessionId, u64)>> =
            BTreeMap::new();
        let elections = step
            .events
            .iter()
            .filter(|(_, n)| matches!(n.event, Event::Election(ElectionEvent::Elected { .. })));
        let changes = step
            .events
            .iter()
            .filter(|(_, n)| matches!(n.event, Event::Election(ElectionEvent::Changed { .. })));
        for (session, notice) in elections.chain(changes) {
            let name = &notice.resource;
            let Event::Election(event) = &notice.event else {
                continue;
            };
            let Some(election) = self.elections.get_mut(name) else {
                return Err(format!(
                    "election {name}: event {event:?} at {index} before the election was opened"
                ));
            };
            match event {
                ElectionEvent::Elected { req, term } => {
                    let Some(at) = election.waiting.iter().position(|w| *w == (*session, *req))
                    else {
                        return Err(format!(
                            "election {name}: candidacy {req} of session {} elected at {index} (term {term}) but was not waiting",
                            session.0
                        ));
                    };
                    let order = start.get(name).map(Vec::as_slice).unwrap_or_default();
                    let mine = order.iter().position(|w| *w == (*session, *req));
                    if let Some(ahead) = order[..mine.unwrap_or(0)]
                        .iter()
                        .find(|w| election.waiting.contains(w))
                    {
                        return Err(format!(
                            "election {name}: candidacy {req} of session {} was elected at {index} ahead of candidacy {} of session {}, which waited before it",
                            session.0, ahead.1, ahead.0 .0
                        ));
                    }
                    election.waiting.remove(at);
                    elect(election, name, index, *session, *term, live)?;
                    stats.elected += 1;
                }
                ElectionEvent::Changed { leader } => {
                    if !election.listeners.contains(session) {
                        return Err(format!(
                            "election {name}: session {} was told of a leadership change at {index} but does not listen",
                            session.0
                        ));
                    }
                    if let Some((reported, term)) = leader {
                        if let Some(lost) = election.lost.get(reported) {
                            return Err(format!(
                                "election {name}: session {} was told at {index} that session {} leads (term {term}), but that leader's session closed (it led in term {lost})",
                                session.0, reported.0
                            ));
                        }
                        if election.terms.get(term) != Some(reported) {
                            return Err(format!(
                                "election {name}: session {} was told at {index} that session {} leads in term {term}, which was granted to {:?}",
                                session.0,
                                reported.0,
                                election.terms.get(term).map(|s| s.0)
                            ));
                        }
                    }
                    last_told.insert((name.clone(), *session), *leader);
                }
                ElectionEvent::TimedOut { .. } => {}
            }
        }
        for election in self.elections.values_mut() {
            let last = election.history.values().next_back().copied().flatten();
            if last != election.leader {
                election.history.insert(index, election.leader);
            }
        }
        for (name, election) in &self.elections {
            let changed = before.get(name).copied().flatten() != election.leader
                || step.events.iter().any(|(_, n)| {
                    n.resource == *name
                        && matches!(n.event, Event::Election(ElectionEvent::Elected { .. }))
                });
            let was_listening = listening.get(name).cloned().unwrap_or_default();
            for listener in election.listeners.intersection(&was_listening) {
                match last_told.get(&(name.clone(), *listener)) {
                    Some(told) if *told != election.leader => {
                        return Err(format!(
                            "election {name}: listener session {} last heard at {index} that the leader is {told:?}, but the entry leaves {:?}",
                            listener.0, election.leader
                        ));
                    }
                    None if changed => {
                        return Err(format!(
                            "election {name}: the leadership changed at {index} (from {:?} to {:?}) but listener session {} was not told",
                            before.get(name).copied().flatten(),
                            election.leader,
                            listener.0
                        ));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// A query of election `name`'s leader answered `result` from the
    /// state at `index`: the leader the log gives there (none before the
    /// election was opened, and never a leader whose session had closed).
    pub(super) fn check_leader_query(
        &self,
        name: &str,
        index: u64,
        result: &Result<Output, ResourceError>,
    ) -> Check {
        let expected = self
            .elections
            .get(name)
            .and_then(|e| e.history.range(..=index).next_back())
            .map(|(_, leader)| *leader);
        match (expected, result) {
            (None, Err(ResourceError::NotFound { .. })) => Ok(()),
            (Some(leader), Ok(Output::Election(ElectionOutput::Leader(answer))))
                if *answer == leader =>
            {
                Ok(())
            }
            (expected, result) => {
                let closed = match result {
                    Ok(Output::Election(ElectionOutput::Leader(Some((session, _))))) => self
                        .elections
                        .get(name)
                        .and_then(|e| e.lost.get(session))
                        .map(|term| format!(" (session {} lost its leadership of term {term} when its session closed)", session.0))
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                let expected = match expected {
                    None => "no such election yet".to_string(),
                    Some(leader) => format!("leader {leader:?}"),
                };
                Err(format!(
                    "election {name}: a leader query answered {result:?} from the state at {index}, but the log gives {expected} there{closed}"
                ))
            }
        }
    }

    fn group_step(&mut self, step: &PrimitiveStep, stats: &mut PrimitiveStats) -> Check {
        let index = step.index;
        // Messages that must reach their recipient's session in this entry,
        // and broadcasts whose copies must go to every alive member.
        let mut broadcasts: Vec<(String, Vec<u64>, BTreeSet<String>)> = Vec::new();
        let mut acked_now: BTreeSet<(String, u64)> = BTreeSet::new();
        if let Some((session, Command::Group { name, command }, result)) = &step.command {
            let session = *session;
            let Some(group) = self.groups.get_mut(name) else {
                if result.is_ok() {
                    return Err(format!(
                        "group {name}: {command:?} at {index} answered {result:?} before the group was opened"
                    ));
                }
                return Ok(());
            };
            match (command, result) {
                (
                    GroupCommand::Join { id, persistent, .. },
                    Ok(Output::Group(GroupOutput::Joined(joined))),
                ) => {
                    let expected = id.clone().unwrap_or_else(|| format!("m{index}"));
                    if *joined != expected {
                        return Err(format!(
                            "group {name}: session {} joining as {expected:?} at {index} was answered {joined:?}",
                            session.0
                        ));
                    }
                    match group.members.get_mut(joined) {
                        Some(member) if member.session == Some(session) => {}
                        Some(member) => {
                            if let Some(other) = member.session {
                                return Err(format!(
                                    "group {name}: session {} joined as {joined:?} at {index} while that member is alive in session {}",
                                    session.0, other.0
                                ));
                            }
                            member.session = Some(session);
                            member.persistent = *persistent;
                        }
                        None => {
                            group.members.insert(
                                joined.clone(),
                                MemberTrack {
                                    session: Some(session),
                                    persistent: *persistent,
                                },
                            );
                        }
                    }
                }
                (
                    GroupCommand::Join { id: Some(id), .. },
                    Err(ResourceError::MemberInUse { .. }),
                ) => {
                    let holder = group.session_of(id);
                    if holder.is_none() || holder == Some(session) {
                        return Err(format!(
                            "group {name}: session {} was refused joining as {id:?} at {index} as in use, but that member is {}",
                            session.0,
                            if holder.is_some() { "its own" } else { "not alive" }
                        ));
                    }
                }
                (GroupCommand::Leave(id), Ok(Output::Group(GroupOutput::Unit))) => {
                    if group.session_of(id) != Some(session) {
                        return Err(format!(
                            "group {name}: session {} left as {id:?} at {index}, a member it is not",
                            session.0
                        ));
                    }
                    group.members.remove(id);
                }
                (
                    GroupCommand::Leave(id),
                    Err(ResourceError::NotMember { .. } | ResourceError::UnknownMember { .. }),
                ) if group.session_of(id) == Some(session) => {
                    return Err(format!(
                        "group {name}: member {id:?} of session {} was refused leaving at {index}",
                        session.0
                    ));
                }
                (GroupCommand::Remove(id), Ok(Output::Group(GroupOutput::Unit))) => {
                    let existed = group.members.remove(id).is_some();
                    if !existed {
                        return Err(format!(
                            "group {name}: member {id:?} removed at {index} was no member"
                        ));
                    }
                }
                (GroupCommand::Remove(id), Err(ResourceError::UnknownMember { .. }))
                    if group.members.contains_key(id) =>
                {
                    return Err(format!(
                        "group {name}: removing member {id:?} at {index} was refused as unknown"
                    ));
                }
                (
                    GroupCommand::Send {
                        req,
                        to,
                        payload,
                        reply,
                    },
                    Ok(Output::Group(GroupOutput::Sent(ids))),
                ) => {
                    let alive = group.alive();
                    let (kind, count, to_member) = match to {
                        Delivery::Direct(id) => {
                            if !group.members.contains_key(id) {
                                return Err(format!(
                                    "group {name}: a direct send to {id:?} at {index} was accepted, but {id:?} is no member"
                                ));
                            }
                            (Kind::Direct, 1, Some(id.clone()))
                        }
                        Delivery::Random => {
                            if alive.is_empty() {
                                return Err(format!(
                                    "group {name}: a send to a random member at {index} was accepted with no member alive"
                                ));
                            }
                            (Kind::Random, 1, None)
                        }
                        Delivery::Broadcast => (Kind::Broadcast, alive.len(), None),
                    };
                    if ids.len() != count {
                        return Err(format!(
                            "group {name}: send {req} of session {} ({to:?}) at {index} created {} messages, expected {count} ({} members alive)",
                            session.0,
                            ids.len(),
                            alive.len()
                        ));
                    }
                    for id in ids {
                        if group.last_message.is_some_and(|last| *id <= last) {
                            return Err(format!(
                                "group {name}: send at {index} created message {id}, not above the last message id {:?}",
                                group.last_message
                            ));
                        }
                        group.last_message = Some(*id);
                        group.messages.insert(
                            *id,
                            MessageTrack {
                                req: *req,
                                from: session,
                                kind,
                                to: to_member.clone(),
                                delivered: None,
                                payload: payload.clone(),
                                reply: *reply,
                                sent: index,
                            },
                        );
                        stats.messages_sent += 1;
                    }
                    if kind == Kind::Broadcast {
                        broadcasts.push((name.clone(), ids.clone(), alive));
                    }
                }
                (
                    GroupCommand::Send {
                        to: Delivery::Direct(id),
                        ..
                    },
                    Err(ResourceError::UnknownMember { .. }),
                ) if group.members.contains_key(id) => {
                    return Err(format!(
                        "group {name}: a direct send to member {id:?} at {index} was refused as unknown"
                    ));
                }
                (
                    GroupCommand::Send {
                        to: Delivery::Random,
                        ..
                    },
                    Err(ResourceError::NoMembers),
                ) => {
                    let alive = group.alive();
                    if !alive.is_empty() {
                        return Err(format!(
                            "group {name}: a send to a random member at {index} was refused for want of members, but {alive:?} are alive"
                        ));
                    }
                }
                (GroupCommand::Ack { message, .. }, Ok(Output::Group(GroupOutput::Unit))) => {
                    if let Some(how) = group.ended(*message) {
                        return Err(format!(
                            "group {name}: message {message} acknowledged at {index} by session {} was already {how}",
                            session.0
                        ));
                    }
                    let Some(pending) = group.messages.remove(message) else {
                        return Err(format!(
                            "group {name}: message {message} acknowledged at {index} was never sent"
                        ));
                    };
                    let to = pending.to.clone().unwrap_or_default();
                    if group.session_of(&to) != Some(session) {
                        return Err(format!(
                            "group {name}: message {message} for member {to:?} was acknowledged at {index} by session {}, which is not that member's",
                            session.0
                        ));
                    }
                    group.acked.insert(*message, to);
                    acked_now.insert((name.clone(), *message));
                    // The sender is told, unless the entry closes it.
                    group.messages.insert(*message, pending);
                    stats.messages_acked += 1;
                }
                (GroupCommand::Ack { message, .. }, Err(ResourceError::UnknownMessage { .. })) => {
                    if let Some(pending) = group.messages.get(message) {
                        if group.ended(*message).is_none()
                            && pending
                                .to
                                .as_deref()
                                .is_some_and(|to| group.session_of(to) == Some(session))
                        {
                            return Err(format!(
                                "group {name}: the recipient of message {message}, session {}, was refused its acknowledgement at {index}",
                                session.0
                            ));
                        }
                    }
                }
                (command, Ok(output))
                    if !matches!(
                        command,
                        GroupCommand::Listen
                            | GroupCommand::Unlisten
                            | GroupCommand::SetMetadata { .. }
                    ) =>
                {
                    return Err(format!(
                        "group {name}: {command:?} by session {} at {index} answered {output:?}",
                        session.0
                    ));
                }
                _ => {}
            }
        }
        // Closed sessions: their members die (persistent) or go
        // (ephemeral); the messages they sent have nobody to tell.
        for session in &step.closed {
            for (name, group) in self.groups.iter_mut() {
                group
                    .members
                    .retain(|_, m| m.persistent || m.session != Some(*session));
                for member in group.members.values_mut() {
                    if member.session == Some(*session) {
                        member.session = None;
                    }
                }
                let from: Vec<u64> = group
                    .messages
                    .iter()
                    .filter(|(_, m)| m.from == *session)
                    .map(|(id, _)| *id)
                    .collect();
                for id in from {
                    group.messages.remove(&id);
                    // An acknowledgement of this entry has nobody to tell
                    // either.
                    if !acked_now.remove(&(name.clone(), id)) {
                        group.dropped.insert(id);
                    }
                }
            }
        }
        for (session, notice) in &step.events {
            let name = &notice.resource;
            let Event::Group(event) = &notice.event else {
                continue;
            };
            let Some(group) = self.groups.get_mut(name) else {
                return Err(format!(
                    "group {name}: event {event:?} at {index} before the group was opened"
                ));
            };
            match event {
                GroupEvent::Message {
                    message,
                    member,
                    from,
                    payload,
                    reply,
                } => {
                    if let Some(how) = group.ended(*message) {
                        return Err(format!(
                            "group {name}: message {message} was delivered at {index} to member {member:?} (session {}) after it was {how}",
                            session.0
                        ));
                    }
                    let recipient = group.members.get(member).map(|m| m.session);
                    match recipient {
                        None => {
                            return Err(format!(
                                "group {name}: message {message} was delivered at {index} to member {member:?}, which is no member (it left or never joined)",
                            ))
                        }
                        Some(None) => {
                            return Err(format!(
                                "group {name}: message {message} was delivered at {index} to member {member:?}, which is dead",
                            ))
                        }
                        Some(Some(s)) if s != *session => {
                            return Err(format!(
                                "group {name}: message {message} for member {member:?} (session {}) was delivered at {index} to session {}",
                                s.0, session.0
                            ))
                        }
                        Some(Some(_)) => {}
                    }
                    let Some(pending) = group.messages.get_mut(message) else {
                        return Err(format!(
                            "group {name}: message {message} delivered at {index} was never sent"
                        ));
                    };
                    if pending.from != *from
                        || pending.payload != *payload
                        || pending.reply != *reply
                    {
                        return Err(format!(
                            "group {name}: message {message} was delivered at {index} as from session {} with {payload:?} (reply {reply}), but session {} sent {:?} (reply {})",
                            from.0, pending.from.0, pending.payload, pending.reply
                        ));
                    }
                    if let Some(to) = &pending.to {
                        if to != member {
                            let alive = group.members.get(to).is_some_and(|m| m.session.is_some());
                            if pending.kind != Kind::Random || alive {
                                return Err(format!(
                                    "group {name}: {:?} message {message} for member {to:?} was delivered at {index} to member {member:?} instead",
                                    pending.kind
                                ));
                            }
                        }
                    }
                    if pending.delivered.is_some() {
                        stats.messages_redelivered += 1;
                    }
                    pending.to = Some(member.clone());
                    pending.delivered = Some(*session);
                }
                GroupEvent::Delivered {
                    req,
                    message,
                    member,
                    ..
                } => {
                    if !acked_now.remove(&(name.clone(), *message)) {
                        return Err(format!(
                            "group {name}: session {} was told at {index} that message {message} was acknowledged, but it was not acknowledged at this entry{}",
                            session.0,
                            if group.acked.contains_key(message) { " (a second acknowledgement)" } else { "" }
                        ));
                    }
                    let pending = group.messages.remove(message).expect("acknowledged now");
                    let acked_by = group.acked.get(message).cloned().unwrap_or_default();
                    if pending.from != *session || pending.req != *req || acked_by != *member {
                        return Err(format!(
                            "group {name}: the acknowledgement of message {message} by member {acked_by:?} was told at {index} to session {} as send {req} by member {member:?}, but session {} sent it as send {}",
                            session.0, pending.from.0, pending.req
                        ));
                    }
                }
                GroupEvent::Failed { req, message } => {
                    if let Some(how) = group.ended(*message) {
                        return Err(format!(
                            "group {name}: message {message} was reported failed at {index} after it was {how}"
                        ));
                    }
                    let Some(pending) = group.messages.remove(message) else {
                        return Err(format!(
                            "group {name}: message {message} reported failed at {index} was never sent"
                        ));
                    };
                    if pending.from != *session || pending.req != *req {
                        return Err(format!(
                            "group {name}: message {message} of send {} by session {} was reported failed at {index} to session {} as send {req}",
                            pending.req, pending.from.0, session.0
                        ));
                    }
                    let to = pending.to.clone().unwrap_or_default();
                    match group.members.get(&to) {
                        Some(m) if m.session.is_some() => {
                            return Err(format!(
                                "group {name}: message {message} was reported failed at {index} while its recipient {to:?} is alive"
                            ))
                        }
                        Some(m) if m.persistent && pending.kind == Kind::Direct => {
                            return Err(format!(
                                "group {name}: direct message {message} to persistent member {to:?} was reported failed at {index}; it must wait for the member to rejoin"
                            ))
                        }
                        _ => {}
                    }
                    if pending.kind == Kind::Random && !group.alive().is_empty() {
                        return Err(format!(
                            "group {name}: random message {message} was reported failed at {index} although {:?} are alive to take it",
                            group.alive()
                        ));
                    }
                    group.failed.insert(*message);
                    stats.messages_failed += 1;
                }
                GroupEvent::Leader {
                    leader: Some((id, term)),
                } => {
                    if group.session_of(id).is_none() {
                        return Err(format!(
                            "group {name}: member {id:?} was reported leader (term {term}) at {index} but is not alive"
                        ));
                    }
                    if let Some(other) = group.leader_terms.insert(*term, id.clone()) {
                        if other != *id {
                            return Err(format!(
                                "group {name}: term {term} was reported at {index} for leader {id:?}, and before for leader {other:?}"
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        // What the entry leaves: every pending message is addressed to a
        // member, alive unless it waits for a persistent member's rejoin,
        // and delivered to that member's current session.
        for (name, group) in &self.groups {
            for (name_, message) in &acked_now {
                if name_ == name {
                    let sender = group.messages.get(message).map(|m| m.from);
                    return Err(format!(
                        "group {name}: message {message} was acknowledged at {index} but its sender, session {:?}, was not told",
                        sender.map(|s| s.0)
                    ));
                }
            }
            for (id, m) in &group.messages {
                let Some(to) = &m.to else {
                    return Err(format!(
                        "group {name}: {:?} message {id} of send {} by session {} (at {}) was delivered to nobody",
                        m.kind, m.req, m.from.0, m.sent
                    ));
                };
                match group.members.get(to) {
                    None => {
                        return Err(format!(
                            "group {name}: after {index}, message {id} is still addressed to {to:?}, which left: it was neither redelivered nor reported failed"
                        ))
                    }
                    Some(MemberTrack { session: None, persistent }) => {
                        if m.kind != Kind::Direct || !persistent {
                            return Err(format!(
                                "group {name}: after {index}, {:?} message {id} is still addressed to dead member {to:?}: it was neither redelivered nor reported failed",
                                m.kind
                            ));
                        }
                    }
                    Some(MemberTrack {
                        session: Some(session),
                        ..
                    }) => {
                        if m.delivered != Some(*session) {
                            return Err(format!(
                                "group {name}: after {index}, message {id} for member {to:?} was not delivered to that member's session {}",
                                session.0
                            ));
                        }
                    }
                }
            }
        }
        for (name, ids, alive) in broadcasts {
            let group = &self.groups[&name];
            let reached: BTreeSet<String> = ids
                .iter()
                .filter_map(|id| group.messages.get(id).and_then(|m| m.to.clone()))
                .collect();
            let pending = ids
                .iter()
                .filter(|id| group.messages.contains_key(id))
                .count();
            if reached.len() != pending || !reached.is_subset(&alive) {
                return Err(format!(
                    "group {name}: the broadcast of messages {ids:?} at {index} reached {reached:?}, not each of the alive members {alive:?} once"
                ));
            }
        }
        Ok(())
    }
}

/// `session` becomes the leader of `election` in `term`.
fn elect(
    election: &mut ElectionTrack,
    name: &str,
    index: u64,
    session: SessionId,
    term: u64,
    live: &BTreeSet<SessionId>,
) -> Check {
    if !live.contains(&session) {
        return Err(format!(
            "election {name}: session {} was elected at {index} (term {term}) but is closed",
            session.0
        ));
    }
    if let Some((leader, held)) = election.leader {
        return Err(format!(
            "election {name}: two leaders: session {} was elected at {index} (term {term}) while session {} leads (term {held})",
            session.0, leader.0
        ));
    }
    if let Some(other) = election.terms.get(&term) {
        if *other != session {
            return Err(format!(
                "election {name}: term {term} was granted at {index} to session {}, and before to session {}",
                session.0, other.0
            ));
        }
    }
    if term <= election.last_term {
        return Err(format!(
            "election {name}: session {} was elected at {index} with term {term}, not above the previous leader's term {}",
            session.0, election.last_term
        ));
    }
    election.terms.insert(term, session);
    election.last_term = term;
    election.leader = Some((session, term));
    Ok(())
}
