//! Training and model crafting for serveflow. The heavy build dependencies (LightGBM's C++
//! library through lightgbm3) live in this crate, so the serving build (`serveflow-userspace`)
//! never compiles them; `cargo xtask test` builds and tests it.

pub mod craft;
pub mod dataset;
pub mod metrics;
pub mod mlp;
pub mod pipeline;
