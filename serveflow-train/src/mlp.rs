//! A small multilayer perceptron (dense layers, ReLU between them, logits out): its forward
//! pass, and its export as an ONNX graph (Gemm + Relu) that the slow pool serves through
//! tract. Written against ONNX's protobuf types that tract-onnx exposes, so no Python
//! or external exporter is involved.
//!
//! Inputs that never vary in training (nPrint's absent options, masked addresses: most of a
//! 5,000-value row) carry nothing a network can use; training drops them, the graph reads the
//! rest, and the columns it reads ride in the model's metadata for the server to gather
//! (`serveflow::model::onnx`), so the first layer's cost is that of the informative inputs
//! only.

use prost::Message as _;
use tract_onnx::pb::{
    tensor_proto::DataType, tensor_shape_proto::dimension::Value as Dim,
    tensor_shape_proto::Dimension, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

use crate::progress::STEPS;

/// One dense layer: `out = in · Wᵀ + b`, W row-major `[outputs][inputs]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// Inputs.
    pub inputs: usize,
    /// Outputs.
    pub outputs: usize,
    /// Weights, `outputs * inputs`, row-major.
    pub weights: Vec<f32>,
    /// Biases, `outputs`.
    pub bias: Vec<f32>,
}

/// The network.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    /// Layers, input first; ReLU follows every layer but the last.
    pub layers: Vec<Dense>,
    /// The input columns the first layer reads, when it reads fewer than the row holds: the
    /// row's width and the kept columns, in order.
    pub select: Option<(usize, Vec<usize>)>,
}

impl Mlp {
    /// Values per input row.
    pub fn inputs(&self) -> usize {
        match &self.select {
            Some((width, _)) => *width,
            None => self.layers.first().map_or(0, |l| l.inputs),
        }
    }

    /// The columns of `rows` the first layer reads.
    fn gather(&self, rows: &[f32]) -> Vec<f32> {
        match &self.select {
            Some((width, keep)) => rows
                .chunks((*width).max(1))
                .flat_map(|r| keep.iter().map(move |&c| r[c]))
                .collect(),
            None => rows.to_vec(),
        }
    }

    /// Outputs of the last layer (classes).
    pub fn outputs(&self) -> usize {
        self.layers.last().map_or(0, |l| l.outputs)
    }

    /// Logits for `rows` (row-major, `inputs()` values each).
    pub fn forward(&self, rows: &[f32]) -> Vec<f32> {
        let n = rows.len() / self.inputs().max(1);
        let mut x = self.gather(rows);
        for (i, layer) in self.layers.iter().enumerate() {
            let mut y = vec![0f32; n * layer.outputs];
            for r in 0..n {
                for o in 0..layer.outputs {
                    y[r * layer.outputs + o] = layer.bias[o];
                }
            }
            // SAFETY: the dimensions and strides below describe x (n x inputs, row-major),
            // Wᵀ (inputs x outputs, read through W's row-major layout) and y
            // (n x outputs, row-major), all sized accordingly above.
            unsafe {
                matrixmultiply::sgemm(
                    n,
                    layer.inputs,
                    layer.outputs,
                    1.0,
                    x.as_ptr(),
                    layer.inputs as isize,
                    1,
                    layer.weights.as_ptr(),
                    1,
                    layer.inputs as isize,
                    1.0,
                    y.as_mut_ptr(),
                    layer.outputs as isize,
                    1,
                );
            }
            if i + 1 < self.layers.len() {
                for v in &mut y {
                    *v = v.max(0.0);
                }
            }
            x = y;
        }
        x
    }

