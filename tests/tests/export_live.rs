//! `serveflow run --export` on the throwaway test bed: the smoke capture is replayed into the
//! veth where serveflow listens, and every verdict it writes reaches both a real IPFIX
//! collector (nfacctd) and a real Kafka-protocol broker (tansu, read back by confluent-kafka), each
//! running beside serveflow in its network namespace: one record and one message per flow,
//! with the verdict's 5-tuple and label. The same run's metrics endpoint serves every metric
//! the Grafana dashboard (`deploy/grafana/serveflow.json`) queries. Needs root and the engines
//! `cargo xtask setup` installs; without them it says SKIPPED.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use std::{collections::BTreeSet, time::Duration};

use serveflow_testbed::{
    engines::{kafka_python, on_path, tansu_bin, IpfixRow, Nfacctd, Tansu},
    frames::smoke_capture,
    live::{self, Scratch},
    netns::is_root,
    VethPair,
};

#[test]
fn a_live_run_exports_every_verdict_to_ipfix_and_kafka() {
    let engines = tansu_bin().zip(kafka_python());
    let (true, true, Some((tansu, python))) = (is_root(), on_path("nfacctd"), engines) else {
        eprintln!("SKIPPED: needs root, nfacctd, tansu and confluent-kafka (`cargo xtask setup`)");
        return;
    };
    let bed = VethPair::new("export", 1).unwrap();
    let scratch = Scratch::new("export-live");
    let dir = tempfile::tempdir().unwrap();
    let collector = Nfacctd::start(Some(&bed.ns_a), dir.path(), 4739).unwrap();
    let broker = Tansu::start(&tansu, Some(&bed.ns_a), 9092).unwrap();
    let capture = smoke_capture(20, 10);
    let pcap = scratch.pcap(&capture.frames).unwrap();
    let summary_path = scratch.summary();
    let running = live::start(
        &bed,
        "native",
        &summary_path,
        &[
            "--export",
            "ipfix+udp://127.0.0.1:4739",
            "--export",
            "kafka://127.0.0.1:9092/verdicts",
        ],
    )
    .unwrap();
    bed.replay_from_b(&pcap, 2000).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let metrics = live::scrape_metrics(&bed).unwrap();
    let (code, stderr) = running.stop(libc::SIGINT).unwrap();
    let stderr = stderr.join("\n");
    assert_eq!(code, 0, "{stderr}");

    let verdicts = live::verdicts(&summary_path).unwrap();
    assert_eq!(verdicts.len() as u64, capture.flows, "{stderr}");
    let s = live::summary(&summary_path).unwrap();
    let exports = s["serving"]["exports"].as_array().expect("export counters");
    assert_eq!(exports.len(), 2, "{s:#}");
    for e in exports {
        assert_eq!(e["sent"].as_u64(), Some(capture.flows), "{e}");
        assert_eq!(e["dropped_full"].as_u64(), Some(0), "{e}");
        assert_eq!(e["dropped_down"].as_u64(), Some(0), "{e}");
        assert_eq!(e["failed"].as_u64(), Some(0), "{e}");
    }

    let mut want: Vec<IpfixRow> = verdicts.iter().map(IpfixRow::of_verdict).collect();
    let mut got = collector.rows(want.len());
    want.sort();
    got.sort();
    assert_eq!(got, want, "nfacctd's records are the verdicts");

    dashboard_metrics_exist(&metrics);

    let messages = broker.consume(&python, verdicts.len()).unwrap();
    assert_eq!(messages.len(), verdicts.len(), "one message per flow");
    let flows = |vs: &mut dyn Iterator<Item = &serde_json::Value>| -> BTreeSet<String> {
        vs.map(|v| format!("{} {}", live::flow_of(v), v["label"]))
            .collect()
    };
    assert_eq!(
        flows(&mut messages.iter().map(|(_, v)| v)),
        flows(&mut verdicts.iter()),
        "the messages are the verdicts"
    );
}

/// Every metric the dashboard queries is a sample of `scrape` (one live run's endpoint), and
/// the 16 ms histogram bucket its "decided within 16 ms" panel divides by is there.
fn dashboard_metrics_exist(scrape: &str) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/serveflow.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("serveflow_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 15, "{queried:?}");
    for name in &queried {
        let served = scrape.lines().any(|l| {
            l.strip_prefix(name.as_str())
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        });
        assert!(
            served,
            "the dashboard queries {name}, the endpoint has none:\n{scrape}"
        );
    }
    assert!(
        scrape.contains("serveflow_verdict_latency_seconds_bucket{le=\"0.016\"}"),
        "{scrape}"
    );
}
