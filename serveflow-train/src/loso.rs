//! The leave-one-source-out check: the honest estimate of how the bundled models do on a
//! user's traffic. For each source (a data set: nDPI's test captures, the IoT Sentinel set,
//! the four extra public sets together), the bundled recipe is trained on every other source,
//! calibrated on a held-out part of those, and scored on the left-out source, which neither
//! training nor calibration saw: fast-only, slow-only and the cascade.

use std::{fmt::Write as _, path::Path};

use serde::Serialize;
use serveflow::{calibrate::Target, model::dir::ModelDir, pipeline::cascade::Cascade};

use crate::{
    cascade::{self, Fitted, ModeScores},
    dataset::Corpus,
    pipeline::{self, Recipe},
    progress::note,
    split::{Holdout, Split},
};

/// The default groups: each source alone, the four small public sets together.
pub const DEFAULT_GROUPS: [&str; 3] = ["ndpi", "iot_sentinel", "tcpdump+ja4+pcapplusplus+packets"];

/// One left-out source's result.
#[derive(Clone, Debug, Serialize)]
pub struct Fold {
    /// Sources left out.
    pub left_out: String,
    /// Labeled flows of the left-out sources.
    pub test_flows: usize,
    /// Their captures.
    pub test_files: usize,
    /// Classes of the models trained without them.
    pub classes: usize,
    /// Share of the left-out flows whose label is none of those classes (scored as `other`).
    pub unseen_label_share: f64,
    /// Flows the calibration was fitted on.
    pub calibration_flows: usize,
    /// The calibration.
    pub fitted: Fitted,
    /// Scores on the left-out sources.
    pub scores: ModeScores,
}

/// Runs the check for `groups` (each a `+`-joined list of sources) with `recipe`.
pub fn run(
    corpus: &Corpus,
    recipe: &Recipe,
    groups: &[String],
    target: Target,
) -> anyhow::Result<Vec<Fold>> {
    let mut folds = Vec::new();
    for group in groups {
        let sources: Vec<String> = group.split('+').map(str::to_owned).collect();
        let holdout = Holdout::Sources {
            sources,
            percent: recipe.split.test_percent,
            seed: recipe.split.seed,
        };
        let dir = tempfile::tempdir()?;
        let opts = recipe.options(
            dir.path().to_owned(),
            Some(holdout),
            format!("leave-one-source-out: {group}"),
        )?;
        note(&format!("loso: training without {group}"));
        pipeline::train(corpus, &opts)?;
        let split = Split::prepare(corpus, &opts.split)?;
        let models = Cascade::from_models(ModelDir::load(dir.path())?);
        let cal = cascade::answers(&models, &split, &split.calibration, recipe.waits_ms)?;
        let fitted = cascade::fit(&models, &cal, target);
        let test = cascade::answers(&models, &split, &split.test, recipe.waits_ms)?;
        let scores = cascade::modes(&models, &test, &fitted);
        let unseen = split
            .test
            .iter()
            .filter(|&&i| !split.classes.contains(&split.example(i).label))
            .count();
        let fold = Fold {
            left_out: group.clone(),
            test_flows: split.test.len(),
            test_files: split.files(&split.test),
            classes: split.classes.len(),
            unseen_label_share: unseen as f64 / split.test.len().max(1) as f64,
            calibration_flows: split.calibration.len(),
            fitted,
            scores,
        };
        note(&format!("loso: {}", row(&fold)));
        folds.push(fold);
    }
    Ok(folds)
}

fn row(f: &Fold) -> String {
    let s = &f.scores;
    format!(
        "| {} | {} ({} captures) | {} | {:.0}% | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} | {:.1}% |",
        f.left_out,
        f.test_flows,
        f.test_files,
        f.classes,
        f.unseen_label_share * 100.0,
        s.fast_only.accuracy,
        s.fast_only.macro_f1,
        s.slow_only.accuracy,
        s.slow_only.macro_f1,
        s.cascade.accuracy,
        s.cascade.macro_f1,
        s.cascade.escalated * 100.0
    )
}

/// The folds as a Markdown table.
pub fn table(folds: &[Fold]) -> String {
    let mut s = String::from(
        "| left out | flows scored | classes | labels unseen in training | fast-only acc / macro-F1 | slow-only acc / macro-F1 | cascade acc / macro-F1 | cascade escalated |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for f in folds {
        let _ = writeln!(s, "{}", row(f));
    }
    s
}

/// Writes `loso.json` and `loso.md` into `dir`.
pub fn write(dir: &Path, command: &str, folds: &[Fold]) -> anyhow::Result<()> {
    std::fs::write(
        dir.join("loso.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "command": command,
            "folds": folds,
        }))? + "\n",
    )?;
    std::fs::write(
        dir.join("loso.md"),
        format!(
            "# Leave-one-source-out: {}\n\nProduced by `{command}`. Each row: the recipe in `metrics.json` trained on every other source, \
             calibrated on the held-out 25% of their captures, scored on the left-out source (labels the models have no class for count \
             as `other`).\n\n{}",
            dir.file_name().and_then(|n| n.to_str()).unwrap_or(""),
            table(folds)
        ),
    )?;
    Ok(())
}
