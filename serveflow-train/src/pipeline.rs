//! The training pipeline's steps: labeled captures -> features (serveflow's own extraction)
//! -> classes and a split by capture file -> a fast LightGBM model and a slow MLP (ONNX) ->
//! held-out scores and per-flow inference cost measured through the serving code (the
//! native tree evaluator and tract) -> a models directory. `train` runs them once; `craft`
//! runs them over a grid of candidates.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{bail, Context as _};
use lightgbm3::{Booster, Dataset};
use serde::Serialize;
use serveflow::{
    features::FeatureSpec,
    model::{
        dir::{Manifest, ModelDir, RoutingConfig, StageConfig, Uncertainty, MANIFEST},
        onnx::{OutputKind, SlowModel},
        tree::TreeModel,
    },
};

use crate::{
    dataset::{self, DatasetReport, Example, Task},
    metrics::{score, Scores},
    mlp,
};

/// How labels become classes and flows become train and test sets.
#[derive(Clone, Debug)]
pub struct SplitOptions {
    /// Data folder (`../shared/data` layout).
    pub data: PathBuf,
    /// Task.
    pub task: Task,
    /// A label needs this many flows to be a class of its own...
    pub min_flows: usize,
    /// ...in at least this many capture files; the rest become `other`.
    pub min_files: usize,
    /// Percentage of capture files held out for testing.
    pub test_percent: u64,
    /// Seed of the split.
    pub seed: u64,
}

/// Fast model size.
#[derive(Clone, Copy, Debug, Serialize, serde::Deserialize)]
pub struct FastParams {
    /// Boosting rounds (trees = rounds x classes).
    pub rounds: u32,
    /// Leaves per tree.
    pub leaves: u32,
}

/// Labeled flows split by capture file, with their classes.
pub struct Split {
    /// Task.
    pub task: Task,
    /// Classes in output order (`other` last when present).
    pub classes: Vec<String>,
    /// Labels grouped into `other`, with their flow counts.
    pub grouped: BTreeMap<String, usize>,
    /// Training flows.
    pub train: Vec<Example>,
    /// Held-out flows.
    pub test: Vec<Example>,
    /// What extraction read and skipped.
    pub dataset: DatasetReport,
    /// Feature specs the examples were built with.
    pub specs: (FeatureSpec, FeatureSpec),
}

fn argmax<T: Copy + Into<f64>>(v: &[T]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| (*a.1).into().total_cmp(&(*b.1).into()))
        .map_or(0, |(i, _)| i)
}

impl Split {
    /// Extracts the labeled flows with `fast` and `slow` features, picks the classes and
    /// splits by capture file. Labels below the thresholds are grouped as `other`, never
    /// dropped; a split that leaves a class without training flows is an error.
    pub fn prepare(
        opts: &SplitOptions,
        fast: FeatureSpec,
        slow: FeatureSpec,
    ) -> anyhow::Result<Split> {
        let (examples, report) = dataset::build(&opts.data, opts.task, fast, slow)?;
        if examples.is_empty() {
            bail!(
                "{}: no capture yielded a labeled flow ({} read, {} unreadable)",
                opts.data.display(),
                report.flows,
                report.unreadable.len()
            );
        }
        let mut flows: BTreeMap<&str, usize> = BTreeMap::new();
        let mut files: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for e in &examples {
            *flows.entry(&e.label).or_default() += 1;
            files.entry(&e.label).or_default().insert(&e.file);
        }
        let keep = |l: &str, n: usize| {
            n >= opts.min_flows && files.get(l).map_or(0, BTreeSet::len) >= opts.min_files
        };
        let mut classes: Vec<String> = flows
            .iter()
            .filter(|(l, n)| keep(l, **n))
            .map(|(l, _)| (*l).to_owned())
            .collect();
        let grouped: BTreeMap<String, usize> = flows
            .iter()
            .filter(|(l, n)| !keep(l, **n))
            .map(|(l, n)| ((*l).to_owned(), *n))
            .collect();
        if !grouped.is_empty() {
            if classes.iter().any(|c| c == "other") {
                bail!("a label is literally named \"other\": rename it in the labels, it would merge with the grouped labels");
            }
            classes.push("other".into());
        }
        if classes.len() < 2 {
            bail!(
                "only {} class(es) have {} flows in {} capture files: lower --min-flows or --min-files",
                classes.len(),
                opts.min_flows,
                opts.min_files
            );
        }
        let (train, test): (Vec<Example>, Vec<Example>) = examples.into_iter().partition(|e| {
            serveflow::labels::split_bucket(&e.file, opts.seed) >= opts.test_percent
        });
        if train.is_empty() || test.is_empty() {
            bail!(
                "the split left {} train and {} test flows: change --test-percent or --seed",
                train.len(),
                test.len()
            );
        }
        let split = Split {
            task: opts.task,
            classes,
            grouped,
            train,
            test,
            dataset: report,
            specs: (fast, slow),
        };
        let counts = split.counts(&split.train);
        for c in &split.classes {
            if !counts.contains_key(c) {
                bail!("class {c:?} has no flow in the training files: raise --min-files or change --seed");
            }
        }
        Ok(split)
    }

