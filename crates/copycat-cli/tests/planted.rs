//! `COPYCAT_PLANTED_BUG`: a binary built without the `planted-bugs` feature
//! refuses to start when it is set, so a test harness never runs the
//! unbugged code believing a bug is planted; a test build rejects unknown
//! names.

mod support;

use support::{copycat, free_port, text};

fn server_with_bug(bug: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = format!("127.0.0.1:{}", free_port());
    copycat()
        .args(["server", "--id", "1", "--listen", &listen, "--data-dir"])
        .arg(dir.path().join("data"))
        .env("COPYCAT_PLANTED_BUG", bug)
        .output()
        .expect("run copycat server")
}

#[cfg(not(feature = "planted-bugs"))]
#[test]
fn a_build_without_switches_refuses_a_planted_bug() {
    let output = server_with_bug("SkipDuplicateCheck");
    assert!(!output.status.success(), "server started: {output:?}");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("COPYCAT_PLANTED_BUG is set") && stderr.contains("no planted-bug switches"),
        "unexpected stderr: {stderr}"
    );
    assert!(
        !text(&output.stdout).contains("listening on"),
        "the server must not start listening"
    );
}

#[cfg(feature = "planted-bugs")]
#[test]
fn a_test_build_rejects_an_unknown_bug_and_lists_the_valid_ones() {
    let output = server_with_bug("NoSuchBug");
    assert!(!output.status.success(), "server started: {output:?}");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("\"NoSuchBug\" is not a planted bug")
            && stderr.contains("SkipDuplicateCheck"),
        "unexpected stderr: {stderr}"
    );
}
