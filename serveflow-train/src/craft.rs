//! Model crafting, after ServeFlow: train candidates over feature set x packet count x model
//! size, measure each one's held-out macro-F1 and its inference cost on this machine, keep
//! the Pareto front (no other candidate is cheaper, waits for fewer packets and scores
//! higher), and pick the best-scoring fast and slow models within their cost budgets.

use std::{fmt::Write as _, path::PathBuf};

use anyhow::Context as _;
use serde::Serialize;
use serveflow::{
    features::FeatureSpec,
    model::{onnx::OutputKind, onnx::SlowModel, tree::TreeModel},
};

use crate::{
    mlp,
    pipeline::{self, FastParams, Split, SplitOptions, TrainOptions, TrainReport},
};

/// Crafting settings.
#[derive(Clone, Debug)]
pub struct CraftOptions {
    /// Classes and split.
    pub split: SplitOptions,
    /// Output models directory.
    pub out: PathBuf,
    /// Fast candidates must cost at most this many microseconds per flow.
    pub fast_budget_us: f64,
    /// Slow candidates must cost at most this many microseconds per flow at batch 32.
    pub slow_budget_us: f64,
    /// MLP epochs for every slow candidate.
    pub epochs: usize,
    /// The command line, recorded in the reports.
    pub command: String,
}

/// One trained and measured candidate.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    /// `fast` or `slow`.
    pub stage: &'static str,
    /// Features in `--features` syntax.
    pub features: String,
    /// Packets waited for.
    pub packets: u32,
    /// Model size, readable.
    pub size: String,
    /// Held-out macro-F1.
    pub macro_f1: f64,
    /// Held-out accuracy.
    pub accuracy: f64,
    /// Median microseconds per flow (slow: at batch 32).
    pub us_per_flow: f64,
    /// On the Pareto front of its stage.
    pub pareto: bool,
    /// Picked for the models directory.
    pub picked: bool,
    #[serde(skip)]
    spec: FeatureSpec,
    #[serde(skip)]
    fast: Option<FastParams>,
    #[serde(skip)]
    hidden: Option<[usize; 2]>,
}

/// Fast grid: the first packets' statistics, alone or with masked header bits, at a few
/// ensemble sizes. Fast models never wait for more than two packets.
const FAST_FEATURES: [&str; 2] = ["stats", "stats,nprint,nprint-masked"];
const FAST_PACKETS: [u32; 2] = [1, 2];
const FAST_SIZES: [(u32, u32); 4] = [(4, 8), (8, 8), (12, 8), (8, 16)];
/// Slow grid: masked nPrint bits with or without statistics and payload, over more packets,
/// at three MLP widths.
const SLOW_FEATURES: [&str; 2] = [
    "nprint,nprint-masked",
    "stats,nprint,nprint-masked,payload:32",
];
const SLOW_PACKETS: [u32; 3] = [2, 4, 6];
const SLOW_HIDDEN: [[usize; 2]; 3] = [[64, 32], [128, 64], [256, 128]];

fn spec(features: &str, packets: u32) -> anyhow::Result<FeatureSpec> {
    let spec: FeatureSpec = features.parse()?;
    Ok(FeatureSpec { packets, ..spec })
}

/// Marks the candidates no other candidate of the same stage dominates.
pub fn mark_pareto(candidates: &mut [Candidate]) {
    let dominated: Vec<bool> = candidates
        .iter()
        .map(|c| {
            candidates.iter().any(|o| {
                o.stage == c.stage
                    && o.us_per_flow <= c.us_per_flow
                    && o.packets <= c.packets
                    && o.macro_f1 >= c.macro_f1
                    && (o.us_per_flow < c.us_per_flow
                        || o.packets < c.packets
                        || o.macro_f1 > c.macro_f1)
            })
        })
        .collect();
    for (c, d) in candidates.iter_mut().zip(dominated) {
        c.pareto = !d;
    }
}

