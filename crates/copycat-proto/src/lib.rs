//! Copycat's wire types shared by servers and clients.
//!
//! Three families of messages live here:
//!
//! * [`LogCommand`]: what a server proposes into a Raft log entry
//!   (`EntryPayload::Command`) on behalf of sessions: register, keep-alive,
//!   unregister, command, expire and time ticks. Every one carries the
//!   leader's clock, which is the only source of time for state machines.
//! * [`ClientRequest`] / [`ServerMessage`]: the client protocol. Requests go
//!   from a client to any server; the server answers with a
//!   [`ServerMessage::Response`] and pushes [`EventBatch`]es for the sessions
//!   bound to it.
//! * [`Hello`] / [`ServerHello`]: the first frame of every connection, and
//!   [`MAX_FRAME_BYTES`], the frame limit both sides enforce.
//! * The identifiers: [`SessionId`], [`ClientId`], [`Sequence`],
//!   [`EventIndex`], [`RequestId`].
//!
//! Every top-level message is encoded as a *frame*: one format-version byte
//! followed by the postcard encoding of the message (see [`encode_frame`] and
//! [`decode_frame`]). Decoding a frame whose version this build does not know
//! is a clear [`DecodeError::UnknownVersion`], never a misinterpretation.
//!
//! ```
//! use bytes::Bytes;
//! use copycat_proto::{LogBody, LogCommand, Sequence, SessionId};
//!
//! let command = LogCommand {
//!     timestamp_ms: 1_000,
//!     body: LogBody::Command {
//!         session: SessionId(3),
//!         sequence: Sequence(1),
//!         acked: Sequence(0),
//!         payload: Bytes::from_static(b"put x 1"),
//!     },
//! };
//! let bytes = command.encode();
//! assert_eq!(LogCommand::decode(&bytes).unwrap(), command);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod admin;
mod client;
pub mod codec;
mod hello;
mod log;

use std::fmt;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use admin::{
    AdminFailure, AdminRequest, AdminResponse, MemberInfo, MemberKind, ServerState, ServerStatus,
};
pub use client::{
    ClientError, ClientRequest, CommandFailure, Consistency, Event, EventBatch, Request, Response,
    ServerMessage,
};
pub use hello::{Hello, PeerAnswer, ServerHello, MAX_FRAME_BYTES};
pub use log::{KeepAlive, LogBody, LogCommand};

/// The format version written at the start of every frame by this build.
pub const FORMAT_VERSION: u8 = 3;

