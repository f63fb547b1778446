//! `serveflow`: the appliance's command line. Each subcommand is a thin shell over the library;
//! errors reach the operator as one line that says what to do.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use serveflow::{
    cmd::{
        extract::{ExtractOptions, Format},
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serveflow: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
