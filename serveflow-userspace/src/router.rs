//! The router: decides from a stage's class probabilities whether its answer is the verdict or
//! the flow goes on to the next stage. Uncertainty is least-confidence, margin or entropy
//! (see [`uncertainty`]); the threshold is global or per predicted class.

use serde::{Deserialize, Serialize};

/// How uncertain a prediction is, from its class probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Uncertainty {
    /// 1 - max p.
    LeastConfidence,
    /// 1 - (p1 - p2), the top two.
    Margin,
    /// Shannon entropy divided by ln(classes), in [0, 1].
    Entropy,
}

/// A stage's answer for one flow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Route {
    /// Predicted class.
    pub class: usize,
    /// Its probability.
    pub confidence: f64,
    /// The prediction's uncertainty under the router's measure, in [0, 1].
    pub uncertainty: f64,
    /// Whether the flow goes on to the next stage.
    pub escalate: bool,
}

/// Routing rule of one stage.
#[derive(Clone, Debug, PartialEq)]
pub struct Router {
    /// Uncertainty measure.
    pub measure: Uncertainty,
    /// Escalate when uncertainty exceeds this, per predicted class.
    pub thresholds: Vec<f64>,
    /// Softmax temperature the stage's probabilities are computed with.
    pub temperature: f64,
}

impl Router {
    /// A router that never escalates (the last stage's).
    pub fn terminal(classes: usize) -> Self {
        Router {
            measure: Uncertainty::LeastConfidence,
            thresholds: vec![1.0; classes],
            temperature: 1.0,
        }
    }

    /// Routes one prediction.
    pub fn route(&self, probs: &[f64]) -> Route {
        let (class, confidence) = argmax(probs);
        let u = uncertainty(self.measure, probs);
        let threshold = self.thresholds.get(class).copied().unwrap_or(1.0);
        Route {
            class,
            confidence,
            uncertainty: u,
            escalate: u > threshold,
        }
    }
}

/// The uncertainty of a probability vector under `measure`, in [0, 1].
pub fn uncertainty(measure: Uncertainty, p: &[f64]) -> f64 {
    let (mut first, mut second) = (0.0f64, 0.0f64);
    for &v in p {
        if v > first {
            second = first;
            first = v;
        } else if v > second {
            second = v;
        }
    }
    match measure {
        Uncertainty::LeastConfidence => 1.0 - first,
        Uncertainty::Margin => 1.0 - (first - second),
        Uncertainty::Entropy => {
            let h: f64 = p.iter().filter(|v| **v > 0.0).map(|v| -v * v.ln()).sum();
            h / (p.len().max(2) as f64).ln()
        }
    }
}

/// Index and value of the largest probability or score (the first on ties, NaN never; 0 for
/// an empty slice). The one argmax of serving, calibration and training.
pub fn argmax<T: Copy + Into<f64>>(p: &[T]) -> (usize, f64) {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, &v) in p.iter().enumerate() {
        let v: f64 = v.into();
        if v > best.1 {
            best = (i, v);
        }
    }
    (best.0, best.1.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncertainty_measures() {
        let sure = [1.0, 0.0, 0.0];
        let torn = [0.5, 0.5, 0.0];
        let flat = [1.0 / 3.0; 3];
        for m in [
            Uncertainty::LeastConfidence,
            Uncertainty::Margin,
            Uncertainty::Entropy,
        ] {
            assert!(uncertainty(m, &sure).abs() < 1e-12, "{m:?}");
            assert!(uncertainty(m, &torn) > uncertainty(m, &sure));
        }
        assert!((uncertainty(Uncertainty::Margin, &torn) - 1.0).abs() < 1e-12);
        assert!((uncertainty(Uncertainty::Entropy, &flat) - 1.0).abs() < 1e-12);
        assert!((uncertainty(Uncertainty::LeastConfidence, &torn) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn global_and_per_class_thresholds() {
        let mut r = Router {
            measure: Uncertainty::LeastConfidence,
            thresholds: vec![0.2, 0.2, 0.2],
            temperature: 1.0,
        };
        let sure = r.route(&[0.9, 0.05, 0.05]);
        assert_eq!((sure.class, sure.escalate), (0, false));
        let unsure = r.route(&[0.3, 0.6, 0.1]);
        assert_eq!((unsure.class, unsure.escalate), (1, true));
        assert!((unsure.uncertainty - 0.4).abs() < 1e-12);
        // A lenient threshold for class 1 keeps the same prediction at the fast stage.
        r.thresholds[1] = 0.5;
        assert!(!r.route(&[0.3, 0.6, 0.1]).escalate);
        assert!(!Router::terminal(3).route(&[0.34, 0.33, 0.33]).escalate);
    }

    #[test]
    fn measures_rank_the_same_easy_and_hard_cases() {
        for measure in [
            Uncertainty::LeastConfidence,
            Uncertainty::Margin,
            Uncertainty::Entropy,
        ] {
            let r = Router {
                measure,
                thresholds: vec![0.5; 3],
                temperature: 1.0,
            };
            assert!(!r.route(&[0.98, 0.01, 0.01]).escalate, "{measure:?}");
            assert!(r.route(&[0.4, 0.35, 0.25]).escalate, "{measure:?}");
        }
        assert_eq!(argmax(&[0.1, 0.7, 0.7]), (1, 0.7));
    }
}
