//! `copycat value|long|map|set|queue|lock|topic ...` against a real
//! three-server cluster (`copycat local`, separate processes, 127.0.0.1,
//! free ports). Every wait has a generous upper bound and no assertion
//! depends on timing.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod support;

use support::free_ports;

const LONG: Duration = Duration::from_secs(60);

fn copycat() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_copycat"));
    for (name, _) in std::env::vars() {
        if name.starts_with("COPYCAT_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command
}

fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn collect(stream: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// A `copycat` process whose output lines are collected as they come.
struct Proc {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Self {
        let mut child = copycat()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn copycat");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Self {
            child,
            stdout,
            stderr,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Wait for the first stdout line starting with `prefix`.
    fn wait_stdout(&mut self, prefix: &str) -> String {
        wait_for(LONG, &format!("a line starting with {prefix:?}"), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                let lines = self.lines();
                if let Some(line) = lines.iter().find(|l| l.starts_with(prefix)) {
                    return Some(line[prefix.len()..].to_string());
                }
                panic!("exited ({status}) first: {}", self.stderr_text());
            }
            self.lines()
                .iter()
                .find_map(|l| l.strip_prefix(prefix).map(str::to_string))
        })
    }

    fn wait_stderr(&mut self, text: &str) {
        wait_for(LONG, &format!("{text:?} on stderr"), || {
            self.stderr
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(text))
                .then_some(())
        })
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        wait_for(LONG, "the process to exit", || {
            self.child.try_wait().unwrap()
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `copycat local --nodes 3` on free ports: the process and a server
/// address.
fn cluster(dir: &std::path::Path) -> (Proc, String) {
    let base = free_ports(3);
    let mut local = Proc::spawn(&[
        "local",
        "--nodes",
        "3",
        "--base-port",
        &base.to_string(),
        "--data-dir",
        dir.to_str().unwrap(),
        "--no-fsync",
    ]);
    local.wait_stdout("leader: server ");
    (local, format!("127.0.0.1:{base}"))
}

/// Run `copycat KIND --server ADDR ARGS...`.
fn run(kind: &str, addr: &str, args: &[&str]) -> Output {
    copycat()
        .arg(kind)
        .args(["--server", addr])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run copycat")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Its stdout, after checking it succeeded.
fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}: {}",
        output.status,
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// Its stderr, after checking it failed with exit code 1.
fn failed(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout {}",
        text(&output.stdout)
    );
    text(&output.stderr)
}

#[test]
fn values_longs_maps_queues_topics_and_type_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_local, addr) = cluster(dir.path());

    // Value.
    assert_eq!(ok(&run("value", &addr, &["v", "set", "hello"])), "OK\n");
    assert_eq!(ok(&run("value", &addr, &["v", "get"])), "hello\n");
    let json = ok(&run("value", &addr, &["--json", "v", "get"]));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["value"], "hello");
    ok(&run("value", &addr, &["v", "clear"]));
    assert!(failed(&run("value", &addr, &["v", "get"])).contains("error: value \"v\" is unset"));

    // Long.
    assert_eq!(ok(&run("long", &addr, &["n", "add-and-get", "5"])), "5\n");
    assert_eq!(ok(&run("long", &addr, &["n", "add-and-get", "-2"])), "3\n");
    assert_eq!(ok(&run("long", &addr, &["n", "get"])), "3\n");
    // `copycat client add` is the long "counter".
    let out = copycat()
        .args(["client", "--server", &addr, "add", "7"])
        .output()
        .unwrap();
    assert_eq!(ok(&out), "7\n");
    assert_eq!(ok(&run("long", &addr, &["counter", "get"])), "7\n");

    // Map.
    assert_eq!(ok(&run("map", &addr, &["m", "put", "a", "1"])), "OK\n");
    ok(&run("map", &addr, &["m", "put", "b", "2"]));
    assert_eq!(ok(&run("map", &addr, &["m", "get", "a"])), "1\n");
    assert_eq!(ok(&run("map", &addr, &["m", "size"])), "2\n");
    assert_eq!(ok(&run("map", &addr, &["m", "keys"])), "a\nb\n");
    assert_eq!(ok(&run("map", &addr, &["m", "remove", "a"])), "1\n");
    assert!(failed(&run("map", &addr, &["m", "get", "a"])).contains("error: key \"a\" not found"));
    assert!(failed(&run("map", &addr, &["m", "remove", "a"])).contains("key \"a\" not found"));
    let json = ok(&run("map", &addr, &["m", "--json", "keys"]));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["keys"], serde_json::json!(["b"]));
    // `copycat client put` writes the map "kv".
    let out = copycat()
        .args(["client", "--server", &addr, "put", "k", "from client"])
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(ok(&run("map", &addr, &["kv", "get", "k"])), "from client\n");

    // Queue: a take waits for the offer.
    let mut taker = Proc::spawn(&["queue", "--server", &addr, "q", "take"]);
    ok(&run("queue", &addr, &["q", "offer", "job-1"]));
    assert!(taker.wait_exit().success(), "{}", taker.stderr_text());
    assert_eq!(taker.lines(), ["job-1"]);
    ok(&run("queue", &addr, &["q", "offer", "job-2"]));
    ok(&run("queue", &addr, &["q", "offer", "job-3"]));
    assert_eq!(ok(&run("queue", &addr, &["q", "size"])), "2\n");
    assert_eq!(
        ok(&run("queue", &addr, &["q", "take", "--timeout-secs", "30"])),
        "job-2\n"
    );
    assert_eq!(ok(&run("queue", &addr, &["q", "poll"])), "job-3\n");
    assert!(failed(&run("queue", &addr, &["q", "poll"])).contains("queue \"q\" is empty"));
    assert!(
        failed(&run("queue", &addr, &["q", "take", "--timeout-secs", "1"]))
            .contains("nothing to take")
    );

    // Topic: a subscriber sees the messages published after it subscribed.
    let mut subscriber = Proc::spawn(&[
        "topic",
        "--server",
        &addr,
        "--json",
        "t",
        "subscribe",
        "--count",
        "2",
    ]);
    subscriber.wait_stderr("subscribed to topic \"t\"");
    // Each answers how many subscribed sessions it was sent to.
    assert_eq!(ok(&run("topic", &addr, &["t", "publish", "first"])), "1\n");
    assert_eq!(ok(&run("topic", &addr, &["t", "publish", "second"])), "1\n");
    assert!(
        subscriber.wait_exit().success(),
        "{}",
        subscriber.stderr_text()
    );
    let messages: Vec<serde_json::Value> = subscriber
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        messages,
        [
            serde_json::json!({"seq": 1, "message": "first"}),
            serde_json::json!({"seq": 2, "message": "second"}),
        ]
    );

    // A name of another type, and a name nobody created.
    let error = failed(&run("map", &addr, &["q", "get", "x"]));
    assert!(
        error.contains("error: resource \"q\" is a queue, not a map"),
        "{error}"
    );
    let error = failed(&run("queue", &addr, &["m", "offer", "x"]));
    assert!(
        error.contains("error: resource \"m\" is a map, not a queue"),
        "{error}"
    );
    let error = failed(&run("set", &addr, &["nobody", "size"]));
    assert!(
        error.contains("error: no resource named \"nobody\""),
        "{error}"
    );
    // A read did not create it.
    failed(&run("set", &addr, &["nobody", "size"]));
}

