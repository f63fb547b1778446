//! `serveflow calibrate`: fits the inline stages' temperatures and picks their routing
//! thresholds on labeled captures of one split (by default the calibration half of the
//! held-out captures), checks the result on another (by default the test half), and writes a
//! calibrated models directory: a new one (`--out`), or the same one with the previous
//! manifest kept beside it (`--in-place`).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
};

use anyhow::Context as _;
use serde::Serialize;

use serveflow::{
    calibrate::{
        answers, calibrate, evaluate, routed, Answers, Calibration, Outcome, Target, MIN_SUPPORT,
    },
    capture::inputs,
    config::wait_ns,
    labels::{FlowLabels, Split, Task},
    limits::{self, Choice as _},
    model::dir::{ModelDir, MANIFEST},
    pipeline::cascade::Cascade,
    ticker::Ticker,
};

use super::args::{self, choice, ConfigArgs, WaitArgs};

/// `serveflow calibrate`: pick routing thresholds on labeled captures for a target and write
/// them into a models directory's manifest.
#[derive(clap::Args, Debug)]
pub struct CalibrateArgs {
    /// Models directory to calibrate.
    #[arg(long)]
    pub models: PathBuf,
    /// nfstream per-flow label CSV, or a labels folder (every *nfstream_flows.csv in it).
    #[arg(long)]
    pub labels: PathBuf,
    /// Which captures of the bundled split to fit on.
    #[arg(long, value_parser = choice::<Split>(), default_value = "calibration")]
    pub split: Split,
    /// Which captures to check the result on, side by side.
    #[arg(long, value_parser = choice::<Split>(), default_value = "test")]
    pub check: Split,
    /// Target: cascade macro-F1 and accuracy each at most this far below the slow stage
    /// alone, fewest escalations.
    #[arg(long, default_value_t = 0.005, conflicts_with = "max_escalated", value_parser = limits::real(0.0..=1.0, "a fraction"))]
    pub max_drop: f64,
    /// Hold only macro-F1 to --max-drop, not accuracy.
    #[arg(long)]
    pub f1_only: bool,
    /// Target instead: at most this percentage of flows escalated, best macro-F1.
    #[arg(long, value_parser = limits::real(0.0..=100.0, "a percentage"))]
    pub max_escalated: Option<f64>,
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub waits: WaitArgs,
    /// Write the calibrated models into this new directory.
    #[arg(long, conflicts_with_all = ["in_place", "dry_run"])]
    pub out: Option<PathBuf>,
    /// Rewrite the models directory's manifest, keeping the previous one as
    /// serveflow-model.toml.prev.
    #[arg(long, conflicts_with = "dry_run")]
    pub in_place: bool,
    /// Print the result only.
    #[arg(long)]
    pub dry_run: bool,
    /// Skip inputs that cannot be read (listed in the result) instead of stopping.
    #[arg(long)]
    pub keep_going: bool,
    /// Print the result as one JSON document on stdout (what `calibration.json` holds, and
    /// the files written) instead of the tables.
    #[arg(long)]
    pub json: bool,
    /// Capture files or folders.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

impl CalibrateArgs {
    /// Runs `serveflow calibrate` with the file's waits under the flags.
    pub fn run(&self) -> anyhow::Result<()> {
        let output = match (&self.out, self.in_place, self.dry_run) {
            (Some(dir), _, _) => Output::NewDir(dir.clone()),
            (None, true, _) => Output::InPlace,
            (None, false, true) => Output::DryRun,
            (None, false, false) => anyhow::bail!(
                "say where the calibrated models go: --out DIR (a new directory), --in-place, or --dry-run"
            ),
        };
        let mut c = self.config.load()?;
        self.waits.apply(&mut c);
        if self.keep_going {
            c.capture.keep_going = true;
        }
        let c = args::checked(c)?;
        run(&CalibrateOptions {
            models: self.models.clone(),
            inputs: self.inputs.clone(),
            labels: self.labels.clone(),
            split: self.split,
            check: Some(self.check),
            waits_ms: (c.pipeline.fast_wait_ms, c.pipeline.max_wait_ms),
            output,
            keep_going: c.capture.keep_going,
            json: self.json,
            target: match self.max_escalated {
                Some(pct) => Target::MaxEscalated(pct / 100.0),
                None if self.f1_only => Target::MaxF1Drop(self.max_drop),
                None => Target::MaxDrop(self.max_drop),
            },
        })
    }
}

/// Fewest labeled flows a calibration may be fitted on: below it, thresholds fit noise.
pub const MIN_FLOWS: usize = 200;

/// Where the calibrated models go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A new models directory (the models are copied, the manifest rewritten).
    NewDir(PathBuf),
    /// The same directory; the previous manifest is kept as `serveflow-model.toml.prev`.
    InPlace,
    /// Print only.
    DryRun,
}

