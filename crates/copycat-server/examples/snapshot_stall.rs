//! How long taking a snapshot stalls a server. Three embedded servers
//! (fsync on, data in a temp dir) hold a state machine of 1 MiB blobs; a
//! client grows it to about 200 MB while every server snapshots every
//! `--every` entries, then keeps it busy with small commands through more
//! snapshots of the full state. For each phase it reports, per server, the
//! longest owner-loop iteration and the longest gap between messages from
//! the leader (`Server::take_loop_stats`), the snapshots taken, the
//! elections, and the slowest command.
//!
//! ```text
//! cargo run --release -p copycat-server --example snapshot_stall -- \
//!     --blobs=200 --every=50 --steady=120 [--deferred=1]
//! ```
//!
//! `--deferred=1` has the state machine encode its snapshots on the
//! snapshot thread (`StateMachine::deferred_snapshot`).
//!
//! `--restore=1` adds a phase: a follower is stopped, the other two move
//! on through two more snapshots, and the follower is started again; it
//! catches up by restoring a snapshot of the full state from the leader.
//! The phase reports that follower's longest owner-loop iteration and
//! longest gap between messages from the leader while it restores.
//! `--prepare=1` has the state machine decode the image on the restore
//! thread (`StateMachine::prepare_restore`); with `--prepare=0` its
//! `restore` decodes it on the owner thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use copycat_client::{Client, Machine};
use copycat_server::{
    prepared_as, ApplyContext, LoopStats, PreparedRestore, QueryContext, RestoreError, Server,
    StateMachine,
};
use serde::{Deserialize, Serialize};

/// Whether [`Blobs`] decodes restored images ahead of time (`--prepare`).
static PREPARE: AtomicBool = AtomicBool::new(false);

/// The longest `restore` or `install_prepared` call (on the owner thread)
/// and `prepare_restore` call (on the restore thread) since the last reset,
/// in microseconds.
static OWNER_RESTORE_US: AtomicU64 = AtomicU64::new(0);
static PREPARE_US: AtomicU64 = AtomicU64::new(0);

fn timed<T>(max: &AtomicU64, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = f();
    max.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    value
}

/// A state machine that only grows: blobs appended one per command.
#[derive(Default)]
pub struct Blobs {
    blobs: Vec<Bytes>,
    touches: u64,
    /// Encode snapshots on the snapshot thread (`--deferred=1`): the
    /// frozen copy is the list of blob handles, not the bytes.
    deferred: bool,
}

#[derive(Serialize, Deserialize)]
pub enum Command {
    /// Keep a blob; answers the bytes held.
    Append(Bytes),
    /// Change a counter; answers the bytes held.
    Touch,
}

#[derive(Serialize, Deserialize)]
pub enum Query {
    /// The bytes held.
    Size,
}

impl Blobs {
    fn size(&self) -> u64 {
        self.blobs.iter().map(|b| b.len() as u64).sum()
    }
}

/// One pass into a buffer of the right size: the counter, then each blob
/// after its length (little-endian `u64`s).
fn encode(touches: u64, blobs: &[Bytes]) -> Bytes {
    let len = 8 + blobs.iter().map(|b| 8 + b.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&touches.to_le_bytes());
    for blob in blobs {
        out.extend_from_slice(&(blob.len() as u64).to_le_bytes());
        out.extend_from_slice(blob);
    }
    Bytes::from(out)
}

impl StateMachine for Blobs {
    type Command = Command;
    type Query = Query;
    type Output = u64;
    type Error = String;

    fn apply(&mut self, _ctx: &mut ApplyContext<'_>, command: Command) -> Result<u64, String> {
        match command {
            Command::Append(blob) => self.blobs.push(blob),
            Command::Touch => self.touches += 1,
        }
        Ok(self.size())
    }

    fn query(&self, _ctx: &QueryContext, Query::Size: Query) -> Result<u64, String> {
        Ok(self.size())
    }

