//! Typed async handles over a [`copycat_client::Client`].
//!
//! [`Primitives`] wraps a client: it takes the client's event stream and
//! routes each event to the handle that waits for it, so blocking calls
//! (`lock`, `take`, `acquire`, `wait`, `campaign`) wait for the event the
//! cluster pushes, never polling, and listeners get their own streams.
//! All handles of one `Primitives` share the client's session, so their
//! operations are ordered with each other.

mod collections;
mod group;
mod near;
mod sync;

use std::collections::HashMap;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use copycat_client::{Client, ClientState, Consistency, MachineClient};
use copycat_proto::codec;
use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::election::{ElectionCommand, ElectionEvent, ElectionOutput};
use crate::latch::LatchEvent;
use crate::lock::{LockCommand, LockEvent, LockOutput};
use crate::queue::{QueueCommand, QueueEvent, QueueOutput};
use crate::semaphore::{SemaphoreCommand, SemaphoreEvent, SemaphoreOutput};
use crate::{Command, Event, Notice, Output, Query, ResourceError, ResourcesApi, Spec, EVENT_NAME};

pub use collections::{
    Long, Map, MapChange, MultiMap, Queue, QueueChange, Set, SetChange, Topic, TopicMessage, Value,
    ValueChange,
};
pub use group::{Group, GroupChange, GroupMessage, Receipt};
pub use near::NearCache;
pub use sync::{CountDownLatch, Election, Lock, Semaphore};

/// Why a primitive operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The resource manager refused it (nothing changed).
    #[error(transparent)]
    Resource(#[from] ResourceError),
    /// The client could not complete it: see
    /// [`copycat_client::Error::outcome_unknown`] for whether a command may
    /// still have been applied.
    #[error(transparent)]
    Client(copycat_client::Error<()>),
    /// The resource was deleted while the call waited on it.
    #[error("resource {0:?} was deleted while waiting on it")]
    Deleted(String),
    /// The client closed, or its session was lost, while the call waited:
    /// the cluster dropped the wait with the session.
    #[error("the session ended while waiting")]
    SessionEnded,
    /// A value did not encode or decode as the handle's type.
    #[error("cannot encode or decode a value: {0}")]
    Codec(String),
    /// The cluster answered something this handle does not expect (client
    /// and servers of different versions?).
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

impl From<copycat_client::Error<ResourceError>> for Error {
    fn from(error: copycat_client::Error<ResourceError>) -> Self {
        match error {
            copycat_client::Error::App(e) => Error::Resource(e),
            other => Error::Client(other.map_app(|_| Ok(()))),
        }
    }
}

impl Error {
    /// Whether a command that failed this way may still have been applied.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Error::Client(e) if e.outcome_unknown())
    }
}

/// What the primitives' calls return.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn encode<T: Serialize>(value: &T) -> Bytes {
    codec::encode(value)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    codec::decode(bytes).map_err(|e| Error::Codec(e.to_string()))
}

pub(crate) fn unexpected<T>(output: impl Debug) -> Result<T> {
    Err(Error::Unexpected(format!("{output:?}")))
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// What to undo when an event answers a wait that nobody awaits any more
/// (its future was dropped).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Undo {
    /// A lock grant: unlock.
    Unlock,
    /// An election win: resign.
    Resign,
    /// Acquired permits: release them.
    Release(u64),
    /// A taken item: offer it again.
    Offer,
    /// Nothing to undo.
    Nothing,
}

impl Undo {
    /// The command that gives back what a wait on resource `name` got
    /// (`taken`: the item, for a queue take).
    fn command(self, name: &str, taken: Option<&Bytes>) -> Option<Command> {
        let name = name.to_string();
        match self {
            Undo::Unlock => Some(Command::Lock {
                name,
                command: LockCommand::Unlock,
            }),
            Undo::Resign => Some(Command::Election {
                name,
                command: ElectionCommand::Resign,
            }),
            Undo::Release(permits) => Some(Command::Semaphore {
                name,
                command: SemaphoreCommand::Release { permits },
            }),
            Undo::Offer => taken.map(|value| Command::Queue {
                name,
                command: QueueCommand::Offer(value.clone()),
            }),
            Undo::Nothing => None,
        }
    }
}

