//! Amplified replay for service-rate benchmarks: loops over packets held in memory and makes
//! every loop's flows new ones by rewriting addresses, as `tcpreplay --unique-ip` does.
//!
//! Loop `k` XORs `k` into the second and third bytes of IPv4 addresses (bytes 4-5 of IPv6
//! ones), the same on source and destination, so both directions of a flow still meet and
//! loops never collide (up to 65,536 loops). Timestamps are laid out evenly, `gap_ns` apart,
//! so time always moves forward whatever the source captures' own clocks did.

use std::collections::HashMap;

use crate::{
    frame::{pool, CapturedPacket},
    parse::{self, IpVersion},
};

/// The iterator.
#[derive(Debug)]
pub struct Amplified<'a> {
    packets: &'a [CapturedPacket],
    loops: u32,
    /// A last, partial loop: the packets of the first flows only.
    tail: Vec<CapturedPacket>,
    /// Distinct flows of one loop, and how many of them the partial loop has.
    base_flows: u64,
    rest: u64,
    next: usize,
    round: u32,
    gap_ns: u64,
    emitted: u64,
    base_ns: u64,
}

impl<'a> Amplified<'a> {
    /// `loops` passes over `packets` (at most 65,536), `gap_ns` apart.
    pub fn new(packets: &'a [CapturedPacket], loops: u32, gap_ns: u64) -> Self {
        Amplified {
            packets,
            loops: loops.min(1 << 16),
            tail: Vec::new(),
            base_flows: 0,
            rest: 0,
            next: 0,
            round: 0,
            gap_ns,
            emitted: 0,
            base_ns: 1_700_000_000_000_000_000,
        }
    }
}

impl<'a> Amplified<'a> {
    /// Exactly `flows` distinct flows (at most 65,536 loops' worth): whole loops over
    /// `packets`, then a partial loop over the packets of its first flows, in the order they
    /// first appear. Frames that belong to no flow go only with the whole loops.
    pub fn with_flows(packets: &'a [CapturedPacket], flows: u64, gap_ns: u64) -> Self {
        let mut order: HashMap<_, u64> = HashMap::new();
        let index: Vec<Option<u64>> = packets
            .iter()
            .map(|p| {
                let key = parse::parse_link(p.link, &p.data).ok()?.flow_key().0;
                let next = order.len() as u64;
                Some(*order.entry(key).or_insert(next))
            })
            .collect();
        let base = order.len() as u64;
        if base == 0 {
            return Amplified::new(packets, 0, gap_ns);
        }
        let most = 1u64 << 16;
        let (loops, rest) = match flows / base {
            l if l >= most => (most, 0),
            l => (l, flows % base),
        };
        let mut a = Amplified::new(packets, loops as u32, gap_ns);
        (a.base_flows, a.rest) = (base, rest);
        a.tail = packets
            .iter()
            .zip(&index)
            .filter(|(_, i)| i.is_some_and(|i| i < rest))
            .map(|(p, _)| p.clone())
            .collect();
        a
    }

    /// What [`Self::with_flows`] laid out: distinct flows per loop, whole loops, and the
    /// flows of the partial loop.
    pub fn plan(&self) -> (u64, u32, u64) {
        (self.base_flows, self.loops, self.rest)
    }
}

/// Rewrites the addresses of `frame` for loop `round` (no-op for frames the parser skips).
pub fn rewrite(frame: &mut [u8], link: crate::frame::LinkType, round: u32) {
    let (l3, v6) = match parse::parse_link(link, frame) {
        Ok(p) => (p.l3, p.ip == IpVersion::V6),
        Err(_) => return,
    };
    let [hi, lo] = (round as u16).to_be_bytes();
    let offsets: [usize; 2] = if v6 {
        [l3 + 8 + 4, l3 + 24 + 4]
    } else {
        [l3 + 12 + 1, l3 + 16 + 1]
    };
    for o in offsets {
        if let Some(b) = frame.get_mut(o..o + 2) {
            b[0] ^= hi;
            b[1] ^= lo;
        }
    }
}

impl Iterator for Amplified<'_> {
    type Item = CapturedPacket;

    fn next(&mut self) -> Option<CapturedPacket> {
        let packets = match self.round {
            r if r < self.loops => self.packets,
            r if r == self.loops => self.tail.as_slice(),
            _ => return None,
        };
        if packets.is_empty() {
            return None;
        }
        let src = &packets[self.next];
        let mut data = pool::copy_of(&src.data);
        rewrite(&mut data, src.link, self.round);
        let p = CapturedPacket {
            ts_ns: self.base_ns + self.emitted * self.gap_ns,
            link: src.link,
            data: data.into(),
            file: src.file,
        };
        self.emitted += 1;
        self.next += 1;
        if self.next == packets.len() {
            self.next = 0;
            self.round += 1;
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;
    use crate::capture::synthetic::tcp_flows;
    use std::collections::HashSet;

    #[test]
    fn every_loop_makes_new_flows_and_keeps_directions_together() {
        let base = tcp_flows(10, 4);
        let out: Vec<_> = Amplified::new(&base, 3, 1000).collect();
        assert_eq!(out.len(), base.len() * 3);
        assert!(out.windows(2).all(|w| w[1].ts_ns == w[0].ts_ns + 1000));
        let keys: HashSet<_> = out
            .iter()
            .map(|p| parse::parse_link(p.link, &p.data).unwrap().flow_key().0)
            .collect();
        let base_keys: HashSet<_> = base
            .iter()
            .map(|p| parse::parse_link(p.link, &p.data).unwrap().flow_key().0)
            .collect();
        assert_eq!(keys.len(), base_keys.len() * 3);
        // Loop 0 is the input itself.
        assert!(base_keys.is_subset(&keys));
    }

    #[test]
    fn asked_for_flows_are_the_flows_it_makes() {
        let base = tcp_flows(10, 4);
        let keys = |a: Amplified<'_>| -> usize {
            a.map(|p| parse::parse_link(p.link, &p.data).unwrap().flow_key().0)
                .collect::<HashSet<_>>()
                .len()
        };
        for flows in [1, 7, 10, 23, 30] {
            assert_eq!(keys(Amplified::with_flows(&base, flows, 1)), flows as usize);
        }
        assert_eq!(Amplified::with_flows(&base, 23, 1).plan(), (10, 2, 3));
        assert_eq!(Amplified::with_flows(&[], 5, 1).count(), 0);
    }
}
