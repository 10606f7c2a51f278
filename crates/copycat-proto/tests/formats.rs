//! The exact bytes of every copycat-proto frame: the version byte followed by
//! the postcard body, for every [`LogBody`], every [`Request`], every
//! [`Response`], [`ClientError`] and [`CommandFailure`], and event batches.
//! Pinned in `testdata/formats/*.txt` (see
//! `copycat-raft/tests/support/golden_bytes.rs`);
//! `REWRITE=1 cargo test -p copycat-proto --test formats` rewrites them,
//! which is only right together with a bump of [`FORMAT_VERSION`].

#[path = "../../copycat-raft/tests/support/golden_bytes.rs"]
mod golden_bytes;

use std::fmt::Debug;
use std::path::Path;

use bytes::Bytes;
use copycat_proto::{
    decode_frame, encode_frame, ClientError, ClientId, ClientRequest, CommandFailure, Consistency,
    DecodeError, Event, EventBatch, EventIndex, KeepAlive, LogBody, LogCommand, Request, RequestId,
    Response, Sequence, ServerMessage, SessionId, FORMAT_VERSION,
};
use golden_bytes::{sample, Sample};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encode as a frame and check that it decodes back to `value`.
fn frame<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) -> Vec<u8> {
    let bytes = encode_frame(value);
    assert_eq!(bytes[0], FORMAT_VERSION);
    assert_eq!(&decode_frame::<T>(&bytes).expect("decodes"), value);
    bytes.to_vec()
}

/// Exhaustive over the variants: a new one does not compile until it has a
/// sample.
fn log_name(body: &LogBody) -> &'static str {
    match body {
        LogBody::Register { .. } => "register",
        LogBody::KeepAlive { .. } => "keep-alive",
        LogBody::Unregister { .. } => "unregister",
        LogBody::Command { .. } => "command",
        LogBody::Expire { .. } => "expire",
        LogBody::Tick => "tick",
        LogBody::KeepAlives(_) => "keep-alives",
    }
}

fn log_bodies() -> Vec<LogBody> {
    vec![
        LogBody::Register {
            client: ClientId(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
            timeout_ms: 5_000,
        },
        LogBody::KeepAlive {
            session: SessionId(3),
            command_sequence: Sequence(7),
            event_index: EventIndex(12),
        },
        LogBody::Unregister {
            session: SessionId(3),
        },
        LogBody::Command {
            session: SessionId(3),
            sequence: Sequence(8),
            acked: Sequence::ZERO,
            payload: Bytes::from_static(b"put x 1"),
        },
        LogBody::Expire {
            session: SessionId(300),
        },
        LogBody::Tick,
        LogBody::KeepAlives(vec![
            KeepAlive {
                session: SessionId(3),
                command_sequence: Sequence(7),
                event_index: EventIndex(12),
            },
            KeepAlive {
                session: SessionId(300),
                command_sequence: Sequence::ZERO,
                event_index: EventIndex(0),
            },
        ]),
    ]
}

fn request_name(request: &Request) -> &'static str {
    match request {
        Request::Register { .. } => "register",
        Request::KeepAlive { .. } => "keep-alive",
        Request::Unregister { .. } => "unregister",
        Request::Command { .. } => "command",
        Request::Query { consistency, .. } => match consistency {
            Consistency::Linearizable => "query-linearizable",
            Consistency::LinearizableLease => "query-lease",
            Consistency::Sequential => "query-sequential",
        },
        Request::ResetEvents { .. } => "reset-events",
    }
}

