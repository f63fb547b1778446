//! `serveflow replay`: the serving pipeline over capture files. Verdicts as JSON lines, a
//! summary at exit, and with `--report` the HDR latency report.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

use crate::{
    capture::{inputs, merge::MergedCaptures},
    frame::Input,
    labels::{FlowLabels, Split, Task},
    model::{bundled, dir::ModelDir},
    pipeline::{
        self,
        cascade::Cascade,
        output::Truth,
        summary::{CaptureIssues, ServingSummary},
        Feed, PipelineConfig,
    },
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
    let summary = ServingSummary::new(
        &result,
        files.len(),
        &CaptureIssues {
            unreadable: &unreadable,
            ended_early: &early,
            skipped_blocks: &skipped_blocks,
        },
        &dir,
    );
    let stderr = &mut std::io::stderr().lock();
    summary.write_lines(stderr)?;
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
