//! The slow pool: its own threads running the last (slow) stage in dynamic batches.
//!
//! Fast-path workers hand escalated flows over a bounded crossbeam channel with `try_send`
//! only, so they never block: a full queue means the flow keeps its best fast answer and is
//! marked `fallback`. Each pool thread takes the first job it is given, then gathers more until
//! the batch is full or `max_wait` has passed since that first job, runs the model once for the
//! batch and hands the verdicts on itself. A model error or a panic in a batch turns that
//! batch's flows into fallback verdicts: no flow is lost.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Arc,
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::{
    model::onnx::SlowModel,
    pipeline::output::{ThreadOutput, Timing},
    router::argmax,
    verdict::{StageKind, Verdict},
};

use super::virtual_pool::{CostModel, VirtualPool};
use crate::config::PoolConfig;

/// One escalated flow: its features and the verdict it will get, less the label.
#[derive(Debug)]
pub struct SlowJob {
    /// Slow-stage features, in the model's input order.
    pub features: Vec<f32>,
    /// The verdict as the fast path would give it (label, confidence, fallback stage); the pool
    /// replaces label, confidence, stage and latency.
    pub draft: Verdict,
    /// When the flow started and when its decision was triggered.
    pub timing: Timing,
}

/// Why a job could not be queued; the job comes back for its fallback verdict.
#[derive(Debug)]
pub enum Rejected {
    /// The queue is full.
    Full(Box<SlowJob>),
    /// The pool has stopped.
    Stopped(Box<SlowJob>),
}

/// The workers' side of the pool.
#[derive(Clone, Debug)]
pub struct PoolHandle {
    tx: Sender<SlowJob>,
    /// Wait for room instead of falling back: on the virtual clock the real queue's wall-time
    /// fill says nothing about the capture, so fallbacks come from the simulated queue.
    blocking: bool,
}

impl PoolHandle {
    /// Queues a job without blocking (or, for a virtual-clock pool, once there is room).
    pub fn offer(&self, job: SlowJob) -> Result<(), Rejected> {
        if self.blocking {
            return self
                .tx
                .send(job)
                .map_err(|e| Rejected::Stopped(Box::new(e.0)));
        }
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(j) => Rejected::Full(Box::new(j)),
            TrySendError::Disconnected(j) => Rejected::Stopped(Box::new(j)),
        })
    }
}

/// The pool's receiving end, for its threads; `virtual_clock`: workers wait for room (see
/// [`PoolHandle`]).
pub fn channel(config: &PoolConfig, virtual_clock: bool) -> (PoolHandle, Receiver<SlowJob>) {
    let (tx, rx) = crossbeam_channel::bounded(config.queue.max(1));
    (
        PoolHandle {
            tx,
            blocking: virtual_clock,
        },
        rx,
    )
}

/// Sets the calling thread's nice value (on Linux, PRIO_PROCESS with who = 0 is the calling
/// thread). Lowering priority needs no privilege; a refusal is only logged.
fn lower_priority(nice: i32) {
    let nice = nice.clamp(0, 19);
    if nice == 0 {
        return;
    }
    // SAFETY: setpriority has no memory preconditions.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        log::debug!(
            "slow pool: nice {nice} refused: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// What one pool thread counted.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct PoolCounters {
    /// Batches run.
    pub batches: u64,
    /// Jobs run.
    pub jobs: u64,
    /// Jobs turned into fallbacks by a model error or panic.
    pub failed: u64,
    /// Virtual clock: jobs that found the simulated queue full (fallbacks).
    pub simulated_fallbacks: u64,
    /// Virtual clock: the measured batch cost the simulation used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_model: Option<CostModel>,
}

/// Runs one pool thread until every worker has dropped its handle and the queue is empty.
pub fn serve(
    model: &SlowModel,
    classes: &[Arc<str>],
    config: &PoolConfig,
    rx: &Receiver<SlowJob>,
    out: &mut ThreadOutput,
) -> PoolCounters {
    let mut counters = PoolCounters::default();
    lower_priority(config.nice);
    let mut state = match model.state() {
        Ok(s) => Some(s),
        Err(e) => {
            log::error!("slow pool: cannot start the model: {e}; its flows fall back");
            None
        }
    };
    let width = model.features();
    let k = model.classes();
    let max_wait = Duration::from_micros(config.max_wait_us);
    let mut simulated = out.clock.is_virtual().then(|| {
        let cost = CostModel::measure(model, config.max_batch);
        counters.cost_model = Some(cost);
        VirtualPool::new(cost, config)
    });
    let mut batch: Vec<SlowJob> = Vec::with_capacity(config.max_batch.max(1));
    let mut rows: Vec<f32> = Vec::new();
    let mut probs: Vec<f32> = Vec::new();
    let mut p64 = vec![0.0f64; k];
    while let Ok(first) = rx.recv() {
        let deadline = Instant::now() + max_wait;
        batch.push(first);
        while batch.len() < config.max_batch.max(1) {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => match rx.recv_deadline(deadline) {
                    Ok(j) => batch.push(j),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                },
            }
        }
        rows.clear();
        for job in &batch {
            let mut f = job.features.as_slice();
            if f.len() > width {
                f = &f[..width];
            }
            rows.extend_from_slice(f);
            rows.resize(rows.len() + (width - f.len()), -1.0);
        }
        let ran = match state.as_mut() {
            Some(state) => {
                match catch_unwind(AssertUnwindSafe(|| {
                    model.predict_batch(state, &rows, &mut probs)
                })) {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        log::warn!("slow pool: batch of {} failed: {e}", batch.len());
                        false
                    }
                    Err(_) => {
                        log::error!(
                            "slow pool: the model panicked on a batch of {}",
                            batch.len()
                        );
                        false
                    }
                }
            }
            None => false,
        };
        counters.batches += 1;
        if let Some(p) = &out.progress {
            p.slow_queue_depth
                .store(rx.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        counters.jobs += batch.len() as u64;
        for (i, job) in batch.drain(..).enumerate() {
            let mut v = job.draft;
            let fallback = (v.label.clone(), v.confidence, class_index(&v, classes));
            let mut class = None;
            if ran {
                for (d, s) in p64.iter_mut().zip(&probs[i * k..(i + 1) * k]) {
                    *d = f64::from(*s);
                }
                let (c, confidence) = argmax(&p64);
                class = Some(c);
                v.label = classes.get(c).cloned().unwrap_or_else(|| "?".into());
                v.confidence = confidence as f32;
                v.stage = StageKind::Slow;
                v.model = "slow";
            } else {
                counters.failed += 1;
                v.stage = StageKind::Fallback;
            }
            let class = class.unwrap_or_else(|| class_index(&v, classes));
            match simulated.as_mut() {
                Some(sim) => sim.push(v, class, fallback, job.timing, out),
                None => out.emit(v, class, job.timing),
            }
        }
        if rx.is_empty() {
            let wall = out.clock.wall();
            out.idle(wall);
        }
    }
    if let Some(sim) = simulated.as_mut() {
        sim.finish(out);
        counters.simulated_fallbacks = sim.fallbacks;
    }
    out.flush_hook();
    counters
}

/// Index of a verdict's label among `classes` (its fallback label came from them).
fn class_index(v: &Verdict, classes: &[Arc<str>]) -> usize {
    classes.iter().position(|c| *c == v.label).unwrap_or(0)
}
