//! Each planted Raft bug really changes behaviour: every test runs one
//! scenario with the bug switched on and off (`copycat_planted::with`) and
//! shows the wrong behaviour happens only with it. Whether the simulator's
//! checkers catch the bugs is tested in `copycat-sim`.
//!
//! Run with `cargo test -p copycat-raft --features planted-bugs`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use copycat_planted::{with, PlantedBug};
use copycat_raft::testing::Cluster;
use copycat_raft::{
    Config, ConfigChangeError, Configuration, Entry, EntryPayload, HardState, LogIndex,
    MembershipChange, Message, MessageBody, NodeId, PersistentState, RawNode, ReadMode, ReadPath,
    SnapshotMeta, Term, Time,
};

fn config() -> Config {
    let mut config = Config::new(NodeId(1));
    config.election_timeout_ms = 100;
    config.heartbeat_interval_ms = 20;
    config.lease_clock_drift_ms = 10;
    config.promote_lag_entries = 0;
    config.snapshot_trailing_entries = 0;
    config
}

fn voters(ids: &[u64]) -> Configuration {
    Configuration::with_voters(ids.iter().map(|id| NodeId(*id)))
}

/// `(index, term)` pairs as no-op entries.
fn entries(log: &[(u64, u64)]) -> Vec<Entry> {
    log.iter()
        .map(|(index, term)| Entry {
            term: Term(*term),
            index: LogIndex(*index),
            payload: EntryPayload::Noop,
        })
        .collect()
}

fn state(term: u64, log: &[(u64, u64)], members: &[u64]) -> PersistentState {
    PersistentState {
        hard_state: HardState {
            term: Term(term),
            vote: None,
        },
        snapshot: SnapshotMeta {
            index: LogIndex::ZERO,
            term: Term::ZERO,
            config: voters(members),
        },
        entries: entries(log),
    }
}

/// A server built directly from `state`, with stickiness off so that it
/// votes at once.
fn server(id: u64, state: PersistentState) -> RawNode {
    let mut config = config();
    config.id = NodeId(id);
    config.check_quorum = false;
    config.pre_vote = false;
    RawNode::new(config, state, 0, Time(0)).expect("valid state")
}

fn append(
    from: u64,
    to: u64,
    term: u64,
    prev: (u64, u64),
    log: &[(u64, u64)],
    commit: u64,
) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body: MessageBody::Append {
            prev_index: LogIndex(prev.0),
            prev_term: Term(prev.1),
            entries: entries(log),
            commit: LogIndex(commit),
            read_round: 0,
        },
    }
}

fn elected(ids: &[u64]) -> (Cluster, NodeId) {
    let mut cluster = Cluster::new(ids, config(), 3);
    cluster.tracing = false;
    let leader = cluster.elect(10, 5_000).expect("a leader");
    (cluster, leader)
}

/// Deliver queued messages one at a time (processing readies after each)
/// until nothing moves, calling `watch` after every step.
fn run_watching(cluster: &mut Cluster, mut watch: impl FnMut(&Cluster)) {
    for _ in 0..10_000 {
        let mut moved = cluster.process_all();
        watch(cluster);
        let queued = std::mem::take(&mut cluster.network);
        moved |= !queued.is_empty();
        for message in queued {
            cluster.deliver(message);
            cluster.process_all();
            watch(cluster);
        }
        if !moved {
            return;
        }
    }
    panic!("did not settle");
}

#[test]
fn commit_previous_term_commits_an_old_entry_by_counting_replicas() {
    // Figure 8: node 1 led term 2 and appended 2/2 alone; terms moved on to
    // 3. Node 1 wins term 4, appends its no-op 3/4 and sends one entry per
    // append, so followers acknowledge 2/2 before 3/4. Counting replicas of
    // 2/2 (a term-2 entry) must not commit it: a server with a term-3 entry
    // at index 2 could still be elected and overwrite it.
    let run = |bug| {
        with(bug, || {
            let mut template = config();
            template.max_append_entries = 1;
            template.check_quorum = false;
            let mut cluster = Cluster::new(&[], template, 0);
            cluster.tracing = false;
            cluster.add_node(NodeId(1), state(3, &[(1, 1), (2, 2)], &[1, 2, 3]));
            cluster.add_node(NodeId(2), state(3, &[(1, 1)], &[1, 2, 3]));
            cluster.add_node(NodeId(3), state(3, &[(1, 1)], &[1, 2, 3]));
            cluster.node_mut(1).raw.campaign();
            let mut commits_seen = Vec::new();
            run_watching(&mut cluster, |cluster| {
                let raw = &cluster.node(1).raw;
                let commit = raw.commit_index();
                if commits_seen.last() != Some(&commit) {
                    commits_seen.push(commit);
                }
            });
            assert_eq!(cluster.node(1).raw.term(), Term(4));
            assert!(cluster.node(1).raw.is_leader());
            commits_seen
        })
    };
    // Correct: the commit index (0 after the restart) jumps straight to the
    // term-4 no-op, committing 2/2 indirectly.
    assert_eq!(run(None), vec![LogIndex(0), LogIndex(3)]);
    // Buggy: it stops at the term-2 entry, committed by counting replicas.
    assert_eq!(
        run(Some(PlantedBug::CommitPreviousTerm)),
        vec![LogIndex(0), LogIndex(2), LogIndex(3)]
    );
}