    /// The network as an ONNX model: input `features` `[N, inputs]`, output `logits`
    /// `[N, classes]`, opset 13.
    pub fn to_onnx(&self) -> Vec<u8> {
        let tensor = |name: String, dims: Vec<i64>, data: &[f32]| TensorProto {
            name,
            dims,
            data_type: DataType::Float as i32,
            float_data: data.to_vec(),
            ..TensorProto::default()
        };
        let value = |name: &str, cols: usize| ValueInfoProto {
            name: name.to_owned(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: DataType::Float as i32,
                    shape: Some(TensorShapeProto {
                        dim: vec![
                            Dimension {
                                value: Some(Dim::DimParam("N".into())),
                                ..Dimension::default()
                            },
                            Dimension {
                                value: Some(Dim::DimValue(cols as i64)),
                                ..Dimension::default()
                            },
                        ],
                    }),
                })),
                ..TypeProto::default()
            }),
            ..ValueInfoProto::default()
        };
        let mut nodes = Vec::new();
        let mut init = Vec::new();
        let mut current = "features".to_owned();
        // The columns the graph reads travel as metadata; the server gathers them from the
        // full row (tract's Gather cost more than the columns it saved).
        let mut metadata = Vec::new();
        if let Some((width, keep)) = &self.select {
            metadata.push(StringStringEntryProto {
                key: serveflow::model::onnx::INPUT_WIDTH_KEY.into(),
                value: width.to_string(),
            });
            metadata.push(StringStringEntryProto {
                key: serveflow::model::onnx::INPUT_COLUMNS_KEY.into(),
                value: serveflow::model::onnx::columns_text(keep),
            });
        }
        let graph_inputs = self.layers.first().map_or(0, |l| l.inputs);
        for (i, layer) in self.layers.iter().enumerate() {
            let (w, b) = (format!("w{i}"), format!("b{i}"));
            init.push(tensor(
                w.clone(),
                vec![layer.outputs as i64, layer.inputs as i64],
                &layer.weights,
            ));
            init.push(tensor(b.clone(), vec![layer.outputs as i64], &layer.bias));
            let last = i + 1 == self.layers.len();
            let out = if last {
                "logits".to_owned()
            } else {
                format!("h{i}")
            };
            nodes.push(NodeProto {
                input: vec![current.clone(), w, b],
                output: vec![out.clone()],
                name: format!("dense{i}"),
                op_type: "Gemm".into(),
                attribute: vec![AttributeProto {
                    name: "transB".into(),
                    i: 1,
                    r#type: tract_onnx::pb::attribute_proto::AttributeType::Int as i32,
                    ..AttributeProto::default()
                }],
                ..NodeProto::default()
            });
            current = out;
            if !last {
                let relu = format!("r{i}");
                nodes.push(NodeProto {
                    input: vec![current.clone()],
                    output: vec![relu.clone()],
                    name: format!("relu{i}"),
                    op_type: "Relu".into(),
                    ..NodeProto::default()
                });
                current = relu;
            }
        }
        let model = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            producer_name: "serveflow-train".into(),
            metadata_props: metadata,
            graph: Some(GraphProto {
                node: nodes,
                name: "serveflow_mlp".into(),
                initializer: init,
                input: vec![value("features", graph_inputs)],
                output: vec![value("logits", self.outputs())],
                ..GraphProto::default()
            }),
            ..ModelProto::default()
        };
        model.encode_to_vec()
    }
}

/// Training settings.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Hidden layer widths.
    pub hidden: [usize; 2],
    /// Passes over the data.
    pub epochs: usize,
    /// Rows per step.
    pub batch: usize,
    /// Adam learning rate.
    pub learning_rate: f32,
    /// Seed of the initial weights and the shuffles.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            hidden: [128, 64],
            epochs: 12,
            batch: 128,
            learning_rate: 1e-3,
            seed: 7,
        }
    }
}

/// Deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// C = alpha * op(A) * op(B) + beta * C on row-major buffers, through matrixmultiply.
/// `a` is m x k (or k x m when `ta`), `b` is k x n (or n x k when `tb`).
#[allow(clippy::too_many_arguments, reason = "a GEMM takes what a GEMM takes")]
fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    ta: bool,
    b: &[f32],
    tb: bool,
    beta: f32,
    c: &mut [f32],
) {
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "gemm shapes"
    );
    // SAFETY: the asserts above bound every access the strides describe.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Share of training rows whose value in an input must differ from that input's most common
