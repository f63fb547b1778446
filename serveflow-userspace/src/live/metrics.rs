//! Live metrics: verdicts per stage and class, a latency histogram, packets received, and the
//! kernel's counters read from the pinned maps at scrape time, served in Prometheus text format
//! on a local port, and summed into one status line per interval on stderr.
//!
//! Deciding threads update atomics through a [`VerdictHook`] (no lock on the data path); the
//! per-class counts use one atomic per class, sized once from the model.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use crate::{
    capture::afxdp::SocketStatistics,
    export::SinkStats,
    pipeline::progress::Progress,
    verdict::{StageKind, Verdict, VerdictHook},
};

/// Upper bounds (seconds) of the latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.016, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0,
];

/// The shared counters.
#[derive(Debug)]
pub struct LiveMetrics {
    classes: Vec<String>,
    /// `[stage][class]` verdict counts.
    verdicts: Vec<AtomicU64>,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    /// Frames received through AF_XDP.
    pub received_packets: AtomicU64,
    /// Per AF_XDP socket (RX queue): frames received and the kernel's drop counters.
    pub queues: Vec<QueueGauges>,
    /// The pipeline's running totals (flows, escalations, fallbacks, queue depth).
    pub progress: Arc<Progress>,
    /// 1 while the interface is up with carrier.
    pub link_up: AtomicU64,
    /// Times the interface went down.
    pub link_down_events: AtomicU64,
    /// Where the kernel maps are pinned (read at scrape time).
    pub pins: PathBuf,
    /// Each export sink's URL and counters.
    pub exports: Vec<(String, Arc<SinkStats>)>,
}

/// One AF_XDP socket's counters, stored by the thread that drains it.
#[derive(Debug, Default)]
pub struct QueueGauges {
    /// Frames received.
    pub packets: AtomicU64,
    /// The socket's `XDP_STATISTICS`, as last read.
    pub drops: [AtomicU64; 4],
}

/// Names of [`QueueGauges::drops`], in order.
pub const DROP_REASONS: [&str; 4] = [
    "rx_dropped",
    "rx_invalid_descs",
    "rx_ring_full",
    "rx_fill_ring_empty_descs",
];

impl QueueGauges {
    /// Stores a socket's latest statistics.
    pub fn set_drops(&self, s: &SocketStatistics) {
        for (slot, v) in self.drops.iter().zip([
            s.rx_dropped,
            s.rx_invalid_descs,
            s.rx_ring_full,
            s.rx_fill_ring_empty_descs,
        ]) {
            slot.store(v, Relaxed);
        }
    }
}

impl LiveMetrics {
    /// Counters for a model with `classes`, `queues` AF_XDP sockets, kernel maps pinned at
    /// `pins`, and the export sinks' counters.
    pub fn new(
        classes: Vec<String>,
        queues: usize,
        pins: PathBuf,
        exports: Vec<(String, Arc<SinkStats>)>,
    ) -> Arc<Self> {
        let k = classes.len();
        Arc::new(LiveMetrics {
            queues: (0..queues).map(|_| QueueGauges::default()).collect(),
            progress: Arc::default(),
            link_up: AtomicU64::new(1),
            link_down_events: AtomicU64::new(0),
            verdicts: (0..3 * k).map(|_| AtomicU64::new(0)).collect(),
            classes,
            latency_buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
            received_packets: AtomicU64::new(0),
            pins,
            exports,
        })
    }

    /// A hook that counts into these metrics.
    pub fn hook(self: &Arc<Self>) -> Box<dyn VerdictHook> {
        Box::new(MetricsHook(Arc::clone(self)))
    }

