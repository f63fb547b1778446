//! The training pipeline's steps: the labeled corpus -> classes and a split by capture file
//! -> the inline tree stages (LightGBM) and the slow MLP (ONNX), each on the features it will
//! have when serving (its packets within its wait) -> held-out scores and per-flow inference
//! cost measured through the serving code (the native tree evaluator and tract) -> a models
//! directory. `train` runs them once; `craft` runs them over a grid of candidates.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context as _;
use serde::Serialize;
use serveflow::limits::Choice as _;
use serveflow::{
    config::{wait_ns, DEFAULT_FAST_WAIT_MS, DEFAULT_MAX_WAIT_MS},
    features::FeatureSpec,
    labels::Task,
    model::{
        dir::{EarlyConfig, Manifest, ModelDir, RoutingConfig, StageConfig, MANIFEST},
        onnx::{OutputKind, SlowModel},
    },
    router::Uncertainty,
};

use crate::{
    dataset::{Corpus, DatasetReport},
    metrics::{score, Scores},
    mlp,
    progress::STEPS,
    split::{Grouped, Holdout, Split, SplitOptions},
    trees::{self, argmax, median, FastParams},
};

/// A tree stage to train: its features (packet count included) and size.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct TreeStage {
    /// Features, in `--features` syntax.
    #[serde(with = "spec_text")]
    pub features: FeatureSpec,
    /// Packets the stage waits for.
    pub packets: u32,
    /// Model size.
    pub params: FastParams,
}

impl TreeStage {
    /// The stage's spec with its packet count.
    pub fn spec(&self) -> FeatureSpec {
        FeatureSpec {
            packets: self.packets,
            ..self.features
        }
    }
}

/// Serde of a feature spec as its `--features` text.
pub mod spec_text {
    use serveflow::features::FeatureSpec;

    /// Writes the spec's text.
    pub fn serialize<S: serde::Serializer>(spec: &FeatureSpec, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&spec.to_string())
    }

    /// Reads a spec from its text.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<FeatureSpec, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Everything `train` needs.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Classes and split.
    pub split: SplitOptions,
    /// Output models directory.
    pub out: PathBuf,
    /// The 1-packet stage before `fast`, if any.
    pub first: Option<TreeStage>,
    /// The fast stage.
    pub fast: TreeStage,
    /// Slow stage features (with packets).
    pub slow: FeatureSpec,
    /// MLP settings.
    pub mlp: mlp::TrainConfig,
    /// The serving waits the stages' features are seen through (ms): inline, slow.
    pub waits_ms: (f64, f64),
    /// The command line, recorded in the report.
    pub command: String,
}

/// The default serving waits (ms): the pipeline's defaults.
pub const DEFAULT_WAITS_MS: (f64, f64) = (DEFAULT_FAST_WAIT_MS, DEFAULT_MAX_WAIT_MS);

/// Features of every inline stage and of the slow stage as seen through the waits.
pub fn within(spec: FeatureSpec, inline: bool, waits_ms: (f64, f64)) -> FeatureSpec {
    spec.within(wait_ns(if inline { waits_ms.0 } else { waits_ms.1 }))
}