fn requests() -> Vec<Request> {
    let query = |consistency| Request::Query {
        session: SessionId(3),
        sequence: Sequence(8),
        index: 200,
        consistency,
        payload: Bytes::from_static(b"get x"),
    };
    vec![
        Request::Register {
            client: ClientId(u128::MAX),
            timeout_ms: 0,
        },
        Request::KeepAlive {
            session: SessionId(3),
            command_sequence: Sequence(7),
            event_index: EventIndex(12),
        },
        Request::Unregister {
            session: SessionId(3),
        },
        Request::Command {
            session: SessionId(3),
            sequence: Sequence(8),
            acked: Sequence::ZERO,
            payload: Bytes::from_static(b"put x 1"),
        },
        query(Consistency::Linearizable),
        query(Consistency::LinearizableLease),
        query(Consistency::Sequential),
        Request::ResetEvents {
            session: SessionId(3),
            from_event_index: EventIndex(12),
        },
    ]
}

fn response_name(response: &Response) -> &'static str {
    match response {
        Response::Registered { .. } => "registered",
        Response::KeptAlive { .. } => "kept-alive",
        Response::Unregistered => "unregistered",
        Response::Command { output: Ok(_), .. } => "command",
        Response::Command {
            output: Err(failure),
            ..
        } => match failure {
            CommandFailure::Application(_) => "command-application-error",
            CommandFailure::Undecodable(_) => "command-undecodable",
            CommandFailure::TooLarge { .. } => "command-too-large",
        },
        Response::Query { output: Ok(_), .. } => "query",
        Response::Query { output: Err(_), .. } => "query-failed",
        Response::EventsReset { .. } => "events-reset",
    }
}

fn responses() -> Vec<Response> {
    let command = |output| Response::Command {
        sequence: Sequence(8),
        index: 201,
        event_index: EventIndex(12),
        output,
    };
    vec![
        Response::Registered {
            session: SessionId(3),
            timeout_ms: 5_000,
        },
        Response::KeptAlive {
            event_index: EventIndex(12),
        },
        Response::Unregistered,
        command(Ok(Bytes::from_static(b"ok"))),
        command(Err(CommandFailure::Application(Bytes::from_static(b"no")))),
        command(Err(CommandFailure::Undecodable("bad tag".into()))),
        command(Err(CommandFailure::TooLarge {
            size: 300,
            max: 200,
        })),
        Response::Query {
            index: 201,
            event_index: EventIndex(12),
            output: Ok(Bytes::from_static(b"1")),
        },
        Response::Query {
            index: 201,
            event_index: EventIndex(12),
            output: Err(CommandFailure::Undecodable("bad tag".into())),
        },
        Response::EventsReset {
            event_index: EventIndex(12),
        },
    ]
}

fn error_name(error: &ClientError) -> &'static str {
    match error {
        ClientError::NotLeader { hint: Some(_) } => "not-leader",
        ClientError::NotLeader { hint: None } => "not-leader-no-hint",
        ClientError::UnknownSession => "unknown-session",
        ClientError::SessionExpired => "session-expired",
        ClientError::CommandGap { .. } => "command-gap",
        ClientError::ResultDiscarded { .. } => "result-discarded",
        ClientError::TooLarge { .. } => "too-large",
        ClientError::TooManySessions { .. } => "too-many-sessions",
        ClientError::ResultCacheFull { .. } => "result-cache-full",
        ClientError::Timeout => "timeout",
        ClientError::Unavailable(_) => "unavailable",
        ClientError::Malformed(_) => "malformed",
        ClientError::DiskFull => "disk-full",
    }
}

fn errors() -> Vec<ClientError> {
    vec![
        ClientError::NotLeader { hint: Some(2) },
        ClientError::NotLeader { hint: None },
        ClientError::UnknownSession,
        ClientError::SessionExpired,
        ClientError::CommandGap {
            last_sequence: Sequence(6),
        },
        ClientError::ResultDiscarded {
            sequence: Sequence(5),
        },
        ClientError::TooLarge {
            size: 300,
            max: 200,
        },
        ClientError::TooManySessions { max: 1_000 },
        ClientError::ResultCacheFull { max: 64 },
        ClientError::Timeout,
        ClientError::Unavailable("no leader".into()),
        ClientError::Malformed("bad frame".into()),
        ClientError::DiskFull,
    ]
}

