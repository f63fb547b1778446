//! `serveflow bench`: the serving benchmark.
//!
//! 1. **Accuracy and latency**: the held-out test captures of the data folder (the half not used
//!    for calibration) through the pipeline on the virtual clock, fast-only vs slow-only vs the
//!    cascade: accuracy, macro-F1, median and p99 end-to-end latency, share of flows decided
//!    within 16 ms, escalation.
//! 2. **Service rate**: the nDPI captures held in memory, amplified into millions of distinct
//!    flows (addresses rewritten per loop), through the pipeline at full speed with 1..N
//!    fast-path workers and one slow thread: new flows per second, escalations, fallbacks.
//! 3. **Export cost** (with `--export URL`, repeatable): the one-worker rate run again with
//!    each sink alone: its serving rate against none, and the verdicts per second it took.

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
    capture::{amplify::Amplified, inputs, merge::MergedCaptures, pcap_out::PcapOut},
    config::{Mode, PoolConfig, Speed},
    export::{Exporter, SinkConfig, SinkReport, Target},
    flow::FlowConfig,
    frame::{pool, CapturedPacket, Input},
    labels::{FlowLabels, Split, Task},
    limits::{self, Choice as _},
    model::{bundled, dir::ModelDir},
    pipeline::{self, cascade::Cascade, output::Truth, Feed, PipelineConfig, Progress},
    ticker::{count, pipeline_totals, Ticker},
    verdict::VerdictOutput,
};

use super::args::{self, ConfigArgs, ModelArgs, WaitArgs};

/// `serveflow bench`: serving benchmark: fast-only vs slow-only vs cascade accuracy and
/// latency on the held-out test captures, then service rate on amplified captures over 1..N
/// workers.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Data folder (../shared/data layout: labels/, ndpi/pcap/, iot_sentinel/).
    #[arg(long, default_value = "../shared/data")]
    pub data: PathBuf,
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub models: ModelArgs,
    /// Distinct flows of the rate run (the captures amplified to exactly this many; up to
    /// 65,536 loops of them).
    #[arg(long, default_value_t = 2_000_000, value_parser = limits::int::<u64>(1..=1_000_000_000, "at most a billion"))]
    pub flows: u64,
    /// Largest fast-path worker count of the scaling run (at most 4 per core).
    #[arg(long, default_value_t = 1, value_parser = args::threads())]
    pub max_workers: usize,
    #[command(flatten)]
    pub waits: WaitArgs,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Skip captures that cannot be read (listed) instead of stopping.
    #[arg(long)]
    pub keep_going: bool,
    /// Only measure the memory each of --flows concurrent flows costs (one process per
    /// measurement: run it once per flow count).
    #[arg(long)]
    pub memory: bool,
    /// Only run the steady-state check: this many seconds at full speed with flows arriving
    /// and leaving at one rate, the resident memory sampled every 10 s and its growth after
    /// the first minute fitted (600 for the ten-minute run of docs/benchmarks.md).
    #[arg(long, value_name = "SECONDS", value_parser = limits::int::<u64>(1..=86_400, "at most a day"), conflicts_with_all = ["memory", "export", "max_workers"])]
    pub steady: Option<u64>,
    /// Print the results as JSON on stdout instead of the tables.
    #[arg(long)]
    pub json: bool,
    /// Also time the one-worker rate run exporting to this sink (repeatable; each alone).
    #[arg(long = "export", value_name = "URL", value_parser = args::export_target)]
    pub export: Vec<Target>,
    /// Only write the rate run's input, the nDPI captures amplified to --flows flows (their
    /// Ethernet frames), to this pcap file: the same capture for other tools (`cargo xtask
    /// compare` times NFStream and ndpiReader on it).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["memory", "steady", "export", "json", "out", "max_workers"])]
    pub write_capture: Option<PathBuf>,
}

