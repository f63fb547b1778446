//! A fast-path worker: owns one shard of the flows (its own flow table), runs the inline
//! stages the moment a flow has their packets, and hands uncertain flows to the slow pool
//! without ever blocking on it.
//!
//! Every flow that enters the table gets exactly one verdict: when a stage is confident, when
//! it is handed to the pool (the pool answers, or the flow falls back at once), when it has
//! waited long enough for the next stage's packets (counted from its first packet: the inline
//! stages' wait, then the slow stage's), or when it ends, whichever comes first.

use std::sync::Arc;

use serveflow_common::FlowKey;

use crate::{
    flow::{EndReason, Flow, FlowConfig, FlowCounters, FlowTable},
    frame::CapturedPacket,
    parse::{self, Skip},
    pipeline::slow_pool::{PoolHandle, Rejected, SlowJob},
    pipeline::{
        cascade::{Cascade, ServeState},
        deadlines::{Deadlines, Lane},
        output::{ThreadOutput, Timing},
        progress::Published,
    },
    verdict::{StageKind, Trigger, Verdict},
};

/// Packets between two publications of a worker's counts.
const PUBLISH_EVERY: u64 = 64;

/// Packets handled on one reading of the wall clock. Back-to-back packets are a burst (a ring
/// batch, a channel batch, a file read at full speed) handled within microseconds, so one
/// reading serves up to 16 of them. A burst ends early at an idle tick or a pacer's sleep, at
/// a new channel batch, and on the live clock at a packet that arrived after the reading (the
/// source spun for it): the next packet reads the clock again. The reading was 3.4% of a
/// full-speed replay's CPU.
const CLOCK_EVERY: u32 = 16;

/// What a worker counted.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WorkerCounters {
    /// Frames handed to the worker.
    pub packets: u64,
    /// Frames of TCP/UDP flows.
    pub flow_packets: u64,
    /// Bytes of all frames.
    pub bytes: u64,
    /// Flows started, TCP.
    pub tcp_flows: u64,
    /// Flows started, UDP.
    pub udp_flows: u64,
    /// Frames skipped, by parser reason.
    pub skipped: std::collections::BTreeMap<&'static str, u64>,
    /// Flows handed to the slow pool.
    pub escalated: u64,
    /// Flows that fell back because the pool's queue was full.
    pub fallback_full: u64,
    /// Flows that fell back because the pool had stopped.
    pub fallback_stopped: u64,
    /// Packets whose processing panicked (counted, the worker goes on).
    pub panics: u64,
    /// Frames of flows that already had their verdict.
    pub packets_after_verdict: u64,
    /// Flow-table counters (started, ended by reason).
    pub flows: FlowCounters,
}

/// The part of a worker that decides flows; apart from the table so both can be borrowed.
struct Decider {
    cascade: Arc<Cascade>,
    /// How long after its first packet a flow may wait for an inline stage's packets (ns).
    inline_wait_ns: u64,
    /// ... and for the slow stage's.
    slow_wait_ns: u64,
    /// (deadline, key, first_seen_ns, stage) of flows waiting for a stage's packets, earliest
    /// first.
    deadlines: Deadlines<(u64, FlowKey, u64, u8)>,
    pool: PoolHandle,
    out: ThreadOutput,
    row: Vec<f32>,
    probs: Vec<f64>,
    escalated: u64,
    fallback_full: u64,
    fallback_stopped: u64,
}

/// A fast-path worker.
pub struct Worker {
    table: FlowTable<ServeState>,
    decider: Decider,
    ended: Vec<(Flow<ServeState>, EndReason)>,
    skipped: [u64; Skip::ALL.len()],
    packets: u64,
    flow_packets: u64,
    bytes: u64,
    tcp_flows: u64,
    udp_flows: u64,
    panics: u64,
    packets_after_verdict: u64,
    last_t: u64,
    published: Published,
    /// The wall clock as last read, and how many packets may still use that reading.
    wall: (u64, u32),
}

