//! Option groups more than one subcommand takes, flattened into each command's own `Args`:
//! the config file, the models, the serving pipeline and the outputs. Each group writes what
//! was given over the configuration (the file's, or the defaults), so a flag always wins.

use std::path::PathBuf;

use clap::{builder::TypedValueParser as _, Args};
use serveflow::{
    config::{self, Config, Mode, Speed},
    export::Target,
    labels::Task,
    limits::{self, Choice},
};

/// A value parser for a library choice (modes, tasks, splits), by its names.
pub fn choice<T: Choice + Send + Sync + Clone>() -> impl clap::builder::TypedValueParser<Value = T>
{
    clap::builder::PossibleValuesParser::new(T::names()).try_map(|name: String| {
        T::from_name(&name)
            .ok_or_else(|| format!("{name:?}: expected one of {}", T::names().join(", ")))
    })
}

/// Threads of one kind (workers, slow threads): 1..=4 per core.
pub fn threads() -> clap::builder::ValueParser {
    clap::builder::ValueParser::new(limits::threads)
}

/// A wait or timeout in ms: 0..=one day.
pub fn wait_ms() -> clap::builder::ValueParser {
    clap::builder::ValueParser::new(limits::real(0.0..=limits::MAX_WAIT_MS, "at most one day"))
}

/// A timeout in whole seconds: 1..=one week.
pub fn timeout_s() -> clap::builder::ValueParser {
    clap::builder::ValueParser::new(limits::int::<u64>(1..=604_800, "at most one week"))
}

/// `--config FILE`.
#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Settings file (TOML; sections [capture] [flow] [pipeline] [pool] [routing] [actions]
    /// [metrics] [export], see deploy/serveflow.toml); flags override it. A report's
    /// config.toml is one.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArgs {
    /// The file's configuration, or the defaults.
    pub fn load(&self) -> anyhow::Result<Config> {
        match &self.config {
            Some(path) => Config::load(path).map_err(|e| match e {
                // A value out of range is a bad command line, from the file as from a flag.
                config::ConfigError::Value { .. } => {
                    UsageError(format!("{}: {e}", path.display())).into()
                }
                other => other.into(),
            }),
            None => Ok(Config::default()),
        }
    }
}

/// `--models DIR` and `--task`.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Models directory [default: the bundled models of --task].
    #[arg(long, value_name = "DIR")]
    pub models: Option<PathBuf>,
    /// Task whose bundled models to use [default: service].
    #[arg(long, value_parser = choice::<Task>())]
    pub task: Option<Task>,
}

impl ModelArgs {
    /// Writes the given options over `c`.
    pub fn apply(&self, c: &mut Config) {
        if let Some(m) = &self.models {
            c.pipeline.models = Some(m.clone());
        }
        set(&mut c.pipeline.task, self.task);
    }
}

/// `--fast-wait-ms` and `--max-wait-ms`.
#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Longest a flow waits, from its first packet, for the inline stages' packets before they
    /// decide with what it has (ms) [default: 15].
    #[arg(long, value_parser = wait_ms())]
    pub fast_wait_ms: Option<f64>,
    /// Longest an escalated flow waits, from its first packet, for the slow stage's packets
    /// before it goes to the slow pool with what it has (ms) [default: 1000].
    #[arg(long, value_parser = wait_ms())]
    pub max_wait_ms: Option<f64>,
}

impl WaitArgs {
    /// Writes the given options over `c`.
    pub fn apply(&self, c: &mut Config) {
        if let Some(w) = self.fast_wait_ms {
            c.pipeline.fast_wait_ms = w;
        }
        if let Some(w) = self.max_wait_ms {
            c.pipeline.max_wait_ms = w;
        }
    }
}

/// The serving pipeline: workers, slow pool, flow table, routing.
#[derive(Args, Debug, Clone)]
pub struct ServingArgs {
    /// Fast-path workers (at most 4 per core) [default: live, one per AF_XDP socket, each
    /// draining its own queue; replay, 1].
    #[arg(long, value_parser = threads())]
    pub workers: Option<usize>,
    /// Slow-pool threads (at most 4 per core) [default: 1].
    #[arg(long, value_parser = threads())]
    pub slow_threads: Option<usize>,
    /// Slow-pool queue size; flows beyond it fall back [default: 4096].
    #[arg(long, value_parser = limits::int::<usize>(1..=limits::MAX_QUEUE, "slow-queue limit"))]
    pub slow_queue: Option<usize>,
    /// Slow-pool batch size [default: 32].
    #[arg(long, value_parser = limits::int::<usize>(1..=limits::MAX_BATCH, "slow-batch limit"))]
    pub max_batch: Option<usize>,
    /// Longest a slow batch waits to fill (µs) [default: 200].
    #[arg(long, value_parser = limits::int::<u64>(0..=10_000_000, "at most 10 s"))]
    pub batch_wait_us: Option<u64>,
    #[command(flatten)]
    pub waits: WaitArgs,
    /// Do not pin threads to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// Most flows the userspace flow tables hold (split between workers); beyond it the
    /// least recently seen flow is decided with what it has. Checked against available
    /// memory [default: 1048576].
    #[arg(long, value_parser = limits::int::<usize>(1..=limits::MAX_FLOWS, "flow-table limit"))]
    pub max_flows: Option<usize>,
    /// Idle timeout of a flow (s) [default: 120].
    #[arg(long, value_parser = timeout_s())]
    pub idle_timeout: Option<u64>,
}

