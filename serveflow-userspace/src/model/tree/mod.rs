//! A native evaluator for LightGBM text models (the fast stage).
//!
//! The model is parsed once into flat arrays (one node array for all trees, one leaf array),
//! then evaluated with no allocation per call; it is plain data, so one copy is shared by
//! every worker (`Send + Sync`). Decisions follow LightGBM's `Tree::NumericalDecision` and
//! `Tree::CategoricalDecision` exactly (missing-value modes None/Zero/NaN, default-left,
//! categorical bitsets), sums run in f64 in LightGBM's order, and the output transform is the
//! objective's (softmax, sigmoid), so predictions equal lightgbm3's bit for bit (checked by
//! the parity test in serveflow-train). Models whose splits are all numerical without missing
//! values (serveflow's own) are also laid out for branch-free evaluation of eight trees at a
//! time on f32 rows.

mod fast_exp;
mod walk;

use std::path::Path;

/// A LightGBM model file that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TreeModelError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// File.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// A line or value is not what a LightGBM text model holds.
    #[error("LightGBM model, line {line}: {reason}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A model feature this evaluator does not implement.
    #[error("LightGBM model: {0} is not supported by the serving evaluator")]
    Unsupported(String),
}

/// How raw scores become outputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Objective {
    /// Multiclass softmax over `num_class` scores.
    Softmax,
    /// One sigmoid per score (binary, or multiclassova), with this slope.
    Sigmoid(f64),
    /// Raw scores (regression and anything else).
    Identity,
}

const CATEGORICAL: u8 = 1;
const DEFAULT_LEFT: u8 = 2;
const MISSING_ZERO: u8 = 1;
const MISSING_NAN: u8 = 2;
/// Most input features a model may read (nPrint's 1024 bits x 64 packets, with room).
pub const MAX_FEATURES: usize = 1 << 17;
/// Most outputs (classes) a model may have.
pub const MAX_OUTPUTS: usize = serveflow_common::MAX_CLASSES;
/// Largest model file read (a bundled one is well under 1 MiB).
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// LightGBM's kZeroThreshold (a float literal, widened).
const ZERO_THRESHOLD: f64 = 1e-35f32 as f64;

#[derive(Clone, Copy, Debug)]
struct Node {
    threshold: f64,
    feature: u32,
    left: i32,
    right: i32,
    decision: u8,
}

#[derive(Clone, Copy, Debug)]
struct TreeRef {
    node_base: u32,
    leaf_base: u32,
    /// A tree of one leaf has no nodes.
    single_leaf: bool,
    /// Offset of this tree's categorical boundaries in `cat_bounds`.
    cat_base: u32,
}

/// A parsed model, ready to evaluate.
#[derive(Clone, Debug)]
pub struct TreeModel {
    num_class: usize,
    trees_per_iteration: usize,
    max_feature: usize,
    objective: Objective,
    average_output: bool,
    feature_names: Vec<String>,
    trees: Vec<TreeRef>,
    nodes: Vec<Node>,
    leaves: Vec<f64>,
    cat_bounds: Vec<u32>,
    cat_bits: Vec<u32>,
    /// The same trees laid out for branch-free evaluation on f32 inputs, when every split
    /// allows it (see [`walk`]).
    walk: Option<walk::Walk>,
}

fn parse_list<T: std::str::FromStr>(
    value: &str,
    line: usize,
    key: &str,
) -> Result<Vec<T>, TreeModelError> {
    value
        .split_whitespace()
        .map(|v| {
            v.parse::<T>().map_err(|_| TreeModelError::Parse {
                line,
                reason: format!("{key}: {v:?} is not a number"),
            })
        })
        .collect()
}

/// The fields of one `Tree=` block, as read.
#[derive(Default)]
struct RawTree {
    start_line: usize,
    num_leaves: usize,
    num_cat: usize,
    split_feature: Vec<i64>,
    threshold: Vec<f64>,
    decision_type: Vec<i64>,
    left_child: Vec<i64>,
    right_child: Vec<i64>,
    leaf_value: Vec<f64>,
    cat_boundaries: Vec<u32>,
    cat_threshold: Vec<u32>,
    shrinkage_seen: bool,
}

