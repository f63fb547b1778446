//! Userspace packet parser: one path for frames from AF_XDP and from capture files.
//!
//! It follows the XDP program's rules exactly (same VLAN depth, same IPv6 extension walk, same
//! reasons for skipping a packet), so a frame the kernel redirected always parses here to the
//! same [`FlowKey`], and a frame replayed from a file is treated as it would be live.
//! Parsing borrows the frame and allocates nothing.

use serveflow_common::wire::{
    ipv6_ext, ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, ETH_P_MPLS_MC,
    ETH_P_MPLS_UC, ETH_P_PPPOE_SESSION, IPV6_HLEN, MAX_IPV6_EXT, MAX_L4_OFFSET, MAX_MPLS_LABELS,
    MAX_VLAN_TAGS, MPLS_HLEN, PPPOE_HLEN, PPP_IPV4, PPP_IPV6, VLAN_HLEN,
};
use serveflow_common::{flow_key::ipv4_mapped, proto, FlowKey, XdpCounter};

use crate::frame::LinkType;

/// Why a frame carries no trackable TCP/UDP flow. Shares its meaning (and counter slot) with
/// the XDP program's pass reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    /// Not IPv4/IPv6.
    #[error("not an IP packet")]
    NotIp,
    /// IP, but neither TCP nor UDP.
    #[error("neither TCP nor UDP")]
    NotTcpUdp,
    /// An IP fragment.
    #[error("IP fragment")]
    Fragment,
    /// The frame ends inside a header.
    #[error("truncated header")]
    Truncated,
    /// A header field is impossible.
    #[error("malformed header")]
    Malformed,
    /// A link type without IP inside that we read (802.11, radiotap, PPI, unknown numbers).
    #[error("unsupported link type")]
    UnsupportedLink,
}

impl Skip {
    /// Every reason, in a stable order.
    pub const ALL: [Skip; 6] = [
        Skip::NotIp,
        Skip::NotTcpUdp,
        Skip::Fragment,
        Skip::Truncated,
        Skip::Malformed,
        Skip::UnsupportedLink,
    ];

    /// The XDP counter slot with the same meaning (none for link types XDP never sees).
    pub fn counter(self) -> Option<XdpCounter> {
        match self {
            Skip::NotIp => Some(XdpCounter::PassNotIp),
            Skip::NotTcpUdp => Some(XdpCounter::PassNotTcpUdp),
            Skip::Fragment => Some(XdpCounter::PassFragment),
            Skip::Truncated => Some(XdpCounter::PassTruncated),
            Skip::Malformed => Some(XdpCounter::PassMalformed),
            Skip::UnsupportedLink => None,
        }
    }

    /// Stable snake_case name for summaries.
    pub fn name(self) -> &'static str {
        match self {
            Skip::NotIp => "not_ip",
            Skip::NotTcpUdp => "not_tcp_udp",
            Skip::Fragment => "fragment",
            Skip::Truncated => "truncated",
            Skip::Malformed => "malformed",
            Skip::UnsupportedLink => "unsupported_link",
        }
    }
}

/// IP version of a parsed packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpVersion {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// A TCP/UDP packet's addresses and header offsets, borrowed from its frame.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    /// The whole frame, from the Ethernet header.
    pub frame: &'a [u8],
    /// IP version.
    pub ip: IpVersion,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the TCP/UDP header.
    pub l4: usize,
    /// Source address (IPv4-mapped for IPv4).
    pub src: [u8; 16],
    /// Destination address (IPv4-mapped for IPv4).
    pub dst: [u8; 16],
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
}

/// A parsed packet's header offsets and 5-tuple without the frame: what a thread that parsed a
/// frame to pick its owner hands on with it, so the owner does not parse it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headers {
    ip: IpVersion,
    l3: usize,
    l4: usize,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    proto: u8,
}

impl Headers {
    /// The packet again, over the frame it was parsed from (pair it with no other).
    pub fn on(self, frame: &[u8]) -> Packet<'_> {
        Packet {
            frame,
            ip: self.ip,
            l3: self.l3,
            l4: self.l4,
            src: self.src,
            dst: self.dst,
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
        }
    }
}

