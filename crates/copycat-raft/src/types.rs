//! Plain data types shared by the core, the storage crate and the wire.
//!
//! Everything here is `serde`-serializable so that the storage and protocol
//! crates can encode it without wrapper types. Newtypes carry meaning: a
//! [`Term`] can never be passed where a [`LogIndex`] is expected.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

macro_rules! newtype_u64 {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The zero value.
            pub const ZERO: Self = Self(0);

            /// The raw number.
            pub const fn get(self) -> u64 {
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

        impl From<u64> for $name {
            fn from(value: u64) -> Self {
                Self(value)
            }
        }
    };
}

newtype_u64!(
    /// A Raft term. Terms only grow; each term has at most one leader (§5.2).
    Term,
    "t"
);
newtype_u64!(
    /// A position in the replicated log. Index 0 is the empty prefix: the
    /// first real entry has index 1.
    LogIndex,
    "i"
);
newtype_u64!(
    /// The identity of a server. Chosen by the operator; never reused for a
    /// different server. `NodeId(0)` is reserved and never a member.
    NodeId,
    "n"
);

impl LogIndex {
    /// The following index.
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// The preceding index (saturating at zero).
    pub const fn prev(self) -> Self {
        Self(self.0.saturating_sub(1))
    }
}

impl Term {
    /// The following term.
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

/// A point on the caller's monotonic clock, in milliseconds since an
/// arbitrary epoch the caller chose. The core never reads a clock: every
/// input that needs time carries it.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Time(pub u64);

impl Time {
    /// `self + millis`, saturating.
    pub const fn plus_ms(self, millis: u64) -> Self {
        Self(self.0.saturating_add(millis))
    }

    /// Milliseconds from `earlier` to `self`, or zero if `earlier` is later.
    pub const fn since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// The role a server plays in a configuration.
///
/// Only voters count towards quorums. Learners, passives and reserves never
/// vote and never campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberRole {
    /// A full member (the original's ACTIVE): votes, replicates, may lead.
    Voter,
    /// A server that is catching up before it becomes a voter. The leader
    /// promotes it automatically once its log is close to the leader's
    /// (Raft thesis §4.2.1).
    Learner,
    /// A non-voting full replica (the original's PASSIVE). It receives only
    /// committed entries and is never promoted automatically.
    Passive,
    /// A standby (the original's RESERVE). It receives no log entries, only
    /// heartbeats carrying the commit index, and can be promoted later.
    Reserve,
}

impl MemberRole {
    /// Whether the leader sends log entries to a member in this role.
    pub const fn replicates(self) -> bool {
        !matches!(self, MemberRole::Reserve)
    }
}

/// Longest member address a configuration may carry, in bytes.
pub const MAX_ADDRESS_BYTES: usize = 256;

/// A cluster membership: every member, its role and where it is reached.
///
/// Addresses are opaque to the core: it carries them with the membership
/// (so that every server learns every member's address from the log or a
/// snapshot, exactly when it learns of the member) and never reads them.
///
/// Invariants: `NodeId(0)` is never a member; every address belongs to a
/// member and is at most [`MAX_ADDRESS_BYTES`] long.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configuration {
    /// Members by id. A `BTreeMap` so iteration order is deterministic.
    pub members: BTreeMap<NodeId, MemberRole>,
    /// Where members are reached (`host:port`), by id. A member may have
    /// none (the core does not need one).
    pub addresses: BTreeMap<NodeId, String>,
}

impl Configuration {
    /// A configuration in which every listed server is a voter.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Self {
            members: voters
                .into_iter()
                .map(|id| (id, MemberRole::Voter))
                .collect(),
            addresses: BTreeMap::new(),
        }
    }

    /// The same configuration with `id` reached at `address`.
    pub fn with_address(mut self, id: NodeId, address: impl Into<String>) -> Self {
        self.addresses.insert(id, address.into());
        self
    }

    /// Where `id` is reached, if the configuration says.
    pub fn address(&self, id: NodeId) -> Option<&str> {
        self.addresses.get(&id).map(String::as_str)
    }

    /// Whether the invariants hold: no member 0, every address a member's
    /// and not too long.
    pub fn is_well_formed(&self) -> bool {
        !self.members.contains_key(&NodeId(0))
            && self.addresses.iter().all(|(id, address)| {
                self.members.contains_key(id) && address.len() <= MAX_ADDRESS_BYTES
            })
    }

    /// The role of `id`, or `None` if it is not a member.
    pub fn role(&self, id: NodeId) -> Option<MemberRole> {
        self.members.get(&id).copied()
    }

    /// Whether `id` is a voter.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.role(id) == Some(MemberRole::Voter)
    }

    /// The voters, in id order.
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|(_, role)| **role == MemberRole::Voter)
            .map(|(id, _)| *id)
    }

    /// Number of voters.
    pub fn voter_count(&self) -> usize {
        self.voters().count()
    }

    /// The number of voters that make a majority.
    pub fn quorum(&self) -> usize {
        self.voter_count() / 2 + 1
    }
}

/// What the core asks to be durable about itself: the current term and the
/// vote cast in it (§5.1, Figure 2 "persistent state").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// Latest term this server has seen.
    pub term: Term,
    /// Candidate that received this server's vote in `term`, if any.
    pub vote: Option<NodeId>,
}

/// The content of a log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by every new leader at the start of its term (§8): committing
    /// it commits everything before it and tells the leader its commit index.
    Noop,
    /// An application command, opaque to the core.
    Command(Bytes),
    /// A new configuration. It takes effect on each server as soon as the
    /// entry is appended to that server's log (thesis §4.1).
    Config(Configuration),
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Term of the leader that created the entry.
    pub term: Term,
    /// Position in the log.
    pub index: LogIndex,
    /// What the entry carries.
    pub payload: EntryPayload,
}

/// Fixed per-entry overhead counted by [`Entry::size_bytes`], so that empty
/// entries still count against byte limits.
pub const ENTRY_OVERHEAD_BYTES: usize = 24;

impl Entry {
    /// Approximate encoded size, used for batching and memory limits.
    pub fn size_bytes(&self) -> usize {
        ENTRY_OVERHEAD_BYTES
            + match &self.payload {
                EntryPayload::Noop => 0,
                EntryPayload::Command(data) => data.len(),
                EntryPayload::Config(config) => {
                    config.members.len() * 9
                        + config
                            .addresses
                            .values()
                            .map(|a| a.len() + 9)
                            .sum::<usize>()
                }
            }
    }
}

/// Describes a snapshot: the state after applying every entry up to and
/// including `index`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Last log index the snapshot covers.
    pub index: LogIndex,
    /// Term of the entry at `index`.
    pub term: Term,
    /// The configuration in effect at `index`.
    pub config: Configuration,
}

/// The durable state a server restarts from. The storage layer builds it on
/// open; [`crate::RawNode::new`] consumes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersistentState {
    /// Term and vote.
    pub hard_state: HardState,
    /// The latest installed snapshot. A freshly bootstrapped server uses a
    /// snapshot at index 0 carrying the initial configuration.
    pub snapshot: SnapshotMeta,
    /// The entries the log holds, contiguous. The log may keep a few entries
    /// at or below `snapshot.index` (to spare slow followers a snapshot), so
    /// when it is not empty the first index is at most `snapshot.index + 1`
    /// and the last at least `snapshot.index`.
    pub entries: Vec<Entry>,
}
