//! Model crafting, after ServeFlow: train candidates over feature set x packet count x model
//! size for every stage, measure each one's held-out macro-F1 and its inference cost on this
//! machine, keep each stage's Pareto front (no other candidate is cheaper, waits for fewer
//! packets and scores higher), and pick the stages within their cost budgets: the 1-packet
//! `first` and the `fast` stage each within the inline budget (they run on the fast path, the
//! fast one only for flows the first passes on), the slow stage within its own. Two baselines sit in the same table:
//! a port table and a k-NN over the first packets' sizes, directions and gaps.

use std::{fmt::Write as _, path::PathBuf};

use anyhow::Context as _;
use serde::Serialize;
use serveflow::{
    features::FeatureSpec,
    model::{onnx::OutputKind, onnx::SlowModel, tree::TreeModel},
};

use crate::{
    baselines::{self, Baseline},
    dataset::Corpus,
    mlp,
    pipeline::{self, within, TrainOptions, TrainReport, TreeStage},
    progress::{note, STEPS},
    split::{Split, SplitOptions},
    trees::FastParams,
};

/// Crafting settings.
#[derive(Clone, Debug)]
pub struct CraftOptions {
    /// Classes and split.
    pub split: SplitOptions,
    /// Output models directory.
    pub out: PathBuf,
    /// Each inline stage (`first`, `fast`) must cost at most this many microseconds per flow.
    pub inline_budget_us: f64,
    /// Slow candidates must cost at most this many microseconds per flow at batch 32.
    pub slow_budget_us: f64,
    /// MLP epochs for every slow candidate.
    pub epochs: usize,
    /// The serving waits the stages' features are seen through (ms).
    pub waits_ms: (f64, f64),
    /// Training seed.
    pub seed: u64,
    /// The command line, recorded in the reports.
    pub command: String,
}

/// One trained and measured candidate.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    /// `first`, `fast` or `slow`.
    pub stage: &'static str,
    /// Features in `--features` syntax.
    pub features: String,
    /// Packets waited for.
    pub packets: u32,
    /// Model size, readable.
    pub size: String,
    /// Inputs per flow.
    pub inputs: usize,
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
    tree: Option<TreeStage>,
    #[serde(skip)]
    slow: Option<(FeatureSpec, [usize; 2])>,
}

/// First-stage grid: what the first packet shows (ports, its payload's first bytes, the name
/// it carries, its masked header bits) at a few small sizes.
const FIRST_FEATURES: [&str; 5] = [
    "stats,ports",
    "stats,ports,bytes:16",
    "stats,ports,name:64",
    "stats,ports,bytes:16,name:64",
    "stats,ports,bytes:16,name:64,nprint,nprint-masked",
];
/// Fast-stage grid: the same over the first packets of the handshake (the TLS ClientHello
/// and the HTTP request are packet 4 of a TCP flow), with and without the packet sequence.
const FAST_FEATURES: [&str; 3] = [
    "stats,ports,name:64",
    "stats,ports,bytes:16,name:64",
    "stats,ports,seq,bytes:16,name:64",
];
const FAST_PACKETS: [u32; 2] = [2, 4];
/// (rounds, leaves, depth, learning rate): trees = rounds x classes, so with ~50 classes a
/// handful of rounds is what 2 µs buys; larger steps make up for fewer rounds, and shallow
/// trees are cheap to walk.
const TREE_SIZES: [(u32, u32, i32, f64); 3] = [(2, 16, 4, 0.35), (3, 16, 4, 0.3), (5, 8, 3, 0.3)];
/// Slow grid: masked header bits and payload with statistics, with and without ports and the
/// name, over 4 and 6 packets, at two widths.
const SLOW: [(&str, u32, [usize; 2]); 6] = [
    ("stats,nprint,nprint-masked,payload:32", 4, [128, 64]),
    (
        "stats,ports,name:64,nprint,nprint-masked,payload:32",
        4,
        [64, 32],
    ),
    (
        "stats,ports,name:64,nprint,nprint-masked,payload:32",
        4,
        [128, 64],
    ),
    (
        "stats,ports,name:64,nprint,nprint-masked,payload:32",
        6,
        [128, 64],
    ),
    (
        "stats,ports,seq,bytes:32,name:64,nprint,nprint-masked",
        4,
        [128, 64],
    ),
    ("stats,ports,seq,bytes:32,name:64", 8, [128, 64]),
];
/// Packets the k-NN baseline sees (the slow stage's).
const KNN_PACKETS: u32 = 4;

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

/// The best-scoring candidate of `stage` within `budget_us` (macro-F1, then accuracy), fewest
/// packets and lowest cost breaking ties.
pub fn pick(candidates: &[Candidate], stage: &str, budget_us: f64) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.stage == stage && c.us_per_flow <= budget_us)
        .max_by(|(_, a), (_, b)| {
            a.macro_f1
                .total_cmp(&b.macro_f1)
                .then(a.accuracy.total_cmp(&b.accuracy))
                .then(b.packets.cmp(&a.packets))
                .then(b.us_per_flow.total_cmp(&a.us_per_flow))
        })
        .map(|(i, _)| i)
}