impl TreeModel {
    /// Loads a LightGBM text model file.
    pub fn load(path: &Path) -> Result<Self, TreeModelError> {
        let read = |source| TreeModelError::Read {
            path: path.display().to_string(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
            return Err(read(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "not a model file (a regular file of at most {} MiB)",
                    MAX_FILE_BYTES >> 20
                ),
            )));
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Self::parse(&text)
    }

    /// Parses a LightGBM text model.
    pub fn parse(text: &str) -> Result<Self, TreeModelError> {
        let err = |line: usize, reason: String| TreeModelError::Parse { line, reason };
        let mut num_class = None;
        let mut trees_per_iteration = None;
        let mut max_feature = None;
        let mut objective = Objective::Identity;
        let mut average_output = false;
        let mut feature_names = Vec::new();
        let mut raw: Vec<RawTree> = Vec::new();
        let mut in_tree = false;
        let mut seen_header = false;
        let mut seen_end = false;
        let mut lines = 0;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            lines = n;
            let line = line.trim();
            if line == "tree" {
                seen_header = true;
                continue;
            }
            if line == "end of trees" {
                seen_end = true;
                break;
            }
            if line.is_empty() {
                continue;
            }
            if line == "average_output" {
                average_output = true;
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(err(n, format!("expected key=value, found {line:?}")));
            };
            if key == "Tree" {
                in_tree = true;
                raw.push(RawTree {
                    start_line: n,
                    ..RawTree::default()
                });
                continue;
            }
            if in_tree {
                let Some(t) = raw.last_mut() else { continue };
                match key {
                    "num_leaves" => {
                        t.num_leaves = value.parse().map_err(|_| err(n, "num_leaves".into()))?
                    }
                    "num_cat" => t.num_cat = value.parse().map_err(|_| err(n, "num_cat".into()))?,
                    "split_feature" => t.split_feature = parse_list(value, n, key)?,
                    "threshold" => t.threshold = parse_list(value, n, key)?,
                    "decision_type" => t.decision_type = parse_list(value, n, key)?,
                    "left_child" => t.left_child = parse_list(value, n, key)?,
                    "right_child" => t.right_child = parse_list(value, n, key)?,
                    "leaf_value" => t.leaf_value = parse_list(value, n, key)?,
                    "cat_boundaries" => t.cat_boundaries = parse_list(value, n, key)?,
                    "cat_threshold" => t.cat_threshold = parse_list(value, n, key)?,
                    "is_linear" if value.trim() != "0" => {
                        return Err(TreeModelError::Unsupported("linear trees".into()))
                    }
                    "shrinkage" => t.shrinkage_seen = true,
                    _ => {}
                }
                continue;
            }
            match key {
                "num_class" => {
                    num_class = Some(value.parse().map_err(|_| err(n, "num_class".into()))?)
                }
                "num_tree_per_iteration" => {
                    trees_per_iteration = Some(
                        value
                            .parse()
                            .map_err(|_| err(n, "num_tree_per_iteration".into()))?,
                    )
                }
                "max_feature_idx" => {
                    max_feature = Some(
                        value
                            .parse()
                            .map_err(|_| err(n, "max_feature_idx".into()))?,
                    )
                }
                "feature_names" => {
                    feature_names = value.split_whitespace().map(str::to_owned).collect()
                }
                "objective" => objective = parse_objective(value),
                _ => {}
            }
        }
        if !seen_header {
            return Err(err(
                1,
                "not a LightGBM text model (no `tree` header line)".into(),
            ));
        }
        let num_class: usize = num_class.ok_or_else(|| err(1, "num_class missing".into()))?;
        let trees_per_iteration: usize =
            trees_per_iteration.ok_or_else(|| err(1, "num_tree_per_iteration missing".into()))?;
        let max_feature: usize =
            max_feature.ok_or_else(|| err(1, "max_feature_idx missing".into()))?;
        if raw.is_empty() {
            return Err(err(
                lines,
                "the model has no trees (the file is cut short, or training produced none): retrain".into(),
            ));
        }
        if !seen_end {
            return Err(err(
                lines,
                "no `end of trees` line: the file is cut short; copy or retrain it".into(),
            ));
        }
        if max_feature >= MAX_FEATURES {
            return Err(err(
                1,
                format!(
                    "max_feature_idx {max_feature}: at most {MAX_FEATURES} features are supported"
                ),
            ));
        }
        let outputs_ok = match objective {
            Objective::Softmax => trees_per_iteration == num_class,
            _ => trees_per_iteration == num_class || (trees_per_iteration == 1 && num_class <= 2),
        };
        if num_class == 0 || num_class > MAX_OUTPUTS || !outputs_ok {
            return Err(err(
                1,
                format!(
                    "num_class={num_class} with num_tree_per_iteration={trees_per_iteration}: the trees do not cover the classes (1..={MAX_OUTPUTS} classes, one tree per class per iteration)"
                ),
            ));
        }
        if trees_per_iteration == 0 || !raw.len().is_multiple_of(trees_per_iteration) {
            return Err(err(
                1,
                format!(
                    "{} trees is not a whole number of iterations of {trees_per_iteration}",
                    raw.len()
                ),
            ));
        }
        let mut model = TreeModel {
            num_class,
            trees_per_iteration,
            max_feature,
            objective,
            average_output,
            feature_names,
            trees: Vec::with_capacity(raw.len()),
            nodes: Vec::new(),
            leaves: Vec::new(),
            cat_bounds: Vec::new(),
            cat_bits: Vec::new(),
            walk: None,
        };
        for t in raw {
            model.add_tree(t)?;
        }
        model.walk = walk::Walk::build(&model);
        Ok(model)
    }

    fn add_tree(&mut self, t: RawTree) -> Result<(), TreeModelError> {
        let line = t.start_line;
        let bad = |reason: String| TreeModelError::Parse { line, reason };
        if t.num_leaves == 0 || t.leaf_value.len() != t.num_leaves {
            return Err(bad(format!(
                "tree has num_leaves={} but {} leaf values",
                t.num_leaves,
                t.leaf_value.len()
            )));
        }
        if let Some(v) = t.leaf_value.iter().find(|v| !v.is_finite()) {
            return Err(bad(format!(
                "leaf value {v} is not a finite number: the model is corrupt; retrain"
            )));
        }
        if t.threshold.iter().any(|v| v.is_nan()) {
            return Err(bad(
                "a split threshold is NaN: the model is corrupt; retrain".into(),
            ));
        }
        if t.cat_boundaries.windows(2).any(|w| w[0] > w[1]) {
            return Err(bad("cat_boundaries go backwards".into()));
        }
        let inner = t.num_leaves - 1;
        let tree = TreeRef {
            node_base: self.nodes.len() as u32,
            leaf_base: self.leaves.len() as u32,
            single_leaf: inner == 0,
            cat_base: self.cat_bounds.len() as u32,
        };
        if inner > 0 {
            for (name, len) in [
                ("split_feature", t.split_feature.len()),
                ("threshold", t.threshold.len()),
                ("decision_type", t.decision_type.len()),
                ("left_child", t.left_child.len()),
                ("right_child", t.right_child.len()),
            ] {
                if len != inner {
                    return Err(bad(format!("{name} has {len} values, expected {inner}")));
                }
            }
            // LightGBM numbers a node's inner children after it, so requiring that rules out
            // cycles (a walk that never reaches a leaf).
            let child_ok = |parent: usize, c: i64| {
                if c >= 0 {
                    (c as usize) < inner && c as usize > parent
                } else {
                    ((!c) as usize) < t.num_leaves
                }
            };
            for i in 0..inner {
                let feature = t.split_feature[i];
                if feature < 0 || feature as usize > self.max_feature {
                    return Err(bad(format!(
                        "split on feature {feature}, beyond max_feature_idx"
                    )));
                }
                if !child_ok(i, t.left_child[i]) || !child_ok(i, t.right_child[i]) {
                    return Err(bad(format!("node {i} has a child out of range")));
                }
                let decision = t.decision_type[i] as u8;
                if decision & CATEGORICAL != 0 {
                    let idx = t.threshold[i] as usize;
                    if t.num_cat == 0 || idx >= t.num_cat || idx + 1 >= t.cat_boundaries.len() {
                        return Err(bad(format!(
                            "node {i}: categorical split {idx} has no bitset"
                        )));
                    }
                }
                self.nodes.push(Node {
                    threshold: t.threshold[i],
                    feature: feature as u32,
                    left: t.left_child[i] as i32,
                    right: t.right_child[i] as i32,
                    decision,
                });
            }
        }
        if t.num_cat > 0 {
            if t.cat_boundaries
                .last()
                .is_some_and(|b| *b as usize > t.cat_threshold.len())
            {
                return Err(bad("cat_boundaries point past cat_threshold".into()));
            }
            let bits_base = self.cat_bits.len() as u32;
            self.cat_bounds
                .extend(t.cat_boundaries.iter().map(|b| b + bits_base));
            self.cat_bits.extend_from_slice(&t.cat_threshold);
        }
        let _ = t.shrinkage_seen;
        self.leaves.extend_from_slice(&t.leaf_value);
        self.trees.push(tree);
        Ok(())
    }

    /// Number of outputs (classes; 1 for binary and regression).
    pub fn num_outputs(&self) -> usize {
        self.trees_per_iteration
    }

    /// Number of classes the model was trained for.
    pub fn num_class(&self) -> usize {
        self.num_class
    }

    /// Input values the model reads (max_feature_idx + 1).
    pub fn num_features(&self) -> usize {
        self.max_feature + 1
    }

    /// Feature names stored in the model.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// Number of trees.
    pub fn num_trees(&self) -> usize {
        self.trees.len()
    }

    /// The output transform.
    pub fn objective(&self) -> Objective {
        self.objective
    }

    #[inline]
    fn leaf(&self, tree: &TreeRef, x: &[f64]) -> f64 {
        if tree.single_leaf {
            return self.leaves[tree.leaf_base as usize];
        }
        let nodes = &self.nodes[tree.node_base as usize..];
        let mut node = 0i32;
        while node >= 0 {
            let n = &nodes[node as usize];
            let fval = x.get(n.feature as usize).copied().unwrap_or(f64::NAN);
            node = if n.decision & CATEGORICAL != 0 {
                self.categorical(tree, n, fval)
            } else {
                numerical(n, fval)
            };
        }
        self.leaves[tree.leaf_base as usize + (!node) as usize]
    }

    #[inline]
    fn categorical(&self, tree: &TreeRef, n: &Node, fval: f64) -> i32 {
        if fval.is_nan() {
            return n.right;
        }
        let int_fval = fval as i32;
        if int_fval < 0 {
            return n.right;
        }
        let idx = tree.cat_base as usize + n.threshold as usize;
        let (start, end) = (
            self.cat_bounds[idx] as usize,
            self.cat_bounds[idx + 1] as usize,
        );
        let word = (int_fval / 32) as usize;
        if word < end - start && (self.cat_bits[start + word] >> (int_fval % 32)) & 1 == 1 {
            n.left
        } else {
            n.right
        }
    }

    /// Raw scores (sum of leaf values per output) into `out` (length [`Self::num_outputs`]).
    /// Missing inputs (x shorter than [`Self::num_features`]) read as NaN.
    pub fn predict_raw(&self, x: &[f64], out: &mut [f64]) {
        let k = self.trees_per_iteration;
        out[..k].fill(0.0);
        let mut class = 0;
        for tree in &self.trees {
            out[class] += self.leaf(tree, x);
            class += 1;
            if class == k {
                class = 0;
            }
        }
        if self.average_output {
            let iterations = (self.trees.len() / k).max(1) as f64;
            for v in &mut out[..k] {
                *v /= iterations;
            }
        }
    }

    /// [`Self::predict_raw`] for f32 inputs (what serveflow's features are), branch-free
    /// when the model allows it; equal to `predict_raw` on the same values widened.
    pub fn predict_raw_f32(&self, x: &[f32], out: &mut [f64]) {
        let k = self.trees_per_iteration;
        match &self.walk {
            // NaN reads as 0 in LightGBM's None mode: rows with one take the general path.
            Some(b) if x.len() > self.max_feature && !has_nan(x) => {
                out[..k].fill(0.0);
                b.add_leaves(x, k, out);
                if self.average_output {
                    let iterations = (self.trees.len() / k).max(1) as f64;
                    for v in &mut out[..k] {
                        *v /= iterations;
                    }
                }
            }
            _ => {
                let wide: Vec<f64> = x.iter().map(|v| f64::from(*v)).collect();
                self.predict_raw(&wide, out);
            }
        }
    }

    /// Whether [`Self::predict_raw_f32`] runs branch-free.
    pub fn is_branchless(&self) -> bool {
        self.walk.is_some()
    }

    /// Outputs after the objective's transform (class probabilities for classifiers).
    pub fn predict(&self, x: &[f64], out: &mut [f64]) {
        self.predict_raw(x, out);
        self.transform(out, 1.0);
    }

    /// [`Self::predict`] with the raw scores divided by `temperature` first (temperature
    /// scaling: the calibration `serveflow calibrate` fits so that confidences mean the same
    /// on captures the model never saw). A temperature of 1 gives exactly `predict`.
    pub fn predict_scaled(&self, x: &[f64], temperature: f64, out: &mut [f64]) {
        self.predict_raw(x, out);
        self.transform(out, temperature);
    }

    /// The serving transform: the objective's, of raw scores `out` divided by `temperature`,
    /// in place, with [`fast_exp`] (within a few ulp of libm's; 46 values in 138 ns against
    /// 250-420 ns). Serving, calibration and the trainer's cascade route on these;
    /// [`Self::transform`] is LightGBM's own, bit for bit. `temperature` must be positive.
    pub fn probabilities(&self, out: &mut [f64], temperature: f64) {
        let k = self.trees_per_iteration;
        let out = &mut out[..k];
        let inv_t = 1.0 / temperature;
        match self.objective {
            Objective::Softmax => {
                let max = fold4(out, f64::NEG_INFINITY, f64::max);
                for v in out.iter_mut() {
                    *v = (*v - max) * inv_t;
                }
                fast_exp::exp_in_place(out);
                let inv_sum = 1.0 / fold4(out, 0.0, |a, b| a + b);
                for v in out.iter_mut() {
                    *v *= inv_sum;
                }
            }
            Objective::Sigmoid(slope) => {
                for v in out.iter_mut() {
                    *v *= -slope * inv_t;
                }
                fast_exp::exp_in_place(out);
                for v in out.iter_mut() {
                    *v = 1.0 / (1.0 + *v);
                }
            }
            Objective::Identity => {
                for v in out.iter_mut() {
                    *v *= inv_t;
                }
            }
        }
    }

    /// The objective's transform of raw scores `out`, divided by `temperature`, in place.
    pub fn transform(&self, out: &mut [f64], temperature: f64) {
        let k = self.trees_per_iteration;
        if temperature != 1.0 {
            for v in &mut out[..k] {
                *v /= temperature;
            }
        }
        match self.objective {
            Objective::Softmax => {
                let max = out[..k].iter().copied().fold(out[0], f64::max);
                let mut sum = 0.0;
                for v in &mut out[..k] {
                    *v = (*v - max).exp();
                    sum += *v;
                }
                for v in &mut out[..k] {
                    *v /= sum;
                }
            }
            Objective::Sigmoid(s) => {
                for v in &mut out[..k] {
                    *v = 1.0 / (1.0 + (-s * *v).exp());
                }
            }
            Objective::Identity => {}
        }
    }
}

