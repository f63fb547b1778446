//! A monitored link, as an operator deploys serveflow: clients and servers talk across a veth,
//! and the servers' end mirrors every frame, both directions, out of a second veth into the
//! namespace where serveflow listens (a SPAN port, made of tc `mirred`). Removed on drop.
//!
//! ```text
//!   netns <tag>-c            netns <tag>-s                     netns <tag>-m
//!   ┌─────────────┐  veth   ┌───────────────────────┐  veth   ┌─────────────────┐
//!   │ clients     ├─────────┤ servers (.1, sites .N)│         │ serveflow run   │
//!   │ 10.x.y.2    │         │ tc ingress+egress ────┼────────>│ <monitor_dev>   │
//!   └─────────────┘         │   mirred to the tap   │  copies └─────────────────┘
//!                           └───────────────────────┘
//! ```
//!
//! Segmentation offloads are off on the link, so the mirror carries wire-sized frames, as a
//! switch's SPAN port would. The clients' namespace has its own `resolv.conf` (pointing at
//! the servers' resolver), which `ip netns exec` binds over `/etc/resolv.conf`; serveflow
//! itself is started with `nsenter`, which leaves bpffs visible.

use std::{net::Ipv4Addr, path::PathBuf, process::Command};

use anyhow::Context as _;

use crate::netns::{disable_ipv6, ip, nsenter, run_in, unique};

/// Three namespaces: clients, servers, and the monitor that receives the mirrored link.
#[derive(Debug)]
pub struct SpanBed {
    /// Namespace of the clients.
    pub clients: String,
    /// Namespace of the servers.
    pub servers: String,
    /// Namespace where serveflow listens.
    pub monitor: String,
    /// The device serveflow attaches to (in `monitor`).
    pub monitor_dev: String,
    /// The servers' end of the link, whose frames are mirrored.
    pub server_dev: String,
    /// The clients' address.
    pub client_addr: Ipv4Addr,
    /// The servers' main address (resolver, NTP, SSH, Redis, syslog).
    pub server_addr: Ipv4Addr,
    prefix: [u8; 3],
}

impl SpanBed {
    /// Makes the namespaces, the link, the mirror and the clients' `resolv.conf`.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let (id, octet) = unique();
        let prefix = [10, 198, octet];
        let bed = SpanBed {
            clients: format!("sf-{tag}-{id}-c"),
            servers: format!("sf-{tag}-{id}-s"),
            monitor: format!("sf-{tag}-{id}-m"),
            monitor_dev: format!("sfm{id}"),
            server_dev: format!("sfs{id}"),
            client_addr: Ipv4Addr::new(prefix[0], prefix[1], prefix[2], 2),
            server_addr: Ipv4Addr::new(prefix[0], prefix[1], prefix[2], 1),
            prefix,
        };
        // From here on, Drop removes whatever part was made.
        for ns in [&bed.clients, &bed.servers, &bed.monitor] {
            ip(&["netns", "add", ns])?;
        }
        let client_dev = format!("sfc{id}");
        let tap_dev = format!("sft{id}");
        ip(&[
            "link",
            "add",
            &client_dev,
            "netns",
            &bed.clients,
            "type",
            "veth",
            "peer",
            "name",
            &bed.server_dev,
            "netns",
            &bed.servers,
        ])?;
        ip(&[
            "link",
            "add",
            &tap_dev,
            "netns",
            &bed.servers,
            "type",
            "veth",
            "peer",
            "name",
            &bed.monitor_dev,
            "netns",
            &bed.monitor,
        ])?;
        for ns in [&bed.clients, &bed.servers, &bed.monitor] {
            disable_ipv6(ns)?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&[
            "-n",
            &bed.clients,
            "addr",
            "add",
            &format!("{}/24", bed.client_addr),
            "dev",
            &client_dev,
        ])?;
        ip(&[
            "-n",
            &bed.servers,
            "addr",
            "add",
            &format!("{}/24", bed.server_addr),
            "dev",
            &bed.server_dev,
        ])?;
        for (ns, dev) in [
            (&bed.clients, &client_dev),
            (&bed.servers, &bed.server_dev),
            (&bed.servers, &tap_dev),
            (&bed.monitor, &bed.monitor_dev),
        ] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            run_in(
                ns,
                "ethtool",
                &["-K", dev, "tso", "off", "gso", "off", "gro", "off"],
            )
            .context("turning segmentation offloads off (package ethtool)")?;
        }
        run_in(
            &bed.servers,
            "tc",
            &["qdisc", "add", "dev", &bed.server_dev, "clsact"],
        )?;
        for hook in ["ingress", "egress"] {
            // u32 matching everything: matchall is not in every kernel (not in this one).
            run_in(
                &bed.servers,
                "tc",
                &[
                    "filter",
                    "add",
                    "dev",
                    &bed.server_dev,
                    hook,
                    "u32",
                    "match",
                    "u32",
                    "0",
                    "0",
                    "action",
                    "mirred",
                    "egress",
                    "mirror",
                    "dev",
                    &tap_dev,
                ],
            )
            .context("mirroring the link (tc u32 + mirred)")?;
        }
        let etc = bed.etc_dir();
        std::fs::create_dir_all(&etc)?;
        std::fs::write(
            etc.join("resolv.conf"),
            format!("nameserver {}\n", bed.server_addr),
        )?;
        Ok(bed)
    }

    /// Site address `n` (1..=200) on the servers' end: `10.198.y.(10+n)`.
    pub fn site_addr(&self, n: u8) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, 10 + n.min(200))
    }

    /// Adds `addr` to the servers' end of the link.
    pub fn add_server_addr(&self, addr: Ipv4Addr) -> anyhow::Result<()> {
        ip(&[
            "-n",
            &self.servers,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            &self.server_dev,
        ])
    }

    /// `program` inside namespace `ns` (nsenter: bpffs stays visible).
    pub fn command(&self, ns: &str, program: &str) -> Command {
        nsenter(ns, program)
    }

    /// `program` as a client: in the clients' namespace, with its `resolv.conf`.
    pub fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.clients, program]);
        cmd
    }

    fn etc_dir(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.clients)
    }
}

impl Drop for SpanBed {
    fn drop(&mut self) {
        for ns in [&self.clients, &self.servers, &self.monitor] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}
