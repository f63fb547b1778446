//! Baselines the picked cascade must beat, scored on the same held-out flows:
//!
//! - **port-only**: the training flows' most frequent class for the flow's transport and server
//!   port (then for its transport alone, then overall) — what a port table gives;
//! - **k-NN over the packet sequence**: the 5 nearest training flows by the signed sizes and
//!   log gaps of their first packets (the classic early-flow representation), vote weighted by
//!   closeness.

use std::{collections::HashMap, time::Instant};

use serveflow::features::{ports::PortState, FeatureSpec};

use crate::{
    metrics::{score, Scores},
    split::Split,
    trees::{argmax, median},
};

/// A baseline's held-out result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Baseline {
    /// Name in tables.
    pub name: String,
    /// Packets it waits for.
    pub packets: u32,
    /// Held-out scores.
    pub scores: Scores,
    /// Median microseconds per flow on this core.
    pub us_per_flow: f64,
}

fn server_port(split: &Split<'_>, i: usize) -> Option<(u8, u16)> {
    let (proto, initiator, responder) = split.example(i).ports()?;
    let p = PortState {
        proto,
        initiator,
        responder,
    };
    Some((
        proto,
        if p.server_is_responder() {
            responder
        } else {
            initiator
        },
    ))
}

fn majority(votes: &[u32]) -> usize {
    argmax(votes)
}

/// Port-only: the majority class per (transport, server port).
pub fn port_only(split: &Split<'_>, test: &[usize]) -> Baseline {
    let k = split.classes.len();
    let mut by_port: HashMap<(u8, u16), Vec<u32>> = HashMap::new();
    let mut by_proto: HashMap<u8, Vec<u32>> = HashMap::new();
    let mut all = vec![0u32; k];
    for &i in &split.train {
        let c = split.class_of(i);
        all[c] += 1;
        if let Some((proto, port)) = server_port(split, i) {
            by_port.entry((proto, port)).or_insert_with(|| vec![0; k])[c] += 1;
            by_proto.entry(proto).or_insert_with(|| vec![0; k])[c] += 1;
        }
    }
    let predict = |i: usize| -> usize {
        let key = server_port(split, i);
        key.and_then(|k| by_port.get(&k))
            .or_else(|| key.and_then(|(proto, _)| by_proto.get(&proto)))
            .map_or_else(|| majority(&all), |v| majority(v))
    };
    let start = Instant::now();
    let pred: Vec<usize> = test.iter().map(|&i| predict(i)).collect();
    let us = start.elapsed().as_secs_f64() * 1e6 / test.len().max(1) as f64;
    Baseline {
        name: "port-only (majority class per transport + server port)".into(),
        packets: 1,
        scores: score(&split.truth(test), &pred, &split.classes),
        us_per_flow: us,
    }
}

/// Neighbours voting.
const K: usize = 5;

/// The k-NN representation of a `seq` row: sizes / 1500, gaps as ln(1 + ms) / 5 (absent
/// packets: size 0, gap -1).
fn embed(row: &[f32]) -> Vec<f32> {
    row.chunks(2)
        .flat_map(|p| {
            let gap = if p[1] < 0.0 {
                -1.0
            } else {
                (1.0 + p[1]).ln() / 5.0
            };
            [p[0] / 1500.0, gap]
        })
        .collect()
}

/// k-NN over the first `packets` packets' signed sizes and gaps, seen through `horizon_ns`.
pub fn knn(split: &Split<'_>, test: &[usize], packets: u32, horizon_ns: u64) -> Baseline {
    let spec = FeatureSpec {
        stats: false,
        seq: true,
        packets,
        horizon_ns,
        ..FeatureSpec::default()
    };
    let width = spec.width();
    let train: Vec<Vec<f32>> = split
        .matrix(&spec, &split.train)
        .chunks(width.max(1))
        .map(embed)
        .collect();
    let train_class: Vec<usize> = split.truth(&split.train);
    let rows: Vec<Vec<f32>> = split
        .matrix(&spec, test)
        .chunks(width.max(1))
        .map(embed)
        .collect();
    let k = split.classes.len();
    let classify = |x: &[f32]| -> usize {
        let mut best: Vec<(f32, usize)> = Vec::with_capacity(K + 1);
        for (t, c) in train.iter().zip(&train_class) {
            let d: f32 = t.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum();
            if best.len() < K || d < best[best.len() - 1].0 {
                let at = best.partition_point(|(e, _)| *e <= d);
                best.insert(at, (d, *c));
                best.truncate(K);
            }
        }
        let mut votes = vec![0.0f64; k];
        for (d, c) in best {
            votes[c] += 1.0 / (f64::from(d).sqrt() + 1e-3);
        }
        argmax(&votes)
    };
    let pred: Vec<usize> = rows.iter().map(|r| classify(r)).collect();
    let mut times = Vec::new();
    for r in rows.iter().take(64) {
        let start = Instant::now();
        std::hint::black_box(classify(std::hint::black_box(r)));
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Baseline {
        name: format!("k-NN (k={K}) over sizes, directions and gaps of the first packets"),
        packets,
        scores: score(&split.truth(test), &pred, &split.classes),
        us_per_flow: median(&mut times),
    }
}
