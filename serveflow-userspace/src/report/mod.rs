//! Latency accounting and run reports.
//!
//! Each thread that decides flows owns a [`ThreadStats`]: HDR histograms of end-to-end latency
//! (first packet -> verdict, per stage too) and of serving latency (queue + inference), the
//! verdicts per stage and trigger, and, when labels are known, a confusion matrix. Threads
//! never share them while running; [`RunStats::merge`] adds them up for the summary and the
//! report files ([`files`]).

pub mod files;
pub mod html;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::verdict::{StageKind, Trigger, Verdict};

/// Largest latency a histogram holds (one hour, in ns); longer ones are recorded as this.
pub const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// Latency target the share of flows is reported against (the ServeFlow paper's 16 ms).
pub const TARGET_NS: u64 = 16_000_000;

#[allow(
    clippy::expect_used,
    reason = "constant bounds well within hdrhistogram's limits: this cannot fail"
)]
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

const STAGES: [StageKind; 3] = [StageKind::Fast, StageKind::Slow, StageKind::Fallback];
const TRIGGERS: [Trigger; 3] = [Trigger::Packets, Trigger::Timeout, Trigger::End];

/// Intervals the log keeps: an hour of the default 1 s intervals (`[pipeline] interval_ms`
/// longer keeps longer), a few KB each serialized. Older ones are dropped (and counted); the
/// run's own histograms still hold every flow.
pub const MAX_INTERVALS: usize = 3_600;

/// One interval's histogram, serialized (V2, deflated: what the `.hlog` holds). A dense
/// histogram over 1 ns..1 h at 3 digits is ~350 KB however few values it holds, and one a
/// second made a long run's memory grow by 15 MiB a minute (`serveflow bench --steady`);
/// serialized, an interval is its populated buckets only.
#[derive(Clone, Debug)]
pub struct CompactHistogram(Vec<u8>);

impl CompactHistogram {
    /// `h` serialized; None if the serializer refuses it.
    pub fn encode(h: &Histogram<u64>) -> Option<Self> {
        let mut buf = Vec::new();
        hdrhistogram::serialization::Serializer::serialize(
            &mut hdrhistogram::serialization::V2DeflateSerializer::new(),
            h,
            &mut buf,
        )
        .ok()?;
        Some(CompactHistogram(buf))
    }

    /// The histogram back; None if the bytes do not decode (they always should).
    pub fn decode(&self) -> Option<Histogram<u64>> {
        hdrhistogram::serialization::Deserializer::new()
            .deserialize(&mut self.0.as_slice())
            .ok()
    }

    /// Bytes it takes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it takes none (never, for an encoded histogram).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Per-interval histograms of end-to-end latency, shared by all threads, for the `.hlog`:
/// serialized, and at most [`MAX_INTERVALS`] of them.
#[derive(Clone, Debug, Default)]
pub struct IntervalLog {
    inner: Arc<Mutex<Intervals>>,
}

#[derive(Debug)]
struct Intervals {
    slots: BTreeMap<u64, CompactHistogram>,
    dropped: u64,
    cap: usize,
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals {
            slots: BTreeMap::new(),
            dropped: 0,
            cap: MAX_INTERVALS,
        }
    }
}

impl IntervalLog {
    /// A log that keeps at most `cap` intervals (tests; runs keep [`MAX_INTERVALS`]).
    pub fn with_cap(cap: usize) -> Self {
        IntervalLog {
            inner: Arc::new(Mutex::new(Intervals {
                cap: cap.max(1),
                ..Intervals::default()
            })),
        }
    }

    fn add(&self, slot: u64, h: &Histogram<u64>) {
        let mut log = match self.inner.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        // Another thread's part of the same interval: add them up.
        let merged = log
            .slots
            .get(&slot)
            .and_then(CompactHistogram::decode)
            .map(|mut m| {
                let _ = m.add(h);
                m
            });
        let Some(compact) = CompactHistogram::encode(merged.as_ref().unwrap_or(h)) else {
            return;
        };
        log.slots.insert(slot, compact);
        while log.slots.len() > log.cap {
            log.slots.pop_first();
            log.dropped += 1;
        }
    }

