//! Frame builders (through etherparse, independent of serveflow's own parser) and the smoke
//! capture: a small, deterministic mix of TCP/UDP flows in both directions, IPv4 and IPv6,
//! plus traffic the XDP program must pass (ARP, ICMP, fragments).

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapPacket, PcapWriter};

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

/// Serialises an etherparse builder with its payload. A write into a Vec only fails for an
/// invalid builder, which would be a bug in these constant test inputs.
macro_rules! build {
    ($builder:expr, $payload:expr $(,)?) => {{
        let builder = $builder;
        let payload: &[u8] = $payload;
        let mut out = Vec::with_capacity(builder.size(payload.len()));
        #[allow(
            clippy::expect_used,
            reason = "test helper with constant, valid inputs"
        )]
        builder.write(&mut out, payload).expect("valid packet");
        out
    }};
}

/// TCP over IPv4 with the given flags set.
pub fn tcp4(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    syn: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(MAC_B, MAC_A)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1000, 64240);
    if syn {
        b = b.syn();
    } else {
        b = b.ack(1);
    }
    build!(b, payload)
}

/// UDP over IPv4.
pub fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    build!(
        PacketBuilder::ethernet2(MAC_B, MAC_A)
            .ipv4(src, dst, 64)
            .udp(sport, dport),
        payload,
    )
}

/// TCP over IPv6.
pub fn tcp6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16, payload: &[u8]) -> Vec<u8> {
    build!(
        PacketBuilder::ethernet2(MAC_B, MAC_A)
            .ipv6(src, dst, 64)
            .tcp(sport, dport, 1, 1024)
            .ack(1),
        payload,
    )
}

/// UDP over IPv6.
pub fn udp6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16, payload: &[u8]) -> Vec<u8> {
    build!(
        PacketBuilder::ethernet2(MAC_B, MAC_A)
            .ipv6(src, dst, 64)
            .udp(sport, dport),
        payload,
    )
}

/// An ICMP echo request over IPv4.
pub fn icmp4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    build!(
        PacketBuilder::ethernet2(MAC_B, MAC_A)
            .ipv4(src, dst, 64)
            .icmpv4_echo_request(1, 1),
        b"ping"
    )
}

