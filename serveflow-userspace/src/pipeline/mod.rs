//! The serving pipeline, one for live traffic and capture replay: fast-path workers pinned to
//! cores, each owning a shard of the flows, and the slow pool on its own cores.
//!
//! ```text
//!  packets ─► shard by flow key ─► worker 0..N (flow table, inline stages, router)
//!                                    ├─ confident ─────────────► verdict
//!                                    └─ uncertain ─ try_send ─► slow pool (batches) ─► verdict
//!                                                  └ queue full ─► fallback verdict
//! ```
//!
//! With one worker the source is read on the worker's own thread; with more, the calling
//! thread reads it and hands each worker its shard in batches (both directions of a flow hash
//! to the same worker).

pub mod cascade;
pub(crate) mod deadlines;
pub mod output;
pub(crate) mod progress;
pub(crate) mod slow_pool;
pub mod summary;
pub(crate) mod virtual_pool;
pub(crate) mod worker;

pub use progress::Progress;

use std::{
    hash::BuildHasher as _,
    sync::Arc,
    time::{Duration, SystemTime},
};

use crossbeam_channel::bounded;

use crate::{
    config::{wait_ns, Config, PoolConfig, Speed, DEFAULT_FAST_WAIT_MS, DEFAULT_MAX_WAIT_MS},
    flow::FlowConfig,
    frame::{CapturedPacket, Input},
    parse,
    report::{IntervalLog, RunStats, ThreadStats},
    verdict::{HookFactory, VerdictOutput},
};
use cascade::Cascade;
use output::{Clock, ThreadOutput, Truth};
use slow_pool::PoolCounters;
use worker::{Worker, WorkerCounters};

/// Where the workers' packets come from.
pub enum Feed<I> {
    /// One source for all workers: read on the worker's thread (one worker) or by a
    /// dispatcher that hands each worker its shard (several).
    Shared(I),
    /// One source per worker (a live AF_XDP socket per RX queue). With `symmetric` (the NIC's
    /// RSS sends both directions of a flow to one queue) each worker owns every flow its source
    /// delivers; otherwise it forwards packets of flows another worker owns by the shard hash,
    /// so both directions of a flow meet whatever queue they arrive on.
    PerWorker {
        /// The sources, one per worker.
        sources: Vec<I>,
        /// Whether each source already delivers both directions of its flows.
        symmetric: bool,
    },
}

/// Pipeline settings at run time, built from a [`Config`] (the file and flags) plus what only
/// a running session knows (where live metrics go, the live clock's origin).
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Fast-path workers.
    pub workers: usize,
    /// Slow pool.
    pub pool: PoolConfig,
    /// Flow table (per worker; `max_flows` is split between them).
    pub flow: FlowConfig,
    /// Longest a flow waits, from its first packet, for an inline (fast) stage's packets before
    /// that stage decides with what it has (ms).
    pub fast_wait_ms: f64,
    /// ... and for the slow stage's packets before it is escalated with what it has (ms).
    pub max_wait_ms: f64,
    /// Feed speed.
    pub speed: Speed,
    /// Pin threads to cores.
    pub pin: bool,
    /// Interval of the `.hlog` (ms).
    pub interval_ms: u64,
    /// CPUs to place threads on (workers first, then the slow pool), e.g. the NIC's NUMA
    /// node; None: all of the machine's.
    pub cpus: Option<Vec<usize>>,
    /// Where workers and pool threads publish running totals (live metrics); None: nowhere.
    pub progress: Option<Arc<progress::Progress>>,
    /// Live sources: the origin of the arrival times they stamp on packets; latency then
    /// runs from a flow's first arrival (see [`Clock::live`]).
    pub live_origin: Option<std::time::Instant>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            workers: 1,
            pool: PoolConfig::default(),
            flow: FlowConfig::default(),
            fast_wait_ms: DEFAULT_FAST_WAIT_MS,
            max_wait_ms: DEFAULT_MAX_WAIT_MS,
            speed: Speed::Virtual,
            pin: true,
            interval_ms: 1000,
            cpus: None,
            progress: None,
            live_origin: None,
        }
    }
}

impl PipelineConfig {
    /// The pipeline settings of a configuration; `workers` when it names none (a live run
    /// passes 0: one per queue, decided once the queues are known).
    pub fn from_config(c: &Config, workers: usize) -> Self {
        PipelineConfig {
            workers: c.pipeline.workers.unwrap_or(workers),
            pool: c.pool,
            flow: c.flow,
            fast_wait_ms: c.pipeline.fast_wait_ms,
            max_wait_ms: c.pipeline.max_wait_ms,
            speed: c.capture.speed,
            pin: c.pipeline.pin,
            interval_ms: c.pipeline.interval_ms,
            cpus: c.pipeline.cpus.clone(),
            progress: None,
            live_origin: None,
        }
    }
}

