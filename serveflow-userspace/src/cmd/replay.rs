//! `serveflow replay`: the serving pipeline over capture files. Verdicts as JSON lines, a
//! summary at exit, and with `--report` the HDR latency report.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

use clap::Args;
use serveflow::{
    capture::{inputs, merge::MergedCaptures},
    config::{Config, Speed},
    export::Exporter,
    frame::Input,
    labels::{FlowLabels, Split, Task},
    limits::Choice as _,
    model::{bundled, dir::ModelDir},
    pipeline::{
        self,
        cascade::Cascade,
        output::Truth,
        summary::{CaptureIssues, ServingSummary},
        Feed, PipelineConfig, Progress,
    },
    report::files,
    ticker::{pipeline_totals, Ticker},
    verdict::VerdictOutput,
};

use super::args::{self, ConfigArgs, ModelArgs, OutputArgs, RoutingArgs, ServingArgs};

/// `serveflow replay`: classify the flows of capture files with the fast-slow pipeline: one
/// verdict per flow, a summary, and an HDR latency report.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Capture files or folders (searched for .pcap, .pcapng, .cap); read as one timeline.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub models: ModelArgs,
    /// max (service rate), realtime or a factor (capture pace), virtual (latency from
    /// capture timestamps plus measured serving time; fast) [default: virtual].
    #[arg(long, value_parser = args::speed())]
    pub speed: Option<Speed>,
    #[command(flatten)]
    pub serving: ServingArgs,
    #[command(flatten)]
    pub routing: RoutingArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// nfstream per-flow label CSV, to score the verdicts.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Which captures of the bundled models' split to replay (all but `all` need --labels):
    /// held-out = not trained on; calibration / test = its two halves.
    #[arg(long, value_parser = args::choice::<Split>(), default_value = "all")]
    pub split: Split,
    /// Skip inputs that cannot be read (listed in the summary) instead of stopping.
    #[arg(long)]
    pub keep_going: bool,
}

impl ReplayArgs {
    /// The configuration: the file's (or the defaults), the flags over it.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut c = self.config.load()?;
        self.models.apply(&mut c);
        args::set(&mut c.capture.speed, self.speed);
        self.serving.apply(&mut c);
        self.routing.apply(&mut c);
        self.output.apply(&mut c);
        if self.keep_going {
            c.capture.keep_going = true;
        }
        args::checked(c)
    }

    /// Runs `serveflow replay`.
    pub fn run(&self) -> anyhow::Result<()> {
        let config = self.config()?;
        self.output.check_stdout(&config)?;
        run(&Replay {
            config,
            inputs: self.inputs.clone(),
            labels: self.labels.clone(),
            split: self.split,
            json: self.output.json,
        })
    }
}

/// What one replay reads and how.
#[derive(Clone, Debug)]
pub struct Replay {
    /// Settings.
    pub config: Config,
    /// Capture files or folders (searched for .pcap, .pcapng, .cap).
    pub inputs: Vec<PathBuf>,
    /// Label file (nfstream's per-flow CSV) to score the verdicts against.
    pub labels: Option<PathBuf>,
    /// Which files of the bundled models' split to replay (other than `all` needs labels).
    pub split: Split,
    /// The summary as JSON on stdout, not text on stderr.
    pub json: bool,
}

/// Loads the models, the labels and the inputs, runs the pipeline, writes the report.
pub fn run(opts: &Replay) -> anyhow::Result<()> {
    let c = &opts.config;
    if let Some(report) = &c.export.report {
        files::prepare(report).context("--report")?;
    }
    let dir = bundled::resolve(c.pipeline.models.as_deref(), c.pipeline.task)?;
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
    let inputs = found.open(c.capture.keep_going)?;
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
    let verdicts = VerdictOutput::to_path(c.export.out.as_deref()).with_context(|| {
        format!(
            "creating {}",
            c.export.out.as_deref().unwrap_or(Path::new("-")).display()
        )
    })?;
    let mut cascade = Cascade::from_models(models);
    if let Some(t) = c.routing.threshold {
        cascade.set_threshold(t);
    }
    cascade.apply_mode(c.pipeline.mode);
    let cascade = Arc::new(cascade);
    let exporter = Exporter::start(&c.export.to, &c.export.sinks())?;
    let mut captures = MergedCaptures::open(&files)?;
    let progress = Arc::new(Progress::default());
    let ticker = Ticker::start("replay", pipeline_totals(progress.clone()));
    let result = pipeline::run(
        cascade,
        &PipelineConfig {
            progress: Some(progress),
            ..PipelineConfig::from_config(c, 1)
        },
        Feed::Shared(captures.by_ref().map(Input::Packet)),
        &verdicts,
        truth,
        (!exporter.is_empty()).then(|| exporter.hooks()),
    );
    drop(ticker);
    let exports = exporter.finish();
    let file_reports = captures.reports();
    let early: Vec<String> = file_reports
        .iter()
        .filter_map(|r| r.early_end_line())
        .collect();
    let skipped_blocks: Vec<String> = file_reports
        .iter()
        .filter_map(|r| r.skipped_line())
        .collect();
    let mut summary = ServingSummary::new(
        &result,
        files.len(),
        &CaptureIssues {
            unreadable: &unreadable,
            ended_early: &early,
            skipped_blocks: &skipped_blocks,
        },
        &dir,
    );
    summary.exports = exports;
    let stderr = &mut std::io::stderr().lock();
    if opts.json {
        let stdout = &mut std::io::stdout().lock();
        writeln!(stdout, "{}", serde_json::to_string_pretty(&summary)?)?;
    } else {
        summary.write_lines(stderr)?;
    }
    if let Some(report) = &c.export.report {
        let config = effective_config(opts, &dir, &manifest, &files);
        files::write(report, &result.stats, &summary, &config, result.started)?;
        writeln!(stderr, "report:    {}", report.display())?;
    }
    if let Some(e) = &result.output_error {
        anyhow::bail!("writing verdicts: {e}");
    }
    Ok(())
}

/// The report's `config.toml`: the settings that ran (a valid `--config`, with the models
/// directory resolved), after comment lines naming the inputs, labels and models.
fn effective_config(
    opts: &Replay,
    models: &Path,
    manifest: &serveflow::model::dir::Manifest,
    files: &[PathBuf],
) -> String {
    let mut config = opts.config.clone();
    config.pipeline.models = Some(models.to_owned());
    let mut head = String::from("# serveflow replay: the settings that ran (usable as --config)\n");
    for f in files {
        head.push_str(&format!("# input: {}\n", f.display()));
    }
    if let Some(l) = &opts.labels {
        head.push_str(&format!(
            "# labels: {} (split {})\n",
            l.display(),
            opts.split.name()
        ));
    }
    head.push_str(&format!(
        "# models: task {}, {} classes, {} inline stage(s) then the slow stage\n\n",
        manifest.task,
        manifest.classes.len(),
        manifest.early.len() + 1
    ));
    head + &config.to_toml()
}
