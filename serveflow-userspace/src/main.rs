//! `serveflow`: the appliance's command line. Each subcommand is a thin shell over the library;
//! errors reach the operator as one line that says what to do.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use serveflow::{
    calibrate::Target,
    cmd::{
        bench::BenchOptions,
        calibrate::{CalibrateOptions, Output},
        extract::{ExtractOptions, Format},
        models::ModelsOptions,
        replay::ReplayOptions,
        run::{RssMode, RunOptions},
    },
    config::PoolConfig,
    features::FeatureSpec,
    flow::FlowConfig,
    labels::Split,
    limits,
    pipeline::{Mode, PipelineConfig, Speed},
    xdp::AttachMode,
};

#[derive(Parser)]
#[command(
    name = "serveflow",
    version,
    about = "Early-packet flow classification on AF_XDP",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The exit statuses, in every command's `--help` and the README.
const EXIT_CODES: &str = "Exit status:
  0  done (with --keep-going, also when unreadable inputs were skipped; they are listed)
  1  failed: the message says why (an input that cannot be read, a broken models directory,
     missing privileges, an output that cannot be written, ...)
  2  bad command line: an unknown or conflicting option, or a value outside its stated range";

/// Threads of one kind (workers, slow threads).
fn threads() -> clap::builder::ValueParser {
    clap::builder::ValueParser::new(limits::threads)
}

/// A wait or timeout in ms: 0..=one day.
fn wait_ms() -> clap::builder::ValueParser {
    clap::builder::ValueParser::new(limits::real(0.0..=limits::MAX_WAIT_MS, "at most one day"))
}

/// Packets per flow a feature set covers.
fn packets() -> clap::builder::ValueParser {
    clap::builder::ValueParser::new(limits::int::<u32>(
        1..=u64::from(limits::MAX_PACKETS),
        "the deepest a stage may wait for",
    ))
}

/// A timeout in whole seconds: 1..=one week.
fn timeout_s() -> clap::builder::ValueParser {
    clap::builder::ValueParser::new(limits::int::<u64>(1..=604_800, "at most one week"))
}

