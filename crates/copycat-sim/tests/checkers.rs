//! The primitive checkers must fail on bad histories, not only pass on good
//! ones. Each test feeds `PrimitiveChecker` hand-built log steps (what an
//! entry registered and closed, the command it applied with its answer, the
//! events it published) and asserts that a history breaking the rule is
//! reported with a message naming what went wrong, and that the same
//! history done right passes.

use bytes::Bytes;
use copycat_primitives::election::{ElectionCommand, ElectionEvent, ElectionOutput};
use copycat_primitives::group::{Delivery, GroupCommand, GroupEvent, GroupOutput};
use copycat_primitives::lock::{LockCommand, LockEvent, LockOutput};
use copycat_primitives::long::{LongCommand, LongOutput};
use copycat_primitives::queue::{QueueCommand, QueueOutput};
use copycat_primitives::semaphore::{SemaphoreCommand, SemaphoreEvent, SemaphoreOutput};
use copycat_primitives::{Command, Event, Notice, Output, ResourceError, ResourceInfo, Spec};
use copycat_proto::SessionId;
use copycat_sim::invariants::{PrimitiveChecker, PrimitiveStep};

const A: SessionId = SessionId(1);
const B: SessionId = SessionId(2);
const C: SessionId = SessionId(3);

/// Builds a history entry by entry.
struct History {
    steps: Vec<PrimitiveStep>,
}

impl History {
    /// Sessions A, B and C registered, and `name` opened as `spec`.
    fn new(name: &str, spec: Spec) -> Self {
        let mut history = Self { steps: Vec::new() };
        for session in [A, B, C] {
            let index = history.next();
            history.steps.push(PrimitiveStep {
                index,
                registered: Some(session),
                ..Default::default()
            });
        }
        let index = history.next();
        let open = Command::Open {
            name: name.into(),
            spec,
        };
        let opened = Output::Opened {
            created: true,
            info: ResourceInfo {
                name: name.into(),
                spec,
                created_index: index,
            },
        };
        history.command(A, open, Ok(opened), vec![]);
        history
    }

    fn next(&self) -> u64 {
        self.steps.len() as u64 + 1
    }

    /// An entry applying `command` of `session`, answered `result`, that
    /// published `events`.
    fn command(
        &mut self,
        session: SessionId,
        command: Command,
        result: Result<Output, ResourceError>,
        events: Vec<(SessionId, &str, Event)>,
    ) -> &mut Self {
        let index = self.next();
        self.steps.push(PrimitiveStep {
            index,
            command: Some((session, command, result)),
            events: notices(events),
            ..Default::default()
        });
        self
    }

    /// An entry closing `session` (an expiry), that published `events`.
    fn close(&mut self, session: SessionId, events: Vec<(SessionId, &str, Event)>) -> &mut Self {
        let index = self.next();
        self.steps.push(PrimitiveStep {
            index,
            closed: vec![session],
            events: notices(events),
            ..Default::default()
        });
        self
    }

    /// Run the checker over the history: the first violation, if any.
    fn check(&self) -> Result<(), String> {
        let mut checker = PrimitiveChecker::default();
        for step in &self.steps {
            checker.on_step(step)?;
        }
        Ok(())
    }
}

fn notices(events: Vec<(SessionId, &str, Event)>) -> Vec<(SessionId, Notice)> {
    events
        .into_iter()
        .map(|(session, resource, event)| {
            (
                session,
                Notice {
                    resource: resource.into(),
                    event,
                },
            )
        })
        .collect()
}

fn violation(history: &History, expected: &[&str]) {
    let error = history
        .check()
        .expect_err("the checker must report the violation");
    for part in expected {
        assert!(
            error.contains(part),
            "the report {error:?} should mention {part:?}"
        );
    }
}

// ----- counter -----

fn add(n: i64) -> Command {
    Command::Long {
        name: "counter".into(),
        command: LongCommand::AddAndGet(n),
    }
}

fn value(v: i64) -> Result<Output, ResourceError> {
    Ok(Output::Long(LongOutput::Value(v)))
}

#[test]
fn counter_checker_catches_a_lost_increment() {
    let mut good = History::new("counter", Spec::Long);
    good.command(A, add(1), value(1), vec![])
        .command(B, add(1), value(2), vec![])
        .command(A, add(1), value(3), vec![]);
    good.check()
        .expect("increments answering 1, 2, 3 are right");

    // The second increment was lost: the third answers 2 again.
    let mut bad = History::new("counter", Spec::Long);
    bad.command(A, add(1), value(1), vec![])
        .command(B, add(1), value(2), vec![])
        .command(A, add(1), value(2), vec![]);
    violation(
        &bad,
        &["counter counter", "answered 2", "applied so far sum to 3"],
    );
}