    /// The intervals kept, by index, and how many older ones were dropped.
    pub fn slots(&self) -> (BTreeMap<u64, CompactHistogram>, u64) {
        match self.inner.lock() {
            Ok(s) => (s.slots.clone(), s.dropped),
            Err(p) => {
                let s = p.into_inner();
                (s.slots.clone(), s.dropped)
            }
        }
    }
}

/// Verdict counts and latency histograms: what each deciding thread records and what a run
/// adds up to (one type for both, so they cannot drift apart).
#[derive(Debug, Clone)]
pub struct VerdictTally {
    /// End-to-end latency of every verdict (ns).
    pub e2e: Histogram<u64>,
    /// End-to-end latency per stage kind.
    pub e2e_by_stage: [Histogram<u64>; 3],
    /// Queue + inference latency (ns).
    pub serving: Histogram<u64>,
    /// Verdicts per stage kind.
    pub verdicts: [u64; 3],
    /// Verdicts per trigger.
    pub triggers: [u64; 3],
    /// `classes x classes` counts of (truth, predicted), for labeled flows.
    pub confusion: Vec<u64>,
    /// Labeled verdicts whose truth maps to no class of the model.
    pub unknown_truth: u64,
    /// Verdicts per predicted class and stage kind (fast, slow, fallback).
    pub by_class: Vec<[u64; 3]>,
}

impl VerdictTally {
    /// Empty, for a model of `classes` classes.
    pub fn new(classes: usize) -> Self {
        VerdictTally {
            e2e: histogram(),
            e2e_by_stage: [histogram(), histogram(), histogram()],
            serving: histogram(),
            verdicts: [0; 3],
            triggers: [0; 3],
            confusion: vec![0; classes * classes],
            unknown_truth: 0,
            by_class: vec![[0; 3]; classes],
        }
    }

    /// Adds another tally (of the same model).
    pub fn add(&mut self, o: &VerdictTally) {
        let _ = self.e2e.add(&o.e2e);
        let _ = self.serving.add(&o.serving);
        for (a, b) in self.e2e_by_stage.iter_mut().zip(&o.e2e_by_stage) {
            let _ = a.add(b);
        }
        for i in 0..3 {
            self.verdicts[i] += o.verdicts[i];
            self.triggers[i] += o.triggers[i];
        }
        if o.confusion.len() == self.confusion.len() {
            for (a, b) in self.confusion.iter_mut().zip(&o.confusion) {
                *a += b;
            }
        }
        self.unknown_truth += o.unknown_truth;
        if o.by_class.len() == self.by_class.len() {
            for (a, b) in self.by_class.iter_mut().zip(&o.by_class) {
                for s in 0..3 {
                    a[s] += b[s];
                }
            }
        }
    }
}

/// One thread's tally, and its interval histogram for the `.hlog`.
#[derive(Debug)]
pub struct ThreadStats {
    /// What the thread decided.
    pub tally: VerdictTally,
    classes: usize,
    interval: Histogram<u64>,
    interval_slot: u64,
    interval_ns: u64,
    log: IntervalLog,
}

impl ThreadStats {
    /// Empty stats for a model of `classes` classes, rolling `interval_ns` intervals into `log`.
    pub fn new(classes: usize, interval_ns: u64, log: IntervalLog) -> Self {
        ThreadStats {
            tally: VerdictTally::new(classes),
            classes,
            interval: histogram(),
            interval_slot: 0,
            interval_ns: interval_ns.max(1),
            log,
        }
    }