impl Split<'_> {
    /// Trains a tree stage on the training flows.
    pub fn train_tree(
        &self,
        stage: &TreeStage,
        waits_ms: (f64, f64),
        seed: u64,
    ) -> anyhow::Result<String> {
        let spec = within(stage.spec(), true, waits_ms);
        let x = self.matrix(&spec, &self.train);
        trees::train(
            &x,
            &self.truth(&self.train),
            spec.width(),
            self.classes.len(),
            stage.params,
            seed,
        )
    }

    /// Trains the slow MLP on the training flows, classes weighted by 1/sqrt(frequency) so
    /// rare classes count without drowning the rest.
    pub fn train_slow(
        &self,
        slow: FeatureSpec,
        waits_ms: (f64, f64),
        config: mlp::TrainConfig,
    ) -> anyhow::Result<mlp::Mlp> {
        let spec = within(slow, false, waits_ms);
        let n = spec.width();
        if n == 0 {
            anyhow::bail!("the slow stage has no features");
        }
        let k = self.classes.len();
        // A tenth of the training captures (by a second hash) picks the best epoch.
        let (fit, check): (Vec<usize>, Vec<usize>) = self
            .train
            .iter()
            .partition(|&&i| serveflow::labels::split_bucket(&self.example(i).file, 0x7a1) >= 10);
        let (fit, check) = if fit.is_empty() || check.is_empty() {
            (self.train.clone(), Vec::new())
        } else {
            (fit, check)
        };
        let counts = self.counts(&fit);
        let x = self.matrix(&spec, &fit);
        let y = self.truth(&fit);
        let (vx, vy) = (self.matrix(&spec, &check), self.truth(&check));
        let w: Vec<f32> = self
            .classes
            .iter()
            .map(|c| 1.0 / (counts.get(c).copied().unwrap_or(1) as f32).sqrt())
            .collect();
        let mean = w.iter().sum::<f32>() / k as f32;
        let w: Vec<f32> = w.iter().map(|v| v / mean).collect();
        let validation = (!vy.is_empty()).then_some((vx.as_slice(), vy.as_slice()));
        Ok(mlp::train(&x, &y, n, k, &w, validation, config))
    }

    /// Scores of a tree model on `set`, and its median inference time per flow (µs).
    pub fn eval_tree(
        &self,
        model: &serveflow::model::tree::TreeModel,
        spec: FeatureSpec,
        set: &[usize],
    ) -> (Scores, f64) {
        let x = self.matrix(&spec, set);
        let (pred, us) = trees::evaluate(model, &x, spec.width());
        (score(&self.truth(set), &pred, &self.classes), us)
    }

    /// Scores of a slow model on `set`, and its median inference time per flow (µs) at batch
    /// 32.
    pub fn eval_slow(
        &self,
        model: &SlowModel,
        spec: FeatureSpec,
        set: &[usize],
    ) -> anyhow::Result<(Scores, f64)> {
        let k = self.classes.len();
        let width = spec.width();
        let mut state = model.state()?;
        let (mut pred, mut probs, mut times) =
            (Vec::with_capacity(set.len()), Vec::new(), Vec::new());
        for chunk in set.chunks(32) {
            let rows = self.matrix(&spec, chunk);
            debug_assert_eq!(rows.len(), width * chunk.len());
            let start = Instant::now();
            model.predict_batch(&mut state, &rows, &mut probs)?;
            if chunk.len() == 32 {
                times.push(start.elapsed().as_secs_f64() * 1e6 / 32.0);
            }
            pred.extend(probs.chunks(k).map(argmax));
        }
        Ok((
            score(&self.truth(set), &pred, &self.classes),
            median(&mut times),
        ))
    }
}

/// Writes a models directory: the tree stages, `slow.onnx` and the manifest. Routing starts
/// at a global least-confidence threshold of 0.2; `serveflow calibrate` fits it.
pub fn write_models_dir(
    out: &Path,
    split: &Split<'_>,
    opts: &TrainOptions,
    first_text: Option<&str>,
    fast_text: &str,
    slow: &mlp::Mlp,
) -> anyhow::Result<Manifest> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let routing = RoutingConfig {
        uncertainty: Uncertainty::LeastConfidence,
        threshold: 0.2,
        per_class: BTreeMap::new(),
        temperature: 1.0,
    };
    let mut early = Vec::new();
    if let (Some(first), Some(text)) = (opts.first, first_text) {
        std::fs::write(out.join("first.txt"), text)?;
        early.push(EarlyConfig {
            name: "first".into(),
            model: "first.txt".into(),
            features: first.features.to_string(),
            packets: first.packets,
            // A service is named by the payload (SNI, Host, the DNS question); a device
            // shows in its handshake's TTL, window and options too.
            needs_payload: split.corpus.task == Task::Service && first.features.stats,
            routing: routing.clone(),
        });
    }
    std::fs::write(out.join("fast.txt"), fast_text)?;
    std::fs::write(out.join("slow.onnx"), slow.to_onnx())?;
    let manifest = Manifest {
        task: split.corpus.task.name().to_owned(),
        classes: split.classes.clone(),
        fast: StageConfig {
            model: "fast.txt".into(),
            features: opts.fast.features.to_string(),
            packets: opts.fast.packets,
            output: None,
        },
        slow: StageConfig {
            model: "slow.onnx".into(),
            features: opts.slow.to_string(),
            packets: opts.slow.packets,
            output: Some(OutputKind::Logits),
        },
        routing,
        early,
    };
    std::fs::write(out.join(MANIFEST), toml::to_string_pretty(&manifest)?)?;
    Ok(manifest)
}

/// Scores and cost of one stage.
#[derive(Clone, Debug, Serialize)]
pub struct StageReport {
    /// Features, in `--features` syntax.
    pub features: String,
    /// Packets waited for.
    pub packets: u32,
    /// Size, readable.
    pub size: String,
    /// Tree stages: size and learning rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fast_params: Option<FastParams>,
    /// Slow: MLP settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlp: Option<mlp::TrainConfig>,
    /// Inputs per flow.
    pub inputs: usize,
    /// Held-out scores.
    pub scores: Scores,
    /// Median inference microseconds per flow on the training machine (slow: at batch 32).
    pub us_per_flow: f64,
}

