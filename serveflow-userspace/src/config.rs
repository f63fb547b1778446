//! One configuration for every command: the TOML file `--config` reads, section by section
//! (`[capture]`, `[flow]`, `[pipeline]`, `[pool]`, `[routing]`, `[actions]`, `[metrics]`,
//! `[export]`), and what a report's `config.toml` writes back, so a report's configuration is
//! a valid `--config`. Command-line flags override the file; every field has a default, listed
//! with its meaning in `deploy/serveflow.toml`.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use serveflow_common::Action;

use crate::{
    export::{SinkConfig, Target},
    flow::FlowConfig,
    labels::Task,
    limits::{self, Choice},
    xdp::AttachMode,
};

/// Default longest wait for the inline stages' packets (ms): under ServeFlow's 16 ms target,
/// so every flow the inline stages decide is decided within it.
pub const DEFAULT_FAST_WAIT_MS: f64 = 15.0;
/// Default longest wait for the slow stage's packets (ms).
pub const DEFAULT_MAX_WAIT_MS: f64 = 1000.0;

/// A wait in ms as ns (negative waits are none).
pub fn wait_ns(ms: f64) -> u64 {
    (ms.max(0.0) * 1e6) as u64
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not TOML, an unknown section or field, or a value of the wrong type.
    #[error("{}: {message}", path.display())]
    Syntax {
        /// File.
        path: PathBuf,
        /// The parser's message, on one line.
        message: String,
    },
    /// A value outside its range, or two values that contradict each other.
    #[error("{field} = {value}: {why}")]
    Value {
        /// `section.field`.
        field: String,
        /// The value given.
        value: String,
        /// What is wrong with it.
        why: String,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where packets come from.
    pub capture: CaptureConfig,
    /// The flow table.
    pub flow: FlowConfig,
    /// Models and the fast-path workers.
    pub pipeline: PipelineSection,
    /// The slow pool.
    pub pool: PoolConfig,
    /// Routing overrides.
    pub routing: RoutingSection,
    /// Class name -> `pass`, `drop` or `mark:N`: what the kernel does with a decided flow's
    /// later packets (live runs).
    pub actions: BTreeMap<String, String>,
    /// Live metrics and status lines.
    pub metrics: MetricsConfig,
    /// Where verdicts, summaries and reports go.
    pub export: ExportConfig,
}

/// `[capture]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Live: the interface to attach to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Live: XDP attach mode, `native` (driver) or `skb` (generic).
    pub xdp_mode: AttachMode,
    /// Live: AF_XDP sockets, one per RX queue from 0 (absent: every RX queue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queues: Option<u32>,
    /// Live: entries of the kernel's flow and verdict maps (LRU).
    pub map_entries: u32,
    /// Live: steer only the packets undecided flows still need to userspace (false: every
    /// TCP/UDP packet).
    pub steer: bool,
    /// Live, a worker per queue: which worker owns a flow.
    pub rss: RssMode,
    /// Replay: how fast captures are fed (`max`, `virtual`, `realtime` or a factor).
    pub speed: Speed,
    /// Skip inputs that cannot be read (listed in the summary) instead of stopping.
    pub keep_going: bool,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            interface: None,
            xdp_mode: AttachMode::Native,
            queues: None,
            map_entries: serveflow_common::FLOW_MAP_ENTRIES as u32,
            steer: true,
            rss: RssMode::Auto,
            speed: Speed::Virtual,
            keep_going: false,
        }
    }
}

/// `[pipeline]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSection {
    /// Models directory (absent: the bundled models of `task`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<PathBuf>,
    /// Task whose bundled models to use.
    pub task: Task,
    /// `cascade`, or one stage alone (`fast-only`, `slow-only`: the baselines).
    pub mode: Mode,
    /// Fast-path workers (absent: one per AF_XDP socket live, 1 for replay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// Longest a flow waits, from its first packet, for the inline stages' packets (ms).
    pub fast_wait_ms: f64,
    /// Longest an escalated flow waits for the slow stage's packets (ms).
    pub max_wait_ms: f64,
    /// Pin threads to cores.
    pub pin: bool,
    /// Interval of the report's `.hlog` (ms).
    pub interval_ms: u64,
    /// CPUs to place threads on (workers first, then the slow pool); absent: all (live runs
    /// take the NIC's NUMA node when the kernel names it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Vec<usize>>,
}