    fn snapshot(&self) -> Bytes {
        encode(self.touches, &self.blobs)
    }

    fn deferred_snapshot(&self) -> Option<copycat_server::DeferredSnapshot> {
        if !self.deferred {
            return None;
        }
        let (touches, blobs) = (self.touches, self.blobs.clone());
        Some(Box::new(move || encode(touches, &blobs)))
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), RestoreError> {
        (self.touches, self.blobs) = timed(&OWNER_RESTORE_US, || decode(data))?;
        Ok(())
    }

    fn prepare_restore(data: &[u8]) -> Option<Result<PreparedRestore, RestoreError>> {
        if !PREPARE.load(Ordering::Relaxed) {
            return None;
        }
        let decoded = timed(&PREPARE_US, || decode(data));
        Some(decoded.map(|decoded| Box::new(decoded) as PreparedRestore))
    }

    fn install_prepared(&mut self, prepared: PreparedRestore) -> Result<(), RestoreError> {
        (self.touches, self.blobs) = timed(&OWNER_RESTORE_US, || {
            prepared_as::<(u64, Vec<Bytes>)>(prepared)
        })?;
        Ok(())
    }
}

/// The counter and the blobs of an [`encode`]d image (copied out of it).
fn decode(data: &[u8]) -> Result<(u64, Vec<Bytes>), RestoreError> {
    let truncated = || RestoreError("truncated blobs image".into());
    let (touches, mut rest) = data.split_first_chunk::<8>().ok_or_else(truncated)?;
    let mut blobs = Vec::new();
    while let Some((len, tail)) = rest.split_first_chunk::<8>() {
        let len = u64::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(truncated());
        }
        blobs.push(Bytes::copy_from_slice(&tail[..len]));
        rest = &tail[len..];
    }
    if !rest.is_empty() {
        return Err(truncated());
    }
    Ok((u64::from_le_bytes(*touches), blobs))
}

/// The client's view of [`Blobs`].
pub struct BlobsClient;

impl Machine for BlobsClient {
    type Command = Command;
    type Query = Query;
    type Output = u64;
    type Error = String;
}

/// The settings, from `--name=value` arguments.
struct Settings {
    blobs: usize,
    every: u64,
    steady: usize,
    deferred: bool,
    restore: bool,
    prepare: bool,
}

impl Settings {
    fn from_args() -> Result<Self, String> {
        let mut settings = Self {
            blobs: 200,
            every: 50,
            steady: 120,
            deferred: false,
            restore: false,
            prepare: true,
        };
        for arg in std::env::args().skip(1) {
            let (name, value) = arg
                .strip_prefix("--")
                .and_then(|a| a.split_once('='))
                .ok_or_else(|| format!("expected --name=value, got {arg}"))?;
            let value: u64 = value.parse().map_err(|e| format!("{name}: {e}"))?;
            match name {
                "blobs" => settings.blobs = value as usize,
                "every" => settings.every = value,
                "steady" => settings.steady = value as usize,
                "deferred" => settings.deferred = value != 0,
                "restore" => settings.restore = value != 0,
                "prepare" => settings.prepare = value != 0,
                _ => return Err(format!("unknown setting {name}")),
            }
        }
        Ok(settings)
    }
}