/// `v` folded by `f` in four interleaved chains, then the chains pairwise: a fixed order (the
/// same result every time) whose chains overlap, where one chain over 46 values waited on
/// each step (a sum of 46 took ~75 ns).
#[inline]
fn fold4(v: &[f64], init: f64, f: impl Fn(f64, f64) -> f64) -> f64 {
    let mut acc = [init; 4];
    let mut chunks = v.chunks_exact(4);
    for c in &mut chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a = f(*a, *x);
        }
    }
    for (a, x) in acc.iter_mut().zip(chunks.remainder()) {
        *a = f(*a, *x);
    }
    f(f(acc[0], acc[1]), f(acc[2], acc[3]))
}

/// Whether `x` holds a NaN: a whole pass the compiler vectorizes, not a search that stops at
/// the first (which it cannot; the row has none almost always, and the search cost ~85 ns on
/// 200 values).
fn has_nan(x: &[f32]) -> bool {
    x.chunks(64)
        .any(|c| c.iter().fold(false, |nan, v| nan | v.is_nan()))
}

#[inline]
fn numerical(n: &Node, mut fval: f64) -> i32 {
    let missing = (n.decision >> 2) & 3;
    if fval.is_nan() && missing != MISSING_NAN {
        fval = 0.0;
    }
    if (missing == MISSING_ZERO && (-ZERO_THRESHOLD..=ZERO_THRESHOLD).contains(&fval))
        || (missing == MISSING_NAN && fval.is_nan())
    {
        return if n.decision & DEFAULT_LEFT != 0 {
            n.left
        } else {
            n.right
        };
    }
    if fval <= n.threshold {
        n.left
    } else {
        n.right
    }
}