// ----- queue -----

fn offer(item: &str) -> Command {
    Command::Queue {
        name: "queue".into(),
        command: QueueCommand::Offer(Bytes::from(item.to_string())),
    }
}

fn poll() -> Command {
    Command::Queue {
        name: "queue".into(),
        command: QueueCommand::Poll,
    }
}

fn offered() -> Result<Output, ResourceError> {
    Ok(Output::Queue(QueueOutput::Bool(true)))
}

fn polled(item: Option<&str>) -> Result<Output, ResourceError> {
    Ok(Output::Queue(QueueOutput::Value(
        item.map(|i| Bytes::from(i.to_string())),
    )))
}

#[test]
fn queue_checker_catches_reordering_and_duplicate_delivery() {
    let mut good = History::new("queue", Spec::Queue);
    good.command(A, offer("x"), offered(), vec![])
        .command(B, offer("y"), offered(), vec![])
        .command(C, poll(), polled(Some("x")), vec![])
        .command(C, poll(), polled(Some("y")), vec![])
        .command(C, poll(), polled(None), vec![]);
    good.check().expect("a FIFO history is right");

    let mut reordered = History::new("queue", Spec::Queue);
    reordered
        .command(A, offer("x"), offered(), vec![])
        .command(B, offer("y"), offered(), vec![])
        .command(C, poll(), polled(Some("y")), vec![]);
    violation(&reordered, &["queue queue", "oldest item offered"]);

    let mut twice = History::new("queue", Spec::Queue);
    twice
        .command(A, offer("x"), offered(), vec![])
        .command(C, poll(), polled(Some("x")), vec![])
        .command(B, poll(), polled(Some("x")), vec![]);
    violation(&twice, &["delivered", "a second time"]);

    let mut invented = History::new("queue", Spec::Queue);
    invented.command(C, poll(), polled(Some("z")), vec![]);
    violation(&invented, &["never offered"]);
}

// ----- locks and closed sessions -----

fn lock(req: u64) -> Command {
    Command::Lock {
        name: "lock".into(),
        command: LockCommand::Lock {
            req,
            timeout_ms: None,
        },
    }
}

fn unlock() -> Command {
    Command::Lock {
        name: "lock".into(),
        command: LockCommand::Unlock,
    }
}

#[test]
fn lock_checker_catches_a_grant_to_a_closed_session() {
    let granted = |token| Event::Lock(LockEvent::Granted { req: 7, token });
    let spec = Spec::Lock { reentrant: false };
    // B waits; A closes; the lock goes to B.
    let mut good = History::new("lock", spec);
    good.command(
        A,
        lock(1),
        Ok(Output::Lock(LockOutput::Acquired(5))),
        vec![],
    )
    .command(B, lock(7), Ok(Output::Lock(LockOutput::Waiting)), vec![])
    .close(A, vec![(B, "lock", granted(7))]);
    good.check().expect("the lock passes to the waiter");

    // B's session closed, and the lock is granted to it afterwards.
    let mut bad = History::new("lock", spec);
    bad.command(
        A,
        lock(1),
        Ok(Output::Lock(LockOutput::Acquired(5))),
        vec![],
    )
    .command(B, lock(7), Ok(Output::Lock(LockOutput::Waiting)), vec![])
    .close(B, vec![])
    .command(
        A,
        unlock(),
        Ok(Output::Lock(LockOutput::Unit)),
        vec![(B, "lock", granted(8))],
    );
    violation(
        &bad,
        &["lock lock", "session 2", "had already closed or expired"],
    );

    // The holder's session closed, but the lock did not pass on: a new
    // try-lock is refused while nobody holds it.
    let mut stuck = History::new("lock", spec);
    stuck
        .command(
            A,
            lock(1),
            Ok(Output::Lock(LockOutput::Acquired(5))),
            vec![],
        )
        .close(A, vec![])
        .command(
            B,
            lock(2),
            Ok(Output::Lock(LockOutput::NotAcquired)),
            vec![],
        );
    violation(&stuck, &["refused or queued", "while nobody held the lock"]);
}

// ----- semaphore -----