fn samples() -> Vec<Sample> {
    let mut samples = Vec::new();
    for body in log_bodies() {
        let name = log_name(&body);
        let command = LogCommand {
            timestamp_ms: 1_700_000_000_000,
            body,
        };
        let bytes = command.encode();
        assert_eq!(LogCommand::decode(&bytes), Ok(command.clone()));
        assert_eq!(bytes.to_vec(), frame(&command));
        samples.push(sample("log-command", name, bytes.to_vec()));
    }
    for request in requests() {
        let name = request_name(&request);
        let request = ClientRequest {
            id: RequestId(42),
            request,
        };
        samples.push(sample("client-request", name, frame(&request)));
    }
    for response in responses() {
        let name = response_name(&response);
        let message = ServerMessage::Response {
            id: RequestId(42),
            result: Ok(response),
        };
        samples.push(sample("server-message", name, frame(&message)));
    }
    for error in errors() {
        let name = error_name(&error);
        let message = ServerMessage::Response {
            id: RequestId(42),
            result: Err(error),
        };
        samples.push(sample("client-error", name, frame(&message)));
    }
    let events = ServerMessage::Events(EventBatch {
        session: SessionId(3),
        event_index: EventIndex(12),
        previous_event_index: EventIndex(9),
        events: vec![
            Event {
                name: "changed".into(),
                payload: Bytes::from_static(b"x"),
            },
            Event {
                name: "gone".into(),
                payload: Bytes::new(),
            },
        ],
    });
    samples.push(sample("server-message", "events", frame(&events)));
    let empty = ServerMessage::Events(EventBatch {
        session: SessionId(3),
        event_index: EventIndex(13),
        previous_event_index: EventIndex(12),
        events: vec![],
    });
    samples.push(sample("server-message", "events-empty", frame(&empty)));
    samples
}

#[test]
fn frames_have_the_pinned_bytes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/formats");
    golden_bytes::check(
        &dir,
        &[
            (
                "log-command",
                "copycat_proto::LogCommand frames (what servers write into Raft entries)",
            ),
            ("client-request", "copycat_proto::ClientRequest frames"),
            (
                "server-message",
                "copycat_proto::ServerMessage frames: every Response, and event batches",
            ),
            (
                "client-error",
                "copycat_proto::ServerMessage frames carrying every ClientError",
            ),
        ],
        samples(),
    );
}

#[test]
fn every_frame_type_rejects_an_unknown_version() {
    let request = frame(&ClientRequest {
        id: RequestId(1),
        request: Request::Unregister {
            session: SessionId(3),
        },
    });
    let message = frame(&ServerMessage::Response {
        id: RequestId(1),
        result: Err(ClientError::Timeout),
    });
    let command = LogCommand {
        timestamp_ms: 1,
        body: LogBody::Tick,
    }
    .encode()
    .to_vec();
    for version in [0, FORMAT_VERSION + 1, u8::MAX] {
        let unknown = DecodeError::UnknownVersion {
            found: version,
            supported: FORMAT_VERSION,
        };
        let with_version = |bytes: &[u8]| {
            let mut bytes = bytes.to_vec();
            bytes[0] = version;
            bytes
        };
        assert_eq!(
            decode_frame::<ClientRequest>(&with_version(&request)),
            Err(unknown.clone())
        );
        assert_eq!(
            decode_frame::<ServerMessage>(&with_version(&message)),
            Err(unknown.clone())
        );
        assert_eq!(
            LogCommand::decode(&with_version(&command)),
            Err(unknown.clone())
        );
        assert!(unknown
            .to_string()
            .contains(&format!("unknown format version {version}")));
    }
    assert_eq!(decode_frame::<ClientRequest>(&[]), Err(DecodeError::Empty));
    assert_eq!(decode_frame::<ServerMessage>(&[]), Err(DecodeError::Empty));
}
