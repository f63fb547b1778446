//! The two model stages: [`tree`], the fast LightGBM-format evaluator that runs on the RX
//! cores, and [`onnx`], the slow ONNX classifier run by the slow pool.

pub mod onnx;
pub mod tree;