impl Default for PipelineSection {
    fn default() -> Self {
        PipelineSection {
            models: None,
            task: Task::Service,
            mode: Mode::Cascade,
            workers: None,
            fast_wait_ms: DEFAULT_FAST_WAIT_MS,
            max_wait_ms: DEFAULT_MAX_WAIT_MS,
            pin: true,
            interval_ms: 1000,
            cpus: None,
        }
    }
}

/// `[pool]`: the slow pool.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Threads.
    pub threads: usize,
    /// Jobs the queue holds before workers fall back.
    pub queue: usize,
    /// Largest batch.
    pub max_batch: usize,
    /// Longest a batch waits to fill after its first job (µs).
    pub max_wait_us: u64,
    /// Nice value of the pool threads (0..=19). The slow stage is best effort (a flow it
    /// cannot take keeps its fast answer), while a starved fast path or NIC loses packets, so
    /// where they share cores the scheduler should favour the fast path.
    pub nice: i32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            threads: 1,
            queue: 4096,
            max_batch: 32,
            max_wait_us: 200,
            nice: 10,
        }
    }
}

/// `[routing]`: overrides of the models directory's routing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSection {
    /// Escalate when uncertainty exceeds this, for every class of every inline stage
    /// (-1..=1; below 0 escalates every flow; cascade mode only). Absent: the manifest's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

/// `[metrics]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Prometheus endpoint (`GET /metrics`), `IP:PORT` or `off`.
    #[serde(with = "listen")]
    pub listen: Option<SocketAddr>,
    /// Seconds between status lines on stderr (0: none).
    pub status_interval_s: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            status_interval_s: 10,
        }
    }
}

/// `[export]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// Verdict JSON lines to this file (`-`: stdout); absent: counted only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
    /// Latency report directory (.hgrm, .hlog, summary.json, CDF plot, config.toml).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<PathBuf>,
    /// Live: the run's summary as JSON to this file too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<PathBuf>,
    /// Export sinks, each an URL: `ipfix+udp://HOST:PORT`, `ipfix+tcp://HOST:PORT`,
    /// `kafka://BROKER[,BROKER...]/TOPIC`, `file:PATH`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<Target>,
    /// Verdicts each sink may hold queued; past that it drops (counted).
    pub queue: usize,
    /// IPFIX observation domain id.
    pub ipfix_domain: u32,
    /// At the end of a run, how long each sink may take to deliver what it holds (ms).
    pub close_timeout_ms: u64,
}

impl Default for ExportConfig {
    fn default() -> Self {
        let sinks = SinkConfig::default();
        ExportConfig {
            out: None,
            report: None,
            summary: None,
            to: Vec::new(),
            queue: sinks.queue,
            ipfix_domain: sinks.domain,
            close_timeout_ms: sinks.close_timeout_ms,
        }
    }
}

impl ExportConfig {
    /// How the sinks queue and identify themselves.
    pub fn sinks(&self) -> SinkConfig {
        SinkConfig {
            queue: self.queue,
            domain: self.ipfix_domain,
            close_timeout_ms: self.close_timeout_ms,
        }
    }
}

/// `off` or an address, both ways.
mod listen {
    use std::net::SocketAddr;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(a) => s.collect_str(a),
            None => s.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_listen(&text).map_err(serde::de::Error::custom)
    }
}

/// A metrics address: `IP:PORT` or `off`.
pub fn parse_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    match text {
        "off" => Ok(None),
        addr => addr
            .parse()
            .map(Some)
            .map_err(|e| format!("{addr:?}: {e} (expected IP:PORT or off)")),
    }
}

