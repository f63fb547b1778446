//! The offline/live flow path on one core: parse + flow tracking + feature update, over an
//! in-memory capture (all of ../shared/data/ndpi when present, else generated TCP flows).
//! Target (issue 3): >= 5 million packets/s with nPrint kept for the first 5 packets.
//!
//! Run: `cargo bench -p serveflow-userspace --bench flow_path`

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark set-up")]

use std::{hint::black_box, path::PathBuf};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serveflow::{
    capture::{merge::MergedCaptures, synthetic},
    features::{FeatureSpec, FeatureState},
    flow::{FlowConfig, FlowState, FlowTable},
    frame::CapturedPacket,
    parse,
};

fn load() -> (String, Vec<CapturedPacket>) {
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
            return (format!("ndpi ({} packets)", packets.len()), packets);
        }
    }
    eprintln!("../shared/data absent: benchmarking generated traffic");
    let packets = synthetic::tcp_flows(20_000, 10);
    (format!("synthetic ({} packets)", packets.len()), packets)
}

fn run<S: FlowState>(packets: &[CapturedPacket], state: S::Config) -> u64 {
    let mut table: FlowTable<S> = FlowTable::new(FlowConfig::default(), state);
    let mut ended = 0u64;
    let mut on_end = |flow, _| {
        black_box(&flow);
        ended += 1;
    };
    for p in packets {
        if let Ok(parsed) = parse::parse_link(p.link, &p.data) {
            table.observe(p.ts_ns, &parsed, &mut on_end);
        }
    }
    table.flush(&mut on_end);
    ended
}

fn bench(c: &mut Criterion) {
    let (name, packets) = load();
    let mut group = c.benchmark_group(format!("flow_path/{name}"));
    group.throughput(Throughput::Elements(packets.len() as u64));
    group.sample_size(20);
    group.bench_function("parse_only", |b| {
        b.iter(|| {
            packets
                .iter()
                .filter(|p| parse::parse_link(p.link, black_box(&p.data)).is_ok())
                .count()
        })
    });
    group.bench_function("flows", |b| b.iter(|| run::<()>(&packets, ())));
    for (label, spec) in [
        ("stats_5", "stats"),
        ("nprint_5", "nprint"),
        ("nprint_stats_5", "nprint,stats"),
    ] {
        let spec: FeatureSpec = spec.parse().unwrap();
        group.bench_function(label, |b| b.iter(|| run::<FeatureState>(&packets, spec)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
