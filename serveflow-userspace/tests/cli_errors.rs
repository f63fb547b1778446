//! The command line on bad input, as an operator meets it: each case ends in one clear line
//! and the documented exit status (0 done, 1 failed, 2 bad command line), fast, before any
//! work. The resource cases (`--workers 100000`, a 4-billion-entry map, 100000 packets of
//! nPrint) are refusals at parse time, not runs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn serveflow(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_serveflow"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running serveflow");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn smoke() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/smoke.pcap")
}

/// Exit 2, and stderr names the option and says `expect`.
fn refused(args: &[&str], option: &str, expect: &str) {
    let (code, _, err) = serveflow(args);
    assert_eq!(code, 2, "{args:?}: {err}");
    assert!(err.contains(option), "{args:?} should name {option}: {err}");
    assert!(
        err.contains(expect),
        "{args:?} should say {expect:?}: {err}"
    );
    assert!(err.lines().count() <= 6, "{args:?}: long message: {err}");
}

#[test]
fn numeric_options_are_checked_when_parsed() {
    let pcap = smoke();
    let pcap = pcap.to_str().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let max_threads = format!("1..={}", cores * 4);
    refused(
        &["run", "-i", "lo", "--workers", "100000"],
        "--workers",
        &max_threads,
    );
    refused(
        &["run", "-i", "lo", "--workers", "0"],
        "--workers",
        "outside",
    );
    refused(
        &["run", "-i", "lo", "--slow-threads", "0"],
        "--slow-threads",
        "outside",
    );
    refused(
        &["run", "-i", "lo", "--queues", "0"],
        "--queues",
        "outside 1..=64",
    );
    refused(
        &["run", "-i", "lo", "--flow-map-entries", "4000000000"],
        "--flow-map-entries",
        "1..=268435456",
    );
    refused(
        &["run", "-i", "lo", "--flow-map-entries", "0"],
        "--flow-map-entries",
        "outside",
    );
    refused(
        &["run", "-i", "lo", "--max-flows", "0"],
        "--max-flows",
        "outside",
    );
    refused(
        &["replay", "--workers", "5000", pcap],
        "--workers",
        &max_threads,
    );
    refused(
        &["replay", "--max-batch", "0", pcap],
        "--max-batch",
        "outside 1..=4096",
    );
    refused(
        &["replay", "--slow-queue", "0", pcap],
        "--slow-queue",
        "outside",
    );
    refused(
        &["replay", "--threshold", "2", pcap],
        "--threshold",
        "outside -1..=1",
    );
    refused(
        &["replay", "--fast-wait-ms", "nan", pcap],
        "--fast-wait-ms",
        "outside",
    );
    refused(
        &[
            "extract",
            "--packets",
            "100000",
            "--features",
            "nprint",
            pcap,
        ],
        "--packets",
        "outside 1..=64",
    );
    refused(
        &["extract", "--interval-ms", "0", pcap],
        "--interval-ms",
        "outside",
    );
    refused(
        &["calibrate", "--max-drop", "2"],
        "--max-drop",
        "outside 0..=1",
    );
    refused(
        &["calibrate", "--max-escalated", "150"],
        "--max-escalated",
        "outside 0..=100",
    );
}

#[test]
fn conflicting_options_are_refused() {
    let pcap = smoke();
    let pcap = pcap.to_str().unwrap();
    refused(
        &["replay", "--mode", "fast-only", "--threshold", "0.5", pcap],
        "--threshold",
        "fast-only",
    );
    refused(
        &["run", "-i", "lo", "--drain-only", "--out", "x"],
        "--drain-only",
        "cannot be used",
    );
    refused(
        &[
            "replay",
            "--fast-wait-ms",
            "50",
            "--max-wait-ms",
            "10",
            pcap,
        ],
        "--fast-wait-ms",
        "longer than --max-wait-ms",
    );
    refused(
        &["bench", "--write-capture", "x.pcap", "--memory"],
        "--write-capture",
        "cannot be used",
    );
    refused(
        &["bench", "--steady", "60", "--memory"],
        "--steady",
        "cannot be used",
    );
    refused(&["bench", "--steady", "0"], "--steady", "outside 1..=86400");
}