fn acquire(req: u64, permits: u64, timeout_ms: Option<u64>) -> Command {
    Command::Semaphore {
        name: "sem".into(),
        command: SemaphoreCommand::Acquire {
            req,
            permits,
            timeout_ms,
        },
    }
}

fn release(permits: u64) -> Command {
    Command::Semaphore {
        name: "sem".into(),
        command: SemaphoreCommand::Release { permits },
    }
}

fn sem(output: SemaphoreOutput) -> Result<Output, ResourceError> {
    Ok(Output::Semaphore(output))
}

fn sem_granted(req: u64) -> Event {
    Event::Semaphore(SemaphoreEvent::Acquired { req })
}

const THREE: Spec = Spec::Semaphore { permits: 3 };

#[test]
fn semaphore_checker_passes_a_correct_history() {
    let mut good = History::new("sem", THREE);
    good.command(
        A,
        acquire(1, 2, None),
        sem(SemaphoreOutput::Acquired),
        vec![],
    )
    .command(
        B,
        acquire(2, 2, None),
        sem(SemaphoreOutput::Waiting),
        vec![],
    )
    .command(
        C,
        acquire(3, 1, Some(0)),
        sem(SemaphoreOutput::NotAcquired),
        vec![],
    )
    .command(
        A,
        release(1),
        sem(SemaphoreOutput::Unit),
        vec![(B, "sem", sem_granted(2))],
    )
    .command(
        A,
        release(2),
        Err(ResourceError::NotEnoughPermits {
            held: 1,
            requested: 2,
        }),
        vec![],
    )
    .command(
        C,
        acquire(4, 1, None),
        sem(SemaphoreOutput::Waiting),
        vec![],
    )
    // A's session expires: its permit returns and goes to C.
    .close(A, vec![(C, "sem", sem_granted(4))]);
    good.check().expect("a correct semaphore history");
}

#[test]
fn semaphore_checker_catches_over_granted_permits() {
    // 2 + 2 of 3 permits: over-granted.
    let mut bad = History::new("sem", THREE);
    bad.command(
        A,
        acquire(1, 2, None),
        sem(SemaphoreOutput::Acquired),
        vec![],
    )
    .command(
        B,
        acquire(2, 2, None),
        sem(SemaphoreOutput::Acquired),
        vec![],
    );
    violation(
        &bad,
        &["semaphore sem", "over-granted", "hold 4 of 3 permits"],
    );

    // The same through a waiter granted by event while a holder keeps its
    // permits.
    let mut by_event = History::new("sem", THREE);
    by_event
        .command(
            A,
            acquire(1, 3, None),
            sem(SemaphoreOutput::Acquired),
            vec![],
        )
        .command(
            B,
            acquire(2, 1, None),
            sem(SemaphoreOutput::Waiting),
            vec![],
        )
        .command(
            C,
            acquire(3, 1, Some(0)),
            sem(SemaphoreOutput::NotAcquired),
            vec![(B, "sem", sem_granted(2))],
        );
    violation(&by_event, &["over-granted", "hold 4 of 3"]);
}

#[test]
fn semaphore_checker_catches_permits_not_returned_by_a_closed_session() {
    // A holds all three permits and expires; B waits for one and is never
    // granted it.
    let mut bad = History::new("sem", THREE);
    bad.command(
        A,
        acquire(1, 3, None),
        sem(SemaphoreOutput::Acquired),
        vec![],
    )
    .command(
        B,
        acquire(2, 1, None),
        sem(SemaphoreOutput::Waiting),
        vec![],
    )
    .close(A, vec![]);
    violation(
        &bad,
        &["still waits for 1 permits although 3 of 3 are free"],
    );

    // Or, with no waiter, a try-acquire after the expiry is refused.
    let mut refused = History::new("sem", THREE);
    refused
        .command(
            A,
            acquire(1, 3, None),
            sem(SemaphoreOutput::Acquired),
            vec![],
        )
        .close(A, vec![])
        .command(
            B,
            acquire(2, 1, Some(0)),
            sem(SemaphoreOutput::NotAcquired),
            vec![],
        );
    violation(&refused, &["answered NotAcquired", "3 of 3 were free"]);
}

