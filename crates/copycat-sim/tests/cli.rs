//! The `copycat-sim` binary: `check` on history files, and output through a
//! closed pipe.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_copycat-sim"))
}

fn write_history(name: &str, lines: &[&str]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("copycat-sim-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, lines.join("\n")).expect("write history");
    path
}

#[test]
fn check_accepts_a_linearizable_history_and_explains_a_stale_read() {
    let good = write_history(
        "good.jsonl",
        &[
            r#"{"process":1,"type":"invoke","f":"write","key":"x","value":1,"time":1}"#,
            r#"{"process":1,"type":"ok","f":"write","key":"x","value":1,"time":2}"#,
            r#"{"process":2,"type":"invoke","f":"read","key":"x","value":null,"time":3}"#,
            r#"{"process":2,"type":"ok","f":"read","key":"x","value":1,"time":4}"#,
        ],
    );
    let out = binary().arg("check").arg(&good).output().expect("run");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("linearizable"));

    let stale = write_history(
        "stale.jsonl",
        &[
            r#"{"process":1,"type":"invoke","f":"write","key":"x","value":1,"time":1}"#,
            r#"{"process":1,"type":"ok","f":"write","key":"x","value":1,"time":2}"#,
            r#"{"process":2,"type":"invoke","f":"read","key":"x","value":null,"time":3}"#,
            r#"{"process":2,"type":"ok","f":"read","key":"x","value":null,"time":4}"#,
        ],
    );
    let out = binary().arg("check").arg(&stale).output().expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOT linearizable"));

    let broken = write_history("broken.jsonl", &[r#"{"process":1,"type":"ok"}"#]);
    let out = binary().arg("check").arg(&broken).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid history"));
    for path in [good, stale, broken] {
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn a_closed_pipe_ends_the_run_quietly() {
    let mut child = binary()
        .args(["--seeds", "50", "--jobs", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("a first line");
    // The reader is dropped here: the pipe is closed, like `| head -1`.
    assert!(first.starts_with("running 50 seeds"), "{first}");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn an_unknown_fault_kind_is_refused_with_the_list() {
    let out = binary()
        .args(["--seed", "1", "--without", "meteor"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("partition") && stderr.contains("clock-jump"),
        "{stderr}"
    );
}