/// Options of `serveflow calibrate`.
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    /// Models directory to calibrate.
    pub models: PathBuf,
    /// Captures or folders.
    pub inputs: Vec<PathBuf>,
    /// nfstream per-flow label CSV, or a labels folder.
    pub labels: PathBuf,
    /// Which files of the split to fit on.
    pub split: Split,
    /// Which files to check the result on (none: no check).
    pub check: Option<Split>,
    /// The target.
    pub target: Target,
    /// The serving waits the stages' features are seen through (ms): inline, slow.
    pub waits_ms: (f64, f64),
    /// Where the result goes.
    pub output: Output,
    /// Skip unreadable inputs (listed in the result) instead of stopping.
    pub keep_going: bool,
    /// The result as JSON on stdout instead of the tables.
    pub json: bool,
}

/// One split's view of the calibrated cascade.
#[derive(Debug, Serialize)]
struct SplitResult {
    split: Split,
    captures: usize,
    flows: usize,
    unreadable: Vec<String>,
    /// Per inline stage: expected calibration error before and after temperature scaling.
    ece_before: Vec<f64>,
    ece_after: Vec<f64>,
    slow_accuracy: f64,
    slow_macro_f1: f64,
    cascade: Outcome,
}

/// [`answers`] with a progress line: captures read of all.
fn read_answers(
    cascade: &Cascade,
    labels: &FlowLabels,
    files: &[PathBuf],
    waits: (u64, u64),
) -> anyhow::Result<Answers> {
    let done = Arc::new(AtomicU64::new(0));
    let total = files.len();
    let ticker = {
        let done = done.clone();
        Ticker::start("calibrate", move || {
            format!("{} of {total} captures read", done.load(Relaxed))
        })
    };
    let a = answers(cascade, labels, files, waits, &done);
    drop(ticker);
    a
}

