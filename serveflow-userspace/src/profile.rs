//! The systems cost of each feature set (Traffic Refinery's point): CPU per packet, flow
//! state per flow and output per flow, measured on the same packets by the same code path
//! that extracts and serves.

use std::{hint::black_box, time::Instant};

use serde::Serialize;

use crate::{
    features::{FeatureSpec, FeatureState},
    flow::{Flow, FlowConfig, FlowState, FlowTable},
    frame::CapturedPacket,
    parse,
};

/// One feature set's measured cost.
#[derive(Clone, Debug, Serialize)]
pub struct FeatureCost {
    /// Feature spec, as given to `--features`.
    pub spec: String,
    /// Values per flow.
    pub features: usize,
    /// Parse + flow tracking + feature update, ns per packet (best of the runs).
    pub ns_per_packet: f64,
    /// Flow record plus feature state at the flow's end, bytes per flow (mean).
    pub state_bytes_per_flow: f64,
    /// Feature values as CSV text, bytes per flow (mean).
    pub output_bytes_per_flow: f64,
    /// Flows measured.
    pub flows: u64,
}

fn timed_pass<S: FlowState>(packets: &[CapturedPacket], flow: FlowConfig, state: S::Config) -> f64 {
    let mut table: FlowTable<S> = FlowTable::new(flow, state);
    let mut on_end = |f: Flow<S>, _| {
        black_box(&f);
    };
    let start = Instant::now();
    for p in packets {
        if let Ok(parsed) = parse::parse_link(p.link, &p.data) {
            table.observe(p.ts_ns, &parsed, &mut on_end);
        }
    }
    table.flush(&mut on_end);
    start.elapsed().as_nanos() as f64 / packets.len().max(1) as f64
}

/// Measures every spec in `specs` over `packets`, `runs` timed passes each.
pub fn profile(
    packets: &[CapturedPacket],
    flow: FlowConfig,
    specs: &[(String, Option<FeatureSpec>)],
    runs: u32,
) -> Vec<FeatureCost> {
    let mut rows = Vec::new();
    for (name, spec) in specs {
        let best = |pass: &dyn Fn() -> f64| {
            (0..runs.max(1))
                .map(|_| pass())
                .fold(f64::INFINITY, f64::min)
        };
        let (ns, features, state, output, flows) = match spec {
            None => {
                let ns = best(&|| timed_pass::<()>(packets, flow, ()));
                let mut n = 0u64;
                let mut table: FlowTable<()> = FlowTable::new(flow, ());
                let mut on_end = |_: Flow<()>, _| n += 1;
                for p in packets {
                    if let Ok(parsed) = parse::parse_link(p.link, &p.data) {
                        table.observe(p.ts_ns, &parsed, &mut on_end);
                    }
                }
                table.flush(&mut on_end);
                let size = std::mem::size_of::<Flow<()>>() as f64;
                (ns, 0, size * n as f64, 0.0, n)
            }
            Some(spec) => {
                let ns = best(&|| timed_pass::<FeatureState>(packets, flow, *spec));
                let (mut n, mut state, mut output) = (0u64, 0f64, 0f64);
                let mut values = Vec::new();
                let mut table: FlowTable<FeatureState> = FlowTable::new(flow, *spec);
                let mut on_end = |f: Flow<FeatureState>, _| {
                    n += 1;
                    state += (std::mem::size_of::<Flow<FeatureState>>()
                        - std::mem::size_of::<FeatureState>()
                        + f.state.state_bytes()) as f64;
                    values.clear();
                    f.state.values(&mut values);
                    output += values.iter().map(|v| csv_len(*v) + 1).sum::<usize>() as f64;
                };
                for p in packets {
                    if let Ok(parsed) = parse::parse_link(p.link, &p.data) {
                        table.observe(p.ts_ns, &parsed, &mut on_end);
                    }
                }
                table.flush(&mut on_end);
                (ns, spec.names().len(), state, output, n)
            }
        };
        let per = |x: f64| x / flows.max(1) as f64;
        rows.push(FeatureCost {
            spec: name.clone(),
            features,
            ns_per_packet: ns,
            state_bytes_per_flow: per(state),
            output_bytes_per_flow: per(output),
            flows,
        });
    }
    rows
}

/// Length of a value as `serveflow extract` writes it in CSV.
fn csv_len(v: f32) -> usize {
    if v.fract() == 0.0 && v.abs() < 1e9 {
        (v as i64).to_string().len()
    } else {
        format!("{v:.6}").len()
    }
}

/// The cost table as Markdown.
pub fn markdown(rows: &[FeatureCost]) -> String {
    let mut out = String::from(
        "| feature set | values/flow | CPU ns/packet | state B/flow | output B/flow |\n|---|---:|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.0} | {:.0} |\n",
            r.spec, r.features, r.ns_per_packet, r.state_bytes_per_flow, r.output_bytes_per_flow
        ));
    }
    out
}