/// [`SplitOptions`] as recorded.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct SplitSettings {
    /// See [`SplitOptions::min_flows`].
    pub min_flows: usize,
    /// See [`SplitOptions::min_files`].
    pub min_files: usize,
    /// Share of captures held out (by file hash).
    pub test_percent: u64,
    /// Hash seed.
    pub seed: u64,
    /// Sources left out entirely (leave-one-source-out), if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
}

impl SplitSettings {
    /// The settings of `opts`.
    pub fn of(opts: &SplitOptions) -> Self {
        let (test_percent, seed, left_out) = match &opts.holdout {
            Holdout::Files { percent, seed } => (*percent, *seed, Vec::new()),
            Holdout::Sources {
                sources,
                percent,
                seed,
            } => (*percent, *seed, sources.clone()),
        };
        SplitSettings {
            min_flows: opts.min_flows,
            min_files: opts.min_files,
            test_percent,
            seed,
            left_out,
        }
    }
}

/// A trained configuration, as recorded in `metrics.json`: everything needed to train the
/// same models again (the reproduction test and the leave-one-source-out check read it).
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Recipe {
    /// Task name.
    pub task: String,
    /// Label grouping and split.
    pub split: SplitSettings,
    /// The 1-packet first stage, if any.
    pub first: Option<TreeStage>,
    /// The fast stage.
    pub fast: TreeStage,
    /// Slow stage features, in `--features` syntax.
    #[serde(with = "spec_text")]
    pub slow: FeatureSpec,
    /// Packets the slow stage waits for.
    pub slow_packets: u32,
    /// MLP settings.
    pub mlp: mlp::TrainConfig,
    /// Serving waits the features were seen through (ms): inline, slow.
    pub waits_ms: (f64, f64),
}

impl Recipe {
    /// The recipe of `opts`.
    pub fn of(task: &str, opts: &TrainOptions) -> Self {
        Recipe {
            task: task.to_owned(),
            split: SplitSettings::of(&opts.split),
            first: opts.first,
            fast: opts.fast,
            slow: opts.slow,
            slow_packets: opts.slow.packets,
            mlp: opts.mlp,
            waits_ms: opts.waits_ms,
        }
    }

    /// Training options that repeat the recipe into `out`, with `holdout` instead of the
    /// recorded split (None: the recorded one).
    pub fn options(
        &self,
        out: PathBuf,
        holdout: Option<Holdout>,
        command: String,
    ) -> anyhow::Result<TrainOptions> {
        let task = crate::dataset::Task::from_name(&self.task)
            .with_context(|| format!("unknown task {:?}", self.task))?;
        Ok(TrainOptions {
            split: SplitOptions {
                task,
                min_flows: self.split.min_flows,
                min_files: self.split.min_files,
                holdout: holdout.unwrap_or(Holdout::Files {
                    percent: self.split.test_percent,
                    seed: self.split.seed,
                }),
            },
            out,
            first: self.first,
            fast: self.fast,
            slow: FeatureSpec {
                packets: self.slow_packets,
                ..self.slow
            },
            mlp: self.mlp,
            waits_ms: self.waits_ms,
            command,
        })
    }
}

/// What training produced, written as `metrics.json` beside the models.
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    /// Task.
    pub task: String,
    /// The command that produced it.
    pub command: String,
    /// What to train to get these models again.
    pub recipe: Recipe,
    /// Label grouping and split settings.
    pub split: SplitSettings,
    /// The serving waits the features were seen through (ms).
    pub waits_ms: BTreeMap<String, f64>,
    /// Classes, in output order.
    pub classes: Vec<String>,
    /// Labels grouped into `other`, with their counts.
    pub grouped_as_other: BTreeMap<String, Grouped>,
    /// Flows per class, train split.
    pub train_counts: BTreeMap<String, usize>,
    /// Flows per class, test split.
    pub test_counts: BTreeMap<String, usize>,
    /// Capture files in the train split.
    pub train_files: usize,
    /// Capture files in the test split.
    pub test_files: usize,
    /// What the corpus read, skipped and removed as duplicates.
    pub dataset: DatasetReport,
    /// The 1-packet first stage, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<StageReport>,
    /// Fast model, evaluated through the models directory just written.
    pub fast: StageReport,
    /// Slow model, evaluated through the models directory just written.
    pub slow: StageReport,
}

