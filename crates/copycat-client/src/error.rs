//! What can go wrong with an operation, as a caller can match it.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use copycat_proto::ClientError;

/// Why an operation (or connecting) failed. `E` is the state machine's own
/// error type ([`Bytes`], still encoded, for the untyped [`crate::Client`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error<E = Bytes> {
    /// The state machine refused the operation with its own error value.
    #[error("the state machine refused it: {0:?}")]
    App(E),
    /// The state machine could not decode the operation (client and server
    /// disagree about its types).
    #[error("the state machine could not decode the operation: {0}")]
    Undecodable(String),
    /// The operation is larger than the limit (the client's or the
    /// cluster's).
    #[error("request of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The cluster expired the session (it was not kept alive for a whole
    /// session timeout). A command refused for this reason may or may not
    /// have been applied before.
    #[error("the session expired")]
    SessionExpired,
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// No answer within the request timeout while the cluster looked
    /// reachable. The outcome is unknown: a command may still be applied
    /// (exactly once).
    #[error("no answer within {0:?}; the outcome is unknown")]
    Timeout(Duration),
    /// The cluster could not be reached; the cause says why. Like a
    /// timeout, a command's outcome is unknown.
    #[error("cluster unavailable: {0}")]
    Unavailable(Unavailable),
    /// The cluster refused the operation for another reason (a limit).
    #[error("refused by the cluster: {0}")]
    Rejected(ClientError),
    /// The answer did not decode as the expected type.
    #[error("cannot decode the answer: {0}")]
    Decode(String),
}

impl<E> Error<E> {
    /// The same error with the application error mapped by `f`.
    pub fn map_app<F>(self, f: impl FnOnce(E) -> Result<F, String>) -> Error<F> {
        match self {
            Error::App(e) => match f(e) {
                Ok(e) => Error::App(e),
                Err(message) => Error::Decode(message),
            },
            Error::Undecodable(m) => Error::Undecodable(m),
            Error::TooLarge { size, limit } => Error::TooLarge { size, limit },
            Error::SessionExpired => Error::SessionExpired,
            Error::Closed => Error::Closed,
            Error::Timeout(d) => Error::Timeout(d),
            Error::Unavailable(u) => Error::Unavailable(u),
            Error::Rejected(e) => Error::Rejected(e),
            Error::Decode(m) => Error::Decode(m),
        }
    }

    /// Whether a command that failed this way may still have been applied
    /// (its outcome is unknown, not a failure).
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            Error::Timeout(_) | Error::Unavailable(_) | Error::SessionExpired
        )
    }
}

/// Why the cluster could not be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// Nothing listens at the address.
    #[error("connection refused at {addr}")]
    Refused {
        /// The address.
        addr: SocketAddr,
    },
    /// Something answered at the address, but not a Copycat server.
    #[error("{addr} is not a Copycat server ({detail})")]
    NotCopycat {
        /// The address.
        addr: SocketAddr,
        /// What it answered.
        detail: String,
    },
    /// Connecting failed otherwise (timeout, no route, reset).
    #[error("cannot connect to {addr}: {error}")]
    Unreachable {
        /// The address.
        addr: SocketAddr,
        /// The error.
        error: String,
    },
    /// The TLS handshake failed: the server's certificate did not verify
    /// against the CA the client trusts (or does not name the address
    /// dialed), the server refused the client's certificate, or the server
    /// does not serve TLS.
    #[error("TLS with {addr} failed: {error}")]
    Tls {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        error: String,
    },
    /// A server address did not resolve.
    #[error("cannot resolve {address}: {error}")]
    Resolve {
        /// The address as given.
        address: String,
        /// The error.
        error: String,
    },
    /// Servers answer, but none leads: the cluster has no quorum (or is
    /// electing).
    #[error("no leader known since {} (a cluster without a quorum?)", ago(*since))]
    NoLeader {
        /// When the client last heard from a leader (or started).
        since: SystemTime,
    },
    /// No server address was given.
    #[error("no server addresses given")]
    NoServers,
}

fn ago(since: SystemTime) -> String {
    match SystemTime::now().duration_since(since) {
        Ok(elapsed) => format!("{:.1} s ago", elapsed.as_secs_f64()),
        Err(_) => "just now".to_string(),
    }
}
