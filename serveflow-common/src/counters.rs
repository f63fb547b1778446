//! Per-CPU packet counters kept by the XDP program, one slot per outcome.
//!
//! Every packet the program sees lands in exactly one outcome slot (`Redirected`, one of the
//! `Pass*` reasons, `DropByClass` or `MarkByClass`), so the outcomes add up to
//! [`XdpCounter::Packets`]. Two slots count events that are not outcomes: a failed flow-map
//! insert, and packets the TC marking program marked.

/// Index of a slot in the XDP program's per-CPU counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpCounter {
    /// Every packet the program ran on.
    Packets = 0,
    /// TCP/UDP packets sent to the AF_XDP socket of their RX queue.
    Redirected = 1,
    /// TCP/UDP packets passed because no AF_XDP socket is bound on their RX queue.
    PassNoSocket = 2,
    /// Frames that are not IPv4/IPv6 (ARP, LLDP, ...), passed.
    PassNotIp = 3,
    /// IP packets that are neither TCP nor UDP (ICMP, ...), passed.
    PassNotTcpUdp = 4,
    /// IP fragments (IPv4 MF/offset, IPv6 fragment header): no reliable ports, passed.
    PassFragment = 5,
    /// Frames that end inside a header they announce, passed for the stack to drop.
    PassTruncated = 6,
    /// Headers with impossible fields (IPv4 IHL < 5, wrong IP version, TCP offset < 5,
    /// an IPv6 extension chain too long to walk), passed for the stack to judge.
    PassMalformed = 7,
    /// The flow map refused a new entry (should not happen with an LRU map): event, not outcome.
    FlowInsertFailed = 8,
    /// TCP/UDP packets of a flow userspace has already decided (in `VERDICTS`), passed.
    PassDecided = 9,
    /// TCP/UDP packets beyond the packets userspace's stages need (`STEER`), passed.
    PassEnoughPackets = 10,
    /// Packets of a decided flow whose class's action (`ACTIONS`) is drop: dropped.
    DropByClass = 11,
    /// Packets of a decided flow whose class's action is mark: passed with the class's mark in
    /// the XDP metadata, for the TC program to set as the skb mark.
    MarkByClass = 12,
    /// Packets the TC program marked from that metadata: event, not an XDP outcome (equal to
    /// `MarkByClass` when every marked packet reaches the stack).
    TcMarked = 13,
}

/// Number of counter slots.
pub const XDP_COUNTER_SLOTS: usize = 14;

impl XdpCounter {
    /// All slots, in index order.
    pub const ALL: [XdpCounter; XDP_COUNTER_SLOTS] = [
        XdpCounter::Packets,
        XdpCounter::Redirected,
        XdpCounter::PassNoSocket,
        XdpCounter::PassNotIp,
        XdpCounter::PassNotTcpUdp,
        XdpCounter::PassFragment,
        XdpCounter::PassTruncated,
        XdpCounter::PassMalformed,
        XdpCounter::FlowInsertFailed,
        XdpCounter::PassDecided,
        XdpCounter::PassEnoughPackets,
        XdpCounter::DropByClass,
        XdpCounter::MarkByClass,
        XdpCounter::TcMarked,
    ];

    /// Stable snake_case name for summaries and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            XdpCounter::Packets => "packets",
            XdpCounter::Redirected => "redirected",
            XdpCounter::PassNoSocket => "pass_no_socket",
            XdpCounter::PassNotIp => "pass_not_ip",
            XdpCounter::PassNotTcpUdp => "pass_not_tcp_udp",
            XdpCounter::PassFragment => "pass_fragment",
            XdpCounter::PassTruncated => "pass_truncated",
            XdpCounter::PassMalformed => "pass_malformed",
            XdpCounter::FlowInsertFailed => "flow_insert_failed",
            XdpCounter::PassDecided => "pass_decided",
            XdpCounter::PassEnoughPackets => "pass_enough_packets",
            XdpCounter::DropByClass => "drop_by_class",
            XdpCounter::MarkByClass => "mark_by_class",
            XdpCounter::TcMarked => "tc_marked",
        }
    }

    /// Whether this slot is a per-packet outcome (the outcomes sum to `Packets`).
    pub const fn is_outcome(self) -> bool {
        !matches!(
            self,
            XdpCounter::Packets | XdpCounter::FlowInsertFailed | XdpCounter::TcMarked
        )
    }
}
