//! Operating the `copycat` binary as separate processes on 127.0.0.1:
//! configuration files, the environment and flags; validation errors; the
//! HTTP endpoint; graceful shutdown on SIGTERM; the key-value commands;
//! `copycat bench`. Timeouts are generous upper bounds only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

mod support;

use copycat_client::Client;
use copycat_primitives::{Long, Primitives};
use support::{cluster_cmd, cluster_rows, copycat, free_port, ok, text, wait_for, Proc, LONG};

/// A server started with `args` in `dir`: its process and its address.
fn server(args: &[&str], dir: &Path) -> (Proc, String) {
    let mut command = copycat();
    command.arg("server").args(args).current_dir(dir);
    let mut proc = Proc::spawn(command);
    let addr = proc.wait_stdout("server 1 listening on ");
    (proc, addr)
}

fn client(addr: &str, args: &[&str]) -> Output {
    copycat()
        .args(["client", "--server", addr, "--timeout-secs", "30"])
        .args(args)
        .output()
        .expect("run copycat client")
}

fn client_stdin(addr: &str, args: &[&str], input: &[u8]) -> Output {
    let mut child = copycat()
        .args(["client", "--server", addr, "--timeout-secs", "30"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().expect("wait")
}

/// `GET path` over HTTP/1.1: the status code and the body.
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// The value of the metric line that starts with `name` and contains
/// `label` (`""` for any).
fn metric(metrics: &str, name: &str, label: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn is_leader(http: &str) -> bool {
    http_get(http, "/metrics")
        .and_then(|(_, body)| metric(&body, "copycat_role{", "role=\"leader\""))
        == Some(1.0)
}

#[test]
fn invalid_settings_are_refused_naming_the_key_the_value_and_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let out = copycat()
        .args(["server", "--election-timeout-ms", "5"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("election-timeout-ms = 5: must be at least 50 (from --election-timeout-ms)"),
        "{}",
        text(&out.stderr)
    );
    let out = copycat()
        .args(["server"])
        .env("COPYCAT_MAX_CONNECTIONS", "none")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "max-connections = none: must be a whole number (from COPYCAT_MAX_CONNECTIONS)"
        ),
        "{}",
        text(&out.stderr)
    );
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "heartbeat-ms = 600\n").unwrap();
    let out = copycat()
        .args(["server", "--config"])
        .arg(&file)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "heartbeat-ms = 600: must be positive and at most half of election-timeout-ms (750)"
        ) && stderr.contains(&file.display().to_string()),
        "{stderr}"
    );
    // Nothing was created: the settings are checked before anything starts.
    assert!(!dir.path().join("copycat-data").exists());
    // A data directory that cannot be created is named once, with its cause.
    std::fs::write(dir.path().join("file"), "").unwrap();
    let out = copycat()
        .args(["server", "--listen", "127.0.0.1:0", "--http-listen", "off"])
        .args(["--data-dir", "file/sub"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("file/sub"), "{stderr}");
    assert_eq!(
        stderr.matches("Not a directory").count(),
        1,
        "the cause is said once: {stderr}"
    );
}

