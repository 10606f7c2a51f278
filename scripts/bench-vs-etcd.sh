#!/usr/bin/env bash
# Side-by-side coordination benchmarks: a 3-member etcd cluster and a
# 3-server Copycat cluster (separate processes, fsync on, loopback), runs
# interleaved, the load average recorded with each. Needs Debian's
# etcd-server (apt-get install etcd-server) and a release build
# (cargo build --release -p copycat-cli).
#
# usage: scripts/bench-vs-etcd.sh [ROUNDS]   (results: JSON lines on stdout)
set -euo pipefail
rounds=${1:-2}
root=$(mktemp -d /tmp/copycat-vs-etcd.XXXXXX)
bin=${COPYCAT_BIN:-$(dirname "$0")/../target/release/copycat}
here=$(cd "$(dirname "$0")" && pwd)
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
    --data-dir "$root/copycat-$n" --max-connections 8192 "${members[@]}" >"$root/copycat-$n.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 100); do
  if ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:23791 endpoint health >/dev/null 2>&1 &&
     "$bin" cluster --server 127.0.0.1:25701 status >/dev/null 2>&1; then break; fi
  sleep 0.2
done

load() { cut -d' ' -f1 /proc/loadavg; }
tag() { sed "s/^{/{\"system\":\"$1\",\"round\":$2,\"load1\":$(load),/"; }
for round in $(seq "$rounds"); do
  for clients in 1 64; do
    total=$((clients == 1 ? 500 : 2000))
    python3 "$here/etcd-lock-bench.py" --clients "$clients" --total "$total" \
      --endpoint 127.0.0.1:23791 --endpoint 127.0.0.1:23792 --endpoint 127.0.0.1:23793 | tag etcd "$round"
    "$bin" bench --server 127.0.0.1:25701 lock --clients "$clients" --concurrency 1 \
      --total "$total" --json | tag copycat "$round"
  done
done

# Copycat alone (no like-for-like etcd client here): map, queue, counter.
copycat_bench() { "$bin" bench --server 127.0.0.1:25701 "$@" --json | tag copycat 0; }
copycat_bench put --clients 64 --concurrency 1 --total 20000
copycat_bench get --clients 64 --concurrency 1 --total 20000
copycat_bench queue --clients 64 --concurrency 1 --total 10000
copycat_bench counter --clients 1000 --concurrency 1 --total 20000
