//! An in-memory cluster harness for tests, examples and benchmarks.
//!
//! [`Cluster`] runs several [`RawNode`]s in one thread with an in-memory
//! "disk" per node (what the node was told to persist, and nothing else), a
//! message queue standing for the network, and a tiny state machine that
//! records every applied command. The caller decides when messages are
//! delivered, dropped or duplicated, when time passes, when nodes crash and
//! restart. Cross-node safety checks live in [`Cluster::check_safety`].
//!
//! It is deliberately simple: the full simulator (with the real storage crate
//! over a fault-injecting disk) lives in `copycat-sim`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};

use crate::message::{Message, MessageBody};
use crate::node::RawNode;
use crate::ready::{ReadState, Ready, Role};
use crate::types::{
    Configuration, Entry, EntryPayload, HardState, LogIndex, NodeId, PersistentState, SnapshotMeta,
    Term, Time,
};
use crate::Config;

/// What one node has made durable.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    /// Term and vote.
    pub hard_state: HardState,
    /// Latest snapshot and its data.
    pub snapshot: SnapshotMeta,
    /// The state machine image of `snapshot`.
    pub snapshot_data: Bytes,
    /// Log entries, contiguous.
    pub entries: Vec<Entry>,
}

impl MemStorage {
    fn apply_ready(&mut self, ready: &Ready) {
        if let Some(hard_state) = ready.hard_state {
            self.hard_state = hard_state;
        }
        if let Some(meta) = &ready.snapshot {
            let keep = self
                .entries
                .iter()
                .any(|e| e.index == meta.index && e.term == meta.term);
            if keep {
                self.entries.retain(|e| e.index > meta.index);
            } else {
                self.entries.clear();
            }
            self.snapshot = meta.clone();
        }
        if let Some(first) = ready.entries.first() {
            self.entries.retain(|e| e.index < first.index);
            self.entries.extend(ready.entries.iter().cloned());
        }
        if let Some(purge) = ready.purge_to {
            self.entries.retain(|e| e.index > purge);
        }
    }

    /// The state a restarted node begins with.
    pub fn persistent_state(&self) -> PersistentState {
        PersistentState {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
        }
    }
}

/// One node of the harness.
#[derive(Clone, Debug)]
pub struct TestNode {
    /// The core.
    pub raw: RawNode,
    /// Its durable state.
    pub storage: MemStorage,
    /// The state machine: every command applied, with its index.
    pub applied: Vec<(LogIndex, Bytes)>,
    /// Index up to which the state machine has applied.
    pub applied_index: LogIndex,
    /// Read results received, by read id.
    pub reads: BTreeMap<u64, ReadState>,
    /// A snapshot being received.
    incoming: BytesMut,
    /// Whether the node is crashed.
    pub down: bool,
    /// The configuration it was created with (to restart it).
    config: Config,
}

/// A whole cluster in memory. See the module docs.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// Nodes by id.
    pub nodes: BTreeMap<NodeId, TestNode>,
    /// Current time.
    pub now: Time,
    /// Messages sent and not delivered yet, in send order.
    pub network: Vec<Message>,
    /// Pairs `(from, to)` whose messages are dropped.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Every (term, leader) pair ever observed: election safety says a term
    /// never has two leaders.
    pub leaders: BTreeMap<Term, NodeId>,
    /// Every entry ever committed (applied) anywhere, by index: state machine
    /// safety says no two servers apply different entries at one index.
    pub committed: BTreeMap<LogIndex, Entry>,
    /// Seed for node randomness.
    seed: u64,
    /// Lines describing what happened, drained by [`Cluster::take_trace`].
    trace: String,
    /// Whether to record traces (golden tests) or not (benchmarks).
    pub tracing: bool,
    /// Node configuration template (id is filled in per node).
    pub template: Config,
}