    /// Verdicts so far per stage kind (fast, slow, fallback).
    pub fn verdicts_by_stage(&self) -> [u64; 3] {
        let k = self.classes.len();
        let mut out = [0; 3];
        for (s, o) in out.iter_mut().enumerate() {
            *o = self.verdicts[s * k..(s + 1) * k]
                .iter()
                .map(|a| a.load(Relaxed))
                .sum();
        }
        out
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("# HELP serveflow_verdicts_total Flows decided, by stage and class.\n");
        s.push_str("# TYPE serveflow_verdicts_total counter\n");
        let k = self.classes.len();
        for (si, stage) in ["fast", "slow", "fallback"].iter().enumerate() {
            for (ci, class) in self.classes.iter().enumerate() {
                let v = self.verdicts[si * k + ci].load(Relaxed);
                s.push_str(&format!(
                    "serveflow_verdicts_total{{stage=\"{stage}\",class=\"{class}\"}} {v}\n"
                ));
            }
        }
        s.push_str("# HELP serveflow_verdict_latency_seconds First packet to verdict.\n");
        s.push_str("# TYPE serveflow_verdict_latency_seconds histogram\n");
        let mut cumulative = 0;
        for (b, le) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.latency_buckets[b].load(Relaxed);
            s.push_str(&format!(
                "serveflow_verdict_latency_seconds_bucket{{le=\"{le}\"}} {cumulative}\n"
            ));
        }
        let count = self.latency_count.load(Relaxed);
        s.push_str(&format!(
            "serveflow_verdict_latency_seconds_bucket{{le=\"+Inf\"}} {count}\n\
             serveflow_verdict_latency_seconds_sum {}\n\
             serveflow_verdict_latency_seconds_count {count}\n",
            self.latency_sum_us.load(Relaxed) as f64 / 1e6
        ));
        s.push_str("# HELP serveflow_afxdp_packets_total Frames received through AF_XDP.\n");
        s.push_str("# TYPE serveflow_afxdp_packets_total counter\n");
        s.push_str(&format!(
            "serveflow_afxdp_packets_total {}\n",
            self.received_packets.load(Relaxed)
        ));
        counter(
            &mut s,
            "serveflow_afxdp_queue_packets_total",
            "Frames received, per AF_XDP socket.",
            self.queues
                .iter()
                .enumerate()
                .map(|(q, g)| (format!("{{queue=\"{q}\"}}"), g.packets.load(Relaxed))),
        );
        counter(
            &mut s,
            "serveflow_afxdp_drops_total",
            "Drops the kernel reports per AF_XDP socket (XDP_STATISTICS), by reason.",
            self.queues.iter().enumerate().flat_map(|(q, g)| {
                DROP_REASONS.iter().zip(&g.drops).map(move |(r, v)| {
                    (format!("{{queue=\"{q}\",reason=\"{r}\"}}"), v.load(Relaxed))
                })
            }),
        );
        let p = &self.progress;
        for (name, help, v) in [
            (
                "serveflow_packets_total",
                "Frames the fast-path workers handled.",
                &p.packets,
            ),
            (
                "serveflow_skipped_packets_total",
                "Frames the parser skipped.",
                &p.skipped,
            ),
            (
                "serveflow_packets_after_verdict_total",
                "Frames of flows that already had their verdict.",
                &p.packets_after_verdict,
            ),
            (
                "serveflow_flows_total",
                "Flows that entered the flow tables.",
                &p.flows,
            ),
            (
                "serveflow_flows_evicted_total",
                "Flows pushed out of a full flow table.",
                &p.flows_evicted,
            ),
            (
                "serveflow_escalated_total",
                "Flows handed to the slow pool.",
                &p.escalated,
            ),
            (
                "serveflow_fallbacks_total",
                "Escalated flows that kept their fast answer (slow queue full or stopped).",
                &p.fallbacks,
            ),
            (
                "serveflow_link_down_total",
                "Times the interface went down.",
                &self.link_down_events,
            ),
        ] {
            counter(
                &mut s,
                name,
                help,
                std::iter::once((String::new(), v.load(Relaxed))),
            );
        }
        for (name, help, v) in [
            (
                "serveflow_slow_queue_depth",
                "Jobs waiting in the slow pool's queue.",
                &p.slow_queue_depth,
            ),
            (
                "serveflow_link_up",
                "1 while the interface is up with carrier.",
                &self.link_up,
            ),
        ] {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}\n",
                v.load(Relaxed)
            ));
        }
        if !self.exports.is_empty() {
            let sinks = || self.exports.iter();
            counter(
                &mut s,
                "serveflow_export_sent_total",
                "Verdicts handed to each export sink's peer.",
                sinks().map(|(t, st)| (format!("{{sink=\"{t}\"}}"), st.sent.load(Relaxed))),
            );
            counter(
                &mut s,
                "serveflow_export_dropped_total",
                "Verdicts an export sink dropped: its queue was full, or its peer was down.",
                sinks().flat_map(|(t, st)| {
                    [
                        ("queue_full", st.dropped_full.load(Relaxed)),
                        ("peer_down", st.dropped_down.load(Relaxed)),
                        ("undelivered", st.failed.load(Relaxed)),
                    ]
                    .map(|(why, v)| (format!("{{sink=\"{t}\",reason=\"{why}\"}}"), v))
                }),
            );
            counter(
                &mut s,
                "serveflow_export_reconnects_total",
                "Times an export sink connected again after losing its peer.",
                sinks().map(|(t, st)| (format!("{{sink=\"{t}\"}}"), st.reconnects.load(Relaxed))),
            );
        }
        if let Ok(st) = crate::xdp::pinned::read(&self.pins) {
            s.push_str("# HELP serveflow_kernel_packets_total XDP program outcomes.\n");
            s.push_str("# TYPE serveflow_kernel_packets_total counter\n");
            for (name, v) in &st.counters {
                s.push_str(&format!(
                    "serveflow_kernel_packets_total{{slot=\"{name}\"}} {v}\n"
                ));
            }
            s.push_str("# TYPE serveflow_kernel_flows gauge\n");
            s.push_str(&format!("serveflow_kernel_flows {}\n", st.flows));
            s.push_str("# TYPE serveflow_kernel_decided_flows gauge\n");
            s.push_str(&format!(
                "serveflow_kernel_decided_flows {}\n",
                st.decided_flows
            ));
        }
        s
    }
}

