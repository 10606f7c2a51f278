//! Throughput of the Raft core alone: a 3-node cluster in memory, driven in
//! one thread, no I/O (persistence is acknowledged at once, messages are
//! moved between in-process queues without serialization).
//!
//! Measures committed 256-byte entries per second with 1 and with 1024
//! proposals outstanding. Run with `cargo bench -p copycat-raft --bench
//! cluster`; results are recorded in `docs/benchmarks.md`.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use copycat_raft::{Config, Configuration, Message, NodeId, PersistentState, RawNode, Role, Time};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

struct Bench {
    nodes: Vec<RawNode>,
    network: VecDeque<Message>,
    leader: usize,
    committed: u64,
    now: u64,
}

impl Bench {
    fn new() -> Self {
        let ids = [NodeId(1), NodeId(2), NodeId(3)];
        let membership = Configuration::with_voters(ids);
        let nodes = ids
            .iter()
            .map(|id| {
                let mut config = Config::new(*id);
                config.max_uncommitted_bytes = 1 << 30;
                RawNode::new(
                    config,
                    PersistentState::bootstrap(membership.clone()),
                    1,
                    Time(0),
                )
                .expect("node")
            })
            .collect();
        let mut bench = Self {
            nodes,
            network: VecDeque::new(),
            leader: 0,
            committed: 0,
            now: 0,
        };
        while !bench.nodes.iter().any(|n| n.role() == Role::Leader) {
            bench.now += 10;
            for node in &mut bench.nodes {
                node.tick(Time(bench.now));
            }
            bench.pump();
        }
        bench.leader = bench
            .nodes
            .iter()
            .position(|n| n.role() == Role::Leader)
            .expect("leader");
        bench.pump();
        bench.committed = 0;
        bench
    }

    /// Handle every Ready and deliver every message until nothing moves.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                if !self.nodes[i].has_ready() {
                    continue;
                }
                moved = true;
                let ready = self.nodes[i].ready();
                if let Some(last) = ready.entries.last() {
                    self.nodes[i].persisted(last.index, last.term);
                }
                if i == self.leader {
                    self.committed += ready.committed_entries.len() as u64;
                }
                if let Some(last) = ready.committed_entries.last() {
                    // Keep memory bounded as a real server would.
                    if last.index.0 % 65_536 < ready.committed_entries.len() as u64 {
                        let _ = self.nodes[i].snapshot_taken(last.index);
                    }
                }
                self.network.extend(ready.messages);
                self.network.extend(ready.messages_after_persist);
            }
            while let Some(message) = self.network.pop_front() {
                moved = true;
                let to = (message.to.0 - 1) as usize;
                self.nodes[to].step(message);
            }
            if !moved {
                return;
            }
        }
    }

    /// Commit `total` entries keeping `concurrency` proposals outstanding.
    fn run(&mut self, total: u64, concurrency: u64, payload: &Bytes) {
        let start = self.committed;
        let mut proposed = 0;
        while self.committed - start < total {
            let outstanding = proposed - (self.committed - start);
            let room = concurrency
                .saturating_sub(outstanding)
                .min(total - proposed);
            for _ in 0..room {
                self.nodes[self.leader]
                    .propose(vec![payload.clone()])
                    .expect("leader accepts");
                proposed += 1;
            }
            self.pump();
        }
    }
}

fn throughput(c: &mut Criterion) {
    let payload = Bytes::from(vec![7u8; 256]);
    let mut group = c.benchmark_group("commit_256b");
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(10);
    for concurrency in [1u64, 1024] {
        let total = if concurrency == 1 { 10_000 } else { 200_000 };
        group.throughput(Throughput::Elements(total));
        group.bench_with_input(
            BenchmarkId::new("concurrency", concurrency),
            &concurrency,
            |b, c| {
                let mut bench = Bench::new();
                b.iter(|| bench.run(total, *c, &payload));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
