//! The primitives through their Rust handles against a real three-server
//! cluster on 127.0.0.1 (ephemeral ports, data in a temporary directory).
//! Timeouts here are generous upper bounds on waits that should end much
//! sooner; no assertion depends on timing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use copycat_client::{Client, Consistency};
use copycat_primitives::map::MapEventKind;
use copycat_primitives::{
    CountDownLatch, Election, Error, Lock, Long, Map, MapChange, MultiMap, Primitives, Queue,
    ResourceError, ResourceType, Resources, Semaphore, Set, SetChange, Topic, Value, ValueOrder,
};
use copycat_server::{Server, Typed};
use tokio::net::TcpListener;
use tokio::time::timeout;

/// The bound on any single wait in these tests.
const PATIENCE: Duration = Duration::from_secs(30);

struct Cluster {
    _root: tempfile::TempDir,
    addrs: BTreeMap<u64, SocketAddr>,
    servers: BTreeMap<u64, Server<Typed<Resources>>>,
}

impl Cluster {
    async fn start() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for id in 1..=3u64 {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            addrs.insert(id, listener.local_addr().expect("addr"));
            listeners.insert(id, listener);
        }
        let mut servers = BTreeMap::new();
        for (id, listener) in listeners {
            let server = Server::builder(Resources::default())
                .id(id)
                .listener(listener)
                .data_dir(root.path().join(format!("server-{id}")))
                .bootstrap(addrs.iter().map(|(id, a)| (*id, a.to_string())))
                .configure(|config| {
                    config.raft.election_timeout_ms = 300;
                    config.raft.heartbeat_interval_ms = 50;
                })
                .start()
                .await
                .expect("server starts");
            servers.insert(id, server);
        }
        Self {
            _root: root,
            addrs,
            servers,
        }
    }

    async fn client(&self) -> Primitives {
        let client = Client::builder()
            .servers(self.addrs.values().map(|a| a.to_string()))
            .session_timeout(Duration::from_secs(5))
            .request_timeout(PATIENCE)
            .connect()
            .await
            .expect("client connects");
        Primitives::new(client)
    }

    async fn leader(&self) -> u64 {
        let any = self.servers.values().next().expect("a server");
        let leader = any.wait_for_leader(PATIENCE).await.expect("a leader");
        leader.0
    }

    async fn shutdown(self) {
        for server in self.servers.into_values() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {PATIENCE:?}"))
}

