//! The handle on a membership group ([`crate::group`]): join and leave,
//! membership and leadership events, and acknowledged messaging.

use bytes::Bytes;
use copycat_client::Consistency;
use copycat_proto::SessionId;

use super::{unexpected, Base, Error, Primitives, Result, Subscription};
use crate::group::{Delivery, GroupCommand, GroupEvent, GroupOutput, GroupQuery, MemberInfo};
use crate::{Command, Event, Output, Query, Spec};

/// A membership group ([`crate::group`]).
#[derive(Clone)]
pub struct Group {
    base: Base,
}

/// A membership or leadership change of a [`Group`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupChange {
    /// A member joined.
    Joined(String),
    /// A member left or was removed, or its ephemeral session ended.
    Left(String),
    /// A persistent member died or came back.
    Status {
        /// The member.
        id: String,
        /// Whether it is alive now.
        alive: bool,
    },
    /// The leader and its term, or nobody.
    Leader(Option<(String, u64)>),
}

/// A message for one of this session's members; acknowledge it with
/// [`Group::ack`] or [`Group::reply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMessage {
    /// The message id.
    pub message: u64,
    /// The recipient member.
    pub member: String,
    /// The sending session.
    pub from: SessionId,
    /// The payload.
    pub payload: Bytes,
    /// Whether the sender waits for a reply.
    pub reply: bool,
}

/// What became of one message of a send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Receipt {
    /// `member` acknowledged it, with its reply if one was asked for.
    Delivered {
        /// The member.
        member: String,
        /// The reply.
        reply: Option<Bytes>,
    },
    /// It could not be delivered (its recipient left or died and nobody
    /// else could take it).
    Failed,
}

impl Group {
    /// Get or create the group `name`.
    pub async fn open(primitives: &Primitives, name: &str) -> Result<Self> {
        Ok(Self {
            base: Base::open(primitives, name, Spec::Group).await?,
        })
    }

    /// This handle reading at `consistency`.
    pub fn with_consistency(&self, consistency: Consistency) -> Self {
        let mut base = self.base.clone();
        base.consistency = Some(consistency);
        Self { base }
    }

    fn command_of(&self, command: GroupCommand) -> Command {
        Command::Group {
            name: self.base.name.clone(),
            command,
        }
    }

    async fn run(&self, command: GroupCommand) -> Result<GroupOutput> {
        match self.base.command(self.command_of(command)).await? {
            Output::Group(out) => Ok(out),
            other => unexpected(other),
        }
    }

    async fn unit(&self, command: GroupCommand) -> Result<()> {
        match self.run(command).await? {
            GroupOutput::Unit => Ok(()),
            other => unexpected(other),
        }
    }

    async fn ask(&self, query: GroupQuery) -> Result<GroupOutput> {
        let name = self.base.name.clone();
        match self.base.query(Query::Group { name, query }).await? {
            Output::Group(out) => Ok(out),
            other => unexpected(other),
        }
    }

    /// Join as `id` (or a fresh id when `None`); answers the id. A
    /// persistent member stays in the group, dead, when this session ends,
    /// and can rejoin under the same id from another session.
    pub async fn join(
        &self,
        id: Option<&str>,
        persistent: bool,
        metadata: Bytes,
    ) -> Result<String> {
        let command = GroupCommand::Join {
            id: id.map(String::from),
            persistent,
            metadata,
        };
        match self.run(command).await? {
            GroupOutput::Joined(id) => Ok(id),
            other => unexpected(other),
        }
    }

    /// This session's member `id` leaves.
    pub async fn leave(&self, id: &str) -> Result<()> {
        self.unit(GroupCommand::Leave(id.into())).await
    }

    /// Remove any member.
    pub async fn remove(&self, id: &str) -> Result<()> {
        self.unit(GroupCommand::Remove(id.into())).await
    }

    /// Replace this session's member's metadata.
    pub async fn set_metadata(&self, id: &str, metadata: Bytes) -> Result<()> {
        self.unit(GroupCommand::SetMetadata {
            id: id.into(),
            metadata,
        })
        .await
    }

    /// Every member, alive (with a session) or dead.
    pub async fn members(&self) -> Result<Vec<MemberInfo>> {
        match self.ask(GroupQuery::Members).await? {
            GroupOutput::Members(members) => Ok(members),
            other => unexpected(other),
        }
    }

    /// One member.
    pub async fn member(&self, id: &str) -> Result<Option<MemberInfo>> {
        match self.ask(GroupQuery::Member(id.into())).await? {
            GroupOutput::Member(member) => Ok(member),
            other => unexpected(other),
        }
    }

