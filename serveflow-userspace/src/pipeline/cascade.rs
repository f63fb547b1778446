//! The cascade a models directory describes: inline stages (tree models, run on the fast-path
//! worker, each with its router) followed by the slow stage (ONNX, run by the slow pool), and
//! the per-flow state that computes every stage's features in one pass over the packets.

use std::sync::Arc;

use crate::{
    config::Mode,
    features::{FeatureSpec, FeatureState},
    flow::{Direction, FlowState},
    model::{dir::ModelDir, onnx::SlowModel, tree::TreeModel},
    parse::Packet,
    router::Router,
};

/// A stage run on the worker.
#[derive(Debug)]
pub struct InlineStage {
    /// Name in verdicts.
    pub name: &'static str,
    /// The model.
    pub model: TreeModel,
    /// Its features (packet count included).
    pub features: FeatureSpec,
    /// When to pass the flow on.
    pub router: Router,
    /// Columns of the feature row holding the payload its packets carried, when the stage
    /// decides only flows that carried some (manifest `needs_payload`).
    pub payload_columns: Option<[usize; 2]>,
}

/// All stages, in order.
#[derive(Debug)]
pub struct Cascade {
    /// Class names, shared by every stage.
    pub classes: Vec<Arc<str>>,
    /// Stages on the worker, cheapest first.
    pub inline: Vec<InlineStage>,
    /// The slow stage's model.
    pub slow: Arc<SlowModel>,
    /// Its features.
    pub slow_features: FeatureSpec,
    /// Feature spec of every stage, inline ones first, slow last (the flow state's config).
    pub specs: Arc<[FeatureSpec]>,
}

impl Cascade {
    /// The cascade of a models directory: its early stages and fast model inline, its slow
    /// model in the pool, each routed by its thresholds.
    pub fn from_models(dir: ModelDir) -> Self {
        let classes: Vec<Arc<str>> = dir
            .manifest
            .classes
            .iter()
            .map(|c| c.as_str().into())
            .collect();
        let mut inline: Vec<InlineStage> = dir
            .early
            .into_iter()
            .map(|e| InlineStage {
                name: leak_name(e.name),
                model: e.stage.model,
                features: e.stage.features,
                router: Router {
                    measure: e.uncertainty,
                    thresholds: e.thresholds,
                    temperature: e.temperature,
                },
                payload_columns: e.payload_columns,
            })
            .collect();
        inline.push(InlineStage {
            name: "fast",
            model: dir.fast.model,
            features: dir.fast.features,
            router: Router {
                measure: dir.manifest.routing.uncertainty,
                thresholds: dir.thresholds,
                temperature: dir.manifest.routing.temperature,
            },
            payload_columns: None,
        });
        let specs: Arc<[FeatureSpec]> = inline
            .iter()
            .map(|s| s.features)
            .chain([dir.slow.features])
            .collect();
        Cascade {
            classes,
            inline,
            slow: Arc::new(dir.slow.model),
            slow_features: dir.slow.features,
            specs,
        }
    }

    /// Overrides the routing of every inline stage: `Some(t)` escalates when uncertainty
    /// exceeds `t` for every class (`-inf`: everything goes to the slow stage, the slow-only
    /// baseline; `+inf`: nothing does, fast-only).
    pub fn set_threshold(&mut self, threshold: f64) {
        for stage in &mut self.inline {
            stage.router.thresholds.fill(threshold);
        }
    }

    /// Routes as `mode` says: the cascade as its manifest routes it, or one stage alone.
    pub fn apply_mode(&mut self, mode: Mode) {
        match mode {
            Mode::Cascade => {}
            Mode::FastOnly => {
                self.set_threshold(f64::NEG_INFINITY);
                if let Some(fast) = self.inline.last_mut() {
                    fast.router.thresholds.fill(f64::INFINITY);
                }
            }
            Mode::SlowOnly => self.set_threshold(f64::NEG_INFINITY),
        }
    }

    /// Every stage's feature spec seen through its wait: inline stages see the packets within
    /// `inline_wait_ns` of a flow's first, the slow stage those within `slow_wait_ns`. That is
    /// what each stage has when its wait runs out, so the trainer, the calibration and the
    /// workers all use these.
    pub fn specs_within(&self, inline_wait_ns: u64, slow_wait_ns: u64) -> Arc<[FeatureSpec]> {
        let last = self.specs.len().saturating_sub(1);
        self.specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.within(if i < last {
                    inline_wait_ns
                } else {
                    slow_wait_ns
                })
            })
            .collect()
    }

    /// Packets the stage at `index` waits for (the slow stage is the last index).
    pub fn packets(&self, index: usize) -> u64 {
        u64::from(self.specs.get(index).map_or(0, |s| s.packets))
    }
}

impl InlineStage {
    /// Whether the stage passes the flow of feature row `x` on without asking its model: it
    /// decides only flows that carried payload, and this one has carried none yet.
    pub fn abstains(&self, x: &[f32]) -> bool {
        self.payload_columns
            .is_some_and(|cols| cols.iter().all(|&c| x.get(c).is_none_or(|v| *v <= 0.0)))
    }

    /// The stage's class probabilities for feature row `x`, at its calibrated temperature.
    pub fn probabilities(&self, x: &[f32], out: &mut [f64]) {
        self.model.predict_raw_f32(x, out);
        self.model.probabilities(out, self.router.temperature);
    }
}

/// Stage names live for the whole run and are written into every verdict: interned once.
fn leak_name(name: String) -> &'static str {
    match name.as_str() {
        "fast" => "fast",
        "slow" => "slow",
        "first" => "first",
        _ => Box::leak(name.into_boxed_str()),
    }
}

/// A flow's serving state: every stage's features, and where its decision stands.
#[derive(Clone, Debug)]
pub struct ServeState {
    /// Features per stage, in cascade order.
    pub features: Vec<FeatureState>,
    /// The next stage to run.
    pub next: u8,
    /// Decided, or handed to the slow pool.
    pub done: bool,
    /// Latency-clock time of the first packet (ns).
    pub t_first: u64,
    /// Capture file of the first packet.
    pub file: u32,
    /// The best inline answer so far: (class, confidence, stage index).
    pub best: Option<(usize, f32, u8)>,
}

impl ServeState {
    /// The flow has its verdict (or is with the slow pool, its features copied into the
    /// job): later packets only count in the table, so every stage's feature state is freed.
    /// Most flows are decided at their first packets and then stay in the table until they
    /// end; this keeps them at the size of their record.
    pub fn decided(&mut self) {
        self.done = true;
        self.features = Vec::new();
    }
}

impl FlowState for ServeState {
    type Config = Arc<[FeatureSpec]>;

    fn new(specs: &Self::Config) -> Self {
        ServeState {
            features: specs.iter().map(FeatureState::new).collect(),
            next: 0,
            done: false,
            t_first: 0,
            file: 0,
            best: None,
        }
    }

    fn update(&mut self, ts_ns: u64, packet: &Packet<'_>, dir: Direction, name: Option<&str>) {
        // Once decided, a flow's packets only count in the table (the kernel stops steering
        // them on the live path).
        if !self.done {
            for f in &mut self.features {
                f.update(ts_ns, packet, dir, name);
            }
        }
    }
}
