//! The report directory: standard four-column `.hgrm` percentile files (milliseconds), an
//! `.hlog` interval log (HdrHistogram's compressed V2 encoding, readable by HdrHistogram's
//! tools), `summary.json`, a latency CDF plot (`latency_cdf.svg`) and the effective config.

use std::{
    io::Write as _,
    path::Path,
    time::{Duration, SystemTime},
};

use hdrhistogram::{
    serialization::{interval_log::IntervalLogWriterBuilder, V2DeflateSerializer},
    Histogram,
};

use crate::report::RunStats;

/// A report that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing the report {path}: {reason}")]
pub struct ReportError {
    path: String,
    reason: String,
}

fn fail(path: &Path, reason: impl std::fmt::Display) -> ReportError {
    ReportError {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Makes sure the report directory `dir` can be written, before the run: creates it and a
/// probe file in it, so a bad path fails in one line at start-up rather than after the work.
pub fn prepare(dir: &Path) -> Result<(), ReportError> {
    if dir.exists() && !dir.is_dir() {
        return Err(fail(
            dir,
            "exists and is not a directory: name a directory for the report",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, format!("cannot create it: {e}")))?;
    let probe = dir.join(".serveflow-write-test");
    std::fs::write(&probe, b"").map_err(|e| fail(dir, format!("cannot write in it: {e}")))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Makes sure an output file can be created at `path` (its folder exists and it is not a
/// directory), before the work that fills it.
pub fn check_output_file(path: &Path) -> Result<(), ReportError> {
    if path == Path::new("-") {
        return Ok(());
    }
    if path.is_dir() {
        return Err(fail(path, "is a directory: name a file"));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(fail(
            path,
            format!("folder {} does not exist", parent.display()),
        ));
    }
    Ok(())
}

/// HdrHistogram's percentile distribution text (`outputPercentileDistribution`, 5 ticks per
/// half distance) of a histogram of nanoseconds, in milliseconds.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut s = String::new();
    s.push_str("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    if !h.is_empty() {
        let mut total = 0u64;
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = v.value_iterated_to() as f64 / 1e6;
            if q < 1.0 {
                s.push_str(&format!(
                    "{value:12.3} {q:2.12} {total:10} {:14.2}\n",
                    1.0 / (1.0 - q)
                ));
            } else {
                s.push_str(&format!("{value:12.3} {q:2.12} {total:10}\n"));
            }
        }
    }
    s.push_str(&format!(
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n",
        h.mean() / 1e6,
        h.stdev() / 1e6
    ));
    s.push_str(&format!(
        "#[Max     = {:12.3}, Total count    = {:12}]\n",
        h.max() as f64 / 1e6,
        h.len()
    ));
    s.push_str(&format!(
        "#[Buckets = {:12}, SubBuckets     = {:12}]\n",
        h.buckets(),
        h.distinct_values() / h.buckets().max(1) as usize
    ));
    s
}

/// The interval log of `run` (values in ns, max-value divisor 1e6 so tools show ms).
pub fn hlog(run: &RunStats, started: SystemTime) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    {
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment("serveflow end-to-end flow latency, ns")
            .with_start_time(started)
            .with_base_time(started)
            .with_max_value_divisor(1e6)
            .begin_log_with(&mut buf, &mut serializer)
            .map_err(|e| format!("{e:?}"))?;
        let len = Duration::from_nanos(run.interval_ns);
        if run.dropped_intervals > 0 {
            w.write_comment(&format!(
                "the first {} intervals were dropped: the log keeps the last {}",
                run.dropped_intervals,
                crate::report::MAX_INTERVALS
            ))
            .map_err(|e| format!("{e:?}"))?;
        }
        for (slot, c) in &run.intervals {
            let Some(h) = c.decode() else { continue };
            let start = Duration::from_nanos(slot.saturating_mul(run.interval_ns));
            w.write_histogram(&h, start, len, None)
                .map_err(|e| format!("{e:?}"))?;
        }
    }
    Ok(buf)
}

/// The least vertical room between two y-axis labels (px; the font is 12 px).
const MIN_LABEL_GAP: f64 = 14.0;

/// A latency CDF plot: one line per series, log-scaled milliseconds on x.
pub fn cdf_svg(series: &[(&str, &Histogram<u64>)]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 420.0;
    const L: f64 = 60.0;
    const B: f64 = 50.0;
    const T: f64 = 30.0;
    const R: f64 = 150.0;
    let colours = ["#1f77b4", "#2ca02c", "#d62728", "#ff7f0e", "#9467bd"];
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for (_, h) in series.iter().filter(|(_, h)| !h.is_empty()) {
        lo = lo.min(h.min().max(1) as f64 / 1e6);
        hi = hi.max(h.max().max(1) as f64 / 1e6);
    }
    if lo > hi {
        (lo, hi) = (0.001, 1.0);
    }
    let (lx0, lx1) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let x = |ms: f64| L + (ms.max(1e-9).log10() - lx0) / (lx1 - lx0) * (W - L - R);
    let y = |q: f64| T + (1.0 - q) * (H - T - B);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"18\" text-anchor=\"middle\">Flow latency CDF (first packet to verdict)</text>\n",
        (W - R + L) / 2.0
    );
    let mut decade = lx0;
    while decade <= lx1 {
        let px = x(10f64.powf(decade));
        s.push_str(&format!(
            "<line x1=\"{px:.1}\" y1=\"{T}\" x2=\"{px:.1}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            H - B,
            H - B + 16.0,
            fmt_ms(10f64.powf(decade))
        ));
        decade += 1.0;
    }
    // Gridlines at every quantile; a label only where it clears the one above it (0.99 sits
    // 3 px under 1.0 on this axis).
    let mut labelled_at = f64::MIN;
    for q in [1.0, 0.99, 0.9, 0.75, 0.5, 0.25, 0.0] {
        let py = y(q);
        s.push_str(&format!(
            "<line x1=\"{L}\" y1=\"{py:.1}\" x2=\"{}\" y2=\"{py:.1}\" stroke=\"#eee\"/>",
            W - R
        ));
        if py - labelled_at >= MIN_LABEL_GAP {
            labelled_at = py;
            s.push_str(&format!(
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{q}</text>",
                L - 6.0,
                py + 4.0
            ));
        }
        s.push('\n');
    }
    let target = x(16.0);
    s.push_str(&format!(
        "<line x1=\"{target:.1}\" y1=\"{T}\" x2=\"{target:.1}\" y2=\"{}\" stroke=\"#888\" stroke-dasharray=\"4 3\"/><text x=\"{target:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#888\">16 ms</text>\n",
        H - B,
        T - 4.0
    ));
    s.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">latency (ms, log scale)</text>\n",
        (W - R + L) / 2.0,
        H - 12.0
    ));
    // Stages that decided nothing have no line and no legend entry; colours stay the stage's.
    let drawn = series
        .iter()
        .enumerate()
        .filter(|(_, (_, h))| !h.is_empty());
    for (row, (i, (label, h))) in drawn.enumerate() {
        let colour = colours[i % colours.len()];
        let mut points = Vec::new();
        for v in h.iter_quantiles(5) {
            let ms = v.value_iterated_to().max(1) as f64 / 1e6;
            points.push(format!("{:.1},{:.1}", x(ms), y(v.quantile_iterated_to())));
        }
        s.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
            points.join(" ")
        ));
        let ly = T + 20.0 * row as f64 + 10.0;
        s.push_str(&format!(
            "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{label} ({})</text>\n",
            W - R + 10.0,
            W - R + 30.0,
            W - R + 35.0,
            ly + 4.0,
            h.len()
        ));
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{}µs", (ms * 1000.0).round())
    } else if ms < 1000.0 {
        format!("{}ms", ms.round())
    } else {
        format!("{}s", (ms / 1000.0).round())
    }
}