impl Worker {
    /// A worker with an empty flow table.
    pub fn new(
        cascade: Arc<Cascade>,
        flow: FlowConfig,
        waits_ns: (u64, u64),
        pool: PoolHandle,
        out: ThreadOutput,
    ) -> Self {
        let k = cascade.classes.len();
        Worker {
            table: FlowTable::new(flow, cascade.specs_within(waits_ns.0, waits_ns.1)),
            decider: Decider {
                cascade,
                inline_wait_ns: waits_ns.0,
                slow_wait_ns: waits_ns.1,
                deadlines: Deadlines::default(),
                pool,
                out,
                row: Vec::new(),
                probs: vec![0.0; k],
                escalated: 0,
                fallback_full: 0,
                fallback_stopped: 0,
            },
            ended: Vec::new(),
            skipped: [0; Skip::ALL.len()],
            packets: 0,
            flow_packets: 0,
            bytes: 0,
            tcp_flows: 0,
            udp_flows: 0,
            panics: 0,
            packets_after_verdict: 0,
            last_t: 0,
            published: Published::default(),
            wall: (0, 0),
        }
    }

    /// Handles one frame; a panic inside is caught and counted, never lost silently.
    pub fn packet(&mut self, p: &CapturedPacket) {
        let headers = parse::parse_link(p.link, &p.data).map(|parsed| parsed.headers());
        self.routed(p, headers);
    }

