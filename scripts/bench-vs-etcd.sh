#!/usr/bin/env bash
# Side-by-side coordination benchmarks: a 3-member etcd cluster and a
# 3-server Copycat cluster (separate processes, fsync on, loopback), runs
# interleaved, the load average recorded with each. etcd is driven by
# tools/etcd-bench (a Rust client with the flags and JSON report of
# `copycat bench`), Copycat by `copycat bench`.
#
# Needs Debian's etcd-server and etcd-client (apt-get install etcd-server
# etcd-client: etcdctl checks the cluster is up), protoc to build
# tools/etcd-bench (apt-get install protobuf-compiler; the script builds it
# with cargo if needed) and a release build of Copycat
# (cargo build --release -p copycat-cli).
#
# usage: scripts/bench-vs-etcd.sh [ROUNDS]   (results: JSON lines on stdout)
#
# Environment:
#   BENCH_SCALE=F          multiply every run's total by F (default 1: one
#                          round takes a few minutes; 0.1 for a smoke test)
#   BENCH_WORKLOADS="..."  which comparisons, of: lock put get single
#                          memory (default: lock put get); "sessions"
#                          (Copycat alone): 10 processes of 1,000 sessions
#                          each, first all writing, then all idle
#   BENCH_KEYS=N, BENCH_VALUE=B   key space and value size of put and get
#                          (default 100000 keys, 256-byte values)
#   MEMORY_REPEATS=N       runs of 1,000,000 puts in "memory" (default 5);
#                          after each, VmRSS and Threads of every server
#   COPYCAT_ALONE=0        skip the Copycat-only runs (queue, counter) at the end
#   COPYCAT_BIN, ETCD_BENCH_BIN   use these binaries instead
#
# Every line is one run's report with "system", "round", "load1" and
# "loadavg" (/proc/loadavg when it started) put in front. In odd rounds
# etcd runs first in each pair, in even rounds Copycat does.
set -euo pipefail
rounds=${1:-2}
scale=${BENCH_SCALE:-1}
workloads=${BENCH_WORKLOADS:-lock put get}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
bin=${COPYCAT_BIN:-$repo/target/release/copycat}
if [[ -z ${ETCD_BENCH_BIN:-} ]]; then
  export PROTOC=${PROTOC:-$(command -v protoc || echo /usr/bin/protoc)}
  cargo build --release --quiet --manifest-path "$repo/tools/etcd-bench/Cargo.toml" >&2
  etcd_bench=$repo/tools/etcd-bench/target/release/etcd-bench
else
  etcd_bench=$ETCD_BENCH_BIN
fi
[[ -x $bin ]] || { echo "no Copycat binary at $bin (cargo build --release -p copycat-cli)" >&2; exit 1; }
# `copycat bench` shares one connection to each server among all its
# sessions (--connections 1, the default); 1,000 etcd-bench clients are
# 1,000 connections (one each, spread over the members; etcd sets no limit
# on client connections of its own): past a soft limit of 1,024
# descriptors. The Copycat servers keep their default connection limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