/// Writes the report files into `dir` (created if needed).
pub fn write(
    dir: &Path,
    run: &RunStats,
    summary: &impl serde::Serialize,
    config: &str,
    started: SystemTime,
) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    let put = |name: &str, bytes: &[u8]| -> Result<(), ReportError> {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).map_err(|e| fail(&path, e))?;
        f.write_all(bytes).map_err(|e| fail(&path, e))
    };
    put("latency_e2e.hgrm", hgrm(&run.tally.e2e).as_bytes())?;
    put("latency_serving.hgrm", hgrm(&run.tally.serving).as_bytes())?;
    for (name, h) in ["fast", "slow", "fallback"]
        .iter()
        .zip(&run.tally.e2e_by_stage)
    {
        if !h.is_empty() {
            put(&format!("latency_e2e_{name}.hgrm"), hgrm(h).as_bytes())?;
        }
    }
    let log = hlog(run, started).map_err(|e| fail(&dir.join("latency_e2e.hlog"), e))?;
    put("latency_e2e.hlog", &log)?;
    let text = serde_json::to_string_pretty(summary).map_err(|e| fail(dir, e))?;
    put("summary.json", format!("{text}\n").as_bytes())?;
    let svg = cdf_svg(&[
        ("all flows", &run.tally.e2e),
        ("fast", &run.tally.e2e_by_stage[0]),
        ("slow", &run.tally.e2e_by_stage[1]),
        ("fallback", &run.tally.e2e_by_stage[2]),
        ("serving only", &run.tally.serving),
    ]);
    put("latency_cdf.svg", svg.as_bytes())?;
    let title = format!("serveflow report, {}", humantime_utc(started));
    put(
        "index.html",
        super::html::page(&title, &run.summary(), &svg, config).as_bytes(),
    )?;
    put("config.toml", config.as_bytes())
}

