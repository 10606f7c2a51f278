//! The liveness phase: heal everything, require the cluster to converge
//! within a bound, then read every key on every server.
//!
//! Convergence means: a leader; an operation invoked after the heal
//! completed for every live client; the crashed client's session expired;
//! every replicating member applied what the leader had committed at the
//! previous check. Then the final reads: every key is read on every
//! replicating server (sequential reads that must reach the leader's commit
//! index, each answer compared with the value the log gives at the index it
//! was served from) and once through the leader (linearizable, in the
//! history, so every acknowledged write must show).

use std::collections::BTreeMap;

use copycat_proto::{
    ClientRequest, Consistency, Request, RequestId, Response, Sequence, SessionId,
};
use copycat_raft::LogIndex;
use copycat_replica::codec;
use serde_json::json;

use super::kv::KvOutput;
use super::world::{Event, Simulation};
use crate::history::{OperationId, ProcessId};

/// Request ids of the final reads start here (far above a session core's).
const FINAL_READ_IDS: u64 = 1 << 60;
/// History processes of the final linearizable reads start here.
const FINAL_PROCESSES: u64 = 1 << 40;

/// One final read in flight.
#[derive(Debug)]
pub(super) struct FinalRead {
    node: usize,
    key: u8,
    /// The index the answer must reach.
    floor: LogIndex,
    /// The history entry of a linearizable read.
    id: Option<OperationId>,
}

/// The final reads of a run.
#[derive(Debug, Default)]
pub(super) struct FinalReads {
    started: bool,
    /// Through which client's connection (and session) they go.
    via: Option<(usize, SessionId)>,
    waiting: BTreeMap<RequestId, FinalRead>,
    next: u64,
}

impl Simulation {
    pub(super) fn start_liveness(&mut self) {
        self.safety = false;
        self.liveness_started = Some(self.now);
        self.trace(format_args!("liveness phase: heal everything"));
        self.cuts.clear();
        for node in 0..self.nodes.len() {
            self.unpause(node);
            if self.nodes[node].live.is_none() {
                self.start_node(node);
            }
        }
        // Every node back in the configuration as a voter is not required:
        // whatever configuration the cluster has must work.
        for client in &mut self.clients {
            client.ok_since_liveness = 0;
        }
        self.schedule(100, Event::LivenessCheck);
    }

    pub(super) fn liveness_check(&mut self) {
        let started = self.liveness_started.expect("liveness started");
        if self.final_reads.started && self.final_reads.waiting.is_empty() {
            self.trace(format_args!(
                "converged and read back after {}ms",
                self.now - started
            ));
            self.done = true;
            return;
        }
        if !self.final_reads.started && self.converged() {
            self.trace(format_args!("converged after {}ms", self.now - started));
            self.start_final_reads();
        }
        if self.now - started > self.params.liveness_ms {
            self.fail_liveness();
            return;
        }
        self.schedule(100, Event::LivenessCheck);
    }

    fn fail_liveness(&mut self) {
        let state: Vec<String> = self
            .nodes
            .iter()
            .map(|n| match &n.live {
                Some(l) => format!(
                    "{:?}:{:?}/{:?} commit={:?} applied={:?} member={:?}",
                    n.id,
                    l.shell.server().raft().role(),
                    l.shell.server().raft().term(),
                    l.shell.server().raft().commit_index(),
                    l.shell.server().replica().applied_index(),
                    l.shell.server().raft().member_role()
                ),
                None => format!("{:?}:down", n.id),
            })
            .collect();
        let sessions: String = self
            .current_leader()
            .and_then(|leader| self.nodes[leader].live.as_ref())
            .map(|live| {
                let replica = live.shell.server().replica();
                format!(
                    "leader replica time {}ms, sessions {:?}, suspect {:?}",
                    replica.time_ms(),
                    replica
                        .sessions()
                        .iter()
                        .map(|s| (s.id.0, replica.session_timing(s.id)))
                        .collect::<Vec<_>>(),
                    replica.suspect_sessions()
                )
            })
            .unwrap_or_default();
        let clients: Vec<String> = self.clients.iter().map(|c| c.describe()).collect();
        let reads: Vec<String> = self
            .final_reads
            .waiting
            .values()
            .map(|r| format!("k{} on n{}", r.key, r.node + 1))
            .collect();
        self.fail(format!(
            "liveness: no convergence within {}ms of healing: {state:?}, clients {clients:?}; {sessions}; final reads waiting {reads:?}",
            self.params.liveness_ms
        ));
    }

