//! Administrative calls: membership changes, leadership transfer, status.
//! [`Admin`] is what both the [`crate::Server`] handle and admin
//! connections from the network ([`copycat_proto::AdminRequest`]) use, so
//! the two behave the same.

use std::time::Duration;

use copycat_proto::{
    AdminFailure, AdminRequest, AdminResponse, MemberInfo, MemberKind, ServerState, ServerStatus,
};
use copycat_raft::{
    ConfigChangeError, Configuration, LogIndex, MemberRole, MembershipChange, NodeId, ProposeError,
    Role, Term, TransferError,
};
use copycat_replica::node::ServerNode;
use copycat_replica::RawStateMachine;
use tokio::sync::{mpsc, oneshot, watch};

use crate::owner::{Call, Core, Input};
use crate::server::AdminError;
use crate::status::Status;

/// The way into a running server's core for administrative work.
pub(crate) struct Admin<M> {
    pub(crate) inputs: mpsc::Sender<Input<M>>,
    pub(crate) status: watch::Receiver<Status>,
    pub(crate) election_timeout_ms: u64,
    pub(crate) cluster: u64,
}

impl<M> Clone for Admin<M> {
    fn clone(&self) -> Self {
        Self {
            inputs: self.inputs.clone(),
            status: self.status.clone(),
            election_timeout_ms: self.election_timeout_ms,
            cluster: self.cluster,
        }
    }
}

/// Whether a membership change returns at once when committed, or waits
/// for a new voter's promotion too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    Committed,
    Promoted,
}

pub(crate) fn member_kind(role: MemberRole) -> MemberKind {
    match role {
        MemberRole::Voter => MemberKind::Voter,
        MemberRole::Learner => MemberKind::Learner,
        MemberRole::Passive => MemberKind::Passive,
        MemberRole::Reserve => MemberKind::Reserve,
    }
}

/// The members of `config`, in id order.
pub(crate) fn members_of(config: &Configuration) -> Vec<MemberInfo> {
    config
        .members
        .iter()
        .map(|(id, role)| MemberInfo {
            id: id.0,
            address: config.address(*id).map(str::to_string),
            kind: member_kind(*role),
        })
        .collect()
}

/// The configuration `members` describe.
pub(crate) fn config_of(members: &[MemberInfo]) -> Configuration {
    let mut config = Configuration::default();
    for member in members {
        let role = match member.kind {
            MemberKind::Voter => MemberRole::Voter,
            MemberKind::Learner => MemberRole::Learner,
            MemberKind::Passive => MemberRole::Passive,
            MemberKind::Reserve => MemberRole::Reserve,
        };
        config.members.insert(NodeId(member.id), role);
        if let Some(address) = &member.address {
            config.addresses.insert(NodeId(member.id), address.clone());
        }
    }
    config
}

