//! What a deciding thread (fast-path worker or slow-pool thread) does with a verdict: stamp its
//! latency on the run's clock, score it against the labels when given, record it in the
//! thread's histograms and hand it to the verdict-line writer.

use std::{path::PathBuf, sync::Arc, time::Instant};

use crate::{
    labels::{class_of, FlowLabels, LabelKey},
    pipeline::progress::Progress,
    report::ThreadStats,
    verdict::{Verdict, VerdictBuffer, VerdictHook},
};

/// The run's clocks. Wall time is nanoseconds since the run started. Latency time is wall time
/// too, except on a virtual clock, where a packet's arrival is its capture timestamp (the wait
/// for packets is then what the capture recorded, and queueing and inference are measured).
/// On a live clock a flow starts when the source says its first packet arrived (the kernel's
/// time, for AF_XDP, on the same origin), so latency includes the time it waited in the rings.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
    virtual_time: bool,
    source_time: bool,
    /// Live: Unix time of `start` (ns), to turn source times (ns since `start`) into Unix time
    /// for verdicts; captures carry Unix time already.
    unix_origin_ns: u64,
}

impl Clock {
    /// A clock starting now.
    pub fn new(virtual_time: bool) -> Self {
        Clock {
            start: Instant::now(),
            virtual_time,
            source_time: false,
            unix_origin_ns: 0,
        }
    }

    /// A live clock whose origin is the source's: packets carry arrival times measured from
    /// `start`.
    pub fn live(start: Instant) -> Self {
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Clock {
            start,
            virtual_time: false,
            source_time: true,
            unix_origin_ns: unix_now.saturating_sub(start.elapsed().as_nanos() as u64),
        }
    }

    /// A packet timestamp as Unix time in µs: capture timestamps are Unix time already; live
    /// arrival times are counted from the run's start, converted with the Unix time it began.
    pub fn unix_us(&self, ts_ns: u64) -> u64 {
        ts_ns.saturating_add(self.unix_origin_ns) / 1000
    }

    /// Wall-clock ns since the run started.
    pub fn wall(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Whether a packet stamped `ts_ns` arrived after the wall-clock reading `wall` (only a
    /// live clock's packets carry times on the wall clock's origin).
    pub fn arrived_after(&self, ts_ns: u64, wall: u64) -> bool {
        self.source_time && ts_ns > wall
    }

    /// Latency-clock time of a packet with capture/arrival timestamp `ts_ns` handled now.
    pub fn arrival(&self, ts_ns: u64, wall: u64) -> u64 {
        if self.virtual_time {
            ts_ns
        } else {
            wall
        }
    }

    /// Latency-clock time a flow starts at, for its first packet handled at latency time `t`:
    /// `t`, or on a live clock the packet's own arrival time.
    pub fn flow_start(&self, ts_ns: u64, t: u64) -> u64 {
        if self.source_time {
            ts_ns.min(t)
        } else {
            t
        }
    }

    /// Whether latency time is capture time.
    pub fn is_virtual(&self) -> bool {
        self.virtual_time
    }
}

/// When a flow started and when its decision was triggered.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    /// Latency-clock time of the first packet (ns).
    pub t_first: u64,
    /// Latency-clock time of the trigger (packet, timeout or end) (ns).
    pub t_trigger: u64,
    /// Wall-clock time the trigger was handled (ns).
    pub wall_trigger: u64,
    /// Index of the capture file the flow's first packet came from.
    pub file: u32,
}

/// Labels to score verdicts against, with each input file's path in the label file.
#[derive(Debug)]
pub struct Truth {
    labels: FlowLabels,
    files: Vec<Option<String>>,
    classes: Vec<String>,
}

impl Truth {
    /// Labels for the captures `inputs` (in input order), scored over `classes`.
    pub fn new(labels: FlowLabels, inputs: &[PathBuf], classes: Vec<String>) -> Self {
        let files = inputs.iter().map(|p| labels.path_of(p)).collect();
        Truth {
            labels,
            files,
            classes,
        }
    }

    /// Input files that match no path in the label file.
    pub fn unmatched_inputs(&self) -> usize {
        self.files.iter().filter(|f| f.is_none()).count()
    }

