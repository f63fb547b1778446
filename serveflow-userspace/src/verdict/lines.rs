//! Verdict lines: one JSON line per flow, formatted and written by a thread of their own.
//!
//! Deciding threads (fast-path workers, slow-pool threads) hand whole verdicts over in batches
//! through a bounded queue; the writer thread formats them and writes blocks of lines. No
//! deciding thread formats JSON or touches the output (formatting was ~3% of a full-speed
//! replay's worker), and lines never interleave. A writer that falls behind (a slow disk, a
//! reader that stopped reading a pipe) makes the deciding threads wait rather than lose
//! verdicts: each such wait is counted ([`VerdictOutput::waits`]).

use std::{
    io::Write,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::Verdict;

/// Verdicts a deciding thread hands over at once.
const BATCH: usize = 128;
/// Batches queued for the writer before deciding threads wait for it (8,192 verdicts).
const QUEUE: usize = 64;
/// Bytes of formatted lines the writer gathers before it writes them (it also writes whenever
/// its queue runs empty).
const WRITE_AT: usize = 64 * 1024;
/// Longest a deciding thread keeps verdicts back when it idles (live runs, ns of wall time),
/// so that lines reach the output while traffic is light.
const HOLD_NS: u64 = 20_000_000;

enum Msg {
    Verdicts(Vec<Verdict>),
    /// Write and flush everything received before, then answer.
    Flush(Sender<()>),
}

/// What the writer and the deciding threads share.
#[derive(Default)]
struct Shared {
    /// The first error writing, after which the writer drops lines (verdicts still count).
    error: Mutex<Option<String>>,
    /// Times a deciding thread found the queue full and waited.
    waits: AtomicU64,
}

impl Shared {
    fn fail(&self, e: String) {
        let mut slot = match self.error.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        slot.get_or_insert(e);
    }

    fn error(&self) -> Option<String> {
        match self.error.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The writer thread: its queue and its handle, joined when the last output handle goes.
struct Writer {
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        // The thread ends once every sender is gone: ours here, the buffers' when they drop
        // (each deciding thread's output is dropped before the run's).
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where verdict lines go (a file or stdout): the writer thread every deciding thread hands
/// its verdicts to, or nowhere (verdicts only counted).
#[derive(Clone, Default)]
pub struct VerdictOutput {
    writer: Option<Arc<Writer>>,
}

impl std::fmt::Debug for VerdictOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerdictOutput")
            .field("enabled", &self.writer.is_some())
            .finish()
    }
}

impl VerdictOutput {
    /// Lines go to `out`, written by a new thread.
    pub fn new(out: Box<dyn Write + Send>) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("verdict-lines".into())
                .spawn(move || write_lines(&rx, out, &shared))?
        };
        Ok(VerdictOutput {
            writer: Some(Arc::new(Writer {
                tx: Some(tx),
                thread: Some(thread),
                shared,
            })),
        })
    }

    /// Verdicts are counted but not written.
    pub fn none() -> Self {
        VerdictOutput { writer: None }
    }

    /// The `--out` of the commands: none (count only), `-` (stdout) or a file (created).
    pub fn to_path(path: Option<&std::path::Path>) -> std::io::Result<Self> {
        match path {
            None => Ok(VerdictOutput::none()),
            Some(p) if p == std::path::Path::new("-") => {
                VerdictOutput::new(Box::new(std::io::stdout()))
            }
            Some(p) => {
                VerdictOutput::new(Box::new(std::io::BufWriter::new(std::fs::File::create(p)?)))
            }
        }
    }

    /// A deciding thread's handle on this output.
    pub fn buffer(&self) -> VerdictBuffer {
        let writer = self
            .writer
            .as_ref()
            .and_then(|w| Some((w.tx.clone()?, w.shared.clone())));
        VerdictBuffer {
            batch: Vec::with_capacity(if writer.is_some() { BATCH } else { 0 }),
            first_at: 0,
            writer,
        }
    }

    /// Waits until every verdict handed over so far is written and the output flushed;
    /// the first write error, if any.
    pub fn flush(&self) -> Result<(), String> {
        let Some(w) = &self.writer else {
            return Ok(());
        };
        let (ack, done) = crossbeam_channel::bounded(1);
        let answered =
            w.tx.as_ref()
                .is_some_and(|tx| tx.send(Msg::Flush(ack)).is_ok())
                && done.recv().is_ok();
        if !answered {
            w.shared.fail("the verdict writer thread stopped".into());
        }
        w.shared.error().map_or(Ok(()), Err)
    }

    /// The first error writing verdicts, if any.
    pub fn error(&self) -> Option<String> {
        self.writer.as_ref().and_then(|w| w.shared.error())
    }

    /// Times a deciding thread waited for the writer (its queue was full).
    pub fn waits(&self) -> u64 {
        self.writer
            .as_ref()
            .map_or(0, |w| w.shared.waits.load(Ordering::Relaxed))
    }
}

