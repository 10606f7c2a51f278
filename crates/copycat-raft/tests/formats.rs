//! The exact bytes of the Raft types as the storage and wire layers encode
//! them (postcard): log entries of every payload kind, messages of every
//! kind, and the plain types the meta and snapshot files embed. Pinned in
//! `testdata/formats/*.txt`; see `tests/support/golden_bytes.rs`.
//! `REWRITE=1 cargo test -p copycat-raft --test formats` rewrites them, which
//! is only right together with a deliberate format version bump.

#[path = "support/golden_bytes.rs"]
mod golden_bytes;

use std::fmt::Debug;
use std::path::Path;

use bytes::Bytes;
use copycat_raft::{
    Configuration, Entry, EntryPayload, HardState, LogIndex, MemberRole, Message, MessageBody,
    NodeId, RejectHint, SnapshotMeta, Term,
};
use golden_bytes::{sample, Sample};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encode with postcard and check that the bytes decode back to `value`.
fn encode<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) -> Vec<u8> {
    let bytes = postcard::to_allocvec(value).expect("encodes");
    let decoded: T = postcard::from_bytes(&bytes).expect("decodes");
    assert_eq!(&decoded, value);
    bytes
}

/// A configuration with every role, ids chosen to need one- and two-byte
/// varints.
fn config() -> Configuration {
    let mut config = Configuration::with_voters([NodeId(1), NodeId(2)]);
    config.members.insert(NodeId(3), MemberRole::Learner);
    config.members.insert(NodeId(4), MemberRole::Passive);
    config.members.insert(NodeId(300), MemberRole::Reserve);
    config.addresses.insert(NodeId(1), "10.0.0.1:5700".into());
    config
        .addresses
        .insert(NodeId(300), "copycat-300.example:5700".into());
    config
}

fn entry(payload: EntryPayload) -> Entry {
    Entry {
        term: Term(3),
        index: LogIndex(200),
        payload,
    }
}

/// Every payload kind. The match is exhaustive: a new kind does not compile
/// until it has a sample here.
fn entry_name(payload: &EntryPayload) -> &'static str {
    match payload {
        EntryPayload::Noop => "noop",
        EntryPayload::Command(data) if data.is_empty() => "command-empty",
        EntryPayload::Command(_) => "command",
        EntryPayload::Config(_) => "config",
    }
}

fn entries() -> Vec<Entry> {
    vec![
        entry(EntryPayload::Noop),
        entry(EntryPayload::Command(Bytes::from_static(b"put x 1"))),
        entry(EntryPayload::Command(Bytes::new())),
        entry(EntryPayload::Config(config())),
    ]
}

/// Every message kind, exhaustively (see [`entry_name`]).
fn body_name(body: &MessageBody) -> &'static str {
    match body {
        MessageBody::PreVote { .. } => "pre-vote",
        MessageBody::PreVoteResponse { .. } => "pre-vote-response",
        MessageBody::Vote { .. } => "vote",
        MessageBody::VoteResponse { .. } => "vote-response",
        MessageBody::Append { entries, .. } if entries.is_empty() => "append-probe",
        MessageBody::Append { .. } => "append",
        MessageBody::AppendResponse { reject: None, .. } => "append-response",
        MessageBody::AppendResponse {
            reject: Some(_), ..
        } => "append-response-reject",
        MessageBody::Heartbeat { .. } => "heartbeat",
        MessageBody::HeartbeatResponse { .. } => "heartbeat-response",
        MessageBody::ReserveHeartbeat { .. } => "reserve-heartbeat",
        MessageBody::InstallSnapshot { .. } => "install-snapshot",
        MessageBody::InstallSnapshotResponse { .. } => "install-snapshot-response",
        MessageBody::TimeoutNow => "timeout-now",
    }
}

fn snapshot_meta() -> SnapshotMeta {
    SnapshotMeta {
        index: LogIndex(1_000),
        term: Term(4),
        config: config(),
    }
}