macro_rules! newtype {
    ($(#[$meta:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl $name {
            /// The zero value.
            pub const ZERO: Self = Self(0);

            /// The raw number.
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

newtype!(
    /// A session. Its value is the log index of the entry that registered
    /// it, so every server assigns the same id and ids only grow.
    SessionId(u64),
    "s"
);
newtype!(
    /// A client instance, chosen by the client (randomly, once per process).
    /// Registering a second session with the same client id expires the
    /// first one.
    ClientId(u128),
    "c"
);
newtype!(
    /// A command's position in its session. The first command of a session
    /// has sequence 1; zero means "none yet".
    Sequence(u64),
    "q"
);
newtype!(
    /// The log index at which a batch of events was published. Zero means
    /// "no event yet".
    EventIndex(u64),
    "e"
);
newtype!(
    /// Correlates a response with its request on one connection. Chosen by
    /// the client; servers echo it.
    RequestId(u64),
    "r"
);

impl Sequence {
    /// The following sequence number.
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

/// Why bytes could not be decoded into a message.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input was empty: not even a version byte.
    #[error("empty frame")]
    Empty,
    /// The frame was written by a format this build does not understand.
    #[error("unknown format version {found} (this build understands version {supported})")]
    UnknownVersion {
        /// The version byte found.
        found: u8,
        /// The version this build reads and writes.
        supported: u8,
    },
    /// The version was right but the body is not a valid message.
    #[error("malformed frame body: {0}")]
    Malformed(String),
    /// The body decoded but bytes were left over.
    #[error("{0} trailing bytes after the frame body")]
    TrailingBytes(usize),
}

/// Encode `message` as a frame: [`FORMAT_VERSION`] then its postcard body.
pub fn encode_frame<T: Serialize>(message: &T) -> Bytes {
    let mut out = vec![FORMAT_VERSION];
    // Serializing our own types into a Vec cannot fail: they contain no maps
    // with non-string keys issues, no unsized sequences, nothing postcard
    // rejects. A failure here is a programming error.
    let body = postcard::to_allocvec(message).expect("wire types always serialize");
    out.extend_from_slice(&body);
    Bytes::from(out)
}

/// Decode a frame written by [`encode_frame`], checking its version and that
/// the body is consumed exactly.
pub fn decode_frame<T: DeserializeOwned>(frame: &[u8]) -> Result<T, DecodeError> {
    let (&version, body) = frame.split_first().ok_or(DecodeError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let (message, rest) =
        postcard::take_from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unknown_version_is_a_clear_error() {
        let mut frame = LogCommand {
            timestamp_ms: 5,
            body: LogBody::Tick,
        }
        .encode()
        .to_vec();
        frame[0] = 9;
        assert_eq!(
            LogCommand::decode(&frame),
            Err(DecodeError::UnknownVersion {
                found: 9,
                supported: FORMAT_VERSION
            })
        );
        assert_eq!(LogCommand::decode(&[]), Err(DecodeError::Empty));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut frame = LogCommand {
            timestamp_ms: 5,
            body: LogBody::Tick,
        }
        .encode()
        .to_vec();
        frame.push(0);
        assert_eq!(
            LogCommand::decode(&frame),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    #[test]
    fn client_messages_round_trip() {
        let request = ClientRequest {
            id: RequestId(7),
            request: Request::Query {
                session: SessionId(1),
                sequence: Sequence(4),
                index: 99,
                consistency: Consistency::Sequential,
                payload: Bytes::from_static(b"get"),
            },
        };
        assert_eq!(
            decode_frame::<ClientRequest>(&encode_frame(&request)),
            Ok(request)
        );
        let messages = [
            ServerMessage::Response {
                id: RequestId(7),
                result: Err(ClientError::CommandGap {
                    last_sequence: Sequence(3),
                }),
            },
            ServerMessage::Response {
                id: RequestId(8),
                result: Ok(Response::Command {
                    sequence: Sequence(2),
                    index: 10,
                    event_index: EventIndex(9),
                    output: Err(CommandFailure::Application(Bytes::from_static(b"no"))),
                }),
            },
            ServerMessage::Events(EventBatch {
                session: SessionId(1),
                event_index: EventIndex(9),
                previous_event_index: EventIndex(3),
                events: vec![Event {
                    name: "changed".into(),
                    payload: Bytes::from_static(b"x"),
                }],
            }),
        ];
        for message in messages {
            assert_eq!(
                decode_frame::<ServerMessage>(&encode_frame(&message)),
                Ok(message)
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = LogCommand::decode(&data);
            let _ = decode_frame::<ClientRequest>(&data);
            let _ = decode_frame::<ServerMessage>(&data);
        }

        #[test]
        fn log_commands_round_trip(
            timestamp_ms in any::<u64>(),
            session in any::<u64>(),
            sequence in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 0..32),
            kind in 0u8..7,
        ) {
            let session = SessionId(session);
            let body = match kind {
                0 => LogBody::Register { client: ClientId(u128::from(sequence) << 64 | 3), timeout_ms: sequence },
                1 => LogBody::KeepAlive { session, command_sequence: Sequence(sequence), event_index: EventIndex(sequence / 2) },
                2 => LogBody::Unregister { session },
                3 => LogBody::Command { session, sequence: Sequence(sequence), acked: Sequence(sequence / 3), payload: Bytes::from(payload) },
                4 => LogBody::Expire { session },
                5 => LogBody::KeepAlives(vec![crate::KeepAlive { session, command_sequence: Sequence(sequence), event_index: EventIndex(sequence / 2) }]),
                _ => LogBody::Tick,
            };
            let command = LogCommand { timestamp_ms, body };
            prop_assert_eq!(LogCommand::decode(&command.encode()), Ok(command));
        }
    }
}
