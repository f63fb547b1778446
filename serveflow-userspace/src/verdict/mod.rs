//! Verdicts: one per flow, written as JSON lines.
//!
//! Every thread that decides flows (fast-path workers, slow-pool threads) formats its verdicts
//! into its own buffer and appends whole buffers to the shared output under a lock, so the
//! data path never waits on the output per flow and lines never interleave.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use serde::Serialize;
use serveflow_common::FlowKey;

use crate::flow::FlowId;

/// Which part of the pipeline gave the verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// A stage run inline on the fast-path worker, confident enough.
    Fast,
    /// The slow pool.
    Slow,
    /// The flow was routed to the slow pool but its queue was full (or the pool failed): the
    /// best inline answer stands.
    Fallback,
}

impl StageKind {
    /// The name verdict lines and exports use.
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Fast => "fast",
            StageKind::Slow => "slow",
            StageKind::Fallback => "fallback",
        }
    }
}

/// What made the pipeline decide a flow when it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The flow reached the stage's packet count.
    Packets,
    /// The flow waited `max_wait` since its first packet without reaching it.
    Timeout,
    /// The flow ended (idle, FIN/RST, evicted, input ended) before reaching it.
    End,
}

impl Trigger {
    /// The name verdict lines and exports use.
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Packets => "packets",
            Trigger::Timeout => "timeout",
            Trigger::End => "end",
        }
    }
}

/// One flow's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// The flow's 5-tuple.
    #[serde(flatten)]
    pub flow: FlowId,
    /// The flow's normalised key as the kernel's maps hold it (the verdict hook writes it
    /// without a round trip through addresses).
    #[serde(skip)]
    pub key: FlowKey,
    /// First packet's timestamp, µs since the Unix epoch (capture or arrival time).
    pub first_seen_us: u64,
    /// Predicted class.
    pub label: Arc<str>,
    /// Its probability.
    pub confidence: f32,
    /// Where it was decided.
    pub stage: StageKind,
    /// Name of the model stage that produced the label (`fast`, `slow`, ...).
    pub model: &'static str,
    /// Why it was decided then.
    pub trigger: Trigger,
    /// Packets of the flow seen when decided.
    pub packets: u32,
    /// Bytes of the flow seen when decided (frames as captured, both directions).
    pub bytes: u64,
    /// First packet's arrival -> verdict, waiting for packets included (µs).
    pub latency_us: f64,
    /// Queueing and inference only: from the packet (or timeout) that triggered the decision to
    /// the verdict (µs).
    pub serving_us: f64,
    /// TLS/QUIC SNI or HTTP Host, when the flow carried one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// The true label, when labels were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truth: Option<String>,
}

/// Something told of every verdict by the thread that made it (the live path writes the
/// kernel's verdict map so the flow stops being steered).
pub trait VerdictHook: Send {
    /// `v` was decided as class index `class` (`v.key` is the flow's kernel key).
    fn decided(&mut self, v: &Verdict, class: usize);

    /// Hands on whatever the hook holds back; the deciding thread calls it when it idles and
    /// when it ends.
    fn flush(&mut self) {}
}

/// Makes one hook per deciding thread.
pub type HookFactory = Arc<dyn Fn() -> Option<Box<dyn VerdictHook>> + Send + Sync>;

/// Where verdict lines go (a file or stdout), shared by all threads.
#[derive(Clone, Default)]
pub struct VerdictOutput {
    out: Option<Arc<Mutex<Box<dyn Write + Send>>>>,
}

impl std::fmt::Debug for VerdictOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerdictOutput")
            .field("enabled", &self.out.is_some())
            .finish()
    }
}