    /// Records one verdict decided at `wall_ns` (the run's wall clock), with the class index
    /// of its label and of its truth where known.
    pub fn record(
        &mut self,
        v: &Verdict,
        predicted: usize,
        truth: Option<Option<usize>>,
        wall_ns: u64,
    ) {
        let e2e = (v.latency_us * 1e3).max(1.0) as u64;
        let serving = (v.serving_us * 1e3).max(1.0) as u64;
        let t = &mut self.tally;
        t.e2e.saturating_record(e2e.min(MAX_LATENCY_NS));
        t.serving.saturating_record(serving.min(MAX_LATENCY_NS));
        let s = stage_index(v.stage);
        t.e2e_by_stage[s].saturating_record(e2e.min(MAX_LATENCY_NS));
        t.verdicts[s] += 1;
        if let Some(c) = t.by_class.get_mut(predicted) {
            c[s] += 1;
        }
        t.triggers[trigger_index(v.trigger)] += 1;
        match truth {
            Some(Some(truth)) if truth < self.classes && predicted < self.classes => {
                t.confusion[truth * self.classes + predicted] += 1;
            }
            Some(_) => t.unknown_truth += 1,
            None => {}
        }
        let slot = wall_ns / self.interval_ns;
        if slot != self.interval_slot {
            self.roll();
            self.interval_slot = slot;
        }
        self.interval.saturating_record(e2e.min(MAX_LATENCY_NS));
    }

    fn roll(&mut self) {
        if !self.interval.is_empty() {
            self.log.add(self.interval_slot, &self.interval);
            self.interval.reset();
        }
    }

    /// Hands the open interval to the log; call when the thread stops.
    pub fn finish(&mut self) {
        self.roll();
    }
}

fn stage_index(s: StageKind) -> usize {
    match s {
        StageKind::Fast => 0,
        StageKind::Slow => 1,
        StageKind::Fallback => 2,
    }
}

fn trigger_index(t: Trigger) -> usize {
    match t {
        Trigger::Packets => 0,
        Trigger::Timeout => 1,
        Trigger::End => 2,
    }
}

/// Everything the threads recorded, added up.
#[derive(Debug)]
pub struct RunStats {
    /// The threads' tallies, added up.
    pub tally: VerdictTally,
    /// Class names.
    pub classes: Vec<String>,
    /// Per-interval end-to-end histograms (the last [`MAX_INTERVALS`]).
    pub intervals: BTreeMap<u64, CompactHistogram>,
    /// Intervals dropped before those, the log being full.
    pub dropped_intervals: u64,
    /// Interval length (ns).
    pub interval_ns: u64,
}

impl RunStats {
    /// Adds up `threads`.
    pub fn merge(classes: Vec<String>, threads: Vec<ThreadStats>, log: &IntervalLog) -> Self {
        let mut run = RunStats {
            tally: VerdictTally::new(classes.len()),
            classes,
            intervals: BTreeMap::new(),
            dropped_intervals: 0,
            interval_ns: 1,
        };
        for mut t in threads {
            t.finish();
            run.tally.add(&t.tally);
            run.interval_ns = t.interval_ns;
        }
        (run.intervals, run.dropped_intervals) = log.slots();
        run
    }

    /// Verdicts in all.
    pub fn total(&self) -> u64 {
        self.tally.verdicts.iter().sum()
    }

    /// Labeled flows scored, accuracy and macro-F1 (over classes present in truth or
    /// predictions), when any flow was labeled.
    pub fn scores(&self) -> Option<Scores> {
        scores(&self.tally.confusion, self.classes.len())
    }

