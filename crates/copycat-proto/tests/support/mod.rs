//! What the fuzz tests of this crate share: proptest settings that honour
//! `PROPTEST_CASES`, byte mutations, and strategies for every message.
#![allow(dead_code)]

use std::fmt::Debug;
use std::net::{SocketAddr, SocketAddrV6};

use bytes::Bytes;
use copycat_proto::{
    decode_frame, encode_frame, ClientError, ClientId, ClientRequest, CommandFailure, Consistency,
    Event, EventBatch, EventIndex, Hello, LogBody, LogCommand, Request, RequestId, Response,
    Sequence, ServerHello, ServerMessage, SessionId,
};
use copycat_raft::{
    Configuration, Entry, EntryPayload, LogIndex, MemberRole, Message, MessageBody, NodeId,
    RejectHint, SnapshotMeta, Term,
};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// `default_cases` cases, or `PROPTEST_CASES` when set.
pub fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

// ---- mutations -------------------------------------------------------

#[derive(Clone, Debug)]
pub enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    /// Write a varint (a length or a number) over the bytes at a position.
    Varint(usize, u64),
}

pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1..=u8::MAX).prop_map(|(at, bits)| Edit::Flip(at, bits)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Insert(at, byte)),
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Truncate),
        (
            any::<usize>(),
            prop_oneof![Just(u64::MAX), Just(u32::MAX as u64), any::<u64>()]
        )
            .prop_map(|(at, value)| Edit::Varint(at, value)),
    ]
}

pub fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

pub fn mutate(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len();
        match *edit {
            Edit::Flip(at, bits) if len > 0 => bytes[at % len] ^= bits,
            Edit::Insert(at, byte) => bytes.insert(at % (len + 1), byte),
            Edit::Delete(at) if len > 0 => {
                bytes.remove(at % len);
            }
            Edit::Truncate(at) => bytes.truncate(at % (len + 1)),
            Edit::Varint(at, value) => {
                let at = at % (len + 1);
                let encoded = varint(value);
                let end = (at + encoded.len()).min(len);
                bytes.splice(at..end, encoded);
            }
            _ => {}
        }
    }
    bytes
}

/// Decode `bytes` as a `T` frame. Postcard accepts some non-canonical
/// input (over-long varints, map keys repeated or out of order), so what
/// decodes need not encode back to the same bytes; but it must encode to
/// no more bytes than it came from (decoding never makes a message bigger
/// than its input), and that encoding must decode to the same message.
pub fn check<T: Serialize + DeserializeOwned + Debug + PartialEq>(
    bytes: &[u8],
) -> Result<(), TestCaseError> {
    if let Ok(message) = decode_frame::<T>(bytes) {
        let again = encode_frame(&message);
        prop_assert!(
            again.len() <= bytes.len(),
            "{} bytes decoded to {:?}, which encodes to {} bytes",
            bytes.len(),
            message,
            again.len()
        );
        prop_assert_eq!(decode_frame::<T>(&again), Ok(message));
    }
    Ok(())
}

// ---- valid messages --------------------------------------------------

pub fn payload() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

pub fn session() -> impl Strategy<Value = SessionId> {
    prop_oneof![0u64..1000, any::<u64>()].prop_map(SessionId)
}

pub fn sequence() -> impl Strategy<Value = Sequence> {
    prop_oneof![0u64..1000, any::<u64>()].prop_map(Sequence)
}

pub fn event_index() -> impl Strategy<Value = EventIndex> {
    prop_oneof![0u64..1000, any::<u64>()].prop_map(EventIndex)
}

pub fn hello() -> impl Strategy<Value = Hello> {
    prop_oneof![
        (
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec((".{0,12}", any::<u64>()), 0..4)
        )
            .prop_map(|(cluster, id, settings)| Hello::Peer {
                cluster,
                id,
                settings
            }),
        Just(Hello::Client),
        Just(Hello::Admin),
    ]
}

/// A socket address as the hello carries it: serde's encoding of an IPv6
/// address keeps neither its flow label nor its scope id.
pub fn address() -> impl Strategy<Value = SocketAddr> {
    any::<SocketAddr>().prop_map(|address| match address {
        SocketAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(*v6.ip(), v6.port(), 0, 0)),
        v4 => v4,
    })
}

pub fn server_hello() -> impl Strategy<Value = ServerHello> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec((any::<u64>(), address().prop_map(|a| a.to_string())), 0..4),
    )
        .prop_map(|(node, cluster, members)| ServerHello {
            node,
            cluster,
            members,
        })
}

