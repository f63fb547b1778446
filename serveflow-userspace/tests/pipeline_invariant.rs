//! The serving pipeline's accounting: every flow that enters a flow table gets exactly one
//! verdict, whether the slow pool keeps up or not (a one-slot queue forces fallbacks), with one
//! worker or several, and malformed frames are counted, never fatal. On the virtual clock a
//! replay is deterministic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use std::{
    collections::HashSet,
    io::Write,
    path::Path,
    sync::{Arc, Mutex},
};

use serveflow::{
    capture::{amplify::Amplified, synthetic::tcp_flows},
    config::PoolConfig,
    config::{Mode, Speed},
    frame::{CapturedPacket, Input, LinkType},
    model::dir::ModelDir,
    pipeline::{self, cascade::Cascade, Feed, PipelineConfig, RunResult},
    verdict::VerdictOutput,
};

fn cascade(mode: Mode) -> Arc<Cascade> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/service");
    let mut c = Cascade::from_models(ModelDir::load(&dir).unwrap());
    c.apply_mode(mode);
    Arc::new(c)
}

/// Packets the bundled service models' slow stage waits for.
fn bundled_slow_packets() -> u64 {
    let c = cascade(Mode::Cascade);
    c.packets(c.inline.len())
}

/// A writer the test reads back.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);
impl Write for Lines {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn run(
    mode: Mode,
    config: &PipelineConfig,
    source: Vec<CapturedPacket>,
) -> (RunResult, Vec<serde_json::Value>) {
    let lines = Lines::default();
    let out = VerdictOutput::new(Box::new(lines.clone())).unwrap();
    let r = pipeline::run(
        cascade(mode),
        config,
        Feed::Shared(source.into_iter().map(Input::Packet)),
        &out,
        None,
        None,
    );
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let verdicts = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (r, verdicts)
}

/// 64 flows x 6 packets, looped 40 times with new addresses: 2,560 flows; plus junk frames.
fn traffic() -> Vec<CapturedPacket> {
    let base = tcp_flows(64, 6);
    let mut packets: Vec<CapturedPacket> = Amplified::new(&base, 40, 50_000).collect();
    for (i, junk) in [vec![], vec![0xff; 7], vec![0u8; 60]]
        .into_iter()
        .enumerate()
    {
        packets.insert(
            i * 100,
            CapturedPacket {
                ts_ns: packets[i * 100].ts_ns,
                link: LinkType::Ethernet,
                data: junk.into(),
                file: 0,
            },
        );
    }
    packets
}

fn check_accounting(r: &RunResult, verdicts: &[serde_json::Value], flows: u64) {
    assert_eq!(r.flows_in(), flows, "flows entering the tables");
    assert_eq!(r.stats.total(), flows, "verdicts recorded");
    assert_eq!(verdicts.len() as u64, flows, "verdict lines written");
    let keys: HashSet<String> = verdicts
        .iter()
        .map(|v| format!("{}:{}-{}:{}", v["src"], v["sport"], v["dst"], v["dport"]))
        .collect();
    assert_eq!(
        keys.len() as u64,
        flows,
        "one verdict per flow, no duplicates"
    );
    for v in verdicts {
        for field in [
            "src",
            "sport",
            "dst",
            "dport",
            "proto",
            "first_seen_us",
            "label",
            "confidence",
            "stage",
            "packets",
            "latency_us",
            "serving_us",
            "trigger",
        ] {
            assert!(v.get(field).is_some(), "{field} missing in {v}");
        }
    }
    let skipped: u64 = r.workers.iter().flat_map(|w| w.skipped.values()).sum();
    assert_eq!(skipped, 3, "the three junk frames are counted");
    assert_eq!(r.thread_panics, 0);
}

#[test]
fn every_flow_gets_one_verdict_when_the_slow_pool_is_overloaded() {
    // Everything escalates into a one-slot queue: most flows fall back, none is lost.
    let config = PipelineConfig {
        speed: Speed::Max,
        pool: PoolConfig {
            threads: 1,
            queue: 1,
            max_batch: 1,
            max_wait_us: 0,
            ..PoolConfig::default()
        },
        pin: false,
        ..PipelineConfig::default()
    };
    let (r, verdicts) = run(Mode::SlowOnly, &config, traffic());
    check_accounting(&r, &verdicts, 2560);
    let s = r.stats.summary();
    let fallback = s.verdicts["fallback"];
    let slow = s.verdicts["slow"];
    assert_eq!(fallback + slow, 2560, "{s:?}");
    assert!(fallback > 0, "a one-slot queue must overflow: {s:?}");
    let full: u64 = r.workers.iter().map(|w| w.fallback_full).sum();
    assert_eq!(full, fallback);
    assert!(verdicts.iter().all(|v| v["stage"] != "fast"));
}

#[test]
fn several_workers_share_the_flows_and_lose_none() {
    let config = PipelineConfig {
        workers: 3,
        speed: Speed::Max,
        pin: false,
        ..PipelineConfig::default()
    };
    let (r, verdicts) = run(Mode::Cascade, &config, traffic());
    check_accounting(&r, &verdicts, 2560);
    assert_eq!(r.workers.len(), 3);
    assert!(
        r.workers.iter().all(|w| w.flows.started > 0),
        "every worker owns a shard"
    );
}

#[test]
fn virtual_clock_replays_are_deterministic() {
    let config = PipelineConfig {
        speed: Speed::Virtual,
        pin: false,
        ..PipelineConfig::default()
    };
    let decided = |verdicts: Vec<serde_json::Value>| {
        let mut v: Vec<String> = verdicts
            .iter()
            .map(|v| {
                format!(
                    "{}:{} {} {} {} {}",
                    v["src"], v["sport"], v["label"], v["stage"], v["trigger"], v["packets"]
                )
            })
            .collect();
        v.sort();
        v
    };
    let (r1, a) = run(Mode::Cascade, &config, traffic());
    let (_, b) = run(Mode::Cascade, &config, traffic());
    check_accounting(&r1, &a, 2560);
    assert_eq!(decided(a), decided(b));
    // Each flow's 6 packets are 64 x 50 µs apart: far below the waits, so every decision is
    // made at a stage's packet count, and the latency is the capture's wait plus serving.
    assert_eq!(r1.stats.tally.triggers[1], 0, "no timeouts");
}

#[test]
fn realtime_replay_waits_for_packets_and_counts_the_wait() {
    // 4 flows x 6 packets; packet p of every flow is p ms after the first, so the slow stage's
    // last packet comes at least 3 ms after the first: real-time latency includes that wait.
    let config = PipelineConfig {
        speed: Speed::Realtime(1.0),
        pin: false,
        ..PipelineConfig::default()
    };
    let (r, verdicts) = run(Mode::SlowOnly, &config, tcp_flows(4, 6));
    assert_eq!(r.flows_in(), 4);
    assert_eq!(verdicts.len(), 4);
    assert!(
        r.wall_s >= 0.005,
        "paced: the capture spans 5 ms, ran {} s",
        r.wall_s
    );
    // The slow stage decides at its packet count, or at the flow's 6th and last packet.
    let slow_packets = bundled_slow_packets().min(6);
    for v in &verdicts {
        assert_eq!(v["stage"], "slow", "{v}");
        assert_eq!(v["packets"], slow_packets, "{v}");
        // The wait part (latency less serving) is at least the 3 ms between packets 1 and 4,
        // less any delay in handling packet 1 on a busy machine.
        let wait = v["latency_us"].as_f64().unwrap() - v["serving_us"].as_f64().unwrap();
        assert!(
            wait >= 2_000.0,
            "latency must include the 3 ms wait for packets: {v}"
        );
    }
}

#[test]
fn per_worker_sources_forward_flows_to_their_owner() {
    // Two sources that split packets by position, so a flow's packets arrive at both (as
    // with a NIC whose RSS is not symmetric): each flow must still meet in one worker.
    let packets = traffic();
    let (a, b): (Vec<_>, Vec<_>) = packets
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let source = |v: Vec<(usize, CapturedPacket)>| v.into_iter().map(|(_, p)| Input::Packet(p));
    let lines = Lines::default();
    let out = VerdictOutput::new(Box::new(lines.clone())).unwrap();
    let config = PipelineConfig {
        speed: Speed::Max,
        pin: false,
        ..PipelineConfig::default()
    };
    let r = pipeline::run(
        cascade(Mode::Cascade),
        &config,
        Feed::PerWorker {
            sources: vec![source(a), source(b)],
            symmetric: false,
        },
        &out,
        None,
        None,
    );
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let verdicts: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    check_accounting(&r, &verdicts, 2560);
    assert_eq!(r.workers.len(), 2);
    // Every flow saw all 6 of its packets in one table.
    let packets: u64 = r.workers.iter().map(|w| w.flow_packets).sum();
    assert_eq!(packets, 2560 * 6);
}