    /// The summary written at exit and into `summary.json`.
    pub fn summary(&self) -> LatencySummary {
        let total = self.total().max(1) as f64;
        let mut verdicts = BTreeMap::new();
        let mut latency = BTreeMap::new();
        for (i, s) in STAGES.iter().enumerate() {
            verdicts.insert(s.name().to_string(), self.tally.verdicts[i]);
            if !self.tally.e2e_by_stage[i].is_empty() {
                latency.insert(
                    format!("e2e_{}", s.name()),
                    Percentiles::of(&self.tally.e2e_by_stage[i]),
                );
            }
        }
        latency.insert("e2e".into(), Percentiles::of(&self.tally.e2e));
        latency.insert("serving".into(), Percentiles::of(&self.tally.serving));
        let mut triggers = BTreeMap::new();
        for (i, t) in TRIGGERS.iter().enumerate() {
            triggers.insert(t.name().to_string(), self.tally.triggers[i]);
        }
        LatencySummary {
            flows: self.total(),
            verdicts,
            triggers,
            escalated_percent: 100.0 * (self.tally.verdicts[1] + self.tally.verdicts[2]) as f64
                / total,
            fallback_percent: 100.0 * self.tally.verdicts[2] as f64 / total,
            under_16ms_percent: 100.0 * share_at_most(&self.tally.e2e, TARGET_NS),
            latency_ms: latency,
            scores: self.scores(),
            unknown_truth: self.tally.unknown_truth,
            by_class: self
                .classes
                .iter()
                .zip(&self.tally.by_class)
                .filter(|(_, n)| n.iter().sum::<u64>() > 0)
                .map(|(c, n)| {
                    let counts = ClassCounts {
                        flows: n.iter().sum(),
                        fast: n[0],
                        slow: n[1],
                        fallback: n[2],
                    };
                    (c.clone(), counts)
                })
                .collect(),
        }
    }
}

impl LatencySummary {
    /// The classes given at least once, most flows first (then by name): the order every
    /// table of them uses.
    pub fn classes_by_flows(&self) -> Vec<(&String, &ClassCounts)> {
        let mut rows: Vec<_> = self.by_class.iter().collect();
        rows.sort_by(|a, b| b.1.flows.cmp(&a.1.flows).then(a.0.cmp(b.0)));
        rows
    }
}

/// One class's verdicts, by where they were decided.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClassCounts {
    /// Flows given this class.
    pub flows: u64,
    /// Of which by an inline stage.
    pub fast: u64,
    /// By the slow pool.
    pub slow: u64,
    /// Fallbacks (slow pool full: best inline answer).
    pub fallback: u64,
}

/// Share of recorded values <= `limit`.
pub fn share_at_most(h: &Histogram<u64>, limit: u64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.count_between(0, limit) as f64 / h.len() as f64
}

/// Accuracy and macro-F1 of labeled verdicts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scores {
    /// Labeled flows scored.
    pub flows: u64,
    /// Share predicted right.
    pub accuracy: f64,
    /// Unweighted mean of per-class F1 over classes that occur in truth or predictions.
    pub macro_f1: f64,
}

/// Scores of a `k x k` (truth, predicted) confusion matrix.
pub fn scores(confusion: &[u64], k: usize) -> Option<Scores> {
    let flows: u64 = confusion.iter().sum();
    if flows == 0 || confusion.len() != k * k {
        return None;
    }
    let right: u64 = (0..k).map(|i| confusion[i * k + i]).sum();
    let mut f1s = Vec::new();
    for c in 0..k {
        let tp = confusion[c * k + c] as f64;
        let truth: u64 = (0..k).map(|p| confusion[c * k + p]).sum();
        let predicted: u64 = (0..k).map(|t| confusion[t * k + c]).sum();
        if truth == 0 && predicted == 0 {
            continue;
        }
        let denom = (truth + predicted) as f64;
        f1s.push(if denom > 0.0 { 2.0 * tp / denom } else { 0.0 });
    }
    Some(Scores {
        flows,
        accuracy: right as f64 / flows as f64,
        macro_f1: f1s.iter().sum::<f64>() / f1s.len().max(1) as f64,
    })
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// Of a histogram of nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |v: u64| v as f64 / 1e6;
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1e6,
        }
    }
}

