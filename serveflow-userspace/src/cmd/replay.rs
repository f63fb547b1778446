//! `serveflow replay`: the serving pipeline over capture files. Verdicts as JSON lines, a
//! summary at exit, and with `--report` the HDR latency report.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use serde_json::json;

use crate::{
    capture::{inputs, merge::MergedCaptures},
    labels::{FlowLabels, Split, Task},
    model::{bundled, dir::ModelDir},
    pipeline::{self, cascade::Cascade, output::Truth, Feed, Input, PipelineConfig, RunResult},
    report::files,
    verdict::VerdictOutput,
};

/// Options of `serveflow replay`.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Capture files or folders (searched for .pcap, .pcapng, .cap).
    pub inputs: Vec<PathBuf>,
    /// Models directory (default: the bundled models of `task`).
    pub models: Option<PathBuf>,
    /// Task of the bundled models.
    pub task: String,
    /// Pipeline settings.
    pub pipeline: PipelineConfig,
    /// Verdict lines: a file, `-` for stdout, none to only count them.
    pub out: Option<PathBuf>,
    /// Report directory.
    pub report: Option<PathBuf>,
    /// Label file (nfstream's per-flow CSV) to score the verdicts against.
    pub labels: Option<PathBuf>,
    /// Which files of the bundled models' split to replay (other than `all` needs labels).
    pub split: Split,
    /// Cascade or one stage alone.
    pub mode: pipeline::Mode,
    /// Global routing threshold overriding the models directory's.
    pub threshold: Option<f64>,
    /// Skip unreadable inputs (listed in the summary) instead of stopping.
    pub keep_going: bool,
}

/// Loads the models, the labels and the inputs, runs the pipeline, writes the report.
pub fn run(opts: &ReplayOptions) -> anyhow::Result<()> {
    if let Some(report) = &opts.report {
        files::prepare(report).context("--report")?;
    }
    let dir = bundled::resolve(opts.models.as_deref(), &opts.task)?;
    let models = ModelDir::load(&dir)?;
    let manifest = models.manifest.clone();
    let mut found = inputs::find(&opts.inputs);
    let labels = match &opts.labels {
        Some(path) => {
            let task = Task::from_name(&manifest.task).with_context(|| {
                format!(
                    "{}: task {:?} has no label join (service or device)",
                    dir.display(),
                    manifest.task
                )
            })?;
            Some(FlowLabels::load(path, task)?)
        }
        None => None,
    };
    if opts.split != Split::All {
        let labels = labels
            .as_ref()
            .context("--split picks files by their path in the label file: give --labels")?;
        found
            .files
            .retain(|f| labels.path_of(f).is_some_and(|p| opts.split.contains(&p)));
        if found.files.is_empty() {
            anyhow::bail!(
                "--split {}: none of the inputs is in that split of the label file",
                opts.split.name()
            );
        }
    }
    let inputs = found.open(opts.keep_going)?;
    for u in &inputs.skipped {
        log::warn!("skipping unreadable input: {u}");
    }
    let files = inputs.files.clone();
    let unreadable = inputs.skipped_lines();
    let truth = labels.map(|l| {
        let t = Truth::new(l, &files, manifest.classes.clone());
        if t.unmatched_inputs() > 0 {
            log::warn!(
                "{} of {} captures have no rows in the label file; their flows are not scored",
                t.unmatched_inputs(),
                files.len()
            );
        }
        Arc::new(t)
    });
    let verdicts = VerdictOutput::to_path(opts.out.as_deref()).with_context(|| {
        format!(
            "creating {}",
            opts.out.as_deref().unwrap_or(Path::new("-")).display()
        )
    })?;
    let mut cascade = Cascade::from_models(models);
    if let Some(t) = opts.threshold {
        cascade.set_threshold(t);
    }
    opts.mode.apply(&mut cascade);
    let cascade = Arc::new(cascade);
    let mut captures = MergedCaptures::open(&files)?;
    let result = pipeline::run(
        cascade,
        &opts.pipeline,
        Feed::Shared(captures.by_ref().map(Input::Packet)),
        &verdicts,
        truth,
        None,
    );
    let file_reports = captures.reports();
    let early: Vec<String> = file_reports
        .iter()
        .filter_map(|r| r.early_end_line())
        .collect();
    let skipped_blocks: Vec<String> = file_reports
        .iter()
        .filter_map(|r| r.skipped_line())
        .collect();
    let summary = summary_json(
        &result,
        &files,
        &CaptureIssues {
            unreadable: &unreadable,
            ended_early: &early,
            skipped_blocks: &skipped_blocks,
        },
        &dir,
    );
    let stderr = &mut std::io::stderr().lock();
    print_summary(&result, &summary, stderr)?;
    if let Some(report) = &opts.report {
        let config = effective_config(opts, &dir, &manifest, &files);
        files::write(report, &result.stats, &summary, &config, result.started)?;
        writeln!(stderr, "report:    {}", report.display())?;
    }
    if let Some(e) = &result.output_error {
        anyhow::bail!("writing verdicts: {e}");
    }
    Ok(())
}

/// What went wrong with the inputs, one line each.
#[derive(Clone, Copy, Debug, Default)]
pub struct CaptureIssues<'a> {
    /// Inputs skipped as unreadable (`--keep-going`).
    pub unreadable: &'a [String],
    /// Files that ended before their data did.
    pub ended_early: &'a [String],
    /// Files with records or blocks skipped.
    pub skipped_blocks: &'a [String],
}

