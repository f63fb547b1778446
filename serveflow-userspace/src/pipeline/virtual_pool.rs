//! The slow pool's queue on the virtual clock: a discrete-event simulation.
//!
//! A virtual-clock replay feeds the capture as fast as the workers take it, so the slow
//! pool's real queue fills and drains in wall time that has nothing to do with the capture:
//! the same replay gave 42% of flows under 16 ms on an idle machine and 9% on a busy one. Here
//! the pool still runs the model on real batches for the answers, but each escalated flow's
//! queueing and inference time is simulated on capture time: the flow joins the queue at its
//! trigger time, pool threads take batches as the real ones do (the first waiting flow, then
//! more until the batch is full or `max_wait` has passed), and a batch of `n` flows costs what
//! this machine measured for `n` at start-up. A flow that finds the simulated queue full falls
//! back, as a real worker's would. The result depends on the capture and the measured cost,
//! not on what else the machine was doing while it replayed.

use std::{cmp::Reverse, collections::BinaryHeap, sync::Arc, time::Instant};

use crate::{
    model::onnx::SlowModel,
    pipeline::output::{ThreadOutput, Timing},
    verdict::{StageKind, Verdict},
};

/// Inference cost of a batch of `n` flows: `fixed + n * per_row` (ns), measured.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct CostModel {
    /// Cost of a batch regardless of its size (ns).
    pub fixed_ns: f64,
    /// Cost per flow in the batch (ns).
    pub per_row_ns: f64,
}

impl CostModel {
    /// Times the model on batches of 1 and `max_batch` rows of -1 (the best of several runs:
    /// the least disturbed by other work on the machine).
    pub fn measure(model: &SlowModel, max_batch: usize) -> Self {
        let Ok(mut state) = model.state() else {
            return CostModel {
                fixed_ns: 0.0,
                per_row_ns: 0.0,
            };
        };
        let width = model.features();
        let mut out = Vec::new();
        let mut time = |n: usize| {
            let rows = vec![-1.0f32; n * width];
            (0..7)
                .map(|_| {
                    let start = Instant::now();
                    let _ = model.predict_batch(&mut state, &rows, &mut out);
                    start.elapsed().as_nanos() as f64
                })
                .fold(f64::INFINITY, f64::min)
        };
        let big = max_batch.max(2);
        let (one, many) = (time(1), time(big));
        let per_row = ((many - one) / (big - 1) as f64).max(0.0);
        CostModel {
            fixed_ns: (one - per_row).max(0.0),
            per_row_ns: per_row,
        }
    }

    /// Cost of a batch of `n` (ns).
    pub fn batch_ns(&self, n: usize) -> u64 {
        (self.fixed_ns + self.per_row_ns * n as f64).round() as u64
    }
}

/// One answered flow waiting for its simulated time.
#[derive(Debug)]
struct Answered {
    /// Trigger time on the latency clock (ns): when it joined the queue.
    arrival: u64,
    seq: u64,
    verdict: Verdict,
    class: usize,
    /// What the flow gets if the simulated queue is full: its inline answer.
    fallback: (Arc<str>, f32, usize),
    timing: Timing,
}

impl PartialEq for Answered {
    fn eq(&self, o: &Self) -> bool {
        (self.arrival, self.seq) == (o.arrival, o.seq)
    }
}
impl Eq for Answered {}
impl PartialOrd for Answered {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Answered {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.arrival, self.seq).cmp(&(o.arrival, o.seq))
    }
}

/// Flows held back so the simulation sees them in trigger order even when several workers'
/// jobs interleave (and looks ahead far enough to fill a batch).
const WINDOW: usize = 4096;

