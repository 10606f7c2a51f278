//! TLS with the `copycat` binary as separate processes on 127.0.0.1, with
//! certificates made by rcgen: three servers given `--tls-cert`,
//! `--tls-key` and `--tls-ca` elect a leader, a fourth joins over TLS, and
//! the client and cluster commands talk to them with `--tls-ca`; a command
//! without TLS gets an error that names it; TLS settings that cannot be
//! used stop the server at start, naming the key and the file.

mod support;

#[path = "../../copycat-server/tests/support/certs.rs"]
mod certs;

use std::path::{Path, PathBuf};
use std::process::Output;

use certs::Ca;
use support::{copycat, free_port, ok, text, wait_for, Proc, LONG};

struct Files {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A CA and one server certificate for 127.0.0.1 and localhost, written
/// into `dir`.
fn files(dir: &Path) -> Files {
    let ca = Ca::new("copycat test CA");
    let server = ca.issue("copycat server", &["127.0.0.1", "localhost"]);
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    Files {
        ca: write("ca.pem", &ca.pem()),
        cert: write("server.pem", &server.cert),
        key: write("server.key", &server.key),
    }
}

fn tls_flags(files: &Files) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        files.cert.display().to_string(),
        "--tls-key".into(),
        files.key.display().to_string(),
        "--tls-ca".into(),
        files.ca.display().to_string(),
    ]
}

fn start(root: &Path, id: u64, addr: &str, extra: &[String]) -> Proc {
    let mut command = copycat();
    command
        .args(["server", "--id", &id.to_string(), "--listen", addr])
        .args(["--data-dir", &format!("d{id}"), "--http-listen", "off"])
        .args(["--election-timeout-ms", "300", "--heartbeat-ms", "50"])
        .args(extra)
        .current_dir(root);
    let mut proc = Proc::spawn(command);
    proc.wait_stdout(&format!("server {id} listening on "));
    proc
}

fn client(addr: &str, ca: Option<&Path>, args: &[&str]) -> Output {
    let mut command = copycat();
    command.args(["client", "--server", addr, "--timeout-secs", "20"]);
    if let Some(ca) = ca {
        command.arg("--tls-ca").arg(ca);
    }
    command.args(args).output().expect("run copycat client")
}

fn cluster_status(addr: &str, ca: &Path) -> Option<Vec<serde_json::Value>> {
    let out = copycat()
        .args([
            "cluster",
            "--server",
            addr,
            "--timeout-secs",
            "10",
            "--json",
        ])
        .arg("--tls-ca")
        .arg(ca)
        .arg("status")
        .output()
        .expect("run copycat cluster");
    if !out.status.success() {
        return None;
    }
    serde_json::from_str(&text(&out.stdout)).ok()
}

#[test]
fn copycat_servers_run_a_tls_cluster_and_the_commands_talk_tls() {
    let root = tempfile::tempdir().expect("temp dir");
    let files = files(root.path());
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut flags = tls_flags(&files);
    for (i, addr) in addrs.iter().enumerate() {
        flags.push("--member".into());
        flags.push(format!("{}={addr}", i + 1));
    }
    let _servers: Vec<Proc> = (1..=3)
        .map(|id| start(root.path(), id, &addrs[id as usize - 1], &flags))
        .collect();
    wait_for(LONG, "a leader, seen over TLS", || {
        let rows = cluster_status(&addrs[0], &files.ca)?;
        rows.iter().any(|r| r["state"] == "leader").then_some(())
    });

    assert_eq!(
        ok(&client(&addrs[0], Some(&files.ca), &["add", "5"])),
        "5\n"
    );
    assert_eq!(ok(&client(&addrs[1], Some(&files.ca), &["get"])), "5\n");
    // By a name the certificate holds, through the environment.
    let by_name = format!("localhost:{}", addrs[2].rsplit_once(':').unwrap().1);
    let out = copycat()
        .args(["long", "counter", "get", "--server", &by_name])
        .env("COPYCAT_TLS_CA", &files.ca)
        .output()
        .expect("run copycat long");
    assert_eq!(ok(&out), "5\n");

    // Without TLS: an error that says the server wants TLS, not a hang.
    let out = client(&addrs[0], None, &["get"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("TLS"), "{}", text(&out.stderr));

    // A fourth server joins over TLS and becomes a reachable voter.
    let fourth = format!("127.0.0.1:{}", free_port());
    let mut join = tls_flags(&files);
    join.extend(["--join".to_string(), addrs[0].clone()]);
    let _joined = start(root.path(), 4, &fourth, &join);
    wait_for(LONG, "server 4 promoted over TLS", || {
        let rows = cluster_status(&addrs[0], &files.ca)?;
        rows.iter()
            .any(|r| r["id"] == 4 && r["kind"] == "voter" && r["reachable"] == true)
            .then_some(())
    });
    assert_eq!(ok(&client(&fourth, Some(&files.ca), &["add", "1"])), "6\n");
}

/// Start `copycat server` with `extra` and expect it to fail at once with
/// every one of `expected` on stderr.
fn refused(root: &Path, extra: &[String], expected: &[&str]) {
    let out = copycat()
        .args(["server", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--data-dir", "d", "--http-listen", "off"])
        .args(extra)
        .current_dir(root)
        .output()
        .expect("run copycat server");
    assert!(!out.status.success(), "started with {extra:?}");
    let stderr = text(&out.stderr);
    for part in expected {
        assert!(stderr.contains(part), "{part:?} not in {stderr}");
    }
}

#[test]
fn tls_settings_that_cannot_be_used_stop_the_server_naming_the_key_and_the_file() {
    let root = tempfile::tempdir().expect("temp dir");
    let files = files(root.path());
    let flags = tls_flags(&files);
    let with = |key: &str, value: &str| {
        let mut flags = flags.clone();
        let at = flags.iter().position(|f| f == key).expect("flag") + 1;
        flags[at] = value.to_string();
        flags
    };
    // A certificate without its key and CA.
    refused(
        root.path(),
        &flags[..2],
        &["tls-cert", "tls-key is not set", "from --tls-cert"],
    );
    // A file that does not exist.
    let missing = root.path().join("missing.pem").display().to_string();
    refused(
        root.path(),
        &with("--tls-key", &missing),
        &["tls-key", &missing, "cannot read"],
    );
    // Not PEM, and a certificate where the key should be.
    let junk = root.path().join("junk.pem");
    std::fs::write(&junk, "hello").expect("write");
    let junk = junk.display().to_string();
    refused(
        root.path(),
        &with("--tls-ca", &junk),
        &["tls-ca", &junk, "no certificate"],
    );
    refused(
        root.path(),
        &with("--tls-key", &files.cert.display().to_string()),
        &["tls-key", "no private key"],
    );
    // Client certificates without TLS.
    refused(
        root.path(),
        &["--tls-client-auth".into(), "true".into()],
        &["tls-client-auth", "needs TLS"],
    );
    // Nothing was left running or created on the way.
    assert!(!root.path().join("d").exists());
}
