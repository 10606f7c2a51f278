//! The cluster under test: real `copycat server` processes, each with its
//! own loopback address, data directory and log file, each advertising the
//! address of the proxy in front of it (`crate::proxy`), so that peers
//! reach one another through the proxy.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use copycat_proto::{AdminFailure, AdminRequest, AdminResponse, ServerState, ServerStatus};

/// Every server listens on this port, each on its own address.
pub const PORT: u16 = 5700;
/// And serves `/metrics` and `/health` here.
pub const HTTP_PORT: u16 = 6700;

/// The loopback address of server `id` (127.0.0.10 + id: 127.0.0.1 stays
/// the clients' source address, outside every partition).
pub fn node_ip(id: u64) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + id as u8)
}

/// `HOST:PORT` of server `id`.
pub fn node_addr(id: u64) -> String {
    format!("{}:{PORT}", node_ip(id))
}

/// The fault-injecting proxy in front of every server listens on this
/// port, on the server's address.
pub const PROXY_PORT: u16 = 5800;

/// `HOST:PORT` of the proxy in front of server `id`: what the server
/// advertises (`--advertise`), so its peers reach it through the proxy.
pub fn proxy_addr(id: u64) -> String {
    format!("{}:{PROXY_PORT}", node_ip(id))
}

/// How to start the servers.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The `copycat` binary.
    pub binary: PathBuf,
    /// Number of servers (ids 1..=nodes).
    pub nodes: u64,
    /// The run's directory (data directories and logs go below it).
    pub dir: PathBuf,
    /// Raft election timeout of every server.
    pub election_timeout_ms: u64,
    /// Heartbeat interval.
    pub heartbeat_ms: u64,
    /// Default session timeout.
    pub session_timeout_ms: u64,
    /// Switch this planted bug on in every server (test builds only).
    pub planted_bug: Option<String>,
    /// libfaketime, to skew the servers' wall clocks (None: no clock faults).
    pub faketime: Option<PathBuf>,
    /// Snapshot after this many entries (small, so snapshots and their
    /// installation happen during a short run).
    pub snapshot_every_entries: u64,
}

/// One server.
pub struct Node {
    /// Its id.
    pub id: u64,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Where its output goes (appended across restarts).
    pub log: PathBuf,
    /// The file its wall-clock offset is read from (libfaketime).
    pub clock_file: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// How many times it was started.
    pub starts: u32,
    /// Start it with `--join` this address instead of bootstrapping (after
    /// it was removed and wiped).
    pub join: Option<String>,
}

/// The servers and what was done to them.
pub struct Cluster {
    /// How they are started.
    pub spec: ClusterSpec,
    /// By id, from 1.
    pub nodes: BTreeMap<u64, Node>,
    /// The server whose data directory is on a small filesystem of its
    /// own, with that filesystem's mount point (for disk-full faults).
    pub small_disk: Option<(u64, PathBuf)>,
}

impl Cluster {
    /// Lay out `spec.nodes` servers (nothing runs yet).
    pub fn new(spec: ClusterSpec) -> Result<Self> {
        let mut nodes = BTreeMap::new();
        for id in 1..=spec.nodes {
            let data_dir = spec.dir.join(format!("node-{id}")).join("data");
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            let clock_file = spec.dir.join(format!("node-{id}.clock"));
            std::fs::write(&clock_file, "+0\n")?;
            nodes.insert(
                id,
                Node {
                    id,
                    data_dir,
                    log: spec.dir.join(format!("node-{id}.log")),
                    clock_file,
                    child: None,
                    paused: false,
                    starts: 0,
                    join: None,
                },
            );
        }
        Ok(Self {
            spec,
            nodes,
            small_disk: None,
        })
    }

