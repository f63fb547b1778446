//! What a live run saw, in userspace and in the kernel: the run's typed summary, printed at the
//! end and written with `--summary`.

use std::collections::BTreeMap;

use serde::Serialize;
use serveflow_common::XdpCounter;

use crate::{
    capture::afxdp::{SocketStatistics, XskReceiver},
    pipeline::{
        summary::{counts, ServingSummary},
        RunResult,
    },
    system,
    xdp::{FlowMapTotals, XdpError, XdpProgram},
};

use super::metrics::LiveMetrics;

/// What a run saw, in userspace and in the kernel.
#[derive(Debug, Default, Serialize)]
pub struct RunSummary {
    /// Interface.
    pub interface: String,
    /// XDP attach mode.
    pub xdp_mode: String,
    /// AF_XDP bind mode (zero-copy or copy).
    pub xsk_mode: String,
    /// AF_XDP sockets (one per RX queue).
    pub queues: u32,
    /// How flows were given to workers: `single` (one worker), `hash` (sharded by serveflow's
    /// hash, packets forwarded to their owner) or `queue` (symmetric RSS: each worker owns its
    /// queue's flows); `none` when only draining.
    pub flow_ownership: &'static str,
    /// Seconds between ready and stop.
    pub seconds: f64,
    /// What userspace received.
    pub afxdp: UserspaceCounts,
    /// The XDP program's per-outcome counters.
    pub kernel_counters: BTreeMap<&'static str, u64>,
    /// The kernel flow map.
    pub kernel_flow_map: FlowMapTotals,
    /// Drops reported by the AF_XDP sockets (XDP_STATISTICS), summed.
    pub socket_drops: SocketStatistics,
    /// Times the interface went down while serving.
    pub link_down_events: u64,
    /// The interface disappeared while serving (the run stopped early).
    pub interface_gone: bool,
    /// Only received and counted (`--drain-only`): no serving summary.
    pub drain_only: bool,
    /// The serving pipeline's summary (flows in, verdicts out, stages, latency).
    pub serving: Option<ServingSummary>,
}

/// Packets and flows received through AF_XDP.
#[derive(Debug, Default, Serialize)]
pub struct UserspaceCounts {
    /// Frames received.
    pub packets: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Flows started in the flow table (bidirectional 5-tuples within the timeouts).
    pub flows: u64,
    /// Of which TCP.
    pub tcp_flows: u64,
    /// Of which UDP.
    pub udp_flows: u64,
    /// Frames the parser skipped, by reason (should stay empty: the kernel filters first).
    pub skipped: BTreeMap<&'static str, u64>,
    /// Frames of flows that already had their verdict (with steering: only those that
    /// crossed the verdict-map update).
    pub packets_after_verdict: u64,
    /// Frames received per AF_XDP socket (RX queue 0, 1, ...).
    pub by_queue: Vec<u64>,
    /// Frames that carried the kernel's arrival time in their XDP metadata (the rest were
    /// stamped when their batch was read).
    pub kernel_timestamps: u64,
}

impl UserspaceCounts {
    /// What the workers of `r` received, in the summary's terms.
    pub fn of(r: &RunResult) -> Self {
        let mut c = UserspaceCounts::default();
        for w in &r.workers {
            c.packets += w.packets;
            c.bytes += w.bytes;
            c.flows += w.flows.started;
            c.tcp_flows += w.tcp_flows;
            c.udp_flows += w.udp_flows;
            c.packets_after_verdict += w.packets_after_verdict;
            for (k, v) in &w.skipped {
                *c.skipped.entry(k).or_default() += v;
            }
        }
        c
    }
}

impl RunSummary {
    /// Reads the kernel's and the sockets' counters into the run's summary.
    pub fn read(
        program: &XdpProgram,
        sockets: &[XskReceiver],
        seconds: f64,
        afxdp: UserspaceCounts,
        metrics: &LiveMetrics,
        serving: Option<ServingSummary>,
    ) -> Result<RunSummary, XdpError> {
        let kernel = program.counters()?;
        let mut socket_drops = SocketStatistics::default();
        for socket in sockets {
            if let Ok(s) = socket.statistics() {
                socket_drops += s;
            }
        }
        Ok(RunSummary {
            interface: program.interface().name.clone(),
            xdp_mode: program.mode().to_string(),
            xsk_mode: sockets
                .first()
                .map(|s| s.bind_mode().to_string())
                .unwrap_or_default(),
            queues: sockets.len() as u32,
            flow_ownership: "none",
            seconds,
            afxdp,
            kernel_counters: XdpCounter::ALL
                .iter()
                .map(|c| (c.name(), kernel[*c as usize]))
                .collect(),
            kernel_flow_map: program.flow_totals()?,
            socket_drops,
            link_down_events: metrics
                .link_down_events
                .load(std::sync::atomic::Ordering::Relaxed),
            interface_gone: system::link_state(program.interface()) == system::LinkState::Gone,
            drain_only: serving.is_none(),
            serving,
        })
    }

    /// The summary's human lines (the serving summary's follow).
    pub fn write_lines(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let a = &self.afxdp;
        writeln!(
            out,
            "serveflow: {} for {:.1}s: AF_XDP received {} packets ({} bytes) in {} flows ({} TCP, {} UDP)",
            self.interface, self.seconds, a.packets, a.bytes, a.flows, a.tcp_flows, a.udp_flows
        )?;
        let counters: Vec<String> = self
            .kernel_counters
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(out, "serveflow: kernel: {}", counters.join(" "))?;
        writeln!(
            out,
            "serveflow: kernel flow map: {} flows, {} packets; socket drops: {}",
            self.kernel_flow_map.flows,
            self.kernel_flow_map.packets,
            self.socket_drops.total()
        )?;
        if !a.skipped.is_empty() {
            writeln!(
                out,
                "serveflow: userspace parser skipped: {}",
                counts(a.skipped.iter().map(|(k, v)| (*k, *v)))
            )?;
        }
        if let Some(serving) = &self.serving {
            serving.write_lines(out)?;
        }
        Ok(())
    }
}