#[derive(Subcommand)]
enum Command {
    /// Attach to an interface and receive its TCP/UDP flows through AF_XDP until SIGINT/SIGTERM.
    Run {
        /// Interface to attach to.
        #[arg(short, long)]
        interface: String,
        /// XDP attach mode: native (driver) or skb (generic).
        #[arg(short, long, value_enum, default_value_t = AttachMode::Native)]
        mode: AttachMode,
        /// AF_XDP sockets to open, one per RX queue from 0 (default: every RX queue; at most
        /// the interface's RX queues).
        #[arg(long, value_parser = limits::int::<u32>(1..=serveflow_common::MAX_QUEUES as u64, "sockets the XDP program can redirect to"))]
        queues: Option<u32>,
        /// Stop after this many seconds.
        #[arg(long, value_parser = limits::real(0.001..=31_536_000.0, "up to a year"))]
        duration: Option<f64>,
        /// Also write the summary as JSON to this file.
        #[arg(long)]
        summary: Option<PathBuf>,
        /// Models directory (default: the bundled models of --task).
        #[arg(long)]
        models: Option<PathBuf>,
        /// Task whose bundled models to use.
        #[arg(long, default_value = "service", value_parser = clap::builder::PossibleValuesParser::new(serveflow::model::bundled::TASKS))]
        task: String,
        /// Verdict JSON lines to this file (`-` for stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write the latency report (.hgrm, .hlog, summary.json, CDF plot, config) here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Fast-path workers (default: one per AF_XDP socket, each draining its own queue;
        /// 1: one worker drains every queue; at most 4 per core).
        #[arg(long, value_parser = threads())]
        workers: Option<usize>,
        /// Most flows the userspace flow tables hold (split between workers); beyond it the
        /// least recently seen flow is decided with what it has and dropped from the table.
        /// Checked against available memory.
        #[arg(long, default_value_t = FlowConfig::default().max_flows, value_parser = limits::int::<usize>(1..=limits::MAX_FLOWS, "flow-table limit"))]
        max_flows: usize,
        /// Entries of the kernel's flow and verdict maps (LRU: beyond it the least recently
        /// seen flow is forgotten and, if seen again, steered again from its next packet).
        /// 1..=2^28, and checked against available memory.
        #[arg(long, default_value_t = serveflow_common::FLOW_MAP_ENTRIES as u32, value_parser = limits::map_entries)]
        flow_map_entries: u32,
        /// Slow-pool threads (at most 4 per core).
        #[arg(long, default_value_t = PoolConfig::default().threads, value_parser = threads())]
        slow_threads: usize,
        /// Longest a flow waits, from its first packet, for the fast stages' packets (ms).
        #[arg(long, default_value_t = PipelineConfig::default().fast_wait_ms, value_parser = wait_ms())]
        fast_wait_ms: f64,
        /// Longest an escalated flow waits for the slow stage's packets (ms).
        #[arg(long, default_value_t = PipelineConfig::default().max_wait_ms, value_parser = wait_ms())]
        max_wait_ms: f64,
        /// Steer every TCP/UDP packet to userspace, not only the packets undecided flows need.
        #[arg(long)]
        no_steer: bool,
        /// Prometheus metrics endpoint (`GET /metrics`); `off` for none.
        #[arg(long, default_value = "127.0.0.1:9464")]
        metrics: String,
        /// Seconds between status lines on stderr (0: none).
        #[arg(long, default_value_t = 10, value_parser = limits::int::<u64>(0..=86_400, "at most a day"))]
        status_interval: u64,
        /// Run config (TOML): per-class kernel actions, `[actions] Class = "drop"`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Receive and count only (no parsing, no models): the interface's AF_XDP ceiling.
        #[arg(long, conflicts_with_all = ["out", "report", "models", "config", "workers", "slow_threads"])]
        drain_only: bool,
        /// With a worker per queue, which one owns a flow: `auto` asks the driver whether
        /// its RSS is symmetric (then each worker owns its queue's flows), else workers
        /// forward packets to the flow's owner by hash.
        #[arg(long, value_enum, default_value_t = RssMode::Auto)]
        rss: RssMode,
    },
    /// Live counters of running instances from their pinned maps (kernel outcomes, flow map,
    /// decided flows, steering).
    Status {
        /// Interface (default: every interface with pinned maps).
        #[arg(short, long)]
        interface: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read pcap/pcapng files as one timeline and write one row per TCP/UDP flow.
    Extract {
        /// Capture files.
        #[arg(required = true)]
        captures: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Idle timeout in seconds.
        #[arg(long, default_value_t = FlowConfig::default().idle_timeout_s, value_parser = timeout_s())]
        idle_timeout: u64,
        /// Active timeout in seconds.
        #[arg(long, default_value_t = FlowConfig::default().active_timeout_s, value_parser = timeout_s())]
        active_timeout: u64,
        /// End TCP flows at FIN/RST.
        #[arg(long)]
        end_on_fin_rst: bool,
        /// Feature sets: comma list of stats, nprint, nprint-ipv6, payload:N (or none).
        #[arg(long, default_value = "stats")]
        features: FeatureSpec,
        /// Packets per flow the features cover (1..=64).
        #[arg(long, default_value_t = FeatureSpec::default().packets, value_parser = packets())]
        packets: u32,
        /// Features see only the packets within this many ms of a flow's first (what a stage
        /// with this wait has when it decides).
        #[arg(long, value_parser = wait_ms())]
        within_ms: Option<f64>,
        /// Print the cost of each feature set (CPU per packet, state and output per flow).
        #[arg(long)]
        profile: bool,
        /// Services file (TOML: names, domain patterns, IP prefixes).
        #[arg(long)]
        services: Option<PathBuf>,
        /// Write periodic per-flow and per-service counters (JSON lines) to this file.
        #[arg(long)]
        counters: Option<PathBuf>,
        /// Interval of the periodic counters, in milliseconds of capture time.
        #[arg(long, default_value_t = 1000, value_parser = limits::int::<u64>(1..=86_400_000, "at most a day"))]
        interval_ms: u64,
        /// Skip inputs that cannot be read (listed at the end) instead of stopping.
        #[arg(long)]
        keep_going: bool,
    },
    /// Show a models directory (the bundled one when none is named); with captures, run both
    /// stages on every flow and tally their classes.
    Models {
        /// Task whose bundled models to use.
        #[arg(long, default_value = "service", value_parser = clap::builder::PossibleValuesParser::new(serveflow::model::bundled::TASKS))]
        task: String,
        /// Models directory (default: the bundled models of --task).
        #[arg(long, conflicts_with = "check")]
        models: Option<PathBuf>,
        /// Only check this models directory (manifest, model files, a self-test inference
        /// per stage): exit 0 when it can serve, 1 when not.
        #[arg(long, value_name = "DIR", conflicts_with = "captures")]
        check: Option<PathBuf>,
        /// With --check: print the result as JSON.
        #[arg(long, requires = "check")]
        json: bool,
        /// Capture files to classify.
        captures: Vec<PathBuf>,
    },
    /// Classify the flows of capture files with the fast-slow pipeline: one verdict per flow,
    /// a summary, and an HDR latency report.
    Replay {
        /// Capture files or folders (searched for .pcap, .pcapng, .cap); read as one timeline.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Models directory (default: the bundled models of --task).
        #[arg(long)]
        models: Option<PathBuf>,
        /// Task whose bundled models to use.
        #[arg(long, default_value = "service", value_parser = clap::builder::PossibleValuesParser::new(serveflow::model::bundled::TASKS))]
        task: String,
        /// max (service rate), realtime or a factor (capture pace), virtual (latency from
        /// capture timestamps plus measured serving time; fast).
        #[arg(long, default_value = "virtual")]
        speed: Speed,
        /// Fast-path workers (at most 4 per core).
        #[arg(long, default_value_t = 1, value_parser = threads())]
        workers: usize,
        /// Slow-pool threads (at most 4 per core).
        #[arg(long, default_value_t = PoolConfig::default().threads, value_parser = threads())]
        slow_threads: usize,
        /// Slow-pool queue size (flows beyond it fall back).
        #[arg(long, default_value_t = PoolConfig::default().queue, value_parser = limits::int::<usize>(1..=limits::MAX_QUEUE, "slow-queue limit"))]
        slow_queue: usize,
        /// Slow-pool batch size.
        #[arg(long, default_value_t = PoolConfig::default().max_batch, value_parser = limits::int::<usize>(1..=limits::MAX_BATCH, "slow-batch limit"))]
        max_batch: usize,
        /// Longest a slow batch waits to fill (µs).
        #[arg(long, default_value_t = PoolConfig::default().max_wait_us, value_parser = limits::int::<u64>(0..=10_000_000, "at most 10 s"))]
        batch_wait_us: u64,
        /// Longest a flow waits, from its first packet, for the fast stages' packets (ms) before
        /// they decide with what it has.
        #[arg(long, default_value_t = PipelineConfig::default().fast_wait_ms, value_parser = wait_ms())]
        fast_wait_ms: f64,
        /// Longest an escalated flow waits, from its first packet, for the slow stage's packets
        /// (ms) before it goes to the slow pool with what it has.
        #[arg(long, default_value_t = PipelineConfig::default().max_wait_ms, value_parser = wait_ms())]
        max_wait_ms: f64,
        /// Do not pin threads to cores.
        #[arg(long)]
        no_pin: bool,
        /// Verdict JSON lines to this file (`-` for stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write the latency report (.hgrm, .hlog, summary.json, CDF plot, config) here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// nfstream per-flow label CSV, to score the verdicts.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Which captures of the bundled models' split to replay (all but `all` need --labels):
        /// held-out = not trained on; calibration / test = its two halves.
        #[arg(long, value_enum, default_value_t = Split::All)]
        split: Split,
        /// Idle timeout in seconds.
        #[arg(long, default_value_t = FlowConfig::default().idle_timeout_s, value_parser = timeout_s())]
        idle_timeout: u64,
        /// cascade, or one stage alone (fast-only, slow-only: the baselines).
        #[arg(long, value_enum, default_value_t = Mode::Cascade)]
        mode: Mode,
        /// Escalate when uncertainty exceeds this, for every class (overrides the models
        /// directory's thresholds; -1..=1, below 0 escalates every flow; cascade mode only).
        #[arg(long, value_parser = limits::real(-1.0..=1.0, "uncertainty is within 0..=1"))]
        threshold: Option<f64>,
        /// Skip inputs that cannot be read (listed in the summary) instead of stopping.
        #[arg(long)]
        keep_going: bool,
    },
    /// Serving benchmark: fast-only vs slow-only vs cascade accuracy and latency on the
    /// held-out test captures, then service rate on amplified captures over 1..N workers.
    Bench {
        /// Data folder (../shared/data layout: labels/, ndpi/pcap/, iot_sentinel/).
        #[arg(long, default_value = "../shared/data")]
        data: PathBuf,
        /// Models directory (default: the bundled service models).
        #[arg(long)]
        models: Option<PathBuf>,
        /// Distinct flows the rate run amplifies the captures to.
        #[arg(long, default_value_t = 2_000_000, value_parser = limits::int::<u64>(1..=1_000_000_000, "at most a billion"))]
        flows: u64,
        /// Largest fast-path worker count of the scaling run (at most 4 per core).
        #[arg(long, default_value_t = 1, value_parser = threads())]
        max_workers: usize,
        /// Longest an escalated flow waits for the slow stage's packets (ms).
        #[arg(long, default_value_t = PipelineConfig::default().max_wait_ms, value_parser = wait_ms())]
        max_wait_ms: f64,
        /// The inline stages' wait (ms).
        #[arg(long, default_value_t = PipelineConfig::default().fast_wait_ms, value_parser = wait_ms())]
        fast_wait_ms: f64,
        /// Also write the results as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Skip captures that cannot be read (listed) instead of stopping.
        #[arg(long)]
        keep_going: bool,
    },
    /// Pick routing thresholds on labeled captures for a target and write them into a models
    /// directory's manifest.
    Calibrate {
        /// Models directory to calibrate.
        #[arg(long)]
        models: PathBuf,
        /// nfstream per-flow label CSV, or a labels folder (every *nfstream_flows.csv in it).
        #[arg(long)]
        labels: PathBuf,
        /// Which captures of the bundled split to fit on.
        #[arg(long, value_enum, default_value_t = Split::Calibration)]
        split: Split,
        /// Which captures to check the result on, side by side.
        #[arg(long, value_enum, default_value_t = Split::Test)]
        check: Split,
        /// Target: cascade macro-F1 and accuracy each at most this far below the slow stage
        /// alone, fewest escalations.
        #[arg(long, default_value_t = 0.005, conflicts_with = "max_escalated", value_parser = limits::real(0.0..=1.0, "a fraction"))]
        max_drop: f64,
        /// Hold only macro-F1 to --max-drop, not accuracy.
        #[arg(long)]
        f1_only: bool,
        /// Target instead: at most this percentage of flows escalated, best macro-F1.
        #[arg(long, value_parser = limits::real(0.0..=100.0, "a percentage"))]
        max_escalated: Option<f64>,
        /// Longest wait for the inline stages' packets the features are seen through (ms).
        #[arg(long, default_value_t = PipelineConfig::default().fast_wait_ms, value_parser = wait_ms())]
        fast_wait_ms: f64,
        /// Longest wait for the slow stage's packets (ms).
        #[arg(long, default_value_t = PipelineConfig::default().max_wait_ms, value_parser = wait_ms())]
        max_wait_ms: f64,
        /// Write the calibrated models into this new directory.
        #[arg(long, conflicts_with_all = ["in_place", "dry_run"])]
        out: Option<PathBuf>,
        /// Rewrite the models directory's manifest, keeping the previous one as
        /// serveflow-model.toml.prev.
        #[arg(long, conflicts_with = "dry_run")]
        in_place: bool,
        /// Print the result only.
        #[arg(long)]
        dry_run: bool,
        /// Skip inputs that cannot be read (listed in the result) instead of stopping.
        #[arg(long)]
        keep_going: bool,
        /// Capture files or folders.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Train a models directory from labeled captures (runs `serveflow-train train`; see
    /// `serveflow train --help`).
    #[command(disable_help_flag = true)]
    Train {
        /// Arguments for `serveflow-train train`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Craft models over features x packets x size and pick them from the Pareto front (runs
    /// `serveflow-train craft`; see `serveflow craft --help`).
    #[command(disable_help_flag = true)]
    Craft {
        /// Arguments for `serveflow-train craft`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Runs `serveflow-train <command> <args>`. The trainer is its own binary so the serving
/// build never compiles LightGBM's C++ library; it is looked up next to this executable,
/// then on PATH.
fn trainer(command: &str, args: &[String]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("serveflow-train")))
        .filter(|p| p.is_file());
    let program = beside.unwrap_or_else(|| PathBuf::from("serveflow-train"));
    let status = std::process::Command::new(&program)
        .arg(command)
        .args(args)
        .status()
        .with_context(|| {
            format!(
                "running {}: the trainer is a separate binary (it builds LightGBM's C++ library); \
                 build it with `cargo xtask setup && cargo build --release -p serveflow-train`",
                program.display()
            )
        })?;
    if !status.success() {
        anyhow::bail!("serveflow-train {command} failed ({status})");
    }
    Ok(())
}

/// The error and its causes on one line, each cause once: a library error that already
/// quotes its source ("reading x: No such file") is not followed by that source again.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// A command line that parses but cannot run: exit 2, like clap's own refusals.
fn usage(message: &str) -> ExitCode {
    eprintln!("serveflow: error: {message}");
    ExitCode::from(2)
}

/// The checks between options that clap's per-option parsers cannot make.
fn check_options(command: &Command) -> Result<(), String> {
    let waits = match command {
        Command::Run {
            fast_wait_ms,
            max_wait_ms,
            ..
        }
        | Command::Replay {
            fast_wait_ms,
            max_wait_ms,
            ..
        }
        | Command::Bench {
            fast_wait_ms,
            max_wait_ms,
            ..
        }
        | Command::Calibrate {
            fast_wait_ms,
            max_wait_ms,
            ..
        } => Some((*fast_wait_ms, *max_wait_ms)),
        _ => None,
    };
    if let Some((fast, max)) = waits {
        if fast > max {
            return Err(format!(
                "--fast-wait-ms {fast} is longer than --max-wait-ms {max}: the inline stages \
                 decide before the slow stage's wait ends"
            ));
        }
    }
    if let Command::Replay {
        mode, threshold, ..
    } = command
    {
        if threshold.is_some() && *mode != Mode::Cascade {
            return Err(format!(
                "--threshold routes flows between stages; with --mode {} one stage decides \
                 every flow (drop one of the two)",
                mode.name()
            ));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    // Every subcommand's --help ends with the exit statuses too.
    let matches = Cli::command()
        .mut_subcommands(|s| s.after_help(EXIT_CODES))
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Err(message) = check_options(&cli.command) {
        return usage(&message);
    }
    let result = match cli.command {
        Command::Run {
            interface,
            mode,
            queues,
            duration,
            summary,
            models,
            task,
            out,
            report,
            workers,
            max_flows,
            flow_map_entries,
            slow_threads,
            fast_wait_ms,
            max_wait_ms,
            no_steer,
            metrics,
            status_interval,
            config,
            drain_only,
            rss,
        } => {
            let metrics = match metrics.as_str() {
                "off" => None,
                addr => match addr.parse() {
                    Ok(a) => Some(a),
                    Err(e) => {
                        return usage(&format!(
                            "--metrics {addr:?}: {e} (expected IP:PORT or off)"
                        ));
                    }
                },
            };
            let duration = match duration.map(Duration::try_from_secs_f64).transpose() {
                Ok(d) => d,
                Err(e) => return usage(&format!("--duration: {e}")),
            };
            serveflow::cmd::run::run(&RunOptions {
                interface,
                mode,
                queues,
                duration,
                summary,
                models,
                task,
                out,
                report,
                pipeline: PipelineConfig {
                    // 0: one worker per queue, decided once the queues are known.
                    workers: workers.unwrap_or(0),
                    pool: PoolConfig {
                        threads: slow_threads,
                        ..PoolConfig::default()
                    },
                    flow: FlowConfig {
                        max_flows,
                        ..FlowConfig::default()
                    },
                    fast_wait_ms,
                    max_wait_ms,
                    ..PipelineConfig::default()
                },
                flow_map_entries,
                steer: !no_steer,
                metrics,
                status_interval_s: status_interval,
                config,
                drain_only,
                rss,
            })
        }
        Command::Status { interface, json } => {
            serveflow::cmd::status::run(&serveflow::cmd::status::StatusOptions {
                interface,
                json,
                bpffs: PathBuf::from("/sys/fs/bpf"),
            })
        }
        Command::Extract {
            captures,
            format,
            out,
            idle_timeout,
            active_timeout,
            end_on_fin_rst,
            features,
            packets,
            within_ms,
            profile,
            services,
            counters,
            interval_ms,
            keep_going,
        } => serveflow::cmd::extract::run(&ExtractOptions {
            profile,
            services,
            counters,
            interval_ms,
            keep_going,
            features: FeatureSpec {
                packets,
                horizon_ns: within_ms.map_or(u64::MAX, serveflow::pipeline::wait_ns),
                ..features
            },
            captures,
            format,
            out,
            flow: FlowConfig {
                idle_timeout_s: idle_timeout,
                active_timeout_s: active_timeout,
                end_on_fin_rst,
                ..FlowConfig::default()
            },
        }),
        Command::Models {
            task,
            models,
            check: Some(dir),
            json,
            ..
        } => {
            let _ = (task, models);
            return match serveflow::cmd::models::check(&dir, json) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("serveflow: error: {}", message(&e));
                    ExitCode::FAILURE
                }
            };
        }
        Command::Models {
            task,
            models,
            captures,
            ..
        } => serveflow::cmd::models::run(&ModelsOptions {
            task,
            models,
            captures,
        }),
        Command::Replay {
            inputs,
            models,
            task,
            speed,
            workers,
            slow_threads,
            slow_queue,
            max_batch,
            batch_wait_us,
            fast_wait_ms,
            max_wait_ms,
            no_pin,
            out,
            report,
            labels,
            split,
            idle_timeout,
            mode,
            threshold,
            keep_going,
        } => serveflow::cmd::replay::run(&ReplayOptions {
            keep_going,
            inputs,
            models,
            task,
            pipeline: PipelineConfig {
                workers,
                pool: PoolConfig {
                    threads: slow_threads,
                    queue: slow_queue,
                    max_batch,
                    max_wait_us: batch_wait_us,
                    ..PoolConfig::default()
                },
                flow: FlowConfig {
                    idle_timeout_s: idle_timeout,
                    ..FlowConfig::default()
                },
                fast_wait_ms,
                max_wait_ms,
                speed,
                pin: !no_pin,
                ..PipelineConfig::default()
            },
            out,
            report,
            labels,
            split,
            mode,
            threshold,
        }),
        Command::Bench {
            data,
            models,
            flows,
            max_workers,
            max_wait_ms,
            fast_wait_ms,
            out,
            keep_going,
        } => serveflow::cmd::bench::run(&BenchOptions {
            keep_going,
            data,
            models,
            flows,
            max_workers,
            max_wait_ms,
            fast_wait_ms,
            out,
        }),
        Command::Calibrate {
            models,
            labels,
            split,
            check,
            max_drop,
            f1_only,
            max_escalated,
            fast_wait_ms,
            max_wait_ms,
            out,
            in_place,
            dry_run,
            keep_going,
            inputs,
        } => {
            let output = match (out, in_place, dry_run) {
                (Some(dir), _, _) => Some(Output::NewDir(dir)),
                (None, true, _) => Some(Output::InPlace),
                (None, false, true) => Some(Output::DryRun),
                (None, false, false) => None,
            };
            output.ok_or_else(|| anyhow::anyhow!(
                "say where the calibrated models go: --out DIR (a new directory), --in-place, or --dry-run"
            )).and_then(|output| serveflow::cmd::calibrate::run(&CalibrateOptions {
                models,
                inputs,
                labels,
                split,
                check: Some(check),
                waits_ms: (fast_wait_ms, max_wait_ms),
                output,
                keep_going,
                target: match max_escalated {
                    Some(pct) => Target::MaxEscalated(pct / 100.0),
                    None if f1_only => Target::MaxF1Drop(max_drop),
                    None => Target::MaxDrop(max_drop),
                },
            }))
        }
        Command::Train { args } => trainer("train", &args),
        Command::Craft { args } => trainer("craft", &args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serveflow: error: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}
