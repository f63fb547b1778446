//! `serveflow run`: attach to an interface, receive its TCP/UDP packets through AF_XDP, classify
//! every flow with the serving pipeline (the same one `serveflow replay` runs), and print a
//! summary on SIGINT/SIGTERM or after `--duration`. The session itself is
//! [`serveflow::live`]; this is its command line.

use std::{
    io::Write as _,
    path::PathBuf,
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;
use serveflow::{
    config::{Config, RssMode},
    limits,
    live::{self, LiveRun},
    report::files,
    xdp::AttachMode,
};

use super::args::{self, choice, ConfigArgs, ModelArgs, OutputArgs, ServingArgs};

/// `serveflow run`: attach to an interface and receive its TCP/UDP flows through AF_XDP until
/// SIGINT/SIGTERM.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Interface to attach to (or [capture] interface in the config file).
    #[arg(short, long)]
    pub interface: Option<String>,
    /// XDP attach mode: native (driver) or skb (generic) [default: native].
    #[arg(short, long, value_parser = choice::<AttachMode>())]
    pub mode: Option<AttachMode>,
    /// AF_XDP sockets to open, one per RX queue from 0 (default: every RX queue; at most
    /// the interface's RX queues).
    #[arg(long, value_parser = limits::int::<u32>(1..=serveflow_common::MAX_QUEUES as u64, "sockets the XDP program can redirect to"))]
    pub queues: Option<u32>,
    /// Stop after this many seconds.
    #[arg(long, value_parser = args::duration_s())]
    pub duration: Option<Duration>,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub models: ModelArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub serving: ServingArgs,
    /// Entries of the kernel's flow and verdict maps (LRU: beyond it the least recently
    /// seen flow is forgotten and, if seen again, steered again from its next packet).
    /// 1..=2^28, and checked against available memory [default: 262144].
    #[arg(long, value_parser = limits::map_entries)]
    pub flow_map_entries: Option<u32>,
    /// Steer every TCP/UDP packet to userspace, not only the packets undecided flows need.
    #[arg(long)]
    pub no_steer: bool,
    /// Prometheus metrics endpoint (`GET /metrics`), IP:PORT or `off` [default:
    /// 127.0.0.1:9464].
    #[arg(long, value_parser = args::listen())]
    pub metrics: Option<args::Listen>,
    /// Seconds between status lines on stderr (0: none) [default: 10].
    #[arg(long, value_parser = limits::int::<u64>(0..=86_400, "at most a day"))]
    pub status_interval: Option<u64>,
    /// Receive and count only (no parsing, no models): the interface's AF_XDP ceiling.
    #[arg(long, conflicts_with_all = ["out", "report", "models", "workers", "slow_threads"])]
    pub drain_only: bool,
    /// With a worker per queue, which one owns a flow: `auto` asks the driver whether
    /// its RSS is symmetric (then each worker owns its queue's flows), else workers
    /// forward packets to the flow's owner by hash [default: auto].
    #[arg(long, value_parser = choice::<RssMode>())]
    pub rss: Option<RssMode>,
}

impl RunArgs {
    /// The configuration: the file's (or the defaults), the flags over it.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut c = self.config.load()?;
        let cap = &mut c.capture;
        if self.interface.is_some() {
            cap.interface.clone_from(&self.interface);
        }
        args::set(&mut cap.xdp_mode, self.mode);
        if self.queues.is_some() {
            cap.queues = self.queues;
        }
        args::set(&mut cap.map_entries, self.flow_map_entries);
        if self.no_steer {
            cap.steer = false;
        }
        args::set(&mut cap.rss, self.rss);
        self.models.apply(&mut c);
        self.output.apply(&mut c);
        self.serving.apply(&mut c);
        if self.summary.is_some() {
            c.export.summary.clone_from(&self.summary);
        }
        args::set(&mut c.metrics.listen, self.metrics.map(|l| l.0));
        args::set(&mut c.metrics.status_interval_s, self.status_interval);
        if c.capture.interface.is_none() {
            return Err(args::UsageError(
                "the interface to attach to: give --interface (or [capture] interface in the config file)".into(),
            )
            .into());
        }
        args::checked(c)
    }

    /// Runs until SIGINT/SIGTERM or the duration, then prints (and optionally writes) the
    /// summary and the report.
    pub fn run(&self) -> anyhow::Result<()> {
        let config = self.config()?;
        self.output.check_stdout(&config)?;
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, Arc::clone(&stop))
                .context("installing the SIGINT/SIGTERM handler")?;
        }
        // Outputs first: a path that cannot be written fails before anything is attached.
        if let Some(report) = &config.export.report {
            files::prepare(report).context("--report")?;
        }
        if let Some(summary) = &config.export.summary {
            files::check_output_file(summary).context("--summary")?;
        }
        let run = LiveRun {
            duration: self.duration,
            drain_only: self.drain_only,
        };
        let outcome = live::run(&config, run, &stop)?;
        let summary = &outcome.summary;
        if self.output.json {
            let json = serde_json::to_string_pretty(summary)?;
            writeln!(std::io::stdout().lock(), "{json}")?;
        } else {
            summary.write_lines(&mut std::io::stderr().lock())?;
        }
        if let Some(path) = &outcome.config.export.summary {
            let json = serde_json::to_string_pretty(summary)?;
            std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        }
        if let (Some(report), Some(result)) = (&outcome.config.export.report, &outcome.result) {
            let head = format!(
                "# serveflow run on {}: the settings that ran (usable as --config)\n\n",
                summary.interface
            );
            files::write(
                report,
                &result.stats,
                &summary.serving,
                &(head + &outcome.config.to_toml()),
                result.started,
            )?;
            eprintln!("serveflow: report written to {}", report.display());
        }
        if let Some(e) = outcome
            .result
            .as_ref()
            .and_then(|r| r.output_error.as_ref())
        {
            anyhow::bail!("writing verdicts: {e}");
        }
        if summary.interface_gone {
            anyhow::bail!(
                "{} disappeared while serving (the kernel detached XDP and unbound the sockets); every flow seen got its verdict and the summary was written",
                summary.interface
            );
        }
        Ok(())
    }
}