#[test]
fn sets_multimaps_semaphores_latches_elections_and_watches() {
    let dir = tempfile::tempdir().unwrap();
    let (_local, addr) = cluster(dir.path());

    // A map watch prints the changes as they come.
    let mut watch = Proc::spawn(&[
        "map", "--server", &addr, "m", "watch", "--key", "a", "--count", "3",
    ]);
    watch.wait_stderr("watching map \"m\"");
    ok(&run("map", &addr, &["m", "put", "a", "1"]));
    ok(&run("map", &addr, &["m", "put", "other", "x"]));
    ok(&run("map", &addr, &["m", "put", "a", "2"]));
    ok(&run("map", &addr, &["m", "remove", "a"]));
    assert!(watch.wait_exit().success(), "{}", watch.stderr_text());
    assert_eq!(
        watch.lines(),
        ["added \"a\" \"1\"", "updated \"a\" \"2\"", "removed \"a\""]
    );

    // Value compare-and-set.
    ok(&run("value", &addr, &["v", "cas", "--absent", "one"]));
    assert!(
        failed(&run("value", &addr, &["v", "cas", "--absent", "two"]))
            .contains("compare-and-set failed")
    );
    ok(&run("value", &addr, &["v", "cas", "one", "two"]));
    assert_eq!(ok(&run("value", &addr, &["v", "get"])), "two\n");

    // Set.
    assert_eq!(ok(&run("set", &addr, &["s", "add", "x"])), "true\n");
    assert_eq!(ok(&run("set", &addr, &["s", "add", "x"])), "false\n");
    ok(&run("set", &addr, &["s", "add", "y"]));
    assert_eq!(ok(&run("set", &addr, &["s", "members"])), "x\ny\n");
    assert_eq!(ok(&run("set", &addr, &["s", "contains", "y"])), "true\n");
    ok(&run("set", &addr, &["s", "remove", "y"]));
    assert!(failed(&run("set", &addr, &["s", "remove", "y"])).contains("not in set"));

    // Multimap.
    ok(&run("multimap", &addr, &["mm", "put", "k", "b"]));
    ok(&run("multimap", &addr, &["mm", "put", "k", "a"]));
    assert_eq!(ok(&run("multimap", &addr, &["mm", "get", "k"])), "a\nb\n");
    assert_eq!(ok(&run("multimap", &addr, &["mm", "size"])), "2\n");
    ok(&run("multimap", &addr, &["mm", "remove-entry", "k", "a"]));
    assert_eq!(ok(&run("multimap", &addr, &["mm", "remove", "k"])), "b\n");
    assert!(failed(&run("multimap", &addr, &["mm", "remove", "k"])).contains("not found"));

    // Semaphore: two permits, one held by a process.
    let mut holder = Proc::spawn(&[
        "semaphore",
        "--server",
        &addr,
        "sem",
        "acquire",
        "--permits",
        "2",
    ]);
    holder.wait_stdout("acquired 1");
    assert_eq!(ok(&run("semaphore", &addr, &["sem", "available"])), "1\n");
    holder.terminate();
    assert!(holder.wait_exit().success(), "{}", holder.stderr_text());
    assert_eq!(ok(&run("semaphore", &addr, &["sem", "available"])), "2\n");

    // Latch: a waiter returns once the count reaches 0.
    assert_eq!(
        ok(&run("latch", &addr, &["go", "count-down", "--count", "2"])),
        "1\n"
    );
    let mut waiter = Proc::spawn(&["latch", "--server", &addr, "go", "wait"]);
    assert_eq!(ok(&run("latch", &addr, &["go", "count"])), "1\n");
    assert_eq!(ok(&run("latch", &addr, &["go", "count-down"])), "0\n");
    assert!(waiter.wait_exit().success(), "{}", waiter.stderr_text());
    assert_eq!(waiter.lines(), ["open"]);

    // Election: the campaigner leads until it exits.
    let mut leader = Proc::spawn(&["election", "--server", &addr, "e", "campaign"]);
    let term: u64 = leader.wait_stdout("").trim().parse().expect("a term");
    let out = ok(&run("election", &addr, &["--json", "e", "leader"]));
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["term"], term);
    leader.terminate();
    assert!(leader.wait_exit().success(), "{}", leader.stderr_text());
    assert!(failed(&run("election", &addr, &["e", "leader"])).contains("has no leader"));

    // Group: two members, the first leads; it leaves on exit.
    let mut first = Proc::spawn(&["group", "--server", &addr, "g", "join", "one"]);
    first.wait_stdout("one");
    let mut second = Proc::spawn(&["group", "--server", &addr, "g", "join", "two"]);
    second.wait_stdout("two");
    assert!(ok(&run("group", &addr, &["g", "leader"])).starts_with("one term "));
    assert_eq!(
        ok(&run("group", &addr, &["g", "members"])),
        "one alive \"\"\ntwo alive \"\"\n"
    );
    // Messaging: direct with a reply, then a broadcast; each member prints
    // what it received.
    let mut solo = Proc::spawn(&[
        "group",
        "--server",
        &addr,
        "messages",
        "join",
        "solo",
        "--reply-with",
        "pong",
    ]);
    solo.wait_stdout("solo");
    let receipt = ok(&run(
        "group",
        &addr,
        &["messages", "send", "ping", "--to", "solo", "--reply"],
    ));
    assert!(
        receipt.trim_end().ends_with(" delivered to solo: pong"),
        "{receipt}"
    );
    let got = solo.wait_stdout("message ");
    assert!(got.ends_with(": ping"), "{got}");
    let receipts = ok(&run("group", &addr, &["g", "send", "hello", "--broadcast"]));
    let mut delivered: Vec<&str> = receipts
        .lines()
        .map(|line| line.rsplit(' ').next().unwrap())
        .collect();
    delivered.sort();
    assert_eq!(delivered, ["one", "two"], "{receipts}");
    assert!(first.wait_stdout("message ").ends_with(": hello"));
    assert!(second.wait_stdout("message ").ends_with(": hello"));
    solo.terminate();
    assert!(solo.wait_exit().success(), "{}", solo.stderr_text());
    // Nobody left in group messages: a message has no recipient.
    let none = run("group", &addr, &["messages", "send", "anyone?"]);
    assert!(!none.status.success(), "{}", text(&none.stdout));

    first.terminate();
    assert!(first.wait_exit().success(), "{}", first.stderr_text());
    assert!(ok(&run("group", &addr, &["g", "leader"])).starts_with("two term "));
    second.terminate();
    assert!(second.wait_exit().success(), "{}", second.stderr_text());

    // Every resource, by type; one described, then deleted.
    let all = ok(&run("resources", &addr, &["list"]));
    assert!(all.lines().any(|l| l == "g group"), "{all}");
    assert!(all.lines().any(|l| l == "messages group"), "{all}");
    let groups = ok(&run("resources", &addr, &["list", "--type", "group"]));
    assert_eq!(groups, "g group\nmessages group\n");
    let unknown = run("resources", &addr, &["list", "--type", "groups"]);
    assert!(
        text(&unknown.stderr).contains("unknown resource type \"groups\""),
        "{}",
        text(&unknown.stderr)
    );
    assert!(ok(&run("resources", &addr, &["info", "messages"])).starts_with("messages group "));
    assert_eq!(
        ok(&run("resources", &addr, &["delete", "messages"])),
        "OK\n"
    );
    assert!(failed(&run("resources", &addr, &["info", "messages"])).contains("no resource"));
    assert!(failed(&run("resources", &addr, &["delete", "messages"])).contains("no resource"));
    let groups = ok(&run("resources", &addr, &["list", "--type", "group"]));
    assert_eq!(groups, "g group\n");
}