/// `started` as `YYYY-MM-DD HH:MM:SS UTC` (civil date from the Unix day count).
fn humantime_utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;
    use hdrhistogram::serialization::{interval_log::IntervalLogIterator, Deserializer};

    #[test]
    fn hgrm_has_the_standard_columns_and_footer() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 1_000_000).unwrap(); // 1..1000 ms
        }
        let text = hgrm(&h);
        let rows: Vec<&str> = text
            .lines()
            .skip(2)
            .filter(|l| !l.starts_with('#'))
            .collect();
        assert!(rows.len() > 20);
        let cols: Vec<&str> = rows[rows.len() / 2].split_whitespace().collect();
        assert_eq!(cols.len(), 4, "{}", rows[rows.len() / 2]);
        let last: Vec<&str> = rows[rows.len() - 1].split_whitespace().collect();
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2], "1000");
        let median: f64 = rows
            .iter()
            .map(|r| r.split_whitespace().collect::<Vec<_>>())
            .find(|c| c[1].parse::<f64>().unwrap() >= 0.5)
            .unwrap()[0]
            .parse()
            .unwrap();
        assert!((median - 500.0).abs() < 1.0, "{median}");
        assert!(text.contains("#[Max     =     1000."), "{text}");
        assert!(text.contains("Total count    =         1000]"), "{text}");
    }

    #[test]
    fn hlog_reads_back_with_hdrhistogram() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        h.record(5_000).unwrap();
        let run = RunStats {
            tally: crate::report::VerdictTally {
                e2e: h.clone(),
                e2e_by_stage: [h.clone(), h.clone(), h.clone()],
                serving: h.clone(),
                verdicts: [1, 0, 0],
                triggers: [1, 0, 0],
                confusion: vec![],
                unknown_truth: 0,
                by_class: vec![],
            },
            classes: vec![],
            intervals: [0, 3]
                .into_iter()
                .map(|slot| (slot, crate::report::CompactHistogram::encode(&h).unwrap()))
                .collect(),
            dropped_intervals: 0,
            interval_ns: 1_000_000_000,
        };
        let bytes = hlog(&run, SystemTime::UNIX_EPOCH).unwrap();
        let mut n = 0;
        let mut de = Deserializer::new();
        for item in IntervalLogIterator::new(&bytes) {
            if let Ok(hdrhistogram::serialization::interval_log::LogEntry::Interval(i)) = item {
                let raw = base64_decode(i.encoded_histogram());
                let back: Histogram<u64> = de.deserialize(&mut raw.as_slice()).unwrap();
                assert_eq!(back.len(), 1);
                n += 1;
            }
        }
        assert_eq!(n, 2);
        let svg = cdf_svg(&[("all", &run.tally.e2e)]);
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
    }

    #[test]
    fn report_dates_are_civil_utc() {
        let at = |s: u64| humantime_utc(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(at(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(at(1_796_350_000), "2026-12-04 02:06:40 UTC");
    }

    #[test]
    fn cdf_labels_never_overlap_and_empty_stages_have_no_legend() {
        let mut fast = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        for v in [50_000, 2_000_000, 15_000_000] {
            fast.record(v).unwrap();
        }
        let empty = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        let svg = cdf_svg(&[("fast", &fast), ("slow", &empty), ("fallback", &empty)]);
        assert!(svg.contains(">fast (3)<"), "{svg}");
        assert!(
            !svg.contains(">slow ("),
            "an empty stage has no legend entry"
        );
        assert!(!svg.contains(">fallback ("));
        // The y labels (right-aligned at the axis): none closer than the gap to another.
        let mut ys: Vec<f64> = svg
            .lines()
            .flat_map(|l| l.split("<text").skip(1))
            .filter(|t| t.contains("text-anchor=\"end\""))
            .filter_map(|t| {
                let y = t.split("y=\"").nth(1)?.split('"').next()?;
                y.parse().ok()
            })
            .collect();
        ys.sort_by(f64::total_cmp);
        assert!(ys.len() >= 5, "{ys:?}");
        assert!(
            ys.windows(2).all(|w| w[1] - w[0] >= MIN_LABEL_GAP),
            "{ys:?}"
        );
    }

    fn base64_decode(s: &str) -> Vec<u8> {
        let table = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        };
        let clean: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
        let mut out = Vec::new();
        for chunk in clean.chunks(4) {
            let mut acc = 0u32;
            for (i, c) in chunk.iter().enumerate() {
                acc |= u32::from(table(*c)) << (18 - 6 * i);
            }
            for i in 0..chunk.len().saturating_sub(1) {
                out.push((acc >> (16 - 8 * i)) as u8);
            }
        }
        out
    }
}
