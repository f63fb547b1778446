//! Verifier-safe L2-L4 parsing: Ethernet (+ up to two 802.1Q/802.1ad tags, PPPoE sessions,
//! up to four MPLS labels), IPv4 (with options), IPv6 (with extension headers), TCP and UDP.
//!
//! Every read goes through [`read`], which checks `data + offset + size <= data_end` first;
//! offsets that depend on packet fields are capped before use so the verifier can bound them.
//! The userspace parser (`serveflow::parse`) implements the same rules; the BPF_PROG_TEST_RUN
//! tests check that both give the same key for the same frame.

use aya_ebpf::programs::XdpContext;
use serveflow_common::{flow_key::ipv4_mapped, proto, XdpCounter};

use serveflow_common::wire::{
    ipv6_ext, ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, ETH_P_MPLS_MC,
    ETH_P_MPLS_UC, ETH_P_PPPOE_SESSION, IPV6_HLEN, MAX_IPV6_EXT, MAX_L4_OFFSET, MAX_MPLS_LABELS,
    MAX_VLAN_TAGS, MPLS_HLEN, PPPOE_HLEN, PPP_IPV4, PPP_IPV6, VLAN_HLEN,
};

/// The 5-tuple of a TCP/UDP packet as it travels (not normalised).
pub struct Parsed {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// Reads a `T` at `offset` from the frame start, or `PassTruncated` if the frame is shorter.
#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, XdpCounter> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(XdpCounter::PassTruncated);
    }
    // SAFETY: the range [start+offset, start+offset+size) lies inside the frame (checked above);
    // read_unaligned because packet fields have no alignment guarantee.
    Ok(unsafe { core::ptr::read_unaligned((start + offset) as *const T) })
}

#[inline(always)]
fn read_be16(ctx: &XdpContext, offset: usize) -> Result<u16, XdpCounter> {
    Ok(u16::from_be_bytes(read::<[u8; 2]>(ctx, offset)?))
}

/// Parses a frame down to its TCP/UDP ports, or says why it is not a trackable packet.
#[inline(always)]
pub fn parse_l4(ctx: &XdpContext) -> Result<Parsed, XdpCounter> {
    let mut ether_type = read_be16(ctx, 12)?;
    let mut l3 = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        ether_type = read_be16(ctx, l3 + 2)?;
        l3 += VLAN_HLEN;
    }
    let (src, dst, ip_proto, l4) = match ether_type {
        ETH_P_IPV4 => parse_ipv4(ctx, l3)?,
        ETH_P_IPV6 => parse_ipv6(ctx, l3)?,
        // PPPoE session: 6-byte PPPoE header, then the 2-byte PPP protocol.
        ETH_P_PPPOE_SESSION => match read_be16(ctx, l3 + PPPOE_HLEN - 2)? {
            PPP_IPV4 => parse_ipv4(ctx, l3 + PPPOE_HLEN)?,
            PPP_IPV6 => parse_ipv6(ctx, l3 + PPPOE_HLEN)?,
            _ => return Err(XdpCounter::PassNotIp),
        },
        ETH_P_MPLS_UC | ETH_P_MPLS_MC => {
            let mut at = l3;
            let mut bottom = false;
            for _ in 0..MAX_MPLS_LABELS {
                let label = read::<[u8; MPLS_HLEN]>(ctx, at)?;
                at += MPLS_HLEN;
                if label[2] & 0x01 != 0 {
                    bottom = true;
                    break;
                }
            }
            if !bottom {
                return Err(XdpCounter::PassMalformed);
            }
            match read::<u8>(ctx, at)? >> 4 {
                4 => parse_ipv4(ctx, at)?,
                6 => parse_ipv6(ctx, at)?,
                _ => return Err(XdpCounter::PassNotIp),
            }
        }
        _ => return Err(XdpCounter::PassNotIp),
    };
    match ip_proto {
        proto::TCP => {
            // Ports (4) + seq (4) + ack (4) + data offset byte: the header must be whole.
            let ports = read::<[u8; 4]>(ctx, l4)?;
            let data_offset = read::<u8>(ctx, l4 + 12)? >> 4;
            if data_offset < 5 {
                return Err(XdpCounter::PassMalformed);
            }
            read::<[u8; 20]>(ctx, l4)?;
            Ok(Parsed {
                src,
                dst,
                sport: u16::from_be_bytes([ports[0], ports[1]]),
                dport: u16::from_be_bytes([ports[2], ports[3]]),
                proto: proto::TCP,
            })
        }
        proto::UDP => {
            let header = read::<[u8; 8]>(ctx, l4)?;
            Ok(Parsed {
                src,
                dst,
                sport: u16::from_be_bytes([header[0], header[1]]),
                dport: u16::from_be_bytes([header[2], header[3]]),
                proto: proto::UDP,
            })
        }
        _ => Err(XdpCounter::PassNotTcpUdp),
    }
}

