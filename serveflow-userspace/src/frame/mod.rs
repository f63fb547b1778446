//! Frames as every packet source hands them on, and the link types they come in: the one
//! vocabulary shared by the sources (`capture`), the parser and the pipeline, so none of them
//! imports another for it.

pub mod mapped;
pub mod pool;

use std::sync::Arc;

/// What a packet source yields to the pipeline.
#[derive(Debug)]
pub enum Input {
    /// A frame.
    Packet(CapturedPacket),
    /// Nothing arrived for a while (live sources): time to fire due timeouts.
    Idle,
}

/// One captured frame.
#[derive(Clone, Debug)]
pub struct CapturedPacket {
    /// Capture timestamp, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Link type of `data`.
    pub link: LinkType,
    /// Captured bytes (may be shorter than on the wire).
    pub data: FrameData,
    /// Index of the input file it came from (its position on the command line; 0 for live
    /// and generated traffic).
    pub file: u32,
}

impl CapturedPacket {
    /// Done with the frame: its buffer goes back to the [`pool`] for the next one read.
    pub fn recycle(self) {
        self.data.recycle();
    }
}

/// A frame's bytes: its own buffer, or a range of a capture file mapped in memory (read in
/// place, see [`mapped`]). Either reads as a byte slice.
#[derive(Clone)]
pub enum FrameData {
    /// A buffer of its own (from the [`pool`]).
    Owned(Vec<u8>),
    /// `len` bytes at `start` of a mapped file.
    Mapped {
        /// The file.
        map: Arc<mapped::Mapping>,
        /// Offset of the frame in it.
        start: usize,
        /// Its length.
        len: usize,
    },
}

impl FrameData {
    /// `len` bytes at `at` of these (the caller checked they are there): the same mapped
    /// range narrowed, or a copy of an own buffer's part.
    pub fn part(&self, at: usize, len: usize) -> FrameData {
        match self {
            FrameData::Owned(v) => {
                FrameData::Owned(pool::copy_of(v.get(at..at + len).unwrap_or_default()))
            }
            FrameData::Mapped { map, start, .. } => FrameData::Mapped {
                map: map.clone(),
                start: start + at,
                len,
            },
        }
    }

    /// Done with the bytes: an own buffer goes back to the [`pool`].
    pub fn recycle(self) {
        if let FrameData::Owned(v) = self {
            pool::give(v);
        }
    }
}

impl std::ops::Deref for FrameData {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            FrameData::Owned(v) => v,
            FrameData::Mapped { map, start, len } => {
                map.bytes().get(*start..*start + *len).unwrap_or_default()
            }
        }
    }
}

impl From<Vec<u8>> for FrameData {
    fn from(v: Vec<u8>) -> Self {
        FrameData::Owned(v)
    }
}

impl PartialEq for FrameData {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for FrameData {}

impl std::fmt::Debug for FrameData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            FrameData::Owned(_) => "owned",
            FrameData::Mapped { .. } => "mapped",
        };
        write!(f, "FrameData({kind}, {} bytes)", self.len())
    }
}

/// Link-layer header types (the pcap LINKTYPE_* numbers) the parser understands, plus the
/// ones it recognises only to count and skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// BSD loopback: 4-byte address family in host byte order (0).
    Null,
    /// Ethernet II, with 802.1Q/802.1ad tags (1).
    Ethernet,
    /// PPP, with or without HDLC-like framing (9).
    Ppp,
    /// Raw IPv4 or IPv6, version in the first nibble (101, and 12 on some systems).
    Raw,
    /// Cisco HDLC: address, control, 2-byte protocol (104).
    CiscoHdlc,
    /// OpenBSD loopback: address family in network byte order (108).
    Loop,
    /// IEEE 802.11 frames (105): counted and skipped.
    Ieee80211,
    /// Linux cooked capture v1: 16-byte header (113).
    LinuxSll,
    /// Radiotap + 802.11 (127): counted and skipped.
    Radiotap,
    /// Per-Packet Information + 802.11 (192): counted and skipped.
    Ppi,
    /// Raw IPv4 (228).
    Ipv4,
    /// Raw IPv6 (229).
    Ipv6,
    /// Linux cooked capture v2: 20-byte header (276).
    LinuxSll2,
    /// Anything else, by number: counted and skipped.
    Other(u32),
}

impl From<u32> for LinkType {
    fn from(n: u32) -> Self {
        match n {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            9 => LinkType::Ppp,
            12 | 101 => LinkType::Raw,
            104 => LinkType::CiscoHdlc,
            105 => LinkType::Ieee80211,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            127 => LinkType::Radiotap,
            192 => LinkType::Ppi,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            276 => LinkType::LinuxSll2,
            other => LinkType::Other(other),
        }
    }
}