/// Everything a run produced besides the verdict lines.
#[derive(Debug)]
pub struct RunResult {
    /// Histograms and verdict counts.
    pub stats: RunStats,
    /// Per-worker counters.
    pub workers: Vec<WorkerCounters>,
    /// Per-pool-thread counters.
    pub pool: Vec<PoolCounters>,
    /// Wall time of the run (s).
    pub wall_s: f64,
    /// When it started.
    pub started: SystemTime,
    /// Threads that panicked outside the per-packet guard (their flows are lost; reported).
    pub thread_panics: u64,
    /// First error writing verdicts, if any.
    pub output_error: Option<String>,
    /// Times a deciding thread waited for the verdict-line writer (it fell behind).
    pub output_waits: u64,
}

impl RunResult {
    /// Flows that entered the flow tables.
    pub fn flows_in(&self) -> u64 {
        self.workers.iter().map(|w| w.flows.started).sum()
    }
}

/// Cores for `n` threads starting at the `first` core, wrapping around `cpus` (default: the
/// machine's cores).
fn cores(cpus: Option<&[usize]>, first: usize, n: usize) -> Vec<Option<core_affinity::CoreId>> {
    let ids = match cpus {
        Some(list) if !list.is_empty() => list
            .iter()
            .map(|&id| core_affinity::CoreId { id })
            .collect(),
        _ => core_affinity::get_core_ids().unwrap_or_default(),
    };
    (0..n)
        .map(|i| (!ids.is_empty()).then(|| ids[(first + i) % ids.len()]))
        .collect()
}

fn pin(core: Option<core_affinity::CoreId>, enabled: bool) {
    if let (Some(c), true) = (core, enabled) {
        if !core_affinity::set_for_current(c) {
            log::debug!("could not pin to core {}", c.id);
        }
    }
}

/// A frame with its parse, handed from the thread that parsed it to pick its owner to that
/// owner, which then does not parse it again.
struct Routed {
    packet: CapturedPacket,
    headers: Result<parse::Headers, parse::Skip>,
}

/// The worker a frame's flow belongs to (both directions hash alike: the key is normalised),
/// with the frame's parse.
fn route(packet: CapturedPacket, workers: usize) -> (usize, Routed) {
    let headers = parse::parse_link(packet.link, &packet.data).map(|p| p.headers());
    let owner = match &headers {
        Ok(h) => {
            let (key, _) = h.on(&packet.data).flow_key();
            (foldhash::fast::FixedState::with_seed(0x5e7f_10f5).hash_one(key) % workers as u64)
                as usize
        }
        Err(_) => 0,
    };
    (owner, Routed { packet, headers })
}

/// Hands a batch of routed frames to their owner and their buffers back to the pool.
fn owner_handles(w: &mut Worker, batch: Vec<Routed>) {
    w.new_burst();
    for r in batch {
        w.routed(&r.packet, r.headers);
        r.packet.recycle();
    }
}