root=$(mktemp -d /tmp/copycat-vs-etcd.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$root"; }
trap cleanup EXIT

cluster=""
for n in 1 2 3; do cluster+="e$n=http://127.0.0.1:$((23800 + n)),"; done
for n in 1 2 3; do
  etcd --name "e$n" --data-dir "$root/etcd-$n" \
    --listen-client-urls "http://127.0.0.1:$((23790 + n))" \
    --advertise-client-urls "http://127.0.0.1:$((23790 + n))" \
    --listen-peer-urls "http://127.0.0.1:$((23800 + n))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((23800 + n))" \
    --initial-cluster "${cluster%,}" --initial-cluster-state new \
    >"$root/etcd-$n.log" 2>&1 &
  pids+=($!)
done
members=()
for n in 1 2 3; do members+=(--member "$n=127.0.0.1:$((25700 + n))"); done
for n in 1 2 3; do
  "$bin" server --id "$n" --listen "127.0.0.1:$((25700 + n))" --http-listen off \
    --data-dir "$root/copycat-$n" "${members[@]}" >"$root/copycat-$n.log" 2>&1 &
  pids+=($!)
done
ready=0
for _ in $(seq 100); do
  if ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:23791 endpoint health >/dev/null 2>&1 &&
     "$bin" cluster --server 127.0.0.1:25701 status >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.2
done
[[ $ready == 1 ]] || { echo "the clusters did not come up (logs: $root)" >&2; trap - EXIT; exit 1; }

etcd_endpoints=(--endpoint 127.0.0.1:23791 --endpoint 127.0.0.1:23792 --endpoint 127.0.0.1:23793)
copycat_servers=(--server 127.0.0.1:25701 --server 127.0.0.1:25702 --server 127.0.0.1:25703)

keys=${BENCH_KEYS:-100000}
value=${BENCH_VALUE:-256}
total() { awk -v n="$1" -v s="$scale" 'BEGIN { t = int(n * s); print (t < 1 ? 1 : t) }'; }
tag() {
  local loadavg
  loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
  sed "s/^{/{\"system\":\"$1\",\"round\":$2,\"load1\":${loadavg%% *},\"loadavg\":\"$loadavg\",/"
}
# memory SYSTEM ROUND REPEAT PIDS...: one line of every server's VmRSS (MB)
# and thread count.
memory() {
  local system=$1 round=$2 repeat=$3 rss=() threads=()
  shift 3
  for pid in "$@"; do
    rss+=("$(awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")")
    threads+=("$(awk '/^Threads/ { print $2 }' "/proc/$pid/status")")
  done
  local IFS=,
  echo "{\"system\":\"$system\",\"round\":$round,\"memory_after_repeat\":$repeat,\"rss_mb\":[${rss[*]}],\"threads\":[${threads[*]}],\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
}
# pair ROUND ARGS...: the same run against each system, order by round.
pair() {
  local round=$1; shift
  local etcd_run=("$etcd_bench" "${etcd_endpoints[@]}" "$@" --json)
  local copycat_run=("$bin" bench "${copycat_servers[@]}" "$@" --json)
  if ((round % 2 == 1)); then
    "${etcd_run[@]}" | tag etcd "$round"
    "${copycat_run[@]}" | tag copycat "$round"
  else
    "${copycat_run[@]}" | tag copycat "$round"
    "${etcd_run[@]}" | tag etcd "$round"
  fi
}

for round in $(seq "$rounds"); do
  for workload in $workloads; do
    case $workload in
      lock)
        # One cycle = acquire then release of one lock name, every client
        # contending; Copycat needs --concurrency 1 here, etcd-bench too.
        for clients in 1 64; do
          pair "$round" lock --clients "$clients" --concurrency 1 \
            --total "$(total $((clients == 1 ? 500 : 2000)))"
        done ;;
      put)
        for clients in 1 64 1000; do
          pair "$round" put --clients "$clients" --concurrency 1 --value-size "$value" \
            --key-space "$keys" --total "$(total $((clients == 1 ? 1000 : clients == 64 ? 10000 : 20000)))"
        done ;;
      get)
        # After the puts above the same keys exist in both.
        for clients in 1 64 1000; do
          pair "$round" get --clients "$clients" --concurrency 1 --consistency linearizable \
            --key-space "$keys" --total "$(total $((clients == 1 ? 1000 : clients == 64 ? 10000 : 20000)))"
        done ;;
      single)
        # One session (etcd: one connection) with one task, then with 64
        # tasks pipelining on it.
        pair "$round" put --clients 1 --concurrency 1 --value-size "$value" \
          --key-space "$keys" --total "$(total 100000)"
        pair "$round" put --clients 1 --concurrency 64 --value-size "$value" \
          --key-space "$keys" --total "$(total 200000)"
        ;;
      memory)
        # RSS after each of MEMORY_REPEATS runs of 1,000,000 puts of 256 B
        # to 100,000 keys, the systems taking turns within each repeat
        # (repeat 0: before any of them).
        memory etcd "$round" 0 "${pids[@]:0:3}"
        memory copycat "$round" 0 "${pids[@]:3:3}"
        for repeat in $(seq "${MEMORY_REPEATS:-5}"); do
          for system in etcd copycat; do
            if [[ $system == etcd ]]; then
              "$etcd_bench" "${etcd_endpoints[@]}" put --clients 64 --concurrency 4 --value-size 256 \
                --key-space 100000 --total "$(total 1000000)" --json | tag etcd "$round"
              memory etcd "$round" "$repeat" "${pids[@]:0:3}"
            else
              "$bin" bench "${copycat_servers[@]}" put --clients 64 --concurrency 4 --value-size 256 \
                --key-space 100000 --total "$(total 1000000)" --json | tag copycat "$round"
              memory copycat "$round" "$repeat" "${pids[@]:3:3}"
            fi
          done
        done ;;
      sessions)
        # 10,000 sessions from 10 processes (Copycat only: etcd has no
        # client sessions to compare with). First each process's 1,000
        # sessions write (sessions_served says how many made progress),
        # then they stay idle (log entries and wake-ups per second).
        if ((round == 1)); then
          for mode in put idle; do
            procs=()
            for p in $(seq 10); do
              if [[ $mode == put ]]; then
                "$bin" bench "${copycat_servers[@]}" put --clients 1000 --concurrency 1 \
                  --key-space 10000 --duration 20 --json >"$root/sessions-$mode-$p.json" &
              else
                "$bin" bench "${copycat_servers[@]}" idle --clients 1000 \
                  --duration 20 --json >"$root/sessions-$mode-$p.json" &
              fi
              procs+=($!)
            done
            wait "${procs[@]}"
            for p in $(seq 10); do tag copycat "$round" <"$root/sessions-$mode-$p.json"; done
          done
        fi ;;
      *) echo "unknown workload in BENCH_WORKLOADS: $workload" >&2; exit 2 ;;
    esac
  done
done

# Copycat alone (etcd has no queue; its counter is a compare-and-swap loop,
# `etcd-bench counter`, not run here): queue and counter.
if [[ ${COPYCAT_ALONE:-1} != 0 ]]; then
  copycat_bench() { "$bin" bench "${copycat_servers[@]}" "$@" --json | tag copycat 0; }
  copycat_bench queue --clients 64 --concurrency 1 --total "$(total 10000)"
  copycat_bench counter --clients 1000 --concurrency 1 --total "$(total 20000)"
fi