    /// The flow's true label and its class index, if it is labeled.
    pub fn of(&self, v: &Verdict, file: u32) -> Option<(String, Option<usize>)> {
        let path = self.files.get(file as usize)?.as_ref()?;
        let key = LabelKey {
            path: path.clone(),
            flow: v.flow,
        };
        let label = self.labels.get(&key)?;
        Some((label.to_owned(), class_of(label, &self.classes)))
    }
}

/// One deciding thread's outputs.
#[derive(Debug)]
pub struct ThreadOutput {
    /// Verdict lines.
    pub lines: VerdictBuffer,
    /// Histograms and counts.
    pub stats: ThreadStats,
    /// The run's clock.
    pub clock: Clock,
    /// Labels, when given.
    pub truth: Option<Arc<Truth>>,
    /// Told of every verdict (live: the kernel's verdict map).
    pub hook: Option<Box<dyn VerdictHook>>,
    /// Running totals for live metrics, when someone reads them.
    pub progress: Option<Arc<Progress>>,
}

impl std::fmt::Debug for dyn VerdictHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerdictHook")
    }
}

impl ThreadOutput {
    /// Lets the hook hand on what it holds back (the thread idles or ends).
    pub fn flush_hook(&mut self) {
        if let Some(hook) = &mut self.hook {
            hook.flush();
        }
    }

    /// The thread idles at wall time `wall` (ns): the hook hands on what it holds, and
    /// verdict lines held back too long go to the writer.
    pub fn idle(&mut self, wall: u64) {
        self.flush_hook();
        self.lines.idle(wall);
    }

    /// Finishes `v` (latency, truth), records and writes it. `class` is its label's index.
    /// Serving time is the wall time since the trigger was handled.
    pub fn emit(&mut self, v: Verdict, class: usize, timing: Timing) {
        let serving = self.clock.wall().saturating_sub(timing.wall_trigger);
        self.emit_served(v, class, timing, serving);
    }

    /// [`Self::emit`] with a given serving time (ns): the virtual clock's simulated slow pool.
    pub fn emit_served(&mut self, mut v: Verdict, class: usize, timing: Timing, serving: u64) {
        let wall = self.clock.wall();
        let t_verdict = timing.t_trigger.saturating_add(serving);
        v.latency_us = t_verdict.saturating_sub(timing.t_first) as f64 / 1e3;
        v.serving_us = serving as f64 / 1e3;
        // Unlabeled flows are not scored; labeled ones whose label is no class count apart.
        let truth = self.truth.as_ref().and_then(|t| t.of(&v, timing.file));
        let scored = truth.as_ref().map(|(_, c)| *c);
        v.truth = truth.map(|(label, _)| label);
        if let Some(hook) = &mut self.hook {
            hook.decided(&v, class);
        }
        self.stats.record(&v, class, scored, wall);
        self.lines.push(v, wall);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_start_at_their_source_arrival_only_on_a_live_clock() {
        let live = Clock::live(Instant::now());
        assert_eq!(live.arrival(5, 10), 10, "handled now");
        assert_eq!(live.flow_start(5, 10), 5, "arrived earlier, in the rings");
        assert_eq!(live.flow_start(20, 10), 10, "never after it was handled");
        let wall = Clock::new(false);
        assert_eq!(wall.flow_start(5, 10), 10);
        assert_eq!(
            wall.unix_us(1_700_000_000_000_000_000),
            1_700_000_000_000_000
        );
        let unix_us = live.unix_us(0);
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        assert!(now_us - unix_us < 5_000_000, "live times are Unix times");
        let virt = Clock::new(true);
        assert_eq!(virt.arrival(5, 10), 5);
        assert_eq!(virt.flow_start(5, virt.arrival(5, 10)), 5);
    }

    #[test]
    fn only_live_packets_can_arrive_after_a_clock_reading() {
        let live = Clock::live(Instant::now());
        assert!(
            live.arrived_after(11, 10),
            "the reading is stale: read again"
        );
        assert!(!live.arrived_after(10, 10) && !live.arrived_after(9, 10));
        for other in [Clock::new(false), Clock::new(true)] {
            assert!(
                !other.arrived_after(u64::MAX, 10),
                "capture times are another clock"
            );
        }
    }
}
