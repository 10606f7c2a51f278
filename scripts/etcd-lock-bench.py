#!/usr/bin/env python3
"""Lock acquire/release cycles against etcd's v3 lock service, through its
JSON gateway (no Go toolchain needed): each client thread holds a lease and
loops lock -> unlock on one shared lock name, like `copycat bench lock`.

usage: etcd-lock-bench.py --endpoint 127.0.0.1:2379 --clients 64 --total 2000
Prints one JSON object: cycles, errors, seconds, throughput, latency (us).
"""
import argparse
import base64
import http.client
import json
import threading
import time


def call(conn, path, body):
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{path}: HTTP {response.status}: {data[:200]!r}")
    return json.loads(data)


def worker(endpoint, name, issued, lock, total, latencies, errors):
    host, port = endpoint.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    lease = call(conn, "/v3/lease/grant", {"TTL": 30})["ID"]
    while True:
        with lock:
            if issued[0] >= total:
                break
            issued[0] += 1
        started = time.monotonic()
        try:
            key = call(conn, "/v3/lock/lock", {"name": name, "lease": lease})["key"]
            call(conn, "/v3/lock/unlock", {"key": key})
            latencies.append((time.monotonic() - started) * 1e6)
        except Exception as error:  # counted and reported, the run goes on
            errors.append(str(error))
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
    call(conn, "/v3/lease/revoke", {"ID": lease})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", action="append", required=True)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--total", type=int, default=1000)
    args = parser.parse_args()
    name = base64.b64encode(b"bench-lock").decode()
    issued, lock, latencies, errors = [0], threading.Lock(), [], []
    threads = [
        threading.Thread(
            target=worker,
            args=(args.endpoint[i % len(args.endpoint)], name, issued, lock, args.total, latencies, errors),
        )
        for i in range(args.clients)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    latencies.sort()
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))]) if latencies else 0
    print(json.dumps({
        "workload": "etcd-lock",
        "clients": args.clients,
        "cycles": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": round(seconds, 3),
        "throughput": round(len(latencies) / seconds, 1),
        "latency_us": {"p50": pick(0.5), "p99": pick(0.99), "max": round(latencies[-1]) if latencies else 0},
    }))


if __name__ == "__main__":
    main()
