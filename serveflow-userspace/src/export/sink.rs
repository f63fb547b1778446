//! One export sink: a queue, bounded in verdicts, that the deciding threads hand batches of
//! verdicts to without waiting, and a thread that sends them on to a transport, reconnecting
//! with back-off when the peer is gone. A full queue or a peer that is down costs counted
//! drops, never a stalled worker.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Serialize;

use super::ExportError;
use crate::verdict::Verdict;

/// How often the sink thread wakes without verdicts (templates, flushes, delivery reports).
const TICK: Duration = Duration::from_millis(100);
/// Verdicts sent to the transport at once, at most.
const BATCH: usize = 512;
/// First and longest wait before reconnecting.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A connection to one export peer; driven only by its sink thread.
pub(crate) trait Transport: Send {
    /// Opens (or reopens) the connection.
    fn connect(&mut self) -> Result<(), ExportError>;
    /// Sends a batch. An error means the peer is gone: the batch is lost (counted) and the
    /// sink reconnects.
    fn send(&mut self, batch: &[Verdict]) -> Result<(), ExportError>;
    /// Periodic work (template refresh, flushes, delivery reports), about every [`TICK`].
    fn tick(&mut self) -> Result<(), ExportError>;
    /// Flushes what is pending at the end, waiting at most `timeout`.
    fn close(&mut self, timeout: Duration) -> Result<(), ExportError>;
    /// Records the peer refused after they were sent (asynchronous delivery), since last asked.
    fn failed_deliveries(&mut self) -> u64 {
        0
    }
}

/// A sink's counters, shared by the hooks that feed it and its thread.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Verdicts handed to the peer.
    pub sent: AtomicU64,
    /// Dropped because the queue was full (the sink fell behind).
    pub dropped_full: AtomicU64,
    /// Dropped because the peer was down or a send failed.
    pub dropped_down: AtomicU64,
    /// Sent, but the peer reported them undelivered (Kafka).
    pub failed: AtomicU64,
    /// Connections made again after a failure.
    pub reconnects: AtomicU64,
    /// Verdicts queued now, not yet taken by the sink thread.
    pub queued: AtomicUsize,
}

/// What one sink did over a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SinkReport {
    /// The export URL.
    pub target: String,
    /// Verdicts handed to the peer.
    pub sent: u64,
    /// Dropped: queue full.
    pub dropped_full: u64,
    /// Dropped: peer down or send failed.
    pub dropped_down: u64,
    /// Undelivered after sending.
    pub failed: u64,
    /// Reconnections.
    pub reconnects: u64,
    /// The last error seen, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl SinkReport {
    /// Verdicts that did not reach the peer.
    pub fn lost(&self) -> u64 {
        self.dropped_full + self.dropped_down + self.failed
    }
}

/// The feeding end of a sink, cloned into every deciding thread's hook.
#[derive(Clone, Debug)]
pub(crate) struct SinkFeed {
    tx: Sender<Vec<Verdict>>,
    stats: Arc<SinkStats>,
    capacity: usize,
}

impl SinkFeed {
    /// Queues a batch, or counts it dropped when the queue holds `capacity` verdicts already
    /// (threads racing past the check can overshoot by a batch each); never waits.
    pub(crate) fn offer(&self, batch: Vec<Verdict>) {
        let n = batch.len();
        if n == 0 {
            return;
        }
        let queued = self.stats.queued.load(Relaxed);
        if queued + n > self.capacity {
            self.stats.dropped_full.fetch_add(n as u64, Relaxed);
            return;
        }
        self.stats.queued.fetch_add(n, Relaxed);
        if self.tx.send(batch).is_err() {
            // The sink has stopped: nobody will take them.
            self.stats.queued.fetch_sub(n, Relaxed);
            self.stats.dropped_full.fetch_add(n as u64, Relaxed);
        }
    }
}