    /// [`Self::packet`] for a frame already parsed (by the thread that picked its owner).
    pub fn routed(&mut self, p: &CapturedPacket, headers: Result<parse::Headers, Skip>) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.packet_inner(p, headers);
        }));
        if r.is_err() {
            self.panics += 1;
            if self.panics == 1 {
                log::error!(
                    "fast-path worker: a packet's processing panicked; counting and going on"
                );
            }
        }
        if self.packets.is_multiple_of(PUBLISH_EVERY) {
            self.publish();
        }
    }

    /// Adds this worker's new counts to the run's shared totals (live metrics).
    fn publish(&mut self) {
        let Some(progress) = self.decider.out.progress.clone() else {
            return;
        };
        let flows = self.table.counters();
        let now = Published {
            packets: self.packets,
            skipped: self.skipped.iter().sum(),
            packets_after_verdict: self.packets_after_verdict,
            flows: flows.started,
            flows_evicted: flows.evicted,
            escalated: self.decider.escalated,
            fallbacks: self.decider.fallback_full + self.decider.fallback_stopped,
        };
        progress.publish(&mut self.published, now);
    }

    fn packet_inner(&mut self, p: &CapturedPacket, headers: Result<parse::Headers, Skip>) {
        self.packets += 1;
        self.bytes += p.data.len() as u64;
        let parsed = match headers {
            Ok(h) => h.on(&p.data),
            Err(skip) => {
                self.skipped[skip as usize] += 1;
                return;
            }
        };
        self.flow_packets += 1;
        let clock = self.decider.out.clock;
        let wall = self.burst_wall(p.ts_ns);
        let t = clock.arrival(p.ts_ns, wall);
        self.last_t = t;
        self.run_deadlines(t, wall);
        let Worker {
            table,
            decider,
            ended,
            tcp_flows,
            udp_flows,
            packets_after_verdict,
            ..
        } = self;
        let file = p.file;
        table.observe_with(
            p.ts_ns,
            &parsed,
            &mut |f, r| ended.push((f, r)),
            |flow, _| {
                if flow.packets == 1 {
                    if flow.proto == serveflow_common::proto::TCP {
                        *tcp_flows += 1;
                    } else {
                        *udp_flows += 1;
                    }
                    // A flow's latency counts from its start, so that takes a reading of
                    // its own (a burst's reading can be microseconds old; the later stamps
                    // cancel out of the latency, this one does not).
                    let t = if clock.is_virtual() {
                        t
                    } else {
                        clock.arrival(p.ts_ns, clock.wall())
                    };
                    flow.state.t_first = clock.flow_start(p.ts_ns, t);
                    flow.state.file = file;
                    // A first stage that needs more than this packet sets the flow's wait;
                    // one that decides on it needs no deadline (fewer heap entries per flow).
                    if flow.packets < decider.cascade.packets(0) {
                        decider.wait(flow, 0);
                    }
                }
                if flow.state.done {
                    *packets_after_verdict += 1;
                } else {
                    let next = usize::from(flow.state.next);
                    if flow.packets >= decider.cascade.packets(next) {
                        decider.decide(flow, Trigger::Packets, t, wall);
                    }
                }
            },
        );
        for (mut flow, _) in ended.drain(..) {
            if !flow.state.done {
                decider.decide(&mut flow, Trigger::End, t, wall);
            }
        }
    }

    /// The wall clock for the packet at hand (arrived at `ts_ns`): the last reading while the
    /// burst lasts (see [`CLOCK_EVERY`]), else a new one.
    fn burst_wall(&mut self, ts_ns: u64) -> u64 {
        let clock = self.decider.out.clock;
        let (wall, left) = &mut self.wall;
        if *left == 0 || clock.arrived_after(ts_ns, *wall) {
            *wall = clock.wall();
            *left = CLOCK_EVERY;
        }
        *left -= 1;
        *wall
    }

    /// A new burst starts (a batch handed over by another thread, after this one waited): the
    /// next packet reads the clock.
    pub fn new_burst(&mut self) {
        self.wall.1 = 0;
    }

    /// Decides flows whose wait ran out by latency-clock time `t`.
    fn run_deadlines(&mut self, t: u64, wall: u64) {
        let virtual_time = self.decider.out.clock.is_virtual();
        while let Some(&(deadline, key, first_seen, stage)) = self.decider.deadlines.peek() {
            if deadline > t {
                break;
            }
            self.decider.deadlines.pop();
            if let Some(flow) = self.table.peek_mut(&key) {
                if flow.first_seen_ns == first_seen && !flow.state.done && flow.state.next == stage
                {
                    // On the virtual clock the timeout fired at its own time; on the wall
                    // clock it is handled now.
                    let at = if virtual_time { deadline } else { t };
                    self.decider.decide(flow, Trigger::Timeout, at, wall);
                }
            }
        }
    }

    /// Fires due timeouts on the wall clock while no packet arrives (live and real-time
    /// replay); a no-op on the virtual clock, where only packets move time.
    pub fn tick(&mut self) {
        self.new_burst();
        let clock = self.decider.out.clock;
        let wall = clock.wall();
        if !clock.is_virtual() {
            self.run_deadlines(wall, wall);
        }
        self.decider.out.idle(wall);
        self.publish();
    }

    /// Input ended: pending timeouts fire (at their time on the virtual clock), then every
    /// remaining flow ends and is decided. Returns the thread's output and counters.
    pub fn finish(mut self) -> (ThreadOutput, WorkerCounters) {
        let clock = self.decider.out.clock;
        let wall = clock.wall();
        let end_t = if clock.is_virtual() { u64::MAX } else { wall };
        self.run_deadlines(end_t, wall);
        let now = if clock.is_virtual() {
            self.last_t
        } else {
            wall
        };
        let Worker { table, decider, .. } = &mut self;
        table.flush(&mut |mut flow, _| {
            if !flow.state.done {
                let at = now.max(flow.state.t_first);
                decider.decide(&mut flow, Trigger::End, at, wall);
            }
        });
        self.publish();
        let mut skipped = std::collections::BTreeMap::new();
        for s in Skip::ALL {
            if self.skipped[s as usize] > 0 {
                skipped.insert(s.name(), self.skipped[s as usize]);
            }
        }
        let counters = WorkerCounters {
            packets: self.packets,
            flow_packets: self.flow_packets,
            bytes: self.bytes,
            tcp_flows: self.tcp_flows,
            udp_flows: self.udp_flows,
            skipped,
            escalated: self.decider.escalated,
            fallback_full: self.decider.fallback_full,
            fallback_stopped: self.decider.fallback_stopped,
            panics: self.panics,
            packets_after_verdict: self.packets_after_verdict,
            flows: self.table.counters(),
        };
        self.decider.out.lines.flush();
        self.decider.out.flush_hook();
        (self.decider.out, counters)
    }
}

impl Decider {
    /// Latency-clock time until which a flow waits for stage `stage`'s packets.
    fn deadline(&self, flow: &Flow<ServeState>, stage: u8) -> u64 {
        let wait = if usize::from(stage) < self.cascade.inline.len() {
            self.inline_wait_ns
        } else {
            self.slow_wait_ns
        };
        flow.state.t_first.saturating_add(wait)
    }