impl Packet<'_> {
    /// The parse, without the frame borrow.
    pub fn headers(&self) -> Headers {
        Headers {
            ip: self.ip,
            l3: self.l3,
            l4: self.l4,
            src: self.src,
            dst: self.dst,
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
        }
    }

    /// TCP flags byte (CWR..FIN), for TCP packets.
    pub fn tcp_flags(&self) -> Option<u8> {
        (self.proto == proto::TCP)
            .then(|| self.frame.get(self.l4 + 13).copied())
            .flatten()
    }

    /// Length of the L4 header (TCP data offset, or 8 for UDP), clamped to the frame.
    pub fn l4_header_len(&self) -> usize {
        let len = match self.tcp_flags() {
            Some(_) => self
                .frame
                .get(self.l4 + 12)
                .map_or(20, |b| usize::from(b >> 4) * 4),
            None => 8,
        };
        len.min(self.frame.len().saturating_sub(self.l4))
    }

    /// Offset of the L4 payload.
    pub fn payload_offset(&self) -> usize {
        self.l4 + self.l4_header_len()
    }

    /// End of the IP packet per its length field (excludes Ethernet padding), clamped to
    /// the captured bytes.
    pub fn ip_end(&self) -> usize {
        let field = |at: usize| {
            self.frame
                .get(at..at + 2)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        };
        let end = match self.ip {
            IpVersion::V4 => field(self.l3 + 2).map(|total| self.l3 + total),
            IpVersion::V6 => field(self.l3 + 4).map(|payload| self.l3 + IPV6_HLEN + payload),
        };
        end.unwrap_or(self.frame.len()).min(self.frame.len())
    }

    /// Payload bytes after the L4 header (padding excluded).
    pub fn payload_len(&self) -> usize {
        self.ip_end().saturating_sub(self.payload_offset())
    }

    /// TCP receive window, for TCP packets.
    pub fn tcp_window(&self) -> Option<u16> {
        self.tcp_flags()?;
        let w = self.frame.get(self.l4 + 14..self.l4 + 16)?;
        Some(u16::from_be_bytes([w[0], w[1]]))
    }

    /// IPv4 TTL or IPv6 hop limit.
    pub fn ttl(&self) -> Option<u8> {
        let at = match self.ip {
            IpVersion::V4 => self.l3 + 8,
            IpVersion::V6 => self.l3 + 7,
        };
        self.frame.get(at).copied()
    }

    /// The direction-normalised key and whether this packet goes from the key's higher
    /// endpoint to its lower one.
    pub fn flow_key(&self) -> (FlowKey, bool) {
        FlowKey::from_endpoints(self.src, self.sport, self.dst, self.dport, self.proto)
    }
}

fn bytes<const N: usize>(frame: &[u8], offset: usize) -> Result<[u8; N], Skip> {
    frame
        .get(offset..offset.checked_add(N).ok_or(Skip::Truncated)?)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(Skip::Truncated)
}

fn be16(frame: &[u8], offset: usize) -> Result<u16, Skip> {
    bytes::<2>(frame, offset).map(u16::from_be_bytes)
}

/// Parses an Ethernet frame down to its TCP/UDP ports.
pub fn parse_ethernet(frame: &[u8]) -> Result<Packet<'_>, Skip> {
    let mut ether_type = be16(frame, 12)?;
    let mut l3 = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        ether_type = be16(frame, l3 + 2)?;
        l3 += VLAN_HLEN;
    }
    match ether_type {
        // PPPoE session: 6-byte PPPoE header, then the 2-byte PPP protocol.
        ETH_P_PPPOE_SESSION => match be16(frame, l3 + PPPOE_HLEN - 2)? {
            PPP_IPV4 => parse_ipv4(frame, l3 + PPPOE_HLEN),
            PPP_IPV6 => parse_ipv6(frame, l3 + PPPOE_HLEN),
            _ => Err(Skip::NotIp),
        },
        ETH_P_MPLS_UC | ETH_P_MPLS_MC => parse_mpls(frame, l3),
        _ => parse_l3(frame, ether_type, l3),
    }
}

