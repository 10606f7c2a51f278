//! The exact bytes of what the server itself defines on the wire and on
//! disk: the connection hello frames, peer messages in copycat-proto's
//! versioned envelope, the runtime's u32 length prefix (as it goes over a
//! real socket), and the replica's snapshot image. Pinned in
//! `testdata/formats/*.txt` (see `copycat-raft/tests/support/golden_bytes.rs`);
//! `REWRITE=1 cargo test -p copycat-replica --test formats` rewrites them,
//! which is only right together with a deliberate version bump
//! (`copycat_proto::FORMAT_VERSION`, `replica::SNAPSHOT_VERSION`).

#[path = "../../copycat-raft/tests/support/golden_bytes.rs"]
mod golden_bytes;

use std::path::Path;

use bytes::Bytes;
use copycat_net::framed;
use copycat_proto::{
    decode_frame, encode_frame, ClientId, DecodeError, Hello, LogBody, LogCommand, PeerAnswer,
    Sequence, ServerHello, SessionId,
};
use copycat_raft::{Entry, EntryPayload, LogIndex, Message, MessageBody, NodeId, Term};
use copycat_replica::codec;
use copycat_replica::replica::SNAPSHOT_VERSION;
use copycat_replica::testing::{TestCommand, TestMachine};
use copycat_replica::{Replica, ReplicaConfig, SnapshotError, Typed};
use futures_util::SinkExt;
use golden_bytes::{sample, Sample};
use tokio::io::AsyncReadExt;

fn vote() -> Message {
    Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(3),
        body: MessageBody::Vote {
            last_index: LogIndex(10),
            last_term: Term(2),
            transfer: false,
        },
    }
}

fn append() -> Message {
    Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(3),
        body: MessageBody::Append {
            prev_index: LogIndex(9),
            prev_term: Term(2),
            entries: vec![Entry {
                term: Term(3),
                index: LogIndex(10),
                payload: EntryPayload::Command(Bytes::from_static(b"x")),
            }],
            commit: LogIndex(9),
            read_round: 4,
        },
    }
}

fn frame_samples(samples: &mut Vec<Sample>) {
    let hellos = [
        (
            "peer",
            Hello::Peer {
                cluster: 0x0123_4567_89ab_cdef,
                id: 2,
                settings: vec![("max_command_bytes".into(), 1 << 20)],
            },
        ),
        ("client", Hello::Client),
        ("admin", Hello::Admin),
    ];
    for (name, hello) in hellos {
        let bytes = encode_frame(&hello);
        assert_eq!(decode_frame::<Hello>(&bytes), Ok(hello));
        samples.push(sample("hello", name, bytes.to_vec()));
    }
    for (name, answer) in [
        ("peer-accepted", PeerAnswer::Accepted),
        (
            "peer-refused",
            PeerAnswer::Refused("server 9 is not a member".into()),
        ),
    ] {
        let bytes = encode_frame(&answer);
        assert_eq!(decode_frame::<PeerAnswer>(&bytes), Ok(answer));
        samples.push(sample("hello", name, bytes.to_vec()));
    }
    let server_hello = ServerHello {
        node: 1,
        cluster: 0x0123_4567_89ab_cdef,
        members: vec![
            (1, "127.0.0.1:7001".to_string()),
            (2, "[::1]:7002".to_string()),
            (3, "copycat-3.example:7003".to_string()),
        ],
    };
    let bytes = encode_frame(&server_hello);
    assert_eq!(decode_frame::<ServerHello>(&bytes), Ok(server_hello));
    samples.push(sample("hello", "server-hello", bytes.to_vec()));
    for (name, message) in [("vote", vote()), ("append", append())] {
        let bytes = encode_frame(&message);
        assert_eq!(decode_frame::<Message>(&bytes), Ok(message));
        samples.push(sample("peer-message", name, bytes.to_vec()));
    }
}

/// What the servers' framing (`copycat_net::framed`) puts on a socket for a peer connection: the
/// hello, then two messages, each behind a u32 length.
async fn stream_sample() -> Vec<u8> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let frames = [
        encode_frame(&Hello::Peer {
            cluster: 7,
            id: 1,
            settings: Vec::new(),
        }),
        encode_frame(&vote()),
        encode_frame(&append()),
    ];
    let total: usize = frames.iter().map(|f| 4 + f.len()).sum();
    let sender = tokio::spawn(async move {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let mut framed = framed(stream);
        for frame in frames {
            framed.send(frame).await.expect("send");
        }
    });
    let (mut stream, _) = listener.accept().await.expect("accept");
    let mut bytes = vec![0u8; total];
    stream.read_exact(&mut bytes).await.expect("read");
    sender.await.expect("sender");
    bytes
}

