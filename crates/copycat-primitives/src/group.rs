//! Group membership with an election and messaging.
//!
//! Members join with an id, ephemeral (gone when their session closes) or
//! persistent (marked dead when their session closes, and able to rejoin
//! from a new session under the same id). Listeners hear joins, leaves,
//! status changes and leadership changes. The oldest alive member leads
//! until it dies or leaves; its term is a fencing token like a lock's.
//!
//! Messages go to one member (direct), to one alive member picked by a
//! generator seeded from the log index (random), or to every alive member
//! (broadcast). The recipient acknowledges each message, with a reply when
//! the sender asked for one, and the sender is told. A message whose
//! recipient dies before acknowledging is redelivered: a random message to
//! another alive member, a direct one to a persistent member when it
//! rejoins; otherwise the sender is told it failed.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use copycat_proto::SessionId;
use serde::{Deserialize, Serialize};

use crate::{Ctx, Resource, ResourceError};

/// Where a message goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivery {
    /// To this member (waiting for a dead persistent member to rejoin).
    Direct(String),
    /// To one alive member, picked deterministically from the log index.
    Random,
    /// A copy to every alive member.
    Broadcast,
}

/// Commands of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupCommand {
    /// Join as `id` (or `m<log index>`; ids are limited like resource
    /// names) with `metadata`;
    /// answers the id. Rejoining a dead persistent member revives it;
    /// joining an id alive in another session is
    /// [`ResourceError::MemberInUse`].
    Join {
        /// The member id, or `None` for a fresh one.
        id: Option<String>,
        /// Whether it survives its session (as dead) and can rejoin.
        persistent: bool,
        /// Free-form metadata.
        metadata: Bytes,
    },
    /// The caller's member `id` leaves.
    Leave(String),
    /// Remove any member.
    Remove(String),
    /// Replace the caller's member's metadata.
    SetMetadata {
        /// The member.
        id: String,
        /// The new metadata.
        metadata: Bytes,
    },
    /// Send the calling session membership and leadership events.
    Listen,
    /// Stop sending them.
    Unlisten,
    /// Send a message; answers the ids of the messages created (one per
    /// recipient). Acknowledgements come as events for `req`.
    Send {
        /// The caller's request id, echoed in the events.
        req: u64,
        /// Where to.
        to: Delivery,
        /// The payload.
        payload: Bytes,
        /// Whether the recipient should reply (request-reply).
        reply: bool,
    },
    /// Acknowledge a message delivered to one of the caller's members, with
    /// a reply if one was asked for.
    Ack {
        /// The message id.
        message: u64,
        /// The reply.
        reply: Option<Bytes>,
    },
}

/// Queries of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupQuery {
    /// Every member, by id.
    Members,
    /// One member.
    Member(String),
    /// The leading member and its term.
    Leader,
}

/// A member as queries report it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Its id.
    pub id: String,
    /// Its session while alive.
    pub session: Option<SessionId>,
    /// Whether it survives its session.
    pub persistent: bool,
    /// Its metadata.
    pub metadata: Bytes,
}

/// Answers of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupOutput {
    /// Done.
    Unit,
    /// The member id joined.
    Joined(String),
    /// The messages created by a send.
    Sent(Vec<u64>),
    /// Members.
    Members(Vec<MemberInfo>),
    /// One member, if present.
    Member(Option<MemberInfo>),
    /// The leader and its term.
    Leader(Option<(String, u64)>),
}