/// Writes one counter family: HELP, TYPE and a sample per (labels, value).
fn counter(s: &mut String, name: &str, help: &str, samples: impl Iterator<Item = (String, u64)>) {
    s.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
    for (labels, v) in samples {
        s.push_str(&format!("{name}{labels} {v}\n"));
    }
}

struct MetricsHook(Arc<LiveMetrics>);

impl VerdictHook for MetricsHook {
    fn decided(&mut self, v: &Verdict, class: usize) {
        let m = &self.0;
        let stage = match v.stage {
            StageKind::Fast => 0,
            StageKind::Slow => 1,
            StageKind::Fallback => 2,
        };
        if let Some(c) = m.verdicts.get(stage * m.classes.len() + class) {
            c.fetch_add(1, Relaxed);
        }
        let secs = v.latency_us / 1e6;
        if let Some(b) = LATENCY_BUCKETS.iter().position(|le| secs <= *le) {
            m.latency_buckets[b].fetch_add(1, Relaxed);
        }
        m.latency_count.fetch_add(1, Relaxed);
        m.latency_sum_us.fetch_add(v.latency_us as u64, Relaxed);
    }
}

/// Several hooks as one.
pub struct Hooks(pub Vec<Box<dyn VerdictHook>>);

impl VerdictHook for Hooks {
    fn decided(&mut self, v: &Verdict, class: usize) {
        for h in &mut self.0 {
            h.decided(v, class);
        }
    }

    fn flush(&mut self) {
        for h in &mut self.0 {
            h.flush();
        }
    }
}

/// The `GET /metrics` endpoint: a non-blocking listener the live session's control loop
/// answers between its other checks (no thread of its own).
#[derive(Debug)]
pub struct MetricsEndpoint {
    listener: TcpListener,
}

impl MetricsEndpoint {
    /// Listens on `addr`.
    pub fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(MetricsEndpoint { listener })
    }

    /// The bound address (the port, when `addr` asked for 0).
    pub fn addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers every connection waiting now; returns how many.
    pub fn answer_pending(&self, metrics: &LiveMetrics) -> usize {
        let mut answered = 0;
        while let Ok((stream, _)) = self.listener.accept() {
            answered += 1;
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut reader = BufReader::new(&stream);
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let (status, body) = if request.starts_with("GET /metrics") {
                ("200 OK", metrics.render())
            } else {
                ("404 Not Found", "try /metrics\n".to_owned())
            };
            let mut w = &stream;
            let _ = write!(
                w,
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        answered
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;
    use std::io::Read as _;

    #[test]
    fn verdicts_are_counted_and_served() {
        let sink = Arc::new(SinkStats::default());
        sink.sent.store(5, Relaxed);
        sink.dropped_down.store(2, Relaxed);
        let m = LiveMetrics::new(
            vec!["a".into(), "b".into()],
            2,
            PathBuf::from("/nonexistent"),
            vec![("ipfix+udp://127.0.0.1:4739".into(), sink)],
        );
        m.progress.escalated.store(7, Relaxed);
        m.queues[1].set_drops(&SocketStatistics {
            rx_ring_full: 3,
            ..SocketStatistics::default()
        });
        let mut hook = m.hook();
        let v = Verdict {
            label: "b".into(),
            stage: StageKind::Slow,
            model: "slow",
            packets: 4,
            latency_us: 3_000.0,
            serving_us: 10.0,
            ..Verdict::sample()
        };
        hook.decided(&v, 1);
        hook.decided(&v, 1);
        assert_eq!(m.verdicts_by_stage(), [0, 2, 0]);
        let endpoint = MetricsEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut conn = std::net::TcpStream::connect(endpoint.addr().unwrap()).unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        // The connection waits in the backlog until the control loop's next round.
        let mut answered = 0;
        for _ in 0..100 {
            answered += endpoint.answer_pending(&m);
            if answered > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(answered, 1);
        let mut body = String::new();
        conn.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(
            body.contains("serveflow_verdicts_total{stage=\"slow\",class=\"b\"} 2"),
            "{body}"
        );
        assert!(
            body.contains("serveflow_verdict_latency_seconds_bucket{le=\"0.005\"} 2"),
            "{body}"
        );
        assert!(
            body.contains("serveflow_verdict_latency_seconds_count 2"),
            "{body}"
        );
        assert!(body.contains("serveflow_escalated_total 7"), "{body}");
        assert!(
            body.contains("serveflow_afxdp_drops_total{queue=\"1\",reason=\"rx_ring_full\"} 3"),
            "{body}"
        );
        assert!(body.contains("serveflow_link_up 1"), "{body}");
        assert!(
            body.contains("serveflow_export_sent_total{sink=\"ipfix+udp://127.0.0.1:4739\"} 5"),
            "{body}"
        );
        assert!(
            body.contains(
                "serveflow_export_dropped_total{sink=\"ipfix+udp://127.0.0.1:4739\",reason=\"peer_down\"} 2"
            ),
            "{body}"
        );
    }
}
