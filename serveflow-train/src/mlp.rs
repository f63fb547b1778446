//! A small multilayer perceptron (dense layers, ReLU between them, logits out): its forward
//! pass, and its export as an ONNX graph (Gemm + Relu) that the slow pool serves through
//! tract. Written against ONNX's protobuf types that tract-onnx exposes, so no Python or
//! external exporter is involved.

use prost::Message as _;
use tract_onnx::pb::{
    tensor_proto::DataType, tensor_shape_proto::dimension::Value as Dim,
    tensor_shape_proto::Dimension, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

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
}

impl Mlp {
    /// Inputs of the first layer.
    pub fn inputs(&self) -> usize {
        self.layers.first().map_or(0, |l| l.inputs)
    }

    /// Outputs of the last layer (classes).
    pub fn outputs(&self) -> usize {
        self.layers.last().map_or(0, |l| l.outputs)
    }

    /// Logits for `rows` (row-major, `inputs()` values each).
    pub fn forward(&self, rows: &[f32]) -> Vec<f32> {
        let n = rows.len() / self.inputs().max(1);
        let mut x = rows.to_vec();
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
            graph: Some(GraphProto {
                node: nodes,
                name: "serveflow_mlp".into(),
                initializer: init,
                input: vec![value("features", self.inputs())],
                output: vec![value("logits", self.outputs())],
                ..GraphProto::default()
            }),
            ..ModelProto::default()
        };
        model.encode_to_vec()
    }
}