fn bodies() -> Vec<MessageBody> {
    vec![
        MessageBody::PreVote {
            last_index: LogIndex(10),
            last_term: Term(2),
        },
        MessageBody::PreVoteResponse { granted: true },
        MessageBody::Vote {
            last_index: LogIndex(10),
            last_term: Term(2),
            transfer: true,
        },
        MessageBody::VoteResponse { granted: false },
        MessageBody::Append {
            prev_index: LogIndex(9),
            prev_term: Term(2),
            entries: vec![],
            commit: LogIndex(8),
            read_round: 5,
        },
        MessageBody::Append {
            prev_index: LogIndex(199),
            prev_term: Term(3),
            entries: vec![
                entry(EntryPayload::Noop),
                Entry {
                    term: Term(3),
                    index: LogIndex(201),
                    payload: EntryPayload::Command(Bytes::from_static(b"x")),
                },
            ],
            commit: LogIndex(199),
            read_round: 6,
        },
        MessageBody::AppendResponse {
            index: LogIndex(201),
            reject: None,
            read_round: 6,
        },
        MessageBody::AppendResponse {
            index: LogIndex(9),
            reject: Some(RejectHint {
                index: LogIndex(7),
                term: Term(1),
            }),
            read_round: 5,
        },
        MessageBody::Heartbeat {
            commit: LogIndex(201),
            read_round: 7,
        },
        MessageBody::HeartbeatResponse { read_round: 7 },
        MessageBody::ReserveHeartbeat {
            commit: LogIndex(201),
            config: config(),
            config_index: LogIndex(150),
        },
        MessageBody::InstallSnapshot {
            meta: snapshot_meta(),
            offset: 4_096,
            data: Bytes::from_static(b"chunk"),
            done: true,
        },
        MessageBody::InstallSnapshotResponse {
            index: LogIndex(1_000),
            next_offset: 8_192,
        },
        MessageBody::TimeoutNow,
    ]
}

fn samples() -> Vec<Sample> {
    let mut samples = Vec::new();
    for entry in entries() {
        samples.push(sample("entry", entry_name(&entry.payload), encode(&entry)));
    }
    for body in bodies() {
        let message = Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(3),
            body,
        };
        samples.push(sample(
            "message",
            body_name(&message.body),
            encode(&message),
        ));
    }
    samples.push(sample(
        "hard-state",
        "default",
        encode(&HardState::default()),
    ));
    samples.push(sample(
        "hard-state",
        "voted",
        encode(&HardState {
            term: Term(300),
            vote: Some(NodeId(2)),
        }),
    ));
    samples.push(sample(
        "configuration",
        "empty",
        encode(&Configuration::default()),
    ));
    samples.push(sample("configuration", "every-role", encode(&config())));
    samples.push(sample(
        "snapshot-meta",
        "default",
        encode(&SnapshotMeta::default()),
    ));
    samples.push(sample(
        "snapshot-meta",
        "with-config",
        encode(&snapshot_meta()),
    ));
    samples
}

#[test]
fn raft_types_encode_to_the_pinned_bytes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/formats");
    golden_bytes::check(
        &dir,
        &[
            (
                "entry",
                "copycat_raft::Entry, postcard (the log record payload)",
            ),
            (
                "message",
                "copycat_raft::Message, postcard (inside the peer frame)",
            ),
            (
                "hard-state",
                "copycat_raft::HardState, postcard (inside the meta file)",
            ),
            ("configuration", "copycat_raft::Configuration, postcard"),
            (
                "snapshot-meta",
                "copycat_raft::SnapshotMeta, postcard (snapshot file header)",
            ),
        ],
        samples(),
    );
}

#[test]
fn every_message_kind_has_a_sample() {
    let names: std::collections::BTreeSet<&str> = bodies().iter().map(|b| b.kind()).collect();
    // MessageBody::kind names the variants; each has at least one sample.
    assert_eq!(names.len(), 12, "{names:?}");
}