fn parse_objective(value: &str) -> Objective {
    let mut parts = value.split_whitespace();
    let name = parts.next().unwrap_or("");
    let sigmoid = parts
        .find_map(|p| p.strip_prefix("sigmoid:"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    match name {
        "multiclass" | "softmax" => Objective::Softmax,
        "binary" | "multiclassova" | "multiclass_ova" | "ova" | "ovr" => {
            Objective::Sigmoid(sigmoid)
        }
        _ => Objective::Identity,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;

    /// Regression (fuzz `lightgbm_text`, crash-2dd30c78): a categorical split in a tree whose
    /// `num_cat` line is missing indexed an empty bitset table and panicked while predicting.
    #[test]
    fn categorical_split_without_categories_is_an_error() {
        let broken = MODEL.replacen("num_cat=1", "num_a=ct1", 1);
        let e = TreeModel::parse(&broken).unwrap_err().to_string();
        assert!(e.contains("categorical split 0 has no bitset"), "{e}");
    }

    /// Cut files, empty models and trees that do not cover the classes are errors, not
    /// models that load and give one class to every flow.
    #[test]
    fn integrity_of_the_text_model() {
        let cut = &MODEL[..MODEL.find("end of trees").unwrap()];
        assert!(TreeModel::parse(cut)
            .unwrap_err()
            .to_string()
            .contains("cut short"));
        let header = &MODEL[..MODEL.find("Tree=0").unwrap()];
        assert!(TreeModel::parse(header)
            .unwrap_err()
            .to_string()
            .contains("no trees"));
        let one = MODEL.replacen("num_tree_per_iteration=2", "num_tree_per_iteration=1", 1);
        let e = TreeModel::parse(&one).unwrap_err().to_string();
        assert!(e.contains("do not cover the classes"), "{e}");
        let nan = MODEL.replacen("leaf_value=0.125", "leaf_value=nan", 1);
        let e = TreeModel::parse(&nan).unwrap_err().to_string();
        assert!(e.contains("not a finite number"), "{e}");
        let cycle = MODEL.replacen("left_child=-1", "left_child=0", 1);
        let e = TreeModel::parse(&cycle).unwrap_err().to_string();
        assert!(e.contains("child out of range"), "{e}");
    }

    /// Two iterations of a 2-class softmax model written by hand: tree 0 splits feature 0 at
    /// 1.5 (missing NaN goes left), tree 1 is a single leaf; then a categorical split on
    /// feature 1 (categories 1 and 33 go left) and a Zero-missing split.
    const MODEL: &str = "tree
version=v4
num_class=2
num_tree_per_iteration=2
label_index=0
max_feature_idx=1
objective=multiclass num_class:2
feature_names=a b

Tree=0
num_leaves=2
num_cat=0
split_feature=0
threshold=1.5
decision_type=10
left_child=-1
right_child=-2
leaf_value=0.25 -0.5
shrinkage=1

Tree=1
num_leaves=1
num_cat=0
leaf_value=0.125

Tree=2
num_leaves=2
num_cat=1
split_feature=1
threshold=0
decision_type=1
left_child=-1
right_child=-2
leaf_value=1 -1
cat_boundaries=0 2
cat_threshold=2 2

Tree=3
num_leaves=2
num_cat=0
split_feature=1
threshold=-5
decision_type=6
left_child=-1
right_child=-2
leaf_value=3 7

end of trees
";

    fn raw(x: &[f64]) -> [f64; 2] {
        let m = TreeModel::parse(MODEL).unwrap();
        let mut out = [0.0; 2];
        m.predict_raw(x, &mut out);
        out
    }

    #[test]
    fn decisions_follow_lightgbm() {
        // class 0 = tree 0 + tree 2; class 1 = tree 1 + tree 3
        // Tree 3 (Zero missing, default left): 0 and NaN (read as 0) go left, 1 > -5 right.
        assert_eq!(raw(&[1.0, 1.0]), [0.25 + 1.0, 0.125 + 7.0]); // category 1 is in the set
        assert_eq!(raw(&[2.0, 33.0]), [-0.5 + 1.0, 0.125 + 7.0]); // category 33: word 1, bit 1
        assert_eq!(raw(&[f64::NAN, 2.0]), [0.25 - 1.0, 0.125 + 7.0]); // NaN default-left; 2 not in set
        assert_eq!(raw(&[0.0, 0.0]), [0.25 - 1.0, 0.125 + 3.0]); // category 0 not in set; zero left
        assert_eq!(raw(&[f64::NAN, f64::NAN]), [0.25 - 1.0, 0.125 + 3.0]); // categorical NaN right
        assert_eq!(raw(&[1.0, -3.0]), [0.25 - 1.0, 0.125 + 7.0]); // negative category right
    }

    /// The branch-free layout gives the general evaluator's scores bit for bit, at and
    /// around every threshold (thresholds that are not f32 values included), NaN too.
    #[test]
    fn branchless_equals_the_general_evaluator() {
        let text = "tree
version=v4
num_class=2
num_tree_per_iteration=2
label_index=0
max_feature_idx=2
objective=multiclass num_class:2

Tree=0
num_leaves=3
num_cat=0
split_feature=0 1
threshold=0.30000000000000004 -2.5
decision_type=2 0
left_child=1 -1
right_child=-3 -2
leaf_value=0.5 -0.25 0.125

Tree=1
num_leaves=1
num_cat=0
leaf_value=0.75

Tree=2
num_leaves=2
num_cat=0
split_feature=2
threshold=1e300
decision_type=0
left_child=-1
right_child=-2
leaf_value=1 2

Tree=3
num_leaves=4
num_cat=0
split_feature=2 0 1
threshold=1.5 -1e-7 7
decision_type=0 0 0
left_child=1 -1 -3
right_child=2 -2 -4
leaf_value=1 2 3 4

Tree=4
num_leaves=2
num_cat=0
split_feature=1
threshold=0
decision_type=0
left_child=-1
right_child=-2
leaf_value=-1 1

Tree=5
num_leaves=1
num_cat=0
leaf_value=0.0625

end of trees
";
        let m = TreeModel::parse(text).unwrap();
        assert!(m.is_branchless());
        let values = [
            f32::NAN,
            -3.0,
            -2.5,
            (-2.5f32).next_up(),
            -1e-7,
            0.0,
            0.3,
            0.3f32.next_up(),
            1.5,
            7.0,
            7.0f32.next_up(),
            f32::MAX,
        ];
        for a in values {
            for b in values {
                for c in values {
                    let x = [a, b, c];
                    let wide = x.map(f64::from);
                    let (mut slow, mut fast) = ([0.0; 2], [0.0; 2]);
                    m.predict_raw(&wide, &mut slow);
                    m.predict_raw_f32(&x, &mut fast);
                    assert_eq!(slow.map(f64::to_bits), fast.map(f64::to_bits), "{x:?}");
                }
            }
        }
        // A model with categorical or missing-value splits keeps the general evaluator.
        assert!(!TreeModel::parse(MODEL).unwrap().is_branchless());
        let mut out = [0.0; 2];
        TreeModel::parse(MODEL)
            .unwrap()
            .predict_raw_f32(&[1.0, 1.0], &mut out);
        assert_eq!(out, raw(&[1.0, 1.0]));
    }

    #[test]
    fn softmax_sums_to_one_and_garbage_is_refused() {
        let m = TreeModel::parse(MODEL).unwrap();
        let mut out = [0.0; 2];
        m.predict(&[1.0, 1.0], &mut out);
        assert!((out[0] + out[1] - 1.0).abs() < 1e-12 && out[1] > out[0]);
        assert_eq!(
            (m.num_features(), m.num_outputs(), m.num_trees()),
            (2, 2, 4)
        );
        assert!(TreeModel::parse("hello").is_err());
        let broken = MODEL.replace(
            "left_child=-1\nright_child=-2\nleaf_value=0.25 -0.5",
            "left_child=5\nright_child=-2\nleaf_value=0.25 -0.5",
        );
        assert!(TreeModel::parse(&broken)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
        assert!(TreeModel::parse(
            &MODEL
                .replace("is_linear", "x")
                .replace("shrinkage=1", "is_linear=1")
        )
        .is_err());
    }
}
