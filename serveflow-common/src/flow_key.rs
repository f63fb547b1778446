//! The direction-normalised flow key and the kernel's per-flow statistics.
//!
//! Both directions of a connection must hit one map entry, so the key stores the two
//! endpoints in a fixed order (the lower `(address, port)` first) rather than as src/dst.
//! The XDP program and userspace build keys with the same [`FlowKey::from_endpoints`],
//! so the two can never disagree on which entry a packet belongs to.

/// A bidirectional 5-tuple. IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`), so one
/// key type covers both families. Addresses are in network byte order, ports in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    /// Address of the lower endpoint.
    pub addr_lo: [u8; 16],
    /// Address of the higher endpoint.
    pub addr_hi: [u8; 16],
    /// Port of the lower endpoint.
    pub port_lo: u16,
    /// Port of the higher endpoint.
    pub port_hi: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    /// Explicit padding so the struct has no uninitialised bytes (map keys are hashed bytewise).
    pub pad: [u8; 3],
}

/// Every field, as three words: the derived `Hash` made ten hasher calls per key (each array
/// with its length first), and the flow table hashes a key per packet.
impl core::hash::Hash for FlowKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.addr_lo));
        state.write_u128(u128::from_ne_bytes(self.addr_hi));
        let [a, b, c] = self.pad;
        state.write_u64(
            u64::from(self.port_lo)
                | u64::from(self.port_hi) << 16
                | u64::from(self.proto) << 32
                | u64::from(a) << 40
                | u64::from(b) << 48
                | u64::from(c) << 56,
        );
    }
}

/// The kernel's running totals for one flow, both directions together.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// `bpf_ktime_get_ns` of the first packet.
    pub first_seen_ns: u64,
    /// `bpf_ktime_get_ns` of the latest packet.
    pub last_seen_ns: u64,
    /// Packets seen, both directions.
    pub packets: u64,
    /// Frame bytes seen, both directions.
    pub bytes: u64,
}

/// Maps an IPv4 address (network order bytes) to its IPv4-mapped IPv6 form.
#[inline(always)]
pub const fn ipv4_mapped(v4: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

/// Whether endpoint `(a, ap)` orders strictly before `(b, bp)`: addresses compared bytewise
/// (network order = numeric order), then ports. Written as an explicit loop, not slice
/// comparison, because it also runs in the XDP program where `memcmp` does not exist.
#[inline(always)]
fn endpoint_lt(a: &[u8; 16], ap: u16, b: &[u8; 16], bp: u16) -> bool {
    let mut i = 0;
    while i < 16 {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    ap < bp
}

impl FlowKey {
    /// Builds the key of a packet from `src` to `dst`. Returns the key and whether the packet
    /// travels from the higher endpoint to the lower one (`true`: reply direction of the key).
    #[inline(always)]
    pub fn from_endpoints(
        src: [u8; 16],
        sport: u16,
        dst: [u8; 16],
        dport: u16,
        proto: u8,
    ) -> (FlowKey, bool) {
        if endpoint_lt(&dst, dport, &src, sport) {
            (
                FlowKey {
                    addr_lo: dst,
                    addr_hi: src,
                    port_lo: dport,
                    port_hi: sport,
                    proto,
                    pad: [0; 3],
                },
                true,
            )
        } else {
            (
                FlowKey {
                    addr_lo: src,
                    addr_hi: dst,
                    port_lo: sport,
                    port_hi: dport,
                    proto,
                    pad: [0; 3],
                },
                false,
            )
        }
    }

    /// Whether both addresses are IPv4-mapped.
    pub fn is_ipv4(&self) -> bool {
        let prefix = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
        let mut i = 0;
        while i < 12 {
            if self.addr_lo[i] != prefix[i] || self.addr_hi[i] != prefix[i] {
                return false;
            }
            i += 1;
        }
        true
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: FlowKey is #[repr(C)], Copy, made only of integers and byte arrays, and has no
    // implicit padding (16+16+2+2+1+3 = 40 bytes, 2-byte aligned), so any bit pattern is valid.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: FlowStats is #[repr(C)], Copy, four u64 fields, no padding; any bit pattern is valid.
    unsafe impl aya::Pod for super::FlowStats {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_give_one_key() {
        let a = ipv4_mapped([10, 0, 0, 2]);
        let b = ipv4_mapped([10, 0, 0, 1]);
        let (k1, r1) = FlowKey::from_endpoints(a, 40000, b, 443, 6);
        let (k2, r2) = FlowKey::from_endpoints(b, 443, a, 40000, 6);
        assert_eq!(k1, k2);
        assert_ne!(r1, r2);
        assert_eq!(k1.addr_lo, b);
        assert_eq!(k1.port_lo, 443);
        assert!(k1.is_ipv4());
    }

    #[test]
    fn same_address_orders_by_port() {
        let a = ipv4_mapped([127, 0, 0, 1]);
        let (k, reversed) = FlowKey::from_endpoints(a, 9000, a, 80, 17);
        assert_eq!((k.port_lo, k.port_hi), (80, 9000));
        assert!(reversed);
    }

    #[test]
    fn key_has_no_padding() {
        assert_eq!(core::mem::size_of::<FlowKey>(), 40);
        assert_eq!(core::mem::size_of::<FlowStats>(), 32);
    }
}
