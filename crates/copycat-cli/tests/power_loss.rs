//! Simulated power loss of a real `copycat server` process (feature
//! `sync-tracking`): the server is killed with SIGKILL, its data directory
//! is put through `copycat_storage::power_loss::simulate`, and it must
//! restart with every acknowledged write.
#![cfg(feature = "sync-tracking")]

mod support;

use std::path::Path;
use std::process::Output;

use support::{copycat, ok, text, Proc};

fn server(dir: &Path, bug: Option<&str>) -> (Proc, String) {
    let mut command = copycat();
    command
        .args(["server", "--listen", "127.0.0.1:0", "--http-listen", "off"])
        .args(["--data-dir", "data"])
        .current_dir(dir);
    if let Some(bug) = bug {
        command.env("COPYCAT_PLANTED_BUG", bug);
    }
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

/// Ten acknowledged increments, SIGKILL, power loss: the counter's value
/// after a restart, or the restarted server's complaint.
fn ten_adds_then_power_loss(bug: Option<&str>, seed: u64) -> Result<i64, String> {
    let dir = tempfile::tempdir().unwrap();
    let (mut proc, addr) = server(dir.path(), bug);
    for _ in 0..10 {
        ok(&client(&addr, &["add", "1"]));
    }
    proc.signal("KILL");
    proc.wait_exit();
    let report = copycat_storage::power_loss::simulate(&dir.path().join("data"), seed)
        .expect("the data directory has sync records");
    eprintln!("{report:?}");
    let mut command = copycat();
    command
        .args(["server", "--listen", "127.0.0.1:0", "--http-listen", "off"])
        .args(["--data-dir", "data"])
        .current_dir(dir.path());
    let mut restarted = Proc::spawn(command);
    let mut addr = None;
    support::wait_for(
        support::LONG,
        "the restarted server to listen or exit",
        || {
            if let Some(line) = restarted
                .stdout_lines()
                .iter()
                .find_map(|l| l.strip_prefix("server 1 listening on ").map(str::to_string))
            {
                addr = Some(line);
                return Some(());
            }
            restarted.exited().then_some(())
        },
    );
    let Some(addr) = addr else {
        return Err(restarted.stderr_text());
    };
    let out = client(&addr, &["get"]);
    if !out.status.success() {
        return Err(text(&out.stderr));
    }
    Ok(text(&out.stdout).trim().parse().expect("a number"))
}

#[test]
fn acknowledged_writes_survive_a_simulated_power_loss() {
    for seed in 0..2 {
        assert_eq!(ten_adds_then_power_loss(None, seed), Ok(10), "seed {seed}");
    }
}

/// The harness's use: with `SyncSkipsFsync`, the server acknowledges
/// writes it never synced, and the power loss takes them.
#[cfg(feature = "planted-bugs")]
#[test]
fn writes_acknowledged_without_a_sync_are_lost() {
    let lost = (0..3)
        .filter(|seed| ten_adds_then_power_loss(Some("SyncSkipsFsync"), *seed) != Ok(10))
        .count();
    assert!(lost > 0, "every acknowledged write survived SyncSkipsFsync");
}
