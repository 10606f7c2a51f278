//! No message a peer can send makes the core panic or break its invariants:
//! arbitrary (including absurd) messages are fed to servers in every role.

use bytes::Bytes;
use copycat_raft::testing::Cluster;
use copycat_raft::{
    Config, ConfigError, Configuration, Entry, EntryPayload, LogIndex, MemberRole, Message,
    MessageBody, NodeId, RejectHint, SnapshotMeta, Term,
};
use proptest::prelude::*;

fn number() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..12, Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()]
}

fn configuration() -> impl Strategy<Value = Configuration> {
    proptest::collection::btree_map(
        (0u64..6).prop_map(NodeId),
        prop_oneof![
            Just(MemberRole::Voter),
            Just(MemberRole::Learner),
            Just(MemberRole::Passive),
            Just(MemberRole::Reserve)
        ],
        0..5,
    )
    .prop_map(|members| {
        let addresses = members
            .keys()
            .map(|id| (*id, format!("10.0.0.{}:5700", id.0)))
            .collect();
        Configuration { members, addresses }
    })
}

fn entry() -> impl Strategy<Value = Entry> {
    let payload = prop_oneof![
        Just(EntryPayload::Noop),
        proptest::collection::vec(any::<u8>(), 0..8)
            .prop_map(|v| EntryPayload::Command(Bytes::from(v))),
        configuration().prop_map(EntryPayload::Config),
    ];
    (number(), number(), payload).prop_map(|(term, index, payload)| Entry {
        term: Term(term),
        index: LogIndex(index),
        payload,
    })
}

/// Entries that are often well formed (contiguous) and sometimes not.
fn entries() -> impl Strategy<Value = (u64, Vec<Entry>)> {
    prop_oneof![
        proptest::collection::vec(entry(), 0..4).prop_map(|e| (0, e)),
        (0u64..10, 1u64..4, 0usize..4).prop_map(|(prev, term, count)| {
            let entries = (0..count as u64)
                .map(|i| Entry {
                    term: Term(term),
                    index: LogIndex(prev + 1 + i),
                    payload: EntryPayload::Command(Bytes::from(format!("f{i}"))),
                })
                .collect();
            (prev, entries)
        }),
    ]
}

fn body() -> impl Strategy<Value = MessageBody> {
    prop_oneof![
        (number(), number()).prop_map(|(i, t)| MessageBody::PreVote {
            last_index: LogIndex(i),
            last_term: Term(t)
        }),
        any::<bool>().prop_map(|granted| MessageBody::PreVoteResponse { granted }),
        (number(), number(), any::<bool>()).prop_map(|(i, t, transfer)| MessageBody::Vote {
            last_index: LogIndex(i),
            last_term: Term(t),
            transfer
        }),
        any::<bool>().prop_map(|granted| MessageBody::VoteResponse { granted }),
        (entries(), number(), number(), number()).prop_map(
            |((prev, entries), prev_term, commit, round)| {
                MessageBody::Append {
                    prev_index: LogIndex(prev),
                    prev_term: Term(prev_term % 4),
                    entries,
                    commit: LogIndex(commit),
                    read_round: round,
                }
            }
        ),
        (
            number(),
            proptest::option::of((number(), number())),
            number()
        )
            .prop_map(|(index, hint, round)| {
                MessageBody::AppendResponse {
                    index: LogIndex(index),
                    reject: hint.map(|(i, t)| RejectHint {
                        index: LogIndex(i),
                        term: Term(t),
                    }),
                    read_round: round,
                }
            }),
        (number(), number()).prop_map(|(c, r)| MessageBody::Heartbeat {
            commit: LogIndex(c),
            read_round: r
        }),
        number().prop_map(|r| MessageBody::HeartbeatResponse { read_round: r }),
        (number(), configuration(), number()).prop_map(|(c, config, i)| {
            MessageBody::ReserveHeartbeat {
                commit: LogIndex(c),
                config,
                config_index: LogIndex(i),
            }
        }),
        (
            number(),
            number(),
            configuration(),
            number(),
            proptest::collection::vec(any::<u8>(), 0..16),
            any::<bool>()
        )
            .prop_map(|(index, term, config, offset, data, done)| {
                MessageBody::InstallSnapshot {
                    meta: SnapshotMeta {
                        index: LogIndex(index),
                        term: Term(term),
                        config,
                    },
                    offset,
                    data: Bytes::from(data),
                    done,
                }
            }),
        (number(), number()).prop_map(|(i, o)| MessageBody::InstallSnapshotResponse {
            index: LogIndex(i),
            next_offset: o
        }),
        Just(MessageBody::TimeoutNow),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (
        0u64..6,
        0u64..5,
        prop_oneof![0u64..6, Just(u64::MAX)],
        body(),
    )
        .prop_map(|(from, to, term, body)| Message {
            from: NodeId(from),
            to: NodeId(to),
            term: Term(term),
            body,
        })
}

fn config() -> Config {
    let mut config = Config::new(NodeId(1));
    config.election_timeout_ms = 100;
    config.heartbeat_interval_ms = 20;
    config.lease_clock_drift_ms = 10;
    config
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_messages_never_panic(
        warmup in 0u64..40,
        messages in proptest::collection::vec(message(), 1..40),
    ) {
        let mut cluster = Cluster::new(&[1, 2, 3], config(), warmup);
        cluster.tracing = false;
        // Reach some state: no leader yet, or a leader with a few entries.
        for _ in 0..warmup {
            cluster.tick(10);
            cluster.stabilize();
        }
        if let Some(leader) = cluster.leader() {
            let raw = &mut cluster.nodes.get_mut(&leader).expect("leader").raw;
            let _ = raw.propose(vec![Bytes::from_static(b"x")]);
        }
        for message in messages {
            let to = message.to;
            if let Some(node) = cluster.nodes.get_mut(&to) {
                node.raw.step(message);
                node.raw.invariants();
                let _ = node.raw.ready();
                node.raw.invariants();
            }
        }
    }
}

#[test]
fn config_validate_rejects_inconsistent_settings() {
    let good = config();
    assert_eq!(good.validate(), Ok(()));
    type Change = Box<dyn Fn(&mut Config)>;
    let cases: Vec<(Change, &str)> = vec![
        (Box::new(|c| c.id = NodeId(0)), "id must not be 0"),
        (
            Box::new(|c| c.election_timeout_ms = 0),
            "election_timeout_ms must be positive",
        ),
        (
            Box::new(|c| c.heartbeat_interval_ms = 60),
            "heartbeat_interval_ms (60) must be at most half",
        ),
        (
            Box::new(|c| c.max_inflight_appends = 0),
            "max_inflight_appends must be positive",
        ),
        (
            Box::new(|c| c.max_append_bytes = 0),
            "max_append_bytes and max_append_entries",
        ),
        (
            Box::new(|c| c.lease_clock_drift_ms = 100),
            "lease_clock_drift_ms (100) must be below",
        ),
        (
            Box::new(|c| c.max_entry_bytes = c.max_uncommitted_bytes + 1),
            "max_entry_bytes",
        ),
        (
            Box::new(|c| c.snapshot_chunk_bytes = 0),
            "snapshot_chunk_bytes",
        ),
        (Box::new(|c| c.max_pending_reads = 0), "max_pending_reads"),
    ];
    for (change, expected) in cases {
        let mut config = config();
        change(&mut config);
        let Err(ConfigError(message)) = config.validate() else {
            panic!("accepted a bad config expecting {expected:?}");
        };
        assert!(
            message.contains(expected),
            "{message:?} should mention {expected:?}"
        );
    }
}
