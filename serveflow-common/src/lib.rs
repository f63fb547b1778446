//! Plain `#[repr(C)]` types shared by the XDP program (`serveflow-ebpf`) and userspace.
//!
//! Everything here is `no_std`, fixed-size and free of padding holes the verifier or `bpftool`
//! could trip on. The `user` feature adds `aya::Pod` so userspace can read the maps.
//! Changing any struct here changes the pinned maps' layout: bump [`PIN_SCHEMA`] with it.
#![no_std]

pub mod counters;
pub mod flow_key;
pub mod wire;

pub use counters::XdpCounter;
pub use flow_key::{FlowKey, FlowStats};

/// Directory under bpffs holding this program's pinned maps; the suffix is the layout version
/// of every shared struct, so a new layout never reads maps pinned by an old one.
pub const PIN_SCHEMA: &str = "serveflow_v3";

/// Entries of the kernel flow map (LRU: the least recently seen flow is evicted when full).
pub const FLOW_MAP_ENTRIES: usize = 1 << 18;

/// Slot of the `STEER` array holding the packets per flow userspace needs (0: every packet).
pub const STEER_PACKETS: u32 = 0;

/// Classes the per-class action array holds (class indices of a model).
pub const MAX_CLASSES: usize = 256;

/// What the XDP program does with a decided flow's later packets, per class (the values of
/// the `ACTIONS` array).
#[repr(u32)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Action {
    /// Pass to the stack (the default).
    #[default]
    Pass = 0,
    /// Drop in XDP.
    Drop = 1,
    /// Pass with the class's mark (`MARKS`) in the XDP metadata; the TC ingress program sets
    /// it as the packet's skb mark (XDP runs before there is an skb to mark).
    Mark = 2,
}

impl Action {
    /// The action an `ACTIONS` slot holds (None: a value no build writes).
    #[inline(always)]
    pub const fn from_u32(value: u32) -> Option<Action> {
        match value {
            0 => Some(Action::Pass),
            1 => Some(Action::Drop),
            2 => Some(Action::Mark),
            _ => None,
        }
    }
}

/// The XDP metadata a [`Action::Mark`] leaves for the TC program.
pub mod action {
    /// First word of the 8-byte XDP metadata carrying a mark (the second is the mark), so the
    /// TC program never takes another program's metadata for ours.
    pub const MARK_META_MAGIC: u32 = 0x5346_4d4b;
    /// Bytes of that metadata.
    pub const MARK_META_LEN: usize = 8;
}

/// XDP metadata in front of a frame redirected to AF_XDP: the kernel's arrival time, so
/// userspace features see when each packet arrived, not when a batch was read.
pub mod arrival {
    /// First word of the metadata (then 4 bytes of padding, then the time as a u64).
    pub const META_MAGIC: u32 = 0x5346_5453;
    /// Bytes of the metadata.
    pub const META_LEN: usize = 16;
}

/// Highest RX queue index + 1 that can have an AF_XDP socket.
pub const MAX_QUEUES: usize = 64;

/// IP protocol numbers the data path tracks.
pub mod proto {
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}
