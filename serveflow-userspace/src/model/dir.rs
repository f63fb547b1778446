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
//!
//! [[early]]                 # optional: tree stages run before [fast], cheapest first
//! name = "first"
//! model = "first.txt"
//! features = "stats"
//! packets = 1
//! needs_payload = true      # optional: decide only flows whose packets carried payload
//! routing = { uncertainty = "least_confidence", threshold = 0.05 }
//! ```
//!
//! The cascade is `early...`, `fast` (both on the fast-path workers), then `slow` (the slow
//! pool); packet counts may not decrease along it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    features::FeatureSpec,
    model::{
        onnx::{OutputKind, SlowModel},
        tree::{Objective, TreeModel},
    },
    router::Uncertainty,
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
    /// Global threshold: escalate when uncertainty exceeds it (below 0: always).
    pub threshold: f64,
    /// Per predicted class thresholds, overriding the global one.
    #[serde(default)]
    pub per_class: BTreeMap<String, f64>,
    /// Softmax temperature of the stage's raw scores (probabilities are softmax(raw / T)),
    /// fitted by `serveflow calibrate` so thresholds picked on some captures hold on others.
    #[serde(default = "unit", skip_serializing_if = "is_unit")]
    pub temperature: f64,
}

fn unit() -> f64 {
    1.0
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if signature"
)]
fn is_unit(t: &f64) -> bool {
    *t == 1.0
}

/// Temperatures a manifest may hold.
pub const TEMPERATURES: std::ops::RangeInclusive<f64> = 0.01..=100.0;

/// An `[[early]]` stage: a tree model run before `[fast]`, with its own routing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyConfig {
    /// Name in verdicts (`model` field).
    pub name: String,
    /// LightGBM text model, relative to the directory.
    pub model: PathBuf,
    /// Feature spec.
    pub features: String,
    /// Packets the stage waits for.
    pub packets: u32,
    /// Decide only flows whose packets carried payload; pass the rest on unasked. A bare TCP
    /// handshake names no service (the name comes with the ClientHello or the request), so a
    /// service model's answer on it can only echo its training captures. Needs `stats`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub needs_payload: bool,
    /// When to pass flows on.
    pub routing: RoutingConfig,
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
    /// Tree stages before `fast`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub early: Vec<EarlyConfig>,
}

/// A loaded `[[early]]` stage.
#[derive(Debug)]
pub struct EarlyStage {
    /// Its name.
    pub name: String,
    /// The model and its features.
    pub stage: Stage<TreeModel>,
    /// Uncertainty measure.
    pub uncertainty: Uncertainty,
    /// Threshold per class index.
    pub thresholds: Vec<f64>,
    /// Softmax temperature.
    pub temperature: f64,
    /// Columns of its feature row whose sum is the payload its packets carried, when it
    /// decides only flows that carried some (`needs_payload`).
    pub payload_columns: Option<[usize; 2]>,
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
    /// `[[early]]` stages, in order.
    pub early: Vec<EarlyStage>,
}

