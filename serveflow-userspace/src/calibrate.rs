//! Calibration: makes each inline stage's confidence mean the same on captures it never saw,
//! then picks its routing thresholds for a stated target, ServeFlow style: as few flows as
//! possible wait for later stages while the cascade stays within `max_drop` (macro-F1 and
//! accuracy) of the slow stage alone (or sends at most `max_escalated` of flows to the slow
//! pool, at the best macro-F1).
//!
//! 1. Every stage's raw scores are computed once per labeled flow, from the features the stage
//!    has when its wait runs out (the serving code's features, through the serving waits).
//! 2. Temperature scaling: each inline stage's softmax temperature is fitted to minimise the
//!    negative log-likelihood of the true classes (one parameter per stage, so it transfers;
//!    per-class thresholds fitted on over-confident trees did not).
//! 3. Every threshold combination on a grid is scored by replaying the routing rule over the
//!    calibrated predictions.

use std::path::PathBuf;

use serde::Serialize;

use crate::{
    extract::extract,
    flow::FlowConfig,
    labels::{class_of, FlowLabels, LabelKey},
    pipeline::cascade::{Cascade, ServeState},
    report::scores,
    router::{argmax, uncertainty},
    services::ServiceMap,
};

/// Every stage's answer for one labeled flow, as routing sees it.
#[derive(Clone, Debug)]
pub struct FlowAnswers {
    /// True class.
    pub truth: usize,
    /// (class, uncertainty) of each inline stage.
    pub inline: Vec<(usize, f64)>,
    /// The slow stage's class.
    pub slow: usize,
}

/// Every stage's output for a set of labeled flows, before routing.
#[derive(Clone, Debug, Default)]
pub struct Answers {
    /// Classes.
    pub k: usize,
    /// True class per flow.
    pub truth: Vec<usize>,
    /// Raw scores per inline stage, `k` per flow.
    pub raw: Vec<Vec<f64>>,
    /// Per inline stage and flow: the stage passed the flow on unasked
    /// ([`InlineStage::abstains`](crate::pipeline::cascade::InlineStage::abstains)).
    pub abstained: Vec<Vec<bool>>,
    /// The slow stage's class per flow.
    pub slow: Vec<usize>,
    /// Captures read.
    pub captures: usize,
    /// Captures that could not be read, with the reason.
    pub unreadable: Vec<String>,
}

impl Answers {
    /// Labeled flows.
    pub fn len(&self) -> usize {
        self.truth.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.truth.is_empty()
    }

    /// Inline stage `s`'s raw scores and the true classes of the flows it answers, leaving
    /// out those it passed on unasked: its router never sees their scores, so they must not
    /// pull its temperature or count in its calibration error.
    pub fn answered(&self, s: usize) -> (Vec<f64>, Vec<usize>) {
        let (Some(raw), passed) = (self.raw.get(s), self.abstained.get(s)) else {
            return (Vec::new(), Vec::new());
        };
        let mut out = (
            Vec::with_capacity(raw.len()),
            Vec::with_capacity(self.truth.len()),
        );
        for (i, (row, &t)) in raw.chunks(self.k.max(1)).zip(&self.truth).enumerate() {
            if !passed.and_then(|p| p.get(i)).copied().unwrap_or(false) {
                out.0.extend_from_slice(row);
                out.1.push(t);
            }
        }
        out
    }

    /// Each inline stage's temperature, fitted ([`fit_temperature`]) on the flows it answers.
    pub fn fit_temperatures(&self) -> Vec<f64> {
        (0..self.raw.len())
            .map(|s| {
                let (raw, truth) = self.answered(s);
                fit_temperature(&raw, &truth, self.k)
            })
            .collect()
    }

    /// Each inline stage's calibration error ([`ece`]) at `temperatures` (`None`: raw scores),
    /// on the flows it answers.
    pub fn calibration_errors(&self, temperatures: Option<&[f64]>) -> Vec<f64> {
        (0..self.raw.len())
            .map(|s| {
                let (raw, truth) = self.answered(s);
                let t = temperatures.and_then(|t| t.get(s)).copied().unwrap_or(1.0);
                ece(&raw, &truth, self.k, t)
            })
            .collect()
    }

    /// Flows per true class.
    pub fn support(&self) -> Vec<usize> {
        let mut n = vec![0; self.k];
        for &t in &self.truth {
            if let Some(c) = n.get_mut(t) {
                *c += 1;
            }
        }
        n
    }
}

