//! A models directory: `serveflow-model.toml` naming the task, the classes, each stage's
//! feature set, packet count and model file, and the routing thresholds, next to the model
//! files. Loading checks everything against everything else and fails with the file, the
//! field and the fix.
//!
//! ```toml
//! task = "service"
//! classes = ["dns", "google", "other"]
//!
//! [fast]
//! model = "fast.txt"        # LightGBM text model
//! features = "stats"
//! packets = 2
//!
//! [slow]
//! model = "slow.onnx"       # ONNX classifier, input [N, features]
//! features = "nprint"
//! packets = 3
//! output = "logits"         # or "probabilities"
//!
//! [routing]
//! uncertainty = "least_confidence"   # or "margin", "entropy"
//! threshold = 0.25                   # escalate when uncertainty > threshold
//! per_class = { dns = 0.1 }          # optional, by predicted class
//! ```

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    features::FeatureSpec,
    model::{
        onnx::{OutputKind, SlowModel},
        tree::TreeModel,
    },
};

/// The file name of a models directory's manifest.
pub const MANIFEST: &str = "serveflow-model.toml";

/// A models directory that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {field}: {problem}")]
pub struct ModelDirError {
    /// File at fault.
    pub path: String,
    /// Field at fault.
    pub field: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

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

/// `[fast]` / `[slow]` sections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Model file, relative to the directory.
    pub model: PathBuf,
    /// Feature spec (`serveflow extract --features` syntax).
    pub features: String,
    /// Packets the stage waits for.
    pub packets: u32,
    /// Slow stage only: what the ONNX output holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputKind>,
}

/// `[routing]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Uncertainty measure.
    pub uncertainty: Uncertainty,
    /// Global threshold: escalate when uncertainty exceeds it.
    pub threshold: f64,
    /// Per predicted class thresholds, overriding the global one.
    #[serde(default)]
    pub per_class: BTreeMap<String, f64>,
}

/// The manifest as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Task name (service, device, ...).
    pub task: String,
    /// Class names, in model output order.
    pub classes: Vec<String>,
    /// Fast stage.
    pub fast: StageConfig,
    /// Slow stage.
    pub slow: StageConfig,
    /// Routing.
    pub routing: RoutingConfig,
}

/// A loaded stage.
#[derive(Debug)]
pub struct Stage<M> {
    /// The model.
    pub model: M,
    /// Its feature spec (packets included).
    pub features: FeatureSpec,
}

/// A loaded, checked models directory.
#[derive(Debug)]
pub struct ModelDir {
    /// The directory.
    pub dir: PathBuf,
    /// The manifest.
    pub manifest: Manifest,
    /// Fast stage.
    pub fast: Stage<TreeModel>,
    /// Slow stage.
    pub slow: Stage<SlowModel>,
    /// Threshold per class index (global where not overridden).
    pub thresholds: Vec<f64>,
}

impl ModelDir {
    /// Loads and checks `dir/serveflow-model.toml` and the models it names.
    pub fn load(dir: &Path) -> Result<Self, ModelDirError> {
        let manifest_path = dir.join(MANIFEST);
        let mp = manifest_path.display().to_string();
        let fail = |path: &str, field: &str, problem: String| ModelDirError {
            path: path.to_owned(),
            field: field.to_owned(),
            problem,
        };
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
            fail(
                &mp,
                "(file)",
                format!("{e}: is {} a models directory?", dir.display()),
            )
        })?;
        let manifest: Manifest = toml::from_str(&text)
            .map_err(|e| fail(&mp, "(syntax)", e.to_string().replace('\n', " ")))?;
        let classes = manifest.classes.len();
        if classes < 2 {
            return Err(fail(&mp, "classes", "list at least two classes".into()));
        }
        let spec = |stage: &StageConfig, name: &str| -> Result<FeatureSpec, ModelDirError> {
            let parsed: FeatureSpec = stage
                .features
                .parse()
                .map_err(|e| fail(&mp, &format!("{name}.features"), format!("{e}")))?;
            if stage.packets == 0 || stage.packets > 64 {
                return Err(fail(
                    &mp,
                    &format!("{name}.packets"),
                    "must be 1..=64".into(),
                ));
            }
            Ok(FeatureSpec {
                packets: stage.packets,
                ..parsed
            })
        };
        let fast_spec = spec(&manifest.fast, "fast")?;
        let slow_spec = spec(&manifest.slow, "slow")?;

        let fast_path = dir.join(&manifest.fast.model);
        let fp = fast_path.display().to_string();
        let fast =
            TreeModel::load(&fast_path).map_err(|e| fail(&fp, "fast.model", e.to_string()))?;
        let fast_inputs = fast_spec.names().len();
        if fast.num_features() != fast_inputs {
            return Err(fail(
                &fp,
                "fast.features",
                format!(
                    "the model reads {} features but `{}` over {} packets gives {fast_inputs}: retrain, or fix the manifest",
                    fast.num_features(),
                    manifest.fast.features,
                    manifest.fast.packets
                ),
            ));
        }
        if fast.num_outputs() != classes {
            return Err(fail(
                &fp,
                "classes",
                format!(
                    "the fast model has {} outputs, the manifest {classes} classes",
                    fast.num_outputs()
                ),
            ));
        }

        let slow_path = dir.join(&manifest.slow.model);
        let sp = slow_path.display().to_string();
        let slow = SlowModel::load(
            &slow_path,
            slow_spec.names().len(),
            classes,
            manifest.slow.output.unwrap_or(OutputKind::Probabilities),
        )
        .map_err(|e| fail(&sp, "slow.model", e.to_string()))?;

        let r = &manifest.routing;
        if !(0.0..=1.0).contains(&r.threshold) {
            return Err(fail(
                &mp,
                "routing.threshold",
                "must be within 0..=1".into(),
            ));
        }
        let mut thresholds = vec![r.threshold; classes];
        for (class, t) in &r.per_class {
            let Some(i) = manifest.classes.iter().position(|c| c == class) else {
                return Err(fail(
                    &mp,
                    "routing.per_class",
                    format!("{class:?} is not one of the classes"),
                ));
            };
            if !(0.0..=1.0).contains(t) {
                return Err(fail(
                    &mp,
                    "routing.per_class",
                    format!("{class}: must be within 0..=1"),
                ));
            }
            thresholds[i] = *t;
        }
        Ok(ModelDir {
            dir: dir.to_owned(),
            fast: Stage {
                model: fast,
                features: fast_spec,
            },
            slow: Stage {
                model: slow,
                features: slow_spec,
            },
            thresholds,
            manifest,
        })
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
}