impl Config {
    /// Reads `path` (unknown sections and fields are errors) and checks every value.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        config.check()?;
        Ok(config)
    }

    /// The file as `load` reads it back (a report's `config.toml`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# config not serialisable: {e}\n"))
    }

    /// Checks every value against the range its command-line flag has, and the waits against
    /// each other.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, value: &dyn std::fmt::Display, why: String| ConfigError::Value {
            field: option_name(field),
            value: value.to_string(),
            why,
        };
        let int = |field: &str, v: u64, range: std::ops::RangeInclusive<u64>, why: &'static str| {
            limits::check_int(v, range, why).map_err(|e| bad(field, &v, e))
        };
        let real =
            |field: &str, v: f64, range: std::ops::RangeInclusive<f64>, why: &'static str| {
                limits::check_real(v, range, why).map_err(|e| bad(field, &v, e))
            };
        let c = &self.capture;
        if let Some(q) = c.queues {
            int(
                "capture.queues",
                u64::from(q),
                1..=serveflow_common::MAX_QUEUES as u64,
                "sockets the XDP program can redirect to",
            )?;
        }
        limits::check_map_entries(u64::from(c.map_entries))
            .map_err(|e| bad("capture.map_entries", &c.map_entries, e))?;
        let f = &self.flow;
        int(
            "flow.idle_timeout_s",
            f.idle_timeout_s,
            1..=604_800,
            "at most one week",
        )?;
        int(
            "flow.active_timeout_s",
            f.active_timeout_s,
            1..=604_800,
            "at most one week",
        )?;
        int(
            "flow.max_flows",
            f.max_flows as u64,
            1..=limits::MAX_FLOWS,
            "flow-table limit",
        )?;
        let p = &self.pipeline;
        if let Some(w) = p.workers {
            limits::check_threads(w as u64).map_err(|e| bad("pipeline.workers", &w, e))?;
        }
        real(
            "pipeline.fast_wait_ms",
            p.fast_wait_ms,
            0.0..=limits::MAX_WAIT_MS,
            "at most one day",
        )?;
        real(
            "pipeline.max_wait_ms",
            p.max_wait_ms,
            0.0..=limits::MAX_WAIT_MS,
            "at most one day",
        )?;
        if p.fast_wait_ms > p.max_wait_ms {
            return Err(bad(
                "pipeline.fast_wait_ms",
                &p.fast_wait_ms,
                format!(
                    "longer than --max-wait-ms {}: the inline stages decide before the slow \
                     stage's wait ends",
                    p.max_wait_ms
                ),
            ));
        }
        int(
            "pipeline.interval_ms",
            p.interval_ms,
            1..=86_400_000,
            "at most a day",
        )?;
        let pool = &self.pool;
        limits::check_threads(pool.threads as u64)
            .map_err(|e| bad("pool.threads", &pool.threads, e))?;
        int(
            "pool.queue",
            pool.queue as u64,
            1..=limits::MAX_QUEUE,
            "slow-queue limit",
        )?;
        int(
            "pool.max_batch",
            pool.max_batch as u64,
            1..=limits::MAX_BATCH,
            "slow-batch limit",
        )?;
        int(
            "pool.max_wait_us",
            pool.max_wait_us,
            0..=10_000_000,
            "at most 10 s",
        )?;
        if !(0..=19).contains(&pool.nice) {
            return Err(bad("pool.nice", &pool.nice, "outside 0..=19".into()));
        }
        if let Some(t) = self.routing.threshold {
            real(
                "routing.threshold",
                t,
                -1.0..=1.0,
                "uncertainty is within 0..=1",
            )?;
            if p.mode != Mode::Cascade {
                return Err(bad(
                    "routing.threshold",
                    &t,
                    format!(
                        "routes flows between stages; with --mode {} one stage decides every \
                         flow (drop one of the two)",
                        p.mode.name()
                    ),
                ));
            }
        }
        for (class, action) in &self.actions {
            parse_action(action)
                .map_err(|why| bad(&format!("actions.{class}"), &format!("{action:?}"), why))?;
        }
        int(
            "metrics.status_interval_s",
            self.metrics.status_interval_s,
            0..=86_400,
            "at most a day",
        )?;
        let e = &self.export;
        int(
            "export.queue",
            e.queue as u64,
            1..=limits::MAX_QUEUE,
            "verdicts a sink may hold",
        )?;
        int(
            "export.close_timeout_ms",
            e.close_timeout_ms,
            0..=600_000,
            "at most 10 minutes",
        )?;
        Ok(())
    }
}

