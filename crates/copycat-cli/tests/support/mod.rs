//! Helpers shared by the tests that run the `copycat` binary as separate
//! processes. Timeouts are generous upper bounds only.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest any single wait in these tests may take.
pub const LONG: Duration = Duration::from_secs(60);

pub fn copycat() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_copycat"));
    // The tests decide every setting themselves.
    for (name, _) in std::env::vars() {
        if name.starts_with("COPYCAT_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    command
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A base port P with P .. P + n - 1 all free (at the time of asking).
pub fn free_ports(n: u16) -> u16 {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = first.local_addr().expect("addr").port();
        if port > u16::MAX - n {
            continue;
        }
        let others: Vec<_> = (1..n)
            .map(|i| TcpListener::bind(("127.0.0.1", port + i)))
            .collect();
        if others.iter().all(|o| o.is_ok()) {
            return port;
        }
    }
    panic!("no {n} free ports in a row");
}

/// Wait until `f` returns `Some`, at most `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `copycat` process whose output lines are collected as they come.
pub struct Proc {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
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

impl Proc {
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn copycat");
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// The rest of the first stdout line that starts with `prefix`.
    pub fn wait_stdout(&mut self, prefix: &str) -> String {
        let what = format!("a line starting with {prefix:?}");
        wait_for(LONG, &what, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "copycat exited ({status}) before printing {prefix:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
            let lines = self.stdout.lock().unwrap();
            lines
                .iter()
                .find_map(|line| line.strip_prefix(prefix).map(str::to_string))
        })
    }

    pub fn wait_stderr(&mut self, text: &str) {
        let what = format!("{text:?} on stderr");
        wait_for(LONG, &what, || {
            self.stderr
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(text))
                .then_some(())
        })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_for(LONG, "the process to exit", || {
            self.child.try_wait().expect("wait")
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The stdout of a command that must have succeeded.
pub fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {output:?}\nstderr: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// `copycat cluster --server ADDR ARGS...`.
pub fn cluster_cmd(addr: &str, args: &[&str]) -> Output {
    copycat()
        .args(["cluster", "--server", addr, "--timeout-secs", "30"])
        .args(args)
        .output()
        .expect("run copycat cluster")
}

/// `copycat cluster status --json`, parsed.
pub fn cluster_rows(addr: &str) -> Vec<serde_json::Value> {
    let out = ok(&cluster_cmd(addr, &["--json", "status"]));
    serde_json::from_str::<Vec<serde_json::Value>>(&out).expect("status --json parses")
}
