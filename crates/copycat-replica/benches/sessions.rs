//! Throughput of the server core: commands through client sessions on a
//! 3-server cluster in memory, one thread, no I/O (persistence acknowledged
//! at once). Each command goes through the leader's log, is applied by every
//! replica (exactly-once bookkeeping, result cache, events) and answered.
//!
//! Run with `cargo bench -p copycat-replica --bench sessions`; results in
//! `docs/benchmarks.md`. Compare with the Raft core alone
//! (`cargo bench -p copycat-raft --bench cluster`) to see what sessions cost.

use std::time::Duration;

use copycat_proto::{EventIndex, Request, Sequence, SessionId};
use copycat_replica::codec;
use copycat_replica::testing::{ServerCluster, TestCommand};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

struct Bench {
    cluster: ServerCluster,
    leader: usize,
    sessions: Vec<(SessionId, u64)>,
    next_id: u64,
}

impl Bench {
    fn new(clients: usize) -> Self {
        let mut cluster = ServerCluster::new(3);
        let leader = cluster.leader().expect("leader");
        let sessions = (0..clients)
            .map(|c| (cluster.register(leader, c as u128 + 1, c as u64 + 1), 0))
            .collect();
        Self {
            cluster,
            leader,
            sessions,
            next_id: 1_000,
        }
    }

    /// Every client sends its next command; pump until all are answered.
    /// Keep-alives acknowledge results now and then so caches stay small.
    fn round(&mut self, payload: &bytes::Bytes) {
        for (client, (session, sequence)) in self.sessions.iter_mut().enumerate() {
            *sequence += 1;
            self.next_id += 1;
            let request = Request::Command {
                session: *session,
                sequence: Sequence(*sequence),
                acked: Sequence::ZERO,
                payload: payload.clone(),
            };
            self.cluster
                .submit(self.leader, client as u64 + 1, self.next_id, request);
            if *sequence % 256 == 0 {
                self.next_id += 1;
                let keep_alive = Request::KeepAlive {
                    session: *session,
                    command_sequence: Sequence(*sequence),
                    event_index: EventIndex(0),
                };
                self.cluster
                    .submit(self.leader, client as u64 + 1, self.next_id, keep_alive);
            }
        }
        self.cluster.pump();
        self.cluster.inbox.clear();
    }
}

fn throughput(c: &mut Criterion) {
    let payload = codec::encode(&TestCommand::Add(1));
    let mut group = c.benchmark_group("session_commands");
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(10);
    for clients in [1usize, 256] {
        let rounds = if clients == 1 { 5_000 } else { 100 };
        group.throughput(Throughput::Elements((clients * rounds) as u64));
        group.bench_with_input(
            BenchmarkId::new("clients", clients),
            &clients,
            |b, clients| {
                let mut bench = Bench::new(*clients);
                b.iter(|| {
                    for _ in 0..rounds {
                        bench.round(&payload);
                    }
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