    /// A leader exists, every client completed an operation since the heal,
    /// and every replicating member applied everything the leader had
    /// committed at the previous check (the log keeps moving: keep-alives
    /// and time entries go on, so "equal right now" would be too strict).
    fn converged(&mut self) -> bool {
        let Some(leader) = self.current_leader() else {
            self.liveness_target = None;
            return false;
        };
        if self
            .clients
            .iter()
            .any(|c| !c.dead && c.ok_since_liveness == 0)
        {
            return false;
        }
        let live = self.nodes[leader].live.as_ref().expect("leader is live");
        // The sessions of crashed clients expire.
        let open: Vec<SessionId> = live
            .shell
            .server()
            .replica()
            .sessions()
            .iter()
            .map(|s| s.id)
            .collect();
        if self
            .clients
            .iter()
            .any(|c| c.dead && c.last_session.is_some_and(|s| open.contains(&s)))
        {
            return false;
        }
        let commit = live.shell.server().raft().commit_index();
        let Some(target) = self.liveness_target.replace(commit) else {
            return false;
        };
        let (_, config) = live.shell.server().raft().configuration();
        config.members.iter().all(|(id, role)| {
            !role.replicates()
                || self.nodes[(id.0 - 1) as usize]
                    .live
                    .as_ref()
                    .is_some_and(|n| n.shell.server().replica().applied_index() >= target)
        })
    }

    /// Read every key on every replicating server, and through the leader.
    fn start_final_reads(&mut self) {
        self.final_reads.started = true;
        let Some(leader) = self.current_leader() else {
            return;
        };
        // Any live client with a session carries the reads (its session
        // core is quiet by now).
        let via = self.clients.iter().enumerate().find_map(|(index, c)| {
            c.last_session
                .filter(|_| !c.dead)
                .map(|session| (index, session))
        });
        let Some((client, session)) = via else {
            return;
        };
        self.final_reads.via = Some((client, session));
        let live = self.nodes[leader].live.as_ref().expect("leader is live");
        let floor = live.shell.server().raft().commit_index();
        let (_, config) = live.shell.server().raft().configuration();
        let replicating: Vec<usize> = config
            .members
            .iter()
            .filter(|(_, role)| role.replicates())
            .map(|(id, _)| (id.0 - 1) as usize)
            .collect();
        for key in 0..self.params.keys {
            for &node in &replicating {
                self.final_read(client, session, node, key, floor, Consistency::Sequential);
            }
            self.final_read(
                client,
                session,
                leader,
                key,
                floor,
                Consistency::Linearizable,
            );
        }
    }

    fn final_read(
        &mut self,
        client: usize,
        session: SessionId,
        node: usize,
        key: u8,
        floor: LogIndex,
        consistency: Consistency,
    ) {
        self.final_reads.next += 1;
        let request_id = RequestId(FINAL_READ_IDS + self.final_reads.next);
        let id = (consistency != Consistency::Sequential).then(|| {
            self.history.invoke(
                ProcessId(FINAL_PROCESSES + u64::from(key)),
                "read",
                format!("k{key}").as_str(),
                json!(null),
                self.now,
            )
        });
        self.final_reads.waiting.insert(
            request_id,
            FinalRead {
                node,
                key,
                floor,
                id,
            },
        );
        let request = ClientRequest {
            id: request_id,
            request: Request::Query {
                session,
                sequence: Sequence(0),
                index: floor.0,
                consistency,
                payload: codec::encode(&super::kv::KvQuery::Read(key)),
            },
        };
        self.send_to_server(client, node, request);
    }

    /// A final read answered (`true` if `id` was one).
    pub(super) fn on_final_read(
        &mut self,
        node: usize,
        id: RequestId,
        result: &Result<Response, copycat_proto::ClientError>,
    ) -> bool {
        let Some(read) = self.final_reads.waiting.remove(&id) else {
            return id.0 > FINAL_READ_IDS;
        };
        let server = node + 1;
        let key = read.key;
        let answer = match result {
            Ok(Response::Query {
                index,
                output: Ok(bytes),
                ..
            }) => codec::decode::<KvOutput>(bytes).ok().map(|o| (o, *index)),
            _ => None,
        };
        match answer {
            Some((KvOutput::Value(value, state_index), _)) => {
                if state_index < read.floor.0 {
                    self.fail(format!(
                        "final read of k{key} on n{server} answered from index {state_index}, below the leader's commit {:?}",
                        read.floor
                    ));
                    return true;
                }
                if let Err(failure) =
                    self.observer
                        .check_read_value(key, value, LogIndex(state_index))
                {
                    self.fail(format!("final read on n{server}: {failure}"));
                    return true;
                }
                if let Some(id) = read.id {
                    self.history.ok(id, json!(value), self.now);
                }
            }
            _ => {
                // A linearizable read refused (leadership moved) did not
                // happen; a sequential one must always be answered.
                match read.id {
                    Some(id) => self.history.fail(id, self.now),
                    None => {
                        self.fail(format!(
                            "final sequential read of k{key} on n{server} got {result:?}"
                        ));
                    }
                }
            }
        }
        true
    }
}