#[test]
fn semaphore_checker_catches_unchecked_releases_and_overtaking() {
    let mut bad = History::new("sem", THREE);
    bad.command(
        A,
        acquire(1, 1, None),
        sem(SemaphoreOutput::Acquired),
        vec![],
    )
    .command(A, release(2), sem(SemaphoreOutput::Unit), vec![]);
    violation(&bad, &["released 2 permits", "but holds 1"]);

    let mut refused = History::new("sem", THREE);
    refused
        .command(
            A,
            acquire(1, 2, None),
            sem(SemaphoreOutput::Acquired),
            vec![],
        )
        .command(
            A,
            release(1),
            Err(ResourceError::NotEnoughPermits {
                held: 0,
                requested: 1,
            }),
            vec![],
        );
    violation(&refused, &["holding 2 permits was refused releasing 1"]);

    // B waits for 3; C's request for 1 must not overtake it.
    let mut overtaken = History::new("sem", THREE);
    overtaken
        .command(
            A,
            acquire(1, 2, None),
            sem(SemaphoreOutput::Acquired),
            vec![],
        )
        .command(
            B,
            acquire(2, 3, None),
            sem(SemaphoreOutput::Waiting),
            vec![],
        )
        .command(
            C,
            acquire(3, 1, None),
            sem(SemaphoreOutput::Acquired),
            vec![],
        );
    violation(&overtaken, &["overtaking request 2 of session 2"]);
}

// ----- election -----

fn campaign(req: u64) -> Command {
    Command::Election {
        name: "election".into(),
        command: ElectionCommand::Campaign {
            req,
            timeout_ms: None,
        },
    }
}

fn election(command: ElectionCommand) -> Command {
    Command::Election {
        name: "election".into(),
        command,
    }
}

fn answer(output: ElectionOutput) -> Result<Output, ResourceError> {
    Ok(Output::Election(output))
}

fn elected(req: u64, term: u64) -> Event {
    Event::Election(ElectionEvent::Elected { req, term })
}

fn changed(leader: Option<(SessionId, u64)>) -> Event {
    Event::Election(ElectionEvent::Changed { leader })
}

#[test]
fn election_checker_passes_a_correct_history() {
    let mut good = History::new("election", Spec::Election);
    good.command(
        C,
        election(ElectionCommand::Listen),
        answer(ElectionOutput::Unit),
        vec![],
    )
    .command(
        A,
        campaign(1),
        answer(ElectionOutput::Elected(6)),
        vec![(C, "election", changed(Some((A, 6))))],
    )
    .command(A, campaign(2), answer(ElectionOutput::Elected(6)), vec![])
    .command(B, campaign(3), answer(ElectionOutput::Waiting), vec![])
    .command(
        A,
        election(ElectionCommand::Resign),
        answer(ElectionOutput::Unit),
        vec![
            (B, "election", elected(3, 9)),
            (C, "election", changed(Some((B, 9)))),
        ],
    )
    .command(A, campaign(4), answer(ElectionOutput::Waiting), vec![])
    // B's session expires: A leads next, in a higher term.
    .close(
        B,
        vec![
            (A, "election", elected(4, 11)),
            (C, "election", changed(Some((A, 11)))),
        ],
    );
    good.check().expect("a correct election history");
}

#[test]
fn election_checker_catches_two_leaders_in_one_term() {
    // A resigned, and B is elected with A's term.
    let mut bad = History::new("election", Spec::Election);
    bad.command(A, campaign(1), answer(ElectionOutput::Elected(6)), vec![])
        .command(
            A,
            election(ElectionCommand::Resign),
            answer(ElectionOutput::Unit),
            vec![],
        )
        .command(B, campaign(2), answer(ElectionOutput::Elected(6)), vec![]);
    violation(
        &bad,
        &[
            "election election",
            "term 6",
            "session 2",
            "before to session 1",
        ],
    );

    // Two leaders at once.
    let mut both = History::new("election", Spec::Election);
    both.command(A, campaign(1), answer(ElectionOutput::Elected(6)), vec![])
        .command(B, campaign(2), answer(ElectionOutput::Elected(7)), vec![]);
    violation(&both, &["two leaders", "while session 1 leads (term 6)"]);

    // Terms going back.
    let mut back = History::new("election", Spec::Election);
    back.command(A, campaign(1), answer(ElectionOutput::Elected(6)), vec![])
        .command(
            A,
            election(ElectionCommand::Resign),
            answer(ElectionOutput::Unit),
            vec![],
        )
        .command(B, campaign(2), answer(ElectionOutput::Elected(5)), vec![]);
    violation(&back, &["term 5", "not above the previous leader's term 6"]);
}

