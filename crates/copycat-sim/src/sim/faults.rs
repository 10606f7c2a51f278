//! The fault model, as named kinds with per-seed probabilities and
//! durations (swarm testing), and the code that injects and repairs them.
//!
//! Every seed draws, for each [`FaultKind`], whether it is on and how much
//! weight it gets, and a duration range; the plan is printed with the
//! parameters. Turning one kind off (`--without KIND`) replays the seed
//! without it, which tells whether that kind matters for a failure.
//!
//! Only faults a correct system must survive are injected: losing unsynced
//! writes, torn tails, message loss and delay, partitions of any shape,
//! paused processes, clock rates within the drift bound. Every network fault
//! is repaired on its own (its cut pairs are removed by its own heal event),
//! so faults overlap and end at different times.

use std::collections::BTreeSet;

use copycat_raft::{LogIndex, MemberRole, MembershipChange, NodeId};
use rand::Rng;

use super::world::{Event, Simulation};

/// A kind of fault. The names are what `--without` takes and what the
/// parameters print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// A server process dies: everything not synced is lost; it restarts
    /// after the fault's duration.
    Crash,
    /// A server dies right after it next saves a vote (a crash point where
    /// only what was made durable survives), and restarts at once.
    CrashAfterVote,
    /// Power fails while writes are on their way to the disk: unsynced data
    /// survives in part, in order, possibly with a garbled tail.
    PowerLoss,
    /// One server is cut off from every other server (clients still reach
    /// it).
    Isolate,
    /// The leader is cut off from every other server, clients still
    /// reaching it: the old leader goes on believing it leads (for ever
    /// without check-quorum) while the majority elects a new one.
    IsolateLeader,
    /// The servers split in two random halves (either may be the majority).
    Partition,
    /// Two halves plus one server that sees both sides.
    Bridge,
    /// Messages from one server to another are lost; the other direction
    /// works.
    OneWay,
    /// A server stops handling anything (a GC pause, SIGSTOP); its inputs
    /// wait for it.
    Pause,
    /// The leader, specifically, pauses: it wakes up believing it leads.
    PauseLeader,
    /// A client loses its connection to one server and must fail over.
    ClientCut,
    /// A membership change or leadership transfer on the leader (now and
    /// then two at once, of which a correct leader refuses the second).
    Churn,
    /// A server's wall clock (which stamps the entries it proposes as
    /// leader) jumps back or ahead by up to five election timeouts, as after
    /// a bad NTP step; the replicated clock must still never go back.
    ClockJump,
}

impl FaultKind {
    /// Every kind, in a fixed order (the order the plan is drawn in).
    pub const ALL: [FaultKind; 13] = [
        FaultKind::Crash,
        FaultKind::CrashAfterVote,
        FaultKind::PowerLoss,
        FaultKind::Isolate,
        FaultKind::IsolateLeader,
        FaultKind::Partition,
        FaultKind::Bridge,
        FaultKind::OneWay,
        FaultKind::Pause,
        FaultKind::PauseLeader,
        FaultKind::ClientCut,
        FaultKind::Churn,
        FaultKind::ClockJump,
    ];

    /// The kind's name on the command line and in printed parameters.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::CrashAfterVote => "crash-after-vote",
            FaultKind::PowerLoss => "power-loss",
            FaultKind::Isolate => "isolate",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::Partition => "partition",
            FaultKind::Bridge => "bridge",
            FaultKind::OneWay => "one-way",
            FaultKind::Pause => "pause",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::ClientCut => "client-cut",
            FaultKind::Churn => "churn",
            FaultKind::ClockJump => "clock-jump",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Whether the fault cuts network links (and is repaired by a heal).
    fn is_network(self) -> bool {
        matches!(
            self,
            FaultKind::Isolate
                | FaultKind::IsolateLeader
                | FaultKind::Partition
                | FaultKind::Bridge
                | FaultKind::OneWay
                | FaultKind::ClientCut
        )
    }
}

/// How one kind of fault behaves in a seed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultSetting {
    /// Relative weight when a fault is due (0: off in this seed).
    pub weight: f64,
    /// Shortest duration (ms) before the fault is repaired.
    pub duration_min_ms: u64,
    /// Longest duration (ms).
    pub duration_max_ms: u64,
}