impl BenchArgs {
    /// Runs the benchmark with the file's models and waits under the flags.
    pub fn run(&self) -> anyhow::Result<()> {
        let mut c = self.config.load()?;
        self.models.apply(&mut c);
        self.waits.apply(&mut c);
        if self.keep_going {
            c.capture.keep_going = true;
        }
        let c = args::checked(c)?;
        run(&BenchOptions {
            data: self.data.clone(),
            models: c.pipeline.models,
            task: c.pipeline.task,
            flows: self.flows,
            max_workers: self.max_workers,
            max_wait_ms: c.pipeline.max_wait_ms,
            fast_wait_ms: c.pipeline.fast_wait_ms,
            out: self.out.clone(),
            keep_going: c.capture.keep_going,
            exports: self.export.clone(),
            memory: self.memory,
            steady: self.steady,
            json: self.json,
            write_capture: self.write_capture.clone(),
        })
    }
}

/// Options of `serveflow bench`.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Data folder (`../shared/data` layout).
    pub data: PathBuf,
    /// Models directory (default: the bundled models of `task`).
    pub models: Option<PathBuf>,
    /// Task of the bundled models.
    pub task: serveflow::labels::Task,
    /// Distinct flows to amplify the rate run to.
    pub flows: u64,
    /// Largest worker count of the scaling run.
    pub max_workers: usize,
    /// Longest wait for the slow stage's packets (ms).
    pub max_wait_ms: f64,
    /// The fast stages' wait of the latency-oriented cascade row (ms).
    pub fast_wait_ms: f64,
    /// JSON results file.
    pub out: Option<PathBuf>,
    /// Skip unreadable captures (listed) instead of stopping.
    pub keep_going: bool,
    /// Sinks to time the rate run with, each alone.
    pub exports: Vec<Target>,
    /// Only the memory measurement.
    pub memory: bool,
    /// Only the steady-state run, this many seconds.
    pub steady: Option<u64>,
    /// JSON on stdout instead of the tables.
    pub json: bool,
    /// Only write the rate run's input to this pcap file.
    pub write_capture: Option<PathBuf>,
}

/// One accuracy/latency row.
#[derive(Debug, Serialize)]
pub struct LatencyRow {
    /// Mode.
    pub mode: Mode,
    /// Wait for the fast stages' packets (ms).
    pub fast_wait_ms: f64,
    /// Flows decided.
    pub flows: u64,
    /// Labeled flows scored.
    pub labeled: u64,
    /// Accuracy.
    pub accuracy: f64,
    /// Macro-F1.
    pub macro_f1: f64,
    /// Median end-to-end latency (ms).
    pub p50_ms: f64,
    /// 99th percentile (ms).
    pub p99_ms: f64,
    /// Share within 16 ms (%).
    pub under_16ms_percent: f64,
    /// Share escalated (%).
    pub escalated_percent: f64,
    /// Share fallen back (%).
    pub fallback_percent: f64,
}

/// One service-rate row.
#[derive(Debug, Serialize)]
pub struct RateRow {
    /// Fast-path workers.
    pub workers: usize,
    /// Slow threads.
    pub slow_threads: usize,
    /// Flows in.
    pub flows: u64,
    /// Packets in.
    pub packets: u64,
    /// Wall time (s).
    pub wall_s: f64,
    /// New flows per second.
    pub new_flows_per_s: f64,
    /// Packets per second.
    pub packets_per_s: f64,
    /// Share escalated (%).
    pub escalated_percent: f64,
    /// Share fallen back (%).
    pub fallback_percent: f64,
    /// Every flow got exactly one verdict.
    pub one_verdict_each: bool,
}

/// The one-worker rate run with one export sink.
#[derive(Debug, Serialize)]
pub struct ExportRow {
    /// The rate run, exporting.
    pub run: RateRow,
    /// Its rate against the run without export.
    pub rate_ratio: f64,
    /// What the sink did.
    pub sink: SinkReport,
    /// Verdicts the sink took per second of serving.
    pub sent_per_s: f64,
}

/// nDPI's captures, in memory: the base the rate and memory runs amplify. The frames own
/// their bytes: read in place, their pages would be released behind the reader and fault
/// back in during the run, counted as the run's memory.
fn ndpi_packets(opts: &BenchOptions) -> anyhow::Result<Vec<CapturedPacket>> {
    let ndpi = inputs::resolve(&[opts.data.join("ndpi/pcap")], opts.keep_going)?.files;
    Ok(MergedCaptures::open(&ndpi)?
        .map(|mut p| {
            p.data = pool::copy_of(&p.data).into();
            p
        })
        .collect())
}