impl Cluster {
    /// A cluster of `voters` bootstrapped with all of them as voters.
    pub fn new(voters: &[u64], template: Config, seed: u64) -> Self {
        let mut cluster = Self {
            nodes: BTreeMap::new(),
            now: Time(0),
            network: Vec::new(),
            cut: BTreeSet::new(),
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            seed,
            trace: String::new(),
            tracing: true,
            template,
        };
        let membership = Configuration::with_voters(voters.iter().map(|id| NodeId(*id)));
        for id in voters {
            cluster.add_node(NodeId(*id), PersistentState::bootstrap(membership.clone()));
        }
        cluster
    }

    /// Add a node starting from `state` (an empty state for a server that
    /// will join an existing cluster).
    pub fn add_node(&mut self, id: NodeId, state: PersistentState) {
        let mut config = self.template.clone();
        config.id = id;
        let storage = MemStorage {
            hard_state: state.hard_state,
            snapshot: state.snapshot.clone(),
            snapshot_data: Bytes::new(),
            entries: state.entries.clone(),
        };
        let raw = RawNode::new(
            config.clone(),
            state,
            self.seed.wrapping_add(id.0),
            self.now,
        )
        .expect("valid test node");
        let applied_index = raw.applied_index();
        self.nodes.insert(
            id,
            TestNode {
                raw,
                storage,
                applied: Vec::new(),
                applied_index,
                reads: BTreeMap::new(),
                incoming: BytesMut::new(),
                down: false,
                config,
            },
        );
    }

    /// The node `id`.
    pub fn node(&self, id: u64) -> &TestNode {
        &self.nodes[&NodeId(id)]
    }

    /// The node `id`, mutably.
    pub fn node_mut(&mut self, id: u64) -> &mut TestNode {
        self.nodes.get_mut(&NodeId(id)).expect("no such node")
    }

    /// Record a line of trace.
    pub fn note(&mut self, line: impl AsRef<str>) {
        if self.tracing {
            self.trace.push_str(line.as_ref());
            self.trace.push('\n');
        }
    }

    /// Take the trace recorded so far.
    pub fn take_trace(&mut self) -> String {
        std::mem::take(&mut self.trace)
    }