type Filter = Box<dyn Fn(&Event) -> bool + Send>;

struct Subscriber {
    id: u64,
    filter: Filter,
    tx: mpsc::UnboundedSender<Event>,
}

#[derive(Default)]
struct Routes {
    /// Waiting calls, by (resource, request id).
    waiters: HashMap<(String, u64), oneshot::Sender<Event>>,
    /// Waits abandoned while the cluster may still answer them.
    abandoned: HashMap<(String, u64), Undo>,
    /// Event streams, by resource.
    streams: HashMap<String, Vec<Subscriber>>,
    /// Live streams per listen command, to unlisten after the last.
    listens: HashMap<(String, Vec<u8>), usize>,
    /// The event stream ended: no wait can complete.
    ended: bool,
}

struct Inner {
    client: Client,
    api: MachineClient<ResourcesApi>,
    next_id: AtomicU64,
    routes: Mutex<Routes>,
    /// The index of the last client event the dispatcher has routed
    /// (`u64::MAX` once it has stopped).
    routed: tokio::sync::watch::Sender<u64>,
    dispatcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.dispatcher.lock().expect("dispatcher lock").take() {
            task.abort();
        }
    }
}

/// The primitives of one client session. Cheap to clone (clones share the
/// session and the event routing). Create one per [`Client`]: it takes the
/// client's event stream ([`Client::events`]), so the client must not have
/// handed it out before.
#[derive(Clone)]
pub struct Primitives {
    inner: Arc<Inner>,
}