pub fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u128>(), any::<u64>()).prop_map(|(c, timeout_ms)| Request::Register {
            client: ClientId(c),
            timeout_ms
        }),
        (session(), sequence(), event_index()).prop_map(|(session, command_sequence, e)| {
            Request::KeepAlive {
                session,
                command_sequence,
                event_index: e,
            }
        }),
        session().prop_map(|session| Request::Unregister { session }),
        (session(), sequence(), sequence(), payload()).prop_map(
            |(session, sequence, acked, payload)| Request::Command {
                session,
                sequence,
                acked,
                payload
            }
        ),
        (session(), sequence(), any::<u64>(), 0u8..3, payload()).prop_map(
            |(session, sequence, index, c, payload)| Request::Query {
                session,
                sequence,
                index,
                consistency: [
                    Consistency::Linearizable,
                    Consistency::LinearizableLease,
                    Consistency::Sequential
                ][c as usize],
                payload
            }
        ),
        (session(), event_index()).prop_map(|(session, from_event_index)| {
            Request::ResetEvents {
                session,
                from_event_index,
            }
        }),
    ]
}

pub fn client_request() -> impl Strategy<Value = ClientRequest> {
    (any::<u64>(), request()).prop_map(|(id, request)| ClientRequest {
        id: RequestId(id),
        request,
    })
}

pub fn failure() -> impl Strategy<Value = CommandFailure> {
    prop_oneof![
        payload().prop_map(CommandFailure::Application),
        "[a-z ]{0,12}".prop_map(CommandFailure::Undecodable),
        (any::<u64>(), any::<u64>()).prop_map(|(size, max)| CommandFailure::TooLarge { size, max }),
    ]
}

pub fn output() -> impl Strategy<Value = Result<Bytes, CommandFailure>> {
    prop_oneof![payload().prop_map(Ok), failure().prop_map(Err)]
}

pub fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (session(), any::<u64>()).prop_map(|(session, timeout_ms)| Response::Registered {
            session,
            timeout_ms
        }),
        event_index().prop_map(|event_index| Response::KeptAlive { event_index }),
        Just(Response::Unregistered),
        (sequence(), any::<u64>(), event_index(), output()).prop_map(
            |(sequence, index, event_index, output)| Response::Command {
                sequence,
                index,
                event_index,
                output
            }
        ),
        (any::<u64>(), event_index(), output()).prop_map(|(index, event_index, output)| {
            Response::Query {
                index,
                event_index,
                output,
            }
        }),
        event_index().prop_map(|event_index| Response::EventsReset { event_index }),
    ]
}

pub fn client_error() -> impl Strategy<Value = ClientError> {
    prop_oneof![
        proptest::option::of(any::<u64>()).prop_map(|hint| ClientError::NotLeader { hint }),
        Just(ClientError::UnknownSession),
        Just(ClientError::SessionExpired),
        sequence().prop_map(|last_sequence| ClientError::CommandGap { last_sequence }),
        sequence().prop_map(|sequence| ClientError::ResultDiscarded { sequence }),
        (any::<u64>(), any::<u64>()).prop_map(|(size, max)| ClientError::TooLarge { size, max }),
        any::<u64>().prop_map(|max| ClientError::TooManySessions { max }),
        any::<u64>().prop_map(|max| ClientError::ResultCacheFull { max }),
        Just(ClientError::Timeout),
        "[a-z ]{0,12}".prop_map(ClientError::Unavailable),
        "[a-z ]{0,12}".prop_map(ClientError::Malformed),
        Just(ClientError::DiskFull),
    ]
}

pub fn server_message() -> impl Strategy<Value = ServerMessage> {
    let event = ("[a-z]{0,8}", payload()).prop_map(|(name, payload)| Event { name, payload });
    prop_oneof![
        (
            any::<u64>(),
            prop_oneof![response().prop_map(Ok), client_error().prop_map(Err)]
        )
            .prop_map(|(id, result)| ServerMessage::Response {
                id: RequestId(id),
                result
            }),
        (
            session(),
            event_index(),
            event_index(),
            proptest::collection::vec(event, 0..4)
        )
            .prop_map(|(session, event_index, previous_event_index, events)| {
                ServerMessage::Events(EventBatch {
                    session,
                    event_index,
                    previous_event_index,
                    events,
                })
            }),
    ]
}