/// Walks an MPLS label stack (up to [`MAX_MPLS_LABELS`]) and parses the IP packet under it,
/// its version read from the first nibble.
fn parse_mpls(frame: &[u8], mut l3: usize) -> Result<Packet<'_>, Skip> {
    for _ in 0..MAX_MPLS_LABELS {
        let label = bytes::<MPLS_HLEN>(frame, l3)?;
        l3 += MPLS_HLEN;
        if label[2] & 0x01 != 0 {
            return match bytes::<1>(frame, l3)?[0] >> 4 {
                4 => parse_ipv4(frame, l3),
                6 => parse_ipv6(frame, l3),
                _ => Err(Skip::NotIp),
            };
        }
    }
    Err(Skip::Malformed)
}

/// Parses a frame of any supported link type down to its TCP/UDP ports.
pub fn parse_link(link: LinkType, frame: &[u8]) -> Result<Packet<'_>, Skip> {
    match link {
        LinkType::Ethernet => parse_ethernet(frame),
        LinkType::Raw => match bytes::<1>(frame, 0)?[0] >> 4 {
            4 => parse_ipv4(frame, 0),
            6 => parse_ipv6(frame, 0),
            _ => Err(Skip::NotIp),
        },
        LinkType::Ipv4 => parse_ipv4(frame, 0),
        LinkType::Ipv6 => parse_ipv6(frame, 0),
        // Protocol (an EtherType) at 14, network header at 16.
        LinkType::LinuxSll => parse_l3(frame, be16(frame, 14)?, 16),
        // Protocol at 0, network header at 20.
        LinkType::LinuxSll2 => parse_l3(frame, be16(frame, 0)?, 20),
        // Address family, host order (written by whichever machine captured) or network order.
        LinkType::Null | LinkType::Loop => {
            let family = bytes::<4>(frame, 0)?;
            let le = u32::from_le_bytes(family);
            let be = u32::from_be_bytes(family);
            match (le, be) {
                (2, _) | (_, 2) => parse_ipv4(frame, 4),
                // AF_INET6 is 10 on Linux, 24 on NetBSD/OpenBSD, 28 on FreeBSD, 30 on macOS.
                (10 | 24 | 28 | 30, _) | (_, 10 | 24 | 28 | 30) => parse_ipv6(frame, 4),
                _ => Err(Skip::NotIp),
            }
        }
        // Address, control, then a 2-byte EtherType (MPLS included).
        LinkType::CiscoHdlc => match be16(frame, 2)? {
            ETH_P_MPLS_UC | ETH_P_MPLS_MC => parse_mpls(frame, 4),
            ether_type => parse_l3(frame, ether_type, 4),
        },
        // Captures labelled PPP sometimes hold Cisco HDLC (address 0x0f or 0x8f).
        LinkType::Ppp if matches!(bytes::<1>(frame, 0)?[0], 0x0f | 0x8f) => {
            parse_l3(frame, be16(frame, 2)?, 4)
        }
        LinkType::Ppp => {
            let (protocol, l3) = if bytes::<2>(frame, 0)? == [0xff, 0x03] {
                (be16(frame, 2)?, 4)
            } else {
                (be16(frame, 0)?, 2)
            };
            match protocol {
                PPP_IPV4 => parse_ipv4(frame, l3),
                PPP_IPV6 => parse_ipv6(frame, l3),
                _ => Err(Skip::NotIp),
            }
        }
        LinkType::Ieee80211 | LinkType::Radiotap | LinkType::Ppi | LinkType::Other(_) => {
            Err(Skip::UnsupportedLink)
        }
    }
}

/// Dispatches on an EtherType to the IP parsers.
fn parse_l3(frame: &[u8], ether_type: u16, l3: usize) -> Result<Packet<'_>, Skip> {
    match ether_type {
        ETH_P_IPV4 => parse_ipv4(frame, l3),
        ETH_P_IPV6 => parse_ipv6(frame, l3),
        _ => Err(Skip::NotIp),
    }
}

