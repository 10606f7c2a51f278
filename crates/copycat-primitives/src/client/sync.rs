//! Handles on the coordination resources: locks, elections, semaphores and
//! count-down latches. Their blocking calls wait for the event the cluster
//! pushes when the wait ends; a dropped call withdraws its request.

use std::time::Duration;

use copycat_client::Consistency;
use copycat_proto::SessionId;

use super::{millis, unexpected, Base, Primitives, Result, Subscription, Undo, Waited};
use crate::election::{ElectionCommand, ElectionEvent, ElectionOutput, ElectionQuery};
use crate::latch::{LatchCommand, LatchEvent, LatchOutput, LatchQuery};
use crate::lock::{LockCommand, LockEvent, LockOutput, LockQuery};
use crate::semaphore::{SemaphoreCommand, SemaphoreEvent, SemaphoreOutput, SemaphoreQuery};
use crate::{Command, Event, Output, Query, Spec};

// ------------------------------------------------------------------ lock

/// A fair distributed lock with fencing tokens ([`crate::lock`]).
///
/// The lock belongs to the client's session: every handle and clone on the
/// same [`Primitives`] acts for the same holder. It is released when the
/// session closes or expires, so a holder cut off from the cluster for a
/// session timeout loses it: always pass the token to what the lock
/// protects and have that refuse older tokens.
#[derive(Clone)]
pub struct Lock {
    base: Base,
}

impl Lock {
    /// Get or create the lock `name` (not reentrant: a second `lock` by the
    /// same session waits for its `unlock`).
    pub async fn open(primitives: &Primitives, name: &str) -> Result<Self> {
        Self::open_with(primitives, name, false).await
    }

    /// Get or create the lock `name`; `reentrant` applies if it is created
    /// now: the holding session may lock again, counting holds.
    pub async fn open_with(primitives: &Primitives, name: &str, reentrant: bool) -> Result<Self> {
        Ok(Self {
            base: Base::open(primitives, name, Spec::Lock { reentrant }).await?,
        })
    }

    /// This handle reading at `consistency`.
    pub fn with_consistency(&self, consistency: Consistency) -> Self {
        let mut base = self.base.clone();
        base.consistency = Some(consistency);
        Self { base }
    }

    async fn acquire(&self, timeout_ms: Option<u64>) -> Result<Option<u64>> {
        let name = self.base.name.clone();
        let waited = self
            .base
            .primitives
            .wait_for(
                &name,
                |req| Command::Lock {
                    name: name.clone(),
                    command: LockCommand::Lock { req, timeout_ms },
                },
                |out| matches!(out, Output::Lock(LockOutput::Waiting)),
                |name, req| Command::Lock {
                    name,
                    command: LockCommand::Cancel { req },
                },
                Undo::Unlock,
            )
            .await?;
        match waited {
            Waited::Now(Output::Lock(LockOutput::Acquired(token))) => Ok(Some(token)),
            Waited::Now(Output::Lock(LockOutput::NotAcquired)) => Ok(None),
            Waited::Event(Event::Lock(LockEvent::Granted { token, .. })) => Ok(Some(token)),
            Waited::Event(Event::Lock(LockEvent::TimedOut { .. })) => Ok(None),
            Waited::Now(other) => unexpected(other),
            Waited::Event(other) => unexpected(other),
        }
    }

    /// Acquire, waiting as long as it takes; answers the fencing token.
    pub async fn lock(&self) -> Result<u64> {
        match self.acquire(None).await? {
            Some(token) => Ok(token),
            None => unexpected("a lock without timeout timed out"),
        }
    }

    /// Acquire if free now; the token, or `None`.
    pub async fn try_lock(&self) -> Result<Option<u64>> {
        self.acquire(Some(0)).await
    }

    /// Acquire, waiting at most `timeout` (by the cluster's clock); the
    /// token, or `None`.
    pub async fn try_lock_for(&self, timeout: Duration) -> Result<Option<u64>> {
        self.acquire(Some(millis(timeout).max(1))).await
    }

