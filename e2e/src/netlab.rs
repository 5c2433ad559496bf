//! Network namespaces for fault injection: every node runs in its own
//! namespace, linked to the host by a veth pair, so a link can be cut for real
//! (blackhole routes drop the packets in the kernel) and slowed for real
//! (a `tbf` rate limit queues and drops on the node's interface).
//!
//! Layout for a lab with second octet `S`: node `i` is `10.S.i.2` in namespace
//! `rcS-n<i>`, its host-side veth is `10.S.i.1`; app host `j` (an app
//! replica and its sidecar, [`NetLab::app_host`]) is host `100 + j`:
//! `10.S.(100+j).2` in `rcS-a<j>`. The host also holds `10.S.254.1` on `lo`
//! for targets every node reaches (the ledger). The host forwards between
//! the veths (`net.ipv4.ip_forward=1`), so any two hosts can be cut apart.
//!
//! `tc netem` (fixed delay, random loss) is used when the kernel has it; the
//! kernel on our CI machines lacks `sch_netem`, so `tbf` is the slow link.
//! Needs root and iproute2; [`NetLab::available`] says why not otherwise.

use std::process::Command;

/// One `ip`/`tc`/`sysctl` invocation; errors carry the command line.
fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// How a node's outgoing link is slowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Slow {
    /// netem: a fixed delay (ms) with jitter, and loss (percent).
    Netem { delay_ms: u32, loss_pct: u32 },
    /// tbf: a rate limit (kbit/s) with a bounded queue (ms); what fits
    /// neither is dropped.
    Tbf { kbit: u32, latency_ms: u32 },
}

/// Host index of the first app host less one: app host `j` is `APP_BASE + j`.
const APP_BASE: usize = 100;

pub struct NetLab {
    octet: u8,
    nodes: usize,
    apps: usize,
    /// `net.ipv4.ip_forward` before we set it, restored on drop.
    forward_before: String,
    pub netem: bool,
}

impl NetLab {
    /// `Ok` when namespaces can be made here; otherwise the reason.
    pub fn available() -> Result<(), String> {
        if !cfg!(target_os = "linux") {
            return Err("network namespaces need Linux".into());
        }
        let probe = format!("rcprobe{}", std::process::id());
        sh(&["ip", "netns", "add", &probe])
            .map_err(|e| format!("cannot create a network namespace (needs root): {e}"))?;
        let _ = sh(&["ip", "netns", "del", &probe]);
        Ok(())
    }

    /// Creates `nodes` namespaces. The octet comes from the process id so
    /// two labs on one host do not collide.
    pub fn create(nodes: usize) -> Result<Self, String> {
        Self::create_with(nodes, 0)
    }

