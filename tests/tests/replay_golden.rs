//! `serveflow replay` on a committed capture against its golden verdicts: every flow's label,
//! deciding stage and model, trigger and packet count (latency varies run to run and is only
//! checked for sanity), plus the report files. The capture is the project's own smoke capture
//! (`serveflow_testbed::frames::smoke_capture(20, 20)`); `SERVEFLOW_BLESS=1` rewrites the golden
//! file after an intended change.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use std::{path::PathBuf, process::Command};

use serveflow_testbed::{frames, serveflow_bin};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The fields of a verdict that must not change, one line per flow, sorted.
fn decided(jsonl: &str) -> Vec<String> {
    let mut out: Vec<String> = jsonl
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let lat = v["latency_us"].as_f64().unwrap();
            let serving = v["serving_us"].as_f64().unwrap();
            assert!(lat >= 0.0 && serving >= 0.0 && serving <= lat + 1.0, "{l}");
            format!(
                "{} {} {} {} {} {} {} {} {} {}",
                v["src"],
                v["sport"],
                v["dst"],
                v["dport"],
                v["proto"],
                v["label"],
                v["stage"],
                v["model"],
                v["trigger"],
                v["packets"]
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn replay_matches_golden_verdicts_and_writes_the_report() {
    let pcap = fixtures().join("smoke.pcap");
    if !pcap.exists() || std::env::var_os("SERVEFLOW_BLESS").is_some() {
        std::fs::create_dir_all(fixtures()).unwrap();
        frames::write_pcap(&pcap, &frames::smoke_capture(20, 20).frames).unwrap();
    }
    let report = tempfile::tempdir().unwrap();
    let out = Command::new(serveflow_bin::path().unwrap())
        .arg("replay")
        .arg(&pcap)
        .args(["--out", "-", "--no-pin", "--report"])
        .arg(report.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let got = decided(&stdout);
    assert_eq!(got.len(), 42, "20 TCP + 20 UDP + 2 IPv6 flows\n{stderr}");
    assert!(
        stderr.contains("42 in, 42 verdicts (one per flow)"),
        "{stderr}"
    );

    let golden_path = fixtures().join("smoke.golden.txt");
    if std::env::var_os("SERVEFLOW_BLESS").is_some() || !golden_path.exists() {
        std::fs::write(&golden_path, got.join("\n") + "\n").unwrap();
    }
    let golden: Vec<String> = std::fs::read_to_string(&golden_path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        got,
        golden,
        "verdicts differ from {}",
        golden_path.display()
    );

    for f in [
        "latency_e2e.hgrm",
        "latency_serving.hgrm",
        "latency_e2e.hlog",
        "summary.json",
        "latency_cdf.svg",
        "config.toml",
    ] {
        assert!(report.path().join(f).is_file(), "{f} missing");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["flows_in"], 42);
    assert_eq!(summary["every_flow_one_verdict"], true);
    assert_eq!(summary["skipped_packets"]["fragment"], 2, "{summary}");
    let hgrm = std::fs::read_to_string(report.path().join("latency_e2e.hgrm")).unwrap();
    assert!(hgrm.contains("Total count    =           42"), "{hgrm}");
}

#[test]
fn replay_errors_are_one_clear_line() {
    let bin = serveflow_bin::path().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["/nonexistent.pcap".into()], "nonexistent.pcap"),
        (
            vec![
                fixtures().join("smoke.pcap").display().to_string(),
                "--models".into(),
                dir.path().display().to_string(),
            ],
            "serveflow-model.toml",
        ),
        (
            vec![
                fixtures().join("smoke.pcap").display().to_string(),
                "--speed".into(),
                "warp".into(),
            ],
            "expected max, realtime, virtual or a factor",
        ),
        (
            vec![
                fixtures().join("smoke.pcap").display().to_string(),
                "--split".into(),
                "test".into(),
            ],
            "give --labels",
        ),
    ];
    for (args, needle) in cases {
        let out = Command::new(&bin)
            .arg("replay")
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