#[test]
fn follower_commit_uncapped_commits_a_stale_suffix() {
    // Node 2 holds 3/1 from a deposed leader; the leader of term 2 holds 3/2
    // and has committed it. Its probe proves only the prefix up to 2/1.
    let run = |bug| {
        with(bug, || {
            let mut follower = server(2, state(2, &[(1, 1), (2, 1), (3, 1)], &[1, 2, 3]));
            follower.step(append(1, 2, 2, (2, 1), &[], 3));
            follower.commit_index()
        })
    };
    assert_eq!(run(None), LogIndex(2));
    // The buggy follower commits 3/1, an entry the leader does not have.
    assert_eq!(run(Some(PlantedBug::FollowerCommitUncapped)), LogIndex(3));
}

#[test]
fn vote_without_log_check_votes_for_a_candidate_missing_entries() {
    let run = |bug| {
        with(bug, || {
            let mut voter = server(3, state(1, &[(1, 1), (2, 1)], &[1, 2, 3]));
            voter.step(Message {
                from: NodeId(2),
                to: NodeId(3),
                term: Term(2),
                body: MessageBody::Vote {
                    last_index: LogIndex(1),
                    last_term: Term(1),
                    transfer: false,
                },
            });
            let ready = voter.ready();
            let granted = ready
                .messages_after_persist
                .iter()
                .any(|m| matches!(m.body, MessageBody::VoteResponse { granted: true }));
            (granted, voter.hard_state().vote)
        })
    };
    assert_eq!(run(None), (false, None));
    assert_eq!(
        run(Some(PlantedBug::VoteWithoutLogCheck)),
        (true, Some(NodeId(2)))
    );
}

#[test]
fn read_index_without_quorum_answers_a_cut_off_leader() {
    let run = |bug| {
        with(bug, || {
            let (mut cluster, leader) = elected(&[1, 2, 3]);
            let others: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != leader.0).collect();
            cluster.partition(&[leader.0], &others);
            let now = cluster.now;
            let path = cluster
                .node_mut(leader.0)
                .raw
                .read(7, ReadMode::ReadIndex, now)
                .expect("the leader accepts the read");
            cluster.stabilize();
            (path, cluster.node(leader.0).reads.get(&7).cloned())
        })
    };
    // Correct: the read waits for a quorum the partition never delivers.
    assert_eq!(run(None), (ReadPath::QuorumRound, None));
    // Buggy: answered although no follower confirmed the leadership.
    let (path, answer) = run(Some(PlantedBug::ReadIndexWithoutQuorum));
    assert_eq!(path, ReadPath::QuorumRound);
    assert!(answer.is_some_and(|read| read.result.is_ok()));
}

