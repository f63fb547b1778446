//! serveflow: classify network flows from their first packets, with a fast model for most flows
//! and a slow, accurate one for the uncertain few (ServeFlow, arXiv 2402.03694).
//!
//! The data path, and the module each stage lives in:
//!
//! ```text
//!  NIC ─► XDP program (serveflow-ebpf) ─► AF_XDP rings ─► capture::afxdp ┐
//!          flow map, counters  [xdp]                                     ├─► pipeline (workers):
//!  pcap/pcapng files ─────────────────────────► capture::{file, merge} ─┘   parse ─► flow ─► features
//!     ─► model::tree (inline stages) ─► router ─┬─► verdict ─────────────────► verdict, report
//!                                               └─► slow_pool (model::onnx) ─┘
//! ```
//!
//! - [`system`]: start-up checks (capabilities, memlock, bpffs, interfaces).
//! - [`xdp`]: load, attach and pin the XDP program; read its maps.
//! - [`capture`]: packet sources; [`capture::afxdp`] receives from AF_XDP sockets.
//! - [`parse`]: one parser for live and captured frames, same rules as the XDP program.
//! - [`pipeline`]: the serving pipeline (workers, cascade, slow pool hand-off, latency).
//! - [`limits`]: the range of every option; the subcommands live in the `serveflow` binary.

pub mod calibrate;
pub mod capture;
pub mod config;
pub mod extract;
pub mod features;
pub mod flow;
pub mod frame;
pub mod labels;
pub mod limits;
pub mod live;
pub mod model;
pub mod parse;
pub mod periodic;
pub mod pipeline;
pub mod profile;
pub mod report;
pub mod router;
pub mod services;
pub mod system;
pub mod verdict;
pub mod xdp;
