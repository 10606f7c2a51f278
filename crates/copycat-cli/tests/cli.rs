//! The `copycat` binary: `--help`, and client errors that name their cause
//! without `-v`.

use std::process::Command;

fn copycat() -> Command {
    Command::new(env!("CARGO_BIN_EXE_copycat"))
}

#[test]
fn help_lists_the_commands() {
    let out = copycat().arg("--help").output().expect("run");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["local", "server", "client"] {
        assert!(help.contains(command), "{help}");
    }
    // One command per primitive, each at the start of its help line.
    for primitive in [
        "value",
        "long",
        "map",
        "multimap",
        "set",
        "queue",
        "lock",
        "election",
        "group",
        "semaphore",
        "latch",
        "topic",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{primitive} "))),
            "{primitive} in {help}"
        );
    }
}

/// Run `copycat client --server ADDR get`: it must fail; what it printed
/// on stderr.
fn failed_get(addr: std::net::SocketAddr) -> String {
    let out = copycat()
        .args([
            "client",
            "--server",
            &addr.to_string(),
            "--timeout-secs",
            "2",
            "get",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_client_of_a_closed_port_says_connection_refused_at_the_address() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let stderr = failed_get(addr);
    assert!(
        stderr.contains(&format!("connection refused at {addr}")),
        "{stderr}"
    );
}

#[test]
fn a_client_of_something_else_says_it_is_not_a_copycat_server() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Answer every connection with a few bytes that are not a hello.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            use std::io::{Read, Write};
            let mut buf = [0u8; 16];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"\x00\x00\x00\x02hi");
        }
    });
    let stderr = failed_get(addr);
    assert!(
        stderr.contains(&format!("{addr} is not a Copycat server")),
        "{stderr}"
    );
}
