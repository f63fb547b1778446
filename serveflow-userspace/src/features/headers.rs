//! Raw headers of a flow's first packets, kept so header-bit features (nPrint) can be encoded
//! on demand instead of being stored expanded: ~130 bytes per packet instead of 1024 values.

use crate::parse::{IpVersion, Packet};

/// Longest IPv4 header (IHL 15).
pub const IPV4_MAX: usize = 60;
/// IPv6 fixed header.
pub const IPV6_LEN: usize = 40;
/// Longest TCP header (data offset 15).
pub const TCP_MAX: usize = 60;
/// UDP header.
pub const UDP_LEN: usize = 8;

/// One packet's headers as captured.
#[derive(Clone, Debug)]
pub struct HeaderSnapshot {
    /// IP version.
    pub ip: IpVersion,
    /// IP protocol of the L4 header (6 or 17).
    pub proto: u8,
    /// IP header bytes (IPv4 with options, or the IPv6 fixed header).
    pub ip_header: Vec<u8>,
    /// L4 header bytes (TCP with options, or UDP).
    pub l4_header: Vec<u8>,
    /// First payload bytes (up to the limit asked for).
    pub payload: Vec<u8>,
}

impl HeaderSnapshot {
    /// Copies the headers (and up to `payload_bytes` of payload) out of a packet.
    pub fn new(p: &Packet<'_>, payload_bytes: usize) -> Self {
        let ip_len = match p.ip {
            IpVersion::V4 => p.l4 - p.l3,
            IpVersion::V6 => IPV6_LEN,
        };
        let take = |from: usize, len: usize| {
            p.frame
                .get(from..(from + len).min(p.frame.len()))
                .unwrap_or(&[])
                .to_vec()
        };
        let payload_from = p.payload_offset();
        let payload_len = p.payload_len().min(payload_bytes);
        HeaderSnapshot {
            ip: p.ip,
            proto: p.proto,
            ip_header: take(p.l3, ip_len),
            l4_header: take(p.l4, p.l4_header_len()),
            payload: take(payload_from, payload_len),
        }
    }

    /// Heap bytes held by this snapshot (for the cost report).
    pub fn heap_bytes(&self) -> usize {
        self.ip_header.capacity() + self.l4_header.capacity() + self.payload.capacity()
    }
}