/// A running sink.
#[derive(Debug)]
pub(crate) struct Sink {
    pub(crate) target: String,
    pub(crate) stats: Arc<SinkStats>,
    last_error: Arc<Mutex<Option<String>>>,
    feed: Option<SinkFeed>,
    /// Set at the end: the thread sends what is queued and stops, even while some hook (and
    /// so the channel) is still alive.
    closing: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    /// Starts the sink's thread over a connected transport.
    pub(crate) fn start(
        target: String,
        transport: Box<dyn Transport>,
        queue: usize,
        close_timeout: Duration,
    ) -> Result<Sink, ExportError> {
        // Unbounded in batches, bounded in verdicts by the feeds' count.
        let (tx, rx) = crossbeam_channel::unbounded();
        let stats = Arc::new(SinkStats::default());
        let last_error = Arc::new(Mutex::new(None));
        let closing = Arc::new(AtomicBool::new(false));
        let worker = SinkThread {
            closing: closing.clone(),
            rx,
            transport,
            stats: stats.clone(),
            last_error: last_error.clone(),
            connected: true,
            warned: false,
            backoff: BACKOFF_MIN,
            retry_at: Instant::now(),
            close_timeout,
        };
        let thread = std::thread::Builder::new()
            .name("serveflow-export".into())
            .spawn(move || worker.run())
            .map_err(|e| ExportError::Thread(e.to_string()))?;
        Ok(Sink {
            target,
            feed: Some(SinkFeed {
                tx,
                stats: stats.clone(),
                capacity: queue.max(1),
            }),
            stats,
            last_error,
            closing,
            thread: Some(thread),
        })
    }

    pub(crate) fn feed(&self) -> Option<SinkFeed> {
        self.feed.clone()
    }

    /// Closes the queue, lets the thread send what is queued and flush, and reports.
    pub(crate) fn finish(mut self) -> SinkReport {
        self.feed = None;
        self.closing.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("export {}: the sink thread panicked", self.target);
            }
        }
        self.report()
    }

    pub(crate) fn report(&self) -> SinkReport {
        let s = &self.stats;
        SinkReport {
            target: self.target.clone(),
            sent: s.sent.load(Relaxed),
            dropped_full: s.dropped_full.load(Relaxed),
            dropped_down: s.dropped_down.load(Relaxed),
            failed: s.failed.load(Relaxed),
            reconnects: s.reconnects.load(Relaxed),
            last_error: self.last_error.lock().map_or(None, |e| e.clone()),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // Not finished (an early error): let the thread end on its own.
        self.closing.store(true, Relaxed);
    }
}

struct SinkThread {
    rx: Receiver<Vec<Verdict>>,
    closing: Arc<AtomicBool>,
    transport: Box<dyn Transport>,
    stats: Arc<SinkStats>,
    last_error: Arc<Mutex<Option<String>>>,
    connected: bool,
    /// Whether this outage was logged (once per outage, not per failed send).
    warned: bool,
    backoff: Duration,
    retry_at: Instant,
    close_timeout: Duration,
}

