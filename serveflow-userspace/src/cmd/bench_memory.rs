//! `serveflow bench --memory`: what each concurrent flow costs in userspace. `--flows N`
//! distinct flows (the nDPI captures amplified) go through the serving pipeline (one worker,
//! one slow thread, the bundled cascade) with timeouts longer than the run, so all N are in
//! the flow table at the end; the process's peak resident memory over its resident memory
//! before the run, divided by N, is the measured cost per flow (flow record, every stage's
//! feature state, table overhead, allocator slack). One process per measurement: a second run
//! in the same process would start from the first one's high-water mark.

use std::{path::Path, sync::Arc};

use serde::Serialize;
use serveflow::{
    capture::amplify::Amplified,
    config::Mode,
    flow::FlowConfig,
    frame::{CapturedPacket, Input},
    pipeline::{self, Feed, Progress},
    ticker::{pipeline_totals, Ticker},
    verdict::VerdictOutput,
};

/// The memory measurement.
#[derive(Debug, Serialize)]
pub struct MemoryRow {
    /// Flows in the table at the end.
    pub flows: u64,
    /// Packets fed.
    pub packets: u64,
    /// Resident memory before the run (KiB).
    pub rss_before_kib: u64,
    /// Peak resident memory (KiB).
    pub peak_rss_kib: u64,
    /// (peak - before) / flows.
    pub bytes_per_flow: f64,
    /// What the live path reserves per flow when it checks `--max-flows` against memory.
    pub bound_bytes_per_flow: usize,
}

/// `VmRSS` and `VmHWM` of this process, KiB.
pub(super) fn memory_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Measures `flows` concurrent flows and prints the row.
pub fn run(
    models: &Path,
    base: &[CapturedPacket],
    flows: u64,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<MemoryRow> {
    let cascade = super::bench::cascade(models, Mode::Cascade)?;
    let bound = 256
        + cascade
            .specs
            .iter()
            .map(|s| s.state_bytes_bound())
            .sum::<usize>();
    let (rss_before, _) = memory_kib().unwrap_or_default();
    let progress = Arc::new(Progress::default());
    let day = 86_400;
    let flow = FlowConfig {
        idle_timeout_s: day,
        active_timeout_s: day,
        max_flows: usize::try_from(flows.saturating_mul(2)).unwrap_or(usize::MAX),
        ..FlowConfig::default()
    };
    let config = super::bench::full_speed(1, flow, progress.clone());
    let ticker = Ticker::start("memory", pipeline_totals(progress));
    let source = Amplified::with_flows(base, flows, 1_000).map(Input::Packet);
    let r = pipeline::run(
        cascade,
        &config,
        Feed::Shared(source),
        &VerdictOutput::none(),
        None,
        None,
    );
    drop(ticker);
    let (_, peak) = memory_kib().unwrap_or_default();
    let in_table = r.flows_in();
    let row = MemoryRow {
        flows: in_table,
        packets: r.workers.iter().map(|w| w.packets).sum(),
        rss_before_kib: rss_before,
        peak_rss_kib: peak,
        bytes_per_flow: peak.saturating_sub(rss_before) as f64 * 1024.0 / in_table.max(1) as f64,
        bound_bytes_per_flow: bound,
    };
    writeln!(
        out,
        "\nmemory: {} concurrent flows ({} packets): resident {:.1} MiB before, peak {:.1} MiB: {:.0} bytes per flow (the live path reserves {} per flow)",
        row.flows,
        row.packets,
        row.rss_before_kib as f64 / 1024.0,
        row.peak_rss_kib as f64 / 1024.0,
        row.bytes_per_flow,
        row.bound_bytes_per_flow
    )?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_resident_memory_and_a_peak_at_least_as_high() {
        let (rss, peak) = memory_kib().unwrap_or_default();
        assert!(rss > 0 && peak >= rss, "{rss} {peak}");
    }
}
