//! [`Resources`]: the one state machine that holds every named resource of
//! a cluster (with the `server` feature).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use copycat_proto::SessionId;
use copycat_replica::{
    codec, prepared_as, ApplyContext, DeferredSnapshot, PreparedRestore, QueryContext,
    RestoreError, StateMachine, TimerId,
};
use serde::{Deserialize, Serialize};

use crate::election::*;
use crate::group::*;
use crate::latch::*;
use crate::lock::*;
use crate::long::*;
use crate::manager::{
    Command, Event, Notice, Output, Query, ResourceInfo, EVENT_NAME, MAX_LIST_PAGE,
};
use crate::map::*;
use crate::multimap::*;
use crate::queue::*;
use crate::semaphore::*;
use crate::set::*;
use crate::topic::*;
use crate::value::*;
use crate::{Ctx, Limits, Resource, ResourceError, ResourceType, Spec};

/// One resource's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum State {
    Value(ValueState),
    Long(LongState),
    Map(MapState),
    MultiMap(MultiMapState),
    Set(SetState),
    Queue(QueueState),
    Lock(LockState),
    Election(ElectionState),
    Group(GroupState),
    Semaphore(SemaphoreState),
    Latch(LatchState),
    Topic(TopicState),
}

/// Run `$body` with `$r` bound to the resource inside `$state` and `$wrap`
/// to the constructor of its [`Event`] variant.
macro_rules! each {
    ($state:expr, |$r:ident, $wrap:ident| $body:expr) => {
        match $state {
            State::Value($r) => {
                let $wrap = Event::Value;
                $body
            }
            State::Long($r) => {
                let $wrap = Event::Long;
                $body
            }
            State::Map($r) => {
                let $wrap = Event::Map;
                $body
            }
            State::MultiMap($r) => {
                let $wrap = Event::MultiMap;
                $body
            }
            State::Set($r) => {
                let $wrap = Event::Set;
                $body
            }
            State::Queue($r) => {
                let $wrap = Event::Queue;
                $body
            }
            State::Lock($r) => {
                let $wrap = Event::Lock;
                $body
            }
            State::Election($r) => {
                let $wrap = Event::Election;
                $body
            }
            State::Group($r) => {
                let $wrap = Event::Group;
                $body
            }
            State::Semaphore($r) => {
                let $wrap = Event::Semaphore;
                $body
            }
            State::Latch($r) => {
                let $wrap = Event::Latch;
                $body
            }
            State::Topic($r) => {
                let $wrap = Event::Topic;
                $body
            }
        }
    };
}

impl State {
    fn new(spec: Spec) -> Self {
        match spec {
            Spec::Value => State::Value(ValueState::default()),
            Spec::Long => State::Long(LongState::default()),
            Spec::Map => State::Map(MapState::default()),
            Spec::MultiMap { order } => State::MultiMap(MultiMapState::new(order)),
            Spec::Set => State::Set(SetState::default()),
            Spec::Queue => State::Queue(QueueState::default()),
            Spec::Lock { reentrant } => State::Lock(LockState::new(reentrant)),
            Spec::Election => State::Election(ElectionState::default()),
            Spec::Group => State::Group(GroupState::default()),
            Spec::Semaphore { permits } => State::Semaphore(SemaphoreState::new(permits)),
            Spec::Latch { count } => State::Latch(LatchState::new(count)),
            Spec::Topic => State::Topic(TopicState::default()),
        }
    }

