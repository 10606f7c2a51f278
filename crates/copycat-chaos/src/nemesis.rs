//! Nemeses: the faults a run injects, alone or two at once, on a schedule.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use copycat_proto::{AdminRequest, AdminResponse, MemberKind};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::Mutex;

use crate::cluster::{self, node_addr, Cluster};
use crate::net::Firewall;
use crate::proxy::Proxy;
use crate::recorder::Recorder;

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Nemesis {
    /// One random server cut off from the others.
    PartitionOne,
    /// The leader cut off from the others.
    PartitionLeader,
    /// A random minority cut off from the majority.
    PartitionHalves,
    /// Two halves that only one server (the bridge) sees both of.
    Bridge,
    /// Every server sees a majority, but no two the same one.
    Ring,
    /// A share of the packets from one server to another lost, one way.
    OneWayLoss,
    /// kill -9 a server (sometimes the leader), restart it at the heal.
    Kill,
    /// SIGSTOP a server (sometimes the leader), SIGCONT at the heal.
    Pause,
    /// kill -9 a server, then cut its files back to what it had synced
    /// (garbling part of the unsynced tails), as a power failure would;
    /// restart it at the heal. Needs a copycat built with `sync-tracking`.
    PowerLoss,
    /// Skew a server's wall clock, or make it jump (libfaketime).
    Clock,
    /// Transfer leadership, demote and promote, remove and re-add servers.
    Membership,
    /// Fill the disk of the server whose data directory is on a small
    /// filesystem of its own; free it at the heal.
    DiskFull,
    /// Delay every frame on some links (fixed plus jitter), through the
    /// proxy.
    Delay,
    /// Deliver a share of the frames on some links twice, through the
    /// proxy.
    Duplicate,
    /// Deliver a share of the frames on some links after the frame that
    /// followed them, through the proxy.
    Reorder,
    /// Reset (RST both sides) the connections of some links every so
    /// often, through the proxy.
    Reset,
}

/// What a nemesis acts on; two faults strike together only if their kinds
/// differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Partitions and loss (iptables, or the proxy's dropped links).
    Partition,
    /// The proxy's faults on live links.
    Link,
    /// Processes, clocks, disks, membership.
    Other,
}

impl Nemesis {
    /// Every nemesis, in the order `--nemesis all` lists them.
    pub const ALL: &'static [Nemesis] = &[
        Nemesis::PartitionOne,
        Nemesis::PartitionLeader,
        Nemesis::PartitionHalves,
        Nemesis::Bridge,
        Nemesis::Ring,
        Nemesis::OneWayLoss,
        Nemesis::Kill,
        Nemesis::Pause,
        Nemesis::PowerLoss,
        Nemesis::Clock,
        Nemesis::Membership,
        Nemesis::DiskFull,
        Nemesis::Delay,
        Nemesis::Duplicate,
        Nemesis::Reorder,
        Nemesis::Reset,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Nemesis::PartitionOne => "partition-one",
            Nemesis::PartitionLeader => "partition-leader",
            Nemesis::PartitionHalves => "partition-halves",
            Nemesis::Bridge => "bridge",
            Nemesis::Ring => "ring",
            Nemesis::OneWayLoss => "one-way-loss",
            Nemesis::Kill => "kill",
            Nemesis::Pause => "pause",
            Nemesis::PowerLoss => "power-loss",
            Nemesis::Clock => "clock",
            Nemesis::Membership => "membership",
            Nemesis::DiskFull => "disk-full",
            Nemesis::Delay => "delay",
            Nemesis::Duplicate => "duplicate",
            Nemesis::Reorder => "reorder",
            Nemesis::Reset => "reset",
        }
    }

    /// What it acts on.
    pub fn kind(self) -> Kind {
        if self.is_network() {
            Kind::Partition
        } else if self.is_link() {
            Kind::Link
        } else {
            Kind::Other
        }
    }

    /// Whether it is one of the proxy's faults on live links (`link`).
    pub fn is_link(self) -> bool {
        matches!(
            self,
            Nemesis::Delay | Nemesis::Duplicate | Nemesis::Reorder | Nemesis::Reset
        )
    }

    /// Whether it partitions or loses packets (`partition`): iptables in a
    /// namespace, the proxy on the host.
    pub fn is_network(self) -> bool {
        matches!(
            self,
            Nemesis::PartitionOne
                | Nemesis::PartitionLeader
                | Nemesis::PartitionHalves
                | Nemesis::Bridge
                | Nemesis::Ring
                | Nemesis::OneWayLoss
        )
    }

    /// Parse a comma-separated list: names, `partition` (every partition
    /// and loss), `link` (every proxy fault on live links), `none`, or
    /// `all`.
    pub fn parse_list(text: &str) -> Result<Vec<Nemesis>> {
        let mut list = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "all" => list.extend_from_slice(Nemesis::ALL),
                "none" => {}
                "partition" => list.extend(Nemesis::ALL.iter().filter(|n| n.is_network())),
                "link" => list.extend(Nemesis::ALL.iter().filter(|n| n.is_link())),
                name => list.push(name.parse()?),
            }
        }
        list.sort();
        list.dedup();
        Ok(list)
    }
}