impl Primitives {
    /// Route `client`'s events to the handles opened from the result. Must
    /// be called within a tokio runtime.
    pub fn new(client: Client) -> Self {
        let events = client.events();
        let inner = Arc::new(Inner {
            api: client.machine::<ResourcesApi>(),
            client,
            next_id: AtomicU64::new(1),
            routes: Mutex::new(Routes::default()),
            routed: tokio::sync::watch::Sender::new(0),
            dispatcher: Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner);
        let status = inner.client.watch_status();
        let task = tokio::spawn(dispatch(weak, events, status));
        *inner.dispatcher.lock().expect("dispatcher lock") = Some(task);
        Self { inner }
    }

    /// The client underneath.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Whether a resource exists.
    pub async fn exists(&self, name: &str) -> Result<bool> {
        match self
            .query(Query::Exists { name: name.into() }, None)
            .await?
        {
            Output::Bool(b) => Ok(b),
            other => unexpected(other),
        }
    }

    /// A resource's description, if it exists.
    pub async fn info(&self, name: &str) -> Result<Option<crate::ResourceInfo>> {
        match self.query(Query::Info { name: name.into() }, None).await? {
            Output::Info(info) => Ok(info),
            other => unexpected(other),
        }
    }

    /// Every resource name in order, optionally only of one type (read in
    /// pages of [`crate::MAX_LIST_PAGE`]).
    pub async fn list(&self, resource_type: Option<crate::ResourceType>) -> Result<Vec<String>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let query = Query::List {
                resource_type,
                after: after.take(),
                limit: crate::MAX_LIST_PAGE,
            };
            match self.query(query, None).await? {
                Output::Names { names, next } => {
                    all.extend(names);
                    match next {
                        Some(next) => after = Some(next),
                        None => return Ok(all),
                    }
                }
                other => return unexpected(other),
            }
        }
    }

    /// Delete a resource; answers whether it existed. Calls waiting on it
    /// fail with [`Error::Deleted`].
    pub async fn delete(&self, name: &str) -> Result<bool> {
        match self.command(Command::Delete { name: name.into() }).await? {
            Output::Bool(b) => Ok(b),
            other => unexpected(other),
        }
    }

    pub(crate) async fn command(&self, command: Command) -> Result<Output> {
        Ok(self.inner.api.command(command).await?)
    }

    pub(crate) async fn query(
        &self,
        query: Query,
        consistency: Option<Consistency>,
    ) -> Result<Output> {
        Ok(match consistency {
            Some(c) => self.inner.api.query_with(query, c).await?,
            None => self.inner.api.query(query).await?,
        })
    }

    pub(crate) async fn open(&self, name: &str, spec: Spec) -> Result<()> {
        match self
            .command(Command::Open {
                name: name.into(),
                spec,
            })
            .await?
        {
            Output::Opened { .. } => Ok(()),
            other => unexpected(other),
        }
    }

    /// Wait until every event the client had handed over when this was
    /// called has been routed to the handles' streams. After a call has
    /// returned, this makes the events published before its result (its
    /// own among them) visible to a reader of those streams.
    pub(crate) async fn caught_up(&self) {
        let target = self.inner.client.delivered_event_index();
        let mut routed = self.inner.routed.subscribe();
        // The sender lives as long as `inner`, so this ends when the
        // dispatcher gets there or stops (u64::MAX).
        let _ = routed.wait_for(|index| *index >= target).await;
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Run a command that may wait: `command(req)` submits it; if
    /// `waiting` says the answer means "wait", the call waits for the
    /// event for `req`. A dropped call withdraws its request (`cancel`)
    /// and undoes a grant that raced with the withdrawal (`undo`).
    pub(crate) async fn wait_for(
        &self,
        name: &str,
        command: impl FnOnce(u64) -> Command,
        waiting: impl FnOnce(&Output) -> bool,
        cancel: fn(String, u64) -> Command,
        undo: Undo,
    ) -> Result<Waited> {
        let req = self.next_id();
        let (tx, rx) = oneshot::channel();
        {
            let mut routes = self.inner.routes.lock().expect("routes lock");
            if routes.ended {
                return Err(Error::SessionEnded);
            }
            routes.waiters.insert((name.to_string(), req), tx);
        }
        // The command runs in a task of its own, so that its answer is seen
        // even if this call is dropped first: an acquisition granted at once
        // (in the answer, with no event to follow) is then undone.
        let (answer_tx, answer_rx) = oneshot::channel();
        {
            let primitives = self.clone();
            let command = command(req);
            let name = name.to_string();
            tokio::spawn(async move {
                let answer = primitives.command(command).await;
                if let Err(Ok(output)) = answer_tx.send(answer) {
                    primitives.undo_answer(&name, req, undo, &output);
                }
            });
        }
        let mut guard = WaitGuard {
            primitives: self.clone(),
            name: name.to_string(),
            req,
            rx: Some(rx),
            answer: Some(answer_rx),
            cancel,
            undo,
            armed: true,
        };
        let answer = guard
            .answer
            .as_mut()
            .expect("answer receiver present until answered");
        let answer = answer
            .await
            .unwrap_or(Err(Error::Client(copycat_client::Error::Closed)));
        guard.answer = None;
        let output = match answer {
            Ok(output) => output,
            Err(error) => {
                if !error.outcome_unknown() {
                    guard.disarm();
                }
                return Err(error);
            }
        };
        if !waiting(&output) {
            guard.disarm();
            return Ok(Waited::Now(output));
        }
        let rx = guard.rx.as_mut().expect("receiver present until done");
        let event = rx.await;
        guard.disarm();
        match event {
            Ok(Event::Deleted) => Err(Error::Deleted(name.to_string())),
            Ok(event) => Ok(Waited::Event(event)),
            Err(_) => Err(Error::SessionEnded),
        }
    }

    /// Send `listen` and stream the resource's events that pass `filter`,
    /// decoded by `decode`. The last stream of one `listen` command sends
    /// `unlisten` when dropped.
    pub(crate) async fn subscribe<T>(
        &self,
        name: &str,
        listen: Option<Command>,
        unlisten: Option<Command>,
        filter: Filter,
        decode: fn(Event) -> Option<Result<T>>,
    ) -> Result<Subscription<T>> {
        let id = self.next_id();
        let (tx, rx) = mpsc::unbounded_channel();
        let key = listen
            .as_ref()
            .map(|listen| (name.to_string(), encode(listen).to_vec()));
        {
            let mut routes = self.inner.routes.lock().expect("routes lock");
            routes
                .streams
                .entry(name.to_string())
                .or_default()
                .push(Subscriber { id, filter, tx });
            if let Some(key) = &key {
                *routes.listens.entry(key.clone()).or_default() += 1;
            }
        }
        let guard = StreamGuard {
            primitives: self.clone(),
            name: name.to_string(),
            id,
            key,
            unlisten,
        };
        if let Some(listen) = listen {
            self.command(listen).await?;
        }
        Ok(Subscription {
            rx,
            decode,
            _guard: guard,
        })
    }

    fn spawn_command(&self, command: Command) {
        let primitives = self.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = primitives.command(command).await {
                    tracing::debug!("a clean-up command failed: {error}");
                }
            });
        }
    }

    /// Undo an acquisition the answer to a dropped wait made at once.
    fn undo_answer(&self, name: &str, req: u64, undo: Undo, output: &Output) {
        let granted = matches!(
            (undo, output),
            (Undo::Unlock, Output::Lock(LockOutput::Acquired(_)))
                | (Undo::Resign, Output::Election(ElectionOutput::Elected(_)))
                | (
                    Undo::Release(_),
                    Output::Semaphore(SemaphoreOutput::Acquired)
                )
                | (Undo::Offer, Output::Queue(QueueOutput::Value(Some(_))))
        );
        let taken = match output {
            Output::Queue(QueueOutput::Value(value)) => value.as_ref(),
            _ => None,
        };
        if let Some(command) = granted.then(|| undo.command(name, taken)).flatten() {
            // Answered at once: no event will come for it.
            let mut routes = self.inner.routes.lock().expect("routes lock");
            routes.abandoned.remove(&(name.to_string(), req));
            drop(routes);
            self.spawn_command(command);
        }
    }

    /// Undo what an event granted to a wait nobody awaits any more.
    fn undo(&self, name: &str, undo: Undo, event: &Event) {
        let granted = matches!(
            (undo, event),
            (Undo::Unlock, Event::Lock(LockEvent::Granted { .. }))
                | (Undo::Resign, Event::Election(ElectionEvent::Elected { .. }))
                | (
                    Undo::Release(_),
                    Event::Semaphore(SemaphoreEvent::Acquired { .. })
                )
                | (Undo::Offer, Event::Queue(QueueEvent::Taken { .. }))
        );
        let taken = match event {
            Event::Queue(QueueEvent::Taken { value, .. }) => Some(value),
            _ => None,
        };
        if let Some(command) = granted.then(|| undo.command(name, taken)).flatten() {
            self.spawn_command(command);
        }
    }
}