/// The best-scoring candidate of `stage` within `budget_us`, fewest packets and lowest cost
/// breaking ties.
pub fn pick(candidates: &[Candidate], stage: &str, budget_us: f64) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.stage == stage && c.us_per_flow <= budget_us)
        .max_by(|(_, a), (_, b)| {
            a.macro_f1
                .total_cmp(&b.macro_f1)
                .then(b.packets.cmp(&a.packets))
                .then(b.us_per_flow.total_cmp(&a.us_per_flow))
        })
        .map(|(i, _)| i)
}

/// Trains and measures every candidate, picks the two stages, writes the models directory
/// (with `metrics.json` and `craft.md`) and returns the table and the picked models' report.
pub fn craft(opts: &CraftOptions) -> anyhow::Result<(Vec<Candidate>, TrainReport)> {
    let none = FeatureSpec {
        stats: false,
        nprint: None,
        packets: 1,
    };
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let mut candidates = Vec::new();
    for features in FAST_FEATURES {
        for packets in FAST_PACKETS {
            let spec = spec(features, packets)?;
            let split = Split::prepare(&opts.split, spec, none)?;
            for (rounds, leaves) in FAST_SIZES {
                let params = FastParams { rounds, leaves };
                let text = split.train_fast(params, opts.split.seed)?;
                let model = TreeModel::parse(&text)?;
                let (scores, us) = split.eval_fast(&model);
                let c = Candidate {
                    stage: "fast",
                    features: features.to_owned(),
                    packets,
                    size: format!("{rounds} rounds x {leaves} leaves"),
                    macro_f1: scores.macro_f1,
                    accuracy: scores.accuracy,
                    us_per_flow: us,
                    pareto: false,
                    picked: false,
                    spec,
                    fast: Some(params),
                    hidden: None,
                };
                eprintln!("serveflow-train: craft: {}", line(&c));
                candidates.push(c);
            }
        }
    }
    for features in SLOW_FEATURES {
        for packets in SLOW_PACKETS {
            let spec = spec(features, packets)?;
            let split = Split::prepare(&opts.split, none, spec)?;
            let inputs = spec.names().len();
            for hidden in SLOW_HIDDEN {
                let config = mlp::TrainConfig {
                    hidden,
                    epochs: opts.epochs,
                    seed: opts.split.seed,
                    ..mlp::TrainConfig::default()
                };
                let net = split.train_slow(config)?;
                let path = scratch.path().join("candidate.onnx");
                std::fs::write(&path, net.to_onnx())?;
                let model =
                    SlowModel::load(&path, inputs, split.classes.len(), OutputKind::Logits)?;
                let (scores, us) = split.eval_slow(&model)?;
                let c = Candidate {
                    stage: "slow",
                    features: features.to_owned(),
                    packets,
                    size: format!(
                        "MLP {inputs}-{}-{}-{}",
                        hidden[0],
                        hidden[1],
                        split.classes.len()
                    ),
                    macro_f1: scores.macro_f1,
                    accuracy: scores.accuracy,
                    us_per_flow: us,
                    pareto: false,
                    picked: false,
                    spec,
                    fast: None,
                    hidden: Some(hidden),
                };
                eprintln!("serveflow-train: craft: {}", line(&c));
                candidates.push(c);
            }
        }
    }
    mark_pareto(&mut candidates);
    let cheapest = |stage: &str| {
        candidates
            .iter()
            .filter(|c| c.stage == stage)
            .map(|c| c.us_per_flow)
            .fold(f64::INFINITY, f64::min)
    };
    let fast_i = pick(&candidates, "fast", opts.fast_budget_us).with_context(|| {
        format!(
            "no fast candidate costs <= {} us/flow (cheapest: {:.2}): raise --fast-budget-us",
            opts.fast_budget_us,
            cheapest("fast")
        )
    })?;
    let slow_i = pick(&candidates, "slow", opts.slow_budget_us).with_context(|| {
        format!(
            "no slow candidate costs <= {} us/flow (cheapest: {:.2}): raise --slow-budget-us",
            opts.slow_budget_us,
            cheapest("slow")
        )
    })?;
    candidates[fast_i].picked = true;
    candidates[slow_i].picked = true;
    let (f, s) = (&candidates[fast_i], &candidates[slow_i]);
    let train = TrainOptions {
        split: opts.split.clone(),
        out: opts.out.clone(),
        fast: f.spec,
        slow: s.spec,
        fast_params: f.fast.context("fast candidate without parameters")?,
        mlp: mlp::TrainConfig {
            hidden: s.hidden.context("slow candidate without widths")?,
            epochs: opts.epochs,
            seed: opts.split.seed,
            ..mlp::TrainConfig::default()
        },
        command: opts.command.clone(),
    };
    let report = pipeline::train(&train)?;
    std::fs::write(opts.out.join("craft.md"), table(opts, &candidates, &report))?;
    Ok((candidates, report))
}

