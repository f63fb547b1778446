//! The parsing rulebook both parsers follow: the XDP program's (`serveflow-ebpf`) and
//! userspace's (`serveflow::parse`). A frame the kernel steers must parse to the same flow key
//! in userspace, so every header size, type number and depth limit is defined once, here; the
//! BPF_PROG_TEST_RUN differential test checks the two parsers agree on real frames.

/// Ethernet II header.
pub const ETH_HLEN: usize = 14;
/// EtherType IPv4.
pub const ETH_P_IPV4: u16 = 0x0800;
/// EtherType IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// EtherType 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// EtherType 802.1ad (QinQ) service tag.
pub const ETH_P_8021AD: u16 = 0x88a8;
/// One VLAN tag.
pub const VLAN_HLEN: usize = 4;
/// VLAN tags walked before giving up (the frame is then not IP to us).
pub const MAX_VLAN_TAGS: usize = 2;
/// EtherType PPPoE session stage.
pub const ETH_P_PPPOE_SESSION: u16 = 0x8864;
/// PPPoE session header (version/type, code, session id, length) plus the PPP protocol.
pub const PPPOE_HLEN: usize = 8;
/// EtherType MPLS unicast.
pub const ETH_P_MPLS_UC: u16 = 0x8847;
/// EtherType MPLS multicast.
pub const ETH_P_MPLS_MC: u16 = 0x8848;
/// One MPLS label stack entry.
pub const MPLS_HLEN: usize = 4;
/// MPLS labels walked before giving up.
pub const MAX_MPLS_LABELS: usize = 4;
/// PPP protocol IPv4.
pub const PPP_IPV4: u16 = 0x0021;
/// PPP protocol IPv6.
pub const PPP_IPV6: u16 = 0x0057;
/// Fixed IPv6 header.
pub const IPV6_HLEN: usize = 40;
/// Extension headers walked before giving up (counted as malformed).
pub const MAX_IPV6_EXT: usize = 6;
/// No L4 header starts later than this in a frame we accept (bounds offsets for the verifier).
pub const MAX_L4_OFFSET: usize = 512;

/// IPv6 next-header values of the extension headers both parsers walk over or stop at.
pub mod ipv6_ext {
    /// Hop-by-hop options.
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing header.
    pub const ROUTING: u8 = 43;
    /// Fragment header (the packet is a fragment: skipped).
    pub const FRAGMENT: u8 = 44;
    /// Authentication header (length in 4-byte units, minus 2).
    pub const AUTH: u8 = 51;
    /// No next header (no L4: skipped).
    pub const NO_NEXT: u8 = 59;
    /// Destination options.
    pub const DEST_OPTS: u8 = 60;
}