pub fn log_command() -> impl Strategy<Value = LogCommand> {
    let body = prop_oneof![
        (any::<u128>(), any::<u64>()).prop_map(|(c, timeout_ms)| LogBody::Register {
            client: ClientId(c),
            timeout_ms
        }),
        (session(), sequence(), event_index()).prop_map(|(session, command_sequence, e)| {
            LogBody::KeepAlive {
                session,
                command_sequence,
                event_index: e,
            }
        }),
        session().prop_map(|session| LogBody::Unregister { session }),
        (session(), sequence(), sequence(), payload()).prop_map(
            |(session, sequence, acked, payload)| LogBody::Command {
                session,
                sequence,
                acked,
                payload
            }
        ),
        session().prop_map(|session| LogBody::Expire { session }),
        Just(LogBody::Tick),
        proptest::collection::vec((session(), sequence(), event_index()), 0..4).prop_map(|items| {
            LogBody::KeepAlives(
                items
                    .into_iter()
                    .map(
                        |(session, command_sequence, event_index)| copycat_proto::KeepAlive {
                            session,
                            command_sequence,
                            event_index,
                        },
                    )
                    .collect(),
            )
        }),
    ];
    (any::<u64>(), body).prop_map(|(timestamp_ms, body)| LogCommand { timestamp_ms, body })
}

pub fn configuration() -> impl Strategy<Value = Configuration> {
    let role = prop_oneof![
        Just(MemberRole::Voter),
        Just(MemberRole::Learner),
        Just(MemberRole::Passive),
        Just(MemberRole::Reserve),
    ];
    proptest::collection::btree_map((1u64..10).prop_map(NodeId), role, 0..4).prop_map(|members| {
        let addresses = members
            .keys()
            .map(|id: &NodeId| (*id, format!("h{}:5700", id.0)))
            .collect();
        Configuration { members, addresses }
    })
}

pub fn entry() -> impl Strategy<Value = Entry> {
    let payload = prop_oneof![
        Just(EntryPayload::Noop),
        payload().prop_map(EntryPayload::Command),
        configuration().prop_map(EntryPayload::Config),
    ];
    (0u64..100, 0u64..1000, payload).prop_map(|(term, index, payload)| Entry {
        term: Term(term),
        index: LogIndex(index),
        payload,
    })
}

pub fn peer_message() -> impl Strategy<Value = Message> {
    let index = || (0u64..1000).prop_map(LogIndex);
    let term = || (0u64..100).prop_map(Term);
    let body = prop_oneof![
        (index(), term()).prop_map(|(last_index, last_term)| MessageBody::PreVote {
            last_index,
            last_term
        }),
        any::<bool>().prop_map(|granted| MessageBody::PreVoteResponse { granted }),
        (index(), term(), any::<bool>()).prop_map(|(last_index, last_term, transfer)| {
            MessageBody::Vote {
                last_index,
                last_term,
                transfer,
            }
        }),
        any::<bool>().prop_map(|granted| MessageBody::VoteResponse { granted }),
        (
            index(),
            term(),
            proptest::collection::vec(entry(), 0..4),
            index(),
            any::<u64>()
        )
            .prop_map(|(prev_index, prev_term, entries, commit, read_round)| {
                MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit,
                    read_round,
                }
            }),
        (
            index(),
            proptest::option::of(
                (index(), term()).prop_map(|(index, term)| RejectHint { index, term })
            ),
            any::<u64>()
        )
            .prop_map(|(index, reject, read_round)| MessageBody::AppendResponse {
                index,
                reject,
                read_round
            }),
        (index(), any::<u64>())
            .prop_map(|(commit, read_round)| MessageBody::Heartbeat { commit, read_round }),
        any::<u64>().prop_map(|read_round| MessageBody::HeartbeatResponse { read_round }),
        (index(), configuration(), index()).prop_map(|(commit, config, config_index)| {
            MessageBody::ReserveHeartbeat {
                commit,
                config,
                config_index,
            }
        }),
        (
            index(),
            term(),
            configuration(),
            any::<u64>(),
            payload(),
            any::<bool>()
        )
            .prop_map(|(index, term, config, offset, data, done)| {
                MessageBody::InstallSnapshot {
                    meta: SnapshotMeta {
                        index,
                        term,
                        config,
                    },
                    offset,
                    data,
                    done,
                }
            }),
        (index(), any::<u64>()).prop_map(|(index, next_offset)| {
            MessageBody::InstallSnapshotResponse { index, next_offset }
        }),
        Just(MessageBody::TimeoutNow),
    ];
    ((1u64..10), (1u64..10), term(), body).prop_map(|(from, to, term, body)| Message {
        from: NodeId(from),
        to: NodeId(to),
        term,
        body,
    })
}

// ---- inputs ----------------------------------------------------------

/// Random bytes, mostly behind the right version byte (so they reach the
/// body decoder rather than stop at the version check).
pub fn garbage() -> impl Strategy<Value = Vec<u8>> {
    (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..96)).prop_map(
        |(versioned, mut bytes)| {
            if versioned {
                bytes.insert(0, copycat_proto::FORMAT_VERSION);
            }
            bytes
        },
    )
}

pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec(edit(), 1..4)
}

pub fn encoded<T: Serialize>(message: &T) -> Vec<u8> {
    encode_frame(message).to_vec()
}