#[test]
fn the_environment_overrides_the_file_and_a_flag_overrides_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("server.toml");
    std::fs::write(
        &file,
        "id = 2\nlisten = \"127.0.0.1:7001\"\nelection-timeout-ms = 1000\nheartbeat-ms = 100\nlog-format = \"json\"\n",
    )
    .unwrap();
    let out = copycat()
        .args(["server", "--print-config", "--config"])
        .arg(&file)
        .args(["--listen", "127.0.0.1:7003"])
        .env("COPYCAT_ELECTION_TIMEOUT_MS", "2000")
        .env("COPYCAT_LISTEN", "127.0.0.1:7002")
        .output()
        .unwrap();
    let printed = ok(&out);
    for line in [
        "id = 2",                           // the file over the default
        "listen = \"127.0.0.1:7003\"",      // the flag over the environment
        "http-listen = \"127.0.0.1:8003\"", // derived from listen
        "election-timeout-ms = 2000",       // the environment over the file
        "heartbeat-ms = 100",               // the file
        "log-format = \"json\"",
        "fsync = true", // the default
    ] {
        assert!(printed.lines().any(|l| l == line), "{line} in\n{printed}");
    }

    // The same precedence when it serves: the environment's address wins
    // over the file's, and a flag over both.
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    std::fs::write(
        &file,
        format!("listen = \"127.0.0.1:{file_port}\"\nhttp-listen = \"off\"\nfsync = false\n"),
    )
    .unwrap();
    let mut command = copycat();
    command
        .args(["server", "--config"])
        .arg(&file)
        .env("COPYCAT_LISTEN", format!("127.0.0.1:{env_port}"))
        .current_dir(dir.path());
    let mut proc = Proc::spawn(command);
    let line = proc.wait_stdout("server 1 listening on ");
    assert_eq!(line, format!("127.0.0.1:{env_port}"));
    assert!(proc.stdout_lines().iter().all(|l| !l.contains(" http on ")));
    proc.signal("TERM");
    assert!(proc.wait_exit().success());

    let mut command = copycat();
    command
        .args(["server", "--config"])
        .arg(&file)
        .args(["--listen", &format!("127.0.0.1:{flag_port}")])
        .env("COPYCAT_LISTEN", format!("127.0.0.1:{env_port}"))
        .current_dir(dir.path());
    let mut proc = Proc::spawn(command);
    let line = proc.wait_stdout("server 1 listening on ");
    assert_eq!(line, format!("127.0.0.1:{flag_port}"));
    proc.signal("INT");
    assert!(proc.wait_exit().success());
}

#[test]
fn copycat_server_with_no_arguments_serves_a_single_server_cluster() {
    let dir = tempfile::tempdir().unwrap();
    // The defaults: 127.0.0.1:5700 and HTTP on 6700. Wait for them to be
    // free (another test run may hold them for a moment).
    wait_for(LONG, "ports 5700 and 6700 to be free", || {
        let a = TcpListener::bind("127.0.0.1:5700").ok()?;
        let b = TcpListener::bind("127.0.0.1:6700").ok()?;
        drop((a, b));
        Some(())
    });
    let mut command = copycat();
    command.arg("server").current_dir(dir.path());
    let mut proc = Proc::spawn(command);
    assert_eq!(proc.wait_stdout("server 1 listening on "), "127.0.0.1:5700");
    assert_eq!(proc.wait_stdout("server 1 http on "), "127.0.0.1:6700");
    ok(&client("127.0.0.1:5700", &["put", "greeting", "hello"]));
    assert_eq!(
        ok(&client("127.0.0.1:5700", &["read", "greeting"])),
        "hello\n"
    );
    let (code, body) = http_get("127.0.0.1:6700", "/ready").expect("ready");
    assert_eq!(code, 200, "{body}");
    assert!(dir.path().join("copycat-data").is_dir());
    // INFO lines by default: the leader change is logged.
    proc.wait_stderr("leader changed");
    proc.signal("TERM");
    assert!(proc.wait_exit().success(), "{}", proc.stderr_text());
}

