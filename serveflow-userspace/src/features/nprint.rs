//! nPrint header bits: every bit of a packet's headers as 1 or 0, and -1 where the header or
//! the field is absent, at fixed positions so every packet has the same layout.
//!
//! Per packet, in this order (ServeFlow's 1024 bits, plus optional sections):
//!
//! | section | bits | contents |
//! |---|---|---|
//! | IPv4 | 480 | 20-byte header + 40 bytes of options; options not present are -1 |
//! | TCP | 480 | 20-byte header + 40 bytes of options; options not present are -1 |
//! | UDP | 64 | 8-byte header |
//! | IPv6 (optional) | 320 | 40-byte fixed header |
//! | payload (optional) | 8 per byte | first bytes of the L4 payload; -1 beyond its end |
//!
//! Bits are taken most significant first within each byte, so a field's bits appear in the
//! order they are written in its RFC diagram. A header that is absent (IPv4 for an IPv6
//! packet, TCP for UDP, ...) is all -1. A packet missing from a flow shorter than N packets is
//! all -1 too.

use crate::parse::IpVersion;

use super::headers::{HeaderSnapshot, IPV4_MAX, IPV6_LEN, TCP_MAX, UDP_LEN};

/// What to encode besides the 1024 default bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NprintOptions {
    /// Add the 320-bit IPv6 section.
    pub ipv6: bool,
    /// Add this many payload bytes (8 bits each).
    pub payload_bytes: usize,
    /// Write addresses and checksums as 0: they name hosts, not traffic, and a model that
    /// learns them memorises a capture's hosts instead of its applications or devices.
    pub masked: bool,
}

impl NprintOptions {
    /// Values per packet.
    pub fn bits_per_packet(&self) -> usize {
        (IPV4_MAX + TCP_MAX + UDP_LEN) * 8
            + if self.ipv6 { IPV6_LEN * 8 } else { 0 }
            + self.payload_bytes * 8
    }

    /// Column names for one packet, `p{index}_` prefixed, nprint-style field names.
    pub fn names(&self, index: usize, out: &mut Vec<String>) {
        let mut push = |section: &str, fields: &[(&str, usize)]| {
            for (field, bits) in fields {
                for b in 0..*bits {
                    out.push(format!("p{index}_{section}_{field}_{b}"));
                }
            }
        };
        push("ipv4", IPV4_FIELDS);
        push("tcp", TCP_FIELDS);
        push("udp", UDP_FIELDS);
        if self.ipv6 {
            push("ipv6", IPV6_FIELDS);
        }
        if self.payload_bytes > 0 {
            push("payload", &[("bit", self.payload_bytes * 8)]);
        }
    }
}

/// nprint's IPv4 field names and widths (sum 480).
const IPV4_FIELDS: &[(&str, usize)] = &[
    ("ver", 4),
    ("hl", 4),
    ("tos", 8),
    ("tl", 16),
    ("id", 16),
    ("rbit", 1),
    ("dfbit", 1),
    ("mfbit", 1),
    ("foff", 13),
    ("ttl", 8),
    ("proto", 8),
    ("cksum", 16),
    ("src", 32),
    ("dst", 32),
    ("opt", 320),
];
/// nprint's TCP field names and widths (sum 480).
const TCP_FIELDS: &[(&str, usize)] = &[
    ("sprt", 16),
    ("dprt", 16),
    ("seq", 32),
    ("ackn", 32),
    ("doff", 4),
    ("res", 3),
    ("ns", 1),
    ("cwr", 1),
    ("ece", 1),
    ("urg", 1),
    ("ackf", 1),
    ("psh", 1),
    ("rst", 1),
    ("syn", 1),
    ("fin", 1),
    ("wsize", 16),
    ("cksum", 16),
    ("urp", 16),
    ("opt", 320),
];
/// nprint's UDP field names and widths (sum 64).
const UDP_FIELDS: &[(&str, usize)] = &[("sport", 16), ("dport", 16), ("len", 16), ("cksum", 16)];
/// IPv6 fixed header fields (sum 320).
const IPV6_FIELDS: &[(&str, usize)] = &[
    ("ver", 4),
    ("tc", 8),
    ("fl", 20),
    ("len", 16),
    ("nh", 8),
    ("hl", 8),
    ("src", 128),
    ("dst", 128),
];