/// What a run reports about its verdicts.
#[derive(Clone, Debug, Serialize)]
pub struct LatencySummary {
    /// Flows decided (one verdict each).
    pub flows: u64,
    /// Verdicts per stage kind.
    pub verdicts: BTreeMap<String, u64>,
    /// Verdicts per trigger.
    pub triggers: BTreeMap<String, u64>,
    /// Share of flows routed to the slow pool (decided there or fallen back).
    pub escalated_percent: f64,
    /// Share of flows that fell back because the slow pool was full or failed.
    pub fallback_percent: f64,
    /// Share of flows decided within 16 ms of their first packet.
    pub under_16ms_percent: f64,
    /// Latency percentiles (ms): `e2e`, `e2e_<stage>`, `serving`.
    pub latency_ms: BTreeMap<String, Percentiles>,
    /// Accuracy, when labels were given.
    pub scores: Option<Scores>,
    /// Labeled flows whose label is none of the model's classes (and the model has no
    /// `other`).
    pub unknown_truth: u64,
    /// Verdicts per class that was given at least once.
    pub by_class: BTreeMap<String, ClassCounts>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;

    #[test]
    fn scores_of_a_confusion_matrix() {
        // truth 0: 8 right, 2 as 1; truth 1: 5 right; class 2 never seen.
        let m = [8, 2, 0, 0, 5, 0, 0, 0, 0];
        let s = scores(&m, 3).unwrap();
        assert_eq!(s.flows, 15);
        assert!((s.accuracy - 13.0 / 15.0).abs() < 1e-12);
        let f0 = 2.0 * 8.0 / (10.0 + 8.0);
        let f1 = 2.0 * 5.0 / (5.0 + 7.0);
        assert!((s.macro_f1 - (f0 + f1) / 2.0).abs() < 1e-12);
        assert!(scores(&[0; 4], 2).is_none());
    }

    #[test]
    fn threads_merge_into_one_summary() {
        let log = IntervalLog::default();
        let classes: Vec<String> = vec!["a".into(), "b".into()];
        let verdict = |stage, latency_us| Verdict {
            confidence: 1.0,
            stage,
            latency_us,
            ..Verdict::sample()
        };
        let mut t1 = ThreadStats::new(2, 1_000_000_000, log.clone());
        let mut t2 = ThreadStats::new(2, 1_000_000_000, log.clone());
        for i in 0..90 {
            t1.record(&verdict(StageKind::Fast, 100.0), 0, Some(Some(0)), i);
        }
        for _ in 0..10 {
            t2.record(
                &verdict(StageKind::Slow, 20_000.0),
                0,
                Some(Some(1)),
                2_000_000_000,
            );
        }
        let run = RunStats::merge(classes, vec![t1, t2], &log);
        let s = run.summary();
        assert_eq!(s.flows, 100);
        assert_eq!(s.verdicts["slow"], 10);
        assert!((s.escalated_percent - 10.0).abs() < 1e-9);
        assert!((s.under_16ms_percent - 90.0).abs() < 1e-9);
        assert!((s.scores.unwrap().accuracy - 0.9).abs() < 1e-12);
        assert_eq!(run.intervals.len(), 2, "slots 0 and 2");
        assert_eq!(
            run.intervals
                .values()
                .map(|c| c.decode().unwrap().len())
                .sum::<u64>(),
            100
        );
        assert!(
            run.intervals.values().all(|c| c.len() < 4096),
            "an interval takes its populated buckets, not the dense ~350 KB"
        );
    }

    #[test]
    fn the_interval_log_is_compact_and_bounded() {
        let log = IntervalLog::with_cap(3);
        let mut h = histogram();
        h.record(1_000).unwrap();
        for slot in 0..5 {
            log.add(slot, &h);
        }
        // A second thread's part of slot 4 adds up.
        log.add(4, &h);
        let (slots, dropped) = log.slots();
        assert_eq!(slots.keys().copied().collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(dropped, 2);
        assert_eq!(slots[&4].decode().unwrap().len(), 2);
        assert!(slots[&2].len() < 256, "{} bytes", slots[&2].len());
    }
}