/// Events of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupEvent {
    /// A member joined (to listeners).
    Joined {
        /// Its id.
        id: String,
    },
    /// A member left, was removed, or its ephemeral session ended (to
    /// listeners).
    Left {
        /// Its id.
        id: String,
    },
    /// A persistent member died or came back (to listeners).
    Status {
        /// Its id.
        id: String,
        /// Whether it is alive now.
        alive: bool,
    },
    /// The leadership changed (to listeners).
    Leader {
        /// The leader and its term, or nobody.
        leader: Option<(String, u64)>,
    },
    /// A message for one of the session's members.
    Message {
        /// The message id (acknowledge it).
        message: u64,
        /// The recipient member.
        member: String,
        /// The sending session.
        from: SessionId,
        /// The payload.
        payload: Bytes,
        /// Whether a reply is expected.
        reply: bool,
    },
    /// A message was acknowledged (to its sender).
    Delivered {
        /// The send's request id.
        req: u64,
        /// The message id.
        message: u64,
        /// The member that acknowledged it.
        member: String,
        /// Its reply, if any.
        reply: Option<Bytes>,
    },
    /// A message can no longer be delivered (to its sender).
    Failed {
        /// The send's request id.
        req: u64,
        /// The message id.
        message: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Member {
    session: Option<SessionId>,
    persistent: bool,
    metadata: Bytes,
    /// Join order: the log index of the first join.
    joined: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Kind {
    Direct,
    Random,
    Broadcast,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Message {
    req: u64,
    from: SessionId,
    to: String,
    kind: Kind,
    payload: Bytes,
    reply: bool,
}

/// The state of a group.
///
/// Invariants: the leader is an alive member; every pending message is
/// addressed to a member, alive unless the message waits for a persistent
/// member to rejoin; message ids are below `next_message`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    members: BTreeMap<String, Member>,
    listeners: BTreeSet<SessionId>,
    leader: Option<(String, u64)>,
    messages: BTreeMap<u64, Message>,
    next_message: u64,
}

/// A deterministic pick in `0..n` from the log index and a message id.
fn pick(index: u64, message: u64, n: usize) -> usize {
    let mut x = index ^ message.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % n as u64) as usize
}

impl GroupState {
    fn notify(&self, ctx: &mut Ctx<'_, GroupEvent>, event: GroupEvent) {
        for session in &self.listeners {
            ctx.emit(*session, event.clone());
        }
    }

    fn alive(&self) -> Vec<&String> {
        self.members
            .iter()
            .filter(|(_, m)| m.session.is_some())
            .map(|(id, _)| id)
            .collect()
    }

    fn member_of(&self, id: &str, session: SessionId) -> Result<(), ResourceError> {
        match self.members.get(id) {
            None => Err(ResourceError::UnknownMember { id: id.into() }),
            Some(m) if m.session != Some(session) => {
                Err(ResourceError::NotMember { id: id.into() })
            }
            Some(_) => Ok(()),
        }
    }

    /// Hand message `id` to its recipient's session, if it is alive.
    fn deliver(&self, ctx: &mut Ctx<'_, GroupEvent>, id: u64) {
        let message = &self.messages[&id];
        if let Some(session) = self.members.get(&message.to).and_then(|m| m.session) {
            ctx.emit(
                session,
                GroupEvent::Message {
                    message: id,
                    member: message.to.clone(),
                    from: message.from,
                    payload: message.payload.clone(),
                    reply: message.reply,
                },
            );
        }
    }

    /// Member `gone` died or left: move or fail its pending messages.
    fn reroute(&mut self, ctx: &mut Ctx<'_, GroupEvent>, gone: &str) {
        let ids: Vec<u64> = self
            .messages
            .iter()
            .filter(|(_, m)| m.to == gone)
            .map(|(id, _)| *id)
            .collect();
        let still_member = self.members.contains_key(gone);
        for id in ids {
            let kind = self.messages[&id].kind;
            let alive: Vec<String> = self.alive().into_iter().cloned().collect();
            match kind {
                Kind::Random if !alive.is_empty() => {
                    let to = alive[pick(ctx.index(), id, alive.len())].clone();
                    self.messages.get_mut(&id).expect("pending").to = to;
                    self.deliver(ctx, id);
                }
                // A persistent member keeps its direct messages for when it
                // rejoins.
                Kind::Direct if still_member => {}
                _ => {
                    let message = self.messages.remove(&id).expect("pending");
                    ctx.emit(
                        message.from,
                        GroupEvent::Failed {
                            req: message.req,
                            message: id,
                        },
                    );
                }
            }
        }
    }

    /// Keep the leader while it is alive; otherwise the oldest alive member.
    fn elect(&mut self, ctx: &mut Ctx<'_, GroupEvent>) {
        let current_alive = self
            .leader
            .as_ref()
            .is_some_and(|(id, _)| self.members.get(id).is_some_and(|m| m.session.is_some()));
        if current_alive {
            return;
        }
        let next = self
            .members
            .iter()
            .filter(|(_, m)| m.session.is_some())
            .min_by_key(|(_, m)| m.joined)
            .map(|(id, _)| id.clone());
        if next.is_none() && self.leader.is_none() {
            return;
        }
        self.leader = next.map(|id| (id, ctx.next_fence()));
        let leader = self.leader.clone();
        self.notify(ctx, GroupEvent::Leader { leader });
    }

    fn info(id: &str, m: &Member) -> MemberInfo {
        MemberInfo {
            id: id.to_string(),
            session: m.session,
            persistent: m.persistent,
            metadata: m.metadata.clone(),
        }
    }

    fn join(
        &mut self,
        ctx: &mut Ctx<'_, GroupEvent>,
        id: Option<String>,
        persistent: bool,
        metadata: Bytes,
    ) -> Result<GroupOutput, ResourceError> {
        let session = ctx.caller()?;
        let id = id.unwrap_or_else(|| format!("m{}", ctx.index()));
        if id.is_empty() {
            return Err(ResourceError::InvalidArgument(
                "a member id must not be empty".into(),
            ));
        }
        let limit = ctx.limits().max_name_bytes;
        if id.len() > limit {
            return Err(ResourceError::NameTooLong {
                len: id.len(),
                limit,
            });
        }
        ctx.limits().check_value(&metadata)?;
        match self.members.get_mut(&id) {
            Some(member) if member.session == Some(session) => {
                member.metadata = metadata;
                return Ok(GroupOutput::Joined(id));
            }
            Some(member) if member.session.is_some() => {
                return Err(ResourceError::MemberInUse { id });
            }
            Some(member) => {
                member.session = Some(session);
                member.persistent = persistent;
                member.metadata = metadata;
                self.notify(
                    ctx,
                    GroupEvent::Status {
                        id: id.clone(),
                        alive: true,
                    },
                );
                let waiting: Vec<u64> = self
                    .messages
                    .iter()
                    .filter(|(_, m)| m.to == id)
                    .map(|(mid, _)| *mid)
                    .collect();
                for mid in waiting {
                    self.deliver(ctx, mid);
                }
            }
            None => {
                ctx.limits().check_entries(self.members.len())?;
                self.members.insert(
                    id.clone(),
                    Member {
                        session: Some(session),
                        persistent,
                        metadata,
                        joined: ctx.index(),
                    },
                );
                self.notify(ctx, GroupEvent::Joined { id: id.clone() });
            }
        }
        self.elect(ctx);
        Ok(GroupOutput::Joined(id))
    }

    fn remove_member(&mut self, ctx: &mut Ctx<'_, GroupEvent>, id: &str) {
        self.members.remove(id);
        self.notify(ctx, GroupEvent::Left { id: id.to_string() });
        self.reroute(ctx, id);
    }

    fn send(
        &mut self,
        ctx: &mut Ctx<'_, GroupEvent>,
        req: u64,
        to: Delivery,
        payload: Bytes,
        reply: bool,
    ) -> Result<GroupOutput, ResourceError> {
        let from = ctx.caller()?;
        ctx.limits().check_value(&payload)?;
        let alive: Vec<String> = self.alive().into_iter().cloned().collect();
        let (kind, recipients) = match to {
            Delivery::Direct(id) => {
                if !self.members.contains_key(&id) {
                    return Err(ResourceError::UnknownMember { id });
                }
                (Kind::Direct, vec![id])
            }
            Delivery::Random => {
                if alive.is_empty() {
                    return Err(ResourceError::NoMembers);
                }
                let to = alive[pick(ctx.index(), self.next_message, alive.len())].clone();
                (Kind::Random, vec![to])
            }
            Delivery::Broadcast => (Kind::Broadcast, alive),
        };
        if self.messages.len() + recipients.len() > ctx.limits().max_entries {
            return Err(ResourceError::TooManyEntries {
                limit: ctx.limits().max_entries,
            });
        }
        let mut ids = Vec::with_capacity(recipients.len());
        for to in recipients {
            let id = self.next_message;
            self.next_message += 1;
            self.messages.insert(
                id,
                Message {
                    req,
                    from,
                    to,
                    kind,
                    payload: payload.clone(),
                    reply,
                },
            );
            self.deliver(ctx, id);
            ids.push(id);
        }
        Ok(GroupOutput::Sent(ids))
    }
}

impl Resource for GroupState {
    type Command = GroupCommand;
    type Query = GroupQuery;
    type Output = GroupOutput;
    type Event = GroupEvent;

    fn apply(
        &mut self,
        ctx: &mut Ctx<'_, GroupEvent>,
        command: GroupCommand,
    ) -> Result<GroupOutput, ResourceError> {
        let session = ctx.caller()?;
        Ok(match command {
            GroupCommand::Join {
                id,
                persistent,
                metadata,
            } => return self.join(ctx, id, persistent, metadata),
            GroupCommand::Leave(id) => {
                self.member_of(&id, session)?;
                self.remove_member(ctx, &id);
                self.elect(ctx);
                GroupOutput::Unit
            }
            GroupCommand::Remove(id) => {
                if !self.members.contains_key(&id) {
                    return Err(ResourceError::UnknownMember { id });
                }
                self.remove_member(ctx, &id);
                self.elect(ctx);
                GroupOutput::Unit
            }
            GroupCommand::SetMetadata { id, metadata } => {
                self.member_of(&id, session)?;
                ctx.limits().check_value(&metadata)?;
                self.members.get_mut(&id).expect("a member").metadata = metadata;
                GroupOutput::Unit
            }
            GroupCommand::Listen => {
                if !self.listeners.contains(&session) {
                    ctx.limits().check_waiters(self.listeners.len())?;
                    self.listeners.insert(session);
                }
                GroupOutput::Unit
            }
            GroupCommand::Unlisten => {
                self.listeners.remove(&session);
                GroupOutput::Unit
            }
            GroupCommand::Send {
                req,
                to,
                payload,
                reply,
            } => return self.send(ctx, req, to, payload, reply),
            GroupCommand::Ack { message, reply } => {
                let recipient = self
                    .messages
                    .get(&message)
                    .and_then(|m| self.members.get(&m.to).and_then(|member| member.session));
                if recipient != Some(session) {
                    return Err(ResourceError::UnknownMessage { id: message });
                }
                if let Some(reply) = &reply {
                    ctx.limits().check_value(reply)?;
                }
                let done = self.messages.remove(&message).expect("pending");
                ctx.emit(
                    done.from,
                    GroupEvent::Delivered {
                        req: done.req,
                        message,
                        member: done.to,
                        reply,
                    },
                );
                GroupOutput::Unit
            }
        })
    }

    fn query(&self, _session: SessionId, query: GroupQuery) -> Result<GroupOutput, ResourceError> {
        Ok(match query {
            GroupQuery::Members => GroupOutput::Members(
                self.members
                    .iter()
                    .map(|(id, m)| Self::info(id, m))
                    .collect(),
            ),
            GroupQuery::Member(id) => {
                GroupOutput::Member(self.members.get(&id).map(|m| Self::info(&id, m)))
            }
            GroupQuery::Leader => GroupOutput::Leader(self.leader.clone()),
        })
    }

    fn advance(&mut self, _ctx: &mut Ctx<'_, GroupEvent>) {}

    fn next_deadline(&self) -> Option<u64> {
        None
    }

    fn session_closed(&mut self, ctx: &mut Ctx<'_, GroupEvent>, session: SessionId) {
        self.listeners.remove(&session);
        // Its messages in flight have nobody to tell.
        self.messages.retain(|_, m| m.from != session);
        let mine: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.session == Some(session))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &mine {
            let member = self.members.get_mut(id).expect("a member");
            if member.persistent {
                member.session = None;
                self.notify(
                    ctx,
                    GroupEvent::Status {
                        id: id.clone(),
                        alive: false,
                    },
                );
            } else {
                self.members.remove(id);
                self.notify(ctx, GroupEvent::Left { id: id.clone() });
            }
        }
        #[cfg(feature = "planted-bugs")]
        let mine =
            if copycat_planted::active(copycat_planted::PlantedBug::GroupCloseSkipsRedelivery) {
                Vec::new()
            } else {
                mine
            };
        for id in &mine {
            self.reroute(ctx, id);
        }
        self.elect(ctx);
    }

    fn sessions(&self) -> Vec<SessionId> {
        let mut all = self.listeners.clone();
        all.extend(self.members.values().filter_map(|m| m.session));
        all.extend(self.messages.values().map(|m| m.from));
        all.into_iter().collect()
    }

    fn validate(&self, fence: u64) -> Result<(), String> {
        if let Some((id, term)) = &self.leader {
            if self.members.get(id).is_none_or(|m| m.session.is_none()) {
                return Err(format!("leader {id:?} is not an alive member"));
            }
            if *term > fence {
                return Err(format!("term {term} above the highest issued, {fence}"));
            }
        }
        if self.members.keys().any(String::is_empty) {
            return Err("a member with an empty id".into());
        }
        for (id, message) in &self.messages {
            if *id >= self.next_message {
                return Err(format!("message {id} not below the counter"));
            }
            match self.members.get(&message.to) {
                None => return Err(format!("message {id} to a missing member")),
                Some(m) if m.session.is_none() && message.kind != Kind::Direct => {
                    return Err(format!("message {id} waits on a dead member"))
                }
                _ => {}
            }
        }
        Ok(())
    }
}
