//! The live session's one control loop, on its own thread beside the data path: it answers
//! metrics scrapes, watches the interface and prints the status lines, each on its own period,
//! until the run ends. A link that goes down is reported and served again when it comes back
//! (the program and sockets stay in place); an interface that disappears stops the run,
//! because the kernel has detached the program and unbound the sockets with it.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::metrics::{LiveMetrics, MetricsEndpoint};
use crate::system::{self, Interface, LinkState};

/// How often the loop wakes: the longest a scrape waits for an answer.
const TICK: Duration = Duration::from_millis(50);
/// How often the interface's state is checked.
const LINK_POLL: Duration = Duration::from_millis(200);

/// What the control loop looks after.
#[derive(Debug)]
pub struct ControlConfig {
    /// The interface served.
    pub iface: Interface,
    /// The metrics endpoint, when one is bound.
    pub endpoint: Option<MetricsEndpoint>,
    /// Between status lines on stderr (None: none).
    pub status_every: Option<Duration>,
}

/// The running control loop; [`Control::finish`] stops and joins it.
#[derive(Debug)]
pub struct Control {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Control {
    /// Starts the loop; it sets `stop` when the interface disappears.
    pub fn start(
        config: ControlConfig,
        metrics: Arc<LiveMetrics>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<Control> {
        let done = Arc::new(AtomicBool::new(false));
        let until = Arc::clone(&done);
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || control_loop(&config, &metrics, &stop, &until))?;
        Ok(Control {
            done,
            thread: Some(thread),
        })
    }

    /// Stops the loop and waits for it.
    pub fn finish(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.done.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::warn!("the control loop panicked");
            }
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn control_loop(c: &ControlConfig, metrics: &LiveMetrics, stop: &AtomicBool, done: &AtomicBool) {
    let mut link = LinkWatch::default();
    let start = Instant::now();
    let (mut next_link, mut next_status) = (start, c.status_every.map(|e| start + e));
    while !done.load(Relaxed) {
        if let Some(endpoint) = &c.endpoint {
            endpoint.answer_pending(metrics);
        }
        let now = Instant::now();
        if now >= next_link {
            next_link = now + LINK_POLL;
            let event = link.observe(system::link_state(&c.iface), now, metrics);
            if let Some(line) = event.line(&c.iface.name) {
                eprintln!("serveflow: {line}");
            }
            if event == LinkEvent::Gone {
                stop.store(true, Relaxed);
                return;
            }
        }
        if let (Some(due), Some(every)) = (next_status, c.status_every) {
            if now >= due {
                next_status = Some(due + every);
                eprintln!("serveflow: status: {}", status_line(metrics));
            }
        }
        std::thread::sleep(TICK);
    }
}

/// What a link check found that is worth saying.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LinkEvent {
    /// Nothing changed.
    None,
    /// The link went down.
    Down,
    /// It came back after this long (s).
    Up(f64),
    /// The interface disappeared.
    Gone,
}

impl LinkEvent {
    /// The status line for the event, if any.
    pub fn line(self, iface: &str) -> Option<String> {
        match self {
            LinkEvent::None => None,
            LinkEvent::Down => Some(format!(
                "{iface} went down; XDP and the sockets stay in place until it comes back"
            )),
            LinkEvent::Up(s) => Some(format!("{iface} is up again after {s:.1} s; serving")),
            LinkEvent::Gone => Some(format!("{iface} disappeared; stopping")),
        }
    }
}

/// The link's state between checks, kept in the metrics' gauges.
#[derive(Debug, Default)]
pub struct LinkWatch {
    down_since: Option<Instant>,
}

impl LinkWatch {
    /// Takes one check's answer at `now`.
    pub fn observe(&mut self, state: LinkState, now: Instant, metrics: &LiveMetrics) -> LinkEvent {
        match state {
            LinkState::Up => match self.down_since.take() {
                Some(t) => {
                    metrics.link_up.store(1, Relaxed);
                    LinkEvent::Up(now.duration_since(t).as_secs_f64())
                }
                None => LinkEvent::None,
            },
            LinkState::Down if self.down_since.is_none() => {
                self.down_since = Some(now);
                metrics.link_up.store(0, Relaxed);
                metrics.link_down_events.fetch_add(1, Relaxed);
                LinkEvent::Down
            }
            LinkState::Down => LinkEvent::None,
            LinkState::Gone => {
                metrics.link_up.store(0, Relaxed);
                LinkEvent::Gone
            }
        }
    }
}

/// One status line: packets, drops, flows, escalations, verdicts, and the kernel's counters
/// from the pinned maps.
pub fn status_line(metrics: &LiveMetrics) -> String {
    let [fast, slow, fallback] = metrics.verdicts_by_stage();
    let p = &metrics.progress;
    let drops: u64 = metrics
        .queues
        .iter()
        .flat_map(|q| q.drops[..3].iter())
        .map(|d| d.load(Relaxed))
        .sum();
    let kernel = crate::xdp::pinned::read(&metrics.pins)
        .map(|s| {
            let c = |n: &str| s.counters.get(n).copied().unwrap_or(0);
            format!(
                "; kernel: {} packets, {} redirected, {} passed decided/enough",
                c("packets"),
                c("redirected"),
                c("pass_decided") + c("pass_enough_packets")
            )
        })
        .unwrap_or_default();
    format!(
        "{} packets received, {drops} socket drops; {} flows, {} escalated, slow queue {}; verdicts fast {fast} slow {slow} fallback {fallback}{kernel}",
        metrics.received_packets.load(Relaxed),
        p.flows.load(Relaxed),
        p.escalated.load(Relaxed),
        p.slow_queue_depth.load(Relaxed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_link_that_flaps_is_counted_once_per_outage_and_gone_stops() {
        let m = LiveMetrics::new(
            vec!["a".into()],
            1,
            PathBuf::from("/nonexistent"),
            Vec::new(),
        );
        let mut w = LinkWatch::default();
        let t0 = Instant::now();
        assert_eq!(w.observe(LinkState::Up, t0, &m), LinkEvent::None);
        assert_eq!(w.observe(LinkState::Down, t0, &m), LinkEvent::Down);
        assert_eq!(w.observe(LinkState::Down, t0, &m), LinkEvent::None);
        assert_eq!(m.link_up.load(Relaxed), 0);
        let back = w.observe(LinkState::Up, t0 + Duration::from_millis(1500), &m);
        assert_eq!(back, LinkEvent::Up(1.5));
        assert_eq!(m.link_up.load(Relaxed), 1);
        assert_eq!(m.link_down_events.load(Relaxed), 1);
        assert_eq!(w.observe(LinkState::Gone, t0, &m), LinkEvent::Gone);
        assert_eq!(
            LinkEvent::Up(1.5).line("eth0").as_deref(),
            Some("eth0 is up again after 1.5 s; serving")
        );
        assert!(status_line(&m).starts_with("0 packets received, 0 socket drops; 0 flows"));
    }
}
