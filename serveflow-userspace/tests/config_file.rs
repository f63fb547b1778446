//! One configuration file for every command: a report's `config.toml` drives the same replay
//! again, flags override the file, and a bad file is refused like a bad flag.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn serveflow(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_serveflow"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running serveflow");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn smoke() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/smoke.pcap")
}

fn verdict_lines(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            // Latency and serving time are measured, so they differ between runs.
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("latency_us");
            o.remove("serving_us");
            v.to_string()
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn a_reports_config_replays_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let report = dir.path().join("report");
    let pcap = smoke();
    let (code, err) = serveflow(&[
        "replay",
        pcap.to_str().unwrap(),
        "--mode",
        "fast-only",
        "--fast-wait-ms",
        "5",
        "--slow-queue",
        "8",
        "--out",
        first.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let config = report.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    for line in [
        "mode = \"fast-only\"",
        "fast_wait_ms = 5.0",
        "queue = 8",
        "models = ",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    // The same settings from the file; --out and --report override the file's.
    let (code, err) = serveflow(&[
        "replay",
        pcap.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--out",
        second.to_str().unwrap(),
        "--report",
        dir.path().join("report2").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (a, b) = (verdict_lines(&first), verdict_lines(&second));
    assert!(!a.is_empty());
    assert_eq!(a, b, "the report's config reproduces the run");
    assert!(
        b.iter().all(|l| l.contains("\"stage\":\"fast\"")),
        "fast-only from the file"
    );
    let again = std::fs::read_to_string(dir.path().join("report2/config.toml")).unwrap();
    assert!(again.contains("mode = \"fast-only\""), "{again}");
}

#[test]
fn every_command_takes_the_file_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[pipeline]\nfast_wait_ms = 50.0\nmax_wait_ms = 10.0\n",
    )
    .unwrap();
    let pcap = smoke();
    let pcap = pcap.to_str().unwrap();
    let bad = bad.to_str().unwrap();
    for args in [
        &["replay", pcap, "--config", bad][..],
        &["extract", pcap, "--config", bad],
        &["models", "--config", bad],
        &["bench", "--config", bad],
        &["run", "-i", "lo", "--config", bad],
    ] {
        let (code, err) = serveflow(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("--fast-wait-ms ([pipeline] fast_wait_ms) = 50"),
            "{args:?}: {err}"
        );
    }
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[pipelines]\nworkers = 2\n").unwrap();
    let (code, err) = serveflow(&["replay", pcap, "--config", unknown.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("unknown.toml") && err.contains("pipelines"),
        "{err}"
    );
    // The example file is every default, and every command takes it.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/serveflow.toml");
    let (code, err) = serveflow(&["extract", pcap, "--config", example.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}