/// One deciding thread's verdicts on their way to the writer.
#[derive(Debug)]
pub struct VerdictBuffer {
    batch: Vec<Verdict>,
    /// Wall time (ns) the oldest verdict in `batch` was decided.
    first_at: u64,
    writer: Option<(Sender<Msg>, Arc<Shared>)>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl VerdictBuffer {
    /// Takes one verdict, decided at wall time `wall` (ns); hands the batch over when full.
    pub fn push(&mut self, v: Verdict, wall: u64) {
        if self.writer.is_none() {
            return;
        }
        if self.batch.is_empty() {
            self.first_at = wall;
        }
        self.batch.push(v);
        if self.batch.len() >= BATCH {
            self.flush();
        }
    }

    /// The thread idles at wall time `wall`: hands over verdicts held back longer than
    /// [`HOLD_NS`].
    pub fn idle(&mut self, wall: u64) {
        if !self.batch.is_empty() && wall.saturating_sub(self.first_at) >= HOLD_NS {
            self.flush();
        }
    }

    /// Hands every verdict held to the writer, waiting for room if its queue is full.
    pub fn flush(&mut self) {
        let Some((tx, shared)) = &self.writer else {
            return;
        };
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        let sent = match tx.try_send(Msg::Verdicts(batch)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(m)) => {
                shared.waits.fetch_add(1, Ordering::Relaxed);
                tx.send(m).map_err(|_| ())
            }
            Err(TrySendError::Disconnected(_)) => Err(()),
        };
        if sent.is_err() {
            shared.fail("the verdict writer thread stopped".into());
        }
    }
}

impl Drop for VerdictBuffer {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The writer thread: formats what arrives and writes it in blocks, and whenever its queue
/// runs empty (so lines appear while traffic is light).
fn write_lines(rx: &Receiver<Msg>, mut out: Box<dyn Write + Send>, shared: &Shared) {
    let mut text: Vec<u8> = Vec::with_capacity(2 * WRITE_AT);
    let mut failed = false;
    let mut put = |text: &mut Vec<u8>, out: &mut Box<dyn Write + Send>, flush: bool| {
        if !failed {
            let r = out
                .write_all(text)
                .and_then(|()| if flush { out.flush() } else { Ok(()) });
            if let Err(e) = r {
                failed = true;
                shared.fail(e.to_string());
            }
        }
        text.clear();
    };
    for msg in rx {
        match msg {
            Msg::Verdicts(verdicts) => {
                for v in &verdicts {
                    let start = text.len();
                    if serde_json::to_writer(&mut text, v).is_ok() {
                        text.push(b'\n');
                    } else {
                        // Never half a line in the output.
                        text.truncate(start);
                    }
                }
                drop(verdicts);
                let idle = rx.is_empty();
                if text.len() >= WRITE_AT || idle {
                    put(&mut text, &mut out, idle);
                }
            }
            Msg::Flush(ack) => {
                put(&mut text, &mut out, true);
                let _ = ack.send(());
            }
        }
    }
    put(&mut text, &mut out, true);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;
    use crate::flow::FlowId;

    /// A writer the test can read back, optionally failing every write.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>, bool);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.1 {
                return Err(std::io::Error::other("disk full"));
            }
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn sample() -> Verdict {
        Verdict {
            flow: FlowId {
                sport: 1000,
                dst: "2001:db8::1".parse().unwrap(),
                dport: 443,
                ..Verdict::sample().flow
            },
            first_seen_us: 1,
            label: "TLS".into(),
            packets: 2,
            latency_us: 12.5,
            serving_us: 1.5,
            truth: Some("TLS".into()),
            ..Verdict::sample()
        }
    }

    #[test]
    fn lines_from_many_threads_stay_whole_and_all_arrive() {
        let sink = Sink::default();
        let out = VerdictOutput::new(Box::new(sink.clone())).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let mut b = out.buffer();
                s.spawn(move || {
                    for i in 0..2000 {
                        b.push(sample(), i);
                    }
                    // The last partial batch goes when the buffer drops (t = 3) or is flushed.
                    if t != 3 {
                        b.flush();
                    }
                });
            }
        });
        out.flush().unwrap();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8000);
        for l in lines {
            let j: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(j["stage"], "fast");
            assert_eq!(j["dst"], "2001:db8::1");
            assert!(j.get("server_name").is_none());
        }
    }

    #[test]
    fn idle_threads_hand_over_what_they_held_too_long() {
        let sink = Sink::default();
        let out = VerdictOutput::new(Box::new(sink.clone())).unwrap();
        let mut b = out.buffer();
        b.push(sample(), 1_000);
        b.idle(1_000 + HOLD_NS - 1);
        out.flush().unwrap();
        assert!(sink.0.lock().unwrap().is_empty(), "held: not old enough");
        b.idle(1_000 + HOLD_NS);
        out.flush().unwrap();
        assert_eq!(
            sink.0
                .lock()
                .unwrap()
                .iter()
                .filter(|&&c| c == b'\n')
                .count(),
            1
        );
    }

    #[test]
    fn a_write_error_is_reported_and_nothing_hangs() {
        let out = VerdictOutput::new(Box::new(Sink(Arc::default(), true))).unwrap();
        let mut b = out.buffer();
        for i in 0..(BATCH as u64 * 3) {
            b.push(sample(), i);
        }
        drop(b);
        assert_eq!(out.flush().unwrap_err(), "disk full");
        assert_eq!(out.error().as_deref(), Some("disk full"));
    }

    #[test]
    fn a_slow_writer_makes_deciders_wait_and_is_counted() {
        /// Blocks every write until told to go on.
        struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>, Sink);
        impl Write for Gate {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                let (open, cv) = &*self.0;
                let mut g = open.lock().unwrap();
                while !*g {
                    g = cv.wait(g).unwrap();
                }
                self.1.write(b)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let sink = Sink::default();
        let out = VerdictOutput::new(Box::new(Gate(gate.clone(), sink.clone()))).unwrap();
        let n = BATCH * (QUEUE + 4);
        let producer = {
            let mut b = out.buffer();
            std::thread::spawn(move || {
                for i in 0..n {
                    b.push(sample(), i as u64);
                }
            })
        };
        while out.waits() == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let (open, cv) = &*gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
        producer.join().unwrap();
        out.flush().unwrap();
        let lines = sink
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|&&c| c == b'\n')
            .count();
        assert_eq!(lines, n, "waited, lost nothing");
        assert!(out.waits() >= 1);
    }
}
