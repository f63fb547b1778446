//! Branch-free walks of a tree model on f32 rows, eight trees at a time.
//!
//! The walks of eight trees are independent, so the CPU overlaps their loads instead of
//! waiting on one chain of them; every tree is walked a fixed number of steps, with no branch
//! on the data. Used when every split is numerical with missing-value mode None (what LightGBM
//! writes for features that never have missing values, as serveflow's never do).
//!
//! Two layouts. Shallow trees (serveflow's are depth 3-4) are padded to complete binary trees,
//! so a step is `at = 2 * at + 1 + (x > threshold)`: a split costs one (threshold, feature)
//! pair and no child links, three loads a step instead of five, and the row's features are
//! the only other memory read. Deeper trees keep their own shape, each leaf a node that leads
//! to itself.
//!
//! Exactness: LightGBM compares the f32 feature, widened, against an f64 threshold `t`; for an
//! f32 `x`, `x as f64 <= t` holds exactly when `x <= t32`, `t32` the largest f32 not above `t`.
//! Scores are summed in tree order, as there. The caller rules out NaN (LightGBM's None mode
//! reads it as 0, which the general evaluator does).

use super::{Node, TreeModel, CATEGORICAL};

/// Deepest tree padded to a complete tree: 255 splits and 256 leaves, 4 KiB a tree.
const COMPLETE_MAX_DEPTH: u32 = 8;
/// Trees walked together.
const LANES: usize = 8;

/// The branch-free layout of a model's trees.
#[derive(Clone, Debug)]
pub(super) enum Walk {
    /// Every tree padded to its group's depth.
    Complete(Complete),
    /// Trees in their own shape (some are deeper than [`COMPLETE_MAX_DEPTH`]).
    Linked(Linked),
}

impl Walk {
    /// The layout of `m`'s trees, or None if a split needs the general evaluator.
    pub(super) fn build(m: &TreeModel) -> Option<Self> {
        if m.nodes
            .iter()
            .any(|n| n.decision & CATEGORICAL != 0 || (n.decision >> 2) & 3 != 0)
            || m.max_feature >= u32::MAX as usize
        {
            return None;
        }
        let depths: Vec<u32> = m.trees.iter().map(|t| tree_depth(m, t)).collect();
        if depths.iter().all(|&d| d <= COMPLETE_MAX_DEPTH) {
            Some(Walk::Complete(Complete::build(m, &depths)))
        } else {
            Some(Walk::Linked(Linked::build(m, depths)))
        }
    }

    /// Adds every tree's leaf value to `out[tree % k]`, in tree order. `x` must hold every
    /// feature a split reads and no NaN (the caller checks both).
    #[inline]
    pub(super) fn add_leaves(&self, x: &[f32], k: usize, out: &mut [f64]) {
        match self {
            Walk::Complete(c) => c.add_leaves(x, k, out),
            Walk::Linked(l) => l.add_leaves(x, k, out),
        }
    }
}

/// `out[class] += value` for trees in order, tree t adding to class t % k: a running index,
/// not a division per tree.
struct Classes<'a> {
    out: &'a mut [f64],
    class: usize,
    k: usize,
}

impl Classes<'_> {
    #[inline(always)]
    fn add(&mut self, value: f64) {
        self.out[self.class] += value;
        self.class += 1;
        if self.class == self.k {
            self.class = 0;
        }
    }
}

/// A split of the complete layout: go right when the feature is above the threshold.
#[derive(Clone, Copy, Debug)]
struct Split {
    threshold: f32,
    feature: u32,
}

/// A split that sends every row left.
const LEFT: Split = Split {
    threshold: f32::INFINITY,
    feature: 0,
};