/// Runs `serveflow calibrate`.
pub fn run(opts: &CalibrateOptions) -> anyhow::Result<()> {
    let models = ModelDir::load(&opts.models)?;
    let target_dir = match &opts.output {
        Output::NewDir(dir) => {
            if dir.exists() {
                anyhow::bail!(
                    "--out {}: already exists; give a new directory (or --in-place)",
                    dir.display()
                );
            }
            Some(dir.clone())
        }
        Output::InPlace => Some(models.dir.clone()),
        Output::DryRun => None,
    };
    let task = Task::from_name(&models.manifest.task)
        .with_context(|| format!("task {:?} has no label join", models.manifest.task))?;
    let labels = FlowLabels::load(&opts.labels, task)?;
    let mut found = inputs::find(&opts.inputs);
    let wanted = |f: &PathBuf| {
        labels
            .path_of(f)
            .is_some_and(|p| opts.split.contains(&p) || opts.check.is_some_and(|c| c.contains(&p)))
    };
    found.files.retain(|f| wanted(f));
    if found.files.is_empty() {
        anyhow::bail!(
            "no input is a labeled capture of split {}",
            opts.split.name()
        );
    }
    let inputs = found.open(opts.keep_going)?;
    for s in &inputs.skipped {
        log::warn!("skipping unreadable input: {s}");
    }
    let all = &inputs.files;
    let of = |split: Split| -> Vec<PathBuf> {
        all.iter()
            .filter(|f| labels.path_of(f).is_some_and(|p| split.contains(&p)))
            .cloned()
            .collect()
    };
    let fit_files = of(opts.split);
    if fit_files.is_empty() {
        anyhow::bail!(
            "no input is a labeled capture of split {}",
            opts.split.name()
        );
    }
    let source_dir = models.dir.clone();
    let mut manifest = models.manifest.clone();
    let cascade = Cascade::from_models(models);
    let k = cascade.classes.len();
    let stages = cascade.inline.len();
    let names: Vec<&str> = cascade.inline.iter().map(|s| s.name).collect();
    let waits = (wait_ns(opts.waits_ms.0), wait_ns(opts.waits_ms.1));
    let fit = read_answers(&cascade, &labels, &fit_files, waits)?;
    if fit.len() < MIN_FLOWS {
        anyhow::bail!(
            "split {} has {} labeled flows in {} captures: at least {MIN_FLOWS} are needed for thresholds that hold on other traffic",
            opts.split.name(),
            fit.len(),
            fit.captures
        );
    }
    let temperatures = fit.fit_temperatures();
    let c = calibrate(
        &routed(&cascade, &fit, &temperatures),
        stages,
        k,
        opts.target,
    );
    let thin: Vec<String> = cascade
        .classes
        .iter()
        .zip(fit.support())
        .filter(|(_, n)| (*n as f64) < MIN_SUPPORT)
        .map(|(c, n)| format!("{c} ({n})"))
        .collect();
    let mut results = vec![split_result(
        &cascade,
        opts.split,
        &fit,
        &temperatures,
        &c.picked.thresholds,
    )];
    if let Some(check) = opts.check.filter(|c| *c != opts.split) {
        let files = of(check);
        if !files.is_empty() {
            let a = read_answers(&cascade, &labels, &files, waits)?;
            if !a.is_empty() {
                results.push(split_result(
                    &cascade,
                    check,
                    &a,
                    &temperatures,
                    &c.picked.thresholds,
                ));
            }
        }
    }
    let mut record = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "split": opts.split,
        "captures": fit.captures,
        "stages": names,
        "waits_ms": { "inline": opts.waits_ms.0, "slow": opts.waits_ms.1 },
        "temperatures": temperatures,
        "classes_below_support_floor": thin,
        "skipped_inputs": inputs.skipped,
        "calibration": c,
        "splits": results,
    });
    let out = &mut std::io::stdout().lock();
    if !opts.json {
        print(out, &c, &names, &temperatures, &results, &thin)?;
        for s in &inputs.skipped {
            writeln!(out, "skipped input: {s}")?;
        }
    }
    let Some(dir) = target_dir else {
        if opts.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&record)?)?;
        }
        return Ok(());
    };
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
    for (i, e) in manifest.early.iter_mut().enumerate() {
        e.routing.threshold = -1.0;
        e.routing.per_class = per_class(&picked[i]);
        e.routing.temperature = temperatures[i];
    }
    manifest.routing.threshold = -1.0;
    manifest.routing.per_class = per_class(&picked[stages - 1]);
    manifest.routing.temperature = temperatures[stages - 1];
    if opts.output != Output::InPlace {
        copy_dir(&source_dir, &dir)?;
    }
    let path = dir.join(MANIFEST);
    if opts.output == Output::InPlace {
        let prev = dir.join(format!("{MANIFEST}.prev"));
        std::fs::copy(&path, &prev)
            .with_context(|| format!("keeping the previous manifest as {}", prev.display()))?;
    }
    let text = toml::to_string(&manifest)?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    // Reload: the written manifest must pass the same checks as any other.
    ModelDir::load(&dir)?;
    let json = dir.join("calibration.json");
    std::fs::write(&json, serde_json::to_string_pretty(&record)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    if opts.json {
        record["written"] = serde_json::json!([path, json]);
        writeln!(out, "{}", serde_json::to_string_pretty(&record)?)?;
    } else {
        writeln!(out, "written:   {} and {}", path.display(), json.display())?;
    }
    Ok(())
}

