//! The serving pipeline's summary of a run: flows in and verdicts out, stages, latency,
//! accuracy, skipped packets and input issues. Replay prints it and writes it as
//! `summary.json`; a live run nests it in its own summary under `serving`.

use std::{collections::BTreeMap, path::Path};

use serde::Serialize;

use super::{worker::WorkerCounters, RunResult};
use crate::{
    export::{self, SinkReport},
    report::{ClassCounts, LatencySummary},
};

/// What went wrong with the inputs, one line each.
#[derive(Clone, Copy, Debug, Default)]
pub struct CaptureIssues<'a> {
    /// Inputs skipped as unreadable (`--keep-going`).
    pub unreadable: &'a [String],
    /// Files that ended before their data did.
    pub ended_early: &'a [String],
    /// Files with records or blocks skipped.
    pub skipped_blocks: &'a [String],
}

/// The run's summary (`summary.json`).
#[derive(Clone, Debug, Serialize)]
pub struct ServingSummary {
    /// Models directory.
    pub models: String,
    /// Capture files read (0 live).
    pub captures: usize,
    /// Inputs skipped as unreadable.
    pub unreadable_captures: Vec<String>,
    /// Files that ended before their data did.
    pub captures_ended_early: Vec<String>,
    /// Files with records or blocks skipped.
    pub captures_with_skipped_blocks: Vec<String>,
    /// Frames read.
    pub packets: u64,
    /// Frames of TCP/UDP flows.
    pub flow_packets: u64,
    /// Frames the parser skipped, by reason.
    pub skipped_packets: BTreeMap<&'static str, u64>,
    /// Flows that entered the flow tables.
    pub flows_in: u64,
    /// Verdicts written.
    pub verdicts_out: u64,
    /// Whether every flow got exactly one verdict.
    pub every_flow_one_verdict: bool,
    /// Flows pushed out of a full flow table (decided with what they had).
    pub flows_evicted: u64,
    /// Flows routed to the slow pool.
    pub escalated: u64,
    /// Of those, turned back because its queue was full.
    pub fallback_queue_full: u64,
    /// ... because the pool had stopped.
    pub fallback_pool_stopped: u64,
    /// Slow-stage batches run.
    pub slow_batches: u64,
    /// Slow-stage batches that failed (their flows fell back).
    pub slow_failed: u64,
    /// Packets whose handling panicked (caught; their flows still got verdicts).
    pub packet_panics: u64,
    /// Threads that panicked outside the per-packet guard.
    pub thread_panics: u64,
    /// Times a deciding thread waited because the verdict lines' writer fell behind (a slow
    /// disk or a pipe not read): nothing is lost, the data path slowed down.
    pub verdict_output_waits: u64,
    /// Wall time (s).
    pub wall_s: f64,
    /// Flows in per wall second.
    pub new_flows_per_s: f64,
    /// Verdicts per stage and trigger, latency, scores.
    pub result: LatencySummary,
    /// What each export sink delivered and dropped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<SinkReport>,
}

impl ServingSummary {
    /// The summary of `r`, a run over `files` with the models in `models`.
    pub fn new(r: &RunResult, files: usize, issues: &CaptureIssues<'_>, models: &Path) -> Self {
        let flows_in = r.flows_in();
        let mut skipped = BTreeMap::<&'static str, u64>::new();
        for w in &r.workers {
            for (k, v) in &w.skipped {
                *skipped.entry(k).or_default() += v;
            }
        }
        let sum = |f: fn(&WorkerCounters) -> u64| -> u64 { r.workers.iter().map(f).sum() };
        let verdicts = r.stats.total();
        ServingSummary {
            models: models.display().to_string(),
            captures: files,
            unreadable_captures: issues.unreadable.to_vec(),
            captures_ended_early: issues.ended_early.to_vec(),
            captures_with_skipped_blocks: issues.skipped_blocks.to_vec(),
            packets: sum(|w| w.packets),
            flow_packets: sum(|w| w.flow_packets),
            skipped_packets: skipped,
            flows_in,
            verdicts_out: verdicts,
            every_flow_one_verdict: flows_in == verdicts,
            flows_evicted: r.workers.iter().map(|w| w.flows.evicted).sum(),
            escalated: sum(|w| w.escalated),
            fallback_queue_full: sum(|w| w.fallback_full),
            fallback_pool_stopped: sum(|w| w.fallback_stopped),
            slow_batches: r.pool.iter().map(|p| p.batches).sum(),
            slow_failed: r.pool.iter().map(|p| p.failed).sum(),
            packet_panics: sum(|w| w.panics),
            thread_panics: r.thread_panics,
            verdict_output_waits: r.output_waits,
            wall_s: r.wall_s,
            new_flows_per_s: flows_in as f64 / r.wall_s.max(1e-9),
            result: r.stats.summary(),
            exports: Vec::new(),
        }
    }