#[test]
fn a_second_lock_acquire_waits_for_the_first_process_and_gets_a_larger_token() {
    let dir = tempfile::tempdir().unwrap();
    let (_local, addr) = cluster(dir.path());

    let mut first = Proc::spawn(&["lock", "--server", &addr, "l", "acquire"]);
    let token: u64 = first.wait_stdout("").trim().parse().expect("a token");
    let mut second = Proc::spawn(&["lock", "--server", &addr, "--json", "l", "acquire"]);
    // Once the second one is queued it waits: no token while the first
    // process holds the lock.
    wait_for(LONG, "the second acquire to wait", || {
        let out = run("lock", &addr, &["l", "waiters"]);
        (out.status.success() && text(&out.stdout).trim() == "1").then_some(())
    });
    let holder = ok(&run("lock", &addr, &["--json", "l", "holder"]));
    let holder: serde_json::Value = serde_json::from_str(&holder).unwrap();
    assert_eq!(holder["token"], token);
    assert!(second.running());
    assert!(second.lines().is_empty(), "{:?}", second.lines());

    // The first process exits (releasing the lock); the second gets it.
    first.terminate();
    assert!(first.wait_exit().success(), "{}", first.stderr_text());
    let line = second.wait_stdout("{");
    let answer: serde_json::Value = serde_json::from_str(&format!("{{{line}")).unwrap();
    assert_eq!(answer["acquired"], true);
    let second_token = answer["token"].as_u64().unwrap();
    assert!(second_token > token, "{second_token} after {token}");

    // A holder that dies without releasing: the lock goes to the next
    // waiter once the dead session expires.
    let mut third = Proc::spawn(&["lock", "--server", &addr, "l", "acquire"]);
    wait_for(LONG, "the third acquire to wait", || {
        let out = run("lock", &addr, &["l", "waiters"]);
        (out.status.success() && text(&out.stdout).trim() == "1").then_some(())
    });
    assert!(third.lines().is_empty(), "{:?}", third.lines());
    second.child.kill().unwrap();
    second.child.wait().unwrap();
    let third_token: u64 = third.wait_stdout("").trim().parse().expect("a token");
    assert!(
        third_token > second_token,
        "{third_token} after {second_token}"
    );
    third.terminate();
    assert!(third.wait_exit().success(), "{}", third.stderr_text());

    // A lock is no map.
    let error = failed(&run("map", &addr, &["l", "size"]));
    assert!(
        error.contains("resource \"l\" is a lock, not a map"),
        "{error}"
    );
}
