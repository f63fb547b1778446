//! Whether the NIC's receive-side scaling sends both directions of a flow to one RX queue.
//!
//! With symmetric RSS each per-queue worker owns the flows that arrive on its own queue and
//! forwards nothing. Otherwise (or when the driver does not say) workers shard flows by their
//! own direction-independent hash and forward packets that arrived on another worker's queue:
//! always correct, at the price of a hand-off between cores.

use super::{if_ioctl, SIOCETHTOOL};

/// `ETHTOOL_GRSSH` (linux/ethtool.h): read the RSS hash function, input transform and key.
const ETHTOOL_GRSSH: u32 = 0x46;
/// `ETH_RSS_HASH_TOP` and `ETH_RSS_HASH_XOR`: Toeplitz, XOR.
const HASH_TOEPLITZ: u8 = 1 << 0;
const HASH_XOR: u8 = 1 << 1;
/// `RXH_XFRM_SYM_XOR`, `RXH_XFRM_SYM_OR_XOR`: the driver makes the input symmetric.
const XFRM_SYMMETRIC: u8 = (1 << 0) | (1 << 1);
/// Bytes of `struct ethtool_rxfh` before its indirection table and key.
const HEADER: usize = 24;

/// What the driver says about its RSS hashing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RssSymmetry {
    /// Both directions of a flow hash alike; the reason.
    Symmetric(&'static str),
    /// The hash may send the two directions of a flow to different queues.
    Asymmetric,
    /// The driver does not report its RSS configuration (veth and most virtual NICs).
    Unknown,
}

/// Decides from the driver's hash function, input transform and Toeplitz key.
pub fn classify(hfunc: u8, input_xfrm: u8, key: &[u8]) -> RssSymmetry {
    if input_xfrm & XFRM_SYMMETRIC != 0 {
        return RssSymmetry::Symmetric("the driver's symmetric input transform");
    }
    if hfunc & HASH_XOR != 0 {
        return RssSymmetry::Symmetric("an XOR hash");
    }
    // A Toeplitz key that repeats every 16 bits hashes (src, dst) and (dst, src) alike: the
    // addresses and ports swap by whole multiples of 16 bits (the 0x6d5a... key).
    if hfunc & HASH_TOEPLITZ != 0
        && key.len() >= 4
        && key
            .iter()
            .skip(2)
            .zip(key)
            .all(|(later, earlier)| later == earlier)
    {
        return RssSymmetry::Symmetric("a Toeplitz key with a 16-bit period");
    }
    RssSymmetry::Asymmetric
}

/// Asks the driver of `iface` (an ethtool ioctl in this network namespace).
pub fn rss_symmetry(iface: &str) -> RssSymmetry {
    // First call: the sizes of the indirection table and key.
    let mut head = [0u32; HEADER / 4];
    head[0] = ETHTOOL_GRSSH;
    if if_ioctl(iface, SIOCETHTOOL, |ifr| {
        ifr.ifr_ifru.ifru_data = head.as_mut_ptr().cast();
    })
    .is_none()
    {
        return RssSymmetry::Unknown;
    }
    let (indir, key) = (head[2] as usize, head[3] as usize);
    // Second call: hash function, input transform and key, into a buffer sized for them.
    let mut buf = vec![0u32; (HEADER + indir * 4 + key).div_ceil(4)];
    buf[0] = ETHTOOL_GRSSH;
    buf[2] = indir as u32;
    buf[3] = key as u32;
    if if_ioctl(iface, SIOCETHTOOL, |ifr| {
        ifr.ifr_ifru.ifru_data = buf.as_mut_ptr().cast();
    })
    .is_none()
    {
        return RssSymmetry::Unknown;
    }
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let key_start = HEADER + indir * 4;
    classify(
        bytes[16],
        bytes[17],
        bytes.get(key_start..key_start + key).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_configurations_are_recognised() {
        let sym_key: Vec<u8> = [0x6d, 0x5a].repeat(20);
        assert!(matches!(
            classify(HASH_TOEPLITZ, 0, &sym_key),
            RssSymmetry::Symmetric(_)
        ));
        assert!(matches!(
            classify(HASH_TOEPLITZ, 1, &[1, 2, 3, 4, 5]),
            RssSymmetry::Symmetric(_)
        ));
        assert!(matches!(
            classify(HASH_XOR, 0, &[]),
            RssSymmetry::Symmetric(_)
        ));
        // The default Microsoft key is not symmetric.
        let ms_key = [
            0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
            0x8f, 0xb0,
        ];
        assert_eq!(classify(HASH_TOEPLITZ, 0, &ms_key), RssSymmetry::Asymmetric);
    }

    #[test]
    fn interfaces_without_rss_are_unknown() {
        assert_eq!(rss_symmetry("lo"), RssSymmetry::Unknown);
        assert_eq!(rss_symmetry("no-such-if0"), RssSymmetry::Unknown);
    }
}
