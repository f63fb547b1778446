//! The two model stages on one core, with the bundled models (`models/<task>/`, or the
//! directory in `SERVEFLOW_BENCH_MODELS`) fed the feature rows of real flows (all of
//! ../shared/data/ndpi when present, else generated TCP flows).
//! Targets (issue 17): each inline stage (row -> calibrated probabilities -> route) <= 1 us
//! per flow; slow model <= 5 us per flow at batch 32.
//!
//! Run: `cargo bench -p serveflow-userspace --bench models`

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark set-up")]

use std::{hint::black_box, path::PathBuf};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serveflow::{
    capture::{merge::MergedCaptures, synthetic},
    features::{FeatureSpec, FeatureState},
    flow::{FlowConfig, FlowTable},
    frame::CapturedPacket,
    model::dir::ModelDir,
    parse,
    pipeline::cascade::Cascade,
};

fn packets() -> Vec<CapturedPacket> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/ndpi/pcap");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        paths.sort();
        let packets: Vec<CapturedPacket> = paths
            .iter()
            .filter_map(|p| MergedCaptures::open(std::slice::from_ref(p)).ok())
            .flatten()
            .collect();
        if !packets.is_empty() {
            return packets;
        }
    }
    eprintln!("../shared/data absent: benchmarking generated traffic");
    synthetic::tcp_flows(5_000, 10)
}

/// The feature state of every flow in `packets` under `spec`, at its end.
fn states(packets: &[CapturedPacket], spec: FeatureSpec) -> Vec<FeatureState> {
    let mut table: FlowTable<FeatureState> = FlowTable::new(FlowConfig::default(), spec);
    let mut out = Vec::new();
    let mut on_end = |flow: serveflow::flow::Flow<FeatureState>, _| out.push(flow.state);
    for p in packets {
        if let Ok(parsed) = parse::parse_link(p.link, &p.data) {
            table.observe(p.ts_ns, &parsed, &mut on_end);
        }
    }
    table.flush(&mut on_end);
    out
}

/// The feature rows of every flow in `packets` under `spec`.
fn rows(packets: &[CapturedPacket], spec: FeatureSpec) -> Vec<Vec<f32>> {
    states(packets, spec)
        .iter()
        .map(|s| {
            let mut v = Vec::new();
            s.values(&mut v);
            v
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models");
    let dirs: Vec<PathBuf> = match std::env::var_os("SERVEFLOW_BENCH_MODELS") {
        Some(d) => vec![PathBuf::from(d)],
        None => ["service", "device"].iter().map(|t| root.join(t)).collect(),
    };
    let packets = packets();
    for dir in dirs {
        let models = ModelDir::load(&dir).unwrap();
        let task = models.manifest.task.clone();
        let mut group = c.benchmark_group(format!("models/{task}"));

        // Each inline stage as the worker runs it: the flow's f32 row at the stage's packets,
        // raw scores, the calibrated softmax, the router. `inline_per_flow` cycles over every
        // flow's row, so each comes from memory; `inline_cached_row` over 64 rows that stay in
        // cache (at most 320 KB, a period no branch predictor learns), as in the worker, which
        // writes a flow's row just before the stage reads it. The difference is mostly the
        // fetch of the wide rows (1,224 values in the device first stage).
        let cascade = Cascade::from_models(ModelDir::load(&dir).unwrap());
        for stage in &cascade.inline {
            let all = rows(&packets, stage.features);
            let cached = all.len().min(64);
            let runs = [
                (
                    format!(
                        "inline_per_flow/{} ({} trees)",
                        stage.name,
                        stage.model.num_trees()
                    ),
                    &all[..],
                ),
                (format!("inline_cached_row/{}", stage.name), &all[..cached]),
            ];
            let mut probs = vec![0.0; cascade.classes.len()];
            for (name, rows) in runs {
                let mut i = 0;
                group.throughput(Throughput::Elements(1));
                group.bench_function(name, |b| {
                    b.iter(|| {
                        i = (i + 1) % rows.len();
                        stage.probabilities(black_box(&rows[i]), &mut probs);
                        black_box(stage.router.route(&probs))
                    })
                });
            }
        }

        let fast_rows: Vec<Vec<f64>> = rows(&packets, models.fast.features)
            .into_iter()
            .map(|r| r.into_iter().map(f64::from).collect())
            .collect();
        let mut out = vec![0.0; models.manifest.classes.len()];
        let mut i = 0;
        group.throughput(Throughput::Elements(1));
        group.bench_function(
            format!("fast_per_flow ({} trees)", models.fast.model.num_trees()),
            |b| {
                b.iter(|| {
                    i = (i + 1) % fast_rows.len();
                    models
                        .fast
                        .model
                        .predict(black_box(&fast_rows[i]), &mut out);
                    black_box(&out);
                })
            },
        );

        // Writing one flow's slow-stage row (what a worker does per escalated flow).
        let slow_states = states(&packets, models.slow.features);
        let mut row = Vec::with_capacity(models.slow.model.features());
        let mut k = 0;
        group.throughput(Throughput::Elements(1));
        group.bench_function(
            format!("slow_row ({} values)", models.slow.model.features()),
            |b| {
                b.iter(|| {
                    k = (k + 1) % slow_states.len();
                    row.clear();
                    black_box(&slow_states[k]).values(&mut row);
                    black_box(&row);
                })
            },
        );

        let slow_rows = rows(&packets, models.slow.features);
        let batch = 32;
        let batches: Vec<Vec<f32>> = slow_rows.chunks_exact(batch).map(|c| c.concat()).collect();
        let mut state = models.slow.model.state().unwrap();
        let mut probs = Vec::new();
        let mut j = 0;
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(
            format!("slow_batch32 ({} inputs)", models.slow.model.features()),
            |b| {
                b.iter(|| {
                    j = (j + 1) % batches.len();
                    models
                        .slow
                        .model
                        .predict_batch(&mut state, black_box(&batches[j]), &mut probs)
                        .unwrap();
                    black_box(&probs);
                })
            },
        );
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