impl fmt::Display for Nemesis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Nemesis {
    type Err = anyhow::Error;

    fn from_str(name: &str) -> Result<Self> {
        match Nemesis::ALL.iter().find(|n| n.name() == name) {
            Some(n) => Ok(*n),
            None => {
                let names: Vec<&str> = Nemesis::ALL.iter().map(|n| n.name()).collect();
                bail!(
                    "unknown nemesis {name:?}: expected all, none, partition, link or one of {}",
                    names.join(", ")
                )
            }
        }
    }
}

/// A fault that was in force from `start_ms` to `end_ms`.
#[derive(Clone, Debug)]
pub struct FaultWindow {
    /// Which nemesis.
    pub nemesis: Nemesis,
    /// What exactly it did ("isolated 2", "killed 1 (leader)").
    pub detail: String,
    /// When it began (ms since the run began).
    pub start_ms: u64,
    /// When it was healed.
    pub end_ms: u64,
}

/// How to undo a fault.
enum Undo {
    Heal,
    Restart(u64),
    Resume(u64),
    ClockReset(u64),
    Promote(u64),
    Rejoin(u64),
    FreeDisk(std::path::PathBuf),
    HealLinks(Vec<(u64, u64)>),
    Nothing,
}

/// Shared state of the faults.
pub struct Faults {
    /// The cluster.
    pub cluster: Arc<Mutex<Cluster>>,
    /// Its packet filters.
    pub firewall: Mutex<Firewall>,
    /// The proxy every peer connection goes through.
    pub proxy: Arc<Proxy>,
    /// Windows of the faults so far.
    pub windows: std::sync::Mutex<Vec<FaultWindow>>,
    /// Things that went wrong injecting or healing faults (not failures of
    /// the system under test by themselves).
    pub errors: std::sync::Mutex<Vec<String>>,
    /// The run's clock.
    pub recorder: Recorder,
    /// The election timeout (faults last a few of them).
    pub election_timeout: Duration,
    /// Faults injected so far.
    pub seen: Arc<AtomicU64>,
    /// Faults in effect now.
    pub active: Arc<AtomicU64>,
    /// When a fault last ended (ms on the run's clock).
    pub last_healed_ms: Arc<AtomicU64>,
}

impl Faults {
    fn ids(cluster: &Cluster) -> Vec<u64> {
        cluster.nodes.keys().copied().collect()
    }

    async fn pick_target(&self, rng: &mut ChaCha8Rng, ids: &[u64]) -> (u64, &'static str) {
        if rng.gen_bool(0.5) {
            if let Some(leader) = cluster::leader(ids, Duration::from_millis(500)).await {
                return (leader, " (leader)");
            }
        }
        (*ids.choose(rng).expect("servers"), "")
    }