fn line(c: &Candidate) -> String {
    format!(
        "{} {} x{} {}: macro-F1 {:.3}, accuracy {:.3}, {:.2} us/flow",
        c.stage, c.features, c.packets, c.size, c.macro_f1, c.accuracy, c.us_per_flow
    )
}

/// The candidates as a Markdown page.
pub fn table(opts: &CraftOptions, candidates: &[Candidate], report: &TrainReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Model crafting: {} task\n", report.task);
    let _ = writeln!(s, "Produced by `{}`.", opts.command);
    let _ = writeln!(
        s,
        "Held-out split: {} capture files ({} flows), {} classes. Cost: median inference time per flow on the \
         machine that ran the command (fast: one flow at a time; slow: batch of 32), one core. \
         Budgets: fast <= {} us, slow <= {} us. Pareto: no other candidate of the stage is cheaper, \
         waits for fewer packets and scores higher.\n",
        report.test_files,
        report.fast.scores.rows,
        report.classes.len(),
        opts.fast_budget_us,
        opts.slow_budget_us
    );
    let _ = writeln!(
        s,
        "| stage | features | packets | size | macro-F1 | accuracy | us/flow | Pareto | picked |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for c in candidates {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.3} | {:.3} | {:.2} | {} | {} |",
            c.stage,
            c.features,
            c.packets,
            c.size,
            c.macro_f1,
            c.accuracy,
            c.us_per_flow,
            if c.pareto { "yes" } else { "" },
            if c.picked { "**picked**" } else { "" }
        );
    }
    let _ = writeln!(
        s,
        "\nPicked models, as retrained into this directory: fast-only macro-F1 {:.3} (accuracy {:.3}), \
         slow-only macro-F1 {:.3} (accuracy {:.3}); details in `metrics.json`.",
        report.fast.scores.macro_f1, report.fast.scores.accuracy, report.slow.scores.macro_f1, report.slow.scores.accuracy
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(stage: &'static str, packets: u32, us: f64, f1: f64) -> Candidate {
        Candidate {
            stage,
            features: "stats".into(),
            packets,
            size: String::new(),
            macro_f1: f1,
            accuracy: f1,
            us_per_flow: us,
            pareto: false,
            picked: false,
            spec: FeatureSpec::default(),
            fast: None,
            hidden: None,
        }
    }

    #[test]
    fn pareto_front_and_pick() {
        let mut v = vec![
            c("fast", 1, 1.0, 0.60), // front: cheapest
            c("fast", 1, 2.0, 0.70), // front
            c("fast", 1, 3.0, 0.65), // dominated by the one above
            c("fast", 2, 1.5, 0.75), // front: more packets but better and cheaper than #2
            c("slow", 4, 9.0, 0.50), // other stage: judged on its own
        ];
        mark_pareto(&mut v);
        assert_eq!(
            v.iter().map(|c| c.pareto).collect::<Vec<_>>(),
            [true, true, false, true, true]
        );
        assert_eq!(pick(&v, "fast", 2.0), Some(3));
        assert_eq!(pick(&v, "fast", 1.2), Some(0));
        assert_eq!(pick(&v, "fast", 0.5), None);
        assert_eq!(pick(&v, "slow", 10.0), Some(4));
    }
}
