//! Classes and the train/test split of a corpus.
//!
//! The split is by capture file (a hash of its path, so the same on every machine), never by
//! flow, or by whole sources for the leave-one-source-out check. A label becomes a class when
//! the training side has enough of it (`min_flows` flows in `min_files` captures); every other
//! label is grouped as `other` and listed with its count, so no class is dropped silently.

use std::collections::{BTreeMap, BTreeSet};

use serveflow::features::FeatureSpec;

use crate::dataset::{Corpus, Example, Task};

/// Which captures are held out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holdout {
    /// `percent` of the captures by the hash of their path with `seed` (the bundled models'
    /// split: 25%, seed 7).
    Files {
        /// Share held out (0..100).
        percent: u64,
        /// Hash seed.
        seed: u64,
    },
    /// Every capture of these sources (first path folders); the rest is split by
    /// `Files { percent, seed }` again so the trainer keeps a held-out part for calibration.
    Sources {
        /// Sources left out.
        sources: Vec<String>,
        /// Share of the remaining captures held out for calibration.
        percent: u64,
        /// Hash seed.
        seed: u64,
    },
}

/// How labels become classes and flows become train and test sets.
#[derive(Clone, Debug)]
pub struct SplitOptions {
    /// Task.
    pub task: Task,
    /// A label needs this many training flows to be a class of its own...
    pub min_flows: usize,
    /// ...in at least this many training capture files; the rest become `other`.
    pub min_files: usize,
    /// Which captures are held out.
    pub holdout: Holdout,
}

/// A grouped label: why, and how many flows it has.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Grouped {
    /// Flows in the corpus.
    pub flows: usize,
    /// Training flows.
    pub train_flows: usize,
    /// Training captures.
    pub train_files: usize,
}

/// Labeled flows split, with their classes.
#[derive(Clone, Debug)]
pub struct Split<'c> {
    /// The corpus.
    pub corpus: &'c Corpus,
    /// Classes in output order (`other` last when present).
    pub classes: Vec<String>,
    /// Labels grouped into `other`.
    pub grouped: BTreeMap<String, Grouped>,
    /// Training flows (indices into the corpus).
    pub train: Vec<usize>,
    /// Held-out flows (for `Holdout::Sources`: the left-out sources).
    pub test: Vec<usize>,
    /// `Holdout::Sources` only: held-out captures of the remaining sources (calibration).
    pub calibration: Vec<usize>,
    /// Class of every corpus flow.
    class: Vec<usize>,
}

/// FNV-1a bucket of a capture path, the library's split (so trainer and replay agree).
fn bucket(path: &str, seed: u64) -> u64 {
    serveflow::labels::split_bucket(path, seed)
}

impl<'c> Split<'c> {
    /// Splits `corpus` and picks its classes.
    pub fn prepare(corpus: &'c Corpus, opts: &SplitOptions) -> anyhow::Result<Split<'c>> {
        let (mut train, mut test, mut calibration) = (Vec::new(), Vec::new(), Vec::new());
        for (i, e) in corpus.examples.iter().enumerate() {
            match &opts.holdout {
                Holdout::Files { percent, seed } => {
                    if bucket(&e.file, *seed) < *percent {
                        test.push(i);
                    } else {
                        train.push(i);
                    }
                }
                Holdout::Sources {
                    sources,
                    percent,
                    seed,
                } => {
                    if sources.iter().any(|s| s == e.source()) {
                        test.push(i);
                    } else if bucket(&e.file, *seed) < *percent {
                        calibration.push(i);
                    } else {
                        train.push(i);
                    }
                }
            }
        }
        if train.is_empty() || test.is_empty() {
            anyhow::bail!(
                "the split left {} training and {} held-out flows: change the held-out share, the seed or the sources",
                train.len(),
                test.len()
            );
        }
        let mut flows: BTreeMap<&str, usize> = BTreeMap::new();
        let mut train_flows: BTreeMap<&str, usize> = BTreeMap::new();
        let mut train_files: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for e in &corpus.examples {
            *flows.entry(&e.label).or_default() += 1;
        }
        for &i in &train {
            let e = &corpus.examples[i];
            *train_flows.entry(&e.label).or_default() += 1;
            train_files.entry(&e.label).or_default().insert(&e.file);
        }
        let keep = |l: &str| {
            train_flows.get(l).copied().unwrap_or(0) >= opts.min_flows
                && train_files.get(l).map_or(0, BTreeSet::len) >= opts.min_files
        };
        let mut classes: Vec<String> = flows
            .keys()
            .filter(|l| keep(l))
            .map(|l| (*l).to_owned())
            .collect();
        let grouped: BTreeMap<String, Grouped> = flows
            .iter()
            .filter(|(l, _)| !keep(l))
            .map(|(l, n)| {
                (
                    (*l).to_owned(),
                    Grouped {
                        flows: *n,
                        train_flows: train_flows.get(l).copied().unwrap_or(0),
                        train_files: train_files.get(l).map_or(0, BTreeSet::len),
                    },
                )
            })
            .collect();
        if !grouped.is_empty() {
            if classes.iter().any(|c| c == "other") {
                anyhow::bail!("a label is literally named \"other\": rename it in the labels, it would merge with the grouped labels");
            }
            classes.push("other".into());
        }
        if classes.len() < 2 {
            anyhow::bail!(
                "only {} class(es) have {} training flows in {} capture files: lower --min-flows or --min-files",
                classes.len(),
                opts.min_flows,
                opts.min_files
            );
        }
        let other = classes.len() - 1;
        let class = corpus
            .examples
            .iter()
            .map(|e| classes.iter().position(|c| *c == e.label).unwrap_or(other))
            .collect();
        Ok(Split {
            corpus,
            classes,
            grouped,
            train,
            test,
            calibration,
            class,
        })
    }

    /// The corpus flow at index `i`.
    pub fn example(&self, i: usize) -> &Example {
        &self.corpus.examples[i]
    }

    /// Class index of corpus flow `i`.
    pub fn class_of(&self, i: usize) -> usize {
        self.class[i]
    }

    /// Classes of the flows `set`.
    pub fn truth(&self, set: &[usize]) -> Vec<usize> {
        set.iter().map(|&i| self.class[i]).collect()
    }

    /// Flows per class in `set`.
    pub fn counts(&self, set: &[usize]) -> BTreeMap<String, usize> {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for &i in set {
            *m.entry(self.classes[self.class[i]].clone()).or_default() += 1;
        }
        m
    }

    /// Capture files of `set`.
    pub fn files(&self, set: &[usize]) -> usize {
        set.iter()
            .map(|&i| self.example(i).file.as_str())
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// The feature rows of `set` for `spec`, row-major (`spec.width()` values per flow).
    pub fn matrix(&self, spec: &FeatureSpec, set: &[usize]) -> Vec<f32> {
        let width = spec.width();
        let mut out = Vec::with_capacity(width * set.len());
        for &i in set {
            let before = out.len();
            self.example(i).features(spec, &mut out);
            // Defensive: a row is always exactly `width` wide.
            out.resize(before + width, -1.0);
        }
        out
    }
}
