//! The observability endpoint: a small HTTP/1.1 server on an address of
//! its own (never the Raft port), off unless
//! [`ServerBuilder::http`](crate::ServerBuilder::http) is given.
//!
//! - `GET /metrics`: every metric in the Prometheus text format;
//! - `GET /health`: 200 while the server runs and its storage works (the
//!   owner thread finishes a loop, sync included, at least every
//!   [`STUCK_AFTER_MS`]; no sync failed), 503 with the reason otherwise;
//! - `GET /ready`: 200 when this server can serve reads and writes: it
//!   knows a leader and has applied everything it knows committed, and its
//!   disk is not full; 503 with the reason otherwise. (A full disk does not
//!   fail `/health`: the server recovers by itself when space returns.)

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::status::Status;

/// `/health` fails when the owner thread has not finished a loop for this
/// long (it wakes every 10 ms; a sync that takes seconds is a sick disk).
pub const STUCK_AFTER_MS: u64 = 5_000;

pub(crate) struct HttpState {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) status: watch::Receiver<Status>,
}

/// What `/health` says: `Ok` or why not.
pub(crate) fn health(
    running: bool,
    storage_failed: bool,
    since_loop_ms: u64,
) -> Result<String, String> {
    if !running {
        return Err("the server has stopped".into());
    }
    if storage_failed {
        return Err("the storage failed (a write or sync of the data directory)".into());
    }
    if since_loop_ms > STUCK_AFTER_MS {
        return Err(format!(
            "the server thread has not finished a loop for {since_loop_ms} ms (stuck on the disk?)"
        ));
    }
    Ok("ok".into())
}

/// What `/ready` says: `Ok` or why not.
pub(crate) fn ready(running: bool, status: &Status) -> Result<String, String> {
    if !running {
        return Err("the server has stopped".into());
    }
    if status.disk_full {
        return Err(
            "the disk is full: client requests are refused until writes succeed again".into(),
        );
    }
    if status.member_role.is_none() {
        return Err("this server is not a member of the cluster".into());
    }
    let Some(leader) = status.leader else {
        return Err(format!(
            "no leader known (term {}, role {:?})",
            status.term.0, status.role
        ));
    };
    if status.applied < status.commit {
        return Err(format!(
            "applied {} of {} committed entries",
            status.applied.0, status.commit.0
        ));
    }
    Ok(format!(
        "ready: leader {} in term {}, applied {}",
        leader.0, status.term.0, status.applied.0
    ))
}

fn text(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body + "\n")));
    *response.status_mut() = code;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn answer(result: Result<String, String>) -> Response<Full<Bytes>> {
    match result {
        Ok(body) => text(StatusCode::OK, body),
        Err(body) => text(StatusCode::SERVICE_UNAVAILABLE, body),
    }
}

fn route(state: &HttpState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET".into());
    }
    let running = state.status.has_changed().is_ok();
    let status = *state.status.borrow();
    match request.uri().path() {
        "/metrics" => {
            state.metrics.set_status(&status);
            let mut response = Response::new(Full::new(Bytes::from(state.metrics.encode())));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        "/health" => answer(health(
            running,
            state.metrics.has_storage_failed(),
            state.metrics.since_last_loop_ms(),
        )),
        "/ready" => answer(ready(running, &status)),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /health or /ready".into(),
        ),
    }
}

/// Serve until the server stops.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "http accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = route(&state, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.changed() => {}
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "http connection failed");
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use copycat_raft::{LogIndex, MemberRole, NodeId, Role, Term};

    use super::*;

    fn status(leader: Option<u64>, commit: u64, applied: u64) -> Status {
        Status {
            id: NodeId(1),
            role: Role::Follower,
            member_role: Some(MemberRole::Voter),
            leader: leader.map(NodeId),
            term: Term(3),
            commit: LogIndex(commit),
            applied: LogIndex(applied),
            snapshot: LogIndex(0),
            disk_full: false,
        }
    }

    #[test]
    fn ready_needs_a_leader_and_everything_committed_applied() {
        assert!(ready(true, &status(Some(2), 10, 10)).is_ok());
        let no_leader = ready(true, &status(None, 10, 10)).unwrap_err();
        assert!(no_leader.contains("no leader known"), "{no_leader}");
        let behind = ready(true, &status(Some(2), 10, 9)).unwrap_err();
        assert!(behind.contains("applied 9 of 10"), "{behind}");
        assert!(ready(false, &status(Some(2), 10, 10)).is_err());
        let mut outsider = status(Some(2), 10, 10);
        outsider.member_role = None;
        assert!(ready(true, &outsider).is_err());
        let mut full = status(Some(2), 10, 10);
        full.disk_full = true;
        let error = ready(true, &full).unwrap_err();
        assert!(error.contains("disk is full"), "{error}");
    }

    #[test]
    fn health_needs_a_running_loop_and_working_storage() {
        assert!(health(true, false, 10).is_ok());
        assert!(health(false, false, 10).is_err());
        assert!(health(true, true, 10).unwrap_err().contains("storage"));
        assert!(health(true, false, STUCK_AFTER_MS + 1)
            .unwrap_err()
            .contains("stuck"));
    }
}
