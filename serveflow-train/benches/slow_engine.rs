//! The slow stage's engine: tract (what serves) against a plain `sgemm` forward pass
//! (matrixmultiply, from crates.io: what training uses), on the two bundled slow stages'
//! shapes at batch 32, the same weights and rows, outputs checked equal before timing.
//! Issue 17 asks whether a better engine than tract is available; target <= 5 us per flow.
//!
//! Run: `cargo bench -p serveflow-train --bench slow_engine`

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark set-up")]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serveflow::model::onnx::{softmax, OutputKind, SlowModel};
use serveflow_train::mlp::{Dense, Mlp};

/// A deterministic pseudo-random stream (xorshift), values in [-scale, scale).
struct Noise(u64);

impl Noise {
    fn next(&mut self, scale: f32) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }
}

/// An MLP of the given shape with random weights, reading `kept` of `width` columns.
fn network(width: usize, kept: usize, hidden: [usize; 2], classes: usize) -> Mlp {
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let sizes = [kept, hidden[0], hidden[1], classes];
    let layers = sizes
        .windows(2)
        .map(|w| Dense {
            inputs: w[0],
            outputs: w[1],
            weights: (0..w[0] * w[1])
                .map(|_| noise.next(1.0 / (w[0] as f32).sqrt()))
                .collect(),
            bias: (0..w[1]).map(|_| noise.next(0.1)).collect(),
        })
        .collect();
    let keep: Vec<usize> = (0..kept).map(|i| i * width / kept).collect();
    Mlp {
        layers,
        select: (kept < width).then_some((width, keep)),
    }
}

fn bench(c: &mut Criterion) {
    // (name, row width, columns the first layer reads, classes): the bundled slow stages.
    let shapes = [("service", 248, 246, 46), ("device", 5149, 2981, 25)];
    let batch = 32;
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("slow_engine");
    for (name, width, kept, classes) in shapes {
        let mlp = network(width, kept, [128, 64], classes);
        let path = dir.path().join(format!("{name}.onnx"));
        std::fs::write(&path, mlp.to_onnx()).unwrap();
        let tract = SlowModel::load(&path, width, classes, OutputKind::Logits).unwrap();
        let mut noise = Noise(7);
        // Rows like nPrint's: mostly -1/0/1, as the slow stages' rows are.
        let rows: Vec<f32> = (0..batch * width)
            .map(|_| noise.next(1.5).round())
            .collect();

        let mut state = tract.state().unwrap();
        let mut by_tract = Vec::new();
        tract
            .predict_batch(&mut state, &rows, &mut by_tract)
            .unwrap();
        let mut by_sgemm = mlp.forward(&rows);
        by_sgemm.chunks_mut(classes).for_each(softmax);
        let worst = by_tract
            .iter()
            .zip(&by_sgemm)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-4, "{name}: engines disagree by {worst}");

        let label = format!("{name} {kept}-128-64-{classes}, batch {batch}");
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("tract/{label}"), |b| {
            b.iter(|| {
                tract
                    .predict_batch(&mut state, black_box(&rows), &mut by_tract)
                    .unwrap();
                black_box(&by_tract);
            })
        });
        group.bench_function(format!("sgemm/{label}"), |b| {
            b.iter(|| {
                let mut out = mlp.forward(black_box(&rows));
                out.chunks_mut(classes).for_each(softmax);
                black_box(out)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