impl SinkThread {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let open = match self.rx.recv_timeout(TICK) {
                Ok(mut got) => {
                    self.take(&mut batch, &mut got);
                    while batch.len() < BATCH {
                        match self.rx.try_recv() {
                            Ok(mut got) => self.take(&mut batch, &mut got),
                            Err(_) => break,
                        }
                    }
                    true
                }
                Err(RecvTimeoutError::Timeout) => !self.closing.load(Relaxed),
                Err(RecvTimeoutError::Disconnected) => false,
            };
            // Closing: what is queued now is the last of it.
            let open = open && !(self.closing.load(Relaxed) && self.rx.is_empty());
            self.reconnect();
            self.send(&mut batch);
            if self.connected {
                if let Err(e) = self.transport.tick() {
                    self.down(e);
                }
            }
            self.count_failed();
            if !open {
                break;
            }
        }
        if self.connected {
            if let Err(e) = self.transport.close(self.close_timeout) {
                self.error(&e);
            }
        }
        self.count_failed();
    }

    fn take(&self, batch: &mut Vec<Verdict>, got: &mut Vec<Verdict>) {
        self.stats.queued.fetch_sub(got.len(), Relaxed);
        batch.append(got);
    }

    fn send(&mut self, batch: &mut Vec<Verdict>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        if !self.connected {
            self.stats.dropped_down.fetch_add(n, Relaxed);
        } else {
            match self.transport.send(batch) {
                Ok(()) => {
                    self.stats.sent.fetch_add(n, Relaxed);
                    self.warned = false;
                }
                Err(e) => {
                    self.stats.dropped_down.fetch_add(n, Relaxed);
                    self.down(e);
                }
            }
        }
        batch.clear();
    }

    fn reconnect(&mut self) {
        if self.connected || Instant::now() < self.retry_at {
            return;
        }
        match self.transport.connect() {
            Ok(()) => {
                self.connected = true;
                self.backoff = BACKOFF_MIN;
                self.stats.reconnects.fetch_add(1, Relaxed);
            }
            Err(e) => {
                self.error(&e);
                self.wait_longer();
            }
        }
    }

    fn down(&mut self, e: ExportError) {
        if !self.warned {
            log::warn!("{e}; dropping verdicts until it is back");
            self.warned = true;
        }
        self.error(&e);
        self.connected = false;
        self.wait_longer();
    }

    fn wait_longer(&mut self) {
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    fn error(&self, e: &ExportError) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(e.to_string());
        }
    }

    fn count_failed(&mut self) {
        let failed = self.transport.failed_deliveries();
        if failed > 0 {
            self.stats.failed.fetch_add(failed, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use std::sync::atomic::AtomicBool;

    use super::*;

    /// A transport whose peer can be taken down and brought back.
    struct Flaky {
        up: Arc<AtomicBool>,
        got: Arc<AtomicU64>,
        slow: Duration,
    }

    impl Transport for Flaky {
        fn connect(&mut self) -> Result<(), ExportError> {
            if self.up.load(Relaxed) {
                Ok(())
            } else {
                Err(ExportError::Io {
                    target: "flaky".into(),
                    message: "refused".into(),
                })
            }
        }
        fn send(&mut self, batch: &[Verdict]) -> Result<(), ExportError> {
            std::thread::sleep(self.slow);
            self.connect()?;
            self.got.fetch_add(batch.len() as u64, Relaxed);
            Ok(())
        }
        fn tick(&mut self) -> Result<(), ExportError> {
            Ok(())
        }
        fn close(&mut self, _: Duration) -> Result<(), ExportError> {
            Ok(())
        }
    }

    fn flaky(slow: Duration) -> (Box<Flaky>, Arc<AtomicBool>, Arc<AtomicU64>) {
        let up = Arc::new(AtomicBool::new(true));
        let got = Arc::new(AtomicU64::default());
        let t = Box::new(Flaky {
            up: up.clone(),
            got: got.clone(),
            slow,
        });
        (t, up, got)
    }

    #[test]
    fn every_verdict_is_sent_or_counted_and_the_sink_comes_back() {
        let (t, up, got) = flaky(Duration::ZERO);
        let sink = Sink::start("flaky".into(), t, 10_000, Duration::from_secs(1)).unwrap();
        let feed = sink.feed().unwrap();
        let v = Verdict::sample();
        for _ in 0..100 {
            feed.offer(vec![v.clone()]);
        }
        std::thread::sleep(Duration::from_millis(300));
        up.store(false, Relaxed);
        feed.offer(vec![v.clone(); 50]);
        std::thread::sleep(Duration::from_millis(300));
        up.store(true, Relaxed);
        // Back-off reaches at most a few hundred ms here.
        std::thread::sleep(Duration::from_millis(1_000));
        for _ in 0..25 {
            feed.offer(vec![v.clone()]);
        }
        drop(feed);
        let r = sink.finish();
        assert_eq!(r.sent + r.lost(), 175, "{r:?}");
        assert_eq!(r.sent, got.load(Relaxed));
        assert!(r.dropped_down >= 50, "{r:?}");
        assert!(r.reconnects >= 1, "{r:?}");
        assert_eq!(r.last_error.as_deref(), Some("export flaky: refused"));
    }

    #[test]
    fn a_slow_peer_costs_counted_drops_not_a_wait() {
        let (t, _, _) = flaky(Duration::from_millis(50));
        let sink = Sink::start("slow".into(), t, 8, Duration::from_secs(1)).unwrap();
        let feed = sink.feed().unwrap();
        let v = Verdict::sample();
        for _ in 0..10_000 {
            feed.offer(vec![v.clone()]);
        }
        drop(feed);
        let r = sink.finish();
        // Had an offer waited for the peer (50 ms a batch), none would have been dropped.
        assert!(r.dropped_full > 9_000, "{r:?}");
        assert_eq!(r.sent + r.lost(), 10_000);
    }
}
