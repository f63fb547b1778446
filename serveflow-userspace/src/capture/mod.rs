//! Packet sources. Each yields raw Ethernet frames to the same parser.

pub mod afxdp;