    /// Writes the summary's human lines.
    pub fn write_lines(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let res = &self.result;
        writeln!(
            out,
            "flows:     {} in, {} verdicts ({}) in {:.2} s, {:.0} new flows/s",
            self.flows_in,
            self.verdicts_out,
            if self.every_flow_one_verdict {
                "one per flow"
            } else {
                "MISMATCH"
            },
            self.wall_s,
            self.new_flows_per_s
        )?;
        writeln!(
            out,
            "stages:    fast {} | slow {} | fallback {} | escalated {:.1}% | triggers {}",
            res.verdicts.get("fast").unwrap_or(&0),
            res.verdicts.get("slow").unwrap_or(&0),
            res.verdicts.get("fallback").unwrap_or(&0),
            res.escalated_percent,
            counts(res.triggers.iter().map(|(k, v)| (k.as_str(), *v)))
        )?;
        if let Some(e2e) = res.latency_ms.get("e2e") {
            writeln!(
                out,
                "latency:   p50 {:.3} ms | p99 {:.3} ms | max {:.1} ms | {:.1}% under 16 ms",
                e2e.p50, e2e.p99, e2e.max, res.under_16ms_percent
            )?;
        }
        write_class_table(out, res)?;
        if let Some(sc) = &res.scores {
            writeln!(
                out,
                "accuracy:  {:.4} | macro-F1 {:.4} over {} labeled flows",
                sc.accuracy, sc.macro_f1, sc.flows
            )?;
        }
        let skipped = if self.skipped_packets.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                counts(self.skipped_packets.iter().map(|(k, v)| (*k, *v)))
            )
        };
        writeln!(
            out,
            "packets:   {} read, {} skipped{skipped}",
            self.packets,
            self.packets.saturating_sub(self.flow_packets),
        )?;
        for (lines, label) in [
            (&self.unreadable_captures, "skipped input"),
            (&self.captures_ended_early, "ended early"),
            (&self.captures_with_skipped_blocks, "skipped blocks"),
        ] {
            for line in lines {
                writeln!(out, "inputs:    {label}: {line}")?;
            }
        }
        if self.verdict_output_waits > 0 {
            writeln!(
                out,
                "output:    the verdict lines' writer fell behind {} times (the deciding threads waited for it)",
                self.verdict_output_waits
            )?;
        }
        for line in export::summary_lines(&self.exports) {
            writeln!(out, "{line}")?;
        }
        Ok(())
    }
}

/// Classes shown in the text summary; the rest are summed on one line.
const CLASS_ROWS: usize = 12;

/// An aligned table: the classes given most, with where they were decided.
fn write_class_table(out: &mut impl std::io::Write, res: &LatencySummary) -> std::io::Result<()> {
    if res.by_class.is_empty() {
        return Ok(());
    }
    let rows = res.classes_by_flows();
    let width = rows
        .iter()
        .take(CLASS_ROWS)
        .map(|(c, _)| c.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(
        out,
        "classes:   {:<width$}  {:>8}  {:>8}  {:>8}  {:>8}",
        "class", "flows", "inline", "slow", "fallback"
    )?;
    for (class, c) in rows.iter().take(CLASS_ROWS) {
        writeln!(
            out,
            "           {:<width$}  {:>8}  {:>8}  {:>8}  {:>8}",
            class, c.flows, c.fast, c.slow, c.fallback
        )?;
    }
    if rows.len() > CLASS_ROWS {
        let rest = &rows[CLASS_ROWS..];
        let sum = |f: fn(&ClassCounts) -> u64| rest.iter().map(|(_, c)| f(c)).sum::<u64>();
        writeln!(
            out,
            "           {:<width$}  {:>8}  {:>8}  {:>8}  {:>8}",
            format!("({} more)", rest.len()),
            sum(|c| c.flows),
            sum(|c| c.fast),
            sum(|c| c.slow),
            sum(|c| c.fallback)
        )?;
    }
    Ok(())
}

/// `name n, name n` for a human line (`none` when empty).
pub fn counts<'a>(pairs: impl Iterator<Item = (&'a str, u64)>) -> String {
    let parts: Vec<String> = pairs.map(|(k, v)| format!("{k} {v}")).collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}