    /// Inject one `nemesis`; returns what it did and how to undo it.
    async fn inject(&self, nemesis: Nemesis, rng: &mut ChaCha8Rng) -> Result<(String, Undo)> {
        let ids = Self::ids(&*self.cluster.lock().await);
        let n = ids.len();
        match nemesis {
            Nemesis::PartitionOne | Nemesis::PartitionLeader => {
                let (target, tag) = if nemesis == Nemesis::PartitionLeader {
                    match cluster::leader(&ids, Duration::from_millis(500)).await {
                        Some(leader) => (leader, " (leader)"),
                        None => (*ids.choose(rng).expect("servers"), " (no leader known)"),
                    }
                } else {
                    (*ids.choose(rng).expect("servers"), "")
                };
                let rest: Vec<u64> = ids.iter().copied().filter(|id| *id != target).collect();
                self.firewall
                    .lock()
                    .await
                    .partition(&[vec![target], rest.clone()])?;
                Ok((format!("isolated {target}{tag} from {rest:?}"), Undo::Heal))
            }
            Nemesis::PartitionHalves => {
                let mut shuffled = ids.clone();
                shuffled.shuffle(rng);
                let minority = shuffled[..(n - 1) / 2].to_vec();
                let majority = shuffled[(n - 1) / 2..].to_vec();
                self.firewall
                    .lock()
                    .await
                    .partition(&[minority.clone(), majority.clone()])?;
                Ok((format!("halves {minority:?} | {majority:?}"), Undo::Heal))
            }
            Nemesis::Bridge => {
                let mut shuffled = ids.clone();
                shuffled.shuffle(rng);
                let bridge = shuffled[n / 2];
                let left: Vec<u64> = shuffled[..n / 2].to_vec();
                let right: Vec<u64> = shuffled[n / 2 + 1..].to_vec();
                let mut firewall = self.firewall.lock().await;
                for a in &left {
                    for b in &right {
                        firewall.drop_packets(*a, *b)?;
                        firewall.drop_packets(*b, *a)?;
                    }
                }
                Ok((
                    format!("bridge {bridge} between {left:?} and {right:?}"),
                    Undo::Heal,
                ))
            }
            Nemesis::Ring => {
                // Servers on a ring each see their neighbours up to distance
                // d, so each sees a majority (2d + 1 > n / 2) and no two see
                // the same one. With three servers that is the bridge.
                let mut ring = ids.clone();
                ring.shuffle(rng);
                let d = (n / 2).div_ceil(2).max(1);
                let mut firewall = self.firewall.lock().await;
                for i in 0..n {
                    for j in 0..n {
                        let distance = (i as isize - j as isize).unsigned_abs();
                        let distance = distance.min(n - distance);
                        if distance > d {
                            firewall.drop_packets(ring[i], ring[j])?;
                        }
                    }
                }
                if firewall.cut.is_empty() && n >= 3 {
                    firewall.drop_packets(ring[0], ring[n - 1])?;
                    firewall.drop_packets(ring[n - 1], ring[0])?;
                }
                let cut: Vec<_> = firewall.cut.iter().filter(|(a, b)| a < b).collect();
                Ok((format!("ring {ring:?}, links cut {cut:?}"), Undo::Heal))
            }
            Nemesis::OneWayLoss => {
                let (from, tag) = self.pick_target(rng, &ids).await;
                let share = [0.3, 0.6, 0.9][rng.gen_range(0..3)];
                let mut firewall = self.firewall.lock().await;
                for to in ids.iter().filter(|id| **id != from) {
                    firewall.lose_packets(from, *to, share)?;
                }
                Ok((
                    format!("{:.0}% of packets from {from}{tag} lost", share * 100.0),
                    Undo::Heal,
                ))
            }
            Nemesis::Kill => {
                let (target, tag) = self.pick_target(rng, &ids).await;
                self.cluster.lock().await.kill(target);
                Ok((
                    format!("killed {target}{tag} (SIGKILL)"),
                    Undo::Restart(target),
                ))
            }
            Nemesis::PowerLoss => {
                let (target, tag) = self.pick_target(rng, &ids).await;
                let mut cluster = self.cluster.lock().await;
                cluster.kill(target);
                let dir = cluster.nodes[&target].data_dir.clone();
                let report = copycat_storage::power_loss::simulate(&dir, rng.gen())
                    .map_err(|error| anyhow::anyhow!("power loss on {target}: {error}"))?;
                Ok((
                    format!(
                        "power loss on {target}{tag}: {} files cut ({} bytes dropped, {} garbled), {} removed, {} renames undone",
                        report.files_cut.len(),
                        report.bytes_dropped,
                        report.bytes_garbled,
                        report.files_removed.len(),
                        report.renames_undone.len()
                    ),
                    Undo::Restart(target),
                ))
            }
            Nemesis::Pause => {
                let (target, tag) = self.pick_target(rng, &ids).await;
                self.cluster.lock().await.pause(target)?;
                Ok((
                    format!("paused {target}{tag} (SIGSTOP)"),
                    Undo::Resume(target),
                ))
            }
            Nemesis::Clock => {
                let cluster = self.cluster.lock().await;
                if cluster.spec.faketime.is_none() {
                    return Ok(("clock faults skipped: no libfaketime".into(), Undo::Nothing));
                }
                let (target, tag) = {
                    drop(cluster);
                    self.pick_target(rng, &ids).await
                };
                let cluster = self.cluster.lock().await;
                let offset: i64 = match rng.gen_range(0..4) {
                    0 => rng.gen_range(-60_000..-5_000),
                    1 => rng.gen_range(5_000..60_000),
                    2 => rng.gen_range(-800..-50),
                    _ => rng.gen_range(50..800),
                };
                cluster.set_clock_offset(target, offset)?;
                Ok((
                    format!("clock of {target}{tag} jumped {offset:+} ms"),
                    Undo::ClockReset(target),
                ))
            }
            Nemesis::Membership => self.membership(rng, &ids).await,
            Nemesis::Delay | Nemesis::Duplicate | Nemesis::Reorder | Nemesis::Reset => {
                self.link_fault(nemesis, rng, &ids).await
            }
            Nemesis::DiskFull => {
                let cluster = self.cluster.lock().await;
                let Some((id, mount)) = cluster.small_disk.clone() else {
                    return Ok((
                        "disk faults skipped: no small filesystem".into(),
                        Undo::Nothing,
                    ));
                };
                let filler = mount.join("filler");
                let written = fill(&filler)?;
                Ok((
                    format!("filled the disk of {id} ({} MiB of filler)", written >> 20),
                    Undo::FreeDisk(filler),
                ))
            }
        }
    }