#[test]
fn election_checker_catches_an_expired_leader_still_reported() {
    // A leads, its session expires; C, listening, is told A still leads.
    let mut bad = History::new("election", Spec::Election);
    bad.command(
        C,
        election(ElectionCommand::Listen),
        answer(ElectionOutput::Unit),
        vec![],
    )
    .command(
        A,
        campaign(1),
        answer(ElectionOutput::Elected(6)),
        vec![(C, "election", changed(Some((A, 6))))],
    )
    .close(A, vec![(C, "election", changed(Some((A, 6))))]);
    violation(
        &bad,
        &[
            "that session 1 leads (term 6)",
            "that leader's session closed",
        ],
    );

    // The leadership is kept past the expiry: B is refused while nobody
    // leads.
    let mut kept = History::new("election", Spec::Election);
    kept.command(A, campaign(1), answer(ElectionOutput::Elected(6)), vec![])
        .close(A, vec![])
        .command(B, campaign(2), answer(ElectionOutput::Waiting), vec![]);
    violation(&kept, &["answered Waiting", "while nobody led"]);

    // The listener is not told the leader left.
    let mut untold = History::new("election", Spec::Election);
    untold
        .command(
            C,
            election(ElectionCommand::Listen),
            answer(ElectionOutput::Unit),
            vec![],
        )
        .command(
            A,
            campaign(1),
            answer(ElectionOutput::Elected(6)),
            vec![(C, "election", changed(Some((A, 6))))],
        )
        .close(A, vec![]);
    violation(&untold, &["listener session 3 was not told"]);
}

// ----- group -----

fn group(command: GroupCommand) -> Command {
    Command::Group {
        name: "group".into(),
        command,
    }
}

fn join(id: &str, persistent: bool) -> Command {
    group(GroupCommand::Join {
        id: Some(id.into()),
        persistent,
        metadata: Bytes::new(),
    })
}

fn joined(id: &str) -> Result<Output, ResourceError> {
    Ok(Output::Group(GroupOutput::Joined(id.into())))
}

fn send(req: u64, to: Delivery) -> Command {
    group(GroupCommand::Send {
        req,
        to,
        payload: Bytes::from_static(b"hi"),
        reply: false,
    })
}

fn sent(ids: &[u64]) -> Result<Output, ResourceError> {
    Ok(Output::Group(GroupOutput::Sent(ids.to_vec())))
}

fn ack(message: u64) -> Command {
    group(GroupCommand::Ack {
        message,
        reply: None,
    })
}

fn unit() -> Result<Output, ResourceError> {
    Ok(Output::Group(GroupOutput::Unit))
}

fn message(message: u64, member: &str, from: SessionId) -> Event {
    Event::Group(GroupEvent::Message {
        message,
        member: member.into(),
        from,
        payload: Bytes::from_static(b"hi"),
        reply: false,
    })
}

fn delivered(req: u64, message: u64, member: &str) -> Event {
    Event::Group(GroupEvent::Delivered {
        req,
        message,
        member: member.into(),
        reply: None,
    })
}

fn failed(req: u64, message: u64) -> Event {
    Event::Group(GroupEvent::Failed { req, message })
}

/// Members a (session A, ephemeral) and b (session B, persistent), and a
/// random message 0 from C delivered to a.
fn members_and_a_message() -> History {
    let mut history = History::new("group", Spec::Group);
    history
        .command(A, join("a", false), joined("a"), vec![])
        .command(B, join("b", true), joined("b"), vec![])
        .command(
            C,
            send(10, Delivery::Random),
            sent(&[0]),
            vec![(A, "group", message(0, "a", C))],
        );
    history
}

#[test]
fn group_checker_passes_a_correct_history() {
    let mut good = members_and_a_message();
    // a's session expires: message 0 goes to b, which acknowledges it; a
    // direct message to b waits while b is dead and comes with its rejoin;
    // a broadcast reaches each alive member once.
    good.close(A, vec![(B, "group", message(0, "b", C))])
        .command(B, ack(0), unit(), vec![(C, "group", delivered(10, 0, "b"))])
        .close(B, vec![])
        .command(
            C,
            send(11, Delivery::Direct("b".into())),
            sent(&[1]),
            vec![],
        )
        .command(
            A,
            join("b", true),
            joined("b"),
            vec![(A, "group", message(1, "b", C))],
        )
        .command(C, join("c", false), joined("c"), vec![])
        .command(
            C,
            send(12, Delivery::Broadcast),
            sent(&[2, 3]),
            vec![
                (A, "group", message(2, "b", C)),
                (C, "group", message(3, "c", C)),
            ],
        )
        // c leaves: its copy of the broadcast fails.
        .command(
            C,
            group(GroupCommand::Leave("c".into())),
            unit(),
            vec![(C, "group", failed(12, 3))],
        );
    good.check().expect("a correct group history");
}

