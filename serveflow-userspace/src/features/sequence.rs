//! The packet sequence (`seq`): per packet of the first N, its size signed by direction (+
//! from the initiator, - from the responder) and the time since the previous packet (ms).
//! The classic early-flow representation (FlowPic, k-NN over the first packets); here the
//! input of the k-NN baseline and a feature set the crafting search can take.

use crate::flow::Direction;

/// Column names for `packets` packets, in value order.
pub fn names(packets: usize, out: &mut Vec<String>) {
    for i in 0..packets {
        out.push(format!("sq{i}_size"));
        out.push(format!("sq{i}_iat_ms"));
    }
}

/// Sizes and gaps of the packets seen so far.
#[derive(Clone, Debug, Default)]
pub struct Sequence {
    /// (signed size, ms since the previous packet) per packet.
    steps: Vec<(f32, f32)>,
    last_ts_ns: u64,
}

impl Sequence {
    /// Adds a packet of `size` bytes at `ts_ns` (the caller stops at the stage's count).
    pub fn update(&mut self, ts_ns: u64, size: usize, dir: Direction) {
        let signed = match dir {
            Direction::Forward => size as f32,
            Direction::Backward => -(size as f32),
        };
        let gap = if self.steps.is_empty() {
            0.0
        } else {
            ts_ns.saturating_sub(self.last_ts_ns) as f32 / 1e6
        };
        self.steps.push((signed, gap));
        self.last_ts_ns = ts_ns;
    }

    /// Appends `2 * packets` values; packets the flow did not have are 0 in size and -1 in
    /// time.
    pub fn values(&self, packets: usize, out: &mut Vec<f32>) {
        for i in 0..packets {
            let (size, gap) = self.steps.get(i).copied().unwrap_or((0.0, -1.0));
            out.extend_from_slice(&[size, gap]);
        }
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.steps.capacity() * std::mem::size_of::<(f32, f32)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_sizes_and_gaps() {
        let mut s = Sequence::default();
        s.update(1_000_000, 60, Direction::Forward);
        s.update(3_500_000, 1500, Direction::Backward);
        let mut v = Vec::new();
        s.values(3, &mut v);
        assert_eq!(v, [60.0, 0.0, -1500.0, 2.5, 0.0, -1.0]);
    }
}