/// A field as both places name it: `--flag ([section] key)`, or `[section] key` for fields
/// only the file sets.
fn option_name(field: &str) -> String {
    let flag = match field {
        "capture.queues" => "--queues",
        "capture.map_entries" => "--flow-map-entries",
        "flow.idle_timeout_s" => "--idle-timeout",
        "flow.active_timeout_s" => "--active-timeout",
        "flow.max_flows" => "--max-flows",
        "pipeline.workers" => "--workers",
        "pipeline.fast_wait_ms" => "--fast-wait-ms",
        "pipeline.max_wait_ms" => "--max-wait-ms",
        "pool.threads" => "--slow-threads",
        "pool.queue" => "--slow-queue",
        "pool.max_batch" => "--max-batch",
        "pool.max_wait_us" => "--batch-wait-us",
        "routing.threshold" => "--threshold",
        "metrics.status_interval_s" => "--status-interval",
        _ => "",
    };
    let key = match field.split_once('.') {
        Some((section, key)) => format!("[{section}] {key}"),
        None => field.to_owned(),
    };
    if flag.is_empty() {
        key
    } else {
        format!("{flag} ({key})")
    }
}

/// One class's kernel action as the maps hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassAction {
    /// Class index.
    pub class: u32,
    /// What the kernel does.
    pub action: Action,
    /// The skb mark, for [`Action::Mark`].
    pub mark: u32,
}

/// `pass`, `drop` or `mark:N` (decimal or 0x hex, not 0).
pub fn parse_action(text: &str) -> Result<(Action, u32), String> {
    match text {
        "pass" => Ok((Action::Pass, 0)),
        "drop" => Ok((Action::Drop, 0)),
        other => match other.strip_prefix("mark:") {
            Some(n) => {
                let n = n.trim();
                let mark = match n.strip_prefix("0x") {
                    Some(hex) => u32::from_str_radix(hex, 16),
                    None => n.parse(),
                }
                .map_err(|_| "the mark must be a 32-bit number (decimal or 0x hex)".to_owned())?;
                if mark == 0 {
                    return Err("mark 0 means no mark; use pass".into());
                }
                Ok((Action::Mark, mark))
            }
            None => Err("expected \"pass\", \"drop\" or \"mark:N\"".into()),
        },
    }
}

/// The `[actions]` of `config` against the model's classes.
pub fn class_actions(
    actions: &BTreeMap<String, String>,
    classes: &[String],
) -> Result<Vec<ClassAction>, ConfigError> {
    let mut out = Vec::new();
    for (class, text) in actions {
        let field = format!("[actions] {class}");
        let Some(i) = classes.iter().position(|c| c == class) else {
            return Err(ConfigError::Value {
                field,
                value: format!("{text:?}"),
                why: format!(
                    "{class:?} is not a class of the model (classes: {})",
                    classes.join(", ")
                ),
            });
        };
        let (action, mark) = parse_action(text).map_err(|why| ConfigError::Value {
            field,
            value: format!("{text:?}"),
            why,
        })?;
        out.push(ClassAction {
            class: i as u32,
            action,
            mark,
        });
    }
    Ok(out)
}