/// An ARP request (not IP).
pub fn arp(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

/// Inserts `words` 32-bit words of IPv4 options (NOPs ending in EOL) into an Ethernet/IPv4
/// frame, fixing IHL and total length (the checksum is not recomputed: nothing here checks it).
pub fn with_ipv4_options(frame: &[u8], words: u8) -> Vec<u8> {
    let l3 = 14;
    let n = usize::from(words) * 4;
    let mut out = frame[..l3 + 20].to_vec();
    out.extend(std::iter::repeat_n(1u8, n.saturating_sub(1)));
    if n > 0 {
        out.push(0);
    }
    out.extend_from_slice(&frame[l3 + 20..]);
    out[l3] = 0x40 | (5 + words);
    let total = u16::from_be_bytes([out[l3 + 2], out[l3 + 3]]) + n as u16;
    out[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
    out
}

/// Inserts an 802.1Q tag (or 802.1ad when `outer`) right after the MAC addresses.
pub fn with_vlan(frame: &[u8], vid: u16, outer: bool) -> Vec<u8> {
    let tpid: u16 = if outer { 0x88a8 } else { 0x8100 };
    let mut out = frame[..12].to_vec();
    out.extend_from_slice(&tpid.to_be_bytes());
    out.extend_from_slice(&vid.to_be_bytes());
    out.extend_from_slice(&frame[12..]);
    out
}

/// Inserts an IPv6 extension header of type `kind` (8 bytes) before the upper-layer header of
/// an Ethernet/IPv6 frame, chaining next-header fields and fixing the payload length.
pub fn with_ipv6_ext(frame: &[u8], kind: u8) -> Vec<u8> {
    let l3 = 14;
    let upper = frame[l3 + 6];
    let mut out = frame[..l3 + 40].to_vec();
    out[l3 + 6] = kind;
    out.extend_from_slice(&[upper, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&frame[l3 + 40..]);
    let len = u16::from_be_bytes([out[l3 + 4], out[l3 + 5]]) + 8;
    out[l3 + 4..l3 + 6].copy_from_slice(&len.to_be_bytes());
    out
}

/// What the smoke capture holds, for exact assertions.
#[derive(Debug, Clone, Default)]
pub struct SmokeCapture {
    /// Every frame in order.
    pub frames: Vec<Vec<u8>>,
    /// TCP/UDP frames (the ones the XDP program redirects).
    pub tcp_udp_packets: u64,
    /// Distinct bidirectional TCP/UDP flows.
    pub flows: u64,
    /// Of which TCP.
    pub tcp_flows: u64,
    /// Of which UDP.
    pub udp_flows: u64,
    /// Frames that are not IP.
    pub not_ip: u64,
    /// IP frames that are not TCP/UDP.
    pub not_tcp_udp: u64,
    /// IP fragments.
    pub fragments: u64,
}

/// Builds the smoke capture: `tcp` TCP/IPv4 conversations (SYN, SYN-ACK, ACK, data both
/// ways: 5 packets), `udp` UDP/IPv4 exchanges (3 packets), one TCP/IPv6 and one UDP/IPv6
/// exchange (2 packets each), 2 ARP requests, 2 ICMP echoes and 2 IPv4 fragments.
pub fn smoke_capture(tcp: u16, udp: u16) -> SmokeCapture {
    let client = [192, 0, 2, 10];
    let server = [198, 51, 100, 20];
    let mut c = SmokeCapture::default();
    for i in 0..tcp {
        let sport = 40_000 + i;
        c.frames.push(tcp4(client, sport, server, 443, true, b""));
        c.frames.push(tcp4(server, 443, client, sport, true, b""));
        c.frames.push(tcp4(client, sport, server, 443, false, b""));
        c.frames.push(tcp4(
            client,
            sport,
            server,
            443,
            false,
            b"GET / HTTP/1.1\r\n\r\n",
        ));
        c.frames.push(tcp4(
            server,
            443,
            client,
            sport,
            false,
            b"HTTP/1.1 200 OK\r\n\r\n",
        ));
        c.tcp_udp_packets += 5;
        c.tcp_flows += 1;
    }
    for i in 0..udp {
        let sport = 50_000 + i;
        c.frames.push(udp4(client, sport, server, 53, b"query"));
        c.frames.push(udp4(server, 53, client, sport, b"answer"));
        c.frames.push(udp4(client, sport, server, 53, b"again"));
        c.tcp_udp_packets += 3;
        c.udp_flows += 1;
    }
    let mut v6a = [0u8; 16];
    v6a[..2].copy_from_slice(&[0x20, 0x01]);
    v6a[15] = 1;
    let mut v6b = v6a;
    v6b[15] = 2;
    c.frames.push(tcp6(v6a, 33_000, v6b, 80, b"hi"));
    c.frames.push(tcp6(v6b, 80, v6a, 33_000, b"ho"));
    c.frames.push(udp6(v6a, 33_001, v6b, 123, b"ntp"));
    c.frames.push(udp6(v6b, 123, v6a, 33_001, b"ntp"));
    c.tcp_udp_packets += 4;
    c.tcp_flows += 1;
    c.udp_flows += 1;
    for _ in 0..2 {
        c.frames.push(arp(client, server));
        c.frames.push(icmp4(client, server));
    }
    c.not_ip += 2;
    c.not_tcp_udp += 2;
    let mut frag = udp4(client, 9999, server, 9999, &[7; 64]);
    frag[14 + 6] = 0x20; // more fragments
    c.frames.push(frag.clone());
    frag[14 + 6] = 0x00;
    frag[14 + 7] = 0x08; // offset 64 bytes
    c.frames.push(frag);
    c.fragments += 2;
    c.flows = c.tcp_flows + c.udp_flows;
    c
}

/// Writes frames to a classic pcap file (Ethernet link type), 1 ms apart.
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) -> anyhow::Result<()> {
    write_pcap_spaced(path, frames, Duration::from_millis(1))
}

/// Writes frames to a classic pcap file (Ethernet link type), `spacing` apart.
pub fn write_pcap_spaced(path: &Path, frames: &[Vec<u8>], spacing: Duration) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut writer = PcapWriter::new(std::io::BufWriter::new(file))?;
    for (i, frame) in frames.iter().enumerate() {
        let ts = Duration::from_secs(1_700_000_000) + spacing * i as u32;
        writer.write_packet(&PcapPacket::new(ts, frame.len() as u32, frame))?;
    }
    Ok(())
}

/// Reads the frames of a classic pcap file of Ethernet frames (any timestamps), for
/// re-spacing with [`write_pcap`].
pub fn read_pcap(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = pcap_file::pcap::PcapReader::new(std::io::BufReader::new(file))
        .with_context(|| format!("{} is not a classic pcap file", path.display()))?;
    anyhow::ensure!(
        reader.header().datalink == pcap_file::DataLink::ETHERNET,
        "{}: link type {:?}, not Ethernet",
        path.display(),
        reader.header().datalink
    );
    let mut frames = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.with_context(|| format!("reading {}", path.display()))?;
        frames.push(packet.data.into_owned());
    }
    Ok(frames)
}

/// Packets per bidirectional TCP/UDP 5-tuple (endpoints sorted) over Ethernet frames, counted
/// with etherparse, independently of serveflow's parser; fragments and other frames are left
/// out, as the XDP program passes them.
pub fn flow_packet_counts(frames: &[Vec<u8>]) -> std::collections::HashMap<String, u64> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let mut counts = std::collections::HashMap::new();
    for frame in frames {
        let Ok(sliced) = SlicedPacket::from_ethernet(frame) else {
            continue;
        };
        let (src, dst) = match &sliced.net {
            Some(NetSlice::Ipv4(ip)) if !ip.is_payload_fragmented() => (
                std::net::IpAddr::from(ip.header().source_addr()),
                std::net::IpAddr::from(ip.header().destination_addr()),
            ),
            Some(NetSlice::Ipv6(ip)) if !ip.is_payload_fragmented() => (
                std::net::IpAddr::from(ip.header().source_addr()),
                std::net::IpAddr::from(ip.header().destination_addr()),
            ),
            _ => continue,
        };
        let (proto, sport, dport) = match &sliced.transport {
            Some(TransportSlice::Tcp(t)) => (6, t.source_port(), t.destination_port()),
            Some(TransportSlice::Udp(u)) => (17, u.source_port(), u.destination_port()),
            _ => continue,
        };
        let (a, b) = ((src, sport), (dst, dport));
        let ((x, xp), (y, yp)) = if a <= b { (a, b) } else { (b, a) };
        *counts
            .entry(format!("{x}:{xp}-{y}:{yp}/{proto}"))
            .or_default() += 1;
    }
    counts
}