#[test]
fn the_metrics_flag_takes_off_and_an_address() {
    // It once panicked in the argument parser on any value: now both get past parsing and the
    // run stops at the missing interface, with an error and no panic.
    for value in ["off", "127.0.0.1:0"] {
        let (code, _, err) = serveflow(&["run", "-i", "sf-no-such0", "--metrics", value]);
        assert!(code != 0 && code != 101, "{value}: exit {code}: {err}");
        assert!(!err.contains("panicked"), "{value}: {err}");
    }
    refused(
        &["run", "-i", "lo", "--metrics", "nowhere"],
        "--metrics",
        "nowhere",
    );
}

#[test]
fn unreadable_inputs_fail_unless_keep_going() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.pcap");
    std::fs::write(&notes, "meeting notes, not a capture").unwrap();
    let missing = dir.path().join("missing.pcap");
    let good = smoke();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for p in [&good, &missing, &notes] {
            a.push(p.display().to_string());
        }
        a
    };
    for command in [vec!["replay"], vec!["extract", "--out", "/dev/null"]] {
        let a = args(&command);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let (code, _, err) = serveflow(&a);
        assert_eq!(code, 1, "{a:?}: {err}");
        assert!(err.contains("2 of 3 inputs cannot be read"), "{err}");
        assert!(err.contains("missing.pcap: No such file"), "{err}");
        assert!(err.contains("notes.pcap: not a pcap"), "{err}");
        assert_eq!(
            err.matches("os error 2").count(),
            1,
            "one cause per line: {err}"
        );

        let mut keep = command.clone();
        keep.push("--keep-going");
        let a = args(&keep);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let (code, _, err) = serveflow(&a);
        assert_eq!(code, 0, "{a:?}: {err}");
        assert!(
            err.contains("missing.pcap"),
            "the summary lists skipped inputs: {err}"
        );
        assert!(err.contains("notes.pcap"), "{err}");
    }
}