/// A type nPrint values are written as: 1, 0, and -1 where a header (or its part) is absent.
/// `i8` for compact tables, `f32` for model rows, written directly without a second pass.
pub trait BitValue: Copy {
    /// A set bit.
    const ONE: Self;
    /// A clear (or masked) bit.
    const ZERO: Self;
    /// A bit the packet does not have.
    const ABSENT: Self;
}

impl BitValue for i8 {
    const ONE: Self = 1;
    const ZERO: Self = 0;
    const ABSENT: Self = -1;
}

impl BitValue for f32 {
    const ONE: Self = 1.0;
    const ZERO: Self = 0.0;
    const ABSENT: Self = -1.0;
}

/// Appends `bytes` as bits (MSB first), then -1 up to `width` bytes.
fn push_bits<T: BitValue>(bytes: &[u8], width: usize, out: &mut Vec<T>) {
    let present = bytes.len().min(width);
    out.reserve(width * 8);
    for &byte in &bytes[..present] {
        // A fixed-length map: extend reserves once and writes without per-bit checks.
        out.extend((0..8).rev().map(|shift| {
            if (byte >> shift) & 1 == 1 {
                T::ONE
            } else {
                T::ZERO
            }
        }));
    }
    out.resize(out.len() + (width - present) * 8, T::ABSENT);
}

fn push_absent<T: BitValue>(width: usize, out: &mut Vec<T>) {
    out.resize(out.len() + width * 8, T::ABSENT);
}

/// Bit ranges that `masked` zeroes, relative to their section: IPv4 checksum, source and
/// destination; TCP checksum; UDP checksum; IPv6 source and destination.
/// `(first bit, end bit)` pairs.
const IPV4_MASKED: &[(usize, usize)] = &[(80, 96), (96, 160)];
const TCP_MASKED: &[(usize, usize)] = &[(128, 144)];
const UDP_MASKED: &[(usize, usize)] = &[(48, 64)];
const IPV6_MASKED: &[(usize, usize)] = &[(64, 320)];

/// Appends `bytes` as bits like [`push_bits`], zeroing the present bits in `masked`.
fn push_section<T: BitValue>(
    bytes: &[u8],
    width: usize,
    masked: Option<&[(usize, usize)]>,
    out: &mut Vec<T>,
) {
    let start = out.len();
    push_bits(bytes, width, out);
    for (first, last) in masked.unwrap_or_default() {
        let end = (start + last).min(start + bytes.len().min(width) * 8);
        for bit in out.get_mut(start + first..end).unwrap_or_default() {
            *bit = T::ZERO;
        }
    }
}