    /// Release one hold. Not holding it is
    /// [`crate::ResourceError::NotHolder`].
    pub async fn unlock(&self) -> Result<()> {
        let command = Command::Lock {
            name: self.base.name.clone(),
            command: LockCommand::Unlock,
        };
        match self.base.command(command).await? {
            Output::Lock(LockOutput::Unit) => Ok(()),
            other => unexpected(other),
        }
    }

    async fn ask(&self, query: LockQuery) -> Result<LockOutput> {
        let name = self.base.name.clone();
        match self.base.query(Query::Lock { name, query }).await? {
            Output::Lock(out) => Ok(out),
            other => unexpected(other),
        }
    }

    /// The holding session and its token.
    pub async fn holder(&self) -> Result<Option<(SessionId, u64)>> {
        match self.ask(LockQuery::Holder).await? {
            LockOutput::Holder(h) => Ok(h),
            other => unexpected(other),
        }
    }

    /// Whether anyone holds it.
    pub async fn is_locked(&self) -> Result<bool> {
        match self.ask(LockQuery::IsLocked).await? {
            LockOutput::Bool(b) => Ok(b),
            other => unexpected(other),
        }
    }

    /// How many requests wait for it.
    pub async fn waiters(&self) -> Result<u64> {
        match self.ask(LockQuery::Waiters).await? {
            LockOutput::Count(n) => Ok(n),
            other => unexpected(other),
        }
    }

    /// Whether this session holds it.
    pub async fn is_held(&self) -> Result<bool> {
        match self.ask(LockQuery::IsHeldByCaller).await? {
            LockOutput::Bool(b) => Ok(b),
            other => unexpected(other),
        }
    }
}

// ------------------------------------------------------------------ election

/// A leader election ([`crate::election`]): the term is a fencing token.
#[derive(Clone)]
pub struct Election {
    base: Base,
}

impl Election {
    /// Get or create the election `name`.
    pub async fn open(primitives: &Primitives, name: &str) -> Result<Self> {
        Ok(Self {
            base: Base::open(primitives, name, Spec::Election).await?,
        })
    }

    /// This handle reading at `consistency`.
    pub fn with_consistency(&self, consistency: Consistency) -> Self {
        let mut base = self.base.clone();
        base.consistency = Some(consistency);
        Self { base }
    }

    async fn stand(&self, timeout_ms: Option<u64>) -> Result<Option<u64>> {
        let name = self.base.name.clone();
        let waited = self
            .base
            .primitives
            .wait_for(
                &name,
                |req| Command::Election {
                    name: name.clone(),
                    command: ElectionCommand::Campaign { req, timeout_ms },
                },
                |out| matches!(out, Output::Election(ElectionOutput::Waiting)),
                |name, req| Command::Election {
                    name,
                    command: ElectionCommand::Cancel { req },
                },
                Undo::Resign,
            )
            .await?;
        match waited {
            Waited::Now(Output::Election(ElectionOutput::Elected(term))) => Ok(Some(term)),
            Waited::Now(Output::Election(ElectionOutput::NotElected)) => Ok(None),
            Waited::Event(Event::Election(ElectionEvent::Elected { term, .. })) => Ok(Some(term)),
            Waited::Event(Event::Election(ElectionEvent::TimedOut { .. })) => Ok(None),
            Waited::Now(other) => unexpected(other),
            Waited::Event(other) => unexpected(other),
        }
    }

    /// Stand for leader and wait until elected; answers the term.
    pub async fn campaign(&self) -> Result<u64> {
        match self.stand(None).await? {
            Some(term) => Ok(term),
            None => unexpected("a campaign without timeout timed out"),
        }
    }

    /// Stand for leader, waiting at most `timeout` (zero: only if nobody
    /// leads); the term, or `None`.
    pub async fn campaign_for(&self, timeout: Duration) -> Result<Option<u64>> {
        self.stand(Some(millis(timeout))).await
    }

    /// Give up leadership ([`crate::ResourceError::NotLeader`] if this
    /// session does not lead).
    pub async fn resign(&self) -> Result<()> {
        let command = Command::Election {
            name: self.base.name.clone(),
            command: ElectionCommand::Resign,
        };
        match self.base.command(command).await? {
            Output::Election(ElectionOutput::Unit) => Ok(()),
            other => unexpected(other),
        }
    }

