//! Membership and identity with the `copycat` binary as separate processes
//! on 127.0.0.1: a fourth server joins a three-server cluster, is promoted,
//! another is removed and leadership moves; a server restarted with a wrong
//! member list still lets the survivors elect a leader; a second process on
//! a data directory is refused; a server of another cluster is refused.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{cluster_cmd, cluster_rows, copycat, free_port, ok, text, wait_for, Proc, LONG};

/// `copycat server --id ID --listen ADDR --data-dir dID` with short
/// election timeouts, plus `extra`, in `root`.
fn start(root: &Path, id: u64, addr: &str, extra: &[&str]) -> Proc {
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

fn addresses(n: usize) -> Vec<String> {
    (0..n)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect()
}

fn member_flags(addrs: &[String]) -> Vec<String> {
    addrs
        .iter()
        .enumerate()
        .flat_map(|(i, a)| ["--member".to_string(), format!("{}={a}", i + 1)])
        .collect()
}

/// The id of the server every reachable member agrees leads, asked of
/// `addr`.
fn leader_seen_from(addr: &str) -> Option<u64> {
    let out = cluster_cmd(addr, &["--json", "status"]);
    if !out.status.success() {
        return None;
    }
    let rows: Vec<serde_json::Value> = serde_json::from_str(&text(&out.stdout)).ok()?;
    rows.iter()
        .find(|r| r["state"] == "leader")
        .and_then(|r| r["id"].as_u64())
}

fn three(root: &Path) -> (Vec<String>, Vec<Proc>) {
    let addrs = addresses(3);
    let flags = member_flags(&addrs);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let procs = (1..=3)
        .map(|id| start(root, id, &addrs[id as usize - 1], &flags))
        .collect();
    (addrs, procs)
}

#[test]
fn a_fourth_server_joins_is_promoted_another_is_removed_and_leadership_moves() {
    let root = tempfile::tempdir().expect("temp dir");
    let (addrs, _procs) = three(root.path());
    let leader = wait_for(LONG, "a leader", || leader_seen_from(&addrs[0]));
    let fourth = format!("127.0.0.1:{}", free_port());
    let _joined = start(root.path(), 4, &fourth, &["--join", &addrs[0]]);
    wait_for(LONG, "server 4 promoted", || {
        let rows = cluster_rows(&addrs[0]);
        rows.iter()
            .any(|r| r["id"] == 4 && r["kind"] == "voter" && r["reachable"] == true)
            .then_some(())
    });
    let removed = (1..=3u64).find(|id| *id != leader).expect("a follower");
    let done = ok(&cluster_cmd(&fourth, &["remove", &removed.to_string()]));
    assert_eq!(done.trim(), "done");
    let members = ok(&cluster_cmd(
        &addrs[leader as usize - 1],
        &["--json", "members"],
    ));
    let members: Vec<serde_json::Value> = serde_json::from_str(&members).expect("json");
    let ids: Vec<u64> = members.iter().filter_map(|m| m["id"].as_u64()).collect();
    assert_eq!(ids.len(), 3, "{members:?}");
    assert!(ids.contains(&4) && !ids.contains(&removed), "{ids:?}");
    assert_eq!(
        ok(&cluster_cmd(&fourth, &["transfer-leader", "4"])).trim(),
        "done"
    );
    assert_eq!(leader_seen_from(&fourth), Some(4));
}

#[test]
fn an_advertised_address_is_what_the_configuration_records_and_peers_dial() {
    // Each server listens on one port and advertises another that only
    // forwards to it (a stand-in for a proxy): peers must dial the
    // advertised addresses (the forwarders see their connections; the
    // commands below go to the listen addresses), and the configuration
    // names them.
    let root = tempfile::tempdir().expect("temp dir");
    let listens = addresses(3);
    let advertised = addresses(3);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let forwarded = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for (from, to) in advertised.iter().zip(&listens) {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(from.as_str()))
            .expect("bind forwarder");
        let to = to.clone();
        let forwarded = forwarded.clone();
        runtime.spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                forwarded.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let to = to.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
    }
    let flags = member_flags(&advertised);
    let _procs: Vec<Proc> = (1..=3)
        .map(|id| {
            let mut extra: Vec<&str> = flags.iter().map(String::as_str).collect();
            extra.extend(["--advertise", &advertised[id - 1]]);
            start(root.path(), id as u64, &listens[id - 1], &extra)
        })
        .collect();
    wait_for(LONG, "a leader", || leader_seen_from(&listens[0]));
    let members = ok(&cluster_cmd(&listens[0], &["--json", "members"]));
    let members: Vec<serde_json::Value> = serde_json::from_str(&members).expect("json");
    let recorded: Vec<&str> = members
        .iter()
        .filter_map(|m| m["address"].as_str())
        .collect();
    let expected: Vec<&str> = advertised.iter().map(String::as_str).collect();
    assert_eq!(recorded, expected, "{members:?}");
    assert!(
        forwarded.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "peers did not dial the advertised addresses"
    );
    // A fourth server joins with its own advertised address.
    let listen = format!("127.0.0.1:{}", free_port());
    let fourth = format!("127.0.0.1:{}", free_port());
    let _joined = start(
        root.path(),
        4,
        &listen,
        &["--join", &listens[0], "--advertise", &fourth],
    );
    let members = ok(&cluster_cmd(&listens[0], &["--json", "members"]));
    assert!(members.contains(&format!("\"{fourth}\"")), "{members}");
    let listed = ok(&copycat().args(["server", "--help"]).output().expect("help"));
    assert!(listed.contains("--advertise <HOST:PORT>"), "{listed}");
}