impl VerdictOutput {
    /// Writes to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        VerdictOutput {
            out: Some(Arc::new(Mutex::new(out))),
        }
    }

    /// Verdicts are counted but not written.
    pub fn none() -> Self {
        VerdictOutput { out: None }
    }

    /// The `--out` of the commands: none (count only), `-` (stdout) or a file (created).
    pub fn to_path(path: Option<&std::path::Path>) -> std::io::Result<Self> {
        Ok(match path {
            None => VerdictOutput::none(),
            Some(p) if p == std::path::Path::new("-") => {
                VerdictOutput::new(Box::new(std::io::stdout()))
            }
            Some(p) => {
                VerdictOutput::new(Box::new(std::io::BufWriter::new(std::fs::File::create(p)?)))
            }
        })
    }

    /// A per-thread buffer in front of this output.
    pub fn buffer(&self) -> VerdictBuffer {
        VerdictBuffer {
            out: self.clone(),
            buf: Vec::with_capacity(if self.out.is_some() { FLUSH_AT * 2 } else { 0 }),
            error: None,
        }
    }

    /// Flushes the shared writer.
    pub fn flush(&self) -> std::io::Result<()> {
        match &self.out {
            Some(out) => match out.lock() {
                Ok(mut w) => w.flush(),
                Err(poisoned) => poisoned.into_inner().flush(),
            },
            None => Ok(()),
        }
    }
}

const FLUSH_AT: usize = 64 * 1024;

/// One thread's verdict lines, appended to the output in blocks.
#[derive(Debug)]
pub struct VerdictBuffer {
    out: VerdictOutput,
    buf: Vec<u8>,
    error: Option<String>,
}

impl VerdictBuffer {
    /// Formats one verdict.
    pub fn push(&mut self, v: &Verdict) {
        if self.out.out.is_none() {
            return;
        }
        if serde_json::to_writer(&mut self.buf, v).is_ok() {
            self.buf.push(b'\n');
        }
        if self.buf.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Appends what is buffered to the output.
    pub fn flush(&mut self) {
        let Some(out) = &self.out.out else { return };
        if self.buf.is_empty() {
            return;
        }
        let mut w = match out.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Err(e) = w.write_all(&self.buf) {
            self.error.get_or_insert_with(|| e.to_string());
        }
        self.buf.clear();
    }

    /// The first write error, if any.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

impl Drop for VerdictBuffer {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A verdict to build test cases from (`Verdict { label: .., ..Verdict::sample() }`).
#[cfg(test)]
impl Verdict {
    pub(crate) fn sample() -> Verdict {
        Verdict {
            flow: FlowId {
                src: std::net::IpAddr::from([10, 0, 0, 1]),
                sport: 1,
                dst: std::net::IpAddr::from([10, 0, 0, 2]),
                dport: 2,
                proto: 6,
            },
            key: FlowKey::default(),
            first_seen_us: 0,
            label: "a".into(),
            confidence: 0.9,
            stage: StageKind::Fast,
            model: "fast",
            trigger: Trigger::Packets,
            packets: 1,
            bytes: 60,
            latency_us: 0.0,
            serving_us: 1.0,
            server_name: None,
            truth: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn names_are_what_the_verdict_lines_write() {
        let json = |v: serde_json::Value| v.as_str().unwrap().to_string();
        for s in [StageKind::Fast, StageKind::Slow, StageKind::Fallback] {
            assert_eq!(s.name(), json(serde_json::to_value(s).unwrap()));
        }
        for t in [Trigger::Packets, Trigger::Timeout, Trigger::End] {
            assert_eq!(t.name(), json(serde_json::to_value(t).unwrap()));
        }
    }

    #[test]
    fn lines_from_many_threads_stay_whole() {
        let sink = Shared::default();
        let out = VerdictOutput::new(Box::new(sink.clone()));
        let v = Verdict {
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
        };
        std::thread::scope(|s| {
            for _ in 0..4 {
                let mut b = out.buffer();
                let v = v.clone();
                s.spawn(move || {
                    for _ in 0..2000 {
                        b.push(&v);
                    }
                });
            }
        });
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
}