    /// The leading session and its term.
    pub async fn leader(&self) -> Result<Option<(SessionId, u64)>> {
        let query = Query::Election {
            name: self.base.name.clone(),
            query: ElectionQuery::Leader,
        };
        match self.base.query(query).await? {
            Output::Election(ElectionOutput::Leader(l)) => Ok(l),
            other => unexpected(other),
        }
    }

    /// Leadership changes from now on: the new leader and term, or `None`.
    pub async fn listen(&self) -> Result<Subscription<Option<(SessionId, u64)>>> {
        let name = &self.base.name;
        let command = |command| Command::Election {
            name: name.clone(),
            command,
        };
        self.base
            .primitives
            .subscribe(
                name,
                Some(command(ElectionCommand::Listen)),
                Some(command(ElectionCommand::Unlisten)),
                Box::new(|e| matches!(e, Event::Election(ElectionEvent::Changed { .. }))),
                |event| match event {
                    Event::Election(ElectionEvent::Changed { leader }) => Some(Ok(leader)),
                    _ => None,
                },
            )
            .await
    }
}

// ------------------------------------------------------------------ semaphore

/// A counting semaphore ([`crate::semaphore`]); a session's permits return
/// when it closes or expires.
#[derive(Clone)]
pub struct Semaphore {
    base: Base,
}

impl Semaphore {
    /// Get or create the semaphore `name`; `permits` (at least 1) applies
    /// if it is created now.
    pub async fn open(primitives: &Primitives, name: &str, permits: u64) -> Result<Self> {
        Ok(Self {
            base: Base::open(primitives, name, Spec::Semaphore { permits }).await?,
        })
    }

    /// This handle reading at `consistency`.
    pub fn with_consistency(&self, consistency: Consistency) -> Self {
        let mut base = self.base.clone();
        base.consistency = Some(consistency);
        Self { base }
    }

    async fn take(&self, permits: u64, timeout_ms: Option<u64>) -> Result<bool> {
        let name = self.base.name.clone();
        let waited = self
            .base
            .primitives
            .wait_for(
                &name,
                |req| Command::Semaphore {
                    name: name.clone(),
                    command: SemaphoreCommand::Acquire {
                        req,
                        permits,
                        timeout_ms,
                    },
                },
                |out| matches!(out, Output::Semaphore(SemaphoreOutput::Waiting)),
                |name, req| Command::Semaphore {
                    name,
                    command: SemaphoreCommand::Cancel { req },
                },
                Undo::Release(permits),
            )
            .await?;
        match waited {
            Waited::Now(Output::Semaphore(SemaphoreOutput::Acquired)) => Ok(true),
            Waited::Now(Output::Semaphore(SemaphoreOutput::NotAcquired)) => Ok(false),
            Waited::Event(Event::Semaphore(SemaphoreEvent::Acquired { .. })) => Ok(true),
            Waited::Event(Event::Semaphore(SemaphoreEvent::TimedOut { .. })) => Ok(false),
            Waited::Now(other) => unexpected(other),
            Waited::Event(other) => unexpected(other),
        }
    }

    /// Acquire `permits`, waiting in FIFO order as long as it takes.
    pub async fn acquire(&self, permits: u64) -> Result<()> {
        if self.take(permits, None).await? {
            Ok(())
        } else {
            unexpected("an acquire without timeout timed out")
        }
    }

    /// Acquire `permits` if available now (and nobody waits before).
    pub async fn try_acquire(&self, permits: u64) -> Result<bool> {
        self.take(permits, Some(0)).await
    }

    /// Acquire `permits`, waiting at most `timeout`.
    pub async fn try_acquire_for(&self, permits: u64, timeout: Duration) -> Result<bool> {
        self.take(permits, Some(millis(timeout).max(1))).await
    }

    /// Release `permits` this session holds.
    pub async fn release(&self, permits: u64) -> Result<()> {
        let command = Command::Semaphore {
            name: self.base.name.clone(),
            command: SemaphoreCommand::Release { permits },
        };
        match self.base.command(command).await? {
            Output::Semaphore(SemaphoreOutput::Unit) => Ok(()),
            other => unexpected(other),
        }
    }

