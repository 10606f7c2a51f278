//! Data-driven golden tests for the Raft core.
//!
//! Each file in `testdata/` is a script of commands, each followed by a line
//! `----` and the expected trace, then a blank line. Run with
//! `REWRITE=1 cargo test -p copycat-raft --test golden` to rewrite the
//! expected output; commit a rewrite only when you understand the diff.
//!
//! Traces show each delivered message, then, if the receiver ignored it, a
//! line `nX ignored KIND TERM from nY: REASON` (see `IgnoreReason`), then
//! what the nodes did. `advance` shows only a summary and omits them.
//!
//! Commands (ids are node numbers):
//!
//! ```text
//! cluster voters=1,2,3 [election=100 heartbeat=20 pre-vote=true check-quorum=true
//!         inflight=16 batch-entries=4096 batch-bytes=N trailing=1024 drift=10
//!         promote-lag=128 chunk=N uncommitted=N seed=0]
//! tick ms=N              advance every node's clock, process readies
//! advance ms=N [step=10] tick and stabilize repeatedly (a working network);
//!                        shows only role changes, applies, reads, installs
//! campaign ID            start an election on ID now
//! propose ID a b c       propose one command per word
//! stabilize              deliver and process until nothing moves
//! deliver [from=ID] [to=ID] [drop] [dup]
//!                        deliver (or drop, or deliver twice) queued messages
//!                        matching the filter, once, then process readies
//! process                process every node's ready
//! network                list queued messages
//! partition 1 2 | 3      cut links between the groups
//! heal                   restore all links
//! crash ID / restart ID  lose everything but durable state / come back
//! add-node ID            a new empty server that may join later
//! member LEADER add-voter|add-passive|add-reserve|remove ID [version=N]
//! transfer LEADER TARGET
//! read ID REQ [mode=index|lease]
//! snapshot ID            take a snapshot at the applied index
//! status ID / log ID     print a node's state / its log
//! check                  run cross-node safety checks
//! ```

use std::path::Path;

use bytes::Bytes;
use copycat_raft::testing::{describe_config, describe_entry, describe_message, Cluster};
use copycat_raft::{Config, LogIndex, MembershipChange, NodeId, PersistentState, ReadMode};

struct Interpreter {
    cluster: Option<Cluster>,
}

fn parse_kv(args: &[&str], key: &str) -> Option<String> {
    args.iter()
        .find_map(|arg| arg.strip_prefix(&format!("{key}=")).map(str::to_string))
}

fn num(args: &[&str], key: &str, default: u64) -> u64 {
    parse_kv(args, key).map_or(default, |v| v.parse().expect("number"))
}

fn id_arg(args: &[&str], position: usize) -> u64 {
    args.get(position)
        .unwrap_or_else(|| panic!("missing argument {position}"))
        .parse()
        .expect("node id")
}

impl Interpreter {
    fn cluster(&mut self) -> &mut Cluster {
        self.cluster
            .as_mut()
            .expect("no cluster: start with `cluster`")
    }