    /// The leading member (the oldest alive one, kept while it lives) and
    /// its term, a fencing token.
    pub async fn leader(&self) -> Result<Option<(String, u64)>> {
        match self.ask(GroupQuery::Leader).await? {
            GroupOutput::Leader(leader) => Ok(leader),
            other => unexpected(other),
        }
    }

    /// Membership and leadership changes from now on.
    pub async fn listen(&self) -> Result<Subscription<GroupChange>> {
        self.base
            .primitives
            .subscribe(
                &self.base.name,
                Some(self.command_of(GroupCommand::Listen)),
                Some(self.command_of(GroupCommand::Unlisten)),
                Box::new(|e| {
                    matches!(
                        e,
                        Event::Group(
                            GroupEvent::Joined { .. }
                                | GroupEvent::Left { .. }
                                | GroupEvent::Status { .. }
                                | GroupEvent::Leader { .. }
                        )
                    )
                }),
                |event| match event {
                    Event::Group(GroupEvent::Joined { id }) => Some(Ok(GroupChange::Joined(id))),
                    Event::Group(GroupEvent::Left { id }) => Some(Ok(GroupChange::Left(id))),
                    Event::Group(GroupEvent::Status { id, alive }) => {
                        Some(Ok(GroupChange::Status { id, alive }))
                    }
                    Event::Group(GroupEvent::Leader { leader }) => {
                        Some(Ok(GroupChange::Leader(leader)))
                    }
                    _ => None,
                },
            )
            .await
    }

    /// Messages for this session's members, from now on. Acknowledge each.
    pub async fn messages(&self) -> Result<Subscription<GroupMessage>> {
        self.base
            .primitives
            .subscribe(
                &self.base.name,
                None,
                None,
                Box::new(|e| matches!(e, Event::Group(GroupEvent::Message { .. }))),
                |event| match event {
                    Event::Group(GroupEvent::Message {
                        message,
                        member,
                        from,
                        payload,
                        reply,
                    }) => Some(Ok(GroupMessage {
                        message,
                        member,
                        from,
                        payload,
                        reply,
                    })),
                    _ => None,
                },
            )
            .await
    }

    /// Acknowledge a message without a reply.
    pub async fn ack(&self, message: &GroupMessage) -> Result<()> {
        self.unit(GroupCommand::Ack {
            message: message.message,
            reply: None,
        })
        .await
    }

    /// Acknowledge a message with a reply.
    pub async fn reply(&self, message: &GroupMessage, reply: Bytes) -> Result<()> {
        self.unit(GroupCommand::Ack {
            message: message.message,
            reply: Some(reply),
        })
        .await
    }

    /// Send `payload` and wait until every message is acknowledged or has
    /// failed; answers each message's receipt, in message order. With
    /// `reply` the recipients answer with a reply (request-reply).
    pub async fn send(
        &self,
        to: Delivery,
        payload: Bytes,
        reply: bool,
    ) -> Result<Vec<(u64, Receipt)>> {
        let req = self.base.primitives.next_id();
        let mut receipts = self
            .base
            .primitives
            .subscribe(
                &self.base.name,
                None,
                None,
                Box::new(move |e| {
                    matches!(
                        e,
                        Event::Group(
                            GroupEvent::Delivered { req: r, .. } | GroupEvent::Failed { req: r, .. }
                        ) if *r == req
                    )
                }),
                |event| match event {
                    Event::Group(GroupEvent::Delivered {
                        message,
                        member,
                        reply,
                        ..
                    }) => Some(Ok((message, Receipt::Delivered { member, reply }))),
                    Event::Group(GroupEvent::Failed { message, .. }) => {
                        Some(Ok((message, Receipt::Failed)))
                    }
                    _ => None,
                },
            )
            .await?;
        let ids = match self
            .run(GroupCommand::Send {
                req,
                to,
                payload,
                reply,
            })
            .await?
        {
            GroupOutput::Sent(ids) => ids,
            other => return unexpected(other),
        };
        let mut answered = std::collections::BTreeMap::new();
        while answered.len() < ids.len() {
            match receipts.next().await {
                Some(Ok((message, receipt))) => {
                    answered.insert(message, receipt);
                }
                Some(Err(error)) => return Err(error),
                None if self
                    .base
                    .primitives
                    .inner
                    .routes
                    .lock()
                    .expect("routes")
                    .ended =>
                {
                    return Err(Error::SessionEnded)
                }
                None => return Err(Error::Deleted(self.base.name.clone())),
            }
        }
        Ok(answered.into_iter().collect())
    }
}