    /// Class index of a label (`other` for grouped labels).
    pub fn class_of(&self, label: &str) -> usize {
        self.classes
            .iter()
            .position(|c| c == label)
            .unwrap_or(self.classes.len() - 1)
    }

    /// Flows per class in `set`.
    pub fn counts(&self, set: &[Example]) -> BTreeMap<String, usize> {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for e in set {
            *m.entry(self.classes[self.class_of(&e.label)].clone())
                .or_default() += 1;
        }
        m
    }

    fn truth(&self) -> Vec<usize> {
        self.test.iter().map(|e| self.class_of(&e.label)).collect()
    }

    /// Trains the fast model on the fast features; returns LightGBM's text model.
    pub fn train_fast(&self, params: FastParams, seed: u64) -> anyhow::Result<String> {
        let n = self.train[0].fast.len();
        if n == 0 {
            bail!("the fast stage has no features");
        }
        let x: Vec<f64> = self
            .train
            .iter()
            .flat_map(|e| e.fast.iter().map(|v| f64::from(*v)))
            .collect();
        let y: Vec<f32> = self
            .train
            .iter()
            .map(|e| self.class_of(&e.label) as f32)
            .collect();
        let dataset = Dataset::from_slice(&x, &y, i32::try_from(n)?, true)
            .map_err(|e| anyhow::anyhow!("LightGBM dataset: {e}"))?;
        let params = serde_json::json!({
            "objective": "multiclass",
            "num_class": self.classes.len(),
            "num_iterations": params.rounds,
            "num_leaves": params.leaves,
            "learning_rate": 0.15,
            "min_data_in_leaf": 10,
            "feature_fraction": 0.9,
            "num_threads": 2,
            "deterministic": true,
            "force_row_wise": true,
            "seed": seed,
            "verbosity": -1,
        });
        let booster = Booster::train(dataset, &params)
            .map_err(|e| anyhow::anyhow!("LightGBM training: {e}"))?;
        booster
            .save_string()
            .map_err(|e| anyhow::anyhow!("LightGBM save: {e}"))
    }

    /// Trains the slow MLP on the slow features, classes weighted by 1/sqrt(frequency) so
    /// rare classes count without drowning the rest.
    pub fn train_slow(&self, config: mlp::TrainConfig) -> anyhow::Result<mlp::Mlp> {
        let n = self.train[0].slow.len();
        if n == 0 {
            bail!("the slow stage has no features");
        }
        let k = self.classes.len();
        let counts = self.counts(&self.train);
        let x: Vec<f32> = self
            .train
            .iter()
            .flat_map(|e| e.slow.iter().copied())
            .collect();
        let y: Vec<usize> = self.train.iter().map(|e| self.class_of(&e.label)).collect();
        let w: Vec<f32> = self
            .classes
            .iter()
            .map(|c| 1.0 / (counts.get(c).copied().unwrap_or(1) as f32).sqrt())
            .collect();
        let mean = w.iter().sum::<f32>() / k as f32;
        let w: Vec<f32> = w.iter().map(|v| v / mean).collect();
        Ok(mlp::train(&x, &y, n, k, &w, config))
    }

    /// Held-out scores of a fast model, and its median inference time per flow in
    /// microseconds on this core.
    pub fn eval_fast(&self, model: &TreeModel) -> (Scores, f64) {
        let rows: Vec<Vec<f64>> = self
            .test
            .iter()
            .map(|e| e.fast.iter().map(|v| f64::from(*v)).collect())
            .collect();
        let mut out = vec![0.0; self.classes.len()];
        let pred: Vec<usize> = rows
            .iter()
            .map(|x| {
                model.predict(x, &mut out);
                argmax(&out)
            })
            .collect();
        // Timed in groups of 16 flows so the clock's own cost stays negligible.
        let mut times: Vec<f64> = Vec::new();
        for _ in 0..3 {
            for group in rows.chunks(16) {
                let start = Instant::now();
                for x in group {
                    model.predict(std::hint::black_box(x), &mut out);
                }
                times.push(start.elapsed().as_secs_f64() * 1e6 / group.len() as f64);
            }
        }
        (
            score(&self.truth(), &pred, &self.classes),
            median(&mut times),
        )
    }

