//! `serveflow calibrate`: picks the routing thresholds of a models directory on labeled
//! validation captures for a stated target and writes them into its manifest.

use std::{io::Write as _, path::PathBuf};

use anyhow::Context as _;

use crate::{
    calibrate::{answers, calibrate, Calibration, Target},
    cmd::replay::capture_files,
    labels::{FlowLabels, Split, Task},
    model::dir::ModelDir,
    pipeline::cascade::Cascade,
};

/// Options of `serveflow calibrate`.
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    /// Models directory to calibrate (its manifest is rewritten).
    pub models: PathBuf,
    /// Captures or folders.
    pub inputs: Vec<PathBuf>,
    /// nfstream per-flow label CSV.
    pub labels: PathBuf,
    /// Which files of the split to use.
    pub split: Split,
    /// The target.
    pub target: Target,
    /// Print only; leave the manifest as it is.
    pub dry_run: bool,
}

/// Runs `serveflow calibrate`.
pub fn run(opts: &CalibrateOptions) -> anyhow::Result<()> {
    let models = ModelDir::load(&opts.models)?;
    let task = Task::from_name(&models.manifest.task)
        .with_context(|| format!("task {:?} has no label join", models.manifest.task))?;
    let labels = FlowLabels::load(&opts.labels, task)?;
    let mut files = capture_files(&opts.inputs)?;
    files.retain(|f| labels.path_of(f).is_some_and(|p| opts.split.contains(&p)));
    if files.is_empty() {
        anyhow::bail!("no input is a labeled capture of split {:?}", opts.split);
    }
    let dir = models.dir.clone();
    let mut manifest = models.manifest.clone();
    let cascade = Cascade::from_models(models);
    let k = cascade.classes.len();
    let stages = cascade.inline.len();
    let names: Vec<&str> = cascade.inline.iter().map(|s| s.name).collect();
    let flows = answers(&cascade, &labels, &files)?;
    if flows.is_empty() {
        anyhow::bail!("no labeled flow in the {} captures", files.len());
    }
    let c = calibrate(&flows, stages, k, opts.target);
    let out = &mut std::io::stdout().lock();
    print(out, &c, &names, files.len())?;
    if opts.dry_run {
        return Ok(());
    }
    // Per-class thresholds (-1: the class always escalates); the global one escalates too.
    let classes = manifest.classes.clone();
    let per_class = |t: &[f64]| -> std::collections::BTreeMap<String, f64> {
        classes
            .iter()
            .zip(t)
            .map(|(c, t)| (c.clone(), t.clamp(-1.0, 1.0)))
            .collect()
    };
    let picked = &c.picked.thresholds;
    let early: Vec<_> = (0..manifest.early.len())
        .map(|i| per_class(&picked[i]))
        .collect();
    for (e, pc) in manifest.early.iter_mut().zip(early) {
        e.routing.threshold = -1.0;
        e.routing.per_class = pc;
    }
    manifest.routing.threshold = -1.0;
    manifest.routing.per_class = per_class(&picked[stages - 1]);
    let text = toml::to_string(&manifest)?;
    let path = dir.join(crate::model::dir::MANIFEST);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    // Reload: the written manifest must pass the same checks as any other.
    ModelDir::load(&dir)?;
    let record = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "split": opts.split,
        "captures": files.len(),
        "stages": names,
        "calibration": c,
    });
    let json = dir.join("calibration.json");
    std::fs::write(&json, serde_json::to_string_pretty(&record)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    writeln!(out, "written:   {} and {}", path.display(), json.display())?;
    Ok(())
}

fn print(
    out: &mut impl std::io::Write,
    c: &Calibration,
    names: &[&str],
    files: usize,
) -> std::io::Result<()> {
    writeln!(
        out,
        "flows:     {} labeled flows from {files} captures",
        c.flows
    )?;
    for (n, f1) in names.iter().zip(&c.stage_f1) {
        writeln!(out, "{n:<10} alone: macro-F1 {f1:.4}")?;
    }
    writeln!(out, "slow       alone: macro-F1 {:.4}", c.slow_f1)?;
    let p = &c.picked;
    writeln!(
        out,
        "picked:    per-class thresholds -> macro-F1 {:.4}, accuracy {:.4}, decided inline {:?}, escalated {:.1}%",
        p.macro_f1,
        p.accuracy,
        p.decided_by
            .iter()
            .map(|d| format!("{:.1}%", d * 100.0))
            .collect::<Vec<_>>(),
        p.escalated * 100.0
    )
}