    /// The current leader with the highest term, if any node leads.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| !n.down && n.raw.role() == Role::Leader)
            .max_by_key(|(_, n)| n.raw.term())
            .map(|(id, _)| *id)
    }

    /// Advance time by `ms` for every live node and process what follows
    /// (but deliver no messages).
    pub fn tick(&mut self, ms: u64) {
        self.now = self.now.plus_ms(ms);
        let now = self.now;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let node = self.nodes.get_mut(&id).expect("node");
            if !node.down {
                node.raw.tick(now);
            }
        }
        self.process_all();
    }

    /// Handle every node's `Ready`.
    pub fn process_all(&mut self) -> bool {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let mut any = false;
        for id in ids {
            any |= self.process(id);
        }
        any
    }

    /// Handle one node's `Ready` like a correct runtime: persist, send,
    /// apply, serve snapshot requests and install received snapshots.
    pub fn process(&mut self, id: NodeId) -> bool {
        let tracing = self.tracing;
        let node = self.nodes.get_mut(&id).expect("node");
        if node.down || !node.raw.has_ready() {
            return false;
        }
        let ready = node.raw.ready();
        let mut lines = Vec::new();
        if tracing {
            describe_ready(id, &ready, &mut lines);
        }
        node.storage.apply_ready(&ready);
        if let Some(last) = ready.entries.last() {
            node.raw.persisted(last.index, last.term);
        }
        let mut outgoing: Vec<Message> = ready.messages;
        outgoing.extend(ready.messages_after_persist);
        if let Some(soft) = ready.soft_state {
            if soft.role == Role::Leader {
                if let Some(previous) = self.leaders.insert(soft.term, id) {
                    assert_eq!(
                        previous, id,
                        "election safety: two leaders in term {:?}",
                        soft.term
                    );
                }
            }
        }
        for entry in &ready.committed_entries {
            assert_eq!(
                entry.index,
                node.applied_index.next(),
                "apply in order without gaps"
            );
            node.applied_index = entry.index;
            if let EntryPayload::Command(data) = &entry.payload {
                node.applied.push((entry.index, data.clone()));
            }
            match self.committed.get(&entry.index) {
                Some(existing) => assert_eq!(
                    existing, entry,
                    "state machine safety: {id:?} applied a different entry at {:?}",
                    entry.index
                ),
                None => {
                    self.committed.insert(entry.index, entry.clone());
                }
            }
        }
        for read in ready.read_states {
            node.reads.insert(read.id, read);
        }
        for chunk in ready.snapshot_chunks {
            if chunk.offset == 0 {
                node.incoming.clear();
            }
            node.incoming.extend_from_slice(&chunk.data);
            if chunk.done {
                let data = node.incoming.split().freeze();
                node.applied = decode_state(&data);
                node.applied_index = chunk.meta.index;
                node.storage.snapshot_data = data;
                node.raw
                    .snapshot_installed(&chunk.meta)
                    .expect("install requested snapshot");
                if tracing {
                    lines.push(format!("{id:?} installed snapshot {:?}", chunk.meta.index));
                }
            }
        }
        for request in ready.snapshot_requests {
            let data = &node.storage.snapshot_data;
            if node.storage.snapshot.index != request.meta.index {
                node.raw
                    .snapshot_unavailable(request.to, request.meta.index);
                continue;
            }
            let start = (request.offset as usize).min(data.len());
            let end = (start + request.max_bytes).min(data.len());
            let chunk = data.slice(start..end);
            let done = end == data.len();
            node.raw
                .snapshot_chunk(request.to, request.meta.index, request.offset, chunk, done);
        }
        node.raw.invariants();
        self.network.extend(outgoing);
        for line in lines {
            self.note(line);
        }
        true
    }

    /// Take a snapshot on node `id` at its applied index.
    pub fn snapshot(&mut self, id: u64) -> Option<SnapshotMeta> {
        let node = self.node_mut(id);
        let index = node.applied_index;
        let meta = node.raw.snapshot_taken(index).ok()?;
        node.storage.snapshot_data = encode_state(&node.applied);
        node.storage.snapshot = meta.clone();
        // Storage purge arrives through the next Ready.
        Some(meta)
    }

    /// Deliver every queued message whose link is not cut, in order, and
    /// process the readies, until nothing moves.
    pub fn stabilize(&mut self) {
        for _ in 0..100_000 {
            let mut moved = self.process_all();
            if !self.network.is_empty() {
                moved = true;
                self.deliver_all();
            }
            if !moved {
                return;
            }
        }
        panic!("cluster did not stabilize");
    }

    /// Deliver all queued messages once (dropping those on cut links or to
    /// crashed nodes).
    pub fn deliver_all(&mut self) {
        let messages = std::mem::take(&mut self.network);
        for message in messages {
            self.deliver(message);
        }
    }

    /// Deliver one message.
    pub fn deliver(&mut self, message: Message) {
        if self.cut.contains(&(message.from, message.to)) {
            return;
        }
        let tracing = self.tracing;
        let Some(node) = self.nodes.get_mut(&message.to) else {
            return;
        };
        if node.down {
            return;
        }
        let line = tracing.then(|| {
            format!(
                "{:?}->{:?} {}",
                message.from,
                message.to,
                describe_message(&message)
            )
        });
        let to = message.to;
        node.raw.step(message);
        node.raw.invariants();
        // Drained even when not tracing, so the node's record stays short.
        let ignored = node.raw.take_ignored();
        if let Some(line) = line {
            self.note(line);
            for ignored in ignored {
                self.note(format!("{to:?} {ignored}"));
            }
        }
    }

    /// Cut all links between the two groups (both directions).
    pub fn partition(&mut self, left: &[u64], right: &[u64]) {
        for a in left {
            for b in right {
                self.cut.insert((NodeId(*a), NodeId(*b)));
                self.cut.insert((NodeId(*b), NodeId(*a)));
            }
        }
    }

    /// Restore every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Crash node `id`: it loses everything but its storage.
    pub fn crash(&mut self, id: u64) {
        let node = self.node_mut(id);
        node.down = true;
        let id = NodeId(id);
        self.network.retain(|m| m.to != id && m.from != id);
    }

    /// Restart a crashed node from its storage.
    pub fn restart(&mut self, id: u64) {
        let now = self.now;
        let seed = self.seed.wrapping_add(id).wrapping_add(now.0);
        let node = self.node_mut(id);
        let state = node.storage.persistent_state();
        node.raw = RawNode::new(node.config.clone(), state, seed, now).expect("restart");
        node.applied = decode_state(&node.storage.snapshot_data);
        node.applied_index = node.storage.snapshot.index;
        node.incoming.clear();
        node.down = false;
    }

    /// Run until some node leads (ticking `step_ms` at a time), or give up
    /// after `max_ms`.
    pub fn elect(&mut self, step_ms: u64, max_ms: u64) -> Option<NodeId> {
        let start = self.now;
        while self.now.since(start) < max_ms {
            self.tick(step_ms);
            self.stabilize();
            if let Some(leader) = self.leader() {
                return Some(leader);
            }
        }
        None
    }

    /// Cross-node safety checks (Raft Figure 3): log matching and leader
    /// completeness over the live logs. Election safety and state machine
    /// safety are checked as events happen.
    pub fn check_safety(&self) {
        let nodes: Vec<&TestNode> = self.nodes.values().collect();
        // Log Matching: same index and term implies same entry and prefix.
        for (i, a) in nodes.iter().enumerate() {
            for b in nodes.iter().skip(i + 1) {
                let lo = a.raw.first_index().max(b.raw.first_index());
                let hi = a.raw.last_index().min(b.raw.last_index());
                let mut matched = false;
                let mut index = hi;
                while index >= lo && index > LogIndex::ZERO {
                    let (ea, eb) = (a.raw.entry(index), b.raw.entry(index));
                    if let (Some(ea), Some(eb)) = (ea, eb) {
                        if matched {
                            assert_eq!(ea, eb, "log matching violated at {index:?}");
                        } else if ea.term == eb.term {
                            assert_eq!(ea, eb, "same index and term but different entries");
                            matched = true;
                        }
                    }
                    index = index.prev();
                }
            }
        }
        // Lease safety (thesis §6.4.1): while a leader holds a lease, no
        // server has become leader of a later term. The harness has one clock
        // for every node (no drift), so this must hold exactly.
        for node in &nodes {
            if node.down || node.raw.lease_until().is_none() {
                continue;
            }
            if let Some((term, other)) = self.leaders.range(node.raw.term().next()..).next() {
                panic!(
                    "lease safety: {:?} holds a lease in {:?} while {other:?} leads {term:?}",
                    node.raw.id(),
                    node.raw.term()
                );
            }
        }
        // Leader Completeness: a leader of the newest term holds every
        // committed entry (a stale leader of an older term need not).
        let newest_term = nodes
            .iter()
            .map(|n| n.raw.term().max(n.storage.hard_state.term))
            .max()
            .unwrap_or(Term::ZERO);
        for node in &nodes {
            if node.down || node.raw.role() != Role::Leader || node.raw.term() != newest_term {
                continue;
            }
            for (index, entry) in self
                .committed
                .range(node.raw.snapshot_meta().index.next()..)
            {
                {
                    assert_eq!(
                        node.raw.entry(*index),
                        Some(entry),
                        "leader completeness: leader {:?} lacks committed {index:?}",
                        node.raw.id()
                    );
                }
            }
        }
    }
}