/// One full-speed run of `flows` flows amplified from `base` with `workers` and one slow
/// thread, its verdicts offered to `exporter` when given.
fn rate_run(
    models: &Path,
    base: &[CapturedPacket],
    flows: u64,
    workers: usize,
    max_wait_ms: f64,
    exporter: Option<&Exporter>,
) -> anyhow::Result<RateRow> {
    let progress = Arc::new(Progress::default());
    let config = PipelineConfig {
        max_wait_ms,
        ..full_speed(workers, rate_flows(), progress.clone())
    };
    let source = Amplified::with_flows(base, flows, 1_000).map(Input::Packet);
    let ticker = Ticker::start("bench", pipeline_totals(progress));
    let r = pipeline::run(
        cascade(models, Mode::Cascade)?,
        &config,
        Feed::Shared(source),
        &VerdictOutput::none(),
        None,
        exporter.map(Exporter::hooks),
    );
    drop(ticker);
    let s = r.stats.summary();
    let packets: u64 = r.workers.iter().map(|w| w.packets).sum();
    Ok(RateRow {
        workers,
        slow_threads: 1,
        flows: r.flows_in(),
        packets,
        wall_s: r.wall_s,
        new_flows_per_s: r.flows_in() as f64 / r.wall_s.max(1e-9),
        packets_per_s: packets as f64 / r.wall_s.max(1e-9),
        escalated_percent: s.escalated_percent,
        fallback_percent: s.fallback_percent,
        one_verdict_each: r.flows_in() == r.stats.total(),
    })
}

/// The flow table of the rate and steady-state runs: flows end 2 s of capture time after
/// their last packet (2 M packets at 1 µs apart), so flows leave as fast as they arrive.
pub(super) fn rate_flows() -> FlowConfig {
    FlowConfig {
        idle_timeout_s: 2,
        ..FlowConfig::default()
    }
}

/// The pipeline of every amplified run: `workers`, one slow thread, full speed, totals
/// published to `progress`.
pub(super) fn full_speed(
    workers: usize,
    flow: FlowConfig,
    progress: Arc<Progress>,
) -> PipelineConfig {
    PipelineConfig {
        workers,
        pool: PoolConfig {
            threads: 1,
            ..PoolConfig::default()
        },
        flow,
        speed: Speed::Max,
        progress: Some(progress),
        ..PipelineConfig::default()
    }
}

/// The bundled (or named) models as a cascade in `mode`.
pub(super) fn cascade(models: &Path, mode: Mode) -> anyhow::Result<Arc<Cascade>> {
    let mut c = Cascade::from_models(ModelDir::load(models)?);
    c.apply_mode(mode);
    Ok(Arc::new(c))
}

/// Writes the rate run's input as a pcap file and says what it holds.
fn write_capture(opts: &BenchOptions, path: &Path) -> anyhow::Result<()> {
    serveflow::report::files::check_output_file(path).context("--write-capture")?;
    let base = ndpi_packets(opts)?;
    let amplified = Amplified::with_flows(&base, opts.flows, 1_000);
    let (base_flows, loops, rest) = amplified.plan();
    let mut out =
        PcapOut::create(path, 1).with_context(|| format!("creating {}", path.display()))?;
    let done = Arc::new(AtomicU64::new(0));
    let ticker = {
        let done = done.clone();
        Ticker::start("write", move || {
            format!("{} frames", count(done.load(Relaxed)))
        })
    };
    for p in amplified {
        out.write(&p)
            .with_context(|| format!("writing {}", path.display()))?;
        done.fetch_add(1, Relaxed);
    }
    drop(ticker);
    let (written, other) = (out.written, out.other_link);
    out.finish()
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "wrote {}: {written} Ethernet frames of {} flows ({base_flows} flows of nDPI captures x {loops} loops + {rest}); {other} frames of other link types left out",
        path.display(),
        opts.flows
    );
    Ok(())
}