#[test]
fn group_checker_catches_a_message_lost_with_its_recipient() {
    // a's session expires with message 0 unacknowledged: it is neither
    // redelivered to b nor reported failed.
    let mut bad = members_and_a_message();
    bad.close(A, vec![]);
    violation(
        &bad,
        &[
            "group group",
            "message 0 is still addressed to \"a\", which left",
            "neither redelivered nor reported failed",
        ],
    );

    // Failing it is wrong too while b is alive to take it.
    let mut failed_early = members_and_a_message();
    failed_early.close(A, vec![(C, "group", failed(10, 0))]);
    violation(
        &failed_early,
        &[
            "random message 0 was reported failed",
            "are alive to take it",
        ],
    );
}

#[test]
fn group_checker_catches_delivery_after_leaving_and_double_acknowledgement() {
    // a left; message 1 is delivered to it afterwards.
    let mut bad = members_and_a_message();
    bad.command(
        A,
        group(GroupCommand::Leave("a".into())),
        unit(),
        vec![(B, "group", message(0, "b", C))],
    )
    .command(
        C,
        send(11, Delivery::Random),
        sent(&[1]),
        vec![(A, "group", message(1, "a", C))],
    );
    violation(
        &bad,
        &[
            "message 1 was delivered",
            "to member \"a\", which is no member",
        ],
    );

    // Message 0 is acknowledged twice.
    let mut twice = members_and_a_message();
    twice
        .command(A, ack(0), unit(), vec![(C, "group", delivered(10, 0, "a"))])
        .command(A, ack(0), unit(), vec![(C, "group", delivered(10, 0, "a"))]);
    violation(
        &twice,
        &["message 0 acknowledged", "was already acknowledged"],
    );

    // The acknowledgement is told to the sender twice in one entry.
    let mut told_twice = members_and_a_message();
    told_twice.command(
        A,
        ack(0),
        unit(),
        vec![
            (C, "group", delivered(10, 0, "a")),
            (C, "group", delivered(10, 0, "a")),
        ],
    );
    violation(&told_twice, &["was not acknowledged at this entry"]);

    // A member that is not the recipient acknowledges it.
    let mut stranger = members_and_a_message();
    stranger.command(B, ack(0), unit(), vec![(C, "group", delivered(10, 0, "b"))]);
    violation(&stranger, &["which is not that member's"]);
}

#[test]
fn leader_query_checker_catches_an_expired_leader_still_reported() {
    let leader = || copycat_primitives::Query::Election {
        name: "election".into(),
        query: copycat_primitives::election::ElectionQuery::Leader,
    };
    let mut history = History::new("election", Spec::Election);
    history
        .command(A, campaign(1), answer(ElectionOutput::Elected(6)), vec![])
        .close(A, vec![]);
    let mut checker = PrimitiveChecker::default();
    for step in &history.steps {
        checker.on_step(step).expect("a correct history");
    }
    let (elected_at, closed_at) = (5, 6);
    // Before the election existed, while A led, after A's session closed.
    let not_found = Err(ResourceError::NotFound {
        name: "election".into(),
    });
    checker
        .check_query(&leader(), &not_found, 3)
        .expect("no election yet");
    checker
        .check_query(
            &leader(),
            &answer(ElectionOutput::Leader(Some((A, 6)))),
            elected_at,
        )
        .expect("A leads at its election");
    checker
        .check_query(&leader(), &answer(ElectionOutput::Leader(None)), closed_at)
        .expect("nobody leads once A's session closed");
    let error = checker
        .check_query(
            &leader(),
            &answer(ElectionOutput::Leader(Some((A, 6)))),
            closed_at,
        )
        .expect_err("a closed leader reported by a query");
    for part in [
        "leader query answered",
        "from the state at 6",
        "the log gives leader None there",
        "session 1 lost its leadership of term 6 when its session closed",
    ] {
        assert!(error.contains(part), "{error:?} should mention {part:?}");
    }
    let stale = checker
        .check_query(&leader(), &answer(ElectionOutput::Leader(None)), elected_at)
        .expect_err("a leader query missing the leader");
    assert!(
        stale.contains("the log gives leader Some((s1, 6)) there"),
        "{stale}"
    );
}