/// Eight consecutive trees (fewer in the last group) padded to one depth and interleaved:
/// position p of tree j is entry `8p + j`, so one index per lane walks it and the next is
/// `2 * index + 8 - j + 8 * right`, the lane number a constant of the unrolled loop.
#[derive(Clone, Copy, Debug)]
struct Group {
    /// Index of the group's first split (its trees' `2^depth - 1` positions x 8 follow).
    splits: u32,
    /// Index of the group's first leaf (`2^depth` positions x 8).
    leaves: u32,
    depth: u32,
    trees: u32,
}

/// Trees padded to complete binary trees: position p has children 2p+1 and 2p+2, the leaves
/// are the positions below the `2^depth - 1` splits. A leaf above the bottom becomes a split
/// that always goes left (threshold +inf) over copies of itself.
#[derive(Clone, Debug)]
pub(super) struct Complete {
    splits: Vec<Split>,
    leaves: Vec<f64>,
    groups: Vec<Group>,
}

impl Complete {
    fn build(m: &TreeModel, depths: &[u32]) -> Self {
        let mut c = Complete {
            splits: Vec::new(),
            leaves: Vec::new(),
            groups: Vec::with_capacity(m.trees.len().div_ceil(LANES)),
        };
        for (trees, depths) in m.trees.chunks(LANES).zip(depths.chunks(LANES)) {
            let depth = depths.iter().copied().max().unwrap_or(0);
            let inner = (1usize << depth) - 1;
            let group = Group {
                splits: c.splits.len() as u32,
                leaves: c.leaves.len() as u32,
                depth,
                trees: trees.len() as u32,
            };
            c.splits.resize(c.splits.len() + inner * LANES, LEFT);
            c.leaves.resize(c.leaves.len() + (inner + 1) * LANES, 0.0);
            for (j, t) in trees.iter().enumerate() {
                let root = if t.single_leaf { -1 } else { 0 };
                let mut tree = TreePad {
                    m,
                    node_base: t.node_base as usize,
                    leaf_base: t.leaf_base as usize,
                    inner,
                    splits: &mut c.splits[group.splits as usize + j..],
                    leaves: &mut c.leaves[group.leaves as usize + j..],
                };
                tree.fill(root, 0);
            }
            c.groups.push(group);
        }
        c
    }

    #[inline]
    fn add_leaves(&self, x: &[f32], k: usize, out: &mut [f64]) {
        let mut classes = Classes { out, class: 0, k };
        for g in &self.groups {
            let splits = &self.splits[g.splits as usize..];
            let leaves = &self.leaves[g.leaves as usize..];
            let step = |at: usize, j: usize| -> usize {
                // SAFETY: `at` is 8p + j for a split position p < 2^depth - 1 of the group
                // (`depth` steps from the root), all inside `splits`; `feature` is at most
                // the model's max_feature, below `x.len()` (checked by the caller,
                // `predict_raw_f32`).
                let s = unsafe { splits.get_unchecked(at) };
                // SAFETY: see above.
                let v = unsafe { *x.get_unchecked(s.feature as usize) };
                2 * at + LANES - j + LANES * usize::from(v > s.threshold)
            };
            let below = ((1usize << g.depth) - 1) * LANES;
            let leaf = |at: usize| -> f64 {
                // SAFETY: after `depth` steps `at` is 8p + j for a leaf position p, so
                // `at - below` is within the group's leaves.
                unsafe { *leaves.get_unchecked(at - below) }
            };
            if g.trees as usize == LANES {
                let mut at: [usize; LANES] = std::array::from_fn(|j| j);
                for _ in 0..g.depth {
                    // A loop over the lanes, not `map`: unrolled, the 8 walks interleave.
                    for (j, a) in at.iter_mut().enumerate() {
                        *a = step(*a, j);
                    }
                }
                for a in at {
                    classes.add(leaf(a));
                }
            } else {
                for j in 0..g.trees as usize {
                    let mut a = j;
                    for _ in 0..g.depth {
                        a = step(a, j);
                    }
                    classes.add(leaf(a));
                }
            }
        }
    }
}

