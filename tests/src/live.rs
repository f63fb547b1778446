//! Driving `serveflow run` on a [`VethPair`] from the live integration tests.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    serveflow_bin::{self, Running},
    VethPair,
};

/// A per-process scratch path under the temp dir.
pub fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("serveflow-{}-{name}", std::process::id()))
}

/// One test's scratch files (capture, summary, verdict lines, config), removed on drop,
/// panics included.
#[derive(Debug)]
pub struct Scratch {
    tag: String,
    made: std::cell::RefCell<Vec<PathBuf>>,
}

impl Scratch {
    /// Files named after `tag`.
    pub fn new(tag: &str) -> Self {
        Scratch {
            tag: tag.to_owned(),
            made: Default::default(),
        }
    }

    /// A scratch path `name`, removed on drop.
    pub fn path(&self, name: &str) -> PathBuf {
        let p = tmp(&format!("{}-{name}", self.tag));
        self.made.borrow_mut().push(p.clone());
        p
    }

    /// `frames` written as a capture, 1 ms apart.
    pub fn pcap(&self, frames: &[Vec<u8>]) -> anyhow::Result<PathBuf> {
        let p = self.path("capture.pcap");
        crate::frames::write_pcap(&p, frames)?;
        Ok(p)
    }

    /// Where a run's `--summary` goes (its verdict lines go beside it, see [`start`]).
    pub fn summary(&self) -> PathBuf {
        let p = self.path("summary.json");
        self.made.borrow_mut().push(verdicts_path(&p));
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for p in self.made.borrow().iter() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The sum of a run's XDP outcome counters (`kernel_counters` of its summary): every packet
/// the program saw has exactly one, so this equals `packets`.
pub fn kernel_outcomes(counters: &serde_json::Value) -> u64 {
    serveflow_common::XdpCounter::ALL
        .iter()
        .filter(|c| c.is_outcome())
        .map(|c| counters[c.name()].as_u64().unwrap_or(0))
        .sum()
}

/// Reads a run's `--summary` JSON.
pub fn summary(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Starts `serveflow run` on `bed`'s serving end in XDP `mode` with its summary at `summary`
/// and verdict lines beside it (`<summary>.verdicts.jsonl`), plus `extra` arguments, and waits
/// until it is ready.
pub fn start(
    bed: &VethPair,
    mode: &str,
    summary: &Path,
    extra: &[&str],
) -> anyhow::Result<Running> {
    let bin = serveflow_bin::path()?;
    let mut cmd = bed.command(&bed.ns_a, &bin.display().to_string());
    cmd.args(["run", "-i", &bed.dev_a, "-m", mode, "--summary"])
        .arg(summary)
        .arg("--out")
        .arg(verdicts_path(summary))
        .args(extra);
    let mut running = Running::spawn(cmd)?;
    running.wait_for("serveflow: ready", Duration::from_secs(30))?;
    Ok(running)
}

/// The metrics endpoint of the instance on `bed`'s serving end (its default address, inside
/// its namespace), the whole HTTP answer.
pub fn scrape_metrics(bed: &VethPair) -> anyhow::Result<String> {
    let out = bed
        .command(&bed.ns_a, "bash")
        .args([
            "-c",
            "exec 3<>/dev/tcp/127.0.0.1/9464; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3",
        ])
        .output()
        .context("scraping the metrics endpoint")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where [`start`] writes the verdict lines of the run whose summary is at `summary`.
pub fn verdicts_path(summary: &Path) -> PathBuf {
    summary.with_extension("verdicts.jsonl")
}

/// The verdict lines of a run, parsed.
pub fn verdicts(summary: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let path = verdicts_path(summary);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("verdict line {l}")))
        .collect()
}

/// A verdict's flow as `src:sport-dst:dport/proto`.
pub fn flow_of(v: &serde_json::Value) -> String {
    format!(
        "{}:{}-{}:{}/{}",
        v["src"], v["sport"], v["dst"], v["dport"], v["proto"]
    )
}

/// Whether the XDP program is still attached to the serving end.
pub fn xdp_attached(bed: &VethPair) -> anyhow::Result<bool> {
    let link = bed
        .command(&bed.ns_a, "ip")
        .args(["link", "show", &bed.dev_a])
        .output()?;
    Ok(String::from_utf8_lossy(&link.stdout).contains("xdp"))
}

/// The instance's pin directory for the serving end.
pub fn pin_dir(bed: &VethPair) -> PathBuf {
    Path::new("/sys/fs/bpf/serveflow_v3").join(&bed.dev_a)
}

/// Packets the bundled service models' deepest stage (their slow stage) waits for: what the
/// kernel steers to userspace per undecided flow by default.
pub fn bundled_stage_packets() -> anyhow::Result<u64> {
    let manifest =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/service/serveflow-model.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let slow = text
        .split("\n[slow]")
        .nth(1)
        .with_context(|| format!("{}: no [slow] section", manifest.display()))?;
    slow.lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.strip_prefix("packets = "))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("{}: no [slow] packets", manifest.display()))
}