const BLOB_BYTES: usize = 1 << 20;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::from_args()?;
    PREPARE.store(settings.prepare, Ordering::Relaxed);
    let dir = tempfile::tempdir()?;
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
    }
    let addrs: Vec<String> = (listeners.iter())
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<Result<_, _>>()?;
    let members: Vec<(u64, String)> = (1..).zip(addrs.iter().cloned()).collect();
    let start = |id: u64, listener: tokio::net::TcpListener| {
        let every = settings.every;
        Server::builder(Blobs {
            deferred: settings.deferred,
            ..Blobs::default()
        })
        .id(id)
        .listener(listener)
        .data_dir(dir.path().join(format!("server-{id}")))
        .bootstrap(members.clone())
        .fsync(true)
        .configure(move |c| {
            c.snapshot_every_entries = every;
            c.snapshot_log_percent = 0;
            // A short tail behind a snapshot, so a follower that was down
            // for a few snapshots needs the leader's (`--restore`).
            c.raft.snapshot_trailing_entries = 10;
            c.replica.max_command_bytes = 2 * BLOB_BYTES;
        })
        .start()
    };
    let mut servers = Vec::new();
    for ((id, _), listener) in members.iter().zip(listeners) {
        servers.push(start(*id, listener).await?);
    }
    servers[0].wait_for_leader(Duration::from_secs(10)).await?;
    let client = Client::builder()
        .servers(addrs.clone())
        .max_payload_bytes(2 * BLOB_BYTES)
        .request_timeout(Duration::from_secs(120))
        .session_timeout(Duration::from_secs(60))
        .ignore_events()
        .connect()
        .await?;
    let blobs = client.machine::<BlobsClient>();
    println!(
        "3 servers, fsync on, data in {}; a snapshot every {} entries",
        dir.path().display(),
        settings.every
    );

    let phase = Phase::start(&servers).await?;
    let mut slowest = Duration::ZERO;
    let mut size = 0;
    for i in 0..settings.blobs {
        let blob = Bytes::from(vec![(i % 251) as u8; BLOB_BYTES]);
        let sent = Instant::now();
        size = blobs.command(Command::Append(blob)).await?;
        slowest = slowest.max(sent.elapsed());
    }
    let name = format!("grow to {} MB", size / 1_000_000);
    phase.report(&name, &servers, slowest).await?;

    let phase = Phase::start(&servers).await?;
    let mut slowest = Duration::ZERO;
    for _ in 0..settings.steady {
        let sent = Instant::now();
        blobs.command(Command::Touch).await?;
        slowest = slowest.max(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let name = format!(
        "{} small commands at {} MB",
        settings.steady,
        size / 1_000_000
    );
    phase.report(&name, &servers, slowest).await?;

    if settings.restore {
        // Stop a follower; the others take two more snapshots and purge
        // the log it would need; started again, it restores the leader's.
        let at = (0..servers.len())
            .find(|i| !servers[*i].status().is_leader())
            .ok_or("no follower")?;
        let stopped = servers.remove(at);
        let id = stopped.id().0;
        stopped.shutdown().await?;
        let stopped_at = servers[0].status().commit;
        for _ in 0..2 * settings.every + 10 {
            blobs.command(Command::Touch).await?;
        }
        // Until a snapshot of the others purged what it would need.
        let waiting = Instant::now();
        while servers
            .iter()
            .any(|s| s.status().snapshot.0 < stopped_at.0 + 20)
        {
            if waiting.elapsed() > Duration::from_secs(120) {
                return Err("no snapshot past the stopped follower".into());
            }
            blobs.command(Command::Touch).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let listener = tokio::net::TcpListener::bind(&addrs[at]).await?;
        let restarted = start(id, listener).await?;
        restarted
            .take_loop_stats()
            .await
            .map_err(|e| e.to_string())?;
        let term = restarted.status().term.0;
        // Not the restore of its own snapshot at startup.
        OWNER_RESTORE_US.store(0, Ordering::Relaxed);
        PREPARE_US.store(0, Ordering::Relaxed);
        let from = restarted.status().snapshot;
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        // Caught up: the snapshot installed, and what the cluster committed
        // since applied. Small commands keep coming meanwhile.
        loop {
            let sent = Instant::now();
            blobs.command(Command::Touch).await?;
            slowest = slowest.max(sent.elapsed());
            let target = servers[0].status().commit;
            let status = restarted.status();
            if status.snapshot > from && status.applied >= target {
                break;
            }
            if started.elapsed() > Duration::from_secs(300) {
                return Err("the restarted follower did not catch up".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stats = restarted
            .take_loop_stats()
            .await
            .map_err(|e| e.to_string())?;
        let status = restarted.status();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let name = format!(
            "follower restores {} MB ({})",
            size / 1_000_000,
            if settings.prepare {
                "prepare_restore on the restore thread"
            } else {
                "restore on the owner thread"
            }
        );
        println!(
            "== {name}: caught up in {:.1} s, slowest command {:.0} ms",
            started.elapsed().as_secs_f64(),
            ms(slowest)
        );
        println!(
            "   server {id} follower: longest loop iteration {:7.1} ms, longest gap from the leader {:7.1} ms, {} iterations, {} snapshots, term {}",
            ms(stats.max_iteration),
            ms(stats.max_leader_gap),
            stats.iterations,
            stats.snapshots,
            status.term.0,
        );
        println!(
            "RESULT phase=\"restore\" prepare={} machine_restore_on_owner_ms={:.1} prepare_restore_ms={:.1} restorer_max_iteration_ms={:.1} restorer_max_leader_gap_ms={:.1} catch_up_ms={:.0} snapshot={} elections={} slowest_command_ms={:.0}",
            settings.prepare,
            OWNER_RESTORE_US.load(Ordering::Relaxed) as f64 / 1000.0,
            PREPARE_US.load(Ordering::Relaxed) as f64 / 1000.0,
            ms(stats.max_iteration),
            ms(stats.max_leader_gap),
            ms(started.elapsed()),
            status.snapshot.0,
            status.term.0 - term,
            ms(slowest)
        );
        servers.insert(at, restarted);
    }

    client.close().await;
    for server in servers {
        server.shutdown().await?;
    }
    Ok(())
}

/// A measured stretch of the run.
struct Phase {
    started: Instant,
    terms: Vec<u64>,
}

impl Phase {
    /// Restart every server's loop statistics.
    async fn start(servers: &[Server<copycat_server::Typed<Blobs>>]) -> Result<Self, String> {
        let mut terms = Vec::new();
        for server in servers {
            server.take_loop_stats().await.map_err(|e| e.to_string())?;
            terms.push(server.status().term.0);
        }
        Ok(Self {
            started: Instant::now(),
            terms,
        })
    }

    /// Print each server's statistics since the start, and one summary line.
    async fn report(
        self,
        name: &str,
        servers: &[Server<copycat_server::Typed<Blobs>>],
        slowest: Duration,
    ) -> Result<(), String> {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "== {name}: {:.1} s, slowest command {:.0} ms",
            self.started.elapsed().as_secs_f64(),
            ms(slowest)
        );
        let mut leader_iteration = Duration::ZERO;
        let mut follower_gap = Duration::ZERO;
        let mut elections = 0;
        for (server, term) in servers.iter().zip(&self.terms) {
            let stats: LoopStats = server.take_loop_stats().await.map_err(|e| e.to_string())?;
            let status = server.status();
            elections = elections.max(status.term.0 - term);
            let role = if status.is_leader() {
                leader_iteration = leader_iteration.max(stats.max_iteration);
                "leader  "
            } else {
                follower_gap = follower_gap.max(stats.max_leader_gap);
                "follower"
            };
            println!(
                "   server {} {role}: longest loop iteration {:7.1} ms, longest gap from the leader {:7.1} ms, {} iterations, {} snapshots, term {}",
                server.id().0,
                ms(stats.max_iteration),
                ms(stats.max_leader_gap),
                stats.iterations,
                stats.snapshots,
                status.term.0,
            );
        }
        println!(
            "RESULT phase=\"{name}\" leader_max_iteration_ms={:.1} follower_max_leader_gap_ms={:.1} elections={elections} slowest_command_ms={:.0}",
            ms(leader_iteration),
            ms(follower_gap),
            ms(slowest)
        );
        Ok(())
    }
}