/// Appends one packet's values (or all -1 for `None`, a packet the flow never had).
pub fn encode_packet<T: BitValue>(
    snap: Option<&HeaderSnapshot>,
    opts: NprintOptions,
    out: &mut Vec<T>,
) {
    let Some(s) = snap else {
        out.resize(out.len() + opts.bits_per_packet(), T::ABSENT);
        return;
    };
    let mask = |ranges: &'static [(usize, usize)]| opts.masked.then_some(ranges);
    match s.ip {
        IpVersion::V4 => push_section(&s.ip_header, IPV4_MAX, mask(IPV4_MASKED), out),
        IpVersion::V6 => push_absent(IPV4_MAX, out),
    }
    if s.proto == serveflow_common::proto::TCP {
        push_section(&s.l4_header, TCP_MAX, mask(TCP_MASKED), out);
        push_absent(UDP_LEN, out);
    } else {
        push_absent(TCP_MAX, out);
        push_section(&s.l4_header, UDP_LEN, mask(UDP_MASKED), out);
    }
    if opts.ipv6 {
        match s.ip {
            IpVersion::V6 => push_section(&s.ip_header, IPV6_LEN, mask(IPV6_MASKED), out),
            IpVersion::V4 => push_absent(IPV6_LEN, out),
        }
    }
    if opts.payload_bytes > 0 {
        push_bits(&s.payload, opts.payload_bytes, out);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;
    use crate::parse::parse_ethernet;

    fn bits(s: &str) -> Vec<i8> {
        s.chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| if c == '1' { 1 } else { 0 })
            .collect()
    }

    /// A hand-written TCP SYN: IPv4 with one 4-byte option (NOP NOP NOP EOL), TCP with a
    /// 4-byte MSS option. Every expected bit below is worked out by hand from the bytes.
    #[test]
    fn tcp_syn_with_options_is_bit_exact() {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&[
            0x46, 0x00, 0x00, 0x30, // ver 4, ihl 6, tos 0, total length 48
            0x12, 0x34, 0x40, 0x00, // id 0x1234, DF, offset 0
            0x40, 0x06, 0xab, 0xcd, // ttl 64, proto 6, checksum
            0x0a, 0x00, 0x00, 0x01, // src 10.0.0.1
            0xc0, 0xa8, 0x01, 0x02, // dst 192.168.1.2
            0x01, 0x01, 0x01, 0x00, // options: NOP NOP NOP EOL
        ]);
        frame.extend_from_slice(&[
            0x30, 0x39, 0x01, 0xbb, // sport 12345, dport 443
            0x00, 0x00, 0x00, 0x01, // seq 1
            0x00, 0x00, 0x00, 0x00, // ack 0
            0x60, 0x02, 0xff, 0xff, // doff 6, SYN, window 65535
            0x00, 0x00, 0x00, 0x00, // checksum, urgent
            0x02, 0x04, 0x05, 0xb4, // MSS 1460
        ]);
        let p = parse_ethernet(&frame).unwrap();
        let snap = HeaderSnapshot::new(&p, 0);
        let mut out = Vec::<i8>::new();
        encode_packet(Some(&snap), NprintOptions::default(), &mut out);
        assert_eq!(out.len(), 1024);

        let (ipv4, rest) = out.split_at(480);
        let (tcp, udp) = rest.split_at(480);
        // ver=0100 hl=0110 tos=00000000 tl=0000000000110000
        assert_eq!(
            &ipv4[..32],
            bits("0100 0110 00000000 0000000000110000").as_slice()
        );
        // id=0x1234, rbit 0, df 1, mf 0, foff 0
        assert_eq!(
            &ipv4[32..64],
            bits("0001001000110100 0 1 0 0000000000000").as_slice()
        );
        // ttl 64, proto 6
        assert_eq!(&ipv4[64..80], bits("01000000 00000110").as_slice());
        // src 10.0.0.1
        assert_eq!(
            &ipv4[96..128],
            bits("00001010 00000000 00000000 00000001").as_slice()
        );
        // 4 option bytes, then 36 absent bytes of options
        assert_eq!(
            &ipv4[160..192],
            bits("00000001 00000001 00000001 00000000").as_slice()
        );
        assert!(ipv4[192..].iter().all(|b| *b == -1));
        // sport 12345 = 0011000000111001, dport 443 = 0000000110111011
        assert_eq!(
            &tcp[..32],
            bits("0011000000111001 0000000110111011").as_slice()
        );
        // doff 0110, res 000, ns 0, cwr ece urg ack psh rst syn fin = 0000 0010
        assert_eq!(&tcp[96..112], bits("0110 000 0 0 0 0 0 0 0 1 0").as_slice());
        // MSS option, then -1
        assert_eq!(
            &tcp[160..192],
            bits("00000010 00000100 00000101 10110100").as_slice()
        );
        assert!(tcp[192..].iter().all(|b| *b == -1));
        // No UDP header.
        assert!(udp.iter().all(|b| *b == -1));
    }

    #[test]
    fn udp_over_ipv6_and_missing_packets() {
        let builder = etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv6([1; 16], [2; 16], 7)
            .udp(53, 1000);
        let mut frame = Vec::new();
        builder.write(&mut frame, b"abc").unwrap();
        let p = parse_ethernet(&frame).unwrap();
        let snap = HeaderSnapshot::new(&p, 2);
        let opts = NprintOptions {
            ipv6: true,
            payload_bytes: 4,
            masked: false,
        };
        let mut out = Vec::<i8>::new();
        encode_packet(Some(&snap), opts, &mut out);
        encode_packet(None, opts, &mut out);
        assert_eq!(out.len(), 2 * opts.bits_per_packet());
        assert_eq!(opts.bits_per_packet(), 1024 + 320 + 32);
        assert!(out[..960].iter().all(|b| *b == -1), "no IPv4, no TCP");
        // UDP sport 53 = 0000000000110101
        assert_eq!(&out[960..976], bits("0000000000110101").as_slice());
        // IPv6 version 6 then hop limit 7 at bits 56..64 of the IPv6 section
        assert_eq!(&out[1024..1028], bits("0110").as_slice());
        assert_eq!(&out[1024 + 56..1024 + 64], bits("00000111").as_slice());
        // payload: "ab" captured (limit 2), then -1
        assert_eq!(&out[1344..1360], bits("01100001 01100010").as_slice());
        assert!(out[1360..1376].iter().all(|b| *b == -1));
        assert!(out[opts.bits_per_packet()..].iter().all(|b| *b == -1));
        let mut names = Vec::new();
        opts.names(0, &mut names);
        assert_eq!(names.len(), opts.bits_per_packet());
        assert_eq!(names[0], "p0_ipv4_ver_0");
        assert_eq!(names[480], "p0_tcp_sprt_0");
        assert_eq!(names[960], "p0_udp_sport_0");
    }

    /// Masking zeroes exactly the addresses and checksums (IPv4 + TCP, IPv6 + UDP) and
    /// leaves every other bit as it was.
    #[test]
    fn masking_hides_addresses_and_checksums_only() {
        let mut v4 = Vec::new();
        etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 1, 2, 3], [192, 168, 9, 9], 64)
            .tcp(40000, 443, 77, 1024)
            .write(&mut v4, b"hello")
            .unwrap();
        let mut v6 = Vec::new();
        etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv6([0xfe; 16], [0x20; 16], 9)
            .udp(5353, 5353)
            .write(&mut v6, b"query")
            .unwrap();
        for (frame, expected) in [
            (&v4, vec![80..160, 480 + 128..480 + 144]),
            (&v6, vec![960 + 48..960 + 64, 1024 + 64..1024 + 320]),
        ] {
            let p = parse_ethernet(frame).unwrap();
            let snap = HeaderSnapshot::new(&p, 8);
            let plain = NprintOptions {
                ipv6: true,
                payload_bytes: 8,
                masked: false,
            };
            let masked = NprintOptions {
                masked: true,
                ..plain
            };
            let (mut a, mut b) = (Vec::<i8>::new(), Vec::<i8>::new());
            encode_packet(Some(&snap), plain, &mut a);
            encode_packet(Some(&snap), masked, &mut b);
            assert_eq!(a.len(), b.len());
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                if expected.iter().any(|r| r.contains(&i)) {
                    assert_eq!(*y, 0, "bit {i} should be masked");
                } else {
                    assert_eq!(x, y, "bit {i} should be untouched");
                }
            }
            assert!(
                expected.iter().all(|r| r.clone().any(|i| a[i] == 1)),
                "every masked range held a set bit before masking"
            );
        }
    }
}
