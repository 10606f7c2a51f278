//! What servers write into the Raft log on behalf of sessions.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{decode_frame, encode_frame, ClientId, DecodeError, EventIndex, Sequence, SessionId};

/// The content of one `EntryPayload::Command` entry.
///
/// The leader stamps every command with its own clock. Replicas never read a
/// clock: their notion of time is the maximum timestamp applied so far, so
/// every replica expires sessions and fires timers at the same log position.
/// (Raft's own `Noop` and `Config` entries carry no time.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCommand {
    /// The leader's clock when it proposed the entry, in milliseconds.
    pub timestamp_ms: u64,
    /// What to do.
    pub body: LogBody,
}

/// The operations a session log entry can carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogBody {
    /// Open a session for `client`. The session id is this entry's index.
    /// Registering a client id again expires its previous session.
    Register {
        /// The registering client.
        client: ClientId,
        /// How long the session survives without a keep-alive; zero asks for
        /// the server default. Stored in the log so every server agrees.
        timeout_ms: u64,
    },
    /// Refresh a session and acknowledge what the client has received.
    KeepAlive {
        /// The session kept alive.
        session: SessionId,
        /// Highest command sequence whose response the client has received,
        /// with every earlier one: cached results up to it can be dropped.
        command_sequence: Sequence,
        /// Highest event index the client has received in order: retained
        /// event batches up to it can be dropped.
        event_index: EventIndex,
    },
    /// Close a session at the client's request.
    Unregister {
        /// The session closed.
        session: SessionId,
    },
    /// Apply a state machine command.
    Command {
        /// The calling session.
        session: SessionId,
        /// The command's sequence in the session (1, 2, 3, ...).
        sequence: Sequence,
        /// Highest command sequence whose response the client has received,
        /// with every earlier one: cached results up to it are dropped
        /// before the command applies, so the cache holds only what is in
        /// flight (Raft thesis §6.3) without waiting for a keep-alive.
        acked: Sequence,
        /// The encoded command, opaque to the replica.
        payload: Bytes,
    },
    /// The leader saw the session as suspect and asks every replica to
    /// expire it. Replicas re-check at apply time and ignore it if the
    /// session was kept alive in the meantime.
    Expire {
        /// The session to expire.
        session: SessionId,
    },
    /// Carries only time: the leader appends it when the log is idle so that
    /// session expiry and timers never wait for unrelated traffic.
    Tick,
    /// Several keep-alives in one entry, applied in order as if each had its
    /// own entry. The leader collects the keep-alives that arrive within a
    /// short window into one entry, so idle sessions cost a few entries per
    /// second in total rather than one per session and interval.
    KeepAlives(Vec<KeepAlive>),
}

/// One session's keep-alive inside [`LogBody::KeepAlives`]; the fields mean
/// what they mean in [`LogBody::KeepAlive`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepAlive {
    /// The session kept alive.
    pub session: SessionId,
    /// Highest command sequence whose response the client has received.
    pub command_sequence: Sequence,
    /// Highest event index the client has received in order.
    pub event_index: EventIndex,
}

impl LogCommand {
    /// Encode as a versioned frame, ready to propose.
    pub fn encode(&self) -> Bytes {
        encode_frame(self)
    }

    /// Decode a versioned frame produced by [`LogCommand::encode`].
    pub fn decode(frame: &[u8]) -> Result<Self, DecodeError> {
        decode_frame(frame)
    }
}
