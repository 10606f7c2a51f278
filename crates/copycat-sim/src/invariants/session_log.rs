//! Checks against the committed log itself, not against other replicas, so
//! that a bug every replica shares still shows:
//!
//! * **Time**: a replica's clock after each entry is the largest timestamp
//!   of the entries so far (it never goes back from entry to entry, and
//!   never runs ahead of the log).
//! * **Expiry**: a session is expired only by an expire entry applied while
//!   it was overdue by the log's own clock (its last keep-alive or command
//!   older than its timeout), or by its client registering again; and every
//!   such entry does expire it.
//! * **Told expired**: a client is told its session expired only once the
//!   log expired it.
//!
//! [`SessionModel`] replays the committed log with these rules, written
//! apart from the replica's code (a second, simple implementation), and the
//! replicas' reports of what applying each entry did are compared with it.

use std::collections::{BTreeMap, BTreeSet};

use copycat_proto::{ClientId, LogBody, LogCommand, SessionId};
use copycat_raft::{Entry, EntryPayload, LogIndex};
use copycat_replica::ReplicaConfig;

/// A session as the log defines it.
#[derive(Clone, Debug)]
struct ModelSession {
    client: ClientId,
    timeout_ms: u64,
    /// Log time of its registration, last keep-alive or last command.
    last_active_ms: u64,
}

/// The session table and clock that the committed log implies.
#[derive(Debug)]
pub struct SessionModel {
    config: ReplicaConfig,
    clock_ms: u64,
    /// A new leader's no-op: every session's timeout restarts at the next
    /// timestamped entry (so an election does not count against sessions).
    restart_timeouts: bool,
    sessions: BTreeMap<SessionId, ModelSession>,
    clients: BTreeMap<ClientId, SessionId>,
    /// Sessions expired or closed, with the index that ended them.
    gone: BTreeMap<SessionId, LogIndex>,
    /// The clock after each entry.
    clock_at: BTreeMap<LogIndex, u64>,
    /// Sessions each entry expired.
    expired_at: BTreeMap<LogIndex, Vec<SessionId>>,
}

impl SessionModel {
    /// An empty log.
    pub fn new(config: ReplicaConfig) -> Self {
        Self {
            config,
            clock_ms: 0,
            restart_timeouts: false,
            sessions: BTreeMap::new(),
            clients: BTreeMap::new(),
            gone: BTreeMap::new(),
            clock_at: BTreeMap::new(),
            expired_at: BTreeMap::new(),
        }
    }

    /// Apply the next committed entry.
    pub fn apply(&mut self, entry: &Entry) {
        let mut expired = Vec::new();
        match &entry.payload {
            EntryPayload::Noop => self.restart_timeouts = true,
            EntryPayload::Config(_) => {}
            EntryPayload::Command(data) => {
                if let Ok(command) = LogCommand::decode(data) {
                    self.clock_ms = self.clock_ms.max(command.timestamp_ms);
                    if self.restart_timeouts {
                        self.restart_timeouts = false;
                        for session in self.sessions.values_mut() {
                            session.last_active_ms = self.clock_ms;
                        }
                    }
                    self.apply_body(entry.index, command.body, &mut expired);
                }
            }
        }
        self.clock_at.insert(entry.index, self.clock_ms);
        if !expired.is_empty() {
            self.expired_at.insert(entry.index, expired);
        }
    }

    fn apply_body(&mut self, index: LogIndex, body: LogBody, expired: &mut Vec<SessionId>) {
        let now = self.clock_ms;
        match body {
            LogBody::Register { client, timeout_ms } => {
                if let Some(old) = self.clients.get(&client).copied() {
                    self.end(old, index);
                    expired.push(old);
                }
                if self.sessions.len() < self.config.max_sessions {
                    let id = SessionId(index.0);
                    self.sessions.insert(
                        id,
                        ModelSession {
                            client,
                            timeout_ms: self.config.session_timeout_ms(timeout_ms),
                            last_active_ms: now,
                        },
                    );
                    self.clients.insert(client, id);
                }
            }
            LogBody::KeepAlive { session, .. } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.last_active_ms = now;
                }
            }
            LogBody::KeepAlives(batch) => {
                for keep_alive in batch {
                    if let Some(s) = self.sessions.get_mut(&keep_alive.session) {
                        s.last_active_ms = now;
                    }
                }
            }
            LogBody::Command {
                session, sequence, ..
            } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    if sequence.0 != 0 {
                        s.last_active_ms = now;
                    }
                }
            }
            LogBody::Unregister { session } => {
                if self.sessions.contains_key(&session) {
                    self.end(session, index);
                }
            }
            LogBody::Expire { session } => {
                let overdue = self
                    .sessions
                    .get(&session)
                    .is_some_and(|s| now.saturating_sub(s.last_active_ms) > s.timeout_ms);
                if overdue {
                    self.end(session, index);
                    expired.push(session);
                }
            }
            LogBody::Tick => {}
        }
    }

    fn end(&mut self, session: SessionId, index: LogIndex) {
        if let Some(s) = self.sessions.remove(&session) {
            self.clients.remove(&s.client);
        }
        self.gone.insert(session, index);
    }

    /// The clock after the entry at `index`, if the model got that far.
    pub fn clock_at(&self, index: LogIndex) -> Option<u64> {
        self.clock_at.get(&index).copied()
    }

    /// The sessions the entry at `index` expired.
    pub fn expired_at(&self, index: LogIndex) -> &[SessionId] {
        self.expired_at.get(&index).map_or(&[], Vec::as_slice)
    }

    /// Whether the log ended `session`.
    pub fn is_gone(&self, session: SessionId) -> bool {
        self.gone.contains_key(&session)
    }

    /// A description of `session` by the log, for failure reports.
    pub fn describe(&self, session: SessionId) -> String {
        match self.sessions.get(&session) {
            Some(s) => format!(
                "open, last active at {}ms, timeout {}ms, log time {}ms",
                s.last_active_ms, s.timeout_ms, self.clock_ms
            ),
            None => "never registered".into(),
        }
    }

    /// Sessions open by the log.
    pub fn open_sessions(&self) -> BTreeSet<SessionId> {
        self.sessions.keys().copied().collect()
    }
}