fn parse_ipv4(frame: &[u8], l3: usize) -> Result<Packet<'_>, Skip> {
    let h = bytes::<20>(frame, l3)?;
    if h[0] >> 4 != 4 {
        return Err(Skip::Malformed);
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(Skip::Malformed);
    }
    if u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
        return Err(Skip::Fragment);
    }
    if frame.len() < l3 + ihl {
        return Err(Skip::Truncated);
    }
    let src = ipv4_mapped([h[12], h[13], h[14], h[15]]);
    let dst = ipv4_mapped([h[16], h[17], h[18], h[19]]);
    parse_l4(frame, IpVersion::V4, l3, l3 + ihl, h[9], src, dst)
}

fn parse_ipv6(frame: &[u8], l3: usize) -> Result<Packet<'_>, Skip> {
    let fixed = bytes::<8>(frame, l3)?;
    if fixed[0] >> 4 != 6 {
        return Err(Skip::Malformed);
    }
    let src = bytes::<16>(frame, l3 + 8)?;
    let dst = bytes::<16>(frame, l3 + 24)?;
    let mut next = fixed[6];
    let mut offset = l3 + IPV6_HLEN;
    for _ in 0..MAX_IPV6_EXT {
        match next {
            ipv6_ext::HOP_BY_HOP | ipv6_ext::ROUTING | ipv6_ext::DEST_OPTS => {
                let ext = bytes::<2>(frame, offset)?;
                next = ext[0];
                offset += (usize::from(ext[1]) + 1) * 8;
            }
            ipv6_ext::AUTH => {
                let ext = bytes::<2>(frame, offset)?;
                next = ext[0];
                offset += (usize::from(ext[1]) + 2) * 4;
            }
            ipv6_ext::FRAGMENT => return Err(Skip::Fragment),
            ipv6_ext::NO_NEXT => return Err(Skip::NotTcpUdp),
            _ => {
                if offset > MAX_L4_OFFSET {
                    return Err(Skip::Malformed);
                }
                return parse_l4(frame, IpVersion::V6, l3, offset, next, src, dst);
            }
        }
        if offset > MAX_L4_OFFSET {
            return Err(Skip::Malformed);
        }
    }
    Err(Skip::Malformed)
}

