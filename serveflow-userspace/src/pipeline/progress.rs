//! Running totals the pipeline publishes while it serves, for the live metrics and status
//! lines. Workers add their deltas every batch and on each idle tick (one atomic add per field
//! per batch, never per packet); pool threads store the queue depth after each batch they take.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The shared totals; all counters except `slow_queue_depth`, which is a gauge.
#[derive(Debug, Default)]
pub struct Progress {
    /// Frames the workers handled.
    pub packets: AtomicU64,
    /// Frames the parser skipped (not TCP/UDP, malformed, truncated).
    pub skipped: AtomicU64,
    /// Frames of flows that already had their verdict (with steering, only the ones that
    /// crossed the kernel's verdict-map update).
    pub packets_after_verdict: AtomicU64,
    /// Flows that entered the flow tables.
    pub flows: AtomicU64,
    /// Flows pushed out of a full flow table (decided at once with what they had).
    pub flows_evicted: AtomicU64,
    /// Flows handed to the slow pool.
    pub escalated: AtomicU64,
    /// Escalated flows that fell back to their fast answer (queue full or pool stopped).
    pub fallbacks: AtomicU64,
    /// Jobs waiting in the slow pool's queue.
    pub slow_queue_depth: AtomicU64,
}

/// A worker's counts as last published, to publish only the difference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// See [`Progress`].
    pub packets: u64,
    /// See [`Progress`].
    pub skipped: u64,
    /// See [`Progress`].
    pub packets_after_verdict: u64,
    /// See [`Progress`].
    pub flows: u64,
    /// See [`Progress`].
    pub flows_evicted: u64,
    /// See [`Progress`].
    pub escalated: u64,
    /// See [`Progress`].
    pub fallbacks: u64,
}

impl Progress {
    /// Adds what changed between `last` and `now`, and remembers `now`.
    pub fn publish(&self, last: &mut Published, now: Published) {
        for (total, new, old) in [
            (&self.packets, now.packets, last.packets),
            (&self.skipped, now.skipped, last.skipped),
            (
                &self.packets_after_verdict,
                now.packets_after_verdict,
                last.packets_after_verdict,
            ),
            (&self.flows, now.flows, last.flows),
            (&self.flows_evicted, now.flows_evicted, last.flows_evicted),
            (&self.escalated, now.escalated, last.escalated),
            (&self.fallbacks, now.fallbacks, last.fallbacks),
        ] {
            if new > old {
                total.fetch_add(new - old, Relaxed);
            }
        }
        *last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishing_twice_adds_only_the_difference() {
        let p = Progress::default();
        let mut last = Published::default();
        let mut now = Published {
            packets: 10,
            flows: 2,
            ..Published::default()
        };
        p.publish(&mut last, now);
        now.packets = 15;
        now.escalated = 1;
        p.publish(&mut last, now);
        p.publish(&mut last, now);
        assert_eq!(p.packets.load(Relaxed), 15);
        assert_eq!(p.flows.load(Relaxed), 2);
        assert_eq!(p.escalated.load(Relaxed), 1);
    }
}