#[test]
fn lease_from_ack_time_outlasts_the_round_that_earned_it() {
    // The leader sends a heartbeat round, the answers arrive 15 ms later.
    let run = |bug| {
        with(bug, || {
            let (mut cluster, leader) = elected(&[1, 2, 3]);
            let raw = &cluster.node(leader.0).raw;
            let sent = raw.now();
            // Wait for the next heartbeat round, and note its send time.
            let mut sent_at = sent;
            while !cluster
                .network
                .iter()
                .any(|m| matches!(m.body, MessageBody::Heartbeat { .. }))
            {
                cluster.tick(1);
                sent_at = cluster.now;
            }
            cluster.tick(15);
            let heartbeats = std::mem::take(&mut cluster.network);
            for heartbeat in heartbeats {
                cluster.deliver(heartbeat);
            }
            cluster.process_all();
            // Hand the answers to the leader directly, so that the lease can
            // be observed before the invariants look at it.
            let answers = std::mem::take(&mut cluster.network);
            let raw = &mut cluster.node_mut(leader.0).raw;
            for answer in answers {
                raw.step(answer);
            }
            let lease = raw.lease_until().expect("a lease");
            let invariants_hold = catch_unwind(AssertUnwindSafe(|| raw.invariants())).is_ok();
            (lease.0 - sent_at.0, invariants_hold)
        })
    };
    let lease_ms = 100 - 10;
    assert_eq!(run(None), (lease_ms, true));
    // Buggy: the lease runs from the arrival of the answers, 15 ms too long,
    // and `invariants()` catches it.
    assert_eq!(
        run(Some(PlantedBug::LeaseFromAckTime)),
        (lease_ms + 15, false)
    );
}

#[test]
fn keep_conflicting_suffix_leaves_a_deposed_leaders_entries() {
    // Node 2 holds 2/1 and 3/1 from a deposed leader; the leader of term 2
    // sends its own entry 2/2.
    let run = |bug| {
        with(bug, || {
            let mut follower = server(2, state(2, &[(1, 1), (2, 1), (3, 1)], &[1, 2, 3]));
            follower.step(append(1, 2, 2, (1, 1), &[(2, 2)], 1));
            (
                follower.last_index(),
                follower.term_at(LogIndex(2)),
                follower.term_at(LogIndex(3)),
            )
        })
    };
    assert_eq!(run(None), (LogIndex(2), Some(Term(2)), None));
    // Buggy: 3/1 survives after the leader's 2/2, a log no leader ever had.
    assert_eq!(
        run(Some(PlantedBug::KeepConflictingSuffix)),
        (LogIndex(3), Some(Term(2)), Some(Term(1)))
    );
}

#[test]
fn no_noop_on_election_serves_reads_before_committing_in_the_term() {
    let run = |bug| {
        with(bug, || {
            let (mut cluster, leader) = elected(&[1, 2, 3]);
            let now = cluster.now;
            let raw = &mut cluster.node_mut(leader.0).raw;
            let path = raw
                .read(7, ReadMode::ReadIndex, now)
                .expect("the leader accepts the read");
            let term = raw.term();
            cluster.stabilize();
            let raw = &cluster.node(leader.0).raw;
            let committed_in_term = raw.term_at(raw.commit_index()) == Some(term);
            let answered = cluster
                .node(leader.0)
                .reads
                .get(&7)
                .is_some_and(|read| read.result.is_ok());
            (path, answered, committed_in_term)
        })
    };
    // Correct: the no-op committed during the election; the read is
    // confirmed by a round, with an entry of the term committed.
    assert_eq!(run(None), (ReadPath::QuorumRound, true, true));
    // Buggy: no entry of the term exists, yet the read is served.
    assert_eq!(
        run(Some(PlantedBug::NoNoopOnElection)),
        (ReadPath::QuorumRound, true, false)
    );
}

#[test]
fn two_config_changes_are_accepted_at_once() {
    let run = |bug| {
        with(bug, || {
            let (mut cluster, leader) = elected(&[1, 2, 3]);
            cluster.add_node(NodeId(4), PersistentState::default());
            cluster.add_node(NodeId(5), PersistentState::default());
            let raw = &mut cluster.node_mut(leader.0).raw;
            raw.change_membership(MembershipChange::AddPassive(NodeId(4)), None)
                .expect("the first change");
            raw.change_membership(MembershipChange::AddPassive(NodeId(5)), None)
        })
    };
    assert_eq!(run(None), Err(ConfigChangeError::ChangeInProgress));
    assert!(run(Some(PlantedBug::TwoConfigChanges)).is_ok());
}

#[test]
fn existing_raft_bugs_still_change_behaviour() {
    // ApplyUncommitted: a proposal is applied by the leader before any
    // follower has it.
    let run = |bug| {
        with(bug, || {
            let (mut cluster, leader) = elected(&[1, 2, 3]);
            cluster
                .node_mut(leader.0)
                .raw
                .propose(vec![Bytes::from("x")])
                .expect("leader");
            cluster.process_all();
            cluster.node(leader.0).applied.len()
        })
    };
    assert_eq!(run(None), 0);
    assert_eq!(run(Some(PlantedBug::ApplyUncommitted)), 1);
}