fn snapshot_sample(samples: &mut Vec<Sample>) {
    let mut replica =
        Replica::new(ReplicaConfig::default(), Typed(TestMachine::default())).expect("replica");
    let bodies = [
        LogBody::Register {
            client: ClientId(7),
            timeout_ms: 5_000,
        },
        LogBody::Command {
            session: SessionId(1),
            sequence: Sequence(1),
            acked: Sequence::ZERO,
            payload: codec::encode(&TestCommand::Add(5)),
        },
        LogBody::Command {
            session: SessionId(1),
            sequence: Sequence(2),
            acked: Sequence::ZERO,
            payload: codec::encode(&TestCommand::Publish {
                session: 1,
                name: "changed".into(),
            }),
        },
    ];
    for (i, body) in bodies.into_iter().enumerate() {
        let entry = Entry {
            term: Term(1),
            index: LogIndex(i as u64 + 1),
            payload: EntryPayload::Command(
                LogCommand {
                    timestamp_ms: 1_000 + i as u64,
                    body,
                }
                .encode(),
            ),
        };
        replica.apply(&entry);
    }
    let image = replica.snapshot();
    assert_eq!(image[0], SNAPSHOT_VERSION);
    let mut copy =
        Replica::new(ReplicaConfig::default(), Typed(TestMachine::default())).expect("replica");
    copy.restore(&image).expect("restores");
    assert_eq!(copy.digest(), replica.digest());
    samples.push(sample(
        "replica-snapshot",
        "session-result-event",
        image.to_vec(),
    ));
    let empty = Replica::new(ReplicaConfig::default(), Typed(TestMachine::default()))
        .expect("replica")
        .snapshot();
    samples.push(sample("replica-snapshot", "empty", empty.to_vec()));
}

#[tokio::test]
async fn server_formats_have_the_pinned_bytes() {
    let mut samples = Vec::new();
    frame_samples(&mut samples);
    samples.push(sample(
        "peer-stream",
        "hello-vote-append",
        stream_sample().await,
    ));
    snapshot_sample(&mut samples);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/formats");
    golden_bytes::check(
        &dir,
        &[
            (
                "hello",
                "the first frame of a connection (copycat_proto::Hello, copycat_proto::ServerHello)",
            ),
            (
                "peer-message",
                "copycat_raft::Message in the copycat-proto frame (version byte, postcard)",
            ),
            (
                "peer-stream",
                "a peer connection on the socket: frames behind big-endian u32 lengths",
            ),
            (
                "replica-snapshot",
                "the replica's snapshot image (version byte, postcard of sessions, results, events, timers, machine image)",
            ),
        ],
        samples,
    );
}

#[test]
fn unknown_versions_of_server_formats_are_clear_errors() {
    let mut hello = encode_frame(&Hello::Peer {
        cluster: 7,
        id: 1,
        settings: Vec::new(),
    })
    .to_vec();
    hello[0] = copycat_proto::FORMAT_VERSION + 1;
    assert_eq!(
        decode_frame::<Hello>(&hello),
        Err(DecodeError::UnknownVersion {
            found: copycat_proto::FORMAT_VERSION + 1,
            supported: copycat_proto::FORMAT_VERSION
        })
    );
    let mut message = encode_frame(&vote()).to_vec();
    message[0] = 0;
    assert!(matches!(
        decode_frame::<Message>(&message),
        Err(DecodeError::UnknownVersion { found: 0, .. })
    ));
    let mut replica =
        Replica::new(ReplicaConfig::default(), Typed(TestMachine::default())).expect("replica");
    let mut image = replica.snapshot().to_vec();
    image[0] = SNAPSHOT_VERSION + 1;
    let error = replica.restore(&image).expect_err("unknown version");
    assert!(matches!(
        error,
        SnapshotError::Decode(DecodeError::UnknownVersion { found, supported })
            if found == SNAPSHOT_VERSION + 1 && supported == SNAPSHOT_VERSION
    ));
    assert!(error.to_string().contains("version"), "{error}");
}
