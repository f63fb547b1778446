//! The slow stage: any ONNX classifier, run by tract (pure Rust).
//!
//! The model's input is pinned to `[N, features]` with a symbolic batch `N`, optimised once
//! into a plan shared (in an `Arc`) by every slow-pool thread; each thread keeps its own
//! [`SlowState`] and runs whole batches through it. Outputs are per-class scores: taken as
//! probabilities, or turned into them with a softmax when the model emits logits.

use std::{path::Path, sync::Arc};

use tract_onnx::{prelude::*, tract_hir::internal::DimLike};

/// An ONNX model that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum SlowModelError {
    /// Loading, typing or optimising failed.
    #[error("ONNX model {path}: {reason}")]
    Load {
        /// File.
        path: String,
        /// tract's account, with the cause chain.
        reason: String,
    },
    /// The model's shape does not fit the feature set.
    #[error("ONNX model {path}: {reason}")]
    Shape {
        /// File.
        path: String,
        /// What does not fit and what was expected.
        reason: String,
    },
    /// Running a batch failed.
    #[error("ONNX inference: {0}")]
    Run(String),
}

/// What the model's output holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// Class probabilities (rows sum to 1).
    Probabilities,
    /// Logits: a softmax is applied.
    Logits,
}

type Plan = TypedSimplePlan;

/// A loaded, optimised model.
#[derive(Clone)]
pub struct SlowModel {
    plan: Arc<Plan>,
    features: usize,
    classes: usize,
    output: OutputKind,
}

impl std::fmt::Debug for SlowModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlowModel")
            .field("features", &self.features)
            .field("classes", &self.classes)
            .field("output", &self.output)
            .finish()
    }
}

/// Per-thread execution state.
pub struct SlowState {
    state: TypedSimpleState,
}

impl SlowModel {
    /// Loads `path`, expecting `[N, features]` inputs and `classes` outputs per row.
    pub fn load(
        path: &Path,
        features: usize,
        classes: usize,
        output: OutputKind,
    ) -> Result<Self, SlowModelError> {
        let p = path.display().to_string();
        let load = |e: TractError| SlowModelError::Load {
            path: p.clone(),
            reason: format!("{e:#}"),
        };
        let mut model = tract_onnx::onnx().model_for_path(path).map_err(load)?;
        if model.inputs.len() != 1 || model.outputs.is_empty() {
            return Err(SlowModelError::Shape {
                path: p,
                reason: format!(
                    "expected one input and at least one output, found {} and {}",
                    model.inputs.len(),
                    model.outputs.len()
                ),
            });
        }
        let batch = model.symbols.sym("N");
        model
            .set_input_fact(
                0,
                f32::fact([TDim::from(batch), TDim::from(features)]).into(),
            )
            .map_err(load)?;
        let typed = model.into_typed().map_err(|e| SlowModelError::Shape {
            path: p.clone(),
            reason: format!("input [N, {features}] does not fit the model: {e:#}"),
        })?;
        let out_fact = typed.output_fact(0).map_err(load)?;
        let last = out_fact.shape.last().and_then(|d| d.to_usize().ok());
        if out_fact.rank() != 2 || last != Some(classes) {
            return Err(SlowModelError::Shape {
                path: p,
                reason: format!(
                    "output shape {:?}, expected [N, {classes}] (one score per class)",
                    out_fact.shape
                ),
            });
        }
        let plan = typed
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(load)?;
        Ok(SlowModel {
            plan,
            features,
            classes,
            output,
        })
    }

    /// Inputs per row.
    pub fn features(&self) -> usize {
        self.features
    }

    /// Classes per row.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// A fresh execution state for one thread.
    pub fn state(&self) -> Result<SlowState, SlowModelError> {
        Ok(SlowState {
            state: self
                .plan
                .spawn()
                .map_err(|e| SlowModelError::Run(format!("{e:#}")))?,
        })
    }

    /// Runs `rows` (row-major, `features` values each) and writes `classes` probabilities per
    /// row into `out` (cleared first).
    pub fn predict_batch(
        &self,
        state: &mut SlowState,
        rows: &[f32],
        out: &mut Vec<f32>,
    ) -> Result<(), SlowModelError> {
        let n = rows.len() / self.features.max(1);
        out.clear();
        if n == 0 {
            return Ok(());
        }
        let input = Tensor::from_shape(&[n, self.features], &rows[..n * self.features])
            .map_err(|e| SlowModelError::Run(format!("{e:#}")))?;
        let result = state
            .state
            .run(tvec!(input.into()))
            .map_err(|e| SlowModelError::Run(format!("{e:#}")))?;
        let scores = result[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| SlowModelError::Run(format!("{e:#}")))?;
        out.extend(scores.iter().copied());
        if out.len() != n * self.classes {
            return Err(SlowModelError::Run(format!(
                "model returned {} values for {n} rows of {} classes",
                out.len(),
                self.classes
            )));
        }
        if self.output == OutputKind::Logits {
            for row in out.chunks_mut(self.classes) {
                softmax(row);
            }
        }
        Ok(())
    }
}

/// In-place softmax of one row of logits.
pub fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}
