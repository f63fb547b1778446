//! A models directory's cascade scored on corpus flows: every stage's answer through the
//! serving models (native trees, tract), on the features each stage has when its wait runs
//! out, routed by the library's calibration code (temperatures fitted, thresholds picked on
//! one set of flows, applied to another). No capture is replayed: the corpus already holds
//! the flows' packets, and the features come from the same code either way.

use serveflow::{
    calibrate::{self, Answers, Outcome, Target},
    config::wait_ns,
    pipeline::cascade::Cascade,
    router,
};

use crate::split::Split;

/// Every stage's output on the flows `set` of `split` (whose classes the cascade has).
pub fn answers(
    cascade: &Cascade,
    split: &Split<'_>,
    set: &[usize],
    waits_ms: (f64, f64),
) -> anyhow::Result<Answers> {
    let k = cascade.classes.len();
    if k != split.classes.len() {
        anyhow::bail!(
            "the cascade has {k} classes, the split {}",
            split.classes.len()
        );
    }
    let specs = cascade.specs_within(wait_ns(waits_ms.0), wait_ns(waits_ms.1));
    let mut out = Answers {
        k,
        truth: split.truth(set),
        raw: Vec::new(),
        abstained: Vec::new(),
        slow: Vec::with_capacity(set.len()),
        captures: split.files(set),
        unreadable: Vec::new(),
    };
    let mut raw = vec![0.0; k];
    for (stage, spec) in cascade.inline.iter().zip(specs.iter()) {
        let width = spec.width();
        let x = split.matrix(spec, set);
        let mut scores = Vec::with_capacity(set.len() * k);
        let mut passed = Vec::with_capacity(set.len());
        for r in x.chunks(width.max(1)) {
            stage.model.predict_raw_f32(r, &mut raw);
            scores.extend_from_slice(&raw[..k]);
            passed.push(stage.abstains(r));
        }
        out.raw.push(scores);
        out.abstained.push(passed);
    }
    let slow_spec = specs.last().copied().unwrap_or(cascade.slow_features);
    let mut state = cascade.slow.state()?;
    let (mut probs, mut p64) = (Vec::new(), vec![0.0; k]);
    for chunk in set.chunks(64) {
        let rows = split.matrix(&slow_spec, chunk);
        cascade.slow.predict_batch(&mut state, &rows, &mut probs)?;
        for p in probs.chunks(k) {
            for (d, s) in p64.iter_mut().zip(p) {
                *d = f64::from(*s);
            }
            out.slow.push(router::argmax(&p64).0);
        }
    }
    Ok(out)
}

/// A calibration fitted on one set of flows.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Fitted {
    /// Temperature per inline stage.
    pub temperatures: Vec<f64>,
    /// Threshold per inline stage and class.
    pub thresholds: Vec<Vec<f64>>,
}

/// Fits temperatures and thresholds on `fit` for `target`.
pub fn fit(cascade: &Cascade, fit: &Answers, target: Target) -> Fitted {
    let temperatures = fit.fit_temperatures();
    let routed = calibrate::routed(cascade, fit, &temperatures);
    let c = calibrate::calibrate(&routed, cascade.inline.len(), fit.k, target);
    Fitted {
        temperatures,
        thresholds: c.picked.thresholds,
    }
}

/// Fast-only, slow-only and the calibrated cascade on `answers`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModeScores {
    /// The `fast` stage decides every flow.
    pub fast_only: Outcome,
    /// The slow stage decides every flow.
    pub slow_only: Outcome,
    /// The calibrated cascade.
    pub cascade: Outcome,
}

/// Scores the three modes on `answers` with the `fitted` calibration.
pub fn modes(cascade: &Cascade, answers: &Answers, fitted: &Fitted) -> ModeScores {
    let k = answers.k;
    let stages = cascade.inline.len();
    let routed = calibrate::routed(cascade, answers, &fitted.temperatures);
    let mut fast = vec![vec![-1.0; k]; stages];
    if let Some(last) = fast.last_mut() {
        *last = vec![f64::INFINITY; k];
    }
    ModeScores {
        fast_only: calibrate::evaluate(&routed, &fast, k),
        slow_only: calibrate::evaluate(&routed, &vec![vec![-1.0; k]; stages], k),
        cascade: calibrate::evaluate(&routed, &fitted.thresholds, k),
    }
}