/// Runs the benchmark and prints its tables.
pub fn run(opts: &BenchOptions) -> anyhow::Result<()> {
    if let Some(path) = &opts.write_capture {
        return write_capture(opts, path);
    }
    if let Some(path) = &opts.out {
        serveflow::report::files::check_output_file(path).context("--out")?;
    }
    let models = bundled::resolve(opts.models.as_deref(), opts.task)?;
    let manifest = ModelDir::load(&models)?.manifest;
    let task = Task::from_name(&manifest.task).context("the models' task has no labels")?;
    let labels_path = opts.data.join("labels");
    // With --json the tables go nowhere and the results print as one JSON document.
    let (mut tables, mut nowhere) = (std::io::stdout().lock(), std::io::sink());
    let out: &mut dyn std::io::Write = if opts.json { &mut nowhere } else { &mut tables };
    let cores = core_affinity::get_core_ids().map_or(0, |c| c.len());
    writeln!(out, "models: {} | cores: {cores}", models.display())?;
    if let Some(seconds) = opts.steady {
        let base = ndpi_packets(opts)?;
        let row = super::bench_steady::run(&models, &base, seconds, out)?;
        let json = serde_json::json!({
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "models": models.display().to_string(),
            "steady": row,
        });
        return results(opts, &json);
    }
    if opts.memory {
        let base = ndpi_packets(opts)?;
        let row = super::bench_memory::run(&models, &base, opts.flows, out)?;
        let json = serde_json::json!({
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "models": models.display().to_string(),
            "memory": row,
        });
        return results(opts, &json);
    }

    // 1. Accuracy and latency on the test half of the held-out captures.
    let labels = FlowLabels::load(&labels_path, task)?;
    let mut found = inputs::find(std::slice::from_ref(&opts.data));
    found
        .files
        .retain(|f| labels.path_of(f).is_some_and(|p| Split::Test.contains(&p)));
    let inputs = found.open(opts.keep_going)?;
    for s in &inputs.skipped {
        writeln!(out, "skipped input: {s}")?;
    }
    let files = inputs.files;
    let truth = Arc::new(Truth::new(labels, &files, manifest.classes.clone()));
    let mut latency = Vec::new();
    writeln!(
        out,
        "\naccuracy and latency: {} test captures, virtual clock, max wait {} ms\n",
        files.len(),
        opts.max_wait_ms
    )?;
    writeln!(out, "| mode | fast wait ms | flows | accuracy | macro-F1 | p50 ms | p99 ms | <16 ms | escalated | fallback |")?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    // The serving waits the models were trained and calibrated for, then the cascade with
    // inline stages allowed to wait as long as the slow one (for comparison).
    let runs = [
        (Mode::FastOnly, opts.fast_wait_ms),
        (Mode::SlowOnly, opts.fast_wait_ms),
        (Mode::Cascade, opts.fast_wait_ms),
        (Mode::Cascade, opts.max_wait_ms),
    ];
    for (mode, fast_wait_ms) in runs {
        let config = PipelineConfig {
            speed: Speed::Virtual,
            fast_wait_ms,
            max_wait_ms: opts.max_wait_ms,
            ..PipelineConfig::default()
        };
        let mut captures = MergedCaptures::open(&files)?;
        let r = pipeline::run(
            cascade(&models, mode)?,
            &config,
            Feed::Shared(captures.by_ref().map(Input::Packet)),
            &VerdictOutput::none(),
            Some(truth.clone()),
            None,
        );
        let s = r.stats.summary();
        let e2e = s.latency_ms.get("e2e");
        let row = LatencyRow {
            mode,
            fast_wait_ms,
            flows: s.flows,
            labeled: s.scores.as_ref().map_or(0, |x| x.flows),
            accuracy: s.scores.as_ref().map_or(0.0, |x| x.accuracy),
            macro_f1: s.scores.as_ref().map_or(0.0, |x| x.macro_f1),
            p50_ms: e2e.map_or(0.0, |p| p.p50),
            p99_ms: e2e.map_or(0.0, |p| p.p99),
            under_16ms_percent: s.under_16ms_percent,
            escalated_percent: s.escalated_percent,
            fallback_percent: s.fallback_percent,
        };
        writeln!(
            out,
            "| {} | {} | {} | {:.4} | {:.4} | {:.3} | {:.1} | {:.1}% | {:.1}% | {:.1}% |",
            row.mode.name(),
            row.fast_wait_ms,
            row.flows,
            row.accuracy,
            row.macro_f1,
            row.p50_ms,
            row.p99_ms,
            row.under_16ms_percent,
            row.escalated_percent,
            row.fallback_percent
        )?;
        latency.push(row);
    }
    if let Some(slow) = latency.iter().find(|r| r.mode == Mode::SlowOnly) {
        for c in latency.iter().filter(|r| r.mode == Mode::Cascade) {
            writeln!(
                out,
                "\ncascade (fast wait {} ms) vs slow-only: macro-F1 {:+.4}, median latency {:.1}x lower",
                c.fast_wait_ms,
                c.macro_f1 - slow.macro_f1,
                slow.p50_ms / c.p50_ms.max(1e-6)
            )?;
        }
    }

    // 2. Service rate on amplified nDPI captures.
    let base = ndpi_packets(opts)?;
    let (base_flows, loops, rest) = Amplified::with_flows(&base, opts.flows, 1_000).plan();
    writeln!(
        out,
        "\nservice rate: {} flows: {} packets / {base_flows} flows of nDPI captures x {loops} loops, and the first {rest} flows once more; max speed, 1 slow thread\n",
        opts.flows,
        base.len(),
    )?;
    writeln!(out, "| workers | flows | packets | wall s | new flows/s | packets/s | escalated | fallback | one verdict each |")?;
    writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
    let mut rate = Vec::new();
    for workers in 1..=opts.max_workers.max(1) {
        let row = rate_run(&models, &base, opts.flows, workers, opts.max_wait_ms, None)?;
        writeln!(
            out,
            "| {} | {} | {} | {:.2} | {:.0} | {:.0} | {:.1}% | {:.1}% | {} |",
            row.workers,
            row.flows,
            row.packets,
            row.wall_s,
            row.new_flows_per_s,
            row.packets_per_s,
            row.escalated_percent,
            row.fallback_percent,
            row.one_verdict_each
        )?;
        rate.push(row);
    }
    let mut exported = Vec::new();
    if let (false, Some(none)) = (opts.exports.is_empty(), rate.first()) {
        writeln!(
            out,
            "\nexport cost: the 1-worker rate run with each sink alone ({:.0} new flows/s without)\n",
            none.new_flows_per_s
        )?;
        writeln!(
            out,
            "| export | wall s | new flows/s | vs none | sent | dropped | undelivered | sent/s |"
        )?;
        writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
        for target in &opts.exports {
            let exporter = Exporter::start(std::slice::from_ref(target), &SinkConfig::default())?;
            let run = rate_run(
                &models,
                &base,
                opts.flows,
                1,
                opts.max_wait_ms,
                Some(&exporter),
            )?;
            let sink = exporter.finish().pop().unwrap_or_default();
            let row = ExportRow {
                rate_ratio: run.new_flows_per_s / none.new_flows_per_s.max(1e-9),
                sent_per_s: sink.sent as f64 / run.wall_s.max(1e-9),
                run,
                sink,
            };
            writeln!(
                out,
                "| {} | {:.2} | {:.0} | {:.3} | {} | {} | {} | {:.0} |",
                row.sink.target,
                row.run.wall_s,
                row.run.new_flows_per_s,
                row.rate_ratio,
                row.sink.sent,
                row.sink.dropped_full + row.sink.dropped_down,
                row.sink.failed,
                row.sent_per_s
            )?;
            exported.push(row);
        }
    }
    let json = serde_json::json!({
        "export": exported,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "models": models.display().to_string(),
        "cores": cores,
        "latency": latency,
        "rate": rate,
    });
    results(opts, &json)
}

/// The results as JSON: into `--out`, and on stdout with `--json`.
fn results(opts: &BenchOptions, json: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(json)? + "\n";
    if let Some(path) = &opts.out {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    if opts.json {
        std::io::stdout().lock().write_all(text.as_bytes())?;
    }
    Ok(())
}