    /// A proxy fault on the links from and to one server (often the
    /// leader), or on every link.
    async fn link_fault(
        &self,
        nemesis: Nemesis,
        rng: &mut ChaCha8Rng,
        ids: &[u64],
    ) -> Result<(String, Undo)> {
        let (links, scope) = if rng.gen_bool(0.5) {
            let (target, tag) = self.pick_target(rng, ids).await;
            let links: Vec<(u64, u64)> = ids
                .iter()
                .filter(|id| **id != target)
                .flat_map(|other| [(target, *other), (*other, target)])
                .collect();
            (links, format!("links of {target}{tag}"))
        } else {
            let links: Vec<(u64, u64)> = ids
                .iter()
                .flat_map(|a| ids.iter().filter(move |b| *b != a).map(move |b| (*a, *b)))
                .collect();
            (links, "every link".to_string())
        };
        let detail = match nemesis {
            Nemesis::Delay => {
                let delay = Duration::from_millis(rng.gen_range(5..=150));
                let jitter = delay.mul_f64(rng.gen_range(0.0..1.0));
                for (from, to) in &links {
                    self.proxy.set(*from, *to, |f| {
                        f.delay = delay;
                        f.jitter = jitter;
                    });
                }
                format!(
                    "{scope}: frames delayed {} ms + up to {} ms",
                    delay.as_millis(),
                    jitter.as_millis()
                )
            }
            Nemesis::Duplicate => {
                let share = [0.1, 0.3, 0.5][rng.gen_range(0..3)];
                for (from, to) in &links {
                    self.proxy.set(*from, *to, |f| f.duplicate = share);
                }
                format!("{scope}: {:.0}% of frames delivered twice", share * 100.0)
            }
            Nemesis::Reorder => {
                let share = [0.1, 0.3, 0.5][rng.gen_range(0..3)];
                for (from, to) in &links {
                    self.proxy.set(*from, *to, |f| f.reorder = share);
                }
                format!(
                    "{scope}: {:.0}% of frames delivered after the next one",
                    share * 100.0
                )
            }
            _ => {
                let every = Duration::from_millis(rng.gen_range(200..=1500));
                for (from, to) in &links {
                    self.proxy.reset(*from, *to);
                    self.proxy.set(*from, *to, |f| f.reset_every = Some(every));
                }
                format!(
                    "{scope}: connections reset now and about every {} ms",
                    every.as_millis()
                )
            }
        };
        Ok((detail, Undo::HealLinks(links)))
    }

