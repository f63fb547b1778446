//! First payload bytes (`bytes:N`): the first N bytes of the initiator's first payload and of
//! the responder's first payload, as numbers 0-255 (-1 past a payload's end or where a side
//! sent none within the stage's packets). Protocol magic (TLS record types and versions, DNS
//! flags, HTTP methods, SSH banners) sits there; a tree reads it in a few splits, where the
//! same bytes as nPrint bits cost eight inputs each.

use crate::flow::Direction;

/// Most bytes per direction a spec may ask for.
pub const MAX_BYTES: usize = 64;

/// Column names for `n` bytes per direction, in value order.
pub fn names(n: usize, out: &mut Vec<String>) {
    out.extend((0..n).map(|i| format!("by_fwd_{i}")));
    out.extend((0..n).map(|i| format!("by_bwd_{i}")));
}

/// The first payload bytes seen in each direction.
#[derive(Clone, Debug, Default)]
pub struct PayloadBytes {
    fwd: Option<Vec<u8>>,
    bwd: Option<Vec<u8>>,
}

impl PayloadBytes {
    /// Takes up to `n` bytes of `payload` if it is the first non-empty one of its direction.
    pub fn update(&mut self, n: usize, payload: &[u8], dir: Direction) {
        if payload.is_empty() {
            return;
        }
        let slot = match dir {
            Direction::Forward => &mut self.fwd,
            Direction::Backward => &mut self.bwd,
        };
        if slot.is_none() {
            *slot = Some(payload[..payload.len().min(n)].to_vec());
        }
    }

    /// Appends `2n` values: initiator bytes, then responder bytes.
    pub fn values(&self, n: usize, out: &mut Vec<f32>) {
        for side in [&self.fwd, &self.bwd] {
            let bytes = side.as_deref().unwrap_or(&[]);
            out.extend((0..n).map(|i| bytes.get(i).map_or(-1.0, |b| f32::from(*b))));
        }
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        [&self.fwd, &self.bwd]
            .iter()
            .map(|s| s.as_ref().map_or(0, Vec::capacity))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_payload_of_each_side_padded_with_minus_one() {
        let mut p = PayloadBytes::default();
        p.update(4, b"", Direction::Forward);
        p.update(4, b"GET /", Direction::Forward);
        p.update(4, b"POST", Direction::Forward);
        p.update(4, b"HT", Direction::Backward);
        let mut v = Vec::new();
        p.values(4, &mut v);
        assert_eq!(v, [71.0, 69.0, 84.0, 32.0, 72.0, 84.0, -1.0, -1.0]);
        let mut names_out = Vec::new();
        names(4, &mut names_out);
        assert_eq!(names_out.len(), v.len());
        let mut none = Vec::new();
        PayloadBytes::default().values(2, &mut none);
        assert_eq!(none, [-1.0; 4]);
    }
}