/// Trains every stage once and writes the models directory and `metrics.json`.
pub fn train(corpus: &Corpus, opts: &TrainOptions) -> anyhow::Result<TrainReport> {
    STEPS.begin("splitting the flows");
    let split = Split::prepare(corpus, &opts.split)?;
    let seed = SplitSettings::of(&opts.split).seed;
    let first = opts
        .first
        .map(|f| {
            STEPS.begin("training the first stage");
            split.train_tree(&f, opts.waits_ms, seed)
        })
        .transpose()?;
    STEPS.begin("training the fast stage");
    let fast = split.train_tree(&opts.fast, opts.waits_ms, seed)?;
    STEPS.begin("training the slow stage");
    let slow = split.train_slow(opts.slow, opts.waits_ms, opts.mlp)?;
    STEPS.begin("writing and calibrating the models");
    write_models_dir(&opts.out, &split, opts, first.as_deref(), &fast, &slow)?;
    STEPS.begin("scoring the stages");
    let report = report(&split, opts)?;
    std::fs::write(
        opts.out.join("metrics.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    Ok(report)
}

/// Loads the models directory just written (as serving will) and scores its stages.
fn report(split: &Split<'_>, opts: &TrainOptions) -> anyhow::Result<TrainReport> {
    let models = ModelDir::load(&opts.out).context("loading the models just written")?;
    let tree_report = |stage: &TreeStage, model: &serveflow::model::tree::TreeModel| {
        let spec = within(stage.spec(), true, opts.waits_ms);
        let (scores, us) = split.eval_tree(model, spec, &split.test);
        StageReport {
            features: stage.features.to_string(),
            packets: stage.packets,
            size: format!("{} ({} trees)", stage.params.describe(), model.num_trees()),
            fast_params: Some(stage.params),
            mlp: None,
            inputs: spec.width(),
            scores,
            us_per_flow: us,
        }
    };
    let first = opts
        .first
        .as_ref()
        .zip(models.early.first())
        .map(|(s, e)| tree_report(s, &e.stage.model));
    let fast = tree_report(&opts.fast, &models.fast.model);
    let slow_spec = within(opts.slow, false, opts.waits_ms);
    let (slow_scores, slow_us) = split.eval_slow(&models.slow.model, slow_spec, &split.test)?;
    let hidden = opts.mlp.hidden;
    Ok(TrainReport {
        task: split.corpus.task.name().to_owned(),
        command: opts.command.clone(),
        recipe: Recipe::of(split.corpus.task.name(), opts),
        split: SplitSettings::of(&opts.split),
        waits_ms: BTreeMap::from([
            ("inline".to_owned(), opts.waits_ms.0),
            ("slow".to_owned(), opts.waits_ms.1),
        ]),
        classes: split.classes.clone(),
        grouped_as_other: split.grouped.clone(),
        train_counts: split.counts(&split.train),
        test_counts: split.counts(&split.test),
        train_files: split.files(&split.train),
        test_files: split.files(&split.test),
        dataset: split.corpus.report.clone(),
        first,
        fast,
        slow: StageReport {
            features: opts.slow.to_string(),
            packets: opts.slow.packets,
            size: format!(
                "MLP {}-{}-{}-{}",
                models.slow.model.features(),
                hidden[0],
                hidden[1],
                split.classes.len()
            ),
            fast_params: None,
            mlp: Some(opts.mlp),
            inputs: slow_spec.width(),
            scores: slow_scores,
            us_per_flow: slow_us,
        },
    })
}

/// Prints a report the way a person reads it.
pub fn print(report: &TrainReport, out: &Path) {
    let d = &report.dataset;
    eprintln!(
        "serveflow-train: {} task, {} classes ({} labels grouped as other); {} train / {} test capture files; {} of {} flows labeled, {} exact duplicates removed ({} rows carry two labels)",
        report.task,
        report.classes.len(),
        report.grouped_as_other.len(),
        report.train_files,
        report.test_files,
        d.labeled,
        d.flows,
        d.duplicates_removed,
        d.conflicting_rows,
    );
    if d.malformed_label_rows > 0 {
        eprintln!(
            "serveflow-train: {} malformed label rows skipped",
            d.malformed_label_rows
        );
    }
    if !d.missing.is_empty() {
        eprintln!(
            "serveflow-train: {} labeled captures are not in the data folder (skipped), e.g. {}",
            d.missing.len(),
            d.missing[0]
        );
    }
    if !d.unreadable.is_empty() {
        eprintln!(
            "serveflow-train: {} unreadable captures skipped: {}",
            d.unreadable.len(),
            d.unreadable.join("; ")
        );
    }
    let stages = report
        .first
        .iter()
        .map(|s| ("first-only", s))
        .chain([("fast-only", &report.fast), ("slow-only", &report.slow)]);
    for (name, s) in stages {
        eprintln!(
            "serveflow-train: {name} ({} x{} packets, {}, {:.2} us/flow) on {} held-out flows: accuracy {:.3}, macro-F1 {:.3}; top confusions: {}",
            s.features,
            s.packets,
            s.size,
            s.us_per_flow,
            s.scores.rows,
            s.scores.accuracy,
            s.scores.macro_f1,
            s.scores
                .top_confusions
                .iter()
                .map(|(t, p, n)| format!("{t}->{p} x{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    eprintln!("serveflow-train: models written to {}", out.display());
}