    /// Creates `nodes` node namespaces and `apps` app hosts.
    pub fn create_with(nodes: usize, apps: usize) -> Result<Self, String> {
        let octet = 100 + (std::process::id() % 100) as u8;
        let forward_before = sh(&["sysctl", "-n", "net.ipv4.ip_forward"])?
            .trim()
            .to_string();
        let mut lab = Self {
            octet,
            nodes,
            apps,
            forward_before,
            netem: false,
        };
        lab.teardown(); // leftovers of a killed run with the same octet
        sh(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let host = lab.host_ip();
        sh(&["ip", "addr", "add", &format!("{host}/32"), "dev", "lo"])?;
        for i in lab.hosts() {
            let ns = lab.ns(i);
            let (veth, peer) = (lab.veth(i), format!("{}p", lab.veth(i)));
            sh(&["ip", "netns", "add", &ns])?;
            sh(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer,
            ])?;
            sh(&["ip", "link", "set", &peer, "netns", &ns])?;
            sh(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", lab.gw(i)),
                "dev",
                &veth,
            ])?;
            sh(&["ip", "link", "set", &veth, "up"])?;
            let inside = |a: &[&str]| {
                let mut v = vec!["ip", "netns", "exec", &ns];
                v.extend_from_slice(a);
                sh(&v)
            };
            inside(&["ip", "link", "set", "lo", "up"])?;
            inside(&["ip", "link", "set", &peer, "name", "eth0"])?;
            inside(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", lab.ip(i)),
                "dev",
                "eth0",
            ])?;
            inside(&["ip", "link", "set", "eth0", "up"])?;
            inside(&["ip", "route", "add", "default", "via", &lab.gw(i)])?;
        }
        lab.netem = lab
            .exec(
                1,
                &[
                    "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
                ],
            )
            .and_then(|_| lab.exec(1, &["tc", "qdisc", "del", "dev", "lo", "root"]))
            .is_ok();
        Ok(lab)
    }

    /// Host index of app host `j` (1-based), for [`Self::ip`], [`Self::cut`]…
    pub fn app_host(j: usize) -> usize {
        APP_BASE + j
    }

    /// Every host: the nodes, then the app hosts.
    fn hosts(&self) -> Vec<usize> {
        (1..=self.nodes)
            .chain((1..=self.apps).map(Self::app_host))
            .collect()
    }

    /// The namespace of host `i` (a node, or an app host).
    pub fn ns(&self, i: usize) -> String {
        match i.checked_sub(APP_BASE) {
            Some(j) if j > 0 => format!("rc{}-a{j}", self.octet),
            _ => format!("rc{}-n{i}", self.octet),
        }
    }

    fn veth(&self, i: usize) -> String {
        format!("rc{}v{i}", self.octet)
    }

    /// Host `i`'s address inside its namespace.
    pub fn ip(&self, i: usize) -> String {
        format!("10.{}.{i}.2", self.octet)
    }

    fn gw(&self, i: usize) -> String {
        format!("10.{}.{i}.1", self.octet)
    }

    /// An address on the host every node can reach.
    pub fn host_ip(&self) -> String {
        format!("10.{}.254.1", self.octet)
    }

    /// Runs a command inside host `i`'s namespace.
    pub fn exec(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let ns = self.ns(i);
        let mut v = vec!["ip", "netns", "exec", &ns];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Drops every packet host `from` sends to host `to` (one way).
    pub fn cut(&self, from: usize, to: usize) -> Result<(), String> {
        let net = format!("10.{}.{to}.0/24", self.octet);
        self.exec(from, &["ip", "route", "replace", "blackhole", &net])
            .map(drop)
    }

    /// Restores every link of host `i` (both directions) and its speed.
    pub fn heal(&self, i: usize) {
        for j in self.hosts() {
            let net = format!("10.{}.{j}.0/24", self.octet);
            let _ = self.exec(i, &["ip", "route", "del", "blackhole", &net]);
        }
        let _ = self.exec(i, &["tc", "qdisc", "del", "dev", "eth0", "root"]);
    }

    pub fn heal_all(&self) {
        for i in self.hosts() {
            self.heal(i);
        }
    }

    /// Slows node `i`'s outgoing link.
    pub fn slow(&self, i: usize, how: Slow) -> Result<(), String> {
        let (delay, loss, kbit, latency);
        let args: Vec<&str> = match how {
            Slow::Netem { delay_ms, loss_pct } => {
                delay = format!("{delay_ms}ms");
                loss = format!("{loss_pct}%");
                vec!["netem", "delay", &delay, "10ms", "loss", &loss]
            }
            Slow::Tbf {
                kbit: k,
                latency_ms,
            } => {
                kbit = format!("{k}kbit");
                latency = format!("{latency_ms}ms");
                vec!["tbf", "rate", &kbit, "burst", "8kb", "latency", &latency]
            }
        };
        let mut cmd = vec!["tc", "qdisc", "replace", "dev", "eth0", "root"];
        cmd.extend(args);
        self.exec(i, &cmd).map(drop)
    }

    fn teardown(&self) {
        for i in self.hosts() {
            // Deleting the namespace deletes its end of the veth pair, and
            // with it the host end.
            let _ = sh(&["ip", "netns", "del", &self.ns(i)]);
            let _ = sh(&["ip", "link", "del", &self.veth(i)]);
        }
        let _ = sh(&[
            "ip",
            "addr",
            "del",
            &format!("{}/32", self.host_ip()),
            "dev",
            "lo",
        ]);
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        self.teardown();
        let _ = sh(&[
            "sysctl",
            "-qw",
            &format!("net.ipv4.ip_forward={}", self.forward_before),
        ]);
    }
}
