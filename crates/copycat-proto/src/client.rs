//! The client protocol: requests, responses, errors and pushed events.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{ClientId, EventIndex, RequestId, Sequence, SessionId};

/// How fresh a query's answer must be.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Consistency {
    /// The leader confirms with a quorum that it still leads (ReadIndex)
    /// after applying everything it committed before the read. The default.
    #[default]
    Linearizable,
    /// The leader answers while it holds a lease that no other leader can
    /// have been elected under. Linearizable under a bounded clock drift.
    LinearizableLease,
    /// Any server answers from its state once it has applied what the client
    /// has already seen: may be stale, never goes backwards for the session.
    Sequential,
}

/// A request from a client to a server, with its correlation id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    /// Echoed in the response.
    pub id: RequestId,
    /// What is asked.
    pub request: Request,
}

/// What a client can ask a server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Open a session.
    Register {
        /// The client's identity.
        client: ClientId,
        /// Requested session timeout; zero for the server default.
        timeout_ms: u64,
    },
    /// Keep the session alive and acknowledge what was received.
    KeepAlive {
        /// The session.
        session: SessionId,
        /// Highest command sequence received in order.
        command_sequence: Sequence,
        /// Highest event index received in order.
        event_index: EventIndex,
    },
    /// Close the session.
    Unregister {
        /// The session.
        session: SessionId,
    },
    /// Submit a command (a write).
    Command {
        /// The session.
        session: SessionId,
        /// The command's sequence; resubmissions reuse it.
        sequence: Sequence,
        /// Highest command sequence whose response the client has received,
        /// with every earlier one (acknowledges results on the command
        /// path, as a keep-alive does).
        acked: Sequence,
        /// The encoded command.
        payload: Bytes,
    },
    /// Submit a query (a read).
    Query {
        /// The session.
        session: SessionId,
        /// Last command sequence the client has seen answered: the server
        /// waits until it has applied it (read-your-writes).
        sequence: Sequence,
        /// Highest log index the client has seen: the server waits until it
        /// has applied it (monotonic reads across servers).
        index: u64,
        /// How fresh the answer must be.
        consistency: Consistency,
        /// The encoded query.
        payload: Bytes,
    },
    /// Ask the server to resend retained event batches published after
    /// `from_event_index` (the last index the client received in order).
    ResetEvents {
        /// The session.
        session: SessionId,
        /// Last event index received in order.
        from_event_index: EventIndex,
    },
}

/// Why a command (or query) produced no output, as decided by the replica.
/// These outcomes are cached like results: a resubmission gets the same one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Error)]
pub enum CommandFailure {
    /// The state machine returned an error (its encoded error value).
    #[error("application error ({} bytes)", .0.len())]
    Application(Bytes),
    /// The state machine could not decode the command.
    #[error("undecodable operation: {0}")]
    Undecodable(String),
    /// The command exceeded the configured size limit. Its sequence is used
    /// up (a no-op in its place) so later commands are not blocked.
    #[error("command of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size of the payload.
        size: u64,
        /// The configured limit.
        max: u64,
    },
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The session is open.
    Registered {
        /// Its id (the log index of the registration).
        session: SessionId,
        /// The timeout in effect (the server clamps requests to its limits).
        timeout_ms: u64,
    },
    /// The keep-alive was applied.
    KeptAlive {
        /// The last event index published to the session so far: a client
        /// that has received less should ask for a reset.
        event_index: EventIndex,
    },
    /// The session is closed.
    Unregistered,
    /// A command's outcome.
    Command {
        /// The command's sequence.
        sequence: Sequence,
        /// The log index at which it was applied.
        index: u64,
        /// The last event index published to the session up to and including
        /// this command: the client delivers events up to it first.
        event_index: EventIndex,
        /// The state machine's output, or why there is none.
        output: Result<Bytes, CommandFailure>,
    },
    /// A query's outcome.
    Query {
        /// The applied index the answer reflects.
        index: u64,
        /// The last event index published to the session at that point.
        event_index: EventIndex,
        /// The state machine's output, or why there is none.
        output: Result<Bytes, CommandFailure>,
    },
    /// Retained batches after the requested index are being resent.
    EventsReset {
        /// The last event index published to the session.
        event_index: EventIndex,
    },
}

/// Expected failures of the client protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Error)]
pub enum ClientError {
    /// This server cannot serve the request; `hint` is the leader it knows.
    #[error("not the leader (hint: {hint:?})")]
    NotLeader {
        /// Raft node id of the known leader.
        hint: Option<u64>,
    },
    /// The session does not exist (never registered, or closed).
    #[error("unknown session")]
    UnknownSession,
    /// The session was expired by the cluster.
    #[error("session expired")]
    SessionExpired,
    /// The command skips sequence numbers; resend from `last_sequence + 1`.
    #[error("command sequence gap: last applied is {last_sequence:?}")]
    CommandGap {
        /// The last sequence the session applied.
        last_sequence: Sequence,
    },
    /// The command was applied, but the client acknowledged its result in a
    /// keep-alive, so the cached result is gone. A correct client never
    /// resends an acknowledged command.
    #[error("the result of sequence {sequence:?} was acknowledged and discarded")]
    ResultDiscarded {
        /// The resent sequence.
        sequence: Sequence,
    },
    /// The request is larger than the configured limit.
    #[error("request of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The request size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The cluster holds as many sessions as it allows.
    #[error("too many sessions (limit {max})")]
    TooManySessions {
        /// The limit.
        max: u64,
    },
    /// The session has as many unacknowledged results as it may; keep the
    /// session alive (acknowledging results) and resend.
    #[error("too many unacknowledged results (limit {max})")]
    ResultCacheFull {
        /// The limit.
        max: u64,
    },
    /// No answer in time: the request may or may not have taken effect.
    #[error("timed out; the outcome is unknown")]
    Timeout,
    /// The server cannot serve now (no leader, shutting down, overloaded).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request could not be understood.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// This server's disk is full (or its quota used up): it refuses
    /// requests and takes no part in the cluster until writes succeed
    /// again. Ask another server. A command refused this way may still be
    /// applied (if this server had proposed it as leader); resent with the
    /// same sequence, it applies once.
    #[error("the server's disk is full; ask another server")]
    DiskFull,
}

/// One event: a name and an encoded payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What happened (chosen by the state machine).
    pub name: String,
    /// Encoded details.
    pub payload: Bytes,
}

/// Events published to one session at one log index.
///
/// Batches of a session form a chain through `previous_event_index`, so a
/// client can tell whether it missed one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBatch {
    /// The receiving session.
    pub session: SessionId,
    /// The log index at which the events were published.
    pub event_index: EventIndex,
    /// The index of the session's previous batch (zero for the first).
    pub previous_event_index: EventIndex,
    /// The events, in publication order.
    pub events: Vec<Event>,
}

/// What a server sends to a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// The answer to a request.
    Response {
        /// The request's id.
        id: RequestId,
        /// The answer.
        result: Result<Response, ClientError>,
    },
    /// Events pushed for a session bound to this connection.
    Events(EventBatch),
}
