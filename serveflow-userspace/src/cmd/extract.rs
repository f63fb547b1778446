//! `serveflow extract`: one row per flow from capture files, as CSV or JSON lines.

use std::{
    io::{BufWriter, Write},
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
};

use anyhow::Context as _;

use serveflow::{
    capture::inputs,
    extract::{extract, FlowRecord},
    features::{FeatureSpec, FeatureState},
    flow::FlowConfig,
    limits,
    periodic::PeriodicExport,
    pipeline::summary::counts,
    services::ServiceMap,
    ticker::{count, Ticker},
};

use super::args::{self, ConfigArgs};

/// `serveflow extract`: read pcap/pcapng files as one timeline and write one row per TCP/UDP
/// flow.
#[derive(clap::Args, Debug)]
pub struct ExtractArgs {
    /// Capture files or folders.
    #[arg(required = true)]
    pub captures: Vec<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    /// Output file (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Idle timeout in seconds [default: 120].
    #[arg(long, value_parser = args::timeout_s())]
    pub idle_timeout: Option<u64>,
    /// Active timeout in seconds [default: 1800].
    #[arg(long, value_parser = args::timeout_s())]
    pub active_timeout: Option<u64>,
    /// End TCP flows at FIN/RST.
    #[arg(long)]
    pub end_on_fin_rst: bool,
    /// Feature sets: comma list of stats, nprint, nprint-ipv6, payload:N (or none).
    #[arg(long, default_value = "stats")]
    pub features: FeatureSpec,
    /// Packets per flow the features cover (1..=64).
    #[arg(long, default_value_t = FeatureSpec::default().packets, value_parser = limits::int::<u32>(1..=u64::from(limits::MAX_PACKETS), "the deepest a stage may wait for"))]
    pub packets: u32,
    /// Features see only the packets within this many ms of a flow's first (what a stage
    /// with this wait has when it decides).
    #[arg(long, value_parser = args::wait_ms())]
    pub within_ms: Option<f64>,
    /// Print the cost of each feature set (CPU per packet, state and output per flow).
    #[arg(long)]
    pub profile: bool,
    /// Services file (TOML: names, domain patterns, IP prefixes).
    #[arg(long)]
    pub services: Option<PathBuf>,
    /// Write periodic per-flow and per-service counters (JSON lines) to this file.
    #[arg(long)]
    pub counters: Option<PathBuf>,
    /// Interval of the periodic counters, in milliseconds of capture time.
    #[arg(long, default_value_t = 1000, value_parser = limits::int::<u64>(1..=86_400_000, "at most a day"))]
    pub interval_ms: u64,
    /// Skip inputs that cannot be read (listed at the end) instead of stopping.
    #[arg(long)]
    pub keep_going: bool,
    /// Print the summary as one JSON document on stdout instead of the lines on stderr (the
    /// rows then go to --out FILE).
    #[arg(long, requires = "out", conflicts_with = "profile")]
    pub json: bool,
}