/// One tree being padded into its lane of a group of the complete layout.
struct TreePad<'a> {
    m: &'a TreeModel,
    node_base: usize,
    leaf_base: usize,
    /// Splits of the padded tree (2^depth - 1).
    inner: usize,
    /// The group's splits from this tree's lane on (position p at `8p`).
    splits: &'a mut [Split],
    /// ... and leaves.
    leaves: &'a mut [f64],
}

impl TreePad<'_> {
    /// Places `node` (a split index, or `!leaf`) at position `pos` and its subtree below it.
    fn fill(&mut self, node: i32, pos: usize) {
        if pos >= self.inner {
            // The bottom: `build` padded to at least the tree's depth, so this is a leaf.
            let leaf = if node < 0 { !node as usize } else { 0 };
            self.leaves[(pos - self.inner) * LANES] = self.m.leaves[self.leaf_base + leaf];
            return;
        }
        if node >= 0 {
            let n = self.m.nodes[self.node_base + node as usize];
            self.splits[pos * LANES] = Split {
                threshold: f32_at_most(n.threshold),
                feature: n.feature,
            };
            self.fill(n.left, 2 * pos + 1);
            self.fill(n.right, 2 * pos + 2);
        } else {
            // A leaf above the bottom: its split stays LEFT, sending every row to the left.
            self.fill(node, 2 * pos + 1);
            self.fill(node, 2 * pos + 2);
        }
    }
}

/// A node of the linked layout: a leaf is a node that leads to itself (threshold +inf), so
/// every tree is walked a fixed number of steps with no test for having arrived.
#[derive(Clone, Copy, Debug)]
struct FlatNode {
    threshold: f32,
    feature: u32,
    left: u32,
    right: u32,
}

/// Trees in their own shape, for models with trees too deep to pad.
#[derive(Clone, Debug)]
pub(super) struct Linked {
    nodes: Vec<FlatNode>,
    /// Leaf value by node index (0 for split nodes).
    values: Vec<f64>,
    /// Each tree's root node index.
    roots: Vec<u32>,
    /// Each tree's depth: steps from its root to its deepest leaf.
    depth: Vec<u32>,
}

impl Linked {
    fn build(m: &TreeModel, depth: Vec<u32>) -> Self {
        let mut b = Linked {
            nodes: Vec::new(),
            values: Vec::new(),
            roots: Vec::with_capacity(m.trees.len()),
            depth,
        };
        for (i, t) in m.trees.iter().enumerate() {
            let leaves = tree_leaves(m, i);
            let inner = if t.single_leaf { 0 } else { leaves - 1 };
            let base = b.nodes.len() as u32;
            // Split nodes first, then one self-looping node per leaf.
            let child = |c: i32| -> u32 {
                if c >= 0 {
                    base + c as u32
                } else {
                    base + inner as u32 + (!c) as u32
                }
            };
            for n in &m.nodes[t.node_base as usize..t.node_base as usize + inner] {
                b.nodes.push(FlatNode {
                    threshold: f32_at_most(n.threshold),
                    feature: n.feature,
                    left: child(n.left),
                    right: child(n.right),
                });
                b.values.push(0.0);
            }
            for l in 0..leaves {
                let me = base + (inner + l) as u32;
                b.nodes.push(FlatNode {
                    threshold: f32::INFINITY,
                    feature: 0,
                    left: me,
                    right: me,
                });
                b.values.push(m.leaves[t.leaf_base as usize + l]);
            }
            b.roots.push(base);
        }
        b
    }