#[test]
fn delete_cas_watch_and_values_from_stdin_or_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = server(
        &[
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "off",
            "--fsync",
            "false",
        ],
        dir.path(),
    );
    let mut watch = {
        let mut command = copycat();
        command.args(["client", "--server", &addr, "watch", "k", "--count", "3"]);
        Proc::spawn(command)
    };
    watch.wait_stderr("watching \"k\"");
    let mut all = {
        let mut command = copycat();
        command.args([
            "client", "--server", &addr, "--json", "watch", "--all", "--count", "4",
        ]);
        Proc::spawn(command)
    };
    all.wait_stderr("watching every key");

    // A value from stdin, kept exactly (newline and all).
    ok(&client_stdin(
        &addr,
        &["put", "k", "-"],
        b"line one\nline two\n",
    ));
    assert_eq!(ok(&client(&addr, &["read", "k"])), "line one\nline two\n\n");
    // A value from a file.
    let file = dir.path().join("value.txt");
    std::fs::write(&file, "from a file").unwrap();
    ok(&client(
        &addr,
        &["put", "f", "--value-file", file.to_str().unwrap()],
    ));
    let read = ok(&client(&addr, &["--json", "read", "f"]));
    let read: serde_json::Value = serde_json::from_str(&read).unwrap();
    assert_eq!(read["value"], "from a file");
    let missing = dir.path().join("missing.txt");
    let out = client(
        &addr,
        &["put", "g", "--value-file", missing.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&missing.display().to_string()));

    // Compare-and-set: a mismatch fails with the value it found.
    let out = client(&addr, &["cas", "k", "wrong", "new"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "error: compare-and-set failed: \"k\" is \"line one\\nline two\\n\", not \"wrong\""
        ),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    ok(&client_stdin(
        &addr,
        &["cas", "k", "line one\nline two\n", "-"],
        b"v2",
    ));
    assert_eq!(ok(&client(&addr, &["read", "k"])), "v2\n");
    // Create only if absent.
    let out = client(&addr, &["--json", "cas", "--absent", "k", "v3"]);
    assert_eq!(out.status.code(), Some(1));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["swapped"], false);
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("is \"v2\", not unset"));
    ok(&client(&addr, &["cas", "--absent", "new-key", "created"]));
    assert_eq!(ok(&client(&addr, &["read", "new-key"])), "created\n");

    // Delete, and a missing key: exit code 1 and a message on stderr.
    assert_eq!(ok(&client(&addr, &["delete", "k"])), "deleted\n");
    for args in [&["delete", "k"][..], &["read", "k"][..]] {
        let out = client(&addr, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            text(&out.stderr).contains("key \"k\" not found"),
            "{args:?}"
        );
    }
    let out = client(&addr, &["--json", "read", "k"]);
    assert_eq!(out.status.code(), Some(1));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer, serde_json::json!({"key": "k", "value": null}));
    // The application's own error text.
    ok(&client(&addr, &["add", &i64::MAX.to_string()]));
    let out = client(&addr, &["add", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), "error: counter overflow");

    // The watch of "k" saw its three changes, in order; the other one
    // every key's.
    assert!(watch.wait_exit().success(), "{}", watch.stderr_text());
    assert_eq!(
        watch.stdout_lines(),
        vec![
            "put \"k\" \"line one\\nline two\\n\"".to_string(),
            "put \"k\" \"v2\"".to_string(),
            "delete \"k\"".to_string(),
        ]
    );
    assert!(all.wait_exit().success(), "{}", all.stderr_text());
    let events: Vec<serde_json::Value> = all
        .stdout_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let keys: Vec<&str> = events.iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["k", "f", "k", "new-key"]);
    assert_eq!(events[0]["event"], "put");
    assert_eq!(events[0]["previous"], serde_json::Value::Null);
    assert_eq!(events[2]["previous"], "line one\nline two\n");
    assert_eq!(events[2]["value"], "v2");
}