/// What counts as good enough.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Cascade macro-F1 and accuracy each at least slow-only's minus this; fewest
    /// escalations. (Accuracy too: macro-F1 alone is swayed by classes with a handful of
    /// flows, and thresholds fitted to it escalated far fewer flows than held on other files.)
    MaxDrop(f64),
    /// Cascade macro-F1 alone at least slow-only's minus this; fewest escalations.
    MaxF1Drop(f64),
    /// At most this share (0..1) of flows escalated to the slow pool; best macro-F1.
    MaxEscalated(f64),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::MaxDrop(d) => write!(
                f,
                "macro-F1 and accuracy within {:.1} points of slow-only",
                d * 100.0
            ),
            Target::MaxF1Drop(d) => {
                write!(f, "macro-F1 within {:.1} points of slow-only", d * 100.0)
            }
            Target::MaxEscalated(s) => write!(f, "at most {:.1}% escalated", s * 100.0),
        }
    }
}

/// One set of thresholds, scored.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// Threshold per inline stage and predicted class (escalate when uncertainty exceeds it;
    /// below 0: always escalate).
    pub thresholds: Vec<Vec<f64>>,
    /// Cascade accuracy.
    pub accuracy: f64,
    /// Cascade macro-F1.
    pub macro_f1: f64,
    /// Share of flows decided by each inline stage.
    pub decided_by: Vec<f64>,
    /// Share of flows escalated to the slow stage.
    pub escalated: f64,
}

/// The calibration's result.
#[derive(Clone, Debug, Serialize)]
pub struct Calibration {
    /// Flows it was computed on.
    pub flows: usize,
    /// The target.
    pub target: Target,
    /// Each inline stage alone (macro-F1).
    pub stage_f1: Vec<f64>,
    /// Slow-only macro-F1.
    pub slow_f1: f64,
    /// Slow-only accuracy.
    pub slow_accuracy: f64,
    /// The picked thresholds.
    pub picked: Outcome,
}

/// Every stage's output for each labeled flow of `captures` (label paths from `labels`), with
/// features seen through the serving waits (`waits_ns`: inline, slow). `done` counts the
/// captures read, for a progress line.
pub fn answers(
    cascade: &Cascade,
    labels: &FlowLabels,
    captures: &[PathBuf],
    waits_ns: (u64, u64),
    done: &std::sync::atomic::AtomicU64,
) -> anyhow::Result<Answers> {
    let classes: Vec<String> = cascade.classes.iter().map(|c| c.to_string()).collect();
    let k = classes.len();
    let specs = cascade.specs_within(waits_ns.0, waits_ns.1);
    let mut out = Answers {
        k,
        raw: vec![Vec::new(); cascade.inline.len()],
        abstained: vec![Vec::new(); cascade.inline.len()],
        ..Answers::default()
    };
    let mut slow_rows: Vec<f32> = Vec::new();
    let mut raw = vec![0.0; k];
    let mut x32 = Vec::new();
    for file in captures {
        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(path) = labels.path_of(file) else {
            continue;
        };
        out.captures += 1;
        let result = extract::<ServeState>(
            std::slice::from_ref(file),
            FlowConfig::default(),
            specs.clone(),
            &mut ServiceMap::default(),
            None,
            |flow, _, _| {
                let key = LabelKey {
                    path: path.clone(),
                    flow: flow.id(),
                };
                let Some(truth) = labels.get(&key).and_then(|l| class_of(l, &classes)) else {
                    return;
                };
                for (i, stage) in cascade.inline.iter().enumerate() {
                    x32.clear();
                    flow.state.features[i].values(&mut x32);
                    stage.model.predict_raw_f32(&x32, &mut raw);
                    out.raw[i].extend_from_slice(&raw[..k]);
                    out.abstained[i].push(stage.abstains(&x32));
                }
                if let Some(f) = flow.state.features.last() {
                    let before = slow_rows.len();
                    f.values(&mut slow_rows);
                    slow_rows.resize(before + cascade.slow.features(), -1.0);
                }
                out.truth.push(truth);
            },
        );
        if let Err(e) = result {
            out.unreadable.push(format!("{}: {e}", file.display()));
        }
    }
    let mut state = cascade.slow.state()?;
    let width = cascade.slow.features();
    let mut probs = Vec::new();
    let mut p64 = vec![0.0; k];
    for chunk in slow_rows.chunks(64 * width.max(1)) {
        cascade.slow.predict_batch(&mut state, chunk, &mut probs)?;
        for row in probs.chunks(k) {
            for (d, s) in p64.iter_mut().zip(row) {
                *d = f64::from(*s);
            }
            out.slow.push(argmax(&p64).0);
        }
    }
    Ok(out)
}