/// Encode the harness state machine (a list of commands) as snapshot data.
fn encode_state(applied: &[(LogIndex, Bytes)]) -> Bytes {
    let mut out = BytesMut::new();
    for (index, data) in applied {
        out.extend_from_slice(&index.0.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    out.freeze()
}

fn decode_state(mut data: &[u8]) -> Vec<(LogIndex, Bytes)> {
    let mut out = Vec::new();
    while data.len() >= 12 {
        let index = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes")) as usize;
        out.push((LogIndex(index), Bytes::copy_from_slice(&data[12..12 + len])));
        data = &data[12 + len..];
    }
    out
}

/// One line per message, compact, for traces.
pub fn describe_message(message: &Message) -> String {
    let term = message.term;
    match &message.body {
        MessageBody::PreVote {
            last_index,
            last_term,
        } => {
            format!("PreVote {term:?} last={last_index:?}/{last_term:?}")
        }
        MessageBody::PreVoteResponse { granted } => {
            format!("PreVoteResponse {term:?} granted={granted}")
        }
        MessageBody::Vote {
            last_index,
            last_term,
            transfer,
        } => {
            let transfer = if *transfer { " transfer" } else { "" };
            format!("Vote {term:?} last={last_index:?}/{last_term:?}{transfer}")
        }
        MessageBody::VoteResponse { granted } => format!("VoteResponse {term:?} granted={granted}"),
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
            read_round,
        } => {
            let mut s = format!("Append {term:?} prev={prev_index:?}/{prev_term:?} commit={commit:?} round={read_round}");
            if !entries.is_empty() {
                let list: Vec<String> = entries.iter().map(describe_entry).collect();
                let _ = write!(s, " [{}]", list.join(" "));
            }
            s
        }
        MessageBody::AppendResponse {
            index,
            reject,
            read_round,
        } => match reject {
            None => format!("AppendResponse {term:?} ok={index:?} round={read_round}"),
            Some(hint) => format!(
                "AppendResponse {term:?} reject={index:?} hint={:?}/{:?} round={read_round}",
                hint.index, hint.term
            ),
        },
        MessageBody::Heartbeat { commit, read_round } => {
            format!("Heartbeat {term:?} commit={commit:?} round={read_round}")
        }
        MessageBody::HeartbeatResponse { read_round } => {
            format!("HeartbeatResponse {term:?} round={read_round}")
        }
        MessageBody::ReserveHeartbeat {
            commit,
            config_index,
            ..
        } => {
            format!("ReserveHeartbeat {term:?} commit={commit:?} config={config_index:?}")
        }
        MessageBody::InstallSnapshot {
            meta,
            offset,
            data,
            done,
        } => format!(
            "InstallSnapshot {term:?} snap={:?}/{:?} offset={offset} len={} done={done}",
            meta.index,
            meta.term,
            data.len()
        ),
        MessageBody::InstallSnapshotResponse { index, next_offset } => {
            format!("InstallSnapshotResponse {term:?} snap={index:?} next={next_offset}")
        }
        MessageBody::TimeoutNow => format!("TimeoutNow {term:?}"),
    }
}

/// `index/term:payload` for traces.
pub fn describe_entry(entry: &Entry) -> String {
    let payload = match &entry.payload {
        EntryPayload::Noop => "noop".to_string(),
        EntryPayload::Command(data) => String::from_utf8_lossy(data).into_owned(),
        EntryPayload::Config(config) => describe_config(config),
    };
    format!("{}/{}:{payload}", entry.index.0, entry.term.0)
}

/// `{1:V 2:V 3:L}` for traces.
pub fn describe_config(config: &Configuration) -> String {
    let members: Vec<String> = config
        .members
        .iter()
        .map(|(id, role)| {
            let letter = match role {
                crate::MemberRole::Voter => "V",
                crate::MemberRole::Learner => "L",
                crate::MemberRole::Passive => "P",
                crate::MemberRole::Reserve => "R",
            };
            format!("{}:{letter}", id.0)
        })
        .collect();
    format!("{{{}}}", members.join(" "))
}

fn describe_ready(id: NodeId, ready: &Ready, lines: &mut Vec<String>) {
    if let Some(soft) = ready.soft_state {
        lines.push(format!(
            "{id:?} becomes {:?} term={:?} leader={:?}",
            soft.role, soft.term, soft.leader
        ));
    }
    if let Some(hs) = ready.hard_state {
        lines.push(format!(
            "{id:?} persist term={:?} vote={:?}",
            hs.term, hs.vote
        ));
    }
    if !ready.entries.is_empty() {
        let list: Vec<String> = ready.entries.iter().map(describe_entry).collect();
        lines.push(format!("{id:?} persist entries [{}]", list.join(" ")));
    }
    if !ready.committed_entries.is_empty() {
        let list: Vec<String> = ready.committed_entries.iter().map(describe_entry).collect();
        lines.push(format!("{id:?} apply [{}]", list.join(" ")));
    }
    if let Some(purge) = ready.purge_to {
        lines.push(format!("{id:?} purge to {purge:?}"));
    }
    for read in &ready.read_states {
        lines.push(format!("{id:?} read {} -> {:?}", read.id, read.result));
    }
}

/// Run every `*.txt` script in `dir`: each command line is handed to
/// `run_command` (a fresh one per file, from `new_runner`) and its output
/// compared with the expected block. With the environment variable `REWRITE`
/// set, mismatching files are rewritten instead. Panics listing the first
/// difference of each mismatch. Shared by the data-driven golden tests of
/// several crates.
///
/// Script format: a command line, a line `----`, the expected output, a
/// blank line. Lines starting with `#` outside an output are comments; inside
/// an output they are kept as notes (the command does not produce them).
/// Outputs never contain blank lines.
pub fn run_golden_files<R: FnMut(&str) -> String>(
    dir: &std::path::Path,
    new_runner: impl Fn() -> R,
) {
    let rewrite = std::env::var_os("REWRITE").is_some();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("testdata dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no golden files in {}", dir.display());
    let mut failures = Vec::new();
    for path in paths {
        let expected = std::fs::read_to_string(&path).expect("read testdata");
        let actual = rewrite_script(&path, &expected, new_runner());
        if expected != actual {
            if rewrite {
                std::fs::write(&path, &actual).expect("rewrite");
            } else {
                failures.push(format!(
                    "{}:\n{}",
                    path.display(),
                    first_difference(&expected, &actual)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (REWRITE=1 to update):\n{}",
        failures.join("\n")
    );
}

/// The script `text` with every output replaced by what `run_command` says.
fn rewrite_script(
    path: &std::path::Path,
    text: &str,
    mut run_command: impl FnMut(&str) -> String,
) -> String {
    let mut rewritten = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            rewritten.push_str(line);
            rewritten.push('\n');
            continue;
        }
        let command = line;
        assert_eq!(
            lines.next(),
            Some("----"),
            "{}: expected ---- after `{command}`",
            path.display()
        );
        let mut notes = String::new();
        while let Some(next) = lines.peek() {
            if next.is_empty() {
                break;
            }
            if next.starts_with('#') {
                notes.push_str(next);
                notes.push('\n');
            }
            lines.next();
        }
        rewritten.push_str(command);
        rewritten.push_str("\n----\n");
        for output in run_command(command).lines().filter(|line| !line.is_empty()) {
            rewritten.push_str(output);
            rewritten.push('\n');
        }
        rewritten.push_str(&notes);
    }
    rewritten
}

fn first_difference(expected: &str, actual: &str) -> String {
    for (number, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
        if e != a {
            return format!("line {}:\n  expected: {e}\n  actual:   {a}", number + 1);
        }
    }
    format!(
        "lengths differ: expected {} lines, got {}",
        expected.lines().count(),
        actual.lines().count()
    )
}