impl ExtractArgs {
    /// Runs `serveflow extract` with the file's `[flow]` and `[capture]` under the flags.
    pub fn run(&self) -> anyhow::Result<()> {
        let mut c = self.config.load()?;
        args::set(&mut c.flow.idle_timeout_s, self.idle_timeout);
        args::set(&mut c.flow.active_timeout_s, self.active_timeout);
        if self.end_on_fin_rst {
            c.flow.end_on_fin_rst = true;
        }
        if self.keep_going {
            c.capture.keep_going = true;
        }
        let c = args::checked(c)?;
        run(&ExtractOptions {
            captures: self.captures.clone(),
            format: self.format,
            out: self.out.clone(),
            flow: c.flow,
            features: FeatureSpec {
                packets: self.packets,
                horizon_ns: self.within_ms.map_or(u64::MAX, serveflow::config::wait_ns),
                ..self.features
            },
            profile: self.profile,
            services: self.services.clone(),
            counters: self.counters.clone(),
            interval_ms: self.interval_ms,
            keep_going: c.capture.keep_going,
            json: self.json,
        })
    }
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// Options of `serveflow extract`.
#[derive(Clone, Debug)]
pub struct ExtractOptions {
    /// Capture files, merged into one timeline.
    pub captures: Vec<PathBuf>,
    /// Output format.
    pub format: Format,
    /// Output file (stdout when absent).
    pub out: Option<PathBuf>,
    /// Flow-table settings.
    pub flow: FlowConfig,
    /// Features per flow.
    pub features: FeatureSpec,
    /// Measure the cost of each feature set instead of writing rows.
    pub profile: bool,
    /// Services file (TOML); without one only server names are reported.
    pub services: Option<PathBuf>,
    /// Periodic counters (JSON lines) go here, every `interval_ms` of capture time.
    pub counters: Option<PathBuf>,
    /// Interval of the periodic counters.
    pub interval_ms: u64,
    /// Skip unreadable inputs (listed at the end) instead of stopping.
    pub keep_going: bool,
    /// The summary as JSON on stdout (the rows in `out`).
    pub json: bool,
}

const CSV_HEADER: &str = "src,sport,dst,dport,proto,first_seen_us,last_seen_us,packets,bytes,src2dst_packets,end,service,server_name";

/// Writes feature values compactly: integers without a fraction, others with 6 digits.
fn push_value(line: &mut String, v: f32) {
    use std::fmt::Write as _;
    if v.fract() == 0.0 && v.abs() < 1e9 {
        let _ = write!(line, ",{}", v as i64);
    } else {
        let _ = write!(line, ",{v:.6}");
    }
}

fn csv_row(r: &FlowRecord) -> String {
    let end = serde_json::to_value(r.end)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{}",
        r.flow.src,
        r.flow.sport,
        r.flow.dst,
        r.flow.dport,
        r.flow.proto,
        r.first_seen_us,
        r.last_seen_us,
        r.packets,
        r.bytes,
        r.src2dst_packets,
        end,
        r.service,
        r.server_name
    )
}

/// Runs the extraction and writes the rows; the report goes to stderr.
pub fn run(opts: &ExtractOptions) -> anyhow::Result<()> {
    let inputs = inputs::resolve(&opts.captures, opts.keep_going)?;
    if opts.profile {
        return run_profile(opts, &inputs.files);
    }
    let sink: Box<dyn Write> = match &opts.out {
        Some(path) => Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::new(sink);
    if opts.format == Format::Csv {
        let names = opts.features.names();
        let sep = if names.is_empty() { "" } else { "," };
        writeln!(out, "{CSV_HEADER}{sep}{}", names.join(","))?;
    }
    let mut write_err: Option<std::io::Error> = None;
    let mut values = Vec::new();
    let mut services = match &opts.services {
        Some(path) => ServiceMap::load(path)?,
        None => ServiceMap::default(),
    };
    let mut periodic = match &opts.counters {
        Some(path) => Some(PeriodicExport::new(
            opts.interval_ms,
            Box::new(BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            )),
        )),
        None => None,
    };
    let written = Arc::new(AtomicU64::new(0));
    let ticker = {
        let written = written.clone();
        Ticker::start("extract", move || {
            format!("{} flows written", count(written.load(Relaxed)))
        })
    };
    let report = extract::<FeatureState>(
        &inputs.files,
        opts.flow,
        opts.features,
        &mut services,
        periodic.as_mut(),
        |flow, end, services| {
            if write_err.is_some() {
                return;
            }
            written.fetch_add(1, Relaxed);
            let record = FlowRecord::new(&flow, end, services);
            values.clear();
            flow.state.values(&mut values);
            let line = match opts.format {
                Format::Csv => {
                    let mut line = csv_row(&record);
                    line.reserve(values.len() * 3);
                    for v in &values {
                        push_value(&mut line, *v);
                    }
                    line
                }
                Format::Jsonl => {
                    let mut json = serde_json::to_value(&record).unwrap_or_default();
                    if let Some(obj) = json.as_object_mut() {
                        obj.insert("features".into(), serde_json::json!(values));
                    }
                    json.to_string()
                }
            };
            if let Err(e) = writeln!(out, "{line}") {
                write_err = Some(e);
            }
        },
    )?;
    drop(ticker);
    if let Some(e) = write_err {
        return Err(e).context("writing flows");
    }
    let periodic_rows = match periodic {
        Some(periodic) => Some(periodic.finish().context("writing periodic counters")?),
        None => None,
    };
    out.flush().context("writing flows")?;
    if opts.json {
        let summary = serde_json::json!({
            "packets": report.packets,
            "flow_packets": report.flow_packets,
            "flows_written": written.load(Relaxed),
            "flows": report.flows,
            "skipped_packets": report.skipped,
            "captures_ended_early": report
                .early_ends
                .iter()
                .map(|(path, end)| serde_json::json!({ "path": path, "end": end.to_string() }))
                .collect::<Vec<_>>(),
            "captures_with_skipped_blocks": report.skipped_blocks,
            "skipped_inputs": inputs.skipped,
            "periodic_rows": periodic_rows,
        });
        drop(out);
        writeln!(
            std::io::stdout().lock(),
            "{}",
            serde_json::to_string_pretty(&summary)?
        )?;
        return Ok(());
    }
    if let Some(rows) = periodic_rows {
        eprintln!("serveflow: {rows} periodic counter rows written");
    }
    eprintln!(
        "serveflow: {} packets, {} in TCP/UDP flows; {} flows (ended: idle {}, active {}, fin/rst {}, evicted {}, at end {})",
        report.packets,
        report.flow_packets,
        report.flows.started,
        report.flows.idle,
        report.flows.active,
        report.flows.fin_rst,
        report.flows.evicted,
        report.flows.flushed
    );
    if !report.skipped.is_empty() {
        eprintln!(
            "serveflow: packets skipped: {}",
            counts(report.skipped.iter().map(|(k, v)| (*k, *v)))
        );
    }
    for (path, end) in &report.early_ends {
        eprintln!(
            "serveflow: warning: {} {end}; flows read so far kept",
            path.display()
        );
    }
    for line in &report.skipped_blocks {
        eprintln!("serveflow: warning: {line}");
    }
    for s in &inputs.skipped {
        eprintln!("serveflow: skipped input: {s}");
    }
    Ok(())
}

