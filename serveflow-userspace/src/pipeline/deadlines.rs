//! Flows waiting for a stage's packets, earliest deadline first.
//!
//! A deadline is a flow's first-packet time plus one of two fixed waits (the inline stages'
//! or the slow stage's), so on a monotonic clock each wait's deadlines are pushed in order: a
//! FIFO lane per wait makes push and pop O(1) over sequential memory, where one heap of every
//! waiting flow cost a cache-missing sift per flow (measured: 5-7% of a live worker's time at
//! 50k new flows/s). Deadlines pushed out of order (capture timestamps are not always sorted)
//! go to a small heap. The earliest is the least of the two lane heads and the heap's top, so
//! the order is exact either way.

use std::{cmp::Reverse, collections::BinaryHeap, collections::VecDeque};

/// Which wait a deadline belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Waiting for an inline stage's packets.
    Inline = 0,
    /// Waiting for the slow stage's packets.
    Slow = 1,
}

/// Entries ordered by their `Ord` (deadline first).
#[derive(Debug)]
pub struct Deadlines<T> {
    lanes: [VecDeque<T>; 2],
    late: BinaryHeap<Reverse<T>>,
}

impl<T> Default for Deadlines<T> {
    fn default() -> Self {
        Deadlines {
            lanes: [VecDeque::new(), VecDeque::new()],
            late: BinaryHeap::new(),
        }
    }
}

impl<T: Ord> Deadlines<T> {
    /// Adds an entry to `lane` (or to the heap if it is earlier than the lane's last).
    pub fn push(&mut self, lane: Lane, entry: T) {
        let q = &mut self.lanes[lane as usize];
        if q.back().is_some_and(|last| entry < *last) {
            self.late.push(Reverse(entry));
        } else {
            q.push_back(entry);
        }
    }

    /// Where the earliest entry is: 0 or 1 for a lane, 2 for the heap.
    fn earliest(&self) -> Option<(usize, &T)> {
        let candidates = [
            self.lanes[0].front(),
            self.lanes[1].front(),
            self.late.peek().map(|r| &r.0),
        ];
        candidates
            .into_iter()
            .enumerate()
            .filter_map(|(i, e)| Some((i, e?)))
            .min_by(|a, b| a.1.cmp(b.1))
    }

    /// The earliest entry.
    pub fn peek(&self) -> Option<&T> {
        self.earliest().map(|(_, e)| e)
    }

    /// Removes and returns the earliest entry.
    pub fn pop(&mut self) -> Option<T> {
        match self.earliest()?.0 {
            2 => self.late.pop().map(|r| r.0),
            lane => self.lanes[lane].pop_front(),
        }
    }

    /// Entries held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lanes[0].len() + self.lanes[1].len() + self.late.len()
    }

    /// Whether no entry is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_order_whatever_the_push_order() {
        let mut d = Deadlines::default();
        // Two in-order lanes interleaved, plus stragglers pushed behind their lane's last.
        let pushes = [
            (Lane::Inline, 10),
            (Lane::Slow, 100),
            (Lane::Inline, 20),
            (Lane::Slow, 110),
            (Lane::Inline, 15),
            (Lane::Slow, 5),
            (Lane::Inline, 30),
            (Lane::Slow, 110),
        ];
        for (lane, v) in pushes {
            d.push(lane, v);
        }
        assert_eq!(d.len(), pushes.len());
        assert_eq!(d.peek(), Some(&5));
        let mut popped = Vec::new();
        while let Some(v) = d.pop() {
            popped.push(v);
        }
        let mut sorted: Vec<i32> = pushes.iter().map(|p| p.1).collect();
        sorted.sort_unstable();
        assert_eq!(popped, sorted);
        assert!(d.is_empty());
    }

    #[test]
    fn agrees_with_a_heap_on_pseudo_random_input() {
        let mut d = Deadlines::default();
        let mut heap = BinaryHeap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut t = 0u64;
        for i in 0..10_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly increasing time, sometimes a step back.
            t = if x.is_multiple_of(10) {
                t.saturating_sub(x % 50)
            } else {
                t + x % 5
            };
            let lane = if x.is_multiple_of(3) {
                Lane::Slow
            } else {
                Lane::Inline
            };
            let deadline = t + if lane == Lane::Slow { 1000 } else { 15 };
            d.push(lane, (deadline, i));
            heap.push(Reverse((deadline, i)));
            // Pop a few now and then, as run_deadlines does.
            if x.is_multiple_of(7) {
                assert_eq!(d.pop(), heap.pop().map(|r| r.0));
            }
        }
        while let Some(Reverse(e)) = heap.pop() {
            assert_eq!(d.pop(), Some(e));
        }
        assert_eq!(d.pop(), None);
    }
}
