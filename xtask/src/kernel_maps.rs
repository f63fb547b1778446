//! `cargo xtask kernel-maps`: the kernel memory each flow slot costs. For each map size,
//! `serveflow run` (release build) attaches to the veth test bed with `--flow-map-entries N`,
//! `serveflow status --json` reads the per-flow maps' `memlock` (the kernel's own accounting,
//! what `bpftool map show` prints) and the instance is stopped. The table goes to stdout and
//! `target/kernel-maps.md`.

use std::{fmt::Write as _, io::Write as _};

use anyhow::Context as _;
use serveflow_testbed::VethPair;

use crate::root;

/// Map sizes measured: 64 Ki, the default 256 Ki, 1 Mi and 4 Mi entries.
const SIZES: [u32; 4] = [1 << 16, 1 << 18, 1 << 20, 1 << 22];

pub fn run() -> anyhow::Result<()> {
    let bin = crate::build_serveflow()?;
    let bed = VethPair::new("kmaps", 1).context("making the veth test bed (needs root)")?;
    let mut table = String::from(
        "| --flow-map-entries | flow map MiB | verdict map MiB | kernel bytes per flow slot |\n|---:|---:|---:|---:|\n",
    );
    let summary = root().join("target/kernel-maps-summary.json");
    for n in SIZES {
        let entries = n.to_string();
        let flags = ["--flow-map-entries", entries.as_str(), "--out", "/dev/null"];
        let (status, _) = crate::live_bench::serve_while(&bed, &bin, &summary, &flags, || {
            let status = std::process::Command::new(&bin)
                .args(["status", "-i", &bed.dev_a, "--json"])
                .output()
                .context("running serveflow status")?;
            anyhow::ensure!(
                status.status.success(),
                "serveflow status: {}",
                String::from_utf8_lossy(&status.stderr)
            );
            Ok(status)
        })?;
        let st: serde_json::Value = serde_json::from_slice(&status.stdout)?;
        let mib = |i: usize| st[0]["maps"][i]["memlock_bytes"].as_f64().unwrap_or(0.0) / 1048576.0;
        let row = format!(
            "| {n} | {:.1} | {:.1} | **{:.0}** |\n",
            mib(0),
            mib(1),
            st[0]["kernel_bytes_per_flow"].as_f64().unwrap_or(0.0)
        );
        eprint!("xtask: {row}");
        table.push_str(&row);
    }
    let mut doc = String::new();
    writeln!(
        doc,
        "Kernel memory of the per-flow maps (memlock), `cargo xtask kernel-maps`:\n\n{table}"
    )?;
    let path = root().join("target/kernel-maps.md");
    std::fs::write(&path, &doc).with_context(|| format!("writing {}", path.display()))?;
    std::io::stdout().lock().write_all(doc.as_bytes())?;
    Ok(())
}
