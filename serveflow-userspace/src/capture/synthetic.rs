//! Generated traffic for benchmarks where the real captures are absent: TCP/IPv4 flows with
//! a handshake, requests and responses, distinct 5-tuples, 1 ms between packets of a flow.
//!
//! The test bed (`tests/src/frames.rs`) builds its frames through etherparse on purpose, so
//! the parser is checked against an independent implementation, with valid checksums for the
//! kernel; these are for the library's own benches and unit tests, which must not depend on
//! the test bed (it depends on this library).

use crate::frame::{CapturedPacket, LinkType};

/// Builds an Ethernet/IPv4/TCP frame (checksums left zero: nothing here checks them).
pub fn tcp_frame(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    flags: u8,
    payload: usize,
) -> Vec<u8> {
    let total = 20 + 20 + payload;
    let mut f = Vec::with_capacity(14 + total);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00]);
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    f.resize(14 + total, 0x61);
    f
}

/// `flows` interleaved flows of `packets` packets each (client and server alternating).
pub fn tcp_flows(flows: u32, packets: u32) -> Vec<CapturedPacket> {
    let mut out = Vec::with_capacity((flows * packets) as usize);
    for p in 0..packets {
        for i in 0..flows {
            let client = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8];
            let server = [192, 0, 2, (i % 7) as u8 + 1];
            let sport = 1024 + (i % 60_000) as u16;
            let (flags, payload) = match p {
                0 => (0x02, 0),
                1 => (0x12, 0),
                _ => (0x18, 100 + (p as usize * 37) % 1200),
            };
            let data = if p % 2 == 0 {
                tcp_frame(client, sport, server, 443, flags, payload)
            } else {
                tcp_frame(server, 443, client, sport, flags, payload)
            };
            out.push(CapturedPacket {
                ts_ns: 1_700_000_000_000_000_000 + u64::from(p) * 1_000_000 + u64::from(i) * 10,
                link: LinkType::Ethernet,
                data: data.into(),
                file: 0,
            });
        }
    }
    out
}