    /// Registers the flow's wait for stage `stage`.
    fn wait(&mut self, flow: &Flow<ServeState>, stage: u8) {
        let d = self.deadline(flow, stage);
        let lane = if usize::from(stage) < self.cascade.inline.len() {
            Lane::Inline
        } else {
            Lane::Slow
        };
        self.deadlines
            .push(lane, (d, flow.key, flow.first_seen_ns, stage));
    }

    /// Runs stages from the flow's next one until one is confident, the flow must wait for
    /// more packets, or it is handed to the slow pool.
    fn decide(&mut self, flow: &mut Flow<ServeState>, trigger: Trigger, t: u64, wall: u64) {
        loop {
            let s = usize::from(flow.state.next);
            let Some(stage) = self.cascade.inline.get(s) else {
                self.escalate(flow, trigger, t, wall);
                return;
            };
            self.row.clear();
            if let Some(f) = flow.state.features.get(s) {
                f.values(&mut self.row);
            }
            let abstains = stage.abstains(&self.row);
            let route = if abstains {
                None
            } else {
                stage.probabilities(&self.row, &mut self.probs);
                Some(stage.router.route(&self.probs))
            };
            if let Some(route) = &route {
                flow.state.best = Some((route.class, route.confidence as f32, s as u8));
            }
            if let Some(route) = route.filter(|r| !r.escalate) {
                let v = self.verdict(flow, StageKind::Fast, trigger);
                flow.state.decided();
                self.out.emit(v, route.class, self.timing(flow, t, wall));
                return;
            }
            flow.state.next += 1;
            let next = flow.state.next;
            let waits = trigger != Trigger::End
                && flow.packets < self.cascade.packets(usize::from(next))
                && t < self.deadline(flow, next);
            if waits {
                self.wait(flow, next);
                return;
            }
        }
    }

    fn timing(&self, flow: &Flow<ServeState>, t: u64, wall: u64) -> Timing {
        Timing {
            t_first: flow.state.t_first,
            t_trigger: t,
            wall_trigger: wall,
            file: flow.state.file,
        }
    }

    /// The verdict of the flow's best inline answer.
    fn verdict(&self, flow: &Flow<ServeState>, stage: StageKind, trigger: Trigger) -> Verdict {
        let (class, confidence, s) = flow.state.best.unwrap_or((0, 0.0, 0));
        Verdict {
            flow: flow.id(),
            key: flow.key,
            first_seen_us: self.out.clock.unix_us(flow.first_seen_ns),
            label: self
                .cascade
                .classes
                .get(class)
                .cloned()
                .unwrap_or_else(|| "?".into()),
            confidence,
            stage,
            model: self
                .cascade
                .inline
                .get(usize::from(s))
                .map_or("fast", |st| st.name),
            trigger,
            packets: flow.packets.min(u64::from(u32::MAX)) as u32,
            bytes: flow.bytes,
            latency_us: 0.0,
            serving_us: 0.0,
            server_name: flow.server_name.clone(),
            truth: None,
        }
    }

    /// Hands the flow to the slow pool; if the pool cannot take it, the best inline answer is
    /// the verdict, marked `fallback`.
    fn escalate(&mut self, flow: &mut Flow<ServeState>, trigger: Trigger, t: u64, wall: u64) {
        let mut features = Vec::with_capacity(self.cascade.slow.features());
        if let Some(f) = flow.state.features.last() {
            f.values(&mut features);
        }
        flow.state.decided();
        let class = flow.state.best.map_or(0, |b| b.0);
        let job = SlowJob {
            features,
            draft: self.verdict(flow, StageKind::Fallback, trigger),
            timing: self.timing(flow, t, wall),
        };
        self.escalated += 1;
        let rejected = match self.pool.offer(job) {
            Ok(()) => return,
            Err(Rejected::Full(job)) => {
                self.fallback_full += 1;
                job
            }
            Err(Rejected::Stopped(job)) => {
                self.fallback_stopped += 1;
                job
            }
        };
        let SlowJob { draft, timing, .. } = *rejected;
        self.out.emit(draft, class, timing);
    }
}