/// Softmax of `raw / temperature` into `out`.
fn softmax(raw: &[f64], temperature: f64, out: &mut [f64]) {
    let max = raw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for (o, r) in out.iter_mut().zip(raw) {
        *o = ((r - max) / temperature).exp();
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}

/// Mean negative log-likelihood of the true classes under softmax(raw / temperature).
pub fn nll(raw: &[f64], truth: &[usize], k: usize, temperature: f64) -> f64 {
    let mut p = vec![0.0; k];
    let mut total = 0.0;
    let mut n = 0usize;
    for (row, &t) in raw.chunks(k).zip(truth) {
        if t >= k {
            continue;
        }
        softmax(row, temperature, &mut p);
        total -= p[t].max(1e-300).ln();
        n += 1;
    }
    total / n.max(1) as f64
}

/// The temperature (within the manifest's range) minimising [`nll`]: golden-section search
/// over its inverse, in which the log-likelihood is convex.
pub fn fit_temperature(raw: &[f64], truth: &[usize], k: usize) -> f64 {
    let range = crate::model::dir::TEMPERATURES;
    let f = |beta: f64| nll(raw, truth, k, 1.0 / beta);
    let (mut lo, mut hi) = (1.0 / range.end(), 1.0 / range.start());
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (hi - phi * (hi - lo), lo + phi * (hi - lo));
    let (mut fa, mut fb) = (f(a), f(b));
    for _ in 0..80 {
        if fa < fb {
            hi = b;
            b = a;
            fb = fa;
            a = hi - phi * (hi - lo);
            fa = f(a);
        } else {
            lo = a;
            a = b;
            fa = fb;
            b = lo + phi * (hi - lo);
            fb = f(b);
        }
    }
    let beta = (lo + hi) / 2.0;
    (1.0 / beta).clamp(*range.start(), *range.end())
}

/// Expected calibration error (15 equal-width confidence bins): how far a stage's stated
/// confidence is from its accuracy, weighted by flows.
pub fn ece(raw: &[f64], truth: &[usize], k: usize, temperature: f64) -> f64 {
    const BINS: usize = 15;
    let mut p = vec![0.0; k];
    let (mut conf, mut right, mut count) = ([0.0; BINS], [0.0; BINS], [0usize; BINS]);
    for (row, &t) in raw.chunks(k).zip(truth) {
        softmax(row, temperature, &mut p);
        let (class, c) = argmax(&p);
        let bin = ((c * BINS as f64) as usize).min(BINS - 1);
        conf[bin] += c;
        right[bin] += f64::from(u8::from(class == t));
        count[bin] += 1;
    }
    let n = count.iter().sum::<usize>().max(1) as f64;
    (0..BINS)
        .filter(|&b| count[b] > 0)
        .map(|b| (conf[b] - right[b]).abs() / n)
        .sum()
}

/// The routing view of `answers` with each inline stage at its `temperatures`.
pub fn routed(cascade: &Cascade, answers: &Answers, temperatures: &[f64]) -> Vec<FlowAnswers> {
    let k = answers.k;
    let mut p = vec![0.0; k];
    (0..answers.len())
        .map(|i| {
            let inline = cascade
                .inline
                .iter()
                .zip(&answers.raw)
                .zip(temperatures)
                .enumerate()
                .map(|(s, ((stage, raw), &t))| {
                    p.copy_from_slice(&raw[i * k..(i + 1) * k]);
                    stage.model.probabilities(&mut p, t);
                    let passed = answers
                        .abstained
                        .get(s)
                        .and_then(|a| a.get(i))
                        .copied()
                        .unwrap_or(false);
                    // A stage that passed the flow on unasked is never sure of it.
                    let u = if passed {
                        f64::INFINITY
                    } else {
                        uncertainty(stage.router.measure, &p)
                    };
                    (argmax(&p).0, u)
                })
                .collect();
            FlowAnswers {
                truth: answers.truth[i],
                inline,
                slow: answers.slow.get(i).copied().unwrap_or(0),
            }
        })
        .collect()
}

/// Scores the cascade with per-stage, per-class `thresholds` over `answers`.
pub fn evaluate(answers: &[FlowAnswers], thresholds: &[Vec<f64>], k: usize) -> Outcome {
    let mut confusion = vec![0u64; k * k];
    let mut decided = vec![0u64; thresholds.len()];
    let mut escalated = 0u64;
    for a in answers {
        let mut label = None;
        for (i, (class, u)) in a.inline.iter().enumerate() {
            if *u <= thresholds[i].get(*class).copied().unwrap_or(-1.0) {
                label = Some(*class);
                decided[i] += 1;
                break;
            }
        }
        let label = label.unwrap_or_else(|| {
            escalated += 1;
            a.slow
        });
        if a.truth < k && label < k {
            confusion[a.truth * k + label] += 1;
        }
    }
    let n = answers.len().max(1) as f64;
    let s = scores(&confusion, k);
    Outcome {
        thresholds: thresholds.to_vec(),
        accuracy: s.as_ref().map_or(0.0, |s| s.accuracy),
        macro_f1: s.map_or(0.0, |s| s.macro_f1),
        decided_by: decided.iter().map(|d| *d as f64 / n).collect(),
        escalated: escalated as f64 / n,
    }
}

/// Share of flows `after` decides at an earlier inline stage than `before` did, among those
/// both decide inline.
fn earlier(before: &Outcome, after: &Outcome) -> f64 {
    // Decided by stages 0..=s, summed over the stages but the last: a flow moved from stage j
    // to stage i < j raises the prefixes i..j by one each.
    let prefix = |o: &Outcome| {
        o.decided_by
            .iter()
            .scan(0.0, |acc, d| {
                *acc += d;
                Some(*acc)
            })
            .collect::<Vec<f64>>()
    };
    let (b, a) = (prefix(before), prefix(after));
    let last = a.len().saturating_sub(1);
    a.iter()
        .zip(&b)
        .take(last)
        .map(|(x, y)| (x - y).max(0.0))
        .sum()
}

/// Threshold steps a class's threshold is raised through.
const STEPS: [f64; 22] = [
    -1.0, 0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45,
    0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
];

/// Fewest flows a threshold step must move inline to be taken: steps supported by one or two
/// flows fit the calibration set's noise, not the traffic (measured: without this floor the
/// cascade's macro-F1 on the test half fell 4 points further).
pub const MIN_SUPPORT: f64 = 5.0;

/// Most accuracy a move that only decides flows at an earlier inline stage may cost: one more
/// wrong verdict per this many flows it moves. Both inline stages decide within the fast wait,
/// so deciding on packet 1 instead of packet 4 saves little; without this cap the greedy
/// search spent the whole accuracy budget there, and the first stage answered `other` on the
/// bare SYN of every HTTPS flow the fast stage would have named from its ClientHello (the
/// captures it was fitted on hold few complete handshakes; live traffic is mostly those).
pub const SHIFT_TRADE: f64 = 0.01;

/// What a flow decided one inline stage earlier is worth against one kept out of the slow pool.
const SHIFT_WORTH: f64 = 0.1;

/// Picks per-stage, per-class thresholds for `target`, greedily: from everything escalated
/// (the slow stage's score), repeatedly raise the one (stage, class) threshold that keeps the
/// most flows inline per point of macro-F1 lost, while the target allows it. A raise that
/// keeps too few flows out of the slow pool to count ([`MIN_SUPPORT`]) but decides some at an
/// earlier inline stage is worth
/// less ([`SHIFT_WORTH`]) and is taken only when it costs at most [`SHIFT_TRADE`] per flow it
/// moves.
pub fn calibrate(answers: &[FlowAnswers], stages: usize, k: usize, target: Target) -> Calibration {
    let n = answers.len().max(1) as f64;
    let slow = evaluate(answers, &vec![vec![-1.0; k]; stages], k);
    // Thresholds start below 0: everything escalates.
    let mut current = vec![vec![-1.0; k]; stages];
    let stage_f1 = (0..stages)
        .map(|i| {
            let mut t = vec![vec![-1.0; k]; stages];
            t[i] = vec![f64::INFINITY; k];
            evaluate(answers, &t, k).macro_f1
        })
        .collect();
    let ok = |o: &Outcome| match target {
        Target::MaxDrop(drop) => {
            o.macro_f1 >= slow.macro_f1 - drop && o.accuracy >= slow.accuracy - drop
        }
        Target::MaxF1Drop(drop) => o.macro_f1 >= slow.macro_f1 - drop,
        Target::MaxEscalated(_) => true,
    };
    let mut best = evaluate(answers, &current, k);
    loop {
        if let Target::MaxEscalated(share) = target {
            if best.escalated <= share {
                break;
            }
        }
        let mut pick: Option<(f64, Outcome)> = None;
        for s in 0..stages {
            for c in 0..k {
                let now = current[s][c];
                // Any higher step: a single step may move too few flows to count.
                for next in STEPS.iter().copied().filter(|t| *t > now) {
                    let mut t = current.clone();
                    t[s][c] = next;
                    let o = evaluate(answers, &t, k);
                    if !ok(&o) {
                        continue;
                    }
                    let loss = (best.macro_f1 - o.macro_f1).max(best.accuracy - o.accuracy);
                    let kept = best.escalated - o.escalated;
                    let gain = if kept * n >= MIN_SUPPORT - 1e-9 {
                        kept
                    } else {
                        let shifted = earlier(&best, &o);
                        if shifted * n < MIN_SUPPORT - 1e-9 || loss > SHIFT_TRADE * shifted {
                            continue;
                        }
                        SHIFT_WORTH * shifted
                    };
                    let value = gain / (loss.max(0.0) + 1e-4);
                    if pick.as_ref().is_none_or(|(v, _)| value > *v) {
                        pick = Some((value, o));
                    }
                }
            }
        }
        // A move that keeps nothing inline still may open the way to the next step.
        let Some((_, o)) = pick.or_else(|| {
            let mut t = current.clone();
            for s in 0..stages {
                for c in 0..k {
                    if let Some(next) = STEPS.iter().copied().find(|x| *x > t[s][c]) {
                        let mut u = current.clone();
                        u[s][c] = next;
                        let o = evaluate(answers, &u, k);
                        let lossless = o.macro_f1 >= best.macro_f1 - 1e-12
                            && o.accuracy >= best.accuracy - 1e-12;
                        if ok(&o) && lossless && (o.escalated - best.escalated).abs() < 1e-12 {
                            t = u;
                        }
                    }
                }
            }
            (t != current).then(|| (0.0, evaluate(answers, &t, k)))
        }) else {
            break;
        };
        current = o.thresholds.clone();
        best = o;
    }
    Calibration {
        flows: answers.len(),
        target,
        stage_f1,
        slow_f1: slow.macro_f1,
        slow_accuracy: slow.accuracy,
        picked: best,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;

    /// Stage 0 is right when sure (uncertainty < 0.3) and wrong otherwise; the slow stage is
    /// always right.
    fn answers() -> Vec<FlowAnswers> {
        (0..200)
            .map(|i| {
                let truth = i % 2;
                let u = f64::from(i % 10) / 10.0;
                let fast = if u < 0.3 { truth } else { 1 - truth };
                FlowAnswers {
                    truth: truth as usize,
                    inline: vec![(fast as usize, u)],
                    slow: truth as usize,
                }
            })
            .collect()
    }

    #[test]
    fn f1_target_escalates_exactly_the_unsure() {
        let c = calibrate(&answers(), 1, 2, Target::MaxDrop(0.0));
        assert_eq!(c.slow_f1, 1.0);
        assert!((c.picked.macro_f1 - 1.0).abs() < 1e-12);
        // Uncertainties 0.0, 0.1, 0.2 are decided inline: 30% of flows.
        assert!(
            (c.picked.decided_by[0] - 0.3).abs() < 1e-12,
            "{:?}",
            c.picked
        );
        // Class 0 stops below the first wrong prediction of class 0 (u = 0.3); class 1 may
        // go up to its own (u = 0.4).
        let t = &c.picked.thresholds[0];
        assert!((0.2..0.3).contains(&t[0]), "{t:?}");
        assert!((0.2..0.4).contains(&t[1]), "{t:?}");
    }

    #[test]
    fn escalation_target_caps_the_slow_share() {
        let c = calibrate(&answers(), 1, 2, Target::MaxEscalated(0.5));
        assert!(c.picked.escalated <= 0.5);
        assert!(c.picked.macro_f1 < 1.0);
        let none = evaluate(&answers(), &[vec![f64::INFINITY; 2]], 2);
        assert_eq!(none.escalated, 0.0);
    }

    /// Two inline stages: the first is sure of every flow but wrong on one in five; the second
    /// is right on all. Once the second decides everything, deciding at the first only moves
    /// flows earlier, at a wrong verdict per five flows moved: within the target's budget
    /// (before the cap, taken), but far past [`SHIFT_TRADE`].
    #[test]
    fn an_earlier_stage_may_not_buy_speed_with_accuracy() {
        let flows: Vec<FlowAnswers> = (0..200)
            .map(|i| {
                let truth = i % 2;
                // Wrong on one flow in five of each class, so each predicted class holds some.
                let first = if i % 5 == 0 { 1 - truth } else { truth };
                FlowAnswers {
                    truth,
                    inline: vec![(first, 0.05), (truth, 0.0)],
                    slow: truth,
                }
            })
            .collect();
        let c = calibrate(&flows, 2, 2, Target::MaxDrop(0.2));
        assert!(c.picked.decided_by[0] < 1e-12, "{:?}", c.picked);
        assert!((c.picked.accuracy - 1.0).abs() < 1e-12, "{:?}", c.picked);
        // Right on all flows, the first stage takes them: the shift costs nothing.
        let right: Vec<FlowAnswers> = flows
            .iter()
            .map(|f| FlowAnswers {
                inline: vec![(f.truth, 0.05), (f.truth, 0.0)],
                ..f.clone()
            })
            .collect();
        let c = calibrate(&right, 2, 2, Target::MaxDrop(0.0));
        assert!(
            (c.picked.decided_by[0] - 1.0).abs() < 1e-12,
            "{:?}",
            c.picked
        );
    }

    /// A stage that passed a flow on unasked is never sure of it, whatever its scores say, and
    /// the flow is left out of its temperature fit.
    #[test]
    fn an_abstaining_stage_is_never_sure() {
        let dir = crate::model::dir::ModelDir::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/service"),
        )
        .unwrap();
        let cascade = Cascade::from_models(dir);
        let k = cascade.classes.len();
        let mut raw = vec![0.0; k];
        raw[0] = 50.0;
        let answers = Answers {
            k,
            truth: vec![0, 0],
            raw: vec![
                [raw.clone(), raw.clone()].concat(),
                [raw.clone(), raw].concat(),
            ],
            abstained: vec![vec![true, false], vec![false, false]],
            slow: vec![0, 0],
            ..Answers::default()
        };
        let r = routed(&cascade, &answers, &[1.0, 1.0]);
        assert_eq!(r[0].inline[0].1, f64::INFINITY);
        assert!(r[1].inline[0].1 < 1e-6, "{:?}", r[1]);
        assert!(r[0].inline[1].1 < 1e-6, "{:?}", r[0]);
        // Its temperature and calibration error see only the flow it answered.
        assert_eq!(answers.answered(0).0.len(), k);
        assert_eq!(answers.answered(0).1, vec![0]);
        assert_eq!(answers.answered(1).1, vec![0, 0]);
    }

    /// An over-confident stage (its scores 3x too large) is cooled down to about the truth:
    /// the fitted temperature undoes the scale and the calibration error falls.
    #[test]
    fn temperature_undoes_over_confidence() {
        let k = 3;
        let (mut raw, mut truth) = (Vec::new(), Vec::new());
        // Scores whose softmax at T=1 is right 80% of the time when it says ~0.8: (1.39, 0, 0)
        // gives p ~ 0.67; scaled by 3 it claims ~0.97.
        for i in 0..1000 {
            let predicted = i % k;
            let t = if i % 10 < 7 {
                predicted
            } else {
                (predicted + 1) % k
            };
            let mut row = vec![0.0; k];
            row[predicted] = 3.0 * 1.386;
            raw.extend_from_slice(&row);
            truth.push(t);
        }
        let t = fit_temperature(&raw, &truth, k);
        assert!((2.4..3.6).contains(&t), "fitted {t}");
        assert!(ece(&raw, &truth, k, t) < ece(&raw, &truth, k, 1.0) / 3.0);
        assert!(nll(&raw, &truth, k, t) < nll(&raw, &truth, k, 1.0));
    }
}
