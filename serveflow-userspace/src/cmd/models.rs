//! `serveflow models`: shows a models directory (the bundled one of a task when none is
//! named) and, given captures, runs both stages on every flow's first packets, so an operator
//! can check that a models directory loads and classifies before serving with it.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use crate::{
    extract::extract,
    features::StagePair,
    flow::FlowConfig,
    model::{
        bundled,
        dir::{uncertainty, ModelDir},
    },
    services::ServiceMap,
};

/// Options of `serveflow models`.
#[derive(Clone, Debug)]
pub struct ModelsOptions {
    /// Task whose bundled models to use when `models` is absent.
    pub task: String,
    /// Models directory.
    pub models: Option<PathBuf>,
    /// Captures to classify.
    pub captures: Vec<PathBuf>,
}

/// Per-class tallies of a classification pass.
#[derive(Debug, Default)]
pub struct Tally {
    /// Flows classified.
    pub flows: u64,
    /// Flows per fast-model class.
    pub fast: BTreeMap<String, u64>,
    /// Flows per slow-model class.
    pub slow: BTreeMap<String, u64>,
    /// Flows where both stages agree.
    pub agree: u64,
    /// Flows the routing thresholds would escalate to the slow stage.
    pub escalated: u64,
}

fn argmax(p: &[f64]) -> usize {
    p.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// Runs both stages of `models` on every TCP/UDP flow of `captures`.
pub fn classify(models: &ModelDir, captures: &[PathBuf]) -> anyhow::Result<Tally> {
    let (mut fast_rows, mut slow_rows) = (Vec::new(), Vec::new());
    extract::<StagePair>(
        captures,
        FlowConfig::default(),
        (models.fast.features, models.slow.features),
        &mut ServiceMap::default(),
        None,
        |flow, _, _| {
            let mut f = Vec::new();
            flow.state.fast.values(&mut f);
            fast_rows.push(f.into_iter().map(f64::from).collect::<Vec<f64>>());
            flow.state.slow.values(&mut slow_rows);
        },
    )?;
    let classes = &models.manifest.classes;
    let mut tally = Tally::default();
    let mut state = models.slow.model.state()?;
    let mut probs = Vec::new();
    let mut fast_p = vec![0.0; classes.len()];
    let width = models.slow.model.features();
    for (chunk, slow_chunk) in fast_rows.chunks(32).zip(slow_rows.chunks(32 * width)) {
        models
            .slow
            .model
            .predict_batch(&mut state, slow_chunk, &mut probs)?;
        for (x, slow_p) in chunk.iter().zip(probs.chunks(classes.len())) {
            models.fast.model.predict(x, &mut fast_p);
            let f = argmax(&fast_p);
            let s = argmax(&slow_p.iter().map(|v| f64::from(*v)).collect::<Vec<_>>());
            tally.flows += 1;
            *tally.fast.entry(classes[f].clone()).or_default() += 1;
            *tally.slow.entry(classes[s].clone()).or_default() += 1;
            tally.agree += u64::from(f == s);
            let u = uncertainty(models.manifest.routing.uncertainty, &fast_p);
            tally.escalated += u64::from(u > models.thresholds[f]);
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
    writeln!(
        out,
        "fast:     {} | {} x{} packets | {} trees over {} features",
        m.fast.model.display(),
        m.fast.features,
        m.fast.packets,
        models.fast.model.num_trees(),
        models.fast.model.num_features()
    )?;
    writeln!(
        out,
        "slow:     {} | {} x{} packets | {} inputs",
        m.slow.model.display(),
        m.slow.features,
        m.slow.packets,
        models.slow.model.features()
    )?;
    writeln!(
        out,
        "routing:  escalate when {:?} uncertainty > {} ({} per-class thresholds)",
        m.routing.uncertainty,
        m.routing.threshold,
        m.routing.per_class.len()
    )
}

/// Runs `serveflow models`.
pub fn run(opts: &ModelsOptions) -> anyhow::Result<()> {
    let dir = bundled::resolve(opts.models.as_deref(), &opts.task)?;
    let models = ModelDir::load(&dir)?;
    let mut out = std::io::stdout().lock();
    describe(&models, &mut out)?;
    if opts.captures.is_empty() {
        return Ok(());
    }
    let tally = classify(&models, &opts.captures)
        .with_context(|| format!("classifying {}", show(&opts.captures)))?;
    let pct = |n: u64| 100.0 * n as f64 / tally.flows.max(1) as f64;
    writeln!(
        out,
        "flows:    {} | stages agree on {:.1}% | {:.1}% would be escalated",
        tally.flows,
        pct(tally.agree),
        pct(tally.escalated)
    )?;
    writeln!(out, "{:<24} {:>10} {:>10}", "class", "fast", "slow")?;
    for class in &models.manifest.classes {
        let n = |m: &BTreeMap<String, u64>| m.get(class).copied().unwrap_or(0);
        writeln!(
            out,
            "{class:<24} {:>10} {:>10}",
            n(&tally.fast),
            n(&tally.slow)
        )?;
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
