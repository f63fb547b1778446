//! Live traffic as a pipeline input: the AF_XDP sockets of one interface drained in batches,
//! frames stamped with their arrival time on the run's monotonic clock (the kernel's, from the
//! XDP metadata, so a batch read late keeps its packets' spacing), and an `Idle` whenever
//! nothing arrived for a while so the workers fire their timeouts. Ends on the stop flag
//! (SIGINT/SIGTERM) or after the duration, after draining what the kernel already queued.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use crate::{
    capture::afxdp::{AfXdpError, XskReceiver},
    frame::{pool, CapturedPacket, Input, LinkType},
};

/// How long to wait for packets before reporting idle (see [`LiveSource::idle_wait`]).
const IDLE_WAIT: Duration = Duration::from_millis(5);
/// Frames within this long count as flowing traffic, worth spinning for.
const BUSY_NS: u64 = 1_000_000;
/// How long an empty ring is polled before sleeping, while traffic is flowing.
const SPIN_NS: u64 = 50_000;
/// How often the sockets' kernel drop counters are copied into the live metrics.
const STATISTICS_EVERY_NS: u64 = 100_000_000;

/// The sockets as an iterator of [`Input`].
pub struct LiveSource {
    /// The sockets, one per RX queue.
    pub sockets: Vec<XskReceiver>,
    started: Instant,
    stop: Arc<AtomicBool>,
    duration: Option<Duration>,
    buffered: VecDeque<CapturedPacket>,
    done: bool,
    /// The first receive error, which ended the input.
    pub error: Option<AfXdpError>,
    /// Counts received frames for the live metrics.
    pub metrics: Option<Arc<crate::live::metrics::LiveMetrics>>,
    /// Longest sleep in poll(2) on quiet rings. Workers that receive packets forwarded by
    /// other workers read them only between their own receives, so they set this shorter
    /// (a forwarded packet waits at most this long on a quiet queue).
    pub idle_wait: Duration,
    /// When the drop counters were last read (ns since `started`).
    statistics_at: u64,
    /// When frames last arrived (ns since `started`).
    last_frames_at: u64,
    /// `started` on CLOCK_MONOTONIC (ns), the kernel's clock for arrival times.
    mono_start_ns: u64,
    /// Frames that carried the kernel's arrival time.
    pub kernel_stamped: u64,
}

impl LiveSource {
    /// Reads `sockets` until `stop` is set or `duration` has passed since `started`.
    pub fn new(
        sockets: Vec<XskReceiver>,
        started: Instant,
        stop: Arc<AtomicBool>,
        duration: Option<Duration>,
    ) -> Self {
        LiveSource {
            sockets,
            started,
            stop,
            duration,
            buffered: VecDeque::new(),
            done: false,
            error: None,
            metrics: None,
            idle_wait: IDLE_WAIT,
            statistics_at: 0,
            last_frames_at: 0,
            mono_start_ns: monotonic_ns().saturating_sub(started.elapsed().as_nanos() as u64),
            kernel_stamped: 0,
        }
    }

    fn receive_all(&mut self) -> usize {
        let ts_ns = self.started.elapsed().as_nanos() as u64;
        let mut n = 0;
        for socket in &mut self.sockets {
            let buffered = &mut self.buffered;
            let (mono_start, stamped) = (self.mono_start_ns, &mut self.kernel_stamped);
            match socket.receive(|frame, arrival| {
                // The kernel's arrival time where the program left it, else this batch's.
                let ts = match arrival {
                    Some(t) => {
                        *stamped += 1;
                        t.saturating_sub(mono_start)
                    }
                    None => ts_ns,
                };
                buffered.push_back(CapturedPacket {
                    ts_ns: ts,
                    link: LinkType::Ethernet,
                    data: pool::copy_of(frame).into(),
                    file: 0,
                })
            }) {
                Ok(k) => {
                    n += k;
                    // Only when frames came: an empty ring is polled in a tight loop while
                    // traffic flows, and these counters are shared between workers.
                    if let Some(m) = self.metrics.as_ref().filter(|_| k > 0) {
                        m.received_packets.fetch_add(k as u64, Ordering::Relaxed);
                        if let Some(q) = m.queues.get(socket.queue() as usize) {
                            q.packets.fetch_add(k as u64, Ordering::Relaxed);
                        }
                    }
                }
                Err(e) => {
                    self.error.get_or_insert(e);
                }
            }
        }
        if n > 0 {
            self.last_frames_at = ts_ns;
        }
        if ts_ns >= self.statistics_at + STATISTICS_EVERY_NS {
            self.statistics_at = ts_ns;
            self.publish_statistics();
        }
        n
    }

    /// While traffic is flowing, polls the rings for a short while before sleeping in poll(2):
    /// a sleep and wake-up per burst cost a context switch each. Returns whether frames came.
    fn spin(&mut self) -> bool {
        let now = self.started.elapsed().as_nanos() as u64;
        if now.saturating_sub(self.last_frames_at) > BUSY_NS {
            return false;
        }
        while self.started.elapsed().as_nanos() as u64 - now < SPIN_NS {
            std::hint::spin_loop();
            if self.receive_all() > 0 {
                return true;
            }
        }
        false
    }

    /// Copies each socket's kernel drop counters into the live metrics.
    fn publish_statistics(&self) {
        let Some(m) = &self.metrics else { return };
        for socket in &self.sockets {
            if let (Ok(s), Some(q)) = (socket.statistics(), m.queues.get(socket.queue() as usize)) {
                q.set_drops(&s);
            }
        }
    }
}

/// CLOCK_MONOTONIC now (ns): the clock of `bpf_ktime_get_ns` (and of `Instant` on Linux).
fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

impl Iterator for LiveSource {
    type Item = Input;

    fn next(&mut self) -> Option<Input> {
        if let Some(p) = self.buffered.pop_front() {
            return Some(Input::Packet(p));
        }
        if self.done {
            return None;
        }
        let over = self.duration.is_some_and(|d| self.started.elapsed() >= d);
        if self.stop.load(Ordering::Relaxed) || over || self.error.is_some() {
            // Drain what the kernel already queued so the counts are complete.
            while self.receive_all() > 0 && self.error.is_none() {}
            self.done = true;
            return self.buffered.pop_front().map(Input::Packet);
        }
        if self.receive_all() == 0 && !self.spin() {
            if let Err(e) = XskReceiver::wait_any(&self.sockets, self.idle_wait) {
                self.error.get_or_insert(e);
            }
            return Some(Input::Idle);
        }
        self.buffered.pop_front().map(Input::Packet)
    }
}