impl ModelDir {
    /// Loads and checks `dir/serveflow-model.toml` and the models it names.
    pub fn load(dir: &Path) -> Result<Self, ModelDirError> {
        let manifest_path = dir.join(MANIFEST);
        let mp = manifest_path.display().to_string();
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
        let fast_spec = spec(&mp, &manifest.fast.features, manifest.fast.packets, "fast")?;
        let slow_spec = spec(&mp, &manifest.slow.features, manifest.slow.packets, "slow")?;
        let fast = load_tree(
            dir,
            &manifest.fast.model,
            &manifest.fast.features,
            fast_spec,
            classes,
            "fast",
        )?;
        let thresholds = class_thresholds(&mp, &manifest.routing, &manifest.classes, "routing")?;

        let mut early = Vec::new();
        for (i, e) in manifest.early.iter().enumerate() {
            let field = format!("early[{i}]");
            let features = spec(&mp, &e.features, e.packets, &field)?;
            let model = load_tree(dir, &e.model, &e.features, features, classes, &field)?;
            let payload_columns = if e.needs_payload {
                let names = features.names();
                let at = |n: &str| names.iter().position(|c| c == n);
                match (at("st_fwd_payload"), at("st_bwd_payload")) {
                    (Some(f), Some(b)) => Some([f, b]),
                    _ => {
                        return Err(fail(
                            &mp,
                            &format!("{field}.needs_payload"),
                            format!(
                                "needs the stats feature set (its payload columns); the stage's features are {:?}",
                                e.features
                            ),
                        ))
                    }
                }
            } else {
                None
            };
            early.push(EarlyStage {
                payload_columns,
                name: e.name.clone(),
                stage: Stage { model, features },
                uncertainty: e.routing.uncertainty,
                temperature: e.routing.temperature,
                thresholds: class_thresholds(
                    &mp,
                    &e.routing,
                    &manifest.classes,
                    &format!("{field}.routing"),
                )?,
            });
        }
        let counts: Vec<u32> = early
            .iter()
            .map(|e| e.stage.features.packets)
            .chain([fast_spec.packets, slow_spec.packets])
            .collect();
        if counts.windows(2).any(|w| w[0] > w[1]) {
            return Err(fail(
                &mp,
                "packets",
                format!("stages wait for {counts:?} packets: a later stage may not wait for fewer"),
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
        let models = ModelDir {
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
            early,
            manifest,
        };
        models.self_test()?;
        Ok(models)
    }

    /// Runs every stage once on a built-in row (all zeros: every feature set's values are
    /// defined there) and checks it gives one finite probability per class that add up to
    /// one; a model that loads but cannot classify fails here, at start-up, not per flow.
    pub fn self_test(&self) -> Result<(), ModelDirError> {
        let classes = self.manifest.classes.len();
        // One-vs-rest sigmoids give a probability per class that need not add up to one.
        let check = |file: &Path, field: &str, p: &[f64], sums_to_one: bool| {
            let sum: f64 = p.iter().sum();
            if p.len() != classes
                || p.iter().any(|v| !(0.0..=1.0).contains(v))
                || (sums_to_one && (sum - 1.0).abs() > 1e-3)
            {
                return Err(fail(
                    &self.dir.join(file).display().to_string(),
                    field,
                    format!(
                        "self-test: a row of zeros gave {} outputs summing to {sum} (expected {classes} probabilities summing to 1): the model is corrupt or not a classifier; retrain",
                        p.len()
                    ),
                ));
            }
            Ok(())
        };
        let trees = self
            .early
            .iter()
            .zip(&self.manifest.early)
            .enumerate()
            .map(|(i, (e, c))| (&e.stage, &c.model, format!("early[{i}].model")))
            .chain([(
                &self.fast,
                &self.manifest.fast.model,
                "fast.model".to_owned(),
            )]);
        for (stage, file, field) in trees {
            let objective = stage.model.objective();
            if objective == Objective::Identity {
                return Err(fail(
                    &self.dir.join(file).display().to_string(),
                    &field,
                    "the model's objective is not a classifier (multiclass or binary): retrain"
                        .into(),
                ));
            }
            let mut p = vec![0.0; stage.model.num_outputs()];
            stage
                .model
                .predict(&vec![0.0; stage.features.width()], &mut p);
            check(file, &field, &p, objective == Objective::Softmax)?;
        }
        let slow_file = &self.manifest.slow.model;
        let slow_fail = |e: String| {
            fail(
                &self.dir.join(slow_file).display().to_string(),
                "slow.model",
                format!("self-test: {e}"),
            )
        };
        let model = &self.slow.model;
        let mut state = model.state().map_err(|e| slow_fail(e.to_string()))?;
        let mut out = Vec::new();
        model
            .predict_batch(&mut state, &vec![0.0; model.features()], &mut out)
            .map_err(|e| slow_fail(e.to_string()))?;
        let p: Vec<f64> = out.iter().map(|v| f64::from(*v)).collect();
        check(slow_file, "slow.model", &p, true)
    }

    /// Writes the manifest back (after calibration changed its thresholds).
    pub fn save_manifest(&self) -> Result<(), ModelDirError> {
        let path = self.dir.join(MANIFEST);
        let p = path.display().to_string();
        let text =
            toml::to_string(&self.manifest).map_err(|e| fail(&p, "(write)", e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| fail(&p, "(write)", e.to_string()))
    }
}

fn fail(path: &str, field: &str, problem: String) -> ModelDirError {
    ModelDirError {
        path: path.to_owned(),
        field: field.to_owned(),
        problem,
    }
}

/// A stage's feature spec with its packet count, checked.
fn spec(mp: &str, features: &str, packets: u32, name: &str) -> Result<FeatureSpec, ModelDirError> {
    let parsed: FeatureSpec = features
        .parse()
        .map_err(|e| fail(mp, &format!("{name}.features"), format!("{e}")))?;
    if packets == 0 || packets > 64 {
        return Err(fail(
            mp,
            &format!("{name}.packets"),
            "must be 1..=64".into(),
        ));
    }
    Ok(FeatureSpec { packets, ..parsed })
}

/// A tree stage's model, checked against its feature spec and the class count.
fn load_tree(
    dir: &Path,
    model: &Path,
    features_text: &str,
    spec: FeatureSpec,
    classes: usize,
    name: &str,
) -> Result<TreeModel, ModelDirError> {
    let path = dir.join(model);
    let fp = path.display().to_string();
    let tree =
        TreeModel::load(&path).map_err(|e| fail(&fp, &format!("{name}.model"), e.to_string()))?;
    let inputs = spec.names().len();
    if tree.num_features() != inputs {
        return Err(fail(
            &fp,
            &format!("{name}.features"),
            format!(
                "the model reads {} features but `{features_text}` over {} packets gives {inputs}: retrain, or fix the manifest",
                tree.num_features(),
                spec.packets
            ),
        ));
    }
    if tree.num_outputs() != classes {
        return Err(fail(
            &fp,
            "classes",
            format!(
                "the {name} model has {} outputs, the manifest {classes} classes",
                tree.num_outputs()
            ),
        ));
    }
    Ok(tree)
}

/// Per-class thresholds of a routing section.
fn class_thresholds(
    mp: &str,
    r: &RoutingConfig,
    classes: &[String],
    field: &str,
) -> Result<Vec<f64>, ModelDirError> {
    if !TEMPERATURES.contains(&r.temperature) {
        return Err(fail(
            mp,
            &format!("{field}.temperature"),
            format!(
                "{} is outside {}..={}: recalibrate, or remove it (1 = uncalibrated)",
                r.temperature,
                TEMPERATURES.start(),
                TEMPERATURES.end()
            ),
        ));
    }
    if !(-1.0..=1.0).contains(&r.threshold) {
        return Err(fail(
            mp,
            &format!("{field}.threshold"),
            "must be within -1..=1 (below 0: always escalate)".into(),
        ));
    }
    let mut out = vec![r.threshold; classes.len()];
    for (class, t) in &r.per_class {
        let Some(i) = classes.iter().position(|c| c == class) else {
            return Err(fail(
                mp,
                &format!("{field}.per_class"),
                format!("{class:?} is not one of the classes"),
            ));
        };
        if !(-1.0..=1.0).contains(t) {
            return Err(fail(
                mp,
                &format!("{field}.per_class"),
                format!("{class}: must be within -1..=1"),
            ));
        }
        out[i] = *t;
    }
    Ok(out)
}
