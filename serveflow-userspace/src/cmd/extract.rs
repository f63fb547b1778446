//! `serveflow extract`: one row per flow from capture files, as CSV or JSON lines.

use std::{
    io::{BufWriter, Write},
    path::PathBuf,
};

use anyhow::Context as _;

use crate::{
    extract::{extract, FlowRecord},
    flow::FlowConfig,
};

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
}

const CSV_HEADER: &str =
    "src,sport,dst,dport,proto,first_seen_us,last_seen_us,packets,bytes,src2dst_packets,end";

fn csv_row(r: &FlowRecord) -> String {
    let end = serde_json::to_value(r.end)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    format!(
        "{},{},{},{},{},{},{},{},{},{},{}",
        r.src,
        r.sport,
        r.dst,
        r.dport,
        r.proto,
        r.first_seen_us,
        r.last_seen_us,
        r.packets,
        r.bytes,
        r.src2dst_packets,
        end
    )
}

/// Runs the extraction and writes the rows; the report goes to stderr.
pub fn run(opts: &ExtractOptions) -> anyhow::Result<()> {
    let sink: Box<dyn Write> = match &opts.out {
        Some(path) => Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::new(sink);
    if opts.format == Format::Csv {
        writeln!(out, "{CSV_HEADER}")?;
    }
    let mut write_err: Option<std::io::Error> = None;
    let report = extract::<()>(&opts.captures, opts.flow, |flow, end| {
        if write_err.is_some() {
            return;
        }
        let record = FlowRecord::new(&flow, end);
        let line = match opts.format {
            Format::Csv => csv_row(&record),
            Format::Jsonl => serde_json::to_string(&record).unwrap_or_default(),
        };
        if let Err(e) = writeln!(out, "{line}") {
            write_err = Some(e);
        }
    })?;
    if let Some(e) = write_err {
        return Err(e).context("writing flows");
    }
    out.flush().context("writing flows")?;
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
        eprintln!("serveflow: packets skipped: {:?}", report.skipped);
    }
    for (path, after, reason) in &report.early_ends {
        eprintln!(
            "serveflow: warning: {} ends early after {after} packets ({reason}); flows read so far kept",
            path.display()
        );
    }
    Ok(())
}
