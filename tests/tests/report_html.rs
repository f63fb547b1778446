//! `serveflow replay --report DIR` writes `index.html`, one self-contained page, and a real
//! browser (Debian's headless chromium, installed by `cargo xtask setup`) renders it: its DOM
//! has the stage, class, trigger and latency tables with this run's numbers, the CDF plot and
//! the configuration, and it renders to a PNG. Without chromium the test says SKIPPED.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use std::{path::PathBuf, process::Command};

use serveflow_testbed::{engines::on_path, serveflow_bin};

fn chromium(profile: &std::path::Path) -> Command {
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

#[test]
fn the_html_report_renders_in_a_real_browser() {
    if !on_path("chromium") {
        eprintln!("SKIPPED: chromium is needed: run `cargo xtask setup`");
        return;
    }
    let pcap = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/smoke.pcap");
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let out = Command::new(serveflow_bin::path().unwrap())
        .arg("replay")
        .arg(&pcap)
        .args(["--no-pin", "--report"])
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = report.join("index.html");
    let url = format!("file://{}", page.display());
    let profile = dir.path().join("profile");

    let dom = chromium(&profile)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    for id in ["stages", "classes", "triggers", "latency", "cdf", "config"] {
        assert!(
            dom.contains(&format!("id=\"{id}\"")),
            "{id} missing from the DOM"
        );
    }
    assert!(dom.contains("<b>42</b>"), "the run's 42 flows: {dom}");
    assert!(dom.contains("<polyline"), "the CDF plot is inline");
    assert!(dom.contains("[pipeline]"), "the run's configuration");

    let png = dir.path().join("index.png");
    let shot = chromium(&profile)
        .arg(format!("--screenshot={}", png.display()))
        .args(["--window-size=1100,2600", "--hide-scrollbars"])
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        bytes.len() > 20_000,
        "a page with tables and a plot, not a blank one"
    );
    if let Some(keep) = std::env::var_os("SERVEFLOW_KEEP_REPORT_PNG") {
        std::fs::copy(&png, keep).unwrap();
    }
}