/// Runs `source` through the pipeline of `cascade` and returns when every flow is decided.
pub fn run<I>(
    cascade: Arc<Cascade>,
    config: &PipelineConfig,
    feed: Feed<I>,
    verdicts: &VerdictOutput,
    truth: Option<Arc<Truth>>,
    hooks: Option<HookFactory>,
) -> RunResult
where
    I: Iterator<Item = Input> + Send,
{
    let started = SystemTime::now();
    let clock = match config.live_origin {
        Some(start) => Clock::live(start),
        None => Clock::new(config.speed == Speed::Virtual),
    };
    let workers = match &feed {
        Feed::Shared(_) => config.workers.max(1),
        Feed::PerWorker { sources, .. } => sources.len().max(1),
    };
    let log = IntervalLog::default();
    let classes = cascade.classes.len();
    let interval_ns = config.interval_ms.max(1) * 1_000_000;
    let output = || ThreadOutput {
        lines: verdicts.buffer(),
        stats: ThreadStats::new(classes, interval_ns, log.clone()),
        clock,
        truth: truth.clone(),
        hook: hooks.as_ref().and_then(|make| make()),
        progress: config.progress.clone(),
    };
    let waits_ns = (wait_ns(config.fast_wait_ms), wait_ns(config.max_wait_ms));
    let flow = FlowConfig {
        max_flows: (config.flow.max_flows / workers).max(1),
        ..config.flow
    };
    let (handle, rx) = slow_pool::channel(&config.pool, clock.is_virtual());
    let worker_cores = cores(config.cpus.as_deref(), 0, workers);
    let pool_cores = cores(config.cpus.as_deref(), workers, config.pool.threads.max(1));
    let joined = std::thread::scope(|scope| {
        let mut pool_threads = Vec::new();
        for core in pool_cores {
            let (rx, cascade, pool_cfg, mut out) =
                (rx.clone(), cascade.clone(), config.pool, output());
            let pin_enabled = config.pin;
            pool_threads.push(scope.spawn(move || {
                pin(core, pin_enabled);
                let c = slow_pool::serve(&cascade.slow, &cascade.classes, &pool_cfg, &rx, &mut out);
                out.lines.flush();
                (out, c)
            }));
        }
        drop(rx);
        let make_worker = |out| Worker::new(cascade.clone(), flow, waits_ns, handle.clone(), out);
        let speed = config.speed;
        let pin_enabled = config.pin;
        let mut worker_threads = Vec::new();
        let source = match feed {
            Feed::Shared(source) => source,
            Feed::PerWorker { sources, symmetric } => {
                per_worker(
                    scope,
                    sources,
                    symmetric,
                    &worker_cores,
                    pin_enabled,
                    |_| make_worker(output()),
                )
                .into_iter()
                .for_each(|t| worker_threads.push(t));
                drop(handle);
                return join_all(worker_threads, pool_threads);
            }
        };
        if workers == 1 {
            let mut w = make_worker(output());
            let core = worker_cores.first().copied().flatten();
            worker_threads.push(scope.spawn(move || {
                pin(core, pin_enabled);
                let mut pacer = Pacer::new(speed, clock);
                for input in source {
                    match input {
                        Input::Packet(p) => {
                            pacer.wait(p.ts_ns, &mut w);
                            w.packet(&p);
                            p.recycle();
                        }
                        Input::Idle => w.tick(),
                    }
                }
                w.finish()
            }));
        } else {
            let mut senders = Vec::new();
            for core in worker_cores {
                let (tx, rx) = bounded::<Vec<Routed>>(64);
                senders.push(tx);
                let mut w = make_worker(output());
                worker_threads.push(scope.spawn(move || {
                    pin(core, pin_enabled);
                    for batch in rx {
                        owner_handles(&mut w, batch);
                        w.tick();
                    }
                    w.finish()
                }));
            }
            let mut batches: Vec<Vec<Routed>> =
                (0..workers).map(|_| Vec::with_capacity(BATCH)).collect();
            let mut pacer = Pacer::new(speed, clock);
            for input in source {
                let p = match input {
                    Input::Packet(p) => p,
                    Input::Idle => {
                        // Flush what is batched; an empty batch makes each worker tick.
                        for (tx, batch) in senders.iter().zip(batches.iter_mut()) {
                            let _ = tx.send(std::mem::take(batch));
                        }
                        continue;
                    }
                };
                pacer.wait_idle(p.ts_ns);
                let (i, routed) = route(p, workers);
                batches[i].push(routed);
                // Paced input goes out packet by packet, so waits are not batched away.
                if batches[i].len() >= BATCH || pacer.paced() {
                    let full = std::mem::replace(&mut batches[i], Vec::with_capacity(BATCH));
                    // A worker that died has dropped its receiver; its packets are counted
                    // lost through the panic count below.
                    let _ = senders[i].send(full);
                }
            }
            for (tx, batch) in senders.iter().zip(batches) {
                if !batch.is_empty() {
                    let _ = tx.send(batch);
                }
            }
            drop(senders);
        }
        drop(handle);
        join_all(worker_threads, pool_threads)
    });
    let (outputs, worker_counters, pool_counters, thread_panics) = joined;
    let wall_s = clock.wall() as f64 / 1e9;
    // Every deciding thread's buffer hands its last verdicts over as it drops.
    let stats_of: Vec<ThreadStats> = outputs.into_iter().map(|o| o.stats).collect();
    let output_error = verdicts.flush().err();
    let stats = RunStats::merge(
        cascade.classes.iter().map(|c| c.to_string()).collect(),
        stats_of,
        &log,
    );
    RunResult {
        stats,
        workers: worker_counters,
        pool: pool_counters,
        wall_s,
        started,
        thread_panics,
        output_error,
        output_waits: verdicts.waits(),
    }
}

const BATCH: usize = 64;

type WorkerThread<'s> = std::thread::ScopedJoinHandle<'s, (ThreadOutput, WorkerCounters)>;
type PoolThread<'s> = std::thread::ScopedJoinHandle<'s, (ThreadOutput, PoolCounters)>;
type Joined = (
    Vec<ThreadOutput>,
    Vec<WorkerCounters>,
    Vec<PoolCounters>,
    u64,
);

