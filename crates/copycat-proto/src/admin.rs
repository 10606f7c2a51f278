//! The admin protocol: how operators, the `copycat cluster` commands and
//! joining servers talk to a server about the cluster itself.
//!
//! A connection that opens with [`crate::Hello::Admin`] carries
//! [`AdminRequest`] frames, each answered in order by one [`AdminResponse`].
//! Membership changes and transfers are taken only by the leader; any other
//! server answers [`AdminFailure::NotLeader`] with the leader's id and
//! address when it knows them, and the caller asks again there.

use serde::{Deserialize, Serialize};

/// A member's place in the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberKind {
    /// Votes, replicates, may lead.
    Voter,
    /// Catching up; promoted to voter automatically once caught up.
    Learner,
    /// Replicates committed entries; never votes.
    Passive,
    /// A standby: heartbeats only.
    Reserve,
}

/// What a server is doing in Raft.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServerState {
    /// Follows a leader (or waits for one).
    Follower,
    /// Checking whether it could win an election (pre-vote).
    PreCandidate,
    /// Campaigning.
    Candidate,
    /// Leading.
    Leader,
}

/// One member of a configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Its server id.
    pub id: u64,
    /// Where it is reached (`host:port`), if the configuration says.
    pub address: Option<String>,
    /// Its role.
    pub kind: MemberKind,
}

/// What one server reports about itself and the configuration it knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// The server's id.
    pub id: u64,
    /// The cluster it belongs to.
    pub cluster: u64,
    /// What it is doing in Raft.
    pub state: ServerState,
    /// Its place in its configuration (`None`: not a member).
    pub kind: Option<MemberKind>,
    /// Its term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Its commit index.
    pub commit: u64,
    /// Its applied index.
    pub applied: u64,
    /// The last index in its log.
    pub last_index: u64,
    /// The index of its latest snapshot.
    pub snapshot: u64,
    /// The index of the configuration entry in effect.
    pub config_index: u64,
    /// Every member of that configuration.
    pub members: Vec<MemberInfo>,
    /// On a leader: how far each other member's log is known to match.
    pub match_index: Vec<(u64, u64)>,
}

/// A request on an admin connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// This server's [`ServerStatus`].
    Status,
    /// Add server `id`, reached at `address`, as `kind` (a voter joins as a
    /// learner and is promoted automatically once caught up). Answered
    /// with [`AdminResponse::Joined`] once the change is committed.
    Join {
        /// The new server's id.
        id: u64,
        /// Where the cluster reaches it.
        address: String,
        /// Voter, passive or reserve ([`MemberKind::Learner`] means voter).
        kind: MemberKind,
    },
    /// Make member `id` a `kind` (promote or demote). Answered once the
    /// change is committed (and, for a voter, once it votes).
    SetKind {
        /// The member.
        id: u64,
        /// Its new role.
        kind: MemberKind,
    },
    /// Remove member `id` (the leader itself included: it steps down once
    /// the change commits).
    Remove {
        /// The member.
        id: u64,
    },
    /// Hand leadership to `to`, or to the most caught-up voter.
    TransferLeadership {
        /// The voter to hand it to.
        to: Option<u64>,
    },
}

/// Why an admin request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminFailure {
    /// Only the leader takes this request.
    NotLeader {
        /// The leader, if this server knows it.
        leader: Option<u64>,
        /// Its address, if known.
        address: Option<String>,
    },
    /// The change is not allowed (the reason says why).
    Refused(String),
    /// It did not complete within the server's bound.
    Timeout,
    /// The server is stopping.
    Stopped,
}

impl std::fmt::Display for AdminFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminFailure::NotLeader {
                leader: Some(leader),
                address,
            } => {
                write!(f, "not the leader; server {leader} leads")?;
                if let Some(address) = address {
                    write!(f, " at {address}")?;
                }
                Ok(())
            }
            AdminFailure::NotLeader { leader: None, .. } => {
                write!(f, "not the leader, and no leader is known")
            }
            AdminFailure::Refused(reason) => write!(f, "refused: {reason}"),
            AdminFailure::Timeout => write!(f, "the change did not complete in time"),
            AdminFailure::Stopped => write!(f, "the server is stopping"),
        }
    }
}

/// The answer to an [`AdminRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminResponse {
    /// This server's status.
    Status(ServerStatus),
    /// The server was added; it belongs to cluster `cluster`, whose
    /// configuration (with it) is `members`.
    Joined {
        /// The cluster id the new server records.
        cluster: u64,
        /// The configuration, the new server included.
        members: Vec<MemberInfo>,
    },
    /// The change or transfer is done.
    Done,
    /// It failed.
    Failed(AdminFailure),
}
