//! The slow stage: any ONNX classifier, run by tract (pure Rust).
//!
//! The model's input is pinned to `[N, features]` with a symbolic batch `N`, optimised once
//! into a plan shared (in an `Arc`) by every slow-pool thread; each thread keeps its own
//! [`SlowState`] and runs whole batches through it. Outputs are per-class scores: taken as
//! probabilities, or turned into them with a softmax when the model emits logits.
//!
//! A model may read only some columns of the feature row: its metadata then names the row's
//! width ([`INPUT_WIDTH_KEY`]) and the columns ([`INPUT_COLUMNS_KEY`], ranges like `0-28,40`),
//! and the columns are gathered here before the batch runs.

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

/// Metadata key: the width of the feature row a column-reading model is fed.
pub const INPUT_WIDTH_KEY: &str = "serveflow.input_width";
/// Metadata key: the columns of the feature row the model's input holds, in order.
pub const INPUT_COLUMNS_KEY: &str = "serveflow.input_columns";

/// Sorted column indices as ranges: `0-28,40,42-50`.
pub fn columns_text(columns: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < columns.len() {
        let start = columns[i];
        let mut end = start;
        while i + 1 < columns.len() && columns[i + 1] == end + 1 {
            i += 1;
            end = columns[i];
        }
        parts.push(if end == start {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// The (start, length) runs of a [`columns_text`], checked against `width`.
fn parse_columns(text: &str, width: usize) -> Result<Vec<(usize, usize)>, String> {
    let mut runs = Vec::new();
    let mut next = 0;
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = match (a.parse(), b.parse()) {
            (Ok(a), Ok(b)) if a <= b => (a, b),
            _ => return Err(format!("column range {part:?} is not a range")),
        };
        if a < next || b >= width {
            return Err(format!(
                "column range {part:?} is out of order or beyond the row's {width} values"
            ));
        }
        runs.push((a, b - a + 1));
        next = b + 1;
    }
    Ok(runs)
}

/// A loaded, optimised model.
#[derive(Clone)]
pub struct SlowModel {
    plan: Arc<Plan>,
    features: usize,
    classes: usize,
    output: OutputKind,
    /// The (start, length) runs of the row the model reads, when not all of it.
    columns: Option<Arc<[(usize, usize)]>>,
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
    /// Gathered columns of a batch.
    gathered: Vec<f32>,
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
        let meta = |key: &str| {
            model
                .properties
                .get(&format!("onnx.metadata_props.{key}"))
                .and_then(|t| {
                    t.to_plain_array_view::<String>()
                        .ok()?
                        .iter()
                        .next()
                        .cloned()
                })
        };
        let columns = match (meta(INPUT_WIDTH_KEY), meta(INPUT_COLUMNS_KEY)) {
            (Some(width), Some(text)) => {
                let shape = |reason: String| SlowModelError::Shape {
                    path: p.clone(),
                    reason,
                };
                let width: usize = width
                    .parse()
                    .map_err(|_| shape(format!("{INPUT_WIDTH_KEY} {width:?} is not a number")))?;
                if width != features {
                    return Err(shape(format!(
                        "the model reads rows of {width} features, the feature set gives {features}: retrain, or fix the manifest"
                    )));
                }
                Some(
                    parse_columns(&text, width)
                        .map_err(|e| shape(format!("{INPUT_COLUMNS_KEY}: {e}")))?,
                )
            }
            _ => None,
        };
        let read = columns
            .as_ref()
            .map_or(features, |c| c.iter().map(|r| r.1).sum());
        let batch = model.symbols.sym("N");
        model
            .set_input_fact(0, f32::fact([TDim::from(batch), TDim::from(read)]).into())
            .map_err(load)?;
        let typed = model.into_typed().map_err(|e| {
            // tract's unification message names internal nodes; the operator needs the widths.
            log::debug!("{p}: tract: {e:#}");
            SlowModelError::Shape {
                path: p.clone(),
                reason: format!(
                    "the model does not take rows of {read} values, which the manifest's slow \
                     feature set gives: retrain the slow model for that feature set, or fix \
                     slow.features / slow.packets in the manifest"
                ),
            }
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
            columns: columns.map(Into::into),
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
            gathered: Vec::new(),
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
        let rows = &rows[..n * self.features];
        let input = match &self.columns {
            None => Tensor::from_shape(&[n, self.features], rows),
            Some(runs) => {
                let g = &mut state.gathered;
                g.clear();
                for row in rows.chunks(self.features) {
                    for &(start, len) in runs.iter() {
                        if len == 1 {
                            g.push(row[start]);
                        } else {
                            g.extend_from_slice(&row[start..start + len]);
                        }
                    }
                }
                Tensor::from_shape(&[n, g.len() / n], g)
            }
        }
        .map_err(|e| SlowModelError::Run(format!("{e:#}")))?;
        let result = state
            .state
            .run(tvec!(input.into()))
            .map_err(|e| SlowModelError::Run(format!("{e:#}")))?;
        clear_upper_vector_state();
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

/// Clears the upper halves of the vector registers after tract's AVX-512 kernels: left dirty,
/// every SSE instruction that follows (the softmax, libm's `expf`) paid a state-transition
/// penalty, measured here as `expf` taking ~180 ns instead of ~10.
#[inline]
fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: `vzeroupper` only clears the upper bits of the vector registers, which
        // hold no live values between these calls; the CPU supports AVX (checked above).
        unsafe { std::arch::x86_64::_mm256_zeroupper() };
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;

    #[test]
    fn column_ranges_round_trip_and_bad_ones_are_refused() {
        let cols = [0, 1, 2, 5, 7, 8];
        assert_eq!(columns_text(&cols), "0-2,5,7-8");
        assert_eq!(
            parse_columns("0-2,5,7-8", 9).unwrap(),
            [(0, 3), (5, 1), (7, 2)]
        );
        assert!(parse_columns("0-2,1", 9).is_err(), "out of order");
        assert!(parse_columns("0-9", 9).is_err(), "beyond the row");
        assert!(parse_columns("3-1", 9).is_err());
        assert!(parse_columns("x", 9).is_err());
    }
}