fn parse_l4(
    frame: &[u8],
    ip: IpVersion,
    l3: usize,
    l4: usize,
    ip_proto: u8,
    src: [u8; 16],
    dst: [u8; 16],
) -> Result<Packet<'_>, Skip> {
    match ip_proto {
        proto::TCP => {
            // Same order of checks as the XDP program, so both report the same reason.
            let ports = bytes::<4>(frame, l4)?;
            let data_offset = bytes::<1>(frame, l4 + 12)?[0] >> 4;
            if data_offset < 5 {
                return Err(Skip::Malformed);
            }
            bytes::<20>(frame, l4)?;
            Ok(Packet {
                frame,
                ip,
                l3,
                l4,
                src,
                dst,
                sport: u16::from_be_bytes([ports[0], ports[1]]),
                dport: u16::from_be_bytes([ports[2], ports[3]]),
                proto: proto::TCP,
            })
        }
        proto::UDP => {
            let h = bytes::<8>(frame, l4)?;
            Ok(Packet {
                frame,
                ip,
                l3,
                l4,
                src,
                dst,
                sport: u16::from_be_bytes([h[0], h[1]]),
                dport: u16::from_be_bytes([h[2], h[3]]),
                proto: proto::UDP,
            })
        }
        _ => Err(Skip::NotTcpUdp),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;
    use etherparse::PacketBuilder;

    #[test]
    fn headers_carry_the_whole_parse_to_another_thread() {
        let frame = tcp_v4(b"hello");
        let p = parse_ethernet(&frame).unwrap();
        let again = p.headers().on(&frame);
        assert_eq!(again.flow_key(), p.flow_key());
        assert_eq!((again.l3, again.l4, again.payload_len()), (p.l3, p.l4, 5));
        assert_eq!(again.tcp_flags(), p.tcp_flags());
    }

    fn tcp_v4(payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 443, 1, 1024);
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn tcp_over_ipv4() {
        let frame = tcp_v4(b"hello");
        let p = parse_ethernet(&frame).unwrap();
        assert_eq!((p.sport, p.dport, p.proto), (40000, 443, 6));
        assert_eq!(p.src, ipv4_mapped([10, 0, 0, 1]));
        assert_eq!((p.l3, p.l4), (14, 34));
        let (key, reply) = p.flow_key();
        assert!(!reply);
        assert_eq!(key.port_lo, 40000);
    }

    #[test]
    fn udp_over_ipv6_in_vlan() {
        let builder = PacketBuilder::ethernet2([2; 6], [4; 6])
            .single_vlan(7.try_into().unwrap())
            .ipv6([1; 16], [2; 16], 64)
            .udp(53, 5353);
        let mut frame = Vec::new();
        builder.write(&mut frame, b"q").unwrap();
        let p = parse_ethernet(&frame).unwrap();
        assert_eq!((p.ip, p.l3, p.l4), (IpVersion::V6, 18, 58));
        assert_eq!((p.sport, p.dport, p.proto), (53, 5353, 17));
    }

    #[test]
    fn every_truncation_is_reported_not_panicking() {
        let frame = tcp_v4(b"");
        for len in 0..frame.len() {
            let got = parse_ethernet(&frame[..len]);
            assert_eq!(got.map(|_| ()), Err(Skip::Truncated), "length {len}");
        }
    }

    #[test]
    fn fragments_and_bad_ihl() {
        let mut frame = tcp_v4(b"x");
        frame[14 + 6] = 0x20; // MF
        assert_eq!(parse_ethernet(&frame).map(|_| ()), Err(Skip::Fragment));
        let mut frame = tcp_v4(b"x");
        frame[14] = 0x44; // IHL 4 words
        assert_eq!(parse_ethernet(&frame).map(|_| ()), Err(Skip::Malformed));
    }

    #[test]
    fn every_link_type_reaches_the_same_packet() {
        let eth = tcp_v4(b"x");
        let ip = &eth[14..];
        let with = |prefix: &[u8]| [prefix, ip].concat();
        let mut sll = vec![0u8; 16];
        sll[14..16].copy_from_slice(&[0x08, 0x00]);
        let mut sll2 = vec![0u8; 20];
        sll2[0..2].copy_from_slice(&[0x08, 0x00]);
        let cases: Vec<(LinkType, Vec<u8>)> = vec![
            (LinkType::Ethernet, eth.clone()),
            (LinkType::Raw, ip.to_vec()),
            (LinkType::Ipv4, ip.to_vec()),
            (LinkType::LinuxSll, with(&sll)),
            (LinkType::LinuxSll2, with(&sll2)),
            (LinkType::Null, with(&2u32.to_le_bytes())),
            (LinkType::Loop, with(&2u32.to_be_bytes())),
            (LinkType::CiscoHdlc, with(&[0x0f, 0, 0x08, 0x00])),
            (LinkType::Ppp, with(&[0xff, 0x03, 0x00, 0x21])),
            (LinkType::Ppp, with(&[0x00, 0x21])),
        ];
        for (link, frame) in cases {
            let p = parse_link(link, &frame).unwrap_or_else(|e| panic!("{link:?}: {e}"));
            assert_eq!((p.sport, p.dport, p.proto), (40000, 443, 6), "{link:?}");
            assert_eq!(p.l4 - p.l3, 20, "{link:?}");
        }
        assert_eq!(
            parse_link(LinkType::Radiotap, &eth).map(|_| ()),
            Err(Skip::UnsupportedLink)
        );
        assert_eq!(
            parse_link(LinkType::Raw, &[]).map(|_| ()),
            Err(Skip::Truncated)
        );
    }

    #[test]
    fn arp_is_not_ip() {
        let mut frame = vec![0u8; 42];
        frame[12] = 0x08;
        frame[13] = 0x06;
        assert_eq!(parse_ethernet(&frame).map(|_| ()), Err(Skip::NotIp));
    }
}