/// The seed's fault plan: a setting per kind, in [`FaultKind::ALL`] order.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    /// Settings, indexed like [`FaultKind::ALL`].
    pub settings: Vec<(FaultKind, FaultSetting)>,
}

impl FaultPlan {
    /// Draw a plan: each kind is on with probability 3/4 (so seeds differ in
    /// which faults they combine), with a weight, and a duration profile of
    /// short (under an election timeout), medium (one to six) or long (six
    /// to twenty-five election timeouts: long enough for the majority to
    /// move on while the minority keeps serving what it can).
    pub fn draw(rng: &mut impl Rng, election_timeout_ms: u64, nodes: u64, churn: bool) -> Self {
        let t = election_timeout_ms;
        let settings = FaultKind::ALL
            .into_iter()
            .map(|kind| {
                let possible = match kind {
                    // A single server has no peers to be cut from.
                    FaultKind::Isolate
                    | FaultKind::IsolateLeader
                    | FaultKind::Partition
                    | FaultKind::OneWay => nodes > 1,
                    FaultKind::Bridge => nodes > 2,
                    FaultKind::Churn => churn,
                    _ => true,
                };
                let on = possible && rng.gen_bool(0.75);
                let weight = if on { rng.gen_range(0.2..1.0) } else { 0.0 };
                let (duration_min_ms, duration_max_ms) = match rng.gen_range(0..10) {
                    0..=2 => (1, t),
                    3..=6 => (t, 6 * t),
                    _ => (6 * t, 25 * t),
                };
                (
                    kind,
                    FaultSetting {
                        weight,
                        duration_min_ms,
                        duration_max_ms,
                    },
                )
            })
            .collect();
        Self { settings }
    }

    /// The setting of `kind`.
    pub fn setting(&self, kind: FaultKind) -> FaultSetting {
        self.settings
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, s)| *s)
            .expect("every kind has a setting")
    }

    /// Turn `kind` off.
    pub fn disable(&mut self, kind: FaultKind) {
        for (k, setting) in &mut self.settings {
            if *k == kind {
                setting.weight = 0.0;
            }
        }
    }

    fn total_weight(&self) -> f64 {
        self.settings.iter().map(|(_, s)| s.weight).sum()
    }
}

impl std::fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (kind, setting) in &self.settings {
            if setting.weight == 0.0 {
                continue;
            }
            if !first {
                write!(f, " ")?;
            }
            first = false;
            write!(
                f,
                "{}={:.2}@{}..{}ms",
                kind.name(),
                setting.weight,
                setting.duration_min_ms,
                setting.duration_max_ms
            )?;
        }
        if first {
            write!(f, "none")?;
        }
        Ok(())
    }
}

/// The network links cut by the faults in effect, each fault's links kept
/// apart so that it is repaired on its own.
#[derive(Debug, Default)]
pub struct Cuts {
    /// Fault id to the server pairs `(from, to)` it cuts.
    servers: Vec<(u64, BTreeSet<(usize, usize)>)>,
    /// Fault id to the `(client, server)` pairs it cuts.
    clients: Vec<(u64, (usize, usize))>,
}

impl Cuts {
    /// Whether messages from server `from` to server `to` are lost.
    pub fn server_cut(&self, from: usize, to: usize) -> bool {
        self.servers
            .iter()
            .any(|(_, pairs)| pairs.contains(&(from, to)))
    }

    /// Whether `client` and `server` cannot reach each other.
    pub fn client_cut(&self, client: usize, server: usize) -> bool {
        self.clients
            .iter()
            .any(|(_, pair)| *pair == (client, server))
    }

    /// Repair the fault `id`.
    pub fn heal(&mut self, id: u64) {
        self.servers.retain(|(fault, _)| *fault != id);
        self.clients.retain(|(fault, _)| *fault != id);
    }

    /// Repair everything.
    pub fn clear(&mut self) {
        self.servers.clear();
        self.clients.clear();
    }

    /// Whether any link is cut.
    pub fn any(&self) -> bool {
        !self.servers.is_empty() || !self.clients.is_empty()
    }
}

