//! A pair of throwaway network namespaces joined by a veth, removed on drop (panics included).
//!
//! ```text
//!   netns <name>-a                      netns <name>-b
//!   ┌──────────────────┐  veth pair   ┌──────────────────┐
//!   │ <dev_a> 10.x.y.1 ├──────────────┤ <dev_b> 10.x.y.2 │
//!   │ serveflow run    │              │ tcpreplay/sockets│
//!   └──────────────────┘              └──────────────────┘
//! ```
//!
//! Names carry the pid and a counter so parallel tests and runs never clash. Programs run
//! inside with `nsenter --net=/run/netns/NAME`, not `ip netns exec`, because the latter remounts
//! /sys and hides bpffs.

use std::{
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{bail, Context as _};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Two namespaces and the veth between them.
#[derive(Debug)]
pub struct VethPair {
    /// Namespace where serveflow listens.
    pub ns_a: String,
    /// Namespace that sends traffic.
    pub ns_b: String,
    /// Device in `ns_a`.
    pub dev_a: String,
    /// Device in `ns_b`.
    pub dev_b: String,
    /// IPv4 address of `dev_a`.
    pub addr_a: [u8; 4],
    /// IPv4 address of `dev_b`.
    pub addr_b: [u8; 4],
}

/// `program` inside network namespace `ns`. With `nsenter`, not `ip netns exec`: the latter
/// remounts /sys and hides bpffs.
pub fn nsenter(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(program);
    cmd
}

/// Runs `program args` inside `ns`; fails with its stderr.
pub(crate) fn run_in(ns: &str, program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = nsenter(ns, program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} in {ns}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A name part no other test bed of this process or a parallel one uses (pid and a counter),
/// and an octet (1..=250) for its addresses.
pub(crate) fn unique() -> (String, u8) {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let id = format!("{}{}", std::process::id() % 100_000, n);
    (id, ((std::process::id() + n) % 250 + 1) as u8)
}

pub(crate) fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (package iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl VethPair {
    /// Creates the namespaces and a veth with `queues` RX/TX queues on each end, both up,
    /// with IPv6 off (no router solicitations or MLD noise in exact-count tests).
    pub fn new(tag: &str, queues: u32) -> anyhow::Result<Self> {
        let (id, octet) = unique();
        let pair = VethPair {
            ns_a: format!("sf-{tag}-{id}-a"),
            ns_b: format!("sf-{tag}-{id}-b"),
            // Interface names are limited to 15 bytes.
            dev_a: format!("sfa{id}"),
            dev_b: format!("sfb{id}"),
            addr_a: [10, 199, octet, 1],
            addr_b: [10, 199, octet, 2],
        };
        // From here on, Drop cleans up whatever part was made.
        ip(&["netns", "add", &pair.ns_a])?;
        ip(&["netns", "add", &pair.ns_b])?;
        let q = queues.max(1).to_string();
        ip(&[
            "link",
            "add",
            &pair.dev_a,
            "netns",
            &pair.ns_a,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &pair.dev_b,
            "netns",
            &pair.ns_b,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ])?;
        for (ns, dev, addr) in [
            (&pair.ns_a, &pair.dev_a, pair.addr_a),
            (&pair.ns_b, &pair.dev_b, pair.addr_b),
        ] {
            disable_ipv6(ns)?;
            let cidr = format!("{}.{}.{}.{}/24", addr[0], addr[1], addr[2], addr[3]);
            ip(&["-n", ns, "addr", "add", &cidr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    /// A command that runs `program` inside namespace `ns`.
    pub fn command(&self, ns: &str, program: &str) -> Command {
        nsenter(ns, program)
    }

    /// Replays `pcap` out of `dev_b` (so it arrives on `dev_a`) at `pps` packets per second.
    pub fn replay_from_b(&self, pcap: &std::path::Path, pps: u32) -> anyhow::Result<Output> {
        let out = self
            .command(&self.ns_b, "tcpreplay")
            .arg(format!("--intf1={}", self.dev_b))
            .arg(format!("--pps={pps}"))
            .arg(pcap)
            .output()
            .context("running tcpreplay (package tcpreplay)")?;
        if !out.status.success() {
            bail!("tcpreplay: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(out)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the peer.
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// IPv6 off in `ns`: no router solicitations or MLD noise in exact-count tests.
pub(crate) fn disable_ipv6(ns: &str) -> anyhow::Result<()> {
    for setting in [
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ] {
        run_in(ns, "sysctl", &["-q", "-w", setting])?;
    }
    Ok(())
}

/// Whether this process may create namespaces and load BPF (tests skip loudly otherwise).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
