//! Verdicts: one per flow, what decided it and when; written as JSON lines by [`lines`].

pub mod lines;

pub use lines::{VerdictBuffer, VerdictOutput};

use std::sync::Arc;

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
}