impl Simulation {
    /// Pick a fault kind by the plan's weights and inject it.
    pub(super) fn inject_fault(&mut self) {
        let plan = self.params.faults.clone();
        let total = plan.total_weight();
        if total <= 0.0 {
            return;
        }
        let mut pick = self.rng.gen_range(0.0..total);
        let mut chosen = None;
        for (kind, setting) in &plan.settings {
            if setting.weight == 0.0 {
                continue;
            }
            if pick < setting.weight {
                chosen = Some((*kind, *setting));
                break;
            }
            pick -= setting.weight;
        }
        let Some((kind, setting)) = chosen.or_else(|| {
            plan.settings
                .iter()
                .rev()
                .find(|(_, s)| s.weight > 0.0)
                .copied()
        }) else {
            return;
        };
        let duration = self
            .rng
            .gen_range(setting.duration_min_ms..=setting.duration_max_ms.max(1));
        self.stats.faults += 1;
        *self.stats.faults_by_kind.entry(kind.name()).or_default() += 1;
        self.inject(kind, duration);
    }

    fn inject(&mut self, kind: FaultKind, duration: u64) {
        let nodes = self.nodes.len();
        let node = self.rng.gen_range(0..nodes);
        let id = self.nodes[node].id;
        self.next_fault += 1;
        let fault = self.next_fault;
        let mut cut: BTreeSet<(usize, usize)> = BTreeSet::new();
        let isolate = |cut: &mut BTreeSet<(usize, usize)>, node: usize| {
            for other in 0..nodes {
                if other != node {
                    cut.insert((node, other));
                    cut.insert((other, node));
                }
            }
        };
        match kind {
            FaultKind::Crash => {
                self.crash(node, false);
                self.schedule(duration, Event::Restart { node });
            }
            FaultKind::CrashAfterVote => {
                self.trace(format_args!("{id:?} will crash after its next vote"));
                self.nodes[node].crash_after_vote = true;
            }
            FaultKind::PowerLoss => {
                // Prefer a server with writes waiting for their sync: that
                // is where a power loss tears something.
                let writing: Vec<usize> = (0..nodes)
                    .filter(|n| {
                        self.nodes[*n]
                            .live
                            .as_ref()
                            .is_some_and(|l| l.sync_scheduled)
                    })
                    .collect();
                let node = if writing.is_empty() {
                    node
                } else {
                    writing[self.rng.gen_range(0..writing.len())]
                };
                self.power_loss(node, duration);
            }
            FaultKind::Isolate => {
                self.trace(format_args!(
                    "fault {fault}: isolate {id:?} for {duration}ms"
                ));
                isolate(&mut cut, node);
            }
            FaultKind::IsolateLeader => {
                if let Some(leader) = self.current_leader() {
                    isolate(&mut cut, leader);
                    // Half the time some clients are on the old leader's
                    // side: they can reach only it, and keep reading from it
                    // while the majority elects a new leader and moves on.
                    let stranded: Vec<usize> = if self.rng.gen_bool(0.5) {
                        (0..self.clients.len())
                            .filter(|_| self.rng.gen_bool(0.4))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    self.trace(format_args!(
                        "fault {fault}: isolate leader n{} with clients {stranded:?} for {duration}ms",
                        leader + 1
                    ));
                    for client in stranded {
                        for other in (0..nodes).filter(|n| *n != leader) {
                            self.cuts.clients.push((fault, (client, other)));
                        }
                    }
                }
            }
            FaultKind::Partition => {
                let left: Vec<usize> = (0..nodes).filter(|_| self.rng.gen_bool(0.5)).collect();
                self.trace(format_args!(
                    "fault {fault}: partition {left:?} from the rest for {duration}ms"
                ));
                for a in 0..nodes {
                    for b in 0..nodes {
                        if left.contains(&a) != left.contains(&b) {
                            cut.insert((a, b));
                        }
                    }
                }
            }
            FaultKind::Bridge => {
                // `node` is the bridge; the others split in two halves that
                // only reach each other through it.
                let left: Vec<usize> = (0..nodes)
                    .filter(|n| *n != node && self.rng.gen_bool(0.5))
                    .collect();
                self.trace(format_args!(
                    "fault {fault}: bridge {id:?} between {left:?} and the rest for {duration}ms"
                ));
                for a in 0..nodes {
                    for b in 0..nodes {
                        if a != node && b != node && left.contains(&a) != left.contains(&b) {
                            cut.insert((a, b));
                        }
                    }
                }
            }
            FaultKind::OneWay => {
                let other = self.rng.gen_range(0..nodes);
                if other != node {
                    self.trace(format_args!(
                        "fault {fault}: cut {id:?} -> n{} for {duration}ms",
                        other + 1
                    ));
                    cut.insert((node, other));
                }
            }
            FaultKind::Pause => {
                if self.nodes[node].live.is_some() && !self.nodes[node].paused {
                    self.trace(format_args!("pause {id:?} for {duration}ms"));
                    self.nodes[node].paused = true;
                    self.schedule(duration, Event::Unpause { node });
                }
            }
            FaultKind::PauseLeader => {
                if let Some(leader) = self.current_leader() {
                    if !self.nodes[leader].paused {
                        self.trace(format_args!(
                            "pause leader n{} for {duration}ms",
                            leader + 1
                        ));
                        self.nodes[leader].paused = true;
                        self.schedule(duration, Event::Unpause { node: leader });
                    }
                }
            }
            FaultKind::ClientCut => {
                let client = self.rng.gen_range(0..self.clients.len());
                self.trace(format_args!(
                    "fault {fault}: cut client {client} from {id:?} for {duration}ms"
                ));
                self.cuts.clients.push((fault, (client, node)));
                self.schedule(duration, Event::Heal { fault });
            }
            FaultKind::Churn => {
                self.churn();
                if self.rng.gen_bool(0.3) {
                    self.churn();
                }
            }
            FaultKind::ClockJump => {
                let t = self.params.election_timeout_ms as i64;
                let jump = self.rng.gen_range(-5 * t..=5 * t);
                self.trace(format_args!("{id:?} wall clock jumps {jump}ms"));
                self.nodes[node].wall_skew_ms += jump;
            }
        }
        if kind.is_network() && !cut.is_empty() {
            self.cuts.servers.push((fault, cut));
            self.schedule(duration, Event::Heal { fault });
        }
    }

    /// Power fails on `node`: some unsynced data survives, part of it maybe
    /// garbage; recovery must keep only whole, valid records. It restarts
    /// after `restart_after` ms.
    pub(super) fn power_loss(&mut self, node: usize, restart_after: u64) {
        if self.rng.gen_bool(0.5) {
            self.corrupt_unsynced_tail(node);
        }
        self.crash(node, true);
        self.schedule(restart_after, Event::Restart { node });
    }

    /// The live server that believes it leads the highest term.
    pub(super) fn current_leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|n| {
                self.nodes[*n]
                    .live
                    .as_ref()
                    .is_some_and(|l| l.shell.server().raft().is_leader())
            })
            .max_by_key(|n| {
                self.nodes[*n]
                    .live
                    .as_ref()
                    .map(|l| l.shell.server().raft().term())
            })
    }

    /// A membership change on the leader, guarded by a compare-and-set on
    /// the configuration version: demote a voter to passive or reserve,
    /// remove it, add a server back as a voter, or transfer leadership.
    fn churn(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let nodes = self.nodes.len() as u64;
        let target = NodeId(self.rng.gen_range(1..=nodes));
        let choice = self.rng.gen_range(0..5);
        let live = self.nodes[leader].live.as_mut().expect("live leader");
        let (version, config) = live.shell.server().raft().configuration();
        let role = config.role(target);
        let raft = live.shell.server_mut().raft_mut();
        let voter = role == Some(MemberRole::Voter);
        let result = match choice {
            0 => raft
                .transfer_leadership(target)
                .map(|_| LogIndex::ZERO)
                .map_err(|e| e.to_string()),
            1 if voter => raft
                .change_membership(MembershipChange::AddPassive(target), Some(version))
                .map_err(|e| e.to_string()),
            2 if voter => raft
                .change_membership(MembershipChange::Remove(target), Some(version))
                .map_err(|e| e.to_string()),
            3 if voter => raft
                .change_membership(MembershipChange::AddReserve(target), Some(version))
                .map_err(|e| e.to_string()),
            _ => raft
                .change_membership(MembershipChange::AddVoter(target), Some(version))
                .map_err(|e| e.to_string()),
        };
        let leader_id = self.nodes[leader].id;
        self.trace(format_args!(
            "churn on {leader_id:?}: change {choice} for {target:?} -> {result:?}"
        ));
        self.process(leader);
    }
}