/// The picked stages and what crafting measured.
#[derive(Debug)]
pub struct Crafted {
    /// Every candidate.
    pub candidates: Vec<Candidate>,
    /// Baselines on the same held-out flows.
    pub baselines: Vec<Baseline>,
    /// The picked models' report, as retrained into the directory.
    pub report: TrainReport,
}

/// Trains and measures every candidate, picks the stages, writes the models directory (with
/// `metrics.json` and `craft.md`).
pub fn craft(corpus: &Corpus, opts: &CraftOptions) -> anyhow::Result<Crafted> {
    let split = Split::prepare(corpus, &opts.split)?;
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let mut candidates = Vec::new();
    let trees = FIRST_FEATURES.iter().map(|f| ("first", *f, 1)).chain(
        FAST_FEATURES
            .iter()
            .flat_map(|f| FAST_PACKETS.map(|p| ("fast", *f, p))),
    );
    let all = trees.clone().count() * TREE_SIZES.len() + SLOW.len();
    let mut tried = 0;
    let mut next = |what: String| {
        tried += 1;
        STEPS.begin(format!("candidate {tried} of {all}: {what}"));
    };
    for (stage, features, packets) in trees {
        let spec_p = spec(features, packets)?;
        for (rounds, leaves, max_depth, learning_rate) in TREE_SIZES {
            next(format!("{stage} {features}, {packets} packets"));
            let tree = TreeStage {
                features: spec_p,
                packets,
                params: FastParams {
                    rounds,
                    leaves,
                    learning_rate,
                    max_depth,
                },
            };
            let text = split.train_tree(&tree, opts.waits_ms, opts.seed)?;
            let model = TreeModel::parse(&text)?;
            let seen = within(tree.spec(), true, opts.waits_ms);
            let (scores, us) = split.eval_tree(&model, seen, &split.test);
            let c = Candidate {
                stage,
                features: features.to_owned(),
                packets,
                size: tree.params.describe(),
                inputs: seen.width(),
                macro_f1: scores.macro_f1,
                accuracy: scores.accuracy,
                us_per_flow: us,
                pareto: false,
                picked: false,
                tree: Some(tree),
                slow: None,
            };
            note(&format!("craft: {}", line(&c)));
            candidates.push(c);
        }
    }
    for (features, packets, hidden) in SLOW {
        next(format!("slow {features}, {packets} packets"));
        let s = spec(features, packets)?;
        let config = mlp::TrainConfig {
            hidden,
            epochs: opts.epochs,
            seed: opts.seed,
            ..mlp::TrainConfig::default()
        };
        let net = split.train_slow(s, opts.waits_ms, config)?;
        let seen = within(s, false, opts.waits_ms);
        let path = scratch.path().join("candidate.onnx");
        std::fs::write(&path, net.to_onnx())?;
        let model = SlowModel::load(&path, seen.width(), split.classes.len(), OutputKind::Logits)?;
        let (scores, us) = split.eval_slow(&model, seen, &split.test)?;
        let c = Candidate {
            stage: "slow",
            features: features.to_owned(),
            packets,
            size: format!(
                "MLP {}-{}-{}-{} (of {} inputs)",
                net.layers.first().map_or(0, |l| l.inputs),
                hidden[0],
                hidden[1],
                split.classes.len(),
                seen.width()
            ),
            inputs: seen.width(),
            macro_f1: scores.macro_f1,
            accuracy: scores.accuracy,
            us_per_flow: us,
            pareto: false,
            picked: false,
            tree: None,
            slow: Some((s, hidden)),
        };
        note(&format!("craft: {}", line(&c)));
        candidates.push(c);
    }
    mark_pareto(&mut candidates);
    let cheapest = |stage: &str| {
        candidates
            .iter()
            .filter(|c| c.stage == stage)
            .map(|c| c.us_per_flow)
            .fold(f64::INFINITY, f64::min)
    };
    let inline = |stage: &str| {
        pick(&candidates, stage, opts.inline_budget_us).with_context(|| {
            format!(
                "no {stage} candidate costs <= {} us/flow (cheapest: {:.2}): raise --inline-budget-us",
                opts.inline_budget_us,
                cheapest(stage)
            )
        })
    };
    let (first_i, fast_i) = (inline("first")?, inline("fast")?);
    let slow_i = pick(&candidates, "slow", opts.slow_budget_us).with_context(|| {
        format!(
            "no slow candidate costs <= {} us/flow (cheapest: {:.2}): raise --slow-budget-us",
            opts.slow_budget_us,
            cheapest("slow")
        )
    })?;
    for i in [first_i, fast_i, slow_i] {
        candidates[i].picked = true;
    }
    let baselines = vec![
        baselines::port_only(&split, &split.test),
        baselines::knn(
            &split,
            &split.test,
            KNN_PACKETS,
            serveflow::config::wait_ns(opts.waits_ms.1),
        ),
    ];
    for b in &baselines {
        note(&format!(
            "craft: baseline {}: macro-F1 {:.3}, accuracy {:.3}, {:.2} us/flow",
            b.name, b.scores.macro_f1, b.scores.accuracy, b.us_per_flow
        ));
    }
    let (slow_spec, hidden) = candidates[slow_i]
        .slow
        .context("slow candidate without settings")?;
    let train = TrainOptions {
        split: opts.split.clone(),
        out: opts.out.clone(),
        first: candidates[first_i].tree,
        fast: candidates[fast_i]
            .tree
            .context("fast candidate without settings")?,
        slow: slow_spec,
        mlp: mlp::TrainConfig {
            hidden,
            epochs: opts.epochs,
            seed: opts.seed,
            ..mlp::TrainConfig::default()
        },
        waits_ms: opts.waits_ms,
        command: opts.command.clone(),
    };
    let report = pipeline::train(corpus, &train)?;
    let crafted = Crafted {
        candidates,
        baselines,
        report,
    };
    std::fs::write(opts.out.join("craft.md"), table(opts, &crafted))?;
    Ok(crafted)
}