    /// Held-out scores of a slow model, and its median inference time per flow in
    /// microseconds at batch 32 on this core.
    pub fn eval_slow(&self, model: &SlowModel) -> anyhow::Result<(Scores, f64)> {
        let k = self.classes.len();
        let mut state = model.state()?;
        let (mut pred, mut probs, mut times) =
            (Vec::with_capacity(self.test.len()), Vec::new(), Vec::new());
        for chunk in self.test.chunks(32) {
            let rows: Vec<f32> = chunk.iter().flat_map(|e| e.slow.iter().copied()).collect();
            let start = Instant::now();
            model.predict_batch(&mut state, &rows, &mut probs)?;
            if chunk.len() == 32 {
                times.push(start.elapsed().as_secs_f64() * 1e6 / 32.0);
            }
            pred.extend(probs.chunks(k).map(argmax));
        }
        Ok((
            score(&self.truth(), &pred, &self.classes),
            median(&mut times),
        ))
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Writes a models directory: `fast.txt`, `slow.onnx` and the manifest.
pub fn write_models_dir(
    out: &Path,
    split: &Split,
    fast_text: &str,
    slow: &mlp::Mlp,
) -> anyhow::Result<Manifest> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("fast.txt"), fast_text)?;
    std::fs::write(out.join("slow.onnx"), slow.to_onnx())?;
    let manifest = Manifest {
        task: split.task.name().to_owned(),
        classes: split.classes.clone(),
        fast: StageConfig {
            model: "fast.txt".into(),
            features: split.specs.0.to_string(),
            packets: split.specs.0.packets,
            output: None,
        },
        slow: StageConfig {
            model: "slow.onnx".into(),
            features: split.specs.1.to_string(),
            packets: split.specs.1.packets,
            output: Some(OutputKind::Logits),
        },
        routing: RoutingConfig {
            uncertainty: Uncertainty::LeastConfidence,
            threshold: 0.2,
            per_class: BTreeMap::new(),
        },
        early: Vec::new(),
    };
    std::fs::write(out.join(MANIFEST), toml::to_string_pretty(&manifest)?)?;
    Ok(manifest)
}

/// Scores and cost of one stage.
#[derive(Debug, Serialize)]
pub struct StageReport {
    /// Features, in `--features` syntax.
    pub features: String,
    /// Packets waited for.
    pub packets: u32,
    /// Size, readable.
    pub size: String,
    /// Fast: boosting rounds and leaves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fast_params: Option<FastParams>,
    /// Slow: MLP settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlp: Option<mlp::TrainConfig>,
    /// Held-out scores.
    pub scores: Scores,
    /// Median inference microseconds per flow on the training machine (slow: at batch 32).
    pub us_per_flow: f64,
}

/// What training produced, written as `metrics.json` beside the models.
#[derive(Debug, Serialize)]
pub struct TrainReport {
    /// Task.
    pub task: String,
    /// The command that produced it.
    pub command: String,
    /// Label grouping and split settings.
    pub split: SplitSettings,
    /// Classes, in output order.
    pub classes: Vec<String>,
    /// Labels grouped into `other`, with their flow counts.
    pub grouped_as_other: BTreeMap<String, usize>,
    /// Flows per class, train split.
    pub train_counts: BTreeMap<String, usize>,
    /// Flows per class, test split.
    pub test_counts: BTreeMap<String, usize>,
    /// Capture files in the train split.
    pub train_files: usize,
    /// Capture files in the test split.
    pub test_files: usize,
    /// Flows extracted from the labeled captures.
    pub flows_extracted: u64,
    /// Flows that matched a label.
    pub flows_labeled: u64,
    /// Captures that had labels but yielded no labeled flow.
    pub captures_without_labeled_flows: u64,
    /// Captures that could not be read, with the reason.
    pub unreadable: Vec<String>,
    /// Label rows skipped because their field count was wrong.
    pub malformed_label_rows: u64,
    /// Fast model, evaluated through the models directory just written.
    pub fast: StageReport,
    /// Slow model, evaluated through the models directory just written.
    pub slow: StageReport,
}