impl ServingArgs {
    /// Writes the given options over `c`.
    pub fn apply(&self, c: &mut Config) {
        if self.workers.is_some() {
            c.pipeline.workers = self.workers;
        }
        let pool = &mut c.pool;
        set(&mut pool.threads, self.slow_threads);
        set(&mut pool.queue, self.slow_queue);
        set(&mut pool.max_batch, self.max_batch);
        set(&mut pool.max_wait_us, self.batch_wait_us);
        self.waits.apply(c);
        if self.no_pin {
            c.pipeline.pin = false;
        }
        set(&mut c.flow.max_flows, self.max_flows);
        set(&mut c.flow.idle_timeout_s, self.idle_timeout);
    }
}

/// `--mode` and `--threshold` (replay; a live run takes them from the config file, its
/// `--mode` being the XDP attach mode).
#[derive(Args, Debug, Clone)]
pub struct RoutingArgs {
    /// cascade, or one stage alone (fast-only, slow-only: the baselines) [default: cascade].
    #[arg(long, value_parser = choice::<Mode>())]
    pub mode: Option<Mode>,
    /// Escalate when uncertainty exceeds this, for every class (overrides the models
    /// directory's thresholds; -1..=1, below 0 escalates every flow; cascade mode only).
    #[arg(long, value_parser = limits::real(-1.0..=1.0, "uncertainty is within 0..=1"))]
    pub threshold: Option<f64>,
}

impl RoutingArgs {
    /// Writes the given options over `c`.
    pub fn apply(&self, c: &mut Config) {
        set(&mut c.pipeline.mode, self.mode);
        if self.threshold.is_some() {
            c.routing.threshold = self.threshold;
        }
    }
}

/// `--out`, `--export` and `--report`.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Verdict JSON lines to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Also export verdicts to ipfix+udp://HOST:PORT, ipfix+tcp://HOST:PORT,
    /// kafka://BROKER[,BROKER...]/TOPIC or file:PATH (repeatable; replaces `[export] to`).
    /// Off the fast path: a sink that falls behind or whose peer is down drops, counted.
    #[arg(long = "export", value_name = "URL", value_parser = export_target)]
    pub export: Vec<Target>,
    /// Write the latency report (.hgrm, .hlog, summary.json, CDF plot, index.html,
    /// config.toml) here.
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
    /// Print the summary as JSON on stdout instead of the text lines on stderr.
    #[arg(long)]
    pub json: bool,
}

impl OutputArgs {
    /// Writes the given options over `c`.
    pub fn apply(&self, c: &mut Config) {
        if self.out.is_some() {
            c.export.out.clone_from(&self.out);
        }
        if self.report.is_some() {
            c.export.report.clone_from(&self.report);
        }
        if !self.export.is_empty() {
            c.export.to.clone_from(&self.export);
        }
    }
}

impl OutputArgs {
    /// `--json` and `--out -` cannot share stdout.
    pub fn check_stdout(&self, c: &Config) -> Result<(), UsageError> {
        if self.json && c.export.out.as_deref() == Some(std::path::Path::new("-")) {
            return Err(UsageError(
                "--json and --out - both write to stdout: give --out a file".into(),
            ));
        }
        Ok(())
    }
}

/// An export URL ([`Target`]).
pub fn export_target(text: &str) -> Result<Target, String> {
    text.parse()
        .map_err(|e: serveflow::export::TargetError| e.to_string())
}

/// A duration in seconds (fractions allowed): 1 ms..=one year.
pub fn duration_s() -> clap::builder::ValueParser {
    let seconds = limits::real(0.001..=31_536_000.0, "up to a year");
    clap::builder::ValueParser::new(move |text: &str| {
        seconds(text).map(std::time::Duration::from_secs_f64)
    })
}

/// `--speed`.
pub fn speed() -> clap::builder::ValueParser {
    clap::builder::ValueParser::new(|s: &str| s.parse::<Speed>())
}

/// A `--metrics` value: an address, or None for `off`. A type of its own because clap's
/// derive reads `Option<Option<T>>` as a flag with an optional `T` value, and a parser that
/// yields `Option<SocketAddr>` then fails its downcast (a panic on any `--metrics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listen(pub Option<std::net::SocketAddr>);

/// `--metrics IP:PORT|off`.
pub fn listen() -> clap::builder::ValueParser {
    clap::builder::ValueParser::new(|s: &str| config::parse_listen(s).map(Listen))
}

/// `*slot = v` when `v` was given.
pub fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}

/// A configuration whose values contradict each other or leave their range: a bad command
/// line (exit 2), whether the value came from a flag or the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Checks the merged configuration.
pub fn checked(c: Config) -> anyhow::Result<Config> {
    c.check().map_err(|e| UsageError(e.to_string()))?;
    Ok(c)
}