fn line(c: &Candidate) -> String {
    format!(
        "{} {} x{} {}: macro-F1 {:.3}, accuracy {:.3}, {:.2} us/flow",
        c.stage, c.features, c.packets, c.size, c.macro_f1, c.accuracy, c.us_per_flow
    )
}

/// The candidates as a Markdown page.
pub fn table(opts: &CraftOptions, crafted: &Crafted) -> String {
    let report = &crafted.report;
    let d = &report.dataset;
    let mut s = String::new();
    let _ = writeln!(s, "# Model crafting: {} task\n", report.task);
    let _ = writeln!(s, "Produced by `{}`.", opts.command);
    let _ = writeln!(
        s,
        "Corpus: {} labeled flows after removing {} exact duplicates (same feature row and label; {} feature rows carry two labels); \
         held-out split: {} capture files ({} flows), {} classes. Features are what each stage has when its wait runs out \
         (inline stages: packets within {} ms of the first; slow: within {} ms). Cost: median inference time per flow on the \
         machine that ran the command (tree stages: one flow at a time; slow: batch of 32), one core. Budgets: each inline stage (first, fast) <= {} us, \
         slow <= {} us. Pareto: no other candidate of the stage is cheaper, waits for fewer packets and scores higher.\n",
        d.labeled - d.duplicates_removed,
        d.duplicates_removed,
        d.conflicting_rows,
        report.test_files,
        report.fast.scores.rows,
        report.classes.len(),
        opts.waits_ms.0,
        opts.waits_ms.1,
        opts.inline_budget_us,
        opts.slow_budget_us
    );
    let _ = writeln!(
        s,
        "| stage | features | packets | size | inputs | macro-F1 | accuracy | us/flow | Pareto | picked |"
    );
    let _ = writeln!(s, "|---|---|---|---|---:|---:|---:|---:|---|---|");
    for c in &crafted.candidates {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.3} | {:.3} | {:.2} | {} | {} |",
            c.stage,
            c.features,
            c.packets,
            c.size,
            c.inputs,
            c.macro_f1,
            c.accuracy,
            c.us_per_flow,
            if c.pareto { "yes" } else { "" },
            if c.picked { "**picked**" } else { "" }
        );
    }
    for b in &crafted.baselines {
        let _ = writeln!(
            s,
            "| baseline | {} | {} | | | {:.3} | {:.3} | {:.2} | | |",
            b.name, b.packets, b.scores.macro_f1, b.scores.accuracy, b.us_per_flow
        );
    }
    let first = report.first.as_ref();
    let _ = writeln!(
        s,
        "\nPicked models, as retrained into this directory: first-only macro-F1 {} , fast-only macro-F1 {:.3} (accuracy {:.3}), \
         slow-only macro-F1 {:.3} (accuracy {:.3}); details in `metrics.json`. The cascade's scores and latency, after \
         calibration, are in `calibration.json` and `docs/benchmarks.md`.",
        first.map_or_else(|| "-".to_owned(), |f| format!("{:.3} (accuracy {:.3})", f.scores.macro_f1, f.scores.accuracy)),
        report.fast.scores.macro_f1,
        report.fast.scores.accuracy,
        report.slow.scores.macro_f1,
        report.slow.scores.accuracy
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
            inputs: 0,
            macro_f1: f1,
            accuracy: f1,
            us_per_flow: us,
            pareto: false,
            picked: false,
            tree: None,
            slow: None,
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