impl<M: RawStateMachine + Send + 'static> Admin<M> {
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core<M>) -> R + Send + 'static,
    ) -> Result<R, AdminError> {
        let (tx, rx) = oneshot::channel();
        let call: Call<M> = Box::new(move |core| {
            let _ = tx.send(f(core));
        });
        self.inputs
            .send(Input::Call(call))
            .await
            .map_err(|_| AdminError::Stopped)?;
        rx.await.map_err(|_| AdminError::Stopped)
    }

    pub(crate) async fn inspect<R: Send + 'static>(
        &self,
        f: impl FnOnce(&ServerNode<M>) -> R + Send + 'static,
    ) -> Result<R, AdminError> {
        self.call(move |core| f(core.shell.server())).await
    }

    /// Propose `change` (with `address` for the member, if given) and wait
    /// until it is committed, and with [`Wait::Promoted`] until a new voter
    /// votes. A change in progress is waited for (changes go one at a
    /// time).
    pub(crate) async fn change(
        &self,
        change: MembershipChange,
        address: Option<String>,
        wait: Wait,
    ) -> Result<(), AdminError> {
        let limit = Duration::from_millis(self.election_timeout_ms.saturating_mul(20));
        let deadline = tokio::time::Instant::now() + limit;
        let (index, term) = loop {
            let change = change.clone();
            let address = address.clone();
            let proposed = self
                .call(move |core| {
                    let raft = core.shell.server_mut().raft_mut();
                    let term = raft.term();
                    // Promoting or demoting names a member; a server that
                    // is not one (removed meanwhile) would come back with
                    // no address, and nobody could reach it.
                    let added = match change {
                        MembershipChange::AddVoter(id)
                        | MembershipChange::AddPassive(id)
                        | MembershipChange::AddReserve(id) => Some(id),
                        MembershipChange::Remove(_) => None,
                    };
                    if let Some(id) = added {
                        if address.is_none() && raft.configuration().1.role(id).is_none() {
                            return Err(ConfigChangeError::Invalid(format!(
                                "server {} is not a member: add it with its address",
                                id.0
                            )));
                        }
                    }
                    raft.change_membership_at(change, address, None)
                        .map(|index| (index, term))
                })
                .await?;
            match proposed {
                Ok(proposed) => break proposed,
                Err(ConfigChangeError::ChangeInProgress)
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(ConfigChangeError::Propose(ProposeError::NotLeader { leader })) => {
                    return Err(AdminError::NotLeader { leader })
                }
                Err(other) => return Err(AdminError::Refused(other.to_string())),
            }
        };
        self.wait_committed(index, term, deadline, limit).await?;
        let MembershipChange::AddVoter(id) = change else {
            return Ok(());
        };
        if wait == Wait::Committed {
            return Ok(());
        }
        // A new voter is a learner until it has caught up: wait for its
        // promotion too, so the call returns once the change is complete.
        let mut status = self.status.clone();
        loop {
            let promoted = self
                .inspect(move |server| {
                    let raft = server.raft();
                    let (index, config) = raft.configuration();
                    config.role(id) == Some(MemberRole::Voter) && index <= raft.commit_index()
                })
                .await?;
            if promoted {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, status.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(AdminError::Stopped),
                Err(_) => return Err(AdminError::Timeout(limit)),
            }
        }
    }

    /// Wait until the entry at `index`, proposed in `term`, is committed.
    async fn wait_committed(
        &self,
        index: LogIndex,
        term: Term,
        deadline: tokio::time::Instant,
        limit: Duration,
    ) -> Result<(), AdminError> {
        let mut status = self.status.clone();
        loop {
            let now = *status.borrow_and_update();
            if now.term != term {
                return Err(AdminError::LeadershipLost);
            }
            if now.commit >= index {
                let ours = self
                    .inspect(move |server| server.raft().term_at(index))
                    .await?;
                return match ours {
                    Some(t) if t != term => Err(AdminError::LeadershipLost),
                    _ => Ok(()),
                };
            }
            match tokio::time::timeout_at(deadline, status.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(AdminError::Stopped),
                Err(_) => return Err(AdminError::Timeout(limit)),
            }
        }
    }

    /// Hand leadership to `id` and wait until it leads.
    pub(crate) async fn transfer_leadership(&self, id: u64) -> Result<(), AdminError> {
        let target = NodeId(id);
        self.call(move |core| {
            core.shell
                .server_mut()
                .raft_mut()
                .transfer_leadership(target)
        })
        .await?
        .map_err(|error| match error {
            TransferError::NotLeader { leader } => AdminError::NotLeader { leader },
            other => AdminError::Refused(other.to_string()),
        })?;
        // Two election timeouts: the transfer itself is aborted after one.
        let limit = Duration::from_millis(self.election_timeout_ms.saturating_mul(2));
        let mut status = self.status.clone();
        let waited = tokio::time::timeout(limit, status.wait_for(|s| s.leader == Some(target)))
            .await
            .map(|r| r.map(|_| ()));
        match waited {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(AdminError::Stopped),
            Err(_) => Err(AdminError::Timeout(limit)),
        }
    }

    /// The voter other than this leader whose log matches the most, if
    /// this server leads.
    pub(crate) async fn best_successor(&self) -> Option<NodeId> {
        self.inspect(|server| {
            let raft = server.raft();
            if !raft.is_leader() {
                return None;
            }
            let me = raft.id();
            let matched = raft.match_indexes();
            raft.configuration()
                .1
                .voters()
                .filter(|id| *id != me)
                .max_by_key(|id| matched.get(id).copied().unwrap_or_default())
        })
        .await
        .ok()
        .flatten()
    }

    /// What this server reports about itself.
    pub(crate) async fn server_status(&self) -> Result<ServerStatus, AdminError> {
        let cluster = self.cluster;
        self.inspect(move |server| {
            let raft = server.raft();
            let (config_index, config) = raft.configuration();
            let state = match raft.role() {
                Role::Follower => ServerState::Follower,
                Role::PreCandidate => ServerState::PreCandidate,
                Role::Candidate => ServerState::Candidate,
                Role::Leader => ServerState::Leader,
            };
            ServerStatus {
                id: raft.id().0,
                cluster,
                state,
                kind: raft.member_role().map(member_kind),
                term: raft.term().0,
                leader: raft.leader().map(|l| l.0),
                commit: raft.commit_index().0,
                applied: server.replica().applied_index().0,
                last_index: raft.last_index().0,
                snapshot: raft.snapshot_meta().index.0,
                config_index: config_index.0,
                members: members_of(config),
                match_index: raft
                    .match_indexes()
                    .into_iter()
                    .map(|(id, index)| (id.0, index.0))
                    .collect(),
            }
        })
        .await
    }

    /// Answer one request from an admin connection.
    pub(crate) async fn handle(&self, request: AdminRequest) -> AdminResponse {
        let result = match request {
            AdminRequest::Status => {
                return match self.server_status().await {
                    Ok(status) => AdminResponse::Status(status),
                    Err(error) => AdminResponse::Failed(self.failure(error).await),
                }
            }
            AdminRequest::Join { id, address, kind } => {
                let change = match kind {
                    MemberKind::Voter | MemberKind::Learner => {
                        MembershipChange::AddVoter(NodeId(id))
                    }
                    MemberKind::Passive => MembershipChange::AddPassive(NodeId(id)),
                    MemberKind::Reserve => MembershipChange::AddReserve(NodeId(id)),
                };
                // A join retried after its answer was lost finds itself
                // in the configuration already (a voter-to-be as a
                // learner): it has joined. The leader answers that, so
                // the configuration it reads is the one that counts.
                let current = self
                    .inspect(|server| {
                        let raft = server.raft();
                        (raft.is_leader(), members_of(raft.configuration().1))
                    })
                    .await;
                let already = current.ok().filter(|(leader, members)| {
                    *leader
                        && members.iter().any(|m| {
                            m.id == id
                                && m.address.as_deref() == Some(address.as_str())
                                && match kind {
                                    MemberKind::Voter | MemberKind::Learner => {
                                        m.kind == MemberKind::Learner
                                    }
                                    other => m.kind == other,
                                }
                        })
                });
                if let Some((_, members)) = already {
                    return AdminResponse::Joined {
                        cluster: self.cluster,
                        members,
                    };
                }
                if id == 0 {
                    Err(AdminError::Refused("server id 0 is reserved".into()))
                } else {
                    // The joining server is not running yet: it cannot be
                    // promoted before it has its answer.
                    match self.change(change, Some(address), Wait::Committed).await {
                        Ok(()) => {
                            let members = self
                                .inspect(|server| members_of(server.raft().configuration().1))
                                .await;
                            return match members {
                                Ok(members) => AdminResponse::Joined {
                                    cluster: self.cluster,
                                    members,
                                },
                                Err(error) => AdminResponse::Failed(self.failure(error).await),
                            };
                        }
                        Err(error) => Err(error),
                    }
                }
            }
            AdminRequest::SetKind { id, kind } => {
                let (change, wait) = match kind {
                    MemberKind::Voter | MemberKind::Learner => {
                        (MembershipChange::AddVoter(NodeId(id)), Wait::Promoted)
                    }
                    MemberKind::Passive => {
                        (MembershipChange::AddPassive(NodeId(id)), Wait::Committed)
                    }
                    MemberKind::Reserve => {
                        (MembershipChange::AddReserve(NodeId(id)), Wait::Committed)
                    }
                };
                self.change(change, None, wait).await
            }
            AdminRequest::Remove { id } => {
                self.change(MembershipChange::Remove(NodeId(id)), None, Wait::Committed)
                    .await
            }
            AdminRequest::TransferLeadership { to } => {
                let to = match to {
                    Some(to) => Some(to),
                    None => self.best_successor().await.map(|id| id.0),
                };
                match to {
                    Some(to) => self.transfer_leadership(to).await,
                    None => Err(self
                        .not_leader_or("no other voter to hand leadership to")
                        .await),
                }
            }
        };
        match result {
            Ok(()) => AdminResponse::Done,
            Err(error) => AdminResponse::Failed(self.failure(error).await),
        }
    }

    /// `NotLeader` if this server does not lead, else `Refused(reason)`.
    async fn not_leader_or(&self, reason: &str) -> AdminError {
        let status = *self.status.borrow();
        if status.is_leader() {
            AdminError::Refused(reason.into())
        } else {
            AdminError::NotLeader {
                leader: status.leader,
            }
        }
    }

    async fn failure(&self, error: AdminError) -> AdminFailure {
        match error {
            AdminError::NotLeader { leader } => {
                let address = match leader {
                    Some(leader) => self
                        .inspect(move |server| {
                            server
                                .raft()
                                .configuration()
                                .1
                                .address(leader)
                                .map(str::to_string)
                        })
                        .await
                        .ok()
                        .flatten(),
                    None => None,
                };
                AdminFailure::NotLeader {
                    leader: leader.map(|l| l.0),
                    address,
                }
            }
            AdminError::Timeout(_) => AdminFailure::Timeout,
            AdminError::Stopped => AdminFailure::Stopped,
            other => AdminFailure::Refused(other.to_string()),
        }
    }
}
