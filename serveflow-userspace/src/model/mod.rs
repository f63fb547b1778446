//! The two model stages and the directory that holds them: [`tree`], the fast LightGBM-format
//! evaluator that runs on the RX cores; [`onnx`], the slow ONNX classifier run by the slow
//! pool; [`dir`], the models directory with its manifest and routing thresholds; [`bundled`],
//! the default models used when none is named.

pub mod bundled;
pub mod dir;
pub mod onnx;
pub mod tree;