/// How a waiting command ended.
pub(crate) enum Waited {
    /// Answered at once.
    Now(Output),
    /// By an event.
    Event(Event),
}

struct WaitGuard {
    primitives: Primitives,
    name: String,
    req: u64,
    rx: Option<oneshot::Receiver<Event>>,
    /// The command's answer, until it is read.
    answer: Option<oneshot::Receiver<Result<Output>>>,
    cancel: fn(String, u64) -> Command,
    undo: Undo,
    armed: bool,
}

impl WaitGuard {
    fn disarm(&mut self) {
        self.armed = false;
        let mut routes = self.primitives.inner.routes.lock().expect("routes lock");
        routes.waiters.remove(&(self.name.clone(), self.req));
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if let Some(mut answer) = self.answer.take() {
            // Answered, but dropped before the answer was read (an answer
            // still to come is seen by the command's task).
            if let Ok(Ok(output)) = answer.try_recv() {
                self.primitives
                    .undo_answer(&self.name, self.req, self.undo, &output);
            }
        }
        if !self.armed {
            return;
        }
        let key = (self.name.clone(), self.req);
        let still_waiting = {
            let mut routes = self.primitives.inner.routes.lock().expect("routes lock");
            let waiting = routes.waiters.remove(&key).is_some();
            if waiting {
                routes.abandoned.insert(key.clone(), self.undo);
            }
            waiting
        };
        if still_waiting {
            // Withdraw the request; if it was no longer waiting, its answer
            // is on the way and the dispatcher undoes it.
            let primitives = self.primitives.clone();
            let cancel = (self.cancel)(self.name.clone(), self.req);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Ok(Output::Lock(crate::lock::LockOutput::Bool(true)))
                    | Ok(Output::Queue(crate::queue::QueueOutput::Bool(true)))
                    | Ok(Output::Election(crate::election::ElectionOutput::Bool(true)))
                    | Ok(Output::Semaphore(crate::semaphore::SemaphoreOutput::Bool(true)))
                    | Ok(Output::Latch(crate::latch::LatchOutput::Bool(true))) =
                        primitives.command(cancel).await
                    {
                        let mut routes = primitives.inner.routes.lock().expect("routes lock");
                        routes.abandoned.remove(&key);
                    }
                });
            }
        } else if let Some(Ok(event)) = self.rx.as_mut().map(|rx| rx.try_recv()) {
            // Answered, but nobody read the answer.
            self.primitives.undo(&self.name, self.undo, &event);
        }
    }
}

