//! `serveflow models`: shows a models directory (the bundled one of a task when none is
//! named) and, given captures, runs every stage on every flow's first packets (each through
//! its serving wait) and routes them as serving would, so an operator can check that a models
//! directory loads and classifies before serving with it.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
};

use std::process::ExitCode;

use anyhow::Context as _;

use serveflow::{
    config::wait_ns,
    extract::extract,
    flow::FlowConfig,
    model::{bundled, dir::ModelDir},
    pipeline::cascade::{Cascade, ServeState},
    router::argmax,
    services::ServiceMap,
};

use super::args::{self, ConfigArgs, ModelArgs, WaitArgs};

/// `serveflow models`: show a models directory (the bundled one when none is named); with
/// captures, run every stage on every flow and tally their classes.
#[derive(clap::Args, Debug)]
pub struct ModelsArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub models: ModelArgs,
    #[command(flatten)]
    pub waits: WaitArgs,
    /// Only check this models directory (manifest, model files, a self-test inference
    /// per stage): exit 0 when it can serve, 1 when not.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["captures", "models"])]
    pub check: Option<PathBuf>,
    /// With --check: print the result as JSON.
    #[arg(long, requires = "check")]
    pub json: bool,
    /// Capture files to classify.
    pub captures: Vec<PathBuf>,
}