/// Check `condition` every 10 ms until it holds (at most [`PATIENCE`]).
async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(what, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_primitive_through_its_handle() {
    let cluster = Cluster::start().await;
    let p = cluster.client().await;
    let other = cluster.client().await;

    // Value, with change events.
    let value = Value::<String>::open(&p, "value").await.expect("open");
    let mut changes = value.listen().await.expect("listen");
    value.set(&"one".to_string()).await.expect("set");
    assert_eq!(value.get().await.expect("get"), Some("one".to_string()));
    assert_eq!(
        value.get_and_set(&"two".to_string()).await.expect("gas"),
        Some("one".to_string())
    );
    assert!(!value
        .compare_and_set(Some(&"one".to_string()), Some(&"x".to_string()))
        .await
        .expect("cas"));
    assert!(value
        .compare_and_set(Some(&"two".to_string()), None)
        .await
        .expect("cas"));
    let first = within("a value event", changes.next()).await;
    assert_eq!(
        first.expect("an event").expect("decodes").new,
        Some("one".into())
    );

    // Long; reads at every consistency.
    let long = Long::open(&p, "long").await.expect("open");
    assert_eq!(long.increment_and_get().await.expect("inc"), 1);
    assert_eq!(long.get_and_add(10).await.expect("add"), 1);
    long.set(i64::MAX).await.expect("set");
    assert!(matches!(
        long.add_and_get(1).await,
        Err(Error::Resource(ResourceError::Overflow { .. }))
    ));
    for consistency in [
        Consistency::Linearizable,
        Consistency::LinearizableLease,
        Consistency::Sequential,
    ] {
        assert_eq!(
            long.with_consistency(consistency)
                .get()
                .await
                .expect("read"),
            i64::MAX
        );
    }

    // Map with a per-key listener on another session.
    let map = Map::<String, u32>::open(&p, "map").await.expect("open");
    let watched = Map::<String, u32>::open(&other, "map").await.expect("open");
    let mut key_events = watched.listen_key(&"b".to_string()).await.expect("listen");
    assert_eq!(map.put(&"a".into(), &1).await.expect("put"), None);
    assert_eq!(map.put(&"b".into(), &2).await.expect("put"), None);
    assert_eq!(
        map.put_if_absent(&"b".into(), &3).await.expect("pia"),
        Some(2)
    );
    assert!(map.replace_if(&"b".into(), &2, &4).await.expect("replace"));
    assert_eq!(map.size().await.expect("size"), 2);
    assert_eq!(
        map.entries().await.expect("entries"),
        vec![("a".to_string(), 1), ("b".to_string(), 4)]
    );
    assert_eq!(map.get_or_default(&"z".into(), 9).await.expect("get"), 9);
    let added = within("a map event", key_events.next()).await;
    assert_eq!(
        added.expect("an event").expect("decodes"),
        MapChange {
            kind: MapEventKind::Added,
            key: "b".to_string(),
            old: None,
            new: Some(2),
        }
    );

    // MultiMap in insertion order.
    let multi = MultiMap::<u8, String>::open(&p, "multi", ValueOrder::Insertion)
        .await
        .expect("open");
    assert!(multi.put(&1, &"z".into()).await.expect("put"));
    assert!(multi.put(&1, &"a".into()).await.expect("put"));
    assert!(!multi.put(&1, &"z".into()).await.expect("put"));
    assert_eq!(
        multi.get(&1).await.expect("get"),
        vec!["z".to_string(), "a".to_string()]
    );
    assert!(multi.remove_value(&"z".into()).await.expect("remove"));
    assert_eq!(multi.size().await.expect("size"), 1);

    // Set with events.
    let set = Set::<u64>::open(&p, "set").await.expect("open");
    let mut set_events = set.listen().await.expect("listen");
    assert!(set.add(&7).await.expect("add"));
    assert!(!set.add(&7).await.expect("add"));
    assert!(set.contains(&7).await.expect("contains"));
    assert_eq!(set.members().await.expect("members"), vec![7]);
    assert_eq!(
        within("a set event", set_events.next())
            .await
            .expect("event")
            .expect("decodes"),
        SetChange::Added(7)
    );

    // Queue.
    let queue = Queue::<String>::open(&p, "queue").await.expect("open");
    assert!(queue.offer(&"a".into()).await.expect("offer"));
    queue.add(&"b".into()).await.expect("add");
    assert_eq!(queue.peek().await.expect("peek"), Some("a".into()));
    assert_eq!(queue.take().await.expect("take"), "a");
    assert_eq!(queue.poll().await.expect("poll"), Some("b".into()));
    assert!(matches!(
        queue.remove().await,
        Err(Error::Resource(ResourceError::Empty))
    ));

    // Topic to another session.
    let topic = Topic::<String>::open(&p, "topic").await.expect("open");
    let mut messages = Topic::<String>::open(&other, "topic")
        .await
        .expect("open")
        .subscribe()
        .await
        .expect("subscribe");
    for text in ["x", "y", "z"] {
        assert_eq!(topic.publish(&text.to_string()).await.expect("publish"), 1);
    }
    for (seq, text) in [(1, "x"), (2, "y"), (3, "z")] {
        let message = within("a message", messages.next())
            .await
            .expect("message")
            .expect("decodes");
        assert_eq!((message.seq, message.message.as_str()), (seq, text));
    }

    // Lock.
    let lock = Lock::open(&p, "lock").await.expect("open");
    let token = lock.lock().await.expect("lock");
    assert_eq!(
        Lock::open(&other, "lock")
            .await
            .expect("open")
            .try_lock()
            .await
            .expect("try"),
        None
    );
    assert!(lock.is_held().await.expect("held"));
    assert_eq!(
        lock.holder().await.expect("holder").map(|h| h.1),
        Some(token)
    );
    lock.unlock().await.expect("unlock");
    assert!(matches!(
        lock.unlock().await,
        Err(Error::Resource(ResourceError::NotHolder))
    ));

    // Election, with a listener.
    let election = Election::open(&p, "election").await.expect("open");
    let mut leaders = Election::open(&other, "election")
        .await
        .expect("open")
        .listen()
        .await
        .expect("listen");
    let term = election.campaign().await.expect("campaign");
    assert_eq!(
        election.leader().await.expect("leader").map(|l| l.1),
        Some(term)
    );
    let change = within("a leadership event", leaders.next())
        .await
        .expect("event")
        .expect("ok");
    assert_eq!(change.map(|l| l.1), Some(term));
    election.resign().await.expect("resign");

    // Semaphore.
    let semaphore = Semaphore::open(&p, "semaphore", 2).await.expect("open");
    semaphore.acquire(2).await.expect("acquire");
    let theirs = Semaphore::open(&other, "semaphore", 2).await.expect("open");
    assert!(!theirs.try_acquire(1).await.expect("try"));
    let waiting = tokio::spawn({
        let theirs = theirs.clone();
        async move { theirs.acquire(1).await }
    });
    semaphore.release(1).await.expect("release");
    within("the waiting acquire", waiting)
        .await
        .expect("task")
        .expect("acquired");
    assert_eq!(theirs.held().await.expect("held"), 1);

    // Latch.
    let latch = CountDownLatch::open(&p, "latch", 2).await.expect("open");
    let waiter = tokio::spawn({
        let latch = CountDownLatch::open(&other, "latch", 2)
            .await
            .expect("open");
        async move { latch.wait().await }
    });
    assert_eq!(latch.count_down().await.expect("down"), 1);
    assert_eq!(latch.count_down().await.expect("down"), 0);
    within("the latch wait", waiter)
        .await
        .expect("task")
        .expect("opened");

    // The manager: wrong type, listing, deletion.
    assert!(matches!(
        Queue::<u8>::open(&p, "lock").await,
        Err(Error::Resource(ResourceError::WrongType {
            found: ResourceType::Lock,
            ..
        }))
    ));
    assert!(p.exists("map").await.expect("exists"));
    assert_eq!(
        p.list(Some(ResourceType::Map)).await.expect("list"),
        vec!["map"]
    );
    assert_eq!(p.list(None).await.expect("list").len(), 11);
    assert!(p.delete("map").await.expect("delete"));
    assert!(!p.exists("map").await.expect("exists"));

    p.client().clone().close().await;
    other.client().clone().close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_is_released_when_its_session_closes_and_granted_to_the_waiter() {
    let cluster = Cluster::start().await;
    let holder = cluster.client().await;
    let waiter = cluster.client().await;
    let first = Lock::open(&holder, "l")
        .await
        .expect("open")
        .lock()
        .await
        .expect("lock");
    let lock = Lock::open(&waiter, "l").await.expect("open");
    let waiting = tokio::spawn({
        let lock = lock.clone();
        async move { lock.lock().await }
    });
    // The waiter is queued behind the holder ...
    wait_until("the lock waits", || async {
        lock.waiters().await.expect("waiters") == 1
    })
    .await;
    assert_eq!(lock.try_lock().await.expect("try"), None);
    assert!(!waiting.is_finished(), "the holder still holds");
    // ... until the holder's session closes.
    holder.client().clone().close().await;
    let second = within("the waiting lock", waiting)
        .await
        .expect("task")
        .expect("granted");
    assert!(second > first, "token {second} after {first}");
    assert!(lock.is_held().await.expect("held"));
    waiter.client().clone().close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_increase_across_a_leader_change() {
    let mut cluster = Cluster::start().await;
    let p = cluster.client().await;
    let lock = Lock::open(&p, "l").await.expect("open");
    let election = Election::open(&p, "e").await.expect("open");
    let before = lock.lock().await.expect("lock");
    lock.unlock().await.expect("unlock");
    let term_before = election.campaign().await.expect("campaign");
    election.resign().await.expect("resign");

    // Kill the leader: the two others elect a new one.
    let leader = cluster.leader().await;
    drop(cluster.servers.remove(&leader));

    let after = within("a lock under the new leader", lock.lock())
        .await
        .expect("lock");
    assert!(after > before, "token {after} after {before}");
    let term_after = within("a campaign", election.campaign())
        .await
        .expect("campaign");
    assert!(term_after > term_before && term_after > after);
    p.client().clone().close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_take_is_woken_by_an_offer() {
    let cluster = Cluster::start().await;
    let producer = cluster.client().await;
    let consumer = cluster.client().await;
    let queue = Queue::<u32>::open(&consumer, "jobs").await.expect("open");
    let taking = tokio::spawn({
        let queue = queue.clone();
        async move { queue.take().await }
    });
    let offered = Queue::<u32>::open(&producer, "jobs").await.expect("open");
    // Offer only once the take waits, so the item is handed over by the
    // pushed event rather than found by the take.
    wait_until("the take waits", || async {
        queue.takers().await.expect("takers") == 1
    })
    .await;
    assert!(!taking.is_finished(), "nothing was offered yet");
    assert!(offered.offer(&42).await.expect("offer"));
    let taken = within("the take", taking)
        .await
        .expect("task")
        .expect("taken");
    assert_eq!(taken, 42);
    assert_eq!(queue.size().await.expect("size"), 0);
    assert_eq!(
        queue
            .take_timeout(Duration::from_millis(50))
            .await
            .expect("take"),
        None,
        "a timed take on an empty queue times out"
    );
    producer.client().clone().close().await;
    consumer.client().clone().close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_elects_messages_and_survives_a_members_session() {
    use copycat_primitives::group::Delivery;
    use copycat_primitives::{Group, GroupChange, Receipt};

    let cluster = Cluster::start().await;
    let first = cluster.client().await;
    let second = cluster.client().await;
    let a = Group::open(&first, "g").await.expect("open");
    let b = Group::open(&second, "g").await.expect("open");
    let mut changes = b.listen().await.expect("listen");
    let mut inbox = a.messages().await.expect("messages");

    assert_eq!(
        a.join(Some("a"), true, "meta".into()).await.expect("join"),
        "a"
    );
    assert_eq!(
        b.join(Some("b"), false, Default::default())
            .await
            .expect("join"),
        "b"
    );
    let (leader, term) = a.leader().await.expect("leader").expect("a leader");
    assert_eq!(leader, "a", "the oldest member leads");

    // Request-reply: b asks a, a answers.
    let asking = tokio::spawn({
        let b = b.clone();
        async move {
            b.send(Delivery::Direct("a".into()), "ping".into(), true)
                .await
        }
    });
    let message = within("a message", inbox.next())
        .await
        .expect("message")
        .expect("ok");
    assert_eq!(
        (message.member.as_str(), &message.payload[..]),
        ("a", &b"ping"[..])
    );
    assert!(message.reply);
    a.reply(&message, "pong".into()).await.expect("reply");
    let receipts = within("the receipt", asking)
        .await
        .expect("task")
        .expect("sent");
    assert_eq!(
        receipts.into_iter().map(|(_, r)| r).collect::<Vec<_>>(),
        vec![Receipt::Delivered {
            member: "a".into(),
            reply: Some("pong".into())
        }]
    );

    // a's session ends: the persistent member is dead, b leads with a
    // larger term.
    first.client().clone().close().await;
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|c| matches!(c, GroupChange::Leader(Some((id, _))) if id == "b"))
    {
        seen.push(
            within("group events", changes.next())
                .await
                .expect("event")
                .expect("ok"),
        );
    }
    assert!(seen.contains(&GroupChange::Status {
        id: "a".into(),
        alive: false
    }));
    let (leader, new_term) = b.leader().await.expect("leader").expect("a leader");
    assert_eq!(leader, "b");
    assert!(new_term > term);
    let dead = b
        .member("a")
        .await
        .expect("member")
        .expect("still a member");
    assert_eq!(dead.session, None);

    // A new session rejoins as "a".
    let third = cluster.client().await;
    let again = Group::open(&third, "g").await.expect("open");
    assert_eq!(
        again
            .join(Some("a"), true, "back".into())
            .await
            .expect("rejoin"),
        "a"
    );
    assert!(b
        .member("a")
        .await
        .expect("member")
        .expect("a")
        .session
        .is_some());
    assert_eq!(
        b.leader().await.expect("leader").map(|l| l.0),
        Some("b".into()),
        "b keeps leading"
    );

    second.client().clone().close().await;
    third.client().clone().close().await;
    cluster.shutdown().await;
}

/// Poll `future` once (sending its command), then drop it; whether it was
/// still pending.
async fn dropped_after_one_poll<F: std::future::Future>(future: F) -> bool {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx).is_pending())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_waits_are_withdrawn_and_nothing_is_lost() {
    let cluster = Cluster::start().await;
    let holder = cluster.client().await;
    let other = cluster.client().await;

    // A lock wait dropped while queued: the lock does not end up held by
    // the abandoned request once the holder lets go.
    let held = Lock::open(&holder, "l").await.expect("open");
    held.lock().await.expect("lock");
    let wanted = Lock::open(&other, "l").await.expect("open");
    {
        let waiting = wanted.lock();
        tokio::pin!(waiting);
        let queued = async {
            while wanted.waiters().await.expect("waiters") == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::select! {
            _ = &mut waiting => panic!("granted while held"),
            () = within("the wait to queue", queued) => {}
        }
        // `waiting` is dropped here, while queued.
    }
    held.unlock().await.expect("unlock");
    wait_until("the lock to be free", || async {
        !wanted.is_locked().await.expect("locked") && wanted.waiters().await.expect("w") == 0
    })
    .await;

    // A take dropped while waiting: a later offer stays in the queue.
    let queue = Queue::<u32>::open(&other, "q").await.expect("open");
    {
        let taking = queue.take();
        tokio::pin!(taking);
        let queued = async {
            while queue.takers().await.expect("takers") == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::select! {
            _ = &mut taking => panic!("took from an empty queue"),
            () = within("the take to queue", queued) => {}
        }
    }
    let producer = Queue::<u32>::open(&holder, "q").await.expect("open");
    assert!(producer.offer(&5).await.expect("offer"));
    wait_until("the item to be in the queue", || async {
        queue.takers().await.expect("takers") == 0 && queue.size().await.expect("size") == 1
    })
    .await;
    assert_eq!(queue.poll().await.expect("poll"), Some(5));

    // Acquisitions granted at once, in the answer to a call dropped before
    // the answer came (no event follows such a grant): each is undone, and
    // the session that made them lives on.
    let free = Lock::open(&other, "free").await.expect("open");
    let sem = Semaphore::open(&other, "sem", 2).await.expect("open");
    assert!(producer.offer(&7).await.expect("offer"));
    for _ in 0..3 {
        assert!(dropped_after_one_poll(free.lock()).await);
        assert!(dropped_after_one_poll(sem.acquire(2)).await);
    }
    assert!(dropped_after_one_poll(queue.take()).await);
    let contender = Lock::open(&holder, "free").await.expect("open");
    let token = within("the undone lock to be granted elsewhere", contender.lock())
        .await
        .expect("lock");
    assert!(token > 0);
    contender.unlock().await.expect("unlock");
    let permits = Semaphore::open(&holder, "sem", 2).await.expect("open");
    wait_until("every permit to come back", || async {
        permits.available().await.expect("available") == 2
    })
    .await;
    wait_until("the taken item to be offered again", || async {
        producer.size().await.expect("size") == 1
    })
    .await;
    assert_eq!(producer.poll().await.expect("poll"), Some(7));
    // The session that dropped them lives on.
    assert!(!free.is_locked().await.expect("the session lives on"));
    assert_eq!(sem.available().await.expect("the session lives on"), 2);

    holder.client().clone().close().await;
    other.client().clone().close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_cache_follows_its_map_never_goes_back_and_reads_its_own_writes() {
    let cluster = Cluster::start().await;
    let reader = cluster.client().await;
    let writer = cluster.client().await;
    let key = |k: &str| k.to_string();
    let theirs: Map<String, u64> = Map::open(&writer, "near").await.expect("open");
    theirs.put(&key("before"), &1).await.expect("put");
    let ours: Map<String, u64> = Map::open(&reader, "near").await.expect("open");
    let cache = ours.near_cache().await.expect("near cache");

    // Loaded when made.
    assert_eq!(cache.get(&key("before")).expect("read"), Some(1));
    assert_eq!(cache.len().expect("read"), 1);
    // Its own writes, through the cache or (after sync) through the map.
    assert_eq!(cache.put(&key("mine"), &7).await.expect("put"), None);
    assert_eq!(cache.get(&key("mine")).expect("read"), Some(7));
    ours.put(&key("direct"), &8).await.expect("put");
    cache.sync().await.expect("sync");
    assert_eq!(cache.get(&key("direct")).expect("read"), Some(8));
    assert_eq!(cache.remove(&key("direct")).await.expect("remove"), Some(8));
    assert!(!cache.contains_key(&key("direct")).expect("read"));

    // Another client's changes arrive in order: a counter read from the
    // copy never goes down, and reaches the last value written.
    let writes = tokio::spawn(async move {
        for i in 1..=300u64 {
            theirs.put(&key("counter"), &i).await.expect("put");
        }
        theirs.remove(&key("before")).await.expect("remove");
        theirs
    });
    let mut last = 0;
    within("the copy to reach 300", async {
        while last < 300 {
            let now = cache.get(&key("counter")).expect("read").unwrap_or(0);
            assert!(now >= last, "the copy went back from {last} to {now}");
            last = now;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let theirs = within("the writer", writes).await.expect("writer task");
    wait_until("the removal to arrive", || async {
        !cache.contains_key(&key("before")).expect("read")
    })
    .await;

    // An entry whose TTL runs out leaves the copy too.
    theirs
        .put_with_ttl(&key("brief"), &5, Duration::from_millis(300))
        .await
        .expect("put with ttl");
    // The put reaches the copy first (another client's change arrives in
    // its own time: without this wait, the wait below could pass before it).
    wait_until("the entry to arrive", || async {
        cache.contains_key(&key("brief")).expect("read")
    })
    .await;
    wait_until("the expiry to arrive", || async {
        !cache.contains_key(&key("brief")).expect("read")
    })
    .await;

    // After a sync the copy is the map.
    cache.sync().await.expect("sync");
    assert_eq!(
        cache.entries().expect("read"),
        ours.entries().await.expect("entries")
    );
    // A second cache made now starts from the same state.
    let second = ours.near_cache().await.expect("second cache");
    assert_eq!(
        second.entries().expect("read"),
        cache.entries().expect("read")
    );

    // Deleting the map ends the copy: reads fail instead of going stale.
    assert!(writer.delete("near").await.expect("delete"));
    wait_until("the deletion to arrive", || async {
        matches!(cache.get(&key("mine")), Err(Error::Deleted(_)))
    })
    .await;

    // So does the end of the session.
    let other: Map<String, u64> = Map::open(&reader, "near2").await.expect("open");
    other.put(&key("x"), &1).await.expect("put");
    let cache2 = other.near_cache().await.expect("near cache");
    assert_eq!(cache2.get(&key("x")).expect("read"), Some(1));
    reader.client().clone().close().await;
    wait_until("the session's end to reach the copy", || async {
        matches!(cache2.get(&key("x")), Err(Error::SessionEnded))
    })
    .await;
    writer.client().clone().close().await;
    cluster.shutdown().await;
}
