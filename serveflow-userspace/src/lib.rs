//! serveflow: classify network flows from their first packets, with a fast model for most flows
//! and a slow, accurate one for the uncertain few (ServeFlow, arXiv 2402.03694).
//!
//! The data path, and the module each stage lives in:
//!
//! ```text
//!  NIC ─► XDP program (serveflow-ebpf) ─► AF_XDP rings ─► capture::afxdp ─► live ┐
//!          flow map, counters  [xdp]                                             ├─► pipeline:
//!  pcap/pcapng files ─────────────────────────► capture::{file, merge} ──────────┘   parse
//!     ─► flow ─► features ─► model::tree (inline stages) ─► router ─┬─► verdict, report,
//!                                           pipeline::slow_pool (model::onnx) ◄┘   export
//! ```
//!
//! The modules are layered (see the README's architecture section): each imports only from
//! the ones below it. The names most callers need are re-exported here:
//!
//! - settings: [`Config`] (one TOML file for every command), [`PipelineConfig`];
//! - packets: [`CapturedPacket`], [`Input`], [`LinkType`], [`parse_link`], [`Packet`], [`Skip`];
//! - flows: [`FlowTable`], [`FlowConfig`], [`FlowId`];
//! - models and serving: [`ModelDir`], [`Cascade`], [`run_pipeline`], [`Feed`],
//!   [`RunResult`], [`Verdict`], [`VerdictOutput`];
//! - export: [`Exporter`] over [`export::Target`]s (IPFIX, Kafka, files);
//! - live: [`live::run`] with [`LiveRun`], giving a [`LiveOutcome`].
//!
//! The modules stay public for the trainer, the fuzz targets, the benches and the tests; what
//! only the library itself uses is `pub(crate)`.

#![warn(missing_docs)]

pub mod calibrate;
pub mod capture;
pub mod config;
pub mod export;
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
pub mod ticker;
pub mod verdict;
pub mod xdp;

pub use config::{Config, ConfigError, Mode, Speed};
pub use export::Exporter;
pub use flow::{FlowConfig, FlowId, FlowTable};
pub use frame::{CapturedPacket, Input, LinkType};
pub use live::{LiveError, LiveOutcome, LiveRun};
pub use model::dir::{ModelDir, ModelDirError};
pub use parse::{parse_link, Packet, Skip};
pub use pipeline::{cascade::Cascade, run as run_pipeline, Feed, PipelineConfig, RunResult};
pub use verdict::{StageKind, Trigger, Verdict, VerdictOutput};