/// The simulated queue and threads.
#[derive(Debug)]
pub struct VirtualPool {
    cost: CostModel,
    max_batch: usize,
    max_wait_ns: u64,
    capacity: usize,
    /// When each simulated thread is free next (ns).
    free: Vec<u64>,
    /// Answered flows not yet simulated, earliest trigger first.
    pending: BinaryHeap<Reverse<Answered>>,
    /// Batch start times of simulated flows that may still be waiting (queue depth).
    starts: BinaryHeap<Reverse<u64>>,
    seq: u64,
    /// Flows that found the simulated queue full.
    pub fallbacks: u64,
}

impl VirtualPool {
    /// A simulated pool of `threads` threads with the real pool's batching and queue size.
    pub fn new(cost: CostModel, config: &crate::config::PoolConfig) -> Self {
        VirtualPool {
            cost,
            max_batch: config.max_batch.max(1),
            max_wait_ns: config.max_wait_us.saturating_mul(1000),
            capacity: config.queue.max(1),
            free: vec![0; config.threads.max(1)],
            pending: BinaryHeap::new(),
            starts: BinaryHeap::new(),
            seq: 0,
            fallbacks: 0,
        }
    }

    /// Adds a flow the real pool answered (`verdict`, `class`); `fallback` is its inline
    /// answer (label, confidence, class). Simulates and emits what the window lets go.
    pub fn push(
        &mut self,
        verdict: Verdict,
        class: usize,
        fallback: (Arc<str>, f32, usize),
        timing: Timing,
        out: &mut ThreadOutput,
    ) {
        self.seq += 1;
        self.pending.push(Reverse(Answered {
            arrival: timing.t_trigger,
            seq: self.seq,
            verdict,
            class,
            fallback,
            timing,
        }));
        while self.pending.len() > WINDOW {
            self.batch(out);
        }
    }

    /// Simulates and emits every flow still held (input ended).
    pub fn finish(&mut self, out: &mut ThreadOutput) {
        while !self.pending.is_empty() {
            self.batch(out);
        }
    }

    /// Queue depth a flow arriving at `at` finds, besides `forming` flows of the batch being
    /// formed.
    fn depth(&mut self, at: u64, forming: usize) -> usize {
        while self.starts.peek().is_some_and(|Reverse(s)| *s <= at) {
            self.starts.pop();
        }
        self.starts.len() + forming
    }

    /// Takes the earliest flow off the pending queue, falling back if the queue is full.
    fn take(&mut self, forming: usize, out: &mut ThreadOutput) -> Option<Answered> {
        let Reverse(a) = self.pending.pop()?;
        if self.depth(a.arrival, forming) >= self.capacity {
            self.fallbacks += 1;
            let mut v = a.verdict;
            let (label, confidence, class) = a.fallback;
            v.label = label;
            v.confidence = confidence;
            v.stage = StageKind::Fallback;
            out.emit_served(v, class, a.timing, 0);
            return None;
        }
        Some(a)
    }

    /// Forms and runs the next simulated batch.
    fn batch(&mut self, out: &mut ThreadOutput) {
        let Some(first) = self.take(0, out) else {
            return;
        };
        let (thread, free) = self
            .free
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|(_, f)| *f)
            .unwrap_or((0, 0));
        let open = free.max(first.arrival);
        let close = open.saturating_add(self.max_wait_ns);
        let mut batch = vec![first];
        while batch.len() < self.max_batch {
            let next_due = self
                .pending
                .peek()
                .is_some_and(|Reverse(n)| n.arrival <= close);
            if !next_due {
                break;
            }
            if let Some(a) = self.take(batch.len(), out) {
                batch.push(a);
            }
        }
        let start = if batch.len() == self.max_batch {
            batch
                .iter()
                .map(|a| a.arrival)
                .max()
                .unwrap_or(open)
                .max(open)
        } else {
            close
        };
        let end = start.saturating_add(self.cost.batch_ns(batch.len()));
        if let Some(f) = self.free.get_mut(thread) {
            *f = end;
        }
        for a in batch {
            self.starts.push(Reverse(start));
            out.emit_served(a.verdict, a.class, a.timing, end.saturating_sub(a.arrival));
        }
    }
}