impl ModelsArgs {
    /// Runs `serveflow models`: exit 1 when `--check` finds the directory cannot serve.
    pub fn run(&self) -> anyhow::Result<ExitCode> {
        if let Some(dir) = &self.check {
            return Ok(if check(dir, self.json)? {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        let mut c = self.config.load()?;
        self.models.apply(&mut c);
        self.waits.apply(&mut c);
        let c = args::checked(c)?;
        run(&ModelsOptions {
            task: c.pipeline.task,
            models: c.pipeline.models,
            captures: self.captures.clone(),
            waits_ms: (c.pipeline.fast_wait_ms, c.pipeline.max_wait_ms),
        })?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Options of `serveflow models`.
#[derive(Clone, Debug)]
pub struct ModelsOptions {
    /// Task whose bundled models to use when `models` is absent.
    pub task: serveflow::labels::Task,
    /// Models directory.
    pub models: Option<PathBuf>,
    /// Captures to classify.
    pub captures: Vec<PathBuf>,
    /// The serving waits the stages see flows through (ms): inline, slow.
    pub waits_ms: (f64, f64),
}

/// Per-class tallies of a classification pass.
#[derive(Debug, Default)]
pub struct Tally {
    /// Flows classified.
    pub flows: u64,
    /// Stage names, inline ones first, `slow` last.
    pub stages: Vec<String>,
    /// Flows per class, per stage (every stage runs on every flow).
    pub by_stage: Vec<BTreeMap<String, u64>>,
    /// Flows the routing leaves with each inline stage.
    pub decided_by: Vec<u64>,
    /// Flows the routing escalates to the slow stage.
    pub escalated: u64,
    /// Flows where the fast stage and the slow stage agree.
    pub agree: u64,
}

/// Runs every stage of `models` on every TCP/UDP flow of `captures`, each stage seeing the
/// flow through its serving wait (`waits_ms`: inline, slow).
pub fn classify(
    models: ModelDir,
    captures: &[PathBuf],
    waits_ms: (f64, f64),
) -> anyhow::Result<Tally> {
    let cascade = Cascade::from_models(models);
    let k = cascade.classes.len();
    let specs = cascade.specs_within(wait_ns(waits_ms.0), wait_ns(waits_ms.1));
    let stages = cascade.inline.len();
    let mut tally = Tally {
        stages: cascade
            .inline
            .iter()
            .map(|s| s.name.to_owned())
            .chain(["slow".to_owned()])
            .collect(),
        by_stage: vec![BTreeMap::new(); stages + 1],
        decided_by: vec![0; stages],
        ..Tally::default()
    };
    let mut inline: Vec<(Vec<usize>, Option<usize>)> = Vec::new();
    let mut slow_rows = Vec::new();
    let mut row = Vec::new();
    let mut probs = vec![0.0; k];
    extract::<ServeState>(
        captures,
        FlowConfig::default(),
        specs,
        &mut ServiceMap::default(),
        None,
        |flow, _, _| {
            let mut classes = Vec::with_capacity(stages);
            let mut decided = None;
            for (i, stage) in cascade.inline.iter().enumerate() {
                row.clear();
                flow.state.features[i].values(&mut row);
                stage.probabilities(&row, &mut probs);
                let route = stage.router.route(&probs);
                classes.push(route.class);
                if decided.is_none() && !route.escalate {
                    decided = Some(i);
                }
            }
            if let Some(f) = flow.state.features.last() {
                let before = slow_rows.len();
                f.values(&mut slow_rows);
                slow_rows.resize(before + cascade.slow.features(), -1.0);
            }
            inline.push((classes, decided));
        },
    )?;
    let mut state = cascade.slow.state()?;
    let width = cascade.slow.features().max(1);
    let (mut out, mut p64) = (Vec::new(), vec![0.0; k]);
    let name = |c: usize| cascade.classes.get(c).map_or("?".into(), |n| n.to_string());
    for (chunk, rows) in inline.chunks(32).zip(slow_rows.chunks(32 * width)) {
        cascade.slow.predict_batch(&mut state, rows, &mut out)?;
        for ((classes, decided), p) in chunk.iter().zip(out.chunks(k)) {
            for (d, s) in p64.iter_mut().zip(p) {
                *d = f64::from(*s);
            }
            let slow = argmax(&p64).0;
            tally.flows += 1;
            for (i, c) in classes.iter().enumerate() {
                *tally.by_stage[i].entry(name(*c)).or_default() += 1;
            }
            *tally.by_stage[stages].entry(name(slow)).or_default() += 1;
            tally.agree += u64::from(classes.last() == Some(&slow));
            match decided {
                Some(i) => tally.decided_by[*i] += 1,
                None => tally.escalated += 1,
            }
        }
    }
    Ok(tally)
}

fn describe(models: &ModelDir, out: &mut impl std::io::Write) -> std::io::Result<()> {
    let m = &models.manifest;
    writeln!(out, "models:   {}", models.dir.display())?;
    writeln!(
        out,
        "task:     {} ({} classes: {})",
        m.task,
        m.classes.len(),
        m.classes.join(", ")
    )?;
    let routing = |r: &serveflow::model::dir::RoutingConfig| {
        format!(
            "escalate when {} uncertainty > {} ({} per-class thresholds), temperature {:.3}",
            serde_json::to_value(r.uncertainty)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            r.threshold,
            r.per_class.len(),
            r.temperature
        )
    };
    for (e, loaded) in m.early.iter().zip(&models.early) {
        writeln!(
            out,
            "{:<9} {} | {} x{} packets | {} trees over {} features | {}",
            format!("{}:", e.name),
            e.model.display(),
            e.features,
            e.packets,
            loaded.stage.model.num_trees(),
            loaded.stage.model.num_features(),
            routing(&e.routing)
        )?;
    }
    writeln!(
        out,
        "fast:     {} | {} x{} packets | {} trees over {} features | {}",
        m.fast.model.display(),
        m.fast.features,
        m.fast.packets,
        models.fast.model.num_trees(),
        models.fast.model.num_features(),
        routing(&m.routing)
    )?;
    writeln!(
        out,
        "slow:     {} | {} x{} packets | {} inputs",
        m.slow.model.display(),
        m.slow.features,
        m.slow.packets,
        models.slow.model.features()
    )
}

/// `serveflow models --check DIR`: loads `dir` with every check serving makes (manifest,
/// model files, self-test inference per stage) and reports; true when it can serve.
pub fn check(dir: &Path, json: bool) -> anyhow::Result<bool> {
    let result = ModelDir::load(dir);
    let mut out = std::io::stdout().lock();
    if json {
        let value = match &result {
            Ok(m) => serde_json::json!({
                "dir": dir.display().to_string(),
                "ok": true,
                "task": m.manifest.task,
                "classes": m.manifest.classes.len(),
                "stages": m.early.iter().map(|e| e.name.clone())
                    .chain(["fast".to_owned(), "slow".to_owned()]).collect::<Vec<_>>(),
            }),
            Err(e) => serde_json::json!({
                "dir": dir.display().to_string(),
                "ok": false,
                "file": e.path,
                "field": e.field,
                "problem": e.problem,
            }),
        };
        writeln!(out, "{value}")?;
    } else {
        match &result {
            Ok(m) => writeln!(
                out,
                "ok: {}: task {}, {} classes, {} stages; every stage passed its self-test",
                dir.display(),
                m.manifest.task,
                m.manifest.classes.len(),
                m.early.len() + 2
            )?,
            Err(e) => writeln!(out, "not servable: {e}")?,
        }
    }
    Ok(result.is_ok())
}

/// Runs `serveflow models`.
pub fn run(opts: &ModelsOptions) -> anyhow::Result<()> {
    let dir = bundled::resolve(opts.models.as_deref(), opts.task)?;
    let models = ModelDir::load(&dir)?;
    let mut out = std::io::stdout().lock();
    describe(&models, &mut out)?;
    if opts.captures.is_empty() {
        return Ok(());
    }
    let classes = models.manifest.classes.clone();
    let tally = classify(models, &opts.captures, opts.waits_ms)
        .with_context(|| format!("classifying {}", show(&opts.captures)))?;
    let pct = |n: u64| 100.0 * n as f64 / tally.flows.max(1) as f64;
    let decided: Vec<String> = tally
        .stages
        .iter()
        .zip(&tally.decided_by)
        .map(|(s, n)| format!("{s} {:.1}%", pct(*n)))
        .collect();
    writeln!(
        out,
        "flows:    {} | routed: {}, escalated {:.1}% | fast and slow agree on {:.1}%",
        tally.flows,
        decided.join(", "),
        pct(tally.escalated),
        pct(tally.agree)
    )?;
    write!(out, "{:<24}", "class")?;
    for s in &tally.stages {
        write!(out, " {s:>10}")?;
    }
    writeln!(out)?;
    for class in &classes {
        write!(out, "{class:<24}")?;
        for m in &tally.by_stage {
            write!(out, " {:>10}", m.get(class).copied().unwrap_or(0))?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn show(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| Path::display(p).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
