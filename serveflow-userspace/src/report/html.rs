//! The report as one self-contained page (`index.html`): the headline figures, the stages, the
//! classes, the triggers, the latency percentiles, the CDF plot (inline SVG) and the run's
//! configuration. No script, no external file: it opens from a folder, a mail or a ticket.

use std::fmt::Write as _;

use super::{LatencySummary, Percentiles};

/// `&`, `<`, `>` and quotes as entities.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * part as f64 / whole as f64)
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em auto;max-width:980px;color:#222}\
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}\
table{border-collapse:collapse;margin:.5em 0}th,td{padding:.25em .8em;border-bottom:1px solid #ddd}\
th{text-align:left;background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em}\
.card b{display:block;font-size:1.4em}pre{background:#f7f7f7;padding:1em;overflow:auto}";

/// The page for a run summarised by `s`, with its CDF plot `svg` and its `config` (TOML).
pub fn page(title: &str, s: &LatencySummary, svg: &str, config: &str) -> String {
    let mut h = String::with_capacity(16 * 1024 + svg.len() + config.len());
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        esc(title),
        esc(title)
    );
    let stage = |k: &str| s.verdicts.get(k).copied().unwrap_or(0);
    let p50 = s.latency_ms.get("e2e").map_or(0.0, |p| p.p50);
    h.push_str("<div class=\"cards\">");
    for (label, value) in [
        ("flows decided", s.flows.to_string()),
        ("decided inline", pct(stage("fast"), s.flows)),
        ("escalated", format!("{:.1}%", s.escalated_percent)),
        ("within 16 ms", format!("{:.1}%", s.under_16ms_percent)),
        ("median latency", format!("{p50:.3} ms")),
    ] {
        let _ = write!(
            h,
            "<div class=\"card\">{}<b>{}</b></div>",
            esc(label),
            esc(&value)
        );
    }
    h.push_str("</div>\n");
    if let Some(sc) = &s.scores {
        let _ = writeln!(
            h,
            "<p>Against the labels: accuracy <b>{:.4}</b>, macro-F1 <b>{:.4}</b> over {} labeled flows.</p>",
            sc.accuracy, sc.macro_f1, sc.flows
        );
    }

    h.push_str("<h2>Stages</h2>\n<table id=\"stages\"><tr><th>stage</th><th>verdicts</th><th>share</th><th>p50 ms</th><th>p99 ms</th><th>max ms</th></tr>\n");
    for k in ["fast", "slow", "fallback"] {
        let n = stage(k);
        if n == 0 {
            continue;
        }
        let p = s.latency_ms.get(&format!("e2e_{k}"));
        let cell = |f: fn(&Percentiles) -> f64| p.map_or("-".into(), |p| format!("{:.3}", f(p)));
        let _ = writeln!(
            h,
            "<tr><td>{k}</td><td class=\"n\">{n}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            pct(n, s.flows),
            cell(|p| p.p50),
            cell(|p| p.p99),
            cell(|p| p.max)
        );
    }
    h.push_str("</table>\n");

    h.push_str("<h2>Classes</h2>\n<table id=\"classes\"><tr><th>class</th><th>flows</th><th>share</th><th>inline</th><th>slow</th><th>fallback</th></tr>\n");
    for (class, c) in s.classes_by_flows() {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(class),
            c.flows,
            pct(c.flows, s.flows),
            c.fast,
            c.slow,
            c.fallback
        );
    }
    h.push_str("</table>\n");

    h.push_str("<h2>Triggers</h2>\n<table id=\"triggers\"><tr><th>why decided then</th><th>verdicts</th><th>share</th></tr>\n");
    for (t, n) in &s.triggers {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"n\">{n}</td><td class=\"n\">{}</td></tr>",
            esc(t),
            pct(*n, s.flows)
        );
    }
    h.push_str("</table>\n");

    h.push_str("<h2>Latency (ms)</h2>\n<table id=\"latency\"><tr><th></th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>mean</th></tr>\n");
    for (k, p) in &s.latency_ms {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{:.3}</td><td class=\"n\">{:.3}</td><td class=\"n\">{:.3}</td><td class=\"n\">{:.3}</td><td class=\"n\">{:.3}</td><td class=\"n\">{:.3}</td></tr>",
            esc(k),
            p.count,
            p.p50,
            p.p90,
            p.p99,
            p.p999,
            p.max,
            p.mean
        );
    }
    h.push_str("</table>\n<h2>Latency CDF</h2>\n<figure id=\"cdf\">\n");
    // The plot is serveflow's own SVG (no user text in it but stage names).
    h.push_str(svg);
    h.push_str("</figure>\n<h2>Configuration</h2>\n<pre id=\"config\">");
    h.push_str(&esc(config));
    h.push_str("</pre>\n</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::ClassCounts;

    #[test]
    fn the_page_holds_every_table_and_escapes_what_it_quotes() {
        let mut by_class = BTreeMap::new();
        by_class.insert(
            "DNS".to_string(),
            ClassCounts {
                flows: 9,
                fast: 8,
                slow: 1,
                fallback: 0,
            },
        );
        by_class.insert(
            "<script>".to_string(),
            ClassCounts {
                flows: 1,
                fast: 1,
                slow: 0,
                fallback: 0,
            },
        );
        let s = LatencySummary {
            flows: 10,
            verdicts: [("fast".to_string(), 9), ("slow".to_string(), 1)]
                .into_iter()
                .collect(),
            triggers: [("packets".to_string(), 10)].into_iter().collect(),
            escalated_percent: 10.0,
            fallback_percent: 0.0,
            under_16ms_percent: 90.0,
            latency_ms: BTreeMap::new(),
            scores: None,
            unknown_truth: 0,
            by_class,
        };
        let html = page("run <1>", &s, "<svg></svg>", "[export]\nout = \"a&b\"\n");
        for id in ["stages", "classes", "triggers", "latency", "cdf", "config"] {
            assert!(html.contains(&format!("id=\"{id}\"")), "{id}");
        }
        assert!(html.contains("<title>run &lt;1&gt;</title>"));
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
        assert!(html.contains("out = &quot;a&amp;b&quot;"));
        assert!(html.contains("<td>DNS</td><td class=\"n\">9</td><td class=\"n\">90.0%</td>"));
        assert!(
            !html.contains("<td>fallback</td>"),
            "stages with no verdict are left out"
        );
        assert!(
            !html.contains("src=") && !html.contains("href="),
            "self-contained"
        );
    }
}