#[test]
fn bench_reports_throughput_and_latency_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = server(
        &[
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "off",
            "--fsync",
            "false",
        ],
        dir.path(),
    );
    // A report for `total` requests of `workload`, all answered.
    let report = |workload: &str, total: u64, concurrency: &str| {
        let out = copycat()
            .args([
                "bench",
                "--server",
                &addr,
                workload,
                "--total",
                &total.to_string(),
            ])
            .args(["--clients", "4", "--concurrency", concurrency, "--json"])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_str(&ok(&out)).expect("JSON report");
        assert_eq!(report["workload"], workload);
        assert_eq!(report["requests"], total, "{report}");
        assert_eq!(report["errors"], 0, "{report}");
        report
    };
    for workload in ["put", "mixed"] {
        let report = report(workload, 200, "2");
        let latency = &report["latency_us"];
        let p50 = latency["p50"].as_u64().unwrap();
        let p99 = latency["p99"].as_u64().unwrap();
        let max = latency["max"].as_u64().unwrap();
        assert!(0 < p50 && p50 <= p99 && p99 <= max, "{report}");
        assert!(report["throughput"].as_f64().unwrap() > 0.0);
    }
    // Sessions of their own connections, and idle sessions: what they cost
    // is reported, and none of them is lost.
    let out = copycat()
        .args(["bench", "--server", &addr, "put", "--total", "50"])
        .args(["--clients", "3", "--connections", "0", "--json"])
        .output()
        .unwrap();
    let own: serde_json::Value = serde_json::from_str(&ok(&out)).expect("JSON report");
    assert_eq!(
        (own["requests"].as_u64(), own["connections"].as_u64()),
        (Some(50), Some(0))
    );
    assert_eq!(own["sessions_served"], 3, "{own}");
    let out = copycat()
        .args(["bench", "--server", &addr, "idle", "--duration", "1.5"])
        .args(["--clients", "20", "--json"])
        .output()
        .unwrap();
    let idle: serde_json::Value = serde_json::from_str(&ok(&out)).expect("JSON report");
    assert_eq!(idle["workload"], "idle");
    assert_eq!(
        (idle["requests"].as_u64(), idle["errors"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(idle["sessions_lost"], 0, "{idle}");
    assert_eq!(idle["connections"], 1, "{idle}");
    assert!(idle["log_entries_per_second"].as_f64().is_some(), "{idle}");
    assert!(idle["wakeups_per_second"].as_f64().unwrap() > 0.0, "{idle}");
    let refused = copycat()
        .args(["bench", "--server", &addr, "idle", "--total", "5"])
        .output()
        .unwrap();
    assert!(
        text(&refused.stderr).contains("takes --duration"),
        "{}",
        text(&refused.stderr)
    );
    // The primitive workloads: every increment counted once, every offered
    // item polled again, the lock free at the end.
    for workload in ["lock", "counter", "queue"] {
        report(workload, 40, "1");
    }
    let primitive = |args: &[&str]| {
        let out = copycat()
            .args([args[0], "--server", &addr])
            .args(&args[1..])
            .output()
            .unwrap();
        ok(&out).trim().to_string()
    };
    assert_eq!(primitive(&["long", "bench-counter", "get"]), "40");
    assert_eq!(primitive(&["queue", "bench-queue", "size"]), "0");
    let holder = copycat()
        .args(["lock", "--server", &addr, "bench-lock", "holder"])
        .output()
        .unwrap();
    assert!(
        text(&holder.stderr).contains("is free"),
        "the lock is free: {}",
        text(&holder.stderr)
    );
    let refused = copycat()
        .args(["bench", "--server", &addr, "lock", "--total", "4"])
        .args(["--concurrency", "2"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("--concurrency 1"),
        "{}",
        text(&refused.stderr)
    );
    // The puts landed: 200 sequentially numbered keys of a small key space.
    let out = copycat()
        .args([
            "bench",
            "--server",
            &addr,
            "put",
            "--total",
            "10",
            "--clients",
            "1",
        ])
        .args([
            "--sequential",
            "--key-space",
            "5",
            "--key-size",
            "4",
            "--value-size",
            "3",
        ])
        .output()
        .unwrap();
    assert!(ok(&out).contains("10 requests (0 failed)"));
    assert_eq!(ok(&client(&addr, &["read", "0004"])), "xxx\n");
}

/// Three servers from configuration files; metrics, health and
/// readiness; SIGTERM of the leader while a client writes; readiness lost
/// with the quorum.
#[test]
fn a_cluster_from_config_files_hands_over_leadership_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let members: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (port, _))| format!("\"{}=127.0.0.1:{port}\"", i + 1))
        .collect();
    let mut procs = Vec::new();
    let mut https = Vec::new();
    for (i, (port, http)) in ports.iter().enumerate() {
        let id = i + 1;
        let file = dir.path().join(format!("server-{id}.toml"));
        std::fs::write(
            &file,
            format!(
                "id = {id}\nlisten = \"127.0.0.1:{port}\"\nhttp-listen = \"127.0.0.1:{http}\"\n\
                 data-dir = \"data-{id}\"\nmembers = [{}]\nelection-timeout-ms = 500\nheartbeat-ms = 100\n",
                members.join(", ")
            ),
        )
        .unwrap();
        let mut command = copycat();
        command
            .args(["server", "--config"])
            .arg(&file)
            .current_dir(dir.path());
        let mut proc = Proc::spawn(command);
        assert_eq!(
            proc.wait_stdout(&format!("server {id} http on ")),
            format!("127.0.0.1:{http}")
        );
        procs.push(Some(proc));
        https.push(format!("127.0.0.1:{http}"));
    }
    let leader = wait_for(LONG, "a leader", || https.iter().position(|h| is_leader(h)));
    for http in &https {
        let (code, body) = http_get(http, "/health").expect("health");
        assert_eq!((code, body.trim()), (200, "ok"));
        wait_for(LONG, "every server ready", || {
            (http_get(http, "/ready")?.0 == 200).then_some(())
        });
    }

    // A client writes while the leader gets SIGTERM.
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|(p, _)| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (session, kv) = runtime.block_on(async {
        let client = Client::builder()
            .servers(addrs.iter().map(|a| a.to_string()))
            .request_timeout(Duration::from_secs(30))
            .connect()
            .await
            .expect("client");
        let counter = Long::open(&Primitives::new(client.clone()), "counter")
            .await
            .expect("the counter");
        (client, counter)
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let kv = kv.clone();
        let handle = runtime.handle().clone();
        std::thread::spawn(move || {
            handle.block_on(async move {
                let mut written = 0i64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || written < 50 {
                    match kv.add_and_get(1).await {
                        Ok(v) => {
                            written += 1;
                            assert_eq!(v, written, "each add applied once");
                        }
                        other => return Err(format!("write {} failed: {other:?}", written + 1)),
                    }
                }
                Ok(written)
            })
        })
    };
    wait_for(LONG, "writes before the shutdown", || {
        let (_, body) = http_get(&https[leader], "/metrics")?;
        (metric(
            &body,
            "copycat_request_duration_seconds_count{",
            "kind=\"command\"",
        )? >= 20.0)
            .then_some(())
    });
    let metrics = http_get(&https[leader], "/metrics").unwrap().1;
    for name in [
        "copycat_term{",
        "copycat_leader{",
        "copycat_commit_index{",
        "copycat_applied_index{",
        "copycat_log_entries_appended_total{",
        "copycat_log_appended_bytes_total{",
        "copycat_fsync_duration_seconds_count{",
        "copycat_fsync_batch_entries_count{",
        "copycat_sessions{",
        "copycat_client_connections{",
        "copycat_queue_depth{",
        "copycat_elections_total{",
    ] {
        assert!(metrics.contains(name), "{name} in\n{metrics}");
    }
    assert!(metric(&metrics, "copycat_fsync_duration_seconds_count{", "").unwrap() > 0.0);
    // The leader has a send queue for each of the other two servers.
    for peer in (1..=3u64).filter(|id| *id != leader as u64 + 1) {
        assert!(
            metric(
                &metrics,
                "copycat_peer_queue_depth{",
                &format!("peer=\"{peer}\"")
            )
            .is_some(),
            "queue depth of peer {peer} in\n{metrics}"
        );
    }
    assert_eq!(
        metric(&metrics, "copycat_leader{", "").unwrap(),
        (leader + 1) as f64
    );

    let mut old = procs[leader].take().unwrap();
    old.signal("TERM");
    let status = old.wait_exit();
    assert!(status.success(), "{status}: {}", old.stderr_text());
    assert!(
        old.stderr_text()
            .contains("handed leadership over before stopping"),
        "{}",
        old.stderr_text()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap().expect("the client saw no error");
    let read = runtime.block_on(kv.get()).expect("read after the handover");
    assert_eq!(read, written);
    let new_leader = wait_for(LONG, "a new leader", || {
        https
            .iter()
            .enumerate()
            .position(|(i, h)| i != leader && is_leader(h))
    });
    assert_ne!(new_leader, leader);
    drop(kv);
    runtime.block_on(session.close());

    // Kill the new leader: the last server has no quorum. It stays
    // healthy (it runs, its disk works) but is not ready.
    let survivor = (0..3).find(|i| *i != leader && *i != new_leader).unwrap();
    let (code, _) = http_get(&https[survivor], "/ready").unwrap();
    assert_eq!(code, 200);
    procs[new_leader].take().unwrap().signal("KILL");
    let body = wait_for(LONG, "the survivor to become unready", || {
        let (code, body) = http_get(&https[survivor], "/ready")?;
        (code == 503).then_some(body)
    });
    assert!(body.contains("no leader known"), "{body}");
    let (code, body) = http_get(&https[survivor], "/health").unwrap();
    assert_eq!((code, body.trim()), (200, "ok"));
    let mut last = procs[survivor].take().unwrap();
    last.signal("TERM");
    assert!(last.wait_exit().success());
}

#[test]
fn server_help_documents_every_key_its_default_and_its_variable() {
    let out = copycat().args(["server", "--help"]).output().unwrap();
    let help = ok(&out);
    for (key, _, _) in copycat_cli::config::KEYS {
        let flag = if *key == "members" { "member" } else { key };
        let entry = help
            .split("\n\n")
            .find(|entry| entry.trim_start().starts_with(&format!("--{flag} ")))
            .unwrap_or_else(|| panic!("--{flag} in\n{help}"));
        assert!(entry.contains("[default: "), "{entry}");
        assert!(
            entry.contains(&copycat_cli::config::env_name(key)),
            "{entry}"
        );
    }
}

/// A second server joins a running one with `--join`; `copycat cluster`
/// shows both, hands leadership over and removes the first.
#[test]
fn a_server_joins_with_join_and_cluster_commands_resize_the_cluster() {
    let root = tempfile::tempdir().expect("temp dir");
    let (p1, p2) = (free_port(), free_port());
    let a1 = format!("127.0.0.1:{p1}");
    let a2 = format!("127.0.0.1:{p2}");
    let (_first, _) = server(
        &[
            "--id",
            "1",
            "--listen",
            &a1,
            "--http-listen",
            "off",
            "--data-dir",
            "d1",
        ],
        root.path(),
    );
    let mut command = copycat();
    command
        .args([
            "server",
            "--id",
            "2",
            "--listen",
            &a2,
            "--http-listen",
            "off",
        ])
        .args(["--data-dir", "d2", "--join", &a1])
        .current_dir(root.path());
    let mut second = Proc::spawn(command);
    second.wait_stdout("server 2 listening on ");

    // Both members, both reachable, the new one promoted to voter.
    let rows = wait_for(LONG, "server 2 promoted", || {
        let rows = cluster_rows(&a1);
        let voters = rows
            .iter()
            .filter(|r| r["kind"] == "voter" && r["reachable"] == true)
            .count();
        (voters == 2).then_some(rows)
    });
    let addresses: Vec<&str> = rows.iter().filter_map(|r| r["address"].as_str()).collect();
    assert_eq!(addresses, vec![a1.as_str(), a2.as_str()], "{rows:?}");
    let table = ok(&cluster_cmd(&a2, &["members"]));
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&a1) && table.contains(&a2), "{table}");

    // Leadership to server 2, through server 1 (redirects are followed).
    assert_eq!(
        ok(&cluster_cmd(&a1, &["transfer-leader", "2"])).trim(),
        "done"
    );
    let rows = cluster_rows(&a1);
    let leader: Vec<u64> = rows
        .iter()
        .filter(|r| r["state"] == "leader")
        .filter_map(|r| r["id"].as_u64())
        .collect();
    assert_eq!(leader, vec![2], "{rows:?}");

    // Remove server 1 (asked of server 1 itself: it names the leader).
    assert_eq!(ok(&cluster_cmd(&a1, &["remove", "1"])).trim(), "done");
    let members = ok(&cluster_cmd(&a2, &["--json", "members"]));
    let members: Vec<serde_json::Value> = serde_json::from_str(&members).expect("json");
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0]["id"], 2);
    // Unknown roles are refused with the rule.
    let bad = cluster_cmd(&a2, &["add", "3", "127.0.0.1:1", "--as", "boss"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("expected voter, passive or reserve"),
        "{}",
        text(&bad.stderr)
    );
}

/// `copycat local --http-base-port P`: server N serves metrics, health and
/// readiness at P + N - 1, and one of them reports itself leader.
#[test]
fn local_serves_metrics_and_health_with_http_base_port() {
    let dir = tempfile::tempdir().unwrap();
    let base = support::free_ports(3);
    let http = support::free_ports(3);
    let mut command = copycat();
    command.args(["local", "--nodes", "3", "--no-fsync"]).args([
        "--base-port",
        &base.to_string(),
        "--http-base-port",
        &http.to_string(),
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let mut local = Proc::spawn(command);
    let first = local.wait_stdout("server 1 listening on ");
    assert!(
        first.ends_with(&format!("metrics at http://127.0.0.1:{http}/metrics")),
        "{first}"
    );
    local.wait_stdout("leader: server ");
    let endpoints: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", http + i)).collect();
    for endpoint in &endpoints {
        let (code, _) = http_get(endpoint, "/health").expect("health");
        assert_eq!(code, 200, "health of {endpoint}");
    }
    wait_for(LONG, "a leader in the metrics", || {
        endpoints
            .iter()
            .filter(|e| is_leader(e))
            .count()
            .eq(&1)
            .then_some(())
    });
}
