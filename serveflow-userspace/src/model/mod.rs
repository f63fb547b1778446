//! The two model stages: [`tree`], the fast LightGBM-format evaluator that runs on the RX
//! cores.

pub mod tree;