/// The run's summary (also `summary.json`).
pub fn summary_json(
    r: &RunResult,
    files: &[PathBuf],
    issues: &CaptureIssues<'_>,
    models: &Path,
) -> serde_json::Value {
    let flows_in = r.flows_in();
    let packets: u64 = r.workers.iter().map(|w| w.packets).sum();
    let mut skipped = std::collections::BTreeMap::<&str, u64>::new();
    for w in &r.workers {
        for (k, v) in &w.skipped {
            *skipped.entry(k).or_default() += v;
        }
    }
    let sum =
        |f: fn(&pipeline::worker::WorkerCounters) -> u64| -> u64 { r.workers.iter().map(f).sum() };
    let verdicts = r.stats.total();
    json!({
        "models": models.display().to_string(),
        "captures": files.len(),
        "unreadable_captures": issues.unreadable,
        "captures_ended_early": issues.ended_early,
        "captures_with_skipped_blocks": issues.skipped_blocks,
        "packets": packets,
        "flow_packets": sum(|w| w.flow_packets),
        "skipped_packets": skipped,
        "flows_in": flows_in,
        "verdicts_out": verdicts,
        "every_flow_one_verdict": flows_in == verdicts,
        "flows_evicted": r.workers.iter().map(|w| w.flows.evicted).sum::<u64>(),
        "escalated": sum(|w| w.escalated),
        "fallback_queue_full": sum(|w| w.fallback_full),
        "fallback_pool_stopped": sum(|w| w.fallback_stopped),
        "slow_batches": r.pool.iter().map(|p| p.batches).sum::<u64>(),
        "slow_failed": r.pool.iter().map(|p| p.failed).sum::<u64>(),
        "packet_panics": sum(|w| w.panics),
        "thread_panics": r.thread_panics,
        "wall_s": r.wall_s,
        "new_flows_per_s": flows_in as f64 / r.wall_s.max(1e-9),
        "result": r.stats.summary(),
    })
}

/// Prints the run's summary lines.
pub fn print_summary(
    r: &RunResult,
    s: &serde_json::Value,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    let res = r.stats.summary();
    writeln!(
        out,
        "flows:     {} in, {} verdicts ({}) in {:.2} s, {:.0} new flows/s",
        s["flows_in"],
        s["verdicts_out"],
        if s["every_flow_one_verdict"] == true {
            "one per flow"
        } else {
            "MISMATCH"
        },
        r.wall_s,
        s["new_flows_per_s"].as_f64().unwrap_or(0.0)
    )?;
    writeln!(
        out,
        "stages:    fast {} | slow {} | fallback {} | escalated {:.1}% | triggers {}",
        res.verdicts.get("fast").unwrap_or(&0),
        res.verdicts.get("slow").unwrap_or(&0),
        res.verdicts.get("fallback").unwrap_or(&0),
        res.escalated_percent,
        counts(res.triggers.iter().map(|(k, v)| (k.as_str(), *v)))
    )?;
    if let Some(e2e) = res.latency_ms.get("e2e") {
        writeln!(
            out,
            "latency:   p50 {:.3} ms | p99 {:.3} ms | max {:.1} ms | {:.1}% under 16 ms",
            e2e.p50, e2e.p99, e2e.max, res.under_16ms_percent
        )?;
    }
    if let Some(sc) = &res.scores {
        writeln!(
            out,
            "accuracy:  {:.4} | macro-F1 {:.4} over {} labeled flows",
            sc.accuracy, sc.macro_f1, sc.flows
        )?;
    }
    let skipped = s["skipped_packets"]
        .as_object()
        .filter(|m| !m.is_empty())
        .map(|m| counts(m.iter().map(|(k, v)| (k.as_str(), v.as_u64().unwrap_or(0)))))
        .unwrap_or_default();
    writeln!(
        out,
        "packets:   {} read, {} skipped{}",
        s["packets"],
        s["packets"].as_u64().unwrap_or(0) - s["flow_packets"].as_u64().unwrap_or(0),
        if skipped.is_empty() {
            String::new()
        } else {
            format!(" ({skipped})")
        }
    )?;
    for (key, label) in [
        ("unreadable_captures", "skipped input"),
        ("captures_ended_early", "ended early"),
        ("captures_with_skipped_blocks", "skipped blocks"),
    ] {
        for line in s[key].as_array().into_iter().flatten() {
            writeln!(out, "inputs:    {label}: {}", line.as_str().unwrap_or(""))?;
        }
    }
    Ok(())
}

/// `name n, name n` for a human line (`none` when empty).
pub fn counts<'a>(pairs: impl Iterator<Item = (&'a str, u64)>) -> String {
    let parts: Vec<String> = pairs.map(|(k, v)| format!("{k} {v}")).collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

fn effective_config(
    opts: &ReplayOptions,
    models: &Path,
    manifest: &crate::model::dir::Manifest,
    files: &[PathBuf],
) -> String {
    #[derive(serde::Serialize)]
    struct Effective<'a> {
        models: String,
        inputs: Vec<String>,
        labels: Option<String>,
        split: Split,
        mode: pipeline::Mode,
        threshold: Option<f64>,
        pipeline: &'a PipelineConfig,
        manifest: &'a crate::model::dir::Manifest,
    }
    let e = Effective {
        models: models.display().to_string(),
        inputs: files.iter().map(|f| f.display().to_string()).collect(),
        labels: opts.labels.as_ref().map(|l| l.display().to_string()),
        split: opts.split,
        mode: opts.mode,
        threshold: opts.threshold,
        pipeline: &opts.pipeline,
        manifest,
    };
    toml::to_string(&e).unwrap_or_else(|err| format!("# config not serialisable: {err}\n"))
}