    fn resource_type(&self) -> ResourceType {
        match self {
            State::Value(_) => ResourceType::Value,
            State::Long(_) => ResourceType::Long,
            State::Map(_) => ResourceType::Map,
            State::MultiMap(_) => ResourceType::MultiMap,
            State::Set(_) => ResourceType::Set,
            State::Queue(_) => ResourceType::Queue,
            State::Lock(_) => ResourceType::Lock,
            State::Election(_) => ResourceType::Election,
            State::Group(_) => ResourceType::Group,
            State::Semaphore(_) => ResourceType::Semaphore,
            State::Latch(_) => ResourceType::Latch,
            State::Topic(_) => ResourceType::Topic,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Slot {
    spec: Spec,
    created_index: u64,
    state: State,
}

/// The replicated part of the manager (what its snapshot holds).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Image {
    /// The highest fencing token issued.
    fence: u64,
    /// The one replica timer the manager keeps, and the deadline it is for.
    timer: Option<(TimerId, u64)>,
    resources: imbl::OrdMap<String, Slot>,
}

/// The resource manager: one [`StateMachine`] holding any number of named
/// resources of every type on one log. Serve it with
/// `copycat_server::Server::builder(Resources::default())`.
///
/// Deterministic: ordered maps only, time and timers from the log, tokens
/// from log indexes. It keeps one replica timer, at the earliest deadline
/// (TTL or wait timeout) of any resource; due work is also done before
/// every command, so a refused timer only delays expiry until the next
/// command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    limits: Limits,
    image: Image,
    /// (deadline, name) of every resource with work due some time; derived
    /// from the image.
    deadlines: BTreeSet<(u64, String)>,
    /// Each resource's entry in `deadlines`.
    deadline_of: BTreeMap<String, u64>,
}

/// Run `f` on a resource with a [`Ctx`] built from the replica's context,
/// then publish what it emitted.
#[allow(clippy::too_many_arguments)] // the disjoint borrows of the manager, spelled out
fn with_ctx<R: Resource, T>(
    limits: &Limits,
    fence: &mut u64,
    actx: &mut ApplyContext<'_>,
    session: Option<SessionId>,
    name: &str,
    wrap: fn(R::Event) -> Event,
    resource: &mut R,
    f: impl FnOnce(&mut R, &mut Ctx<'_, R::Event>) -> T,
) -> T
where
    R::Event: Serialize,
{
    let mut ctx = Ctx::new(actx.index().0, actx.time_ms(), session, limits, fence);
    let out = f(resource, &mut ctx);
    for (to, event) in ctx.take_events() {
        let notice = Notice {
            resource: name.to_string(),
            event: wrap(event),
        };
        actx.publish_value(to, EVENT_NAME, &notice);
    }
    out
}

/// Apply `$command` to the `$variant` resource `$name`.
macro_rules! operate {
    ($self:ident, $actx:ident, $name:ident, $variant:ident, $command:ident) => {{
        let session = $actx.session();
        let Image {
            fence, resources, ..
        } = &mut $self.image;
        let slot = resources
            .get_mut(&$name)
            .ok_or_else(|| ResourceError::NotFound {
                name: $name.clone(),
            })?;
        let out = match &mut slot.state {
            State::$variant(r) => with_ctx(
                &$self.limits,
                fence,
                $actx,
                session,
                &$name,
                Event::$variant,
                r,
                |r, ctx| r.apply(ctx, $command),
            ),
            other => {
                return Err(ResourceError::WrongType {
                    name: $name,
                    expected: ResourceType::$variant,
                    found: other.resource_type(),
                })
            }
        };
        $self.refresh(&$name);
        out.map(Output::$variant)
    }};
}

/// Answer `$query` from the `$variant` resource `$name`.
macro_rules! ask {
    ($self:ident, $ctx:ident, $name:ident, $variant:ident, $query:ident) => {{
        let slot = $self
            .image
            .resources
            .get(&$name)
            .ok_or_else(|| ResourceError::NotFound {
                name: $name.clone(),
            })?;
        match &slot.state {
            State::$variant(r) => r.query($ctx.session(), $query).map(Output::$variant),
            other => Err(ResourceError::WrongType {
                name: $name,
                expected: ResourceType::$variant,
                found: other.resource_type(),
            }),
        }
    }};
}

impl Resources {
    /// A manager with these limits (every server must use the same).
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How many resources exist.
    pub fn len(&self) -> usize {
        self.image.resources.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.image.resources.is_empty()
    }

    /// The highest fencing token (lock token or election term) issued.
    pub fn fence(&self) -> u64 {
        self.image.fence
    }

    /// Bring `name`'s entry in the deadline index up to date.
    fn refresh(&mut self, name: &str) {
        let deadline = self
            .image
            .resources
            .get(name)
            .and_then(|slot| each!(&slot.state, |r, _w| r.next_deadline()));
        if let Some(old) = self.deadline_of.remove(name) {
            self.deadlines.remove(&(old, name.to_string()));
        }
        if let Some(at) = deadline {
            self.deadlines.insert((at, name.to_string()));
            self.deadline_of.insert(name.to_string(), at);
        }
    }

    /// Advance every resource with work due by now.
    fn run_due(&mut self, actx: &mut ApplyContext<'_>) {
        let now = actx.time_ms();
        while let Some((at, name)) = self.deadlines.first().cloned() {
            if at > now {
                break;
            }
            let Image {
                fence, resources, ..
            } = &mut self.image;
            if let Some(slot) = resources.get_mut(&name) {
                each!(&mut slot.state, |r, wrap| with_ctx(
                    &self.limits,
                    fence,
                    actx,
                    None,
                    &name,
                    wrap,
                    r,
                    |r, ctx| r.advance(ctx)
                ));
            }
            let before = self.deadline_of.get(&name).copied();
            self.refresh(&name);
            if before == self.deadline_of.get(&name).copied() {
                // A resource must clear what is due when it advances; never
                // spin if one does not.
                self.deadlines.remove(&(at, name.clone()));
                self.deadline_of.remove(&name);
            }
        }
    }

    /// Keep the replica timer at the earliest deadline.
    fn reschedule(&mut self, actx: &mut ApplyContext<'_>) {
        let want = self.deadlines.first().map(|(at, _)| *at);
        if self.image.timer.map(|(_, at)| at) == want {
            return;
        }
        if let Some((timer, _)) = self.image.timer.take() {
            actx.cancel(timer);
        }
        if let Some(at) = want {
            let delay = at.saturating_sub(actx.time_ms()).max(1);
            match actx.schedule(delay) {
                Ok(timer) => self.image.timer = Some((timer, at)),
                Err(e) => tracing::warn!("resource deadlines wait for the next command: {e}"),
            }
        }
    }

    fn check_name(&self, name: &str) -> Result<(), ResourceError> {
        if name.is_empty() {
            return Err(ResourceError::EmptyName);
        }
        if name.len() > self.limits.max_name_bytes {
            return Err(ResourceError::NameTooLong {
                len: name.len(),
                limit: self.limits.max_name_bytes,
            });
        }
        Ok(())
    }

    fn info(name: &str, slot: &Slot) -> ResourceInfo {
        ResourceInfo {
            name: name.to_string(),
            spec: slot.spec,
            created_index: slot.created_index,
        }
    }

    fn open(
        &mut self,
        actx: &ApplyContext<'_>,
        name: String,
        spec: Spec,
    ) -> Result<Output, ResourceError> {
        if let Some(slot) = self.image.resources.get(&name) {
            let found = slot.state.resource_type();
            if found != spec.resource_type() {
                return Err(ResourceError::WrongType {
                    name,
                    expected: spec.resource_type(),
                    found,
                });
            }
            return Ok(Output::Opened {
                created: false,
                info: Self::info(&name, slot),
            });
        }
        self.check_name(&name)?;
        if self.image.resources.len() >= self.limits.max_resources {
            return Err(ResourceError::TooManyResources {
                limit: self.limits.max_resources,
            });
        }
        if let Spec::Semaphore { permits: 0 } = spec {
            return Err(ResourceError::InvalidArgument(
                "a semaphore needs at least one permit".into(),
            ));
        }
        let slot = Slot {
            spec,
            created_index: actx.index().0,
            state: State::new(spec),
        };
        let info = Self::info(&name, &slot);
        self.image.resources.insert(name, slot);
        Ok(Output::Opened {
            created: true,
            info,
        })
    }

    fn delete(&mut self, actx: &mut ApplyContext<'_>, name: String) -> Output {
        let Some(slot) = self.image.resources.remove(&name) else {
            return Output::Bool(false);
        };
        for session in each!(&slot.state, |r, _w| r.sessions()) {
            let notice = Notice {
                resource: name.clone(),
                event: Event::Deleted,
            };
            actx.publish_value(session, EVENT_NAME, &notice);
        }
        self.refresh(&name);
        Output::Bool(true)
    }

    fn command(
        &mut self,
        actx: &mut ApplyContext<'_>,
        command: Command,
    ) -> Result<Output, ResourceError> {
        match command {
            Command::Open { name, spec } => self.open(actx, name, spec),
            Command::Delete { name } => Ok(self.delete(actx, name)),
            Command::Value { name, command } => operate!(self, actx, name, Value, command),
            Command::Long { name, command } => operate!(self, actx, name, Long, command),
            Command::Map { name, command } => operate!(self, actx, name, Map, command),
            Command::MultiMap { name, command } => operate!(self, actx, name, MultiMap, command),
            Command::Set { name, command } => operate!(self, actx, name, Set, command),
            Command::Queue { name, command } => operate!(self, actx, name, Queue, command),
            Command::Lock { name, command } => {
                #[cfg(feature = "planted-bugs")]
                if copycat_planted::active(copycat_planted::PlantedBug::LockGrantBeforeExpiry)
                    && matches!(command, LockCommand::Lock { .. })
                {
                    self.hand_on_from_silent_holder(actx, &name);
                }
                operate!(self, actx, name, Lock, command)
            }
            Command::Election { name, command } => operate!(self, actx, name, Election, command),
            Command::Group { name, command } => operate!(self, actx, name, Group, command),
            Command::Semaphore { name, command } => {
                operate!(self, actx, name, Semaphore, command)
            }
            Command::Latch { name, command } => operate!(self, actx, name, Latch, command),
            Command::Topic { name, command } => operate!(self, actx, name, Topic, command),
        }
    }

    /// The planted `LockGrantBeforeExpiry`: a lock request finds the
    /// holder's session silent for more than half its timeout and treats it
    /// as gone, handing the lock on while the session is still open (its
    /// expiry is not committed, and may never be: the client may come back).
    #[cfg(feature = "planted-bugs")]
    fn hand_on_from_silent_holder(&mut self, actx: &mut ApplyContext<'_>, name: &str) {
        let now = actx.time_ms();
        let caller = actx.session();
        let Image {
            fence, resources, ..
        } = &mut self.image;
        let Some(slot) = resources.get_mut(name) else {
            return;
        };
        let State::Lock(lock) = &mut slot.state else {
            return;
        };
        let Some(holder) = lock.holder_session() else {
            return;
        };
        if Some(holder) == caller {
            return;
        }
        let silent = actx
            .session_timing(holder)
            .is_some_and(|(timeout_ms, last_ms)| now.saturating_sub(last_ms) > timeout_ms / 2);
        if silent {
            with_ctx(
                &self.limits,
                fence,
                actx,
                None,
                name,
                Event::Lock,
                lock,
                |r, ctx| r.session_closed(ctx, holder),
            );
            self.refresh(name);
        }
    }

    fn list(
        &self,
        resource_type: Option<ResourceType>,
        after: Option<String>,
        limit: u32,
    ) -> Result<Output, ResourceError> {
        use std::ops::Bound;
        if limit == 0 || limit > MAX_LIST_PAGE {
            return Err(ResourceError::InvalidArgument(format!(
                "a page limit must be between 1 and {MAX_LIST_PAGE}"
            )));
        }
        let start = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        let mut matching = self
            .image
            .resources
            .range((start, Bound::Unbounded))
            .filter(|(_, slot)| resource_type.is_none_or(|t| slot.state.resource_type() == t))
            .map(|(name, _)| name.clone());
        let names: Vec<String> = matching.by_ref().take(limit as usize).collect();
        let next = if matching.next().is_some() {
            names.last().cloned()
        } else {
            None
        };
        Ok(Output::Names { names, next })
    }

    /// Replace the image with a decoded, checked one and rebuild what is
    /// derived from it.
    fn install(&mut self, image: Image) {
        self.image = image;
        self.deadlines.clear();
        self.deadline_of.clear();
        let names: Vec<String> = self.image.resources.keys().cloned().collect();
        for name in names {
            self.refresh(&name);
        }
    }

    /// Decode and check an image from [`StateMachine::snapshot`].
    fn decode_image(data: &[u8]) -> Result<Image, String> {
        let image: Image = codec::decode(data).map_err(|e| e.to_string())?;
        for (name, slot) in &image.resources {
            if name.is_empty() {
                return Err("a resource with an empty name".into());
            }
            if slot.spec.resource_type() != slot.state.resource_type() {
                return Err(format!("resource {name:?}: its spec and state disagree"));
            }
            if slot.created_index == 0 {
                return Err(format!("resource {name:?} created at index 0"));
            }
            each!(&slot.state, |r, _w| r.validate(image.fence))
                .map_err(|e| format!("resource {name:?}: {e}"))?;
        }
        Ok(image)
    }
}

impl StateMachine for Resources {
    type Command = Command;
    type Query = Query;
    type Output = Output;
    type Error = ResourceError;

    fn apply(
        &mut self,
        actx: &mut ApplyContext<'_>,
        command: Command,
    ) -> Result<Output, ResourceError> {
        self.run_due(actx);
        let result = self.command(actx, command);
        self.reschedule(actx);
        result
    }

    fn query(&self, ctx: &QueryContext, query: Query) -> Result<Output, ResourceError> {
        match query {
            Query::Exists { name } => Ok(Output::Bool(self.image.resources.contains_key(&name))),
            Query::Info { name } => Ok(Output::Info(
                self.image
                    .resources
                    .get(&name)
                    .map(|slot| Self::info(&name, slot)),
            )),
            Query::List {
                resource_type,
                after,
                limit,
            } => self.list(resource_type, after, limit),
            Query::Value { name, query } => ask!(self, ctx, name, Value, query),
            Query::Long { name, query } => ask!(self, ctx, name, Long, query),
            Query::Map { name, query } => ask!(self, ctx, name, Map, query),
            Query::MultiMap { name, query } => ask!(self, ctx, name, MultiMap, query),
            Query::Set { name, query } => ask!(self, ctx, name, Set, query),
            Query::Queue { name, query } => ask!(self, ctx, name, Queue, query),
            Query::Lock { name, query } => ask!(self, ctx, name, Lock, query),
            Query::Election { name, query } => ask!(self, ctx, name, Election, query),
            Query::Group { name, query } => ask!(self, ctx, name, Group, query),
            Query::Semaphore { name, query } => ask!(self, ctx, name, Semaphore, query),
            Query::Latch { name, query } => ask!(self, ctx, name, Latch, query),
            Query::Topic { name, query } => ask!(self, ctx, name, Topic, query),
        }
    }

    fn on_timer(&mut self, actx: &mut ApplyContext<'_>, timer: TimerId) {
        if self.image.timer.map(|(id, _)| id) == Some(timer) {
            self.image.timer = None;
        }
        self.run_due(actx);
        self.reschedule(actx);
    }

    fn session_closed(&mut self, actx: &mut ApplyContext<'_>, session: SessionId) {
        self.run_due(actx);
        let names: Vec<String> = self.image.resources.keys().cloned().collect();
        for name in names {
            let Image {
                fence, resources, ..
            } = &mut self.image;
            let Some(slot) = resources.get_mut(&name) else {
                continue;
            };
            each!(&mut slot.state, |r, wrap| with_ctx(
                &self.limits,
                fence,
                actx,
                None,
                &name,
                wrap,
                r,
                |r, ctx| r.session_closed(ctx, session)
            ));
            self.refresh(&name);
        }
        self.reschedule(actx);
    }

    fn snapshot(&self) -> Bytes {
        codec::encode(&self.image)
    }

    /// The image's collections are persistent (structurally shared), so
    /// this clone is a few reference counts: the snapshot thread encodes
    /// the state as it is now while commands go on changing it (each
    /// change copies only the tree nodes on its path, once).
    fn deferred_snapshot(&self) -> Option<DeferredSnapshot> {
        let frozen = self.image.clone();
        Some(Box::new(move || codec::encode(&frozen)))
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        let image = Self::decode_image(data).map_err(RestoreError)?;
        self.install(image);
        Ok(())
    }

    /// Decode and check the image on the restore thread; installing it is
    /// a move and a pass over the resource names.
    fn prepare_restore(data: &[u8]) -> Option<Result<PreparedRestore, RestoreError>> {
        Some(
            Self::decode_image(data)
                .map(|image| Box::new(image) as PreparedRestore)
                .map_err(RestoreError),
        )
    }

    fn install_prepared(&mut self, prepared: PreparedRestore) -> Result<(), RestoreError> {
        self.install(prepared_as::<Image>(prepared)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use copycat_proto::{ClientId, LogBody, LogCommand, Sequence};
    use copycat_replica::{testing, Replica, ReplicaConfig, Typed};

    use super::*;

    /// A manager in a replica with one session (client 1, session 1),
    /// fed entries one index at a time.
    struct OneSession {
        replica: Replica<Typed<Resources>>,
        index: u64,
        sequence: u64,
    }

    impl OneSession {
        fn new() -> Self {
            let replica = Replica::new(ReplicaConfig::default(), Typed(Resources::default()))
                .expect("config");
            let mut one = Self {
                replica,
                index: 0,
                sequence: 0,
            };
            one.apply(LogBody::Register {
                client: ClientId(1),
                timeout_ms: 0,
            });
            one
        }

        fn apply(&mut self, body: LogBody) {
            self.index += 1;
            let data = LogCommand {
                timestamp_ms: 1_000 + self.index,
                body,
            }
            .encode();
            self.replica
                .apply(&testing::command_entry(self.index, data));
        }

        fn command(&mut self, command: &Command) {
            self.sequence += 1;
            self.apply(LogBody::Command {
                session: SessionId(1),
                sequence: Sequence(self.sequence),
                acked: Sequence(self.sequence - 1),
                payload: codec::encode(command),
            });
        }

        fn manager(&self) -> &Resources {
            &self.replica.machine().0
        }
    }

    /// A manager with a held lock "l" and a value "v", as a snapshot image.
    fn image_with_lock() -> Image {
        let mut one = OneSession::new();
        let commands = [
            Command::Open {
                name: "l".into(),
                spec: Spec::Lock { reentrant: false },
            },
            Command::Lock {
                name: "l".into(),
                command: LockCommand::Lock {
                    req: 1,
                    timeout_ms: None,
                },
            },
            Command::Open {
                name: "v".into(),
                spec: Spec::Value,
            },
        ];
        for command in &commands {
            one.command(command);
        }
        let image: Image = codec::decode(&one.manager().snapshot()).expect("image");
        assert_eq!(image.resources.len(), 2);
        assert!(image.fence > 0, "the lock was granted");
        image
    }

    fn restore(image: &Image) -> Result<(), RestoreError> {
        Resources::default().restore(&codec::encode(image))
    }

    #[test]
    fn a_consistent_image_restores_to_an_equal_manager() {
        let image = image_with_lock();
        let mut restored = Resources::default();
        restored.restore(&codec::encode(&image)).expect("restores");
        assert_eq!(restored.image, image);
    }

    #[test]
    fn restore_refuses_a_token_above_the_fence() {
        let mut image = image_with_lock();
        image.fence = 0;
        let error = restore(&image).expect_err("refused");
        assert!(error.0.contains("token"), "{error}");
    }

    #[test]
    fn restore_refuses_a_spec_that_disagrees_with_the_state() {
        let mut image = image_with_lock();
        image.resources.get_mut("v").expect("v").spec = Spec::Map;
        let error = restore(&image).expect_err("refused");
        assert!(error.0.contains("disagree"), "{error}");
    }

    #[test]
    fn restore_refuses_an_empty_name_and_garbage() {
        let mut image = image_with_lock();
        let slot = image.resources.remove("v").expect("v");
        image.resources.insert(String::new(), slot);
        assert!(restore(&image)
            .expect_err("refused")
            .0
            .contains("empty name"));
        assert!(Resources::default().restore(b"\xff\xff\xff").is_err());
    }

    /// Restore by `prepare_restore` and `install_prepared`, as a server
    /// does off its Raft thread.
    fn restore_prepared(image: &[u8]) -> Result<Resources, RestoreError> {
        let prepared = Resources::prepare_restore(image).expect("the manager prepares")?;
        let mut manager = Resources::default();
        manager.install_prepared(prepared)?;
        Ok(manager)
    }

    #[test]
    fn a_prepared_restore_accepts_and_refuses_what_restore_does() {
        let image = image_with_lock();
        let mut restored = Resources::default();
        restored.restore(&codec::encode(&image)).expect("restores");
        assert_eq!(
            restore_prepared(&codec::encode(&image)).expect("prepared"),
            restored
        );

        let mut bad_fence = image.clone();
        bad_fence.fence = 0;
        let mut bad_spec = image.clone();
        bad_spec.resources.get_mut("v").expect("v").spec = Spec::Map;
        let mut empty_name = image.clone();
        let slot = empty_name.resources.remove("v").expect("v");
        empty_name.resources.insert(String::new(), slot);
        for bad in [
            codec::encode(&bad_fence),
            codec::encode(&bad_spec),
            codec::encode(&empty_name),
            Bytes::from_static(b"\xff\xff\xff"),
        ] {
            let direct = Resources::default().restore(&bad).expect_err("refused");
            let prepared = restore_prepared(&bad).expect_err("refused prepared");
            assert_eq!(direct, prepared);
        }
    }

    /// A deferred image is the state when it was taken, whatever is applied
    /// before it is encoded; and it is byte for byte what `snapshot` gave.
    #[test]
    fn a_deferred_image_is_frozen_when_taken() {
        let mut one = OneSession::new();
        let put = |key: u64, value: &str, ttl_ms: Option<u64>| Command::Map {
            name: "m".into(),
            command: MapCommand::Put {
                key: Bytes::from(key.to_be_bytes().to_vec()),
                value: Bytes::from(value.to_string()),
                ttl_ms,
            },
        };
        for name in ["m", "s"] {
            let spec = if name == "m" { Spec::Map } else { Spec::Set };
            one.command(&Command::Open {
                name: name.into(),
                spec,
            });
        }
        for key in 0..2_000 {
            let ttl = (key % 7 == 0).then_some(1_000_000);
            one.command(&put(key, "first", ttl));
        }
        let manager = one.manager();
        let expected = manager.snapshot();
        let deferred = manager.deferred_snapshot().expect("the manager defers");
        // Change every part the image holds: entries, expiries, a new
        // resource, a removed one.
        for key in 0..3_000 {
            let ttl = (key % 5 == 0).then_some(2_000_000);
            one.command(&put(key, "second", ttl));
        }
        one.command(&Command::Delete { name: "s".into() });
        one.command(&Command::Open {
            name: "q".into(),
            spec: Spec::Queue,
        });
        let later = one.manager().snapshot();
        assert_ne!(later, expected, "the state changed");
        assert_eq!(
            deferred(),
            expected,
            "the deferred image is the state it was taken at"
        );
        // Both images restore to the states they were taken at.
        let restored = restore_prepared(&later).expect("restores");
        assert_eq!(&restored, one.manager());
    }
}