    #[inline]
    fn add_leaves(&self, x: &[f32], k: usize, out: &mut [f64]) {
        let nodes = self.nodes.as_slice();
        let step = |at: u32| -> u32 {
            // SAFETY: `at` is a root or a child index, all of which `build` made within
            // `nodes`; `feature` is at most the model's max_feature, below `x.len()` (checked by
            // the caller, `predict_raw_f32`).
            let n = unsafe { nodes.get_unchecked(at as usize) };
            // SAFETY: see above.
            let v = unsafe { *x.get_unchecked(n.feature as usize) };
            if v <= n.threshold {
                n.left
            } else {
                n.right
            }
        };
        let trees = self.roots.len();
        let mut classes = Classes { out, class: 0, k };
        let mut t = 0;
        while t + LANES <= trees {
            let mut at: [u32; LANES] = std::array::from_fn(|j| self.roots[t + j]);
            let steps = self.depth[t..t + LANES].iter().copied().max().unwrap_or(0);
            for _ in 0..steps {
                // A loop, not `at.map(step)`: `map` is not always inlined (one build spent 9%
                // of a replay in an outlined `try_map`), and inlined the 8 lanes interleave.
                for a in &mut at {
                    *a = step(*a);
                }
            }
            at.into_iter()
                .for_each(|leaf| classes.add(self.values[leaf as usize]));
            t += LANES;
        }
        for tree in t..trees {
            let mut at = self.roots[tree];
            for _ in 0..self.depth[tree] {
                at = step(at);
            }
            classes.add(self.values[at as usize]);
        }
    }
}

/// The largest f32 not above `t`.
fn f32_at_most(t: f64) -> f32 {
    let f = t as f32;
    if f64::from(f) > t {
        f.next_down()
    } else {
        f
    }
}

/// Leaves of tree `i` of `m`.
fn tree_leaves(m: &TreeModel, i: usize) -> usize {
    let end = m
        .trees
        .get(i + 1)
        .map_or(m.leaves.len(), |n| n.leaf_base as usize);
    end - m.trees[i].leaf_base as usize
}

/// Steps from the root of `t` to its deepest leaf (0 for a single leaf).
fn tree_depth(m: &TreeModel, t: &super::TreeRef) -> u32 {
    if t.single_leaf {
        return 0;
    }
    let nodes: &[Node] = &m.nodes[t.node_base as usize..];
    let mut deepest = 0;
    let mut stack = vec![(0i32, 1u32)];
    while let Some((n, d)) = stack.pop() {
        deepest = deepest.max(d);
        let node = &nodes[n as usize];
        for c in [node.left, node.right] {
            if c >= 0 {
                stack.push((c, d + 1));
            }
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;

    /// Both layouts give the general evaluator's scores bit for bit on the bundled models (trees
    /// of depth 3 and 4, 46 classes), on rows made of values at, just above and just below
    /// their thresholds.
    #[test]
    fn both_layouts_equal_the_general_evaluator_on_the_bundled_models() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
        for name in ["service/first.txt", "service/fast.txt", "device/first.txt"] {
            let m = TreeModel::load(&root.join(name)).unwrap();
            let depths: Vec<u32> = m.trees.iter().map(|t| tree_depth(&m, t)).collect();
            let layouts = [
                Walk::Complete(Complete::build(&m, &depths)),
                Walk::Linked(Linked::build(&m, depths.clone())),
            ];
            let thresholds: Vec<f32> = m.nodes.iter().map(|n| n.threshold as f32).collect();
            let k = m.trees_per_iteration;
            // A small deterministic generator (xorshift): no dependency for a test.
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            for _ in 0..300 {
                let x: Vec<f32> = (0..=m.max_feature)
                    .map(|_| {
                        let t = thresholds[next() as usize % thresholds.len()];
                        match next() % 4 {
                            0 => t,
                            1 => t.next_up(),
                            2 => t.next_down(),
                            _ => (next() % 2000) as f32 - 1000.0,
                        }
                    })
                    .collect();
                let wide: Vec<f64> = x.iter().map(|v| f64::from(*v)).collect();
                let mut want = vec![0.0; k];
                m.predict_raw(&wide, &mut want);
                for layout in &layouts {
                    let mut got = vec![0.0; k];
                    layout.add_leaves(&x, k, &mut got);
                    let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{name}");
                }
            }
            assert!(matches!(Walk::build(&m), Some(Walk::Complete(_))), "{name}");
        }
    }
}