impl Split {
    /// Loads `dir` (as serving will) and builds the report of its two stages.
    pub fn report(&self, dir: &Path, opts: &TrainOptions) -> anyhow::Result<TrainReport> {
        let (fast, hidden) = (opts.fast_params, opts.mlp.hidden);
        let models = ModelDir::load(dir).context("loading the models just written")?;
        let (fast_scores, fast_us) = self.eval_fast(&models.fast.model);
        let (slow_scores, slow_us) = self.eval_slow(&models.slow.model)?;
        let files = |set: &[Example]| set.iter().map(|e| &e.file).collect::<BTreeSet<_>>().len();
        Ok(TrainReport {
            task: self.task.name().to_owned(),
            command: opts.command.clone(),
            split: SplitSettings {
                min_flows: opts.split.min_flows,
                min_files: opts.split.min_files,
                test_percent: opts.split.test_percent,
                seed: opts.split.seed,
            },
            classes: self.classes.clone(),
            grouped_as_other: self.grouped.clone(),
            train_counts: self.counts(&self.train),
            test_counts: self.counts(&self.test),
            train_files: files(&self.train),
            test_files: files(&self.test),
            flows_extracted: self.dataset.flows,
            flows_labeled: self.dataset.labeled,
            captures_without_labeled_flows: self.dataset.files_without_labels,
            unreadable: self.dataset.unreadable.clone(),
            malformed_label_rows: self.dataset.malformed_label_rows,
            fast: StageReport {
                features: self.specs.0.to_string(),
                packets: self.specs.0.packets,
                size: format!(
                    "{} rounds x {} leaves ({} trees)",
                    fast.rounds,
                    fast.leaves,
                    models.fast.model.num_trees()
                ),
                fast_params: Some(fast),
                mlp: None,
                scores: fast_scores,
                us_per_flow: fast_us,
            },
            slow: StageReport {
                features: self.specs.1.to_string(),
                packets: self.specs.1.packets,
                size: format!(
                    "MLP {}-{}-{}-{}",
                    models.slow.model.features(),
                    hidden[0],
                    hidden[1],
                    self.classes.len()
                ),
                fast_params: None,
                mlp: Some(opts.mlp),
                scores: slow_scores,
                us_per_flow: slow_us,
            },
        })
    }
}

/// [`SplitOptions`] without the data path, as recorded.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct SplitSettings {
    /// See [`SplitOptions::min_flows`].
    pub min_flows: usize,
    /// See [`SplitOptions::min_files`].
    pub min_files: usize,
    /// See [`SplitOptions::test_percent`].
    pub test_percent: u64,
    /// See [`SplitOptions::seed`].
    pub seed: u64,
}

/// Everything `train` needs.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Classes and split.
    pub split: SplitOptions,
    /// Output models directory.
    pub out: PathBuf,
    /// Fast stage features (with packets).
    pub fast: FeatureSpec,
    /// Slow stage features (with packets).
    pub slow: FeatureSpec,
    /// Fast model size.
    pub fast_params: FastParams,
    /// MLP settings.
    pub mlp: mlp::TrainConfig,
    /// The command line, recorded in the report.
    pub command: String,
}

/// Trains both stages once and writes the models directory and `metrics.json`.
pub fn train(opts: &TrainOptions) -> anyhow::Result<TrainReport> {
    let split = Split::prepare(&opts.split, opts.fast, opts.slow)?;
    let fast = split.train_fast(opts.fast_params, opts.split.seed)?;
    let slow = split.train_slow(opts.mlp)?;
    write_models_dir(&opts.out, &split, &fast, &slow)?;
    let report = split.report(&opts.out, opts)?;
    std::fs::write(
        opts.out.join("metrics.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    Ok(report)
}

/// Prints a report the way a person reads it.
pub fn print(report: &TrainReport, out: &Path) {
    eprintln!(
        "serveflow-train: {} task, {} classes ({} labels grouped as other); {} train / {} test capture files; {} of {} flows labeled",
        report.task,
        report.classes.len(),
        report.grouped_as_other.len(),
        report.train_files,
        report.test_files,
        report.flows_labeled,
        report.flows_extracted,
    );
    if report.malformed_label_rows > 0 {
        eprintln!(
            "serveflow-train: {} malformed label rows skipped",
            report.malformed_label_rows
        );
    }
    if !report.unreadable.is_empty() {
        eprintln!(
            "serveflow-train: {} unreadable captures skipped: {}",
            report.unreadable.len(),
            report.unreadable.join("; ")
        );
    }
    for (name, s) in [("fast-only", &report.fast), ("slow-only", &report.slow)] {
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
