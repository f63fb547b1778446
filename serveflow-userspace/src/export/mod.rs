//! Verdicts exported to the engines operators run: IPFIX collectors, Kafka topics and files.
//!
//! Every sink runs off the fast path. The deciding threads' hooks ([`Exporter::hooks`]) gather
//! verdicts into batches (256, or what 20 ms or an idle moment leaves) and offers each batch to
//! every sink's queue, bounded in verdicts, and moves on: one hand-over per batch, not a wake-up
//! of the sink thread per verdict. A sink thread sends its queue on to its transport. A sink that falls behind or whose peer is down drops, counted per sink
//! ([`SinkReport`], the run summary and the metrics), and reconnects with back-off.
//!
//! - [`target`]: the URLs (`ipfix+udp://`, `ipfix+tcp://`, `kafka://`, `file:`);
//! - [`ipfix`]: RFC 7011 messages (templates, data records, serveflow's elements);
//! - `sink`: queue, thread, back-off, counters; `transport` and `kafka`: the peers.

pub mod ipfix;
mod kafka;
mod sink;
pub mod target;
mod transport;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

pub use sink::{SinkReport, SinkStats};
pub use target::{Target, TargetError};

use crate::verdict::{HookFactory, Verdict, VerdictHook};

/// Why an export could not start or a send failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The peer could not be reached or refused.
    #[error("export {target}: {message}")]
    Io {
        /// The export URL.
        target: String,
        /// What went wrong.
        message: String,
    },
    /// The sink's thread could not start.
    #[error("starting an export thread: {0}")]
    Thread(String),
}

impl ExportError {
    pub(crate) fn io(target: &str, message: impl Into<String>) -> Self {
        ExportError::Io {
            target: target.to_string(),
            message: message.into(),
        }
    }
}

/// How sinks queue and identify themselves (from `[export]` in the config file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkConfig {
    /// Verdicts each sink may hold queued before it drops.
    pub queue: usize,
    /// IPFIX observation domain id.
    pub domain: u32,
    /// At the end of a run, how long a sink may take to deliver what it holds (ms).
    pub close_timeout_ms: u64,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            queue: 65_536,
            domain: 0,
            close_timeout_ms: 5_000,
        }
    }
}

/// The running sinks of one run.
#[derive(Debug, Default)]
pub struct Exporter {
    sinks: Vec<sink::Sink>,
}

impl Exporter {
    /// Connects to every target and starts its sink. Fails at once on what can be known now:
    /// a name that does not resolve, a TCP collector that refuses, a Kafka broker that does not
    /// answer, a file that cannot be created. Later failures are counted drops.
    pub fn start(targets: &[Target], config: &SinkConfig) -> Result<Exporter, ExportError> {
        let mut sinks = Vec::with_capacity(targets.len());
        for t in targets {
            let name = t.to_string();
            let mut transport: Box<dyn sink::Transport> = match t {
                Target::IpfixUdp(a) => Box::new(transport::IpfixUdp::new(
                    name.clone(),
                    a.clone(),
                    config.domain,
                )),
                Target::IpfixTcp(a) => Box::new(transport::IpfixTcp::new(
                    name.clone(),
                    a.clone(),
                    config.domain,
                )),
                Target::Kafka { brokers, topic } => {
                    Box::new(kafka::Kafka::new(name.clone(), brokers, topic)?)
                }
                Target::File(p) => Box::new(transport::JsonFile::new(name.clone(), p.clone())),
            };
            transport.connect()?;
            sinks.push(sink::Sink::start(
                name,
                transport,
                config.queue,
                Duration::from_millis(config.close_timeout_ms),
            )?);
        }
        Ok(Exporter { sinks })
    }

    /// No sinks.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Makes a hook per deciding thread, for the pipeline: each gathers verdicts into batches
    /// and offers them to every sink.
    pub fn hooks(&self) -> HookFactory {
        let feeds: Vec<sink::SinkFeed> = self.sinks.iter().filter_map(sink::Sink::feed).collect();
        Arc::new(move || Some(Box::new(ExportHook::new(feeds.clone())) as Box<dyn VerdictHook>))
    }

