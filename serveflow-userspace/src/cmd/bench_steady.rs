//! `serveflow bench --steady SECONDS`: whether the serving process holds its memory flat
//! over a long run. The nDPI captures, amplified without end (new addresses every loop), go
//! through the serving pipeline at full speed (one worker, one slow thread, the bundled
//! cascade) for SECONDS of wall time, with flows ending by the idle timeout of the rate run
//! (2 s of capture time, 1 µs between packets), so flows arrive and leave at one rate and the
//! flow table holds a steady number. A sampler thread reads the resident memory every
//! `SAMPLE_S` seconds; after the first minute (the table filling, the allocator's arenas
//! growing) a line fitted through the samples gives the growth per minute.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use serde::Serialize;
use serveflow::{
    capture::amplify::Amplified,
    config::Mode,
    frame::{CapturedPacket, Input},
    pipeline::{self, Feed, Progress},
    ticker::{pipeline_totals, Ticker},
    verdict::VerdictOutput,
};

use super::bench_memory::memory_kib;

/// Seconds between samples.
const SAMPLE_S: u64 = 10;
/// Samples before this are the warm-up, left out of the fit.
const WARM_UP_S: f64 = 60.0;

/// One sample of the run.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t_s: f64,
    /// Resident memory (KiB).
    pub rss_kib: u64,
    /// Packets handled so far.
    pub packets: u64,
    /// Flows that entered the table so far.
    pub flows: u64,
}

/// The steady-state measurement.
#[derive(Debug, Serialize)]
pub struct SteadyRow {
    /// Wall time asked for (s).
    pub seconds: u64,
    /// Flows that entered the table.
    pub flows: u64,
    /// Packets handled.
    pub packets: u64,
    /// Every flow got exactly one verdict.
    pub one_verdict_each: bool,
    /// Resident memory at the end of the warm-up and at the last sample (KiB).
    pub rss_after_warm_up_kib: u64,
    /// See above.
    pub rss_last_kib: u64,
    /// Peak resident memory (KiB).
    pub peak_rss_kib: u64,
    /// Slope of the resident memory after the warm-up (KiB per minute).
    pub growth_kib_per_min: f64,
    /// The samples.
    pub samples: Vec<Sample>,
}

/// Least-squares slope of `(x, y)`; 0 with fewer than two points.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// Runs for `seconds` and prints the samples and the verdict on growth.
pub fn run(
    models: &Path,
    base: &[CapturedPacket],
    seconds: u64,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<SteadyRow> {
    let cascade = super::bench::cascade(models, Mode::Cascade)?;
    let progress = Arc::new(Progress::default());
    let config = super::bench::full_speed(1, super::bench::rate_flows(), progress.clone());
    writeln!(
        out,
        "\nsteady state: {seconds} s at full speed, the nDPI captures amplified without end, idle timeout 2 s of capture time; resident memory every {SAMPLE_S} s\n"
    )?;
    writeln!(out, "| t s | resident MiB | packets | flows |")?;
    writeln!(out, "|---:|---:|---:|---:|")?;
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let stop = AtomicBool::new(false);
    let ticker = Ticker::start("steady", pipeline_totals(progress.clone()));
    let (r, samples) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut samples = Vec::new();
            let mut next = started + Duration::from_secs(SAMPLE_S);
            while !stop.load(Relaxed) {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep((next - now).min(Duration::from_millis(200)));
                    continue;
                }
                next += Duration::from_secs(SAMPLE_S);
                let (rss, _) = memory_kib().unwrap_or_default();
                samples.push(Sample {
                    t_s: started.elapsed().as_secs_f64(),
                    rss_kib: rss,
                    packets: progress.packets.load(Relaxed),
                    flows: progress.flows.load(Relaxed),
                });
            }
            samples
        });
        // 65,536 loops of the base is billions of packets: the clock ends the run. It is
        // read once per 4,096 packets.
        let mut n = 0u32;
        let source = Amplified::new(base, u32::MAX, 1_000)
            .take_while(|_| {
                n = n.wrapping_add(1);
                !n.is_multiple_of(4096) || Instant::now() < until
            })
            .map(Input::Packet);
        let r = pipeline::run(
            cascade,
            &config,
            Feed::Shared(source),
            &VerdictOutput::none(),
            None,
            None,
        );
        stop.store(true, Relaxed);
        (r, sampler.join().unwrap_or_default())
    });
    drop(ticker);
    // The first sample, then one a minute (the JSON keeps them all).
    for (_, s) in samples
        .iter()
        .enumerate()
        .filter(|(i, s)| *i == 0 || (s.t_s.round() as u64) % 60 < SAMPLE_S)
    {
        writeln!(
            out,
            "| {:.0} | {:.1} | {} | {} |",
            s.t_s,
            s.rss_kib as f64 / 1024.0,
            s.packets,
            s.flows
        )?;
    }
    let steady: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t_s >= WARM_UP_S)
        .map(|s| (s.t_s / 60.0, s.rss_kib as f64))
        .collect();
    let (_, peak) = memory_kib().unwrap_or_default();
    let row = SteadyRow {
        seconds,
        flows: r.flows_in(),
        packets: r.workers.iter().map(|w| w.packets).sum(),
        one_verdict_each: r.flows_in() == r.stats.total(),
        rss_after_warm_up_kib: samples
            .iter()
            .find(|s| s.t_s >= WARM_UP_S)
            .map_or(0, |s| s.rss_kib),
        rss_last_kib: samples.last().map_or(0, |s| s.rss_kib),
        peak_rss_kib: peak,
        growth_kib_per_min: slope(&steady),
        samples,
    };
    writeln!(
        out,
        "\nsteady state: {} flows, {} packets in {seconds} s (one verdict each: {}); resident {:.1} MiB after the first minute, {:.1} MiB at the end, peak {:.1} MiB; growth after the first minute {:+.1} KiB per minute ({} samples)",
        row.flows,
        row.packets,
        row.one_verdict_each,
        row.rss_after_warm_up_kib as f64 / 1024.0,
        row.rss_last_kib as f64 / 1024.0,
        row.peak_rss_kib as f64 / 1024.0,
        row.growth_kib_per_min,
        steady.len()
    )?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_of_a_line_and_of_too_few_points() {
        let line: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), 3.0 * f64::from(i) + 7.0))
            .collect();
        assert!((slope(&line) - 3.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10).map(|i| (f64::from(i), 5.0)).collect();
        assert_eq!(slope(&flat), 0.0);
        assert_eq!(slope(&[(1.0, 2.0)]), 0.0);
        assert_eq!(slope(&[(1.0, 2.0), (1.0, 3.0)]), 0.0, "no spread in x");
    }
}
