//! Offline flow extraction: capture files -> parser -> flow table -> one record per flow.
//!
//! The same parser and flow table as the live path, so a flow extracted here for training is
//! the flow the appliance would see live.

use std::{collections::BTreeMap, path::PathBuf};

use serde::Serialize;

use crate::{
    capture::{
        file::{CaptureError, EarlyEnd},
        merge::{FileReport, MergedCaptures},
    },
    flow::{ip, EndReason, Flow, FlowConfig, FlowCounters, FlowId, FlowState, FlowTable},
    parse::{self, Skip},
    periodic::PeriodicExport,
    services::{ServiceMap, ServiceSource},
};
use serveflow_common::proto;

/// One extracted flow.
#[derive(Clone, Debug, Serialize)]
pub struct FlowRecord {
    /// The flow's 5-tuple.
    #[serde(flatten)]
    pub flow: FlowId,
    /// First packet, µs since the epoch.
    pub first_seen_us: u64,
    /// Last packet, µs since the epoch.
    pub last_seen_us: u64,
    /// Packets, both directions.
    pub packets: u64,
    /// Bytes, both directions.
    pub bytes: u64,
    /// Packets from the initiator.
    pub src2dst_packets: u64,
    /// Why the flow ended.
    pub end: EndReason,
    /// Service (empty when none matched).
    pub service: String,
    /// Server name the decision used, or the one seen (SNI, Host, or DNS answer).
    pub server_name: String,
    /// What decided the service.
    pub service_source: Option<ServiceSource>,
}

impl FlowRecord {
    /// The record of an ended flow, its service looked up in `services`.
    pub fn new<S>(flow: &Flow<S>, end: EndReason, services: &ServiceMap) -> Self {
        let (service, name, source) = services.classify(
            flow.server_name.as_deref(),
            ip(flow.dst),
            flow.first_seen_ns,
        );
        FlowRecord {
            service: service
                .and_then(|id| services.names().get(id).cloned())
                .unwrap_or_default(),
            server_name: name.unwrap_or_default().to_owned(),
            service_source: source,
            flow: flow.id(),
            first_seen_us: flow.first_seen_ns / 1000,
            last_seen_us: flow.last_seen_ns / 1000,
            packets: flow.packets,
            bytes: flow.bytes,
            src2dst_packets: flow.fwd_packets,
            end,
        }
    }
}

/// What an extraction run read and skipped.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ExtractReport {
    /// Packets read from all files.
    pub packets: u64,
    /// Packets that belong to a TCP/UDP flow.
    pub flow_packets: u64,
    /// Packets skipped, by reason.
    pub skipped: BTreeMap<&'static str, u64>,
    /// Flow-table counters.
    pub flows: FlowCounters,
    /// Files that ended early (truncated or corrupt), with where and why.
    pub early_ends: Vec<(PathBuf, EarlyEnd)>,
    /// Files with records or blocks skipped, one line each.
    pub skipped_blocks: Vec<String>,
}

/// Reads `paths` as one timeline and calls `on_flow` for every flow as it ends, with the
/// service map (whose DNS cache the run fills from the DNS responses it reads).
///
/// With `periodic`, it also exports Traffic Refinery's per-interval counters.
pub fn extract<S: FlowState>(
    paths: &[PathBuf],
    config: FlowConfig,
    state_config: S::Config,
    services: &mut ServiceMap,
    mut periodic: Option<&mut PeriodicExport>,
    mut on_flow: impl FnMut(Flow<S>, EndReason, &ServiceMap),
) -> Result<ExtractReport, CaptureError> {
    let mut captures = MergedCaptures::open(paths)?;
    let mut table: FlowTable<S> = FlowTable::new(config, state_config);
    let mut report = ExtractReport::default();
    let mut skipped = [0u64; Skip::ALL.len()];
    for packet in captures.by_ref() {
        report.packets += 1;
        match parse::parse_link(packet.link, &packet.data) {
            Ok(parsed) => {
                report.flow_packets += 1;
                if parsed.proto == proto::UDP && parsed.sport == 53 {
                    let payload = &parsed.frame[parsed.payload_offset()..parsed.ip_end()];
                    services.dns.observe(payload, packet.ts_ns);
                }
                let map = &*services;
                if let Some(p) = periodic.as_deref_mut() {
                    p.before_packet(packet.ts_ns, &mut table, map);
                }
                table.observe(packet.ts_ns, &parsed, &mut |f, r| {
                    if let Some(p) = periodic.as_deref_mut() {
                        p.flow_ended(&f, map);
                    }
                    on_flow(f, r, map)
                });
            }
            Err(skip) => skipped[skip as usize] += 1,
        }
        packet.recycle();
    }
    let map = &*services;
    table.flush(&mut |f, r| {
        if let Some(p) = periodic.as_deref_mut() {
            p.flow_ended(&f, map);
        }
        on_flow(f, r, map)
    });
    report.flows = table.counters();
    for skip in Skip::ALL {
        if skipped[skip as usize] > 0 {
            report.skipped.insert(skip.name(), skipped[skip as usize]);
        }
    }
    let files = captures.reports();
    report.skipped_blocks = files.iter().filter_map(|f| f.skipped_line()).collect();
    report.early_ends = files
        .into_iter()
        .filter_map(
            |FileReport {
                 path, early_end, ..
             }| { early_end.map(|e| (path, e)) },
        )
        .collect();
    Ok(report)
}