#[test]
fn impossible_record_is_counted_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(smoke()).unwrap();
    // The first record's incl_len (bytes 32..36 of a pcap file) set to 0xF0000000.
    bytes[32..36].copy_from_slice(&0xF000_0000u32.to_le_bytes());
    let bad = dir.path().join("bad.pcap");
    std::fs::write(&bad, &bytes).unwrap();
    let report = dir.path().join("report");
    let (code, _, err) = serveflow(&[
        "replay",
        bad.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("ended early: "), "{err}");
    assert!(err.contains("ended at byte 24 after 0 packets"), "{err}");
    assert!(err.contains("4026531840"), "{err}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["captures_ended_early"].as_array().unwrap().len(), 1);
}

#[test]
fn output_paths_are_checked_before_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let (code, _, err) = serveflow(&[
        "replay",
        smoke().to_str().unwrap(),
        "--report",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--report"), "{err}");
    assert!(err.contains("is not a directory"), "{err}");
    assert!(
        !err.contains("flows:"),
        "refused before the replay ran: {err}"
    );
}

#[test]
fn models_check_exit_status_and_json() {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/service");
    let (code, out, err) = serveflow(&["models", "--check", bundled.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ok: "), "{out}");

    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&bundled).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let fast = dir.path().join("fast.txt");
    let text = std::fs::read_to_string(&fast).unwrap();
    std::fs::write(&fast, &text[..200]).unwrap();
    let (code, out, _) = serveflow(&["models", "--check", dir.path().to_str().unwrap(), "--json"]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["field"], "fast.model");
    assert!(v["problem"].as_str().unwrap().contains("no trees"), "{v}");
}

#[test]
fn help_documents_exit_codes() {
    let (code, out, _) = serveflow(&["replay", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("Exit status:"), "{out}");
    assert!(out.contains("2  bad command line"), "{out}");
}

#[test]
fn os_errors_are_printed_once() {
    let pcap = smoke();
    for args in [
        vec![
            "replay",
            pcap.to_str().unwrap(),
            "--labels",
            "/nonexistent/labels.csv",
        ],
        vec![
            "extract",
            pcap.to_str().unwrap(),
            "--services",
            "/nonexistent/services.toml",
        ],
        vec![
            "replay",
            pcap.to_str().unwrap(),
            "--models",
            "/nonexistent/models",
        ],
    ] {
        let (code, _, err) = serveflow(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert_eq!(err.matches("os error 2").count(), 1, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn status_json_with_nothing_running_is_an_empty_list() {
    let pinned = std::path::Path::new("/sys/fs/bpf")
        .join(serveflow_common::PIN_SCHEMA)
        .read_dir()
        .map_or(0, |d| d.count());
    let (code, stdout, stderr) = serveflow(&["status", "--json"]);
    if pinned > 0 {
        eprintln!("SKIPPED: {pinned} instance(s) pinned on this machine");
        return;
    }
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "[]");
    let (code, _, stderr) = serveflow(&["status"]);
    assert_eq!(code, 1, "a person asking gets told: {stderr}");
    assert!(stderr.contains("is `serveflow run` running?"), "{stderr}");
}

#[test]
fn piped_stderr_gets_no_progress_lines_and_quiet_no_info() {
    let pcap = smoke();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_serveflow"))
            .args(args)
            .arg(&pcap)
            .arg("--no-pin")
            .env_remove("RUST_LOG")
            .output()
            .expect("running serveflow");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let plain = run(&["replay"]);
    assert!(plain.contains("42 in, 42 verdicts"), "{plain}");
    assert!(
        !plain.contains("replay: ") && !plain.contains('\r'),
        "no progress line on a pipe: {plain}"
    );
    let verbose = run(&["-v", "replay"]);
    assert!(
        verbose.contains("DEBUG") || verbose.len() >= plain.len(),
        "{verbose}"
    );
    let quiet = run(&["-q", "replay"]);
    assert!(!quiet.contains(" INFO "), "{quiet}");
    assert!(
        quiet.contains("42 in, 42 verdicts"),
        "the summary is the output: {quiet}"
    );
    let (code, _, err) = serveflow(&["-q", "-v", "status"]);
    assert_eq!(code, 2, "--quiet and --verbose conflict: {err}");
}

/// What serveflow wrote to a terminal (a pty made by `script`, from bsdutils).
fn on_a_terminal(args: &str) -> String {
    let command = format!(
        "{} {args} {} --no-pin",
        env!("CARGO_BIN_EXE_serveflow"),
        smoke().display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .env_remove("RUST_LOG")
        .output()
        .expect("running script (bsdutils, installed by cargo xtask setup)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_terminal_gets_the_progress_line_unless_quiet() {
    let shown = on_a_terminal("replay");
    assert!(
        shown.contains("replay: 0 packets, 0 flows, 0 escalated")
            || shown.contains(" flows, 0 escalated ("),
        "{shown:?}"
    );
    assert!(shown.contains("42 in, 42 verdicts"), "{shown:?}");
    let quiet = on_a_terminal("-q replay");
    assert!(!quiet.contains("replay: "), "{quiet:?}");
    assert!(quiet.contains("42 in, 42 verdicts"), "{quiet:?}");
}

#[test]
fn replay_json_summary_is_for_machines() {
    let pcap = smoke();
    let pcap = pcap.to_str().unwrap();
    let (code, stdout, stderr) = serveflow(&["replay", pcap, "--no-pin", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let s: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(s["flows_in"], 42);
    let per_class: u64 = s["result"]["by_class"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["flows"].as_u64().unwrap())
        .sum();
    assert_eq!(per_class, 42, "every flow under its class: {s:#}");
    assert!(
        !stderr.contains("flows:     42 in"),
        "no text summary too: {stderr}"
    );
    let (code, _, stderr) = serveflow(&["replay", pcap, "--json", "--out", "-"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("both write to stdout"), "{stderr}");
}

#[test]
fn bench_json_replaces_the_tables_and_memory_counts_exactly_the_flows_asked() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    if !data.join("ndpi/pcap").is_dir() {
        eprintln!("SKIPPED: {} is absent", data.display());
        return;
    }
    let (code, stdout, stderr) = serveflow(&[
        "bench",
        "--memory",
        "--flows",
        "1500",
        "--json",
        "--data",
        data.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["memory"]["flows"], 1500, "{v:#}");
    assert!(v["memory"]["peak_rss_kib"].as_u64().unwrap() > 0);
    assert!(!stdout.contains("| workers |"), "no tables with --json");
}

#[test]
fn extract_json_summary_counts_the_rows_written() {
    let pcap = smoke();
    let pcap = pcap.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rows = dir.path().join("flows.csv");
    let (code, stdout, stderr) =
        serveflow(&["extract", pcap, "--out", rows.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let s: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let lines = std::fs::read_to_string(&rows).unwrap().lines().count() as u64;
    assert_eq!(s["flows_written"].as_u64(), Some(lines - 1), "{s:#}");
    assert_eq!(s["flows"]["started"], s["flows_written"], "{s:#}");
    assert!(s["packets"].as_u64().unwrap() > 0, "{s:#}");
    assert!(
        !stderr.contains("flows (ended"),
        "no text summary too: {stderr}"
    );
    let (code, _, stderr) = serveflow(&["extract", pcap, "--json"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--out"), "{stderr}");
}