/// Returns (src, dst, protocol, L4 offset) of an IPv4 header at `l3`.
#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l3: usize) -> Result<([u8; 16], [u8; 16], u8, usize), XdpCounter> {
    let header = read::<[u8; 20]>(ctx, l3)?;
    if header[0] >> 4 != 4 {
        return Err(XdpCounter::PassMalformed);
    }
    let ihl = usize::from(header[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(XdpCounter::PassMalformed);
    }
    // More-fragments flag or a fragment offset: only the first fragment has ports, and it
    // alone would make a flow of one packet; pass them all to the stack.
    if u16::from_be_bytes([header[6], header[7]]) & 0x3fff != 0 {
        return Err(XdpCounter::PassFragment);
    }
    // Options must be present in full.
    if ihl > 20 {
        read::<u8>(ctx, l3 + ihl - 1)?;
    }
    let src = ipv4_mapped([header[12], header[13], header[14], header[15]]);
    let dst = ipv4_mapped([header[16], header[17], header[18], header[19]]);
    Ok((src, dst, header[9], l3 + ihl))
}

/// Returns (src, dst, upper-layer protocol, L4 offset) of an IPv6 header at `l3`,
/// after walking its extension headers.
#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, l3: usize) -> Result<([u8; 16], [u8; 16], u8, usize), XdpCounter> {
    let fixed = read::<[u8; 8]>(ctx, l3)?;
    if fixed[0] >> 4 != 6 {
        return Err(XdpCounter::PassMalformed);
    }
    let src = read::<[u8; 16]>(ctx, l3 + 8)?;
    let dst = read::<[u8; 16]>(ctx, l3 + 24)?;
    let mut next = fixed[6];
    let mut offset = l3 + IPV6_HLEN;
    for _ in 0..MAX_IPV6_EXT {
        match next {
            ipv6_ext::HOP_BY_HOP | ipv6_ext::ROUTING | ipv6_ext::DEST_OPTS => {
                let ext = read::<[u8; 2]>(ctx, offset)?;
                next = ext[0];
                offset += (usize::from(ext[1]) + 1) * 8;
            }
            ipv6_ext::AUTH => {
                let ext = read::<[u8; 2]>(ctx, offset)?;
                next = ext[0];
                offset += (usize::from(ext[1]) + 2) * 4;
            }
            ipv6_ext::FRAGMENT => return Err(XdpCounter::PassFragment),
            ipv6_ext::NO_NEXT => return Err(XdpCounter::PassNotTcpUdp),
            _ => return Ok((src, dst, next, bounded(offset)?)),
        }
        offset = bounded(offset)?;
    }
    Err(XdpCounter::PassMalformed)
}

/// Caps a field-dependent offset so the verifier sees a bounded value.
#[inline(always)]
fn bounded(offset: usize) -> Result<usize, XdpCounter> {
    if offset > MAX_L4_OFFSET {
        Err(XdpCounter::PassMalformed)
    } else {
        Ok(offset)
    }
}