/// Waits for the workers, then the pool (which drains once every worker dropped its handle).
fn join_all(workers: Vec<WorkerThread<'_>>, pool: Vec<PoolThread<'_>>) -> Joined {
    let (mut outputs, mut wc, mut pc, mut panics) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for t in workers {
        match t.join() {
            Ok((out, c)) => {
                outputs.push(out);
                wc.push(c);
            }
            Err(_) => panics += 1,
        }
    }
    for t in pool {
        match t.join() {
            Ok((out, c)) => {
                outputs.push(out);
                pc.push(c);
            }
            Err(_) => panics += 1,
        }
    }
    (outputs, wc, pc, panics)
}

/// Starts one worker per source. Each handles its own flows (with `symmetric`, every flow its
/// source delivers) and forwards the others' packets to their owner in batches over unbounded
/// channels (bounded ones could deadlock two workers forwarding to each other); it drains its
/// inbox every batch, and once its source ends it drops its senders and drains until every
/// other worker has done the same.
fn per_worker<'s, 'e: 's, I>(
    scope: &'s std::thread::Scope<'s, 'e>,
    sources: Vec<I>,
    symmetric: bool,
    cores: &[Option<core_affinity::CoreId>],
    pin_enabled: bool,
    mut make: impl FnMut(usize) -> Worker,
) -> Vec<WorkerThread<'s>>
where
    I: Iterator<Item = Input> + Send + 'e,
{
    let n = sources.len().max(1);
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| crossbeam_channel::unbounded::<Vec<Routed>>())
        .unzip();
    let mut threads = Vec::new();
    for (i, (source, inbox)) in sources.into_iter().zip(rxs).enumerate() {
        let peers = txs.clone();
        let mut w = make(i);
        let core = cores.get(i).copied().flatten();
        threads.push(scope.spawn(move || {
            pin(core, pin_enabled);
            let mut outbox: Vec<Vec<Routed>> = (0..n).map(|_| Vec::new()).collect();
            let flush = |outbox: &mut Vec<Vec<Routed>>| {
                for (j, b) in outbox.iter_mut().enumerate() {
                    if !b.is_empty() {
                        let _ = peers[j].send(std::mem::take(b));
                    }
                }
            };
            let mut since_drain = 0;
            for input in source {
                match input {
                    Input::Packet(p) if symmetric => {
                        w.packet(&p);
                        p.recycle();
                        since_drain += 1;
                    }
                    Input::Packet(p) => {
                        let (j, r) = route(p, n);
                        if j == i {
                            w.routed(&r.packet, r.headers);
                            r.packet.recycle();
                        } else {
                            outbox[j].push(r);
                            if outbox[j].len() >= BATCH {
                                let _ = peers[j].send(std::mem::take(&mut outbox[j]));
                            }
                        }
                        since_drain += 1;
                    }
                    Input::Idle => {
                        flush(&mut outbox);
                        since_drain = BATCH;
                        w.tick();
                    }
                }
                if since_drain >= BATCH {
                    since_drain = 0;
                    while let Ok(batch) = inbox.try_recv() {
                        owner_handles(&mut w, batch);
                    }
                }
            }
            flush(&mut outbox);
            drop(peers);
            for batch in inbox {
                owner_handles(&mut w, batch);
            }
            w.finish()
        }));
    }
    threads
}

/// Holds packets back to the capture's pace (real-time speeds only).
struct Pacer {
    speed: Speed,
    clock: Clock,
    /// First packet's timestamp and the wall time it was released at: the pace's origin.
    first: Option<(u64, u64)>,
}

impl Pacer {
    fn new(speed: Speed, clock: Clock) -> Self {
        Pacer {
            speed,
            clock,
            first: None,
        }
    }

    fn paced(&self) -> bool {
        matches!(self.speed, Speed::Realtime(_))
    }

    /// Wall ns at which a packet stamped `ts_ns` is due, for paced speeds.
    fn due(&mut self, ts_ns: u64) -> Option<u64> {
        let Speed::Realtime(factor) = self.speed else {
            return None;
        };
        let clock = self.clock;
        let (first_ts, first_wall) = *self.first.get_or_insert_with(|| (ts_ns, clock.wall()));
        Some(first_wall + (ts_ns.saturating_sub(first_ts) as f64 / factor) as u64)
    }

    /// Sleeps until the packet is due, firing the worker's timeouts meanwhile.
    fn wait(&mut self, ts_ns: u64, worker: &mut Worker) {
        let Some(due) = self.due(ts_ns) else { return };
        loop {
            let now = self.clock.wall();
            if now >= due {
                return;
            }
            std::thread::sleep(Duration::from_nanos((due - now).min(1_000_000)));
            worker.tick();
        }
    }

    /// Sleeps until the packet is due (dispatcher thread; workers tick on their own batches).
    fn wait_idle(&mut self, ts_ns: u64) {
        let Some(due) = self.due(ts_ns) else { return };
        let now = self.clock.wall();
        if due > now {
            std::thread::sleep(Duration::from_nanos(due - now));
        }
    }
}
