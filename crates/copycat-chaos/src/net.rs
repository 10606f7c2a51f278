//! The network the cluster runs on: a network namespace of its own, whose
//! loopback carries every packet, and packet filters on it for partitions;
//! or, without one, the host's loopback with partitions made by the proxy
//! (`crate::proxy`), which makes the other link faults in both modes.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::cluster::node_ip;
use crate::proxy::Proxy;

/// The variable that tells a re-executed harness it already runs inside
/// the namespace (its value is the namespace's name).
pub const INSIDE_VAR: &str = "COPYCAT_CHAOS_NETNS";

/// Where the run's packets go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A network namespace of the harness's own, with iptables rules on its
    /// loopback: real packet-level partitions and loss; the TCP proxy
    /// delays, duplicates, reorders and resets.
    Netns,
    /// The host's loopback, without packet filters (no root, or no `ip
    /// netns`): the TCP proxy makes every network fault, partitions too.
    Host,
}

impl Mode {
    /// How the report names it.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Netns => "netns (own network namespace; every peer connection through the TCP proxy)",
            Mode::Host => {
                "host loopback (no network namespace available; every peer connection through the TCP proxy)"
            }
        }
    }

    /// What makes the network faults, as the report says it.
    pub fn faults_by(self) -> &'static str {
        match self {
            Mode::Netns => {
                "iptables in namespace (partitions, loss); TCP proxy (delay, duplicate, reorder, reset)"
            }
            Mode::Host => {
                "TCP proxy (partitions as dropped links, loss as retransmission stalls, delay, duplicate, reorder, reset)"
            }
        }
    }
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A network namespace that is deleted on drop.
pub struct Namespace {
    /// Its name.
    pub name: String,
}

impl Namespace {
    /// Create namespace `name` with its loopback up.
    pub fn create(name: &str) -> Result<Self> {
        run("ip", &["netns", "add", name])?;
        let namespace = Namespace {
            name: name.to_string(),
        };
        run(
            "ip",
            &["netns", "exec", name, "ip", "link", "set", "lo", "up"],
        )?;
        Ok(namespace)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Whether iptables works here (inside the namespace).
pub fn iptables_works() -> bool {
    run("iptables", &["-w", "-L", "INPUT", "-n"]).is_ok()
}

/// The partitions: packet filters of the namespace (iptables), or, on the
/// host, dropped links of the proxy. Keeps the book of which directed
/// pairs of servers are cut either way.
pub struct Firewall {
    /// (from, to) pairs whose packets are dropped.
    pub cut: BTreeSet<(u64, u64)>,
    iptables: bool,
    proxy: Arc<Proxy>,
}

impl Firewall {
    /// Partitions through iptables (`iptables`), else through `proxy`.
    pub fn new(iptables: bool, proxy: Arc<Proxy>) -> Self {
        Self {
            cut: BTreeSet::new(),
            iptables,
            proxy,
        }
    }

    /// Whether iptables rules make the partitions.
    pub fn iptables(&self) -> bool {
        self.iptables
    }

    /// Drop every packet from server `from` to server `to`.
    pub fn drop_packets(&mut self, from: u64, to: u64) -> Result<()> {
        self.rule(from, to, None)?;
        self.cut.insert((from, to));
        Ok(())
    }

    /// Drop packets from `from` to `to` with probability `share` (through
    /// the proxy: stall that share of the frames by a retransmission
    /// timeout, which is what the loss costs a TCP stream).
    pub fn lose_packets(&mut self, from: u64, to: u64, share: f64) -> Result<()> {
        self.rule(from, to, Some(share))
    }

    fn rule(&mut self, from: u64, to: u64, share: Option<f64>) -> Result<()> {
        if !self.iptables {
            self.proxy.set(from, to, |faults| match share {
                None => faults.drop = true,
                Some(share) => faults.loss = share,
            });
            return Ok(());
        }
        let source = node_ip(from).to_string();
        let destination = node_ip(to).to_string();
        let probability = share.map(|p| format!("{p:.3}"));
        let mut args = vec!["-w", "-A", "INPUT", "-s", &source, "-d", &destination];
        if let Some(p) = &probability {
            args.extend(["-m", "statistic", "--mode", "random", "--probability", p]);
        }
        args.extend(["-j", "DROP"]);
        run("iptables", &args)
    }

    /// Cut the servers into `groups`: no packets between servers of
    /// different groups.
    pub fn partition(&mut self, groups: &[Vec<u64>]) -> Result<()> {
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for from in a {
                        for to in b {
                            self.drop_packets(*from, *to)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Remove every rule (or heal every dropped link).
    pub fn heal(&mut self) -> Result<()> {
        self.cut.clear();
        if self.iptables {
            run("iptables", &["-w", "-F", "INPUT"])?;
        } else {
            self.proxy.heal_partitions();
        }
        Ok(())
    }
}
