//! `cargo xtask demo`: the README's main job on a built-in default, on a throwaway test bed.
//!
//! Builds serveflow (release), makes two network namespaces joined by a veth, starts
//! `serveflow run` on one end, shows the pinned maps with bpftool, replays a generated capture
//! (TCP and UDP flows over IPv4 and IPv6, plus ARP, ICMP and fragments) from the other end
//! with tcpreplay, stops serveflow with SIGINT and prints its summary. Leaves nothing behind
//! but `target/demo/` (the capture, summary.json, the verdict lines and the latency report).

use std::{process::Command, time::Duration};

use anyhow::Context as _;
use serveflow_testbed::{
    frames::{smoke_capture, write_pcap},
    serveflow_bin::Running,
    VethPair,
};

use crate::root;

pub fn run() -> anyhow::Result<()> {
    let bin = crate::build_serveflow()?;
    let out_dir = root().join("target/demo");
    std::fs::create_dir_all(&out_dir)?;

    let capture = smoke_capture(200, 100);
    let pcap = out_dir.join("demo.pcap");
    write_pcap(&pcap, &capture.frames)?;
    let summary = out_dir.join("summary.json");
    let report = out_dir.join("report");
    let verdicts = out_dir.join("verdicts.jsonl");

    let bed = VethPair::new("demo", 2).context("making the veth test bed (needs root)")?;
    eprintln!(
        "xtask: test bed: {} ({}) <-veth-> {} ({}), 2 queues",
        bed.dev_a, bed.ns_a, bed.dev_b, bed.ns_b
    );
    let mut cmd = bed.command(&bed.ns_a, &bin.to_string_lossy());
    cmd.args(["run", "-i", &bed.dev_a, "--summary"])
        .arg(&summary)
        .arg("--out")
        .arg(&verdicts)
        .arg("--report")
        .arg(&report);
    let mut serveflow = Running::spawn(cmd)?;
    serveflow.wait_for("serveflow: ready", Duration::from_secs(30))?;
    for line in &serveflow.stderr {
        eprintln!("{line}");
    }
    let seen = serveflow.stderr.len();

    eprintln!(
        "xtask: replaying {} frames ({} TCP/UDP packets in {} flows) from {}",
        capture.frames.len(),
        capture.tcp_udp_packets,
        capture.flows,
        bed.dev_b
    );
    bed.replay_from_b(&pcap, 5000)?;
    // Past the longest wait (1 s), so every flow is decided by its own trigger (packets or
    // timeout) before the stop, not by the shutdown.
    std::thread::sleep(Duration::from_millis(1200));

    let pins = format!("/sys/fs/bpf/serveflow_v3/{}", bed.dev_a);
    eprintln!("xtask: $ bpftool map dump pinned {pins}/counters   (first entries)");
    if let Ok(out) = Command::new("bpftool")
        .args(["map", "dump", "pinned", &format!("{pins}/counters")])
        .output()
    {
        for line in String::from_utf8_lossy(&out.stdout).lines().take(14) {
            eprintln!("  {line}");
        }
    }
    eprintln!("xtask: $ bpftool map dump pinned {pins}/flows   (first entry)");
    if let Ok(out) = Command::new("bpftool")
        .args(["map", "dump", "pinned", &format!("{pins}/flows")])
        .output()
    {
        for line in String::from_utf8_lossy(&out.stdout).lines().take(24) {
            eprintln!("  {line}");
        }
    }

    let (code, stderr) = serveflow.stop(libc_sigint())?;
    for line in &stderr[seen..] {
        eprintln!("{line}");
    }
    anyhow::ensure!(code == 0, "serveflow exited with {code}");
    eprintln!(
        "xtask: sent {} TCP/UDP packets in {} flows (the kernel steers only the packets the \
         models still need; it passes and counts the rest); one verdict per flow expected; \
         summary written to {}",
        capture.tcp_udp_packets,
        capture.flows,
        summary.display()
    );
    eprintln!(
        "xtask: one verdict per flow in {}; latency report (index.html to open in a browser, .hgrm, .hlog, summary.json, latency_cdf.svg) in {}",
        verdicts.display(),
        report.display()
    );
    Ok(())
}

/// SIGINT, without pulling libc into xtask for one constant.
fn libc_sigint() -> i32 {
    2
}