    async fn permits(&self, query: SemaphoreQuery) -> Result<u64> {
        let name = self.base.name.clone();
        match self.base.query(Query::Semaphore { name, query }).await? {
            Output::Semaphore(SemaphoreOutput::Permits(n)) => Ok(n),
            other => unexpected(other),
        }
    }

    /// Permits available now.
    pub async fn available(&self) -> Result<u64> {
        self.permits(SemaphoreQuery::Available).await
    }

    /// Permits this session holds.
    pub async fn held(&self) -> Result<u64> {
        self.permits(SemaphoreQuery::Held).await
    }
}

// ------------------------------------------------------------------ latch

/// A count-down latch ([`crate::latch`]).
#[derive(Clone)]
pub struct CountDownLatch {
    base: Base,
}

impl CountDownLatch {
    /// Get or create the latch `name`; `count` applies if it is created
    /// now.
    pub async fn open(primitives: &Primitives, name: &str, count: u64) -> Result<Self> {
        Ok(Self {
            base: Base::open(primitives, name, Spec::Latch { count }).await?,
        })
    }

    /// This handle reading at `consistency`.
    pub fn with_consistency(&self, consistency: Consistency) -> Self {
        let mut base = self.base.clone();
        base.consistency = Some(consistency);
        Self { base }
    }

    async fn run(&self, command: LatchCommand) -> Result<LatchOutput> {
        let name = self.base.name.clone();
        match self.base.command(Command::Latch { name, command }).await? {
            Output::Latch(out) => Ok(out),
            other => unexpected(other),
        }
    }

    /// Count down by one; answers the new count.
    pub async fn count_down(&self) -> Result<u64> {
        match self.run(LatchCommand::CountDown).await? {
            LatchOutput::Count(n) => Ok(n),
            other => unexpected(other),
        }
    }

    /// Arm an open latch again with `count`; answers `false` if it is not
    /// open.
    pub async fn set_count(&self, count: u64) -> Result<bool> {
        match self.run(LatchCommand::SetCount(count)).await? {
            LatchOutput::Bool(b) => Ok(b),
            other => unexpected(other),
        }
    }

    /// The count.
    pub async fn count(&self) -> Result<u64> {
        let query = Query::Latch {
            name: self.base.name.clone(),
            query: LatchQuery::Count,
        };
        match self.base.query(query).await? {
            Output::Latch(LatchOutput::Count(n)) => Ok(n),
            other => unexpected(other),
        }
    }

    async fn wait_ms(&self, timeout_ms: Option<u64>) -> Result<bool> {
        let name = self.base.name.clone();
        let waited = self
            .base
            .primitives
            .wait_for(
                &name,
                |req| Command::Latch {
                    name: name.clone(),
                    command: LatchCommand::Await { req, timeout_ms },
                },
                |out| matches!(out, Output::Latch(LatchOutput::Waiting)),
                |name, req| Command::Latch {
                    name,
                    command: LatchCommand::Cancel { req },
                },
                Undo::Nothing,
            )
            .await?;
        match waited {
            Waited::Now(Output::Latch(LatchOutput::Open)) => Ok(true),
            Waited::Now(Output::Latch(LatchOutput::NotOpen)) => Ok(false),
            Waited::Event(Event::Latch(LatchEvent::Opened { .. })) => Ok(true),
            Waited::Event(Event::Latch(LatchEvent::TimedOut { .. })) => Ok(false),
            Waited::Now(other) => unexpected(other),
            Waited::Event(other) => unexpected(other),
        }
    }

    /// Wait until the count is zero.
    pub async fn wait(&self) -> Result<()> {
        if self.wait_ms(None).await? {
            Ok(())
        } else {
            unexpected("a wait without timeout timed out")
        }
    }

    /// Wait at most `timeout` for zero; answers whether it opened.
    pub async fn wait_for(&self, timeout: Duration) -> Result<bool> {
        self.wait_ms(Some(millis(timeout).max(1))).await
    }
}
