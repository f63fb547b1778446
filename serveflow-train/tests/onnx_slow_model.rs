//! An MLP exported by serveflow-train's ONNX writer, served by `serveflow::model::onnx`
//! (tract): outputs must equal the network's own forward pass, for batches of any size, from
//! several threads sharing one plan; shape mismatches and broken files give clear errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use serveflow::model::onnx::{softmax, OutputKind, SlowModel};
use serveflow_train::mlp::{Dense, Mlp};

fn layer(inputs: usize, outputs: usize, seed: u32) -> Dense {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        ((s >> 8) as f32 / (1 << 24) as f32 - 0.5) * 0.2
    };
    Dense {
        inputs,
        outputs,
        weights: (0..inputs * outputs).map(|_| next()).collect(),
        bias: (0..outputs).map(|_| next()).collect(),
    }
}

fn network() -> Mlp {
    Mlp {
        layers: vec![layer(64, 32, 1), layer(32, 16, 2), layer(16, 5, 3)],
        select: None,
    }
}

/// A network reading 64 of 100 input columns (as training leaves it when 36 are constant).
fn selecting_network() -> Mlp {
    Mlp {
        select: Some((
            100,
            (0..100)
                .filter(|c| c % 3 != 1 || *c > 90)
                .take(64)
                .collect(),
        )),
        ..network()
    }
}

#[test]
fn a_network_that_reads_some_columns_matches_tract() {
    let mlp = selecting_network();
    assert_eq!(mlp.inputs(), 100);
    let path = write(&mlp.to_onnx());
    let model = SlowModel::load(&path, 100, 5, OutputKind::Logits).unwrap();
    let mut state = model.state().unwrap();
    for batch in [1usize, 9, 32] {
        let rows: Vec<f32> = (0..batch * 100)
            .map(|i| ((i * 37) % 23) as f32 / 11.0 - 1.0)
            .collect();
        let mut out = Vec::new();
        model.predict_batch(&mut state, &rows, &mut out).unwrap();
        let mut expected = mlp.forward(&rows);
        for row in expected.chunks_mut(5) {
            softmax(row);
        }
        for (a, b) in out.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}

fn write(bytes: &[u8]) -> tempfile::TempPath {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    file.into_temp_path()
}

#[test]
fn tract_matches_the_forward_pass_in_batches_and_threads() {
    let mlp = network();
    let path = write(&mlp.to_onnx());
    let model = SlowModel::load(&path, 64, 5, OutputKind::Logits).unwrap();
    std::thread::scope(|scope| {
        for t in 0..2 {
            let (model, mlp) = (&model, &mlp);
            scope.spawn(move || {
                let mut state = model.state().unwrap();
                for batch in [1usize, 7, 32] {
                    let rows: Vec<f32> = (0..batch * 64)
                        .map(|i| ((i * 31 + t * 7) % 17) as f32 / 8.0 - 1.0)
                        .collect();
                    let mut out = Vec::new();
                    model.predict_batch(&mut state, &rows, &mut out).unwrap();
                    let mut expected = mlp.forward(&rows);
                    for row in expected.chunks_mut(5) {
                        softmax(row);
                    }
                    assert_eq!(out.len(), expected.len());
                    for (a, b) in out.iter().zip(&expected) {
                        assert!((a - b).abs() < 1e-5, "tract {a} vs forward {b}");
                    }
                }
            });
        }
    });
}

#[test]
fn wrong_shapes_and_broken_files_are_clear_errors() {
    let path = write(&network().to_onnx());
    let err = SlowModel::load(&path, 65, 5, OutputKind::Logits)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rows of 65 values"), "{err}");
    let err = SlowModel::load(&path, 64, 4, OutputKind::Logits)
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected [N, 4]"), "{err}");
    let broken = write(b"not a protobuf at all");
    let err = SlowModel::load(&broken, 64, 5, OutputKind::Logits)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ONNX model"), "{err}");
}