/// value for the network to read it (at least 20 rows): inputs that almost never vary (an
/// nPrint option bit set in a handful of flows) teach nothing that transfers and cost a column
/// of the first layer each; the first layer's cost is most of the slow stage's (measured: 28
/// µs per flow at 5,288 inputs, 3 µs at 1,000, batch 32).
pub const MIN_VARYING_SHARE: f64 = 0.01;

/// Whether each input varies in at least `min_rows` rows of `x`: up to three distinct values
/// are counted per input; a fourth means it varies.
pub fn informative(x: &[f32], inputs: usize, min_rows: usize) -> Vec<bool> {
    let rows = x.len() / inputs.max(1);
    (0..inputs)
        .map(|c| {
            let mut seen: Vec<(u32, usize)> = Vec::with_capacity(3);
            for r in 0..rows {
                let v = x[r * inputs + c].to_bits();
                if let Some((_, n)) = seen.iter_mut().find(|(b, _)| *b == v) {
                    *n += 1;
                } else if seen.len() < 3 {
                    seen.push((v, 1));
                } else {
                    return true;
                }
            }
            let most = seen.iter().map(|(_, n)| *n).max().unwrap_or(0);
            rows - most >= min_rows.max(1)
        })
        .collect()
}

/// Trains an MLP with softmax cross-entropy and Adam. `x` is row-major (`inputs` per row),
/// `y` the class of each row, `class_weight` a weight per class (e.g. to balance classes).
/// With `validation` rows (same layout), the weights of the epoch that scored best on them
/// are kept: one fixed number of epochs overfitted some seeds by several points.
pub fn train(
    x: &[f32],
    y: &[usize],
    inputs: usize,
    classes: usize,
    class_weight: &[f32],
    validation: Option<(&[f32], &[usize])>,
    config: TrainConfig,
) -> Mlp {
    // Inputs are standardised for training (stats span bytes to nanoseconds, nPrint bits are
    // -1/0/1) and the scaling is folded into the first layer afterwards, so the exported
    // model takes raw features. Only inputs that vary are read.
    let (mean, scale) = standardisation(x, inputs);
    let rows = y.len();
    let varies = informative(
        x,
        inputs,
        ((rows as f64 * MIN_VARYING_SHARE) as usize).max(20),
    );
    let keep: Vec<usize> = (0..inputs)
        .filter(|&c| scale[c] > 0.0 && varies[c])
        .collect();
    let width = inputs;
    let keep = if keep.is_empty() { vec![0] } else { keep };
    let inputs = keep.len();
    let (mean, scale): (Vec<f32>, Vec<f32>) = keep.iter().map(|&c| (mean[c], scale[c])).unzip();
    let prepare = |x: &[f32]| -> Vec<f32> {
        x.chunks(width.max(1))
            .flat_map(|row| {
                keep.iter()
                    .zip(&mean)
                    .zip(&scale)
                    .map(|((&c, m), s)| (row[c] - m) * s)
            })
            .collect()
    };
    let x = prepare(x);
    let x = x.as_slice();
    let validation = validation.map(|(vx, vy)| (prepare(vx), vy));
    let mut rng = Rng(config.seed);
    let sizes = [inputs, config.hidden[0], config.hidden[1], classes];
    let mut mlp = Mlp {
        layers: sizes
            .windows(2)
            .map(|w| {
                // He initialisation, uniform.
                let limit = (6.0 / w[0] as f32).sqrt();
                Dense {
                    inputs: w[0],
                    outputs: w[1],
                    weights: (0..w[0] * w[1])
                        .map(|_| (rng.uniform() * 2.0 - 1.0) * limit)
                        .collect(),
                    bias: vec![0.0; w[1]],
                }
            })
            .collect(),
        select: None,
    };
    let mut best: Option<(f64, Vec<Dense>)> = None;
    let params: Vec<usize> = mlp
        .layers
        .iter()
        .map(|l| l.weights.len() + l.bias.len())
        .collect();
    let mut m: Vec<Vec<f32>> = params.iter().map(|n| vec![0.0; *n]).collect();
    let mut v: Vec<Vec<f32>> = params.iter().map(|n| vec![0.0; *n]).collect();
    let (beta1, beta2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let mut step = 0i32;
    let rows = y.len();
    let mut order: Vec<usize> = (0..rows).collect();
    let mut xb = Vec::new();
    STEPS.count(config.epochs as u64, "epochs");
    for _ in 0..config.epochs {
        STEPS.step();
        for i in (1..rows).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for chunk in order.chunks(config.batch) {
            let b = chunk.len();
            xb.clear();
            for &r in chunk {
                xb.extend_from_slice(&x[r * inputs..(r + 1) * inputs]);
            }
            // Forward, keeping each layer's input and pre-activation.
            let mut acts: Vec<Vec<f32>> = vec![xb.clone()];
            for (li, layer) in mlp.layers.iter().enumerate() {
                let mut z = vec![0f32; b * layer.outputs];
                for row in z.chunks_mut(layer.outputs) {
                    row.copy_from_slice(&layer.bias);
                }
                gemm(
                    b,
                    layer.inputs,
                    layer.outputs,
                    &acts[li],
                    false,
                    &layer.weights,
                    true,
                    1.0,
                    &mut z,
                );
                if li + 1 < mlp.layers.len() {
                    for val in &mut z {
                        *val = val.max(0.0);
                    }
                }
                acts.push(z);
            }
            // Softmax cross-entropy gradient, weighted, averaged over the batch.
            let mut grad = acts.pop().unwrap_or_default();
            let total_w: f32 = chunk
                .iter()
                .map(|&r| class_weight[y[r]])
                .sum::<f32>()
                .max(1e-6);
            for (row, &r) in grad.chunks_mut(classes).zip(chunk) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for val in row.iter_mut() {
                    *val = (*val - max).exp();
                    sum += *val;
                }
                let w = class_weight[y[r]] / total_w;
                for (c, val) in row.iter_mut().enumerate() {
                    *val = (*val / sum - if c == y[r] { 1.0 } else { 0.0 }) * w;
                }
            }
            // Backward.
            step += 1;
            let (c1, c2) = (1.0 - beta1.powi(step), 1.0 - beta2.powi(step));
            for li in (0..mlp.layers.len()).rev() {
                let (inp, out) = (mlp.layers[li].inputs, mlp.layers[li].outputs);
                let input = &acts[li];
                let mut dw = vec![0f32; out * inp];
                gemm(out, b, inp, &grad, true, input, false, 0.0, &mut dw);
                let mut db = vec![0f32; out];
                for row in grad.chunks(out) {
                    for (d, g) in db.iter_mut().zip(row) {
                        *d += g;
                    }
                }
                let next_grad = if li > 0 {
                    let mut g = vec![0f32; b * inp];
                    gemm(
                        b,
                        out,
                        inp,
                        &grad,
                        false,
                        &mlp.layers[li].weights,
                        false,
                        0.0,
                        &mut g,
                    );
                    for (gv, a) in g.iter_mut().zip(input) {
                        if *a <= 0.0 {
                            *gv = 0.0;
                        }
                    }
                    Some(g)
                } else {
                    None
                };
                let layer = &mut mlp.layers[li];
                let (mw, vw) = (&mut m[li], &mut v[li]);
                let grads = dw.iter().chain(db.iter());
                let weights = layer.weights.iter_mut().chain(layer.bias.iter_mut());
                for (((p, g), mv), vv) in weights.zip(grads).zip(mw.iter_mut()).zip(vw.iter_mut()) {
                    *mv = beta1 * *mv + (1.0 - beta1) * g;
                    *vv = beta2 * *vv + (1.0 - beta2) * g * g;
                    *p -= config.learning_rate * (*mv / c1) / ((*vv / c2).sqrt() + eps);
                }
                if let Some(g) = next_grad {
                    grad = g;
                }
            }
        }
        if let Some((vx, vy)) = &validation {
            let right = mlp
                .forward(vx)
                .chunks(classes)
                .zip(vy.iter())
                .filter(|(row, y)| argmax(row) == **y)
                .count();
            let acc = right as f64 / vy.len().max(1) as f64;
            if best.as_ref().is_none_or(|(b, _)| acc > *b) {
                best = Some((acc, mlp.layers.clone()));
            }
        }
    }
    if let Some((_, layers)) = best {
        mlp.layers = layers;
    }
    if let Some(first) = mlp.layers.first_mut() {
        fold_standardisation(first, &mean, &scale);
    }
    mlp.select = (keep.len() < width).then_some((width, keep));
    mlp
}

