//! The inline stages' tree models: LightGBM (through lightgbm3) trains them, serveflow's
//! native evaluator serves and times them.

use std::time::Instant;

use anyhow::bail;
use lightgbm3::{Booster, Dataset};
use serde::{Deserialize, Serialize};
use serveflow::model::tree::TreeModel;

/// Size and learning rate of a tree model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FastParams {
    /// Boosting rounds (trees = rounds x classes).
    pub rounds: u32,
    /// Leaves per tree.
    pub leaves: u32,
    /// Shrinkage per round (fewer rounds want a larger step).
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// Deepest a tree may grow (-1: no limit). Serving walks every tree of a group of four to
    /// the group's deepest leaf (branch-free), so shallow trees are cheap trees; measured on
    /// the corpus, depth 3-5 costs no accuracy against unlimited leaf-wise growth.
    #[serde(default = "no_limit")]
    pub max_depth: i32,
}

fn default_learning_rate() -> f64 {
    0.15
}

fn no_limit() -> i32 {
    -1
}

impl FastParams {
    /// Readable size.
    pub fn describe(&self) -> String {
        let depth = if self.max_depth > 0 {
            format!(", depth {}", self.max_depth)
        } else {
            String::new()
        };
        format!(
            "{} rounds x {} leaves{depth}, lr {}",
            self.rounds, self.leaves, self.learning_rate
        )
    }
}

/// Trains a multiclass LightGBM model on row-major `x` (`width` values per row) and returns
/// its text. L2-regularised leaves: without them, rare classes' near-zero hessians gave huge
/// leaf values and the ensemble diverged as rounds were added (measured on the corpus:
/// held-out accuracy 0.69 at 8 rounds, 0.19 at 30, against 0.83 with `lambda_l2 = 1`).
pub fn train(
    x: &[f32],
    y: &[usize],
    width: usize,
    classes: usize,
    params: FastParams,
    seed: u64,
) -> anyhow::Result<String> {
    if width == 0 {
        bail!("a tree stage has no features");
    }
    if y.is_empty() {
        bail!("no training flows");
    }
    let x: Vec<f64> = x.iter().map(|v| f64::from(*v)).collect();
    let y: Vec<f32> = y.iter().map(|c| *c as f32).collect();
    let dataset = Dataset::from_slice(&x, &y, i32::try_from(width)?, true)
        .map_err(|e| anyhow::anyhow!("LightGBM dataset: {e}"))?;
    let params = serde_json::json!({
        "objective": "multiclass",
        "num_class": classes,
        "num_iterations": params.rounds,
        "num_leaves": params.leaves,
        "max_depth": params.max_depth,
        "learning_rate": params.learning_rate,
        "min_data_in_leaf": 10,
        "lambda_l2": 1.0,
        "feature_fraction": 0.9,
        "num_threads": 2,
        "deterministic": true,
        "force_row_wise": true,
        "seed": seed,
        "verbosity": -1,
    });
    let booster =
        Booster::train(dataset, &params).map_err(|e| anyhow::anyhow!("LightGBM training: {e}"))?;
    booster
        .save_string()
        .map_err(|e| anyhow::anyhow!("LightGBM save: {e}"))
}

/// Index of the largest value (the first on ties).
pub fn argmax<T: Copy + Into<f64>>(v: &[T]) -> usize {
    serveflow::router::argmax(v).0
}

/// Predicted classes of the rows of `x`, and the model's median inference time per flow in
/// microseconds on this core (timed in groups of 16 flows so the clock's cost stays small).
pub fn evaluate(model: &TreeModel, x: &[f32], width: usize) -> (Vec<usize>, f64) {
    let rows: Vec<&[f32]> = x.chunks(width.max(1)).collect();
    let mut out = vec![0.0; model.num_outputs()];
    let pred = rows
        .iter()
        .map(|r| {
            model.predict_raw_f32(r, &mut out);
            argmax(&out)
        })
        .collect();
    // Timed as serving runs it: raw scores on the f32 row, then the transform.
    let mut times: Vec<f64> = Vec::new();
    for _ in 0..3 {
        for group in rows.chunks(16) {
            let start = Instant::now();
            for r in group {
                model.predict_raw_f32(std::hint::black_box(r), &mut out);
                model.probabilities(&mut out, 1.0);
            }
            times.push(start.elapsed().as_secs_f64() * 1e6 / group.len() as f64);
        }
    }
    (pred, median(&mut times))
}

/// Median of `v` (NaN when empty).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