    fn run(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (command, args) = words.split_first().expect("empty command");
        let args = args.to_vec();
        let mut out = String::new();
        match *command {
            "cluster" => {
                let voters: Vec<u64> = parse_kv(&args, "voters")
                    .expect("voters=")
                    .split(',')
                    .map(|v| v.parse().expect("voter id"))
                    .collect();
                let mut config = Config::new(NodeId(1));
                config.election_timeout_ms = num(&args, "election", 100);
                config.heartbeat_interval_ms = num(&args, "heartbeat", 20);
                config.pre_vote = parse_kv(&args, "pre-vote").is_none_or(|v| v == "true");
                config.check_quorum = parse_kv(&args, "check-quorum").is_none_or(|v| v == "true");
                config.max_inflight_appends = num(&args, "inflight", 16) as usize;
                config.max_append_entries = num(&args, "batch-entries", 4096) as usize;
                config.max_append_bytes = num(&args, "batch-bytes", 1 << 20) as usize;
                config.snapshot_trailing_entries = num(&args, "trailing", 0);
                config.lease_clock_drift_ms = num(&args, "drift", 10);
                config.promote_lag_entries = num(&args, "promote-lag", 0);
                config.snapshot_chunk_bytes = num(&args, "chunk", 1 << 20) as usize;
                config.max_uncommitted_bytes = num(&args, "uncommitted", 64 << 20) as usize;
                config.max_entry_bytes = config.max_entry_bytes.min(config.max_uncommitted_bytes);
                config.validate().expect("valid config");
                let cluster = Cluster::new(&voters, config, num(&args, "seed", 0));
                self.cluster = Some(cluster);
            }
            "tick" => {
                let ms = num(&args, "ms", 1);
                let cluster = self.cluster();
                cluster.tick(ms);
                out = cluster.take_trace();
            }
            "advance" => {
                // Let time pass on a working network: tick in small steps and
                // deliver everything after each. Only role changes, applies,
                // reads and snapshot installs are shown.
                let ms = num(&args, "ms", 100);
                let step = num(&args, "step", 10);
                let cluster = self.cluster();
                let mut elapsed = 0;
                while elapsed < ms {
                    cluster.tick(step);
                    cluster.stabilize();
                    cluster.check_safety();
                    elapsed += step;
                }
                out = cluster
                    .take_trace()
                    .lines()
                    .filter(|l| {
                        l.contains(" becomes ")
                            || l.contains(" apply ")
                            || l.contains(" read ")
                            || l.contains(" installed ")
                    })
                    .map(|l| format!("{l}\n"))
                    .collect();
            }
            "campaign" => {
                let id = id_arg(&args, 0);
                let cluster = self.cluster();
                cluster.node_mut(id).raw.campaign();
                cluster.process_all();
                out = cluster.take_trace();
            }
            "propose" => {
                let id = id_arg(&args, 0);
                let commands = args[1..]
                    .iter()
                    .map(|w| Bytes::from(w.to_string()))
                    .collect();
                let cluster = self.cluster();
                let result = cluster.node_mut(id).raw.propose(commands);
                if let Err(error) = result {
                    out.push_str(&format!("error: {error}\n"));
                }
                cluster.process_all();
                out.push_str(&cluster.take_trace());
            }
            "stabilize" => {
                let cluster = self.cluster();
                cluster.stabilize();
                out = cluster.take_trace();
            }
            "deliver" => {
                let from = parse_kv(&args, "from").map(|v| NodeId(v.parse().expect("id")));
                let to = parse_kv(&args, "to").map(|v| NodeId(v.parse().expect("id")));
                let drop = args.contains(&"drop");
                let dup = args.contains(&"dup");
                let cluster = self.cluster();
                let queued = std::mem::take(&mut cluster.network);
                let (selected, rest): (Vec<_>, Vec<_>) = queued.into_iter().partition(|m| {
                    from.is_none_or(|f| m.from == f) && to.is_none_or(|t| m.to == t)
                });
                cluster.network = rest;
                for message in selected {
                    if drop {
                        cluster.note(format!(
                            "dropped {:?}->{:?} {}",
                            message.from,
                            message.to,
                            describe_message(&message)
                        ));
                        continue;
                    }
                    if dup {
                        cluster.deliver(message.clone());
                    }
                    cluster.deliver(message);
                }
                cluster.process_all();
                out = cluster.take_trace();
            }
            "process" => {
                let cluster = self.cluster();
                cluster.process_all();
                out = cluster.take_trace();
            }
            "network" => {
                for message in &self.cluster().network {
                    out.push_str(&format!(
                        "{:?}->{:?} {}\n",
                        message.from,
                        message.to,
                        describe_message(message)
                    ));
                }
            }
            "partition" => {
                let split = args
                    .iter()
                    .position(|a| *a == "|")
                    .expect("partition A | B");
                let left: Vec<u64> = args[..split]
                    .iter()
                    .map(|a| a.parse().expect("id"))
                    .collect();
                let right: Vec<u64> = args[split + 1..]
                    .iter()
                    .map(|a| a.parse().expect("id"))
                    .collect();
                self.cluster().partition(&left, &right);
            }
            "heal" => self.cluster().heal(),
            "crash" => {
                let id = id_arg(&args, 0);
                self.cluster().crash(id);
            }
            "restart" => {
                let id = id_arg(&args, 0);
                let cluster = self.cluster();
                cluster.restart(id);
                out = status(cluster, id);
            }
            "add-node" => {
                let id = id_arg(&args, 0);
                let cluster = self.cluster();
                let state = PersistentState::default();
                cluster.add_node(NodeId(id), state);
            }
            "member" => {
                let leader = id_arg(&args, 0);
                let target = NodeId(id_arg(&args, 2));
                let change = match args[1] {
                    "add-voter" => MembershipChange::AddVoter(target),
                    "add-passive" => MembershipChange::AddPassive(target),
                    "add-reserve" => MembershipChange::AddReserve(target),
                    "remove" => MembershipChange::Remove(target),
                    other => panic!("unknown membership change {other}"),
                };
                let version =
                    parse_kv(&args, "version").map(|v| LogIndex(v.parse().expect("index")));
                let cluster = self.cluster();
                match cluster
                    .node_mut(leader)
                    .raw
                    .change_membership(change, version)
                {
                    Ok(index) => out.push_str(&format!("config entry at {index:?}\n")),
                    Err(error) => out.push_str(&format!("error: {error}\n")),
                }
                cluster.process_all();
                out.push_str(&cluster.take_trace());
            }
            "transfer" => {
                let leader = id_arg(&args, 0);
                let target = NodeId(id_arg(&args, 1));
                let cluster = self.cluster();
                if let Err(error) = cluster.node_mut(leader).raw.transfer_leadership(target) {
                    out.push_str(&format!("error: {error}\n"));
                }
                cluster.process_all();
                out.push_str(&cluster.take_trace());
            }
            "read" => {
                let id = id_arg(&args, 0);
                let request = id_arg(&args, 1);
                let mode = match parse_kv(&args, "mode").as_deref() {
                    Some("lease") => ReadMode::Lease,
                    _ => ReadMode::ReadIndex,
                };
                let cluster = self.cluster();
                let now = cluster.now;
                if let Err(error) = cluster.node_mut(id).raw.read(request, mode, now) {
                    out.push_str(&format!("error: {error}\n"));
                }
                cluster.process_all();
                out.push_str(&cluster.take_trace());
            }
            "snapshot" => {
                let id = id_arg(&args, 0);
                let cluster = self.cluster();
                match cluster.snapshot(id) {
                    Some(meta) => out.push_str(&format!(
                        "snapshot at {:?}/{:?} config={}\n",
                        meta.index,
                        meta.term,
                        describe_config(&meta.config)
                    )),
                    None => out.push_str("error: nothing new to snapshot\n"),
                }
                cluster.process_all();
                out.push_str(&cluster.take_trace());
            }
            "status" => {
                let id = id_arg(&args, 0);
                out = status(self.cluster(), id);
            }
            "log" => {
                let id = id_arg(&args, 0);
                let node = &self.cluster().node(id).raw;
                let mut index = node.first_index();
                let mut entries = Vec::new();
                while index <= node.last_index() {
                    if let Some(entry) = node.entry(index) {
                        entries.push(describe_entry(entry));
                    }
                    index = index.next();
                }
                out = if entries.is_empty() {
                    "(empty)\n".into()
                } else {
                    format!("{}\n", entries.join(" "))
                };
            }
            "check" => {
                self.cluster().check_safety();
                out = "ok\n".into();
            }
            other => panic!("unknown command {other}"),
        }
        out
    }
}

fn status(cluster: &Cluster, id: u64) -> String {
    let node = &cluster.node(id).raw;
    let (version, config) = node.configuration();
    let lease = node
        .lease_until()
        .map(|t| format!(" lease_until={t:?}"))
        .unwrap_or_default();
    format!(
        "{:?} {:?} member={:?} term={:?} leader={:?} vote={:?} commit={:?} applied={:?} last={:?} snapshot={:?} config@{:?}={}{lease}\n",
        node.id(),
        node.role(),
        node.member_role(),
        node.term(),
        node.leader(),
        node.hard_state().vote,
        node.commit_index(),
        node.applied_index(),
        node.last_index(),
        node.snapshot_meta().index,
        version,
        describe_config(config),
    )
}

#[test]
fn golden() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    copycat_raft::testing::run_golden_files(&dir, || {
        let mut interpreter = Interpreter { cluster: None };
        move |command: &str| {
            let output = interpreter.run(command);
            if let Some(cluster) = interpreter.cluster.as_ref() {
                cluster.check_safety();
            }
            output
        }
    });
}