/// `[capture] rss`: which worker owns a flow when each RX queue has its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RssMode {
    /// Ask the driver: queue ownership when it reports symmetric RSS, forwarding otherwise.
    #[default]
    Auto,
    /// The NIC sends both directions of a flow to one queue (say so when the driver cannot):
    /// each worker owns what its queue delivers, nothing is forwarded.
    Symmetric,
    /// Workers own flows by serveflow's own hash and forward what arrives on the wrong queue
    /// (always correct).
    Forward,
}

impl Choice for RssMode {
    const ALL: &'static [Self] = &[RssMode::Auto, RssMode::Symmetric, RssMode::Forward];
    fn name(self) -> &'static str {
        match self {
            RssMode::Auto => "auto",
            RssMode::Symmetric => "symmetric",
            RssMode::Forward => "forward",
        }
    }
}

/// How fast a capture is fed (`max`, `virtual`, `realtime` or a factor of real time).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Speed {
    /// As fast as the pipeline takes it; latency is wall time (measures service rate).
    Max,
    /// At the capture's pace times a factor; latency is wall time, waits included.
    Realtime(f64),
    /// As fast as possible, latency on the virtual clock: waits for packets taken from capture
    /// timestamps, plus measured queueing and inference.
    Virtual,
}

impl std::fmt::Display for Speed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Speed::Max => f.write_str("max"),
            Speed::Virtual => f.write_str("virtual"),
            Speed::Realtime(x) if *x == 1.0 => f.write_str("realtime"),
            Speed::Realtime(x) => write!(f, "{x}"),
        }
    }
}

impl From<Speed> for String {
    fn from(s: Speed) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for Speed {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "max" => Ok(Speed::Max),
            "virtual" => Ok(Speed::Virtual),
            "realtime" => Ok(Speed::Realtime(1.0)),
            other => match other.parse::<f64>() {
                Ok(f) if f > 0.0 && f.is_finite() => Ok(Speed::Realtime(f)),
                _ => Err(format!(
                    "{other:?}: expected max, realtime, virtual or a factor > 0 (2 = twice real time)"
                )),
            },
        }
    }
}

/// Which stages decide: the cascade as routed, or one stage alone (the baselines).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Inline stages, escalating uncertain flows to the slow pool.
    Cascade,
    /// The `fast` stage (the last inline one) decides every flow; earlier stages pass.
    FastOnly,
    /// Every flow waits for the slow stage's packets and goes to the slow pool.
    SlowOnly,
}

