//! What a running server reports about itself.

use std::time::Duration;

use copycat_raft::{LogIndex, MemberRole, NodeId, Role, Term};
use copycat_replica::node::ServerNode;
use copycat_replica::RawStateMachine;

/// What a running server is doing, updated after every batch it carries
/// out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// This server.
    pub id: NodeId,
    /// Its Raft role.
    pub role: Role,
    /// Its place in the configuration (`None`: not a member).
    pub member_role: Option<MemberRole>,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its term.
    pub term: Term,
    /// Its commit index.
    pub commit: LogIndex,
    /// What its replica applied.
    pub applied: LogIndex,
    /// The index of its latest snapshot.
    pub snapshot: LogIndex,
    /// Its disk is full: it refuses client requests and takes no part in
    /// Raft until writes succeed again (see `docs/operations.md`).
    pub disk_full: bool,
}

impl Status {
    pub(crate) fn of<M: RawStateMachine>(server: &ServerNode<M>) -> Self {
        let raft = server.raft();
        Self {
            id: raft.id(),
            role: raft.role(),
            member_role: raft.member_role(),
            leader: raft.leader(),
            term: raft.term(),
            commit: raft.commit_index(),
            applied: server.replica().applied_index(),
            snapshot: raft.snapshot_meta().index,
            disk_full: false,
        }
    }

    /// Whether this server is the leader.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// The leadership this status shows.
    pub fn leadership(&self) -> Leadership {
        Leadership {
            leader: self.leader,
            term: self.term,
        }
    }
}

/// Who leads, as one server sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// The leader, if one is known.
    pub leader: Option<NodeId>,
    /// The term it leads (or the server's term while no leader is known).
    pub term: Term,
}

/// How promptly a server's owner thread (the one thread that runs the
/// server core) got through its work over an interval; see
/// [`crate::Server::take_loop_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Loop iterations: a batch of inputs handled, carried out and sent.
    pub iterations: u64,
    /// The longest iteration.
    pub max_iteration: Duration,
    /// The longest interval between two messages from the same leader, as
    /// this server handled them (a leader sends at least a heartbeat per
    /// heartbeat interval; more is a stall of the leader, the network or
    /// this server).
    pub max_leader_gap: Duration,
    /// Times the latest snapshot advanced (one taken and made durable, or
    /// one installed from the leader).
    pub snapshots: u64,
}