/// `--profile`: the cost of each feature set over the captures (held in memory so disk reads
/// do not count), as a Markdown table on stdout or in `--out`.
fn run_profile(opts: &ExtractOptions, files: &[PathBuf]) -> anyhow::Result<()> {
    let packets: Vec<_> = serveflow::capture::merge::MergedCaptures::open(files)?.collect();
    let n = opts.features.packets;
    let spec = |s: &str| -> anyhow::Result<Option<FeatureSpec>> {
        let parsed: FeatureSpec = s.parse()?;
        Ok(Some(FeatureSpec {
            packets: n,
            ..parsed
        }))
    };
    let specs = vec![
        ("flow table only".to_owned(), None),
        ("stats".to_owned(), spec("stats")?),
        ("ports".to_owned(), spec("ports")?),
        (format!("seq x{n}"), spec("seq")?),
        ("bytes:16".to_owned(), spec("bytes:16")?),
        ("name:64".to_owned(), spec("name:64")?),
        (
            format!("stats,ports,seq,bytes:16,name:64 x{n}"),
            spec("stats,ports,seq,bytes:16,name:64")?,
        ),
        (
            "nprint-masked x1 (packet 1's header bits)".to_owned(),
            Some(FeatureSpec {
                packets: 1,
                ..spec("nprint,nprint-masked")?.unwrap_or_default()
            }),
        ),
        (format!("nprint x{n}"), spec("nprint")?),
        (format!("nprint x{n} + stats"), spec("nprint,stats")?),
        (
            format!("nprint-ipv6 + payload:32 x{n}"),
            spec("nprint-ipv6,payload:32")?,
        ),
    ];
    let rows = serveflow::profile::profile(&packets, opts.flow, &specs, 5);
    let table = serveflow::profile::markdown(&rows);
    match &opts.out {
        Some(path) => {
            std::fs::write(path, &table).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout()
            .lock()
            .write_all(table.as_bytes())
            .context("writing the cost table")?,
    }
    eprintln!(
        "serveflow: profiled {} packets, {} flows, {n} packets per flow",
        packets.len(),
        rows.first().map_or(0, |r| r.flows)
    );
    Ok(())
}