    async fn membership(&self, rng: &mut ChaCha8Rng, ids: &[u64]) -> Result<(String, Undo)> {
        let limit = self.election_timeout * 20;
        let leader = cluster::leader(ids, Duration::from_millis(500)).await;
        let others: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| Some(*id) != leader)
            .collect();
        let target = *others.choose(rng).expect("servers");
        match rng.gen_range(0..3) {
            0 => {
                let answer = cluster::leader_call(
                    ids,
                    &AdminRequest::TransferLeadership { to: Some(target) },
                    limit,
                )
                .await?;
                Ok((
                    format!("leadership transfer to {target}: {}", describe(&answer)),
                    Undo::Nothing,
                ))
            }
            1 => {
                let answer = cluster::leader_call(
                    ids,
                    &AdminRequest::SetKind {
                        id: target,
                        kind: MemberKind::Passive,
                    },
                    limit,
                )
                .await?;
                // Refused (not a member: removed meanwhile): nothing to undo.
                let undo = if matches!(answer, AdminResponse::Done) {
                    Undo::Promote(target)
                } else {
                    Undo::Nothing
                };
                Ok((
                    format!("demoted {target} to passive: {}", describe(&answer)),
                    undo,
                ))
            }
            _ => {
                let answer =
                    cluster::leader_call(ids, &AdminRequest::Remove { id: target }, limit).await?;
                if !matches!(answer, AdminResponse::Done) {
                    return Ok((
                        format!("remove {target}: {}", describe(&answer)),
                        Undo::Nothing,
                    ));
                }
                let through = leader.filter(|l| *l != target).unwrap_or_else(|| {
                    *ids.iter()
                        .find(|id| **id != target)
                        .expect("another server")
                });
                let mut cluster = self.cluster.lock().await;
                cluster.kill(target);
                let node = cluster.nodes.get_mut(&target).expect("node");
                std::fs::remove_dir_all(&node.data_dir)?;
                std::fs::create_dir_all(&node.data_dir)?;
                node.join = Some(node_addr(through));
                Ok((
                    format!("removed {target} (data wiped, rejoins at the heal)"),
                    Undo::Rejoin(target),
                ))
            }
        }
    }

    /// Stop server `id`, wipe its data directory and start it again with
    /// `--join` through another server, to be added afresh.
    async fn rejoin(&self, id: u64, ids: &[u64]) -> Result<()> {
        let mut cluster = self.cluster.lock().await;
        cluster.kill(id);
        let through = *ids
            .iter()
            .find(|other| **other != id)
            .expect("another server");
        let node = cluster.nodes.get_mut(&id).expect("node");
        std::fs::remove_dir_all(&node.data_dir)?;
        std::fs::create_dir_all(&node.data_dir)?;
        node.join = Some(node_addr(through));
        cluster.start(id)
    }

    async fn undo(&self, undo: Undo) -> Result<()> {
        match undo {
            Undo::Heal => self.firewall.lock().await.heal(),
            Undo::Restart(id) | Undo::Rejoin(id) => {
                let mut cluster = self.cluster.lock().await;
                if !cluster.is_running(id) {
                    cluster.start(id)?;
                }
                Ok(())
            }
            Undo::Resume(id) => self.cluster.lock().await.resume(id),
            Undo::ClockReset(id) => self.cluster.lock().await.set_clock_offset(id, 0),
            Undo::Promote(id) => {
                let ids = Self::ids(&*self.cluster.lock().await);
                let answer = cluster::leader_call(
                    &ids,
                    &AdminRequest::SetKind {
                        id,
                        kind: MemberKind::Voter,
                    },
                    self.election_timeout * 20,
                )
                .await?;
                match answer {
                    AdminResponse::Done => Ok(()),
                    other => bail!("promoting {id} back to voter: {}", describe(&other)),
                }
            }
            Undo::FreeDisk(filler) => {
                std::fs::remove_file(&filler)?;
                Ok(())
            }
            Undo::HealLinks(links) => {
                for (from, to) in links {
                    self.proxy
                        .set(from, to, crate::proxy::LinkFaults::clear_link);
                }
                Ok(())
            }
            Undo::Nothing => Ok(()),
        }
    }

    /// Run faults from `nemeses` until `run_for` has passed: a quiet spell,
    /// then one fault (or two of different kinds at once), held a few
    /// election timeouts, then healed.
    pub async fn schedule(&self, nemeses: &[Nemesis], run_for: Duration, seed: u64) {
        use rand::SeedableRng;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let end = tokio::time::Instant::now() + run_for;
        if nemeses.is_empty() {
            tokio::time::sleep_until(end).await;
            return;
        }
        let unit = self.election_timeout;
        loop {
            let quiet = unit * rng.gen_range(2..5);
            if tokio::time::Instant::now() + quiet >= end {
                break;
            }
            tokio::time::sleep(quiet).await;
            let mut chosen = vec![*nemeses.choose(&mut rng).expect("nemeses")];
            if nemeses.len() > 1 && rng.gen_bool(0.3) {
                let second = *nemeses.choose(&mut rng).expect("nemeses");
                if second.kind() != chosen[0].kind() {
                    chosen.push(second);
                }
            }
            let mut active = Vec::new();
            for nemesis in chosen {
                let start_ms = self.recorder.now_ms();
                self.seen.fetch_add(1, Ordering::SeqCst);
                self.active.fetch_add(1, Ordering::SeqCst);
                match self.inject(nemesis, &mut rng).await {
                    Ok((detail, undo)) => active.push((nemesis, detail, start_ms, undo)),
                    Err(error) => {
                        self.active.fetch_sub(1, Ordering::SeqCst);
                        self.last_healed_ms
                            .store(self.recorder.now_ms(), Ordering::SeqCst);
                        self.error(format!("{nemesis}: {error:#}"))
                    }
                }
            }
            let hold = unit * rng.gen_range(3..9);
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(hold.min(left)).await;
            for (nemesis, detail, start_ms, undo) in active {
                if let Err(error) = self.undo(undo).await {
                    self.error(format!("healing {nemesis} ({detail}): {error:#}"));
                }
                self.active.fetch_sub(1, Ordering::SeqCst);
                self.last_healed_ms
                    .store(self.recorder.now_ms(), Ordering::SeqCst);
                self.windows.lock().expect("windows").push(FaultWindow {
                    nemesis,
                    detail,
                    start_ms,
                    end_ms: self.recorder.now_ms(),
                });
            }
            if tokio::time::Instant::now() >= end {
                break;
            }
        }
    }

    fn error(&self, message: String) {
        eprintln!("nemesis: {message}");
        self.errors.lock().expect("errors").push(message);
    }

    /// Undo everything: heal the network, resume and restart every server,
    /// reset the clocks, re-add removed servers and promote demoted ones.
    pub async fn heal_all(&self) -> Result<()> {
        self.firewall.lock().await.heal()?;
        self.proxy.heal_partitions();
        self.proxy.heal_links();
        let ids = {
            let mut cluster = self.cluster.lock().await;
            cluster.resume_all()?;
            let ids = Self::ids(&cluster);
            for id in &ids {
                cluster.set_clock_offset(*id, 0)?;
            }
            cluster.start_all()?;
            ids
        };
        // A demotion whose promotion failed, or a learner still catching
        // up: make every server a voter again.
        let deadline = tokio::time::Instant::now() + self.election_timeout * 40;
        let mut rejoined = std::collections::BTreeSet::new();
        loop {
            let statuses = cluster::statuses(&ids, Duration::from_secs(1)).await;
            let leader = statuses
                .values()
                .find(|s| s.state == copycat_proto::ServerState::Leader);
            let not_voters: Vec<u64> = match leader {
                Some(leader) => ids
                    .iter()
                    .copied()
                    .filter(|id| {
                        !leader
                            .members
                            .iter()
                            .any(|m| m.id == *id && m.kind == MemberKind::Voter)
                    })
                    .collect(),
                None => ids.clone(),
            };
            if leader.is_some() && not_voters.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("servers {not_voters:?} are not voters after the heal");
            }
            for id in &not_voters {
                let in_config = leader.is_some_and(|l| l.members.iter().any(|m| m.id == *id));
                if leader.is_some() && !in_config && rejoined.insert(*id) {
                    // Removed (a removal whose answer was lost still takes
                    // effect): wipe it and add it again.
                    self.rejoin(*id, &ids).await?;
                } else if in_config {
                    let _ = cluster::leader_call(
                        &ids,
                        &AdminRequest::SetKind {
                            id: *id,
                            kind: MemberKind::Voter,
                        },
                        Duration::from_secs(5),
                    )
                    .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

fn describe(answer: &AdminResponse) -> String {
    match answer {
        AdminResponse::Done => "done".into(),
        AdminResponse::Failed(failure) => failure.to_string(),
        other => format!("{other:?}"),
    }
}

/// Write zeroes to `path` until the filesystem is full; the bytes written.
fn fill(path: &std::path::Path) -> Result<u64> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(error) if error.raw_os_error() == Some(28) => break,
            Err(error) => return Err(error.into()),
        }
    }
    // Whatever fits in the last partial block too.
    let _ = file.write_all(&chunk[..4096]);
    let _ = file.sync_all();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemesis_lists_parse_names_groups_and_all() {
        assert_eq!(Nemesis::parse_list("all").unwrap(), Nemesis::ALL);
        assert!(Nemesis::parse_list("none").unwrap().is_empty());
        let partition = Nemesis::parse_list("partition").unwrap();
        assert!(partition.iter().all(|n| n.is_network()));
        assert_eq!(partition.len(), 6);
        assert_eq!(
            Nemesis::parse_list("kill, pause,kill").unwrap(),
            [Nemesis::Kill, Nemesis::Pause]
        );
        let link = Nemesis::parse_list("link").unwrap();
        assert_eq!(
            link,
            [
                Nemesis::Delay,
                Nemesis::Duplicate,
                Nemesis::Reorder,
                Nemesis::Reset
            ]
        );
        assert!(link.iter().all(|n| n.kind() == Kind::Link));
        assert!(Nemesis::ALL
            .iter()
            .all(|n| n.kind() != Kind::Link || link.contains(n)));
        assert_eq!(
            Nemesis::parse_list("delay,duplicate,reorder,reset").unwrap(),
            link
        );
        let error = Nemesis::parse_list("kill,explode").unwrap_err().to_string();
        assert!(
            error.contains("\"explode\"") && error.contains("partition-one"),
            "{error}"
        );
    }

    #[test]
    fn every_nemesis_name_round_trips() {
        for nemesis in Nemesis::ALL {
            assert_eq!(nemesis.name().parse::<Nemesis>().unwrap(), *nemesis);
        }
    }
}