    /// Put the last server's data directory on a tmpfs of `mib` MiB of its
    /// own (the harness runs in a mount namespace of its own, so the mount
    /// goes away with it).
    pub fn mount_small_disk(&mut self, mib: u64) -> Result<()> {
        let id = *self.nodes.keys().next_back().expect("servers");
        let mount = self.spec.dir.join(format!("node-{id}"));
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&mount)
            .status()
            .context("running mount")?;
        if !status.success() {
            bail!("mount -t tmpfs on {} failed", mount.display());
        }
        let node = self.nodes.get_mut(&id).expect("node");
        std::fs::create_dir_all(&node.data_dir)?;
        self.small_disk = Some((id, mount));
        Ok(())
    }

    /// Every server's address.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.keys().map(|id| node_addr(*id)).collect()
    }

    /// Start every server that is not running.
    pub fn start_all(&mut self) -> Result<()> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            if !self.is_running(id) {
                self.start(id)?;
            }
        }
        Ok(())
    }

    /// Whether server `id`'s process exists (it may be paused).
    pub fn is_running(&mut self, id: u64) -> bool {
        let node = self.nodes.get_mut(&id).expect("node id");
        match node.child.as_mut() {
            Some(child) => match child.try_wait() {
                Ok(None) => true,
                Ok(Some(_)) | Err(_) => {
                    node.child = None;
                    node.paused = false;
                    false
                }
            },
            None => false,
        }
    }

    /// Servers whose process died on its own (not killed by the harness),
    /// with their exit status.
    pub fn crashed(&mut self) -> Vec<(u64, String)> {
        let mut crashed = Vec::new();
        for node in self.nodes.values_mut() {
            if let Some(child) = node.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    crashed.push((node.id, status.to_string()));
                    node.child = None;
                    node.paused = false;
                }
            }
        }
        crashed
    }

    /// Start server `id`.
    pub fn start(&mut self, id: u64) -> Result<()> {
        let spec = self.spec.clone();
        let members: Vec<String> = (1..=spec.nodes)
            .map(|m| format!("--member={m}={}", proxy_addr(m)))
            .collect();
        let node = self.nodes.get_mut(&id).expect("node id");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("opening {}", node.log.display()))?;
        let mut command = Command::new(&spec.binary);
        command
            .arg("server")
            .arg(format!("--id={id}"))
            .arg(format!("--listen={}", node_addr(id)))
            .arg(format!("--advertise={}", proxy_addr(id)))
            .arg(format!("--http-listen={}:{HTTP_PORT}", node_ip(id)))
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg(format!(
                "--election-timeout-ms={}",
                spec.election_timeout_ms
            ))
            .arg(format!("--heartbeat-ms={}", spec.heartbeat_ms))
            .arg(format!("--session-timeout-ms={}", spec.session_timeout_ms))
            .arg(format!(
                "--snapshot-every-entries={}",
                spec.snapshot_every_entries
            ))
            .arg("--max-connections=4096")
            .env_remove("RUST_LOG")
            .env("COPYCAT_LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        match &node.join {
            Some(address) => {
                command.arg(format!("--join={address}"));
            }
            None => {
                command.args(&members);
            }
        }
        if let Some(bug) = &spec.planted_bug {
            command.env("COPYCAT_PLANTED_BUG", bug);
        }
        if let Some(lib) = &spec.faketime {
            // Only the wall clock is skewed: the monotonic clock (timers,
            // timeouts) stays true, as on a machine whose NTP misbehaves.
            command
                .env("LD_PRELOAD", lib)
                .env("FAKETIME_TIMESTAMP_FILE", &node.clock_file)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env("FAKETIME_NO_CACHE", "1");
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", spec.binary.display()))?;
        node.child = Some(child);
        node.paused = false;
        node.starts += 1;
        Ok(())
    }

    /// kill -9 server `id` and wait for it to go.
    pub fn kill(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("node id");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    /// Stop server `id` with SIGTERM (a graceful shutdown), kill -9 after
    /// `grace`.
    pub fn terminate(&mut self, id: u64, grace: Duration) {
        let node = self.nodes.get_mut(&id).expect("node id");
        if let Some(mut child) = node.child.take() {
            if node.paused {
                let _ = signal(child.id(), "CONT");
            }
            let _ = signal(child.id(), "TERM");
            let deadline = Instant::now() + grace;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        node.paused = false;
    }

    /// SIGSTOP server `id`.
    pub fn pause(&mut self, id: u64) -> Result<()> {
        let node = self.nodes.get_mut(&id).expect("node id");
        if let Some(child) = &node.child {
            signal(child.id(), "STOP")?;
            node.paused = true;
        }
        Ok(())
    }

    /// SIGCONT server `id`.
    pub fn resume(&mut self, id: u64) -> Result<()> {
        let node = self.nodes.get_mut(&id).expect("node id");
        if let Some(child) = &node.child {
            if node.paused {
                signal(child.id(), "CONT")?;
            }
        }
        node.paused = false;
        Ok(())
    }

    /// Resume every paused server.
    pub fn resume_all(&mut self) -> Result<()> {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.resume(id)?;
        }
        Ok(())
    }

    /// Set server `id`'s wall clock `offset_ms` away from the true time
    /// (read by libfaketime at every clock call).
    pub fn set_clock_offset(&self, id: u64, offset_ms: i64) -> Result<()> {
        let node = &self.nodes[&id];
        let seconds = offset_ms as f64 / 1000.0;
        std::fs::write(&node.clock_file, format!("{seconds:+.3}\n"))
            .with_context(|| format!("writing {}", node.clock_file.display()))
    }

    /// Stop every server (SIGTERM, then kill -9).
    pub fn stop_all(&mut self) {
        let _ = self.resume_all();
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.terminate(id, Duration::from_secs(5));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Send signal `name` (`STOP`, `CONT`, `TERM`) to process `pid`.
pub fn signal(pid: u32, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{name} {pid} failed");
    }
    Ok(())
}

/// Server `id`'s status, if it answers within `limit`.
pub async fn status(id: u64, limit: Duration) -> Result<ServerStatus> {
    let address = node_addr(id);
    match copycat_net::admin_call(&address, &AdminRequest::Status, limit).await? {
        AdminResponse::Status(status) => Ok(status),
        other => Err(anyhow!("{address}: unexpected answer {other:?}")),
    }
}

/// The servers that answer, with their statuses.
pub async fn statuses(ids: &[u64], limit: Duration) -> BTreeMap<u64, ServerStatus> {
    let calls = ids
        .iter()
        .map(|id| async move { (*id, status(*id, limit).await) });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .filter_map(|(id, status)| status.ok().map(|s| (id, s)))
        .collect()
}

/// The leader that the answering servers agree on: a server that says it
/// leads, in the highest term any server reports.
pub async fn leader(ids: &[u64], limit: Duration) -> Option<u64> {
    let statuses = statuses(ids, limit).await;
    let term = statuses.values().map(|s| s.term).max()?;
    statuses
        .values()
        .find(|s| s.state == ServerState::Leader && s.term == term)
        .map(|s| s.id)
}

/// Send `request` to the leader, following redirects, for up to `limit`.
pub async fn leader_call(
    ids: &[u64],
    request: &AdminRequest,
    limit: Duration,
) -> Result<AdminResponse> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut target = node_addr(ids[0]);
    let mut next = 0;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            bail!("no leader answered {request:?} within {limit:?}");
        }
        match copycat_net::admin_call(&target, request, left.min(Duration::from_secs(5))).await {
            Ok(AdminResponse::Failed(AdminFailure::NotLeader {
                address: Some(leader),
                ..
            })) if leader != target => target = leader,
            Ok(AdminResponse::Failed(AdminFailure::NotLeader { .. })) | Err(_) => {
                next = (next + 1) % ids.len();
                target = node_addr(ids[next]);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(answer) => return Ok(answer),
        }
    }
}

/// The last `lines` lines of `path` (for a report about a crashed server).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Create (or truncate) a file for a run artifact.
pub fn create(path: &Path) -> Result<File> {
    File::create(path).with_context(|| format!("creating {}", path.display()))
}