struct StreamGuard {
    primitives: Primitives,
    name: String,
    id: u64,
    key: Option<(String, Vec<u8>)>,
    unlisten: Option<Command>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let last = {
            let mut routes = self.primitives.inner.routes.lock().expect("routes lock");
            if let Some(list) = routes.streams.get_mut(&self.name) {
                list.retain(|s| s.id != self.id);
                if list.is_empty() {
                    routes.streams.remove(&self.name);
                }
            }
            match &self.key {
                Some(key) => {
                    let count = routes.listens.entry(key.clone()).or_default();
                    *count = count.saturating_sub(1);
                    let last = *count == 0;
                    if last {
                        routes.listens.remove(key);
                    }
                    last
                }
                None => false,
            }
        };
        if last {
            if let Some(unlisten) = self.unlisten.take() {
                self.primitives.spawn_command(unlisten);
            }
        }
    }
}

/// Events of one resource as a [`Stream`]; from a handle's `listen` or
/// `subscribe`. It ends when the client's session ends; dropping the last
/// stream of a kind stops the cluster sending those events.
pub struct Subscription<T> {
    rx: mpsc::UnboundedReceiver<Event>,
    decode: fn(Event) -> Option<Result<T>>,
    _guard: StreamGuard,
}

impl<T> Subscription<T> {
    /// The next event; `None` when the session ended or the resource was
    /// deleted.
    pub async fn next(&mut self) -> Option<Result<T>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl<T> Unpin for Subscription<T> {}

impl<T> Stream for Subscription<T> {
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Event::Deleted)) | Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(event)) => {
                    if let Some(item) = (self.decode)(event) {
                        return Poll::Ready(Some(item));
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The request id an event answers, for events that end a wait.
fn request_of(event: &Event) -> Option<u64> {
    match event {
        Event::Lock(LockEvent::Granted { req, .. } | LockEvent::TimedOut { req }) => Some(*req),
        Event::Queue(QueueEvent::Taken { req, .. } | QueueEvent::TimedOut { req }) => Some(*req),
        Event::Election(ElectionEvent::Elected { req, .. } | ElectionEvent::TimedOut { req }) => {
            Some(*req)
        }
        Event::Semaphore(SemaphoreEvent::Acquired { req } | SemaphoreEvent::TimedOut { req }) => {
            Some(*req)
        }
        Event::Latch(LatchEvent::Opened { req } | LatchEvent::TimedOut { req }) => Some(*req),
        _ => None,
    }
}

fn route(inner: &Inner, primitives: &Primitives, notice: Notice) {
    let mut routes = inner.routes.lock().expect("routes lock");
    let name = notice.resource;
    if let Some(req) = request_of(&notice.event) {
        let key = (name.clone(), req);
        if let Some(tx) = routes.waiters.remove(&key) {
            if let Err(event) = tx.send(notice.event) {
                // The call was dropped between removing and reading.
                if let Some(undo) = routes.abandoned.remove(&key) {
                    drop(routes);
                    primitives.undo(&name, undo, &event);
                }
            }
        } else if let Some(undo) = routes.abandoned.remove(&key) {
            drop(routes);
            primitives.undo(&name, undo, &notice.event);
        }
        return;
    }
    if notice.event == Event::Deleted {
        let keys: Vec<(String, u64)> = routes
            .waiters
            .keys()
            .filter(|(n, _)| *n == name)
            .cloned()
            .collect();
        for key in keys {
            if let Some(tx) = routes.waiters.remove(&key) {
                let _ = tx.send(Event::Deleted);
            }
        }
        routes.abandoned.retain(|(n, _), _| *n != name);
    }
    if let Some(list) = routes.streams.get(&name) {
        for subscriber in list {
            if notice.event == Event::Deleted || (subscriber.filter)(&notice.event) {
                let _ = subscriber.tx.send(notice.event.clone());
            }
        }
    }
}

/// End every wait and stream: the session is gone.
fn end_all(inner: &Inner) {
    let mut routes = inner.routes.lock().expect("routes lock");
    routes.ended = true;
    routes.waiters.clear();
    routes.abandoned.clear();
    routes.streams.clear();
}

/// The dispatcher stops: end everything, and release whoever waits for it
/// to catch up.
fn stop(inner: &Inner) {
    end_all(inner);
    inner.routed.send_replace(u64::MAX);
}

async fn dispatch(
    inner: std::sync::Weak<Inner>,
    mut events: copycat_client::Events,
    mut status: copycat_client::Watch<copycat_client::ClientStatus>,
) {
    let mut session = status.get().session;
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(inner) = inner.upgrade() else { return };
                let Some(event) = event else {
                    stop(&inner);
                    return;
                };
                if event.name == EVENT_NAME {
                    match event.decode::<Notice>() {
                        Ok(notice) => {
                            let primitives = Primitives { inner: inner.clone() };
                            route(&inner, &primitives, notice);
                        }
                        Err(error) => tracing::warn!("an undecodable primitives event: {error}"),
                    }
                }
                inner.routed.send_if_modified(|routed| {
                    let before = *routed;
                    *routed = before.max(event.index.0);
                    *routed != before
                });
            }
            changed = status.changed() => {
                let Some(inner) = inner.upgrade() else { return };
                match changed {
                    Ok(now) if now.state == ClientState::Closed => {
                        stop(&inner);
                        return;
                    }
                    Ok(now) => {
                        if session.is_some() && now.session != session {
                            // A new session: the cluster dropped every wait
                            // and listener of the old one.
                            end_all(&inner);
                            inner.routes.lock().expect("routes lock").ended = false;
                        }
                        session = now.session;
                    }
                    Err(_) => {
                        stop(&inner);
                        return;
                    }
                }
            }
        }
    }
}

/// Marker for the handles' value types.
pub(crate) type Typed<T> = PhantomData<fn() -> T>;

/// What every handle holds: the primitives, the resource name and the read
/// consistency.
#[derive(Clone)]
pub(crate) struct Base {
    pub(crate) primitives: Primitives,
    pub(crate) name: String,
    pub(crate) consistency: Option<Consistency>,
}

impl Base {
    pub(crate) async fn open(primitives: &Primitives, name: &str, spec: Spec) -> Result<Self> {
        primitives.open(name, spec).await?;
        Ok(Self {
            primitives: primitives.clone(),
            name: name.to_string(),
            consistency: None,
        })
    }

    pub(crate) async fn command(&self, command: Command) -> Result<Output> {
        self.primitives.command(command).await
    }

    pub(crate) async fn query(&self, query: Query) -> Result<Output> {
        self.primitives.query(query, self.consistency).await
    }
}
