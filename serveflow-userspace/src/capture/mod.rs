//! Packet sources. Each yields raw frames with their link type to the same parser:
//! [`afxdp`] live from AF_XDP sockets (always Ethernet), [`file`](mod@file) and [`merge`] from captures,
//! read in place through [`source`] where a file can be mapped.
//! What they yield, a [`crate::frame::CapturedPacket`], is defined below them in [`crate::frame`].
//! [`amplify`] makes millions of flows of them for benchmarks, and [`pcap_out`] writes frames
//! back out for other tools.

pub mod afxdp;
pub mod amplify;
pub mod file;
pub mod inputs;
pub mod merge;
pub mod pcap_out;
pub mod source;
pub mod synthetic;
