//! A publish/subscribe topic: every message reaches every session
//! subscribed when it is published, in publication order (events of one
//! session arrive once each and in log order).

use std::collections::BTreeSet;

use bytes::Bytes;
use copycat_proto::SessionId;
use serde::{Deserialize, Serialize};

use crate::{Ctx, Resource, ResourceError};

/// Commands of a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicCommand {
    /// Publish a message; answers how many sessions it was sent to.
    Publish(Bytes),
    /// Send the calling session the messages published from now on.
    Subscribe,
    /// Stop sending them.
    Unsubscribe,
}

/// Queries of a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicQuery {
    /// How many sessions are subscribed.
    Subscribers,
}

/// Answers of a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicOutput {
    /// Done.
    Unit,
    /// A count.
    Count(u64),
}

/// Events of a topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicEvent {
    /// A message, numbered in publication order from 1.
    Message {
        /// Its number.
        seq: u64,
        /// Its payload.
        message: Bytes,
    },
}

/// The state of a topic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    published: u64,
    subscribers: BTreeSet<SessionId>,
}

impl Resource for TopicState {
    type Command = TopicCommand;
    type Query = TopicQuery;
    type Output = TopicOutput;
    type Event = TopicEvent;

    fn apply(
        &mut self,
        ctx: &mut Ctx<'_, TopicEvent>,
        command: TopicCommand,
    ) -> Result<TopicOutput, ResourceError> {
        Ok(match command {
            TopicCommand::Publish(message) => {
                ctx.limits().check_value(&message)?;
                self.published += 1;
                for session in &self.subscribers {
                    ctx.emit(
                        *session,
                        TopicEvent::Message {
                            seq: self.published,
                            message: message.clone(),
                        },
                    );
                }
                TopicOutput::Count(self.subscribers.len() as u64)
            }
            TopicCommand::Subscribe => {
                let session = ctx.caller()?;
                if !self.subscribers.contains(&session) {
                    ctx.limits().check_waiters(self.subscribers.len())?;
                    self.subscribers.insert(session);
                }
                TopicOutput::Unit
            }
            TopicCommand::Unsubscribe => {
                self.subscribers.remove(&ctx.caller()?);
                TopicOutput::Unit
            }
        })
    }

    fn query(&self, _session: SessionId, query: TopicQuery) -> Result<TopicOutput, ResourceError> {
        match query {
            TopicQuery::Subscribers => Ok(TopicOutput::Count(self.subscribers.len() as u64)),
        }
    }

    fn advance(&mut self, _ctx: &mut Ctx<'_, TopicEvent>) {}

    fn next_deadline(&self) -> Option<u64> {
        None
    }

    fn session_closed(&mut self, _ctx: &mut Ctx<'_, TopicEvent>, session: SessionId) {
        self.subscribers.remove(&session);
    }

    fn sessions(&self) -> Vec<SessionId> {
        self.subscribers.iter().copied().collect()
    }

    fn validate(&self, _fence: u64) -> Result<(), String> {
        Ok(())
    }
}