#[test]
fn a_server_restarted_with_a_wrong_member_list_does_not_stall_the_cluster() {
    let root = tempfile::tempdir().expect("temp dir");
    let (addrs, mut procs) = three(root.path());
    let leader = wait_for(LONG, "a leader", || leader_seen_from(&addrs[0]));
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let (restarted, survivor) = (followers[0], followers[1]);
    // Restart one follower with a list that leaves the other out.
    let index = restarted as usize - 1;
    procs[index].signal("TERM");
    assert!(procs[index].wait_exit().success());
    let wrong = [
        "--member".to_string(),
        format!("{restarted}={}", addrs[index]),
        "--member".to_string(),
        format!("{leader}={}", addrs[leader as usize - 1]),
    ];
    let wrong: Vec<&str> = wrong.iter().map(String::as_str).collect();
    let mut again = start(root.path(), restarted, &addrs[index], &wrong);
    again.wait_stderr("differs from the configuration this server persisted");
    procs[index] = again;
    wait_for(LONG, "the restarted server caught up", || {
        let rows = cluster_rows(&addrs[index]);
        rows.iter()
            .all(|r| r["reachable"] == true && r["lag"] == 0)
            .then_some(())
    });
    // Kill the leader outright: the two survivors must elect one of them.
    procs[leader as usize - 1].signal("KILL");
    let elected = wait_for(Duration::from_secs(15), "a new leader", || {
        leader_seen_from(&addrs[survivor as usize - 1]).filter(|l| *l != leader)
    });
    assert!(elected == restarted || elected == survivor);
}

#[test]
fn a_second_process_on_a_data_directory_is_refused_naming_it_and_its_holder() {
    let root = tempfile::tempdir().expect("temp dir");
    let addr = format!("127.0.0.1:{}", free_port());
    let first = start(root.path(), 1, &addr, &[]);
    let other = format!("127.0.0.1:{}", free_port());
    let second = copycat()
        .args([
            "server",
            "--id",
            "1",
            "--listen",
            &other,
            "--http-listen",
            "off",
        ])
        .args(["--data-dir", "d1"])
        .current_dir(root.path())
        .output()
        .expect("run");
    assert!(!second.status.success());
    let stderr = text(&second.stderr);
    assert!(stderr.contains("d1"), "{stderr}");
    assert!(
        stderr.contains(&format!("in use by pid {}", first.id())),
        "{stderr}"
    );
}

#[test]
fn a_server_of_another_cluster_is_refused_and_both_sides_say_why() {
    let root = tempfile::tempdir().expect("temp dir");
    let ours = format!("127.0.0.1:{}", free_port());
    let mut first = start(root.path(), 1, &ours, &[]);
    wait_for(LONG, "a leader", || leader_seen_from(&ours));
    // Bootstrapped from another member list: another cluster id.
    let theirs = format!("127.0.0.1:{}", free_port());
    let members = [
        "--member".to_string(),
        format!("1={ours}"),
        "--member".to_string(),
        format!("2={theirs}"),
    ];
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    let mut stranger = start(root.path(), 2, &theirs, &members);
    stranger.wait_stderr("peer refused this server");
    first.wait_stderr("refused a peer connection");
    assert!(stranger.stderr_text().contains("belongs to cluster"));
    // Ours still leads its own cluster of one.
    assert_eq!(leader_seen_from(&ours), Some(1));
}
