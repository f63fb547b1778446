//! `serveflow run`: attach to an interface, receive its TCP/UDP packets through AF_XDP, count
//! packets and flows, and print a summary on SIGINT/SIGTERM or after `--duration`.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;
use serveflow_common::{proto, XdpCounter};

use crate::{
    capture::afxdp::{SocketStatistics, XskReceiver},
    flow::{Flow, FlowConfig, FlowTable},
    parse::{self, Skip},
    system,
    xdp::{AttachMode, FlowMapTotals, XdpProgram},
};

/// Options of `serveflow run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Interface to attach to.
    pub interface: String,
    /// XDP attach mode.
    pub mode: AttachMode,
    /// Sockets to open (queues 0..n); None = every RX queue.
    pub queues: Option<u32>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Write the summary as JSON here too.
    pub summary: Option<PathBuf>,
}

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
}

/// Runs until SIGINT/SIGTERM or the duration, then prints (and optionally writes) a summary.
pub fn run(opts: &RunOptions) -> anyhow::Result<()> {
    system::check_run_privileges()?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing the SIGINT/SIGTERM handler")?;
    }

    let mut program = XdpProgram::attach(&opts.interface, opts.mode)?;
    let iface = program.interface().clone();
    let queues = opts.queues.unwrap_or(iface.rx_queues).max(1);
    let mut sockets = Vec::with_capacity(queues as usize);
    for queue in 0..queues {
        let socket = XskReceiver::open(&iface, queue).with_context(|| {
            format!("opening the AF_XDP socket on {} queue {queue}", iface.name)
        })?;
        program.bind_socket(queue, &socket.fd())?;
        sockets.push(socket);
    }
    let xsk_mode = sockets
        .first()
        .map(|s| s.bind_mode().to_string())
        .unwrap_or_default();
    // The test bed and operators wait for this line before sending traffic.
    eprintln!(
        "serveflow: ready on {} (XDP {} mode, {queues} AF_XDP socket(s), {xsk_mode}); maps pinned at {}",
        iface.name,
        program.mode(),
        program.pin_dir().display()
    );

    let started = Instant::now();
    let mut live = LiveFlows::new();
    loop {
        let mut received = 0;
        for socket in &mut sockets {
            // The monotonic clock, read once a batch, is the flow table's time.
            let now_ns = started.elapsed().as_nanos() as u64;
            received += socket.receive(|frame| live.on_frame(now_ns, frame))?;
        }
        let timed_out = opts.duration.is_some_and(|d| started.elapsed() >= d);
        if stop.load(Ordering::Relaxed) || timed_out {
            break;
        }
        if received == 0 {
            XskReceiver::wait_any(&sockets, Duration::from_millis(50))?;
        }
    }
    // Drain what the kernel already queued so the counts are complete.
    let now_ns = started.elapsed().as_nanos() as u64;
    for socket in &mut sockets {
        while socket.receive(|frame| live.on_frame(now_ns, frame))? > 0 {}
    }
    let counts = live.finish();
    let kernel = program.counters()?;
    let mut socket_drops = SocketStatistics::default();
    for socket in &sockets {
        socket_drops += socket.statistics()?;
    }
    let summary = RunSummary {
        interface: iface.name.clone(),
        xdp_mode: program.mode().to_string(),
        xsk_mode,
        queues,
        seconds: started.elapsed().as_secs_f64(),
        afxdp: counts,
        kernel_counters: XdpCounter::ALL
            .iter()
            .map(|c| (c.name(), kernel[*c as usize]))
            .collect(),
        kernel_flow_map: program.flow_totals()?,
        socket_drops,
    };
    program.detach();
    drop(sockets);

    print_summary(&summary);
    if let Some(path) = &opts.summary {
        let json = serde_json::to_string_pretty(&summary)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// What the receive loop keeps: the flow table (the same one capture replay uses) and the
/// counts for the summary.
struct LiveFlows {
    table: FlowTable<()>,
    counts: UserspaceCounts,
    skipped: [u64; Skip::ALL.len()],
}

impl LiveFlows {
    fn new() -> Self {
        LiveFlows {
            table: FlowTable::new(FlowConfig::default(), ()),
            counts: UserspaceCounts::default(),
            skipped: [0; Skip::ALL.len()],
        }
    }

    fn on_frame(&mut self, now_ns: u64, frame: &[u8]) {
        self.counts.packets += 1;
        self.counts.bytes += frame.len() as u64;
        let (tcp, udp) = (&mut self.counts.tcp_flows, &mut self.counts.udp_flows);
        match parse::parse_ethernet(frame) {
            Ok(packet) => {
                self.table
                    .observe(now_ns, &packet, &mut |f, _| count_flow(&f, tcp, udp));
            }
            Err(skip) => self.skipped[skip as usize] += 1,
        }
    }

    /// Ends the remaining flows and returns the counts.
    fn finish(mut self) -> UserspaceCounts {
        let (tcp, udp) = (&mut self.counts.tcp_flows, &mut self.counts.udp_flows);
        self.table.flush(&mut |f, _| count_flow(&f, tcp, udp));
        self.counts.flows = self.table.counters().started;
        for skip in Skip::ALL {
            let n = self.skipped[skip as usize];
            if n > 0 {
                self.counts.skipped.insert(skip.name(), n);
            }
        }
        self.counts
    }
}

fn count_flow(flow: &Flow<()>, tcp: &mut u64, udp: &mut u64) {
    match flow.proto {
        proto::TCP => *tcp += 1,
        proto::UDP => *udp += 1,
        _ => {}
    }
}

fn print_summary(s: &RunSummary) {
    eprintln!(
        "serveflow: {} for {:.1}s: AF_XDP received {} packets ({} bytes) in {} flows ({} TCP, {} UDP)",
        s.interface,
        s.seconds,
        s.afxdp.packets,
        s.afxdp.bytes,
        s.afxdp.flows,
        s.afxdp.tcp_flows,
        s.afxdp.udp_flows
    );
    let counters: Vec<String> = s
        .kernel_counters
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    eprintln!("serveflow: kernel: {}", counters.join(" "));
    eprintln!(
        "serveflow: kernel flow map: {} flows, {} packets; socket drops: {}",
        s.kernel_flow_map.flows,
        s.kernel_flow_map.packets,
        s.socket_drops.total()
    );
    if !s.afxdp.skipped.is_empty() {
        eprintln!("serveflow: userspace parser skipped: {:?}", s.afxdp.skipped);
    }
}