fn argmax(row: &[f32]) -> usize {
    serveflow::router::argmax(row).0
}

/// Per-input mean and 1/std over `rows`; constant inputs get scale 0, so a value never seen
/// in training cannot swing the output.
fn standardisation(x: &[f32], inputs: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = (x.len() / inputs.max(1)).max(1) as f64;
    let mut sum = vec![0f64; inputs];
    let mut sq = vec![0f64; inputs];
    for row in x.chunks(inputs) {
        for ((s, q), v) in sum.iter_mut().zip(sq.iter_mut()).zip(row) {
            let v = f64::from(*v);
            *s += v;
            *q += v * v;
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / rows).collect();
    let scale = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| {
            let sd = (q / rows - m * m).max(0.0).sqrt();
            if sd > 1e-9 {
                (1.0 / sd) as f32
            } else {
                0.0
            }
        })
        .collect();
    (mean.iter().map(|m| *m as f32).collect(), scale)
}

/// `W((x - mean) * scale) + b` as `W'x + b'`.
fn fold_standardisation(layer: &mut Dense, mean: &[f32], scale: &[f32]) {
    for (row, bias) in layer
        .weights
        .chunks_mut(layer.inputs)
        .zip(layer.bias.iter_mut())
    {
        for ((w, m), s) in row.iter_mut().zip(mean).zip(scale) {
            *w *= s;
            *bias -= *w * m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two Gaussian-ish blobs per class in 8 dimensions: a trained net separates them.
    #[test]
    fn rarely_varying_inputs_are_not_read() {
        // Column 0 varies in every row, column 1 in 3 rows, column 2 never, column 3 has many
        // values.
        let x: Vec<f32> = (0..100)
            .flat_map(|i| {
                [
                    (i % 2) as f32,
                    if i < 3 { 1.0 } else { -1.0 },
                    0.0,
                    i as f32,
                ]
            })
            .collect();
        assert_eq!(informative(&x, 4, 5), [true, false, false, true]);
        assert_eq!(informative(&x, 4, 3), [true, true, false, true]);
    }

    #[test]
    fn learns_a_separable_problem() {
        let mut rng = Rng(3);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..600 {
            let class = i % 3;
            for d in 0..8 {
                let centre = if d % 3 == class { 1.5 } else { -0.5 };
                x.push(centre + rng.uniform() - 0.5);
            }
            y.push(class);
        }
        let mlp = train(
            &x,
            &y,
            8,
            3,
            &[1.0; 3],
            None,
            TrainConfig {
                hidden: [16, 8],
                epochs: 30,
                batch: 32,
                learning_rate: 1e-2,
                seed: 1,
            },
        );
        let logits = mlp.forward(&x);
        let correct = logits
            .chunks(3)
            .zip(&y)
            .filter(|(row, &c)| {
                row.iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|m| m.0)
                    == Some(c)
            })
            .count();
        assert!(correct >= 590, "only {correct} of 600 right");
    }
}