impl Choice for Mode {
    const ALL: &'static [Self] = &[Mode::Cascade, Mode::FastOnly, Mode::SlowOnly];
    fn name(self) -> &'static str {
        match self {
            Mode::Cascade => "cascade",
            Mode::FastOnly => "fast-only",
            Mode::SlowOnly => "slow-only",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;

    #[test]
    fn the_written_config_reads_back_the_same() {
        let mut c = Config::default();
        c.capture.interface = Some("eth1".into());
        c.capture.speed = Speed::Realtime(2.5);
        c.pipeline.mode = Mode::FastOnly;
        c.pipeline.workers = Some(2);
        c.pipeline.cpus = Some(vec![2, 3]);
        c.pool.threads = 2;
        c.routing.threshold = None;
        c.actions.insert("QUIC".into(), "mark:0x10".into());
        c.metrics.listen = None;
        c.export.out = Some("-".into());
        c.export.to = vec![
            "ipfix+udp://127.0.0.1:4739".parse().unwrap(),
            "kafka://b1:9092,b2:9092/v".parse().unwrap(),
        ];
        for config in [Config::default(), c] {
            let text = config.to_toml();
            let back: Config = toml::from_str(&text).unwrap();
            assert_eq!(back, config, "{text}");
            back.check().unwrap();
        }
    }

    #[test]
    fn the_example_file_documents_every_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/serveflow.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let example = Config::load(&path).unwrap();
        assert_eq!(
            example,
            Config::default(),
            "deploy/serveflow.toml sets only defaults"
        );
        // Every field of the defaults is in the file, set or commented out, with a comment.
        let defaults: toml::Table = toml::from_str(&Config::default().to_toml()).unwrap();
        for (section, fields) in &defaults {
            assert!(
                text.contains(&format!("[{section}]")),
                "[{section}] missing"
            );
            for key in fields.as_table().unwrap().keys() {
                assert!(
                    text.lines()
                        .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} ="))),
                    "[{section}] {key} missing"
                );
            }
        }
        for optional in [
            "interface",
            "queues",
            "models",
            "workers",
            "cpus",
            "threshold",
            "out",
            "report",
            "summary",
            "to",
        ] {
            assert!(
                text.contains(&format!("# {optional} =")),
                "{optional} not shown"
            );
        }
    }

    #[test]
    fn bad_values_name_the_flag_and_the_key() {
        let check = |edit: fn(&mut Config)| {
            let mut c = Config::default();
            edit(&mut c);
            c.check().unwrap_err().to_string()
        };
        let e = check(|c| c.pipeline.fast_wait_ms = 5000.0);
        assert!(
            e.contains("--fast-wait-ms ([pipeline] fast_wait_ms) = 5000"),
            "{e}"
        );
        assert!(e.contains("longer than --max-wait-ms 1000"), "{e}");
        let e = check(|c| c.pool.max_batch = 0);
        assert!(
            e.contains("--max-batch ([pool] max_batch) = 0: 0 is outside 1..=4096"),
            "{e}"
        );
        let e = check(|c| c.pool.nice = 40);
        assert!(e.contains("[pool] nice = 40"), "{e}");
        let e = check(|c| {
            c.routing.threshold = Some(0.5);
            c.pipeline.mode = Mode::SlowOnly;
        });
        assert!(
            e.contains("--threshold") && e.contains("--mode slow-only"),
            "{e}"
        );
        let e = check(|c| {
            c.actions.insert("DNS".into(), "explode".into());
        });
        assert!(e.contains("[actions] DNS"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[pool]\nthreads = 1\ncolour = 3\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("unknown field") && e.contains("colour"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        std::fs::write(&path, "[capture]\nspeed = \"warp\"\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("expected max, realtime, virtual"), "{e}");
        std::fs::write(&path, "[pipeline]\ntask = \"weather\"\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("unknown variant") && e.contains("service"),
            "{e}"
        );
        std::fs::write(&path, "[metrics]\nlisten = \"nowhere\"\n").unwrap();
        assert!(Config::load(&path)
            .unwrap_err()
            .to_string()
            .contains("IP:PORT or off"));
    }

    #[test]
    fn run_config_actions_are_checked_against_the_classes() {
        let classes: Vec<String> = vec!["DNS".into(), "BitTorrent".into(), "QUIC".into()];
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        let a = class_actions(
            &map(&[
                ("BitTorrent", "drop"),
                ("DNS", "pass"),
                ("QUIC", "mark:0x10"),
            ]),
            &classes,
        )
        .unwrap();
        let action = |class, action, mark| ClassAction {
            class,
            action,
            mark,
        };
        assert_eq!(
            a,
            vec![
                action(1, Action::Drop, 0),
                action(0, Action::Pass, 0),
                action(2, Action::Mark, 16)
            ]
        );
        assert_eq!(
            class_actions(&map(&[("QUIC", "mark:42")]), &classes).unwrap(),
            vec![action(2, Action::Mark, 42)]
        );
        for (pairs, needle) in [
            (&[("Nope", "drop")][..], "not a class of the model"),
            (&[("DNS", "mark:0")][..], "mark 0 means no mark"),
            (&[("DNS", "mark:lots")][..], "32-bit number"),
            (
                &[("DNS", "mark")][..],
                "expected \"pass\", \"drop\" or \"mark:N\"",
            ),
            (&[("DNS", "explode")][..], "expected \"pass\""),
        ] {
            let e = class_actions(&map(pairs), &classes)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{pairs:?}: {e}");
        }
    }
}