fn split_result(
    cascade: &Cascade,
    split: Split,
    a: &Answers,
    temperatures: &[f64],
    thresholds: &[Vec<f64>],
) -> SplitResult {
    let k = a.k;
    let routed_flows = routed(cascade, a, temperatures);
    let slow = evaluate(&routed_flows, &vec![vec![-1.0; k]; thresholds.len()], k);
    SplitResult {
        split,
        captures: a.captures,
        flows: a.len(),
        unreadable: a.unreadable.clone(),
        ece_before: a.calibration_errors(None),
        ece_after: a.calibration_errors(Some(temperatures)),
        slow_accuracy: slow.accuracy,
        slow_macro_f1: slow.macro_f1,
        cascade: evaluate(&routed_flows, thresholds, k),
    }
}

/// Copies the files of models directory `from` into a new directory `to`.
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        if let (true, Some(name)) = (path.is_file(), path.file_name()) {
            std::fs::copy(&path, to.join(name))
                .with_context(|| format!("copying {} to {}", path.display(), to.display()))?;
        }
    }
    Ok(())
}

fn print(
    out: &mut impl std::io::Write,
    c: &Calibration,
    names: &[&str],
    temperatures: &[f64],
    results: &[SplitResult],
    thin: &[String],
) -> std::io::Result<()> {
    writeln!(out, "target:    {}", c.target)?;
    for ((n, f1), t) in names.iter().zip(&c.stage_f1).zip(temperatures) {
        writeln!(out, "{n:<10} alone: macro-F1 {f1:.4}; temperature {t:.3}")?;
    }
    writeln!(out, "slow       alone: macro-F1 {:.4}", c.slow_f1)?;
    if !thin.is_empty() {
        writeln!(
            out,
            "warning:   {} classes have fewer than {MIN_SUPPORT} flows to calibrate on (their thresholds stay where they escalate): {}",
            thin.len(),
            thin.join(", ")
        )?;
    }
    let header: Vec<String> = results
        .iter()
        .map(|r| format!("{} ({} flows)", r.split.name(), r.flows))
        .collect();
    writeln!(out)?;
    write!(out, "{:<28}", "")?;
    for h in &header {
        write!(out, "{h:>26}")?;
    }
    writeln!(out)?;
    let row = |out: &mut dyn std::io::Write, label: &str, f: &dyn Fn(&SplitResult) -> String| {
        write!(out, "{label:<28}")?;
        for r in results {
            write!(out, "{:>26}", f(r))?;
        }
        writeln!(out)
    };
    row(out, "cascade accuracy", &|r| {
        format!("{:.4}", r.cascade.accuracy)
    })?;
    row(out, "cascade macro-F1", &|r| {
        format!("{:.4}", r.cascade.macro_f1)
    })?;
    row(out, "slow-only accuracy", &|r| {
        format!("{:.4}", r.slow_accuracy)
    })?;
    row(out, "slow-only macro-F1", &|r| {
        format!("{:.4}", r.slow_macro_f1)
    })?;
    row(out, "escalated", &|r| {
        format!("{:.1}%", r.cascade.escalated * 100.0)
    })?;
    for (i, n) in names.iter().enumerate() {
        row(out, &format!("decided by {n}"), &|r| {
            format!(
                "{:.1}%",
                r.cascade.decided_by.get(i).copied().unwrap_or(0.0) * 100.0
            )
        })?;
        row(out, &format!("{n} calibration error"), &|r| {
            format!(
                "{:.3} -> {:.3}",
                r.ece_before.get(i).copied().unwrap_or(0.0),
                r.ece_after.get(i).copied().unwrap_or(0.0)
            )
        })?;
    }
    Ok(())
}
