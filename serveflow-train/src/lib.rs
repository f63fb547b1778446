//! Training and model crafting for serveflow. The heavy build dependencies (LightGBM's C++
//! library through lightgbm3) live in this crate, so the serving build (`serveflow-userspace`)
//! never compiles them; `cargo xtask test` builds and tests it.
//!
//! `dataset` (labeled flows with their first packets) -> `split` (classes, train/test) ->
//! `trees` + `mlp` (the stages) -> `pipeline` (a models directory) -> `craft` (the grid and
//! its Pareto front), `cascade` (stages routed and calibrated on corpus flows), `loso`
//! (leave-one-source-out), `baselines` (port table, k-NN), `metrics`; `progress` says how far
//! a run is.

pub mod baselines;
pub mod cascade;
pub mod craft;
pub mod dataset;
pub mod loso;
pub mod metrics;
pub mod mlp;
pub mod pipeline;
pub mod progress;
pub mod split;
pub mod trees;
