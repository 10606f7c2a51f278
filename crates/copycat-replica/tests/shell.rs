//! The runtime [`Shell`]'s durability contract: messages that promise
//! durability (the core's `messages_after_persist`: vote grants, append
//! acknowledgements) leave only after the sync that makes their batch
//! durable, never after the write alone.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use copycat_raft::{
    Config, Entry, EntryPayload, LogIndex, Message, MessageBody, NodeId, Term, Time,
};
use copycat_replica::node::ServerConfig;
use copycat_replica::shell::{Bootstrap, Shell, ShellConfig};
use copycat_replica::testing::TestMachine;
use copycat_replica::Typed;
use copycat_storage::{Disk, FaultDisk, StorageOptions};

fn open(disk: &FaultDisk) -> Shell<Typed<TestMachine>> {
    let config = ShellConfig {
        server: ServerConfig::new(Config::new(NodeId(2))),
        storage: StorageOptions::default(),
        seed: 2,
        compute_digests: false,
    };
    let disk: Arc<dyn Disk> = Arc::new(disk.clone());
    Shell::open(
        config,
        Path::new("/data/2"),
        disk,
        Some(Bootstrap::voters(
            1,
            NodeId(2),
            [NodeId(1), NodeId(2), NodeId(3)],
        )),
        Typed(TestMachine::default()),
        Time(0),
        0,
    )
    .expect("open")
}

fn from_leader(body: MessageBody) -> Message {
    Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(1),
        body,
    }
}

fn is_vote_grant(message: &Message) -> bool {
    matches!(message.body, MessageBody::VoteResponse { granted: true }) && message.to == NodeId(1)
}

fn is_append_ack(message: &Message, index: u64) -> bool {
    matches!(
        message.body,
        MessageBody::AppendResponse { index: i, reject: None, .. } if i == LogIndex(index)
    ) && message.to == NodeId(1)
}

#[test]
fn vote_grants_and_append_acks_leave_only_after_the_sync() {
    let disk = FaultDisk::new(1);
    let mut shell = open(&disk);
    assert!(shell.process().expect("settle").peer_messages.is_empty());

    // A vote request (after a leadership transfer, so the fresh server's
    // leader stickiness does not refuse it): the grant waits for the sync.
    shell.step(from_leader(MessageBody::Vote {
        last_index: LogIndex(0),
        last_term: Term(0),
        transfer: true,
    }));
    let written = shell.write().expect("write");
    assert!(written.pending, "the batch waits for a sync");
    let early = shell.take_outputs().peer_messages;
    assert!(
        !early.iter().any(is_vote_grant),
        "vote granted before the sync: {early:?}"
    );
    shell.sync().expect("sync");
    let released = shell.take_outputs().peer_messages;
    assert_eq!(
        released.iter().filter(|m| is_vote_grant(m)).count(),
        1,
        "{released:?}"
    );

    // Entries from the leader: the acknowledgement waits for the sync too,
    // and when it leaves, the entries are durable.
    let entries = vec![
        Entry {
            term: Term(1),
            index: LogIndex(1),
            payload: EntryPayload::Noop,
        },
        Entry {
            term: Term(1),
            index: LogIndex(2),
            payload: EntryPayload::Command(Bytes::from_static(b"opaque")),
        },
    ];
    shell.step(from_leader(MessageBody::Append {
        prev_index: LogIndex(0),
        prev_term: Term(0),
        entries,
        commit: LogIndex(0),
        read_round: 1,
    }));
    let written = shell.write().expect("write");
    assert_eq!(written.entries.len(), 2);
    assert!(written.pending);
    assert!(
        !disk.is_fully_synced(),
        "the entries are written but not yet durable"
    );
    assert_eq!(shell.storage().log().durable_index(), LogIndex(0));
    let early = shell.take_outputs().peer_messages;
    assert!(
        !early.iter().any(|m| is_append_ack(m, 2)),
        "append acknowledged before the sync: {early:?}"
    );
    shell.sync().expect("sync");
    assert_eq!(shell.storage().log().durable_index(), LogIndex(2));
    let released = shell.take_outputs().peer_messages;
    assert!(released.iter().any(|m| is_append_ack(m, 2)), "{released:?}");
    // Nothing is left waiting: a further write has no pending batch.
    assert!(!shell.write().expect("write").pending);
}

/// A snapshot from the leader whose image the replica refuses is not
/// installed: the server reports the error and still restarts from what it
/// had (before, the refused image replaced the snapshot on disk and every
/// restart failed on it).
#[test]
fn a_refused_snapshot_image_is_not_installed() {
    let disk = FaultDisk::new(2);
    let mut shell = open(&disk);
    shell.process().expect("settle");
    shell.step(from_leader(MessageBody::InstallSnapshot {
        meta: copycat_raft::SnapshotMeta {
            index: LogIndex(10),
            term: Term(1),
            config: copycat_raft::Configuration::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
        },
        offset: 0,
        data: Bytes::from_static(b"\x01 not a replica image"),
        done: true,
    }));
    let refused = shell.process();
    assert!(refused.is_err(), "the image is refused");
    assert_eq!(
        shell.storage().snapshots().latest().map(|m| m.index),
        Some(LogIndex(0)),
        "the bootstrap snapshot is still the latest"
    );
    drop(shell);
    let reopened = open(&disk);
    assert_eq!(reopened.server().raft().snapshot_meta().index, LogIndex(0));
}
