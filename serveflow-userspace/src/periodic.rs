//! Traffic Refinery's periodic counters: every interval of capture time, the packets and bytes
//! each active flow sent in each direction, and the same summed per service, as JSON lines.
//!
//! Intervals are aligned to multiples of the interval length (in capture time), so runs over
//! the same capture always cut at the same instants. A flow that ends mid-interval reports its
//! last partial interval when it ends.

use std::{collections::BTreeMap, io::Write};

use serde::Serialize;

use crate::{
    flow::{ip, Flow, FlowId, FlowState, FlowTable, IntervalCounts},
    services::ServiceMap,
};

#[derive(Serialize)]
struct FlowRow<'a> {
    kind: &'static str,
    interval_start_us: u64,
    #[serde(flatten)]
    flow: FlowId,
    service: &'a str,
    #[serde(flatten)]
    counts: IntervalCounts,
}

#[derive(Serialize)]
struct ServiceRow<'a> {
    kind: &'static str,
    interval_start_us: u64,
    service: &'a str,
    flows: u64,
    #[serde(flatten)]
    counts: IntervalCounts,
}

/// The exporter.
pub struct PeriodicExport {
    interval_ns: u64,
    /// Start of the current interval; None before the first packet.
    start_ns: Option<u64>,
    out: Box<dyn Write>,
    per_service: BTreeMap<String, (u64, IntervalCounts)>,
    error: Option<std::io::Error>,
    /// Rows written.
    pub rows: u64,
}

impl PeriodicExport {
    /// Exports every `interval_ms` of capture time into `out`.
    pub fn new(interval_ms: u64, out: Box<dyn Write>) -> Self {
        PeriodicExport {
            interval_ns: interval_ms.max(1) * 1_000_000,
            start_ns: None,
            out,
            per_service: BTreeMap::new(),
            error: None,
            rows: 0,
        }
    }

    fn write(&mut self, row: &impl Serialize) {
        if self.error.is_some() {
            return;
        }
        let result = serde_json::to_writer(&mut self.out, row)
            .map_err(std::io::Error::other)
            .and_then(|()| self.out.write_all(b"\n"));
        match result {
            Ok(()) => self.rows += 1,
            Err(e) => self.error = Some(e),
        }
    }

    fn flow_row<S>(&mut self, flow: &Flow<S>, counts: IntervalCounts, services: &ServiceMap) {
        let Some(start) = self.start_ns else { return };
        let (id, _, _) = services.classify(
            flow.server_name.as_deref(),
            ip(flow.dst),
            flow.first_seen_ns,
        );
        let service = id
            .and_then(|i| services.names().get(i))
            .map_or("", String::as_str)
            .to_owned();
        self.write(&FlowRow {
            kind: "flow",
            interval_start_us: start / 1000,
            flow: flow.id(),
            service: &service,
            counts,
        });
        let entry = self.per_service.entry(service).or_default();
        entry.0 += 1;
        entry.1.add(&counts);
    }

    fn close_interval<S: FlowState>(&mut self, table: &mut FlowTable<S>, services: &ServiceMap) {
        table.export_intervals(|flow, counts| self.flow_row(flow, counts, services));
        let start = self.start_ns.unwrap_or(0) / 1000;
        for (service, (flows, counts)) in std::mem::take(&mut self.per_service) {
            self.write(&ServiceRow {
                kind: "service",
                interval_start_us: start,
                service: &service,
                flows,
                counts,
            });
        }
    }

    /// Call before each packet at `ts_ns`: closes every interval that ended before it.
    pub fn before_packet<S: FlowState>(
        &mut self,
        ts_ns: u64,
        table: &mut FlowTable<S>,
        services: &ServiceMap,
    ) {
        let aligned = ts_ns - ts_ns % self.interval_ns;
        match self.start_ns {
            None => self.start_ns = Some(aligned),
            Some(start) if aligned > start => {
                self.close_interval(table, services);
                // Empty intervals in between produce no rows.
                self.start_ns = Some(aligned);
            }
            Some(_) => {}
        }
    }

    /// Call for each flow as it ends: reports its last partial interval.
    pub fn flow_ended<S>(&mut self, flow: &Flow<S>, services: &ServiceMap) {
        if !flow.interval.is_empty() {
            self.flow_row(flow, flow.interval, services);
        }
    }

    /// Closes the last interval (after the table was flushed) and flushes the output.
    pub fn finish(mut self) -> std::io::Result<u64> {
        let start = self.start_ns.unwrap_or(0) / 1000;
        for (service, (flows, counts)) in std::mem::take(&mut self.per_service) {
            self.write(&ServiceRow {
                kind: "service",
                interval_start_us: start,
                service: &service,
                flows,
                counts,
            });
        }
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.out.flush()?;
        Ok(self.rows)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{capture::synthetic::tcp_frame, flow::FlowConfig, parse::parse_ethernet};

    /// A Write that keeps what it gets, shared with the test.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_packet_is_counted_once_per_interval_and_service() {
        let services = ServiceMap::from_toml(
            "[[service]]\nname = \"doc\"\nprefixes = [\"192.0.2.0/24\"]",
            "test",
        )
        .unwrap();
        let sink = Sink::default();
        let mut export = PeriodicExport::new(1000, Box::new(sink.clone()));
        let mut table: FlowTable<()> = FlowTable::new(FlowConfig::default(), ());
        let a = [10, 0, 0, 1];
        let doc = [192, 0, 2, 1];
        let other = [198, 51, 100, 1];
        // (time ms, frame): two flows over three one-second intervals, one idle gap.
        let packets = [
            (100, tcp_frame(a, 1000, doc, 443, 0x02, 0)),
            (200, tcp_frame(doc, 443, a, 1000, 0x12, 0)),
            (900, tcp_frame(a, 2000, other, 80, 0x02, 0)),
            (1500, tcp_frame(a, 1000, doc, 443, 0x18, 100)),
            (3200, tcp_frame(a, 2000, other, 80, 0x18, 10)),
        ];
        for (ms, frame) in &packets {
            let ts = ms * 1_000_000;
            export.before_packet(ts, &mut table, &services);
            let p = parse_ethernet(frame).unwrap();
            table.observe(ts, &p, &mut |f, _| export.flow_ended(&f, &services));
        }
        table.flush(&mut |f, _| export.flow_ended(&f, &services));
        export.finish().unwrap();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let rows: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let packets_of = |kind: &str| -> u64 {
            rows.iter()
                .filter(|r| r["kind"] == kind)
                .map(|r| r["fwd_packets"].as_u64().unwrap() + r["bwd_packets"].as_u64().unwrap())
                .sum()
        };
        assert_eq!(packets_of("flow"), 5);
        assert_eq!(packets_of("service"), 5);
        let first: Vec<_> = rows
            .iter()
            .filter(|r| r["interval_start_us"] == 0 && r["kind"] == "service")
            .map(|r| {
                (
                    r["service"].as_str().unwrap().to_owned(),
                    r["flows"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(first, vec![("".to_owned(), 1), ("doc".to_owned(), 1)]);
        assert!(rows.iter().any(|r| r["interval_start_us"] == 3_000_000));
        assert!(
            !rows.iter().any(|r| r["interval_start_us"] == 2_000_000),
            "empty interval"
        );
    }
}