    /// Each sink's URL and live counters, for the metrics endpoint.
    pub fn stats(&self) -> Vec<(String, Arc<SinkStats>)> {
        self.sinks
            .iter()
            .map(|s| (s.target.clone(), s.stats.clone()))
            .collect()
    }

    /// What each sink did so far.
    pub fn reports(&self) -> Vec<SinkReport> {
        self.sinks.iter().map(sink::Sink::report).collect()
    }

    /// Delivers what the sinks hold (each within its close timeout) and reports. Call after
    /// the pipeline has finished: verdicts offered later are dropped, counted.
    pub fn finish(self) -> Vec<SinkReport> {
        self.sinks.into_iter().map(sink::Sink::finish).collect()
    }
}

/// Verdicts a hook gathers before handing them over.
const HOOK_BATCH: usize = 256;
/// The longest a gathered verdict waits for its batch to fill.
const HOOK_LINGER: Duration = Duration::from_millis(20);

/// One deciding thread's hand-over to the sinks.
struct ExportHook {
    feeds: Vec<sink::SinkFeed>,
    batch: Vec<Verdict>,
    since: Instant,
}

impl ExportHook {
    fn new(feeds: Vec<sink::SinkFeed>) -> Self {
        ExportHook {
            feeds,
            batch: Vec::with_capacity(HOOK_BATCH),
            since: Instant::now(),
        }
    }
}

impl VerdictHook for ExportHook {
    fn decided(&mut self, v: &Verdict, _class: usize) {
        if self.batch.is_empty() {
            self.since = Instant::now();
        }
        self.batch.push(v.clone());
        if self.batch.len() >= HOOK_BATCH || self.since.elapsed() >= HOOK_LINGER {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(HOOK_BATCH));
        if let Some((last, others)) = self.feeds.split_last() {
            for f in others {
                f.offer(batch.clone());
            }
            last.offer(batch);
        }
    }
}

impl Drop for ExportHook {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The lines a summary prints for the sinks: one per sink.
pub fn summary_lines(reports: &[SinkReport]) -> Vec<String> {
    reports
        .iter()
        .map(|r| {
            let mut line = format!(
                "export:    {}  sent {}  dropped {} (queue full {}, peer down {})  undelivered {}  reconnects {}",
                r.target,
                r.sent,
                r.dropped_full + r.dropped_down,
                r.dropped_full,
                r.dropped_down,
                r.failed,
                r.reconnects
            );
            if let Some(e) = &r.last_error {
                line.push_str(&format!("  last error: {e}"));
            }
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use std::net::UdpSocket;

    use super::*;

    #[test]
    fn every_decided_flow_reaches_every_sink() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let dir = std::env::temp_dir().join(format!("sf-exporter-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("v.jsonl");
        let targets: Vec<Target> = vec![
            format!("ipfix+udp://{}", rx.local_addr().unwrap())
                .parse()
                .unwrap(),
            format!("file:{}", file.display()).parse().unwrap(),
        ];
        let ex = Exporter::start(&targets, &SinkConfig::default()).unwrap();
        let mut hook = (ex.hooks())().unwrap();
        for _ in 0..10 {
            hook.decided(&Verdict::sample(), 0);
        }
        hook.flush();
        hook.decided(&Verdict::sample(), 0);
        // A hook dropped (its thread ended) hands on what it held.
        drop(hook);
        let reports = ex.finish();
        assert!(reports.iter().all(|r| r.sent == 11 && r.lost() == 0));
        assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 11);
        let lines = summary_lines(&reports);
        assert!(lines[0].contains("sent 11  dropped 0"), "{}", lines[0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_refusing_tcp_collector_fails_at_start() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let t: Target = format!("ipfix+tcp://{addr}").parse().unwrap();
        let e = Exporter::start(&[t], &SinkConfig::default()).unwrap_err();
        assert!(e.to_string().starts_with("export ipfix+tcp://"), "{e}");
    }
}
