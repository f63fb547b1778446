//! `serveflow`: the appliance's command line. Each subcommand is a thin shell over the library;
//! errors reach the operator as one line that says what to do.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use serveflow::{
    cmd::{
        extract::{ExtractOptions, Format},
        models::ModelsOptions,
        run::RunOptions,
    },
    features::FeatureSpec,
    flow::FlowConfig,
    xdp::AttachMode,
};

#[derive(Parser)]
#[command(
    name = "serveflow",
    version,
    about = "Early-packet flow classification on AF_XDP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
        /// AF_XDP sockets to open, one per RX queue from 0 (default: every RX queue).
        #[arg(long)]
        queues: Option<u32>,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Also write the summary as JSON to this file.
        #[arg(long)]
        summary: Option<PathBuf>,
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
        #[arg(long, default_value_t = FlowConfig::default().idle_timeout_s)]
        idle_timeout: u64,
        /// Active timeout in seconds.
        #[arg(long, default_value_t = FlowConfig::default().active_timeout_s)]
        active_timeout: u64,
        /// End TCP flows at FIN/RST.
        #[arg(long)]
        end_on_fin_rst: bool,
        /// Feature sets: comma list of stats, nprint, nprint-ipv6, payload:N (or none).
        #[arg(long, default_value = "stats")]
        features: FeatureSpec,
        /// Packets per flow the features cover.
        #[arg(long, default_value_t = FeatureSpec::default().packets)]
        packets: u32,
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
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Show a models directory (the bundled one when none is named); with captures, run both
    /// stages on every flow and tally their classes.
    Models {
        /// Task whose bundled models to use.
        #[arg(long, default_value = "service", value_parser = clap::builder::PossibleValuesParser::new(serveflow::model::bundled::TASKS))]
        task: String,
        /// Models directory (default: the bundled models of --task).
        #[arg(long)]
        models: Option<PathBuf>,
        /// Capture files to classify.
        captures: Vec<PathBuf>,
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

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            interface,
            mode,
            queues,
            duration,
            summary,
        } => {
            let duration = match duration.map(Duration::try_from_secs_f64).transpose() {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("serveflow: error: --duration: {e}");
                    return ExitCode::from(2);
                }
            };
            serveflow::cmd::run::run(&RunOptions {
                interface,
                mode,
                queues,
                duration,
                summary,
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
            profile,
            services,
            counters,
            interval_ms,
        } => serveflow::cmd::extract::run(&ExtractOptions {
            profile,
            services,
            counters,
            interval_ms,
            features: FeatureSpec {
                packets,
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
            captures,
        } => serveflow::cmd::models::run(&ModelsOptions {
            task,
            models,
            captures,
        }),
        Command::Train { args } => trainer("train", &args),
        Command::Craft { args } => trainer("craft", &args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serveflow: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
