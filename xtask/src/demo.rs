//! `cargo xtask demo`: the README's main job on a built-in default, on a throwaway test bed.
//!
//! Builds serveflow (release) and a monitored link (`serveflow_testbed::span`): real clients
//! in one namespace talk to real servers in another (HTTPS to nine sites by name, plain HTTP,
//! DNS through dnsmasq, NTP, SSH, Redis, syslog; short exchanges and 4 MiB downloads), and
//! the servers' end mirrors the link into the namespace where `serveflow run` listens with the
//! bundled models. Then it shows the pinned maps with bpftool, stops serveflow with SIGINT,
//! prints its summary and scores every verdict against what the client did. Leaves nothing
//! behind but `target/demo/` (summary.json, the verdict lines, the latency report, the
//! servers' files and logs).

use std::{process::Command, time::Duration};

use anyhow::Context as _;
use serveflow_testbed::{exchanges, serveflow_bin::Running, span::SpanBed};

use crate::root;

/// Rounds of every client.
const ROUNDS: usize = 2;

pub fn run() -> anyhow::Result<()> {
    let bin = crate::build_serveflow()?;
    let out_dir = root().join("target/demo");
    // A previous run's verdicts must not be read as this one's.
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir)?;
    let summary = out_dir.join("summary.json");
    let report = out_dir.join("report");
    let verdicts = out_dir.join("verdicts.jsonl");

    let bed = SpanBed::new("demo").context("making the test bed (needs root)")?;
    eprintln!(
        "xtask: test bed: clients ({}, {}) <-veth-> servers ({}, {}), the link mirrored into {} ({})",
        bed.clients, bed.client_addr, bed.servers, bed.server_addr, bed.monitor, bed.monitor_dev
    );
    let servers = exchanges::Servers::start(&bed, &out_dir.join("servers"))?;
    eprintln!("xtask: servers up: dnsmasq, HTTP/HTTPS for {} sites, chronyd, sshd, redis-server, syslog sink", exchanges::SITES.len());

    let mut cmd = bed.command(&bed.monitor, &bin.to_string_lossy());
    cmd.args(["run", "-i", &bed.monitor_dev, "--summary"])
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

    eprintln!("xtask: clients at work ({ROUNDS} rounds): curl, chronyd -Q, redis-cli, ssh, logger");
    let done = exchanges::run_clients(&bed, &out_dir.join("servers"), ROUNDS)?;
    let did: Vec<String> = done
        .iter()
        .map(|(k, n)| format!("{} {n}", k.title()))
        .collect();
    eprintln!("xtask: clients done: {}", did.join(", "));
    // Past the longest wait (1 s), so every flow is decided by its own trigger (packets or
    // timeout) before the stop, not by the shutdown.
    std::thread::sleep(Duration::from_millis(1200));

    let pins = format!("/sys/fs/bpf/serveflow_v3/{}", bed.monitor_dev);
    for (map, lines) in [("counters", 14), ("flows", 24)] {
        eprintln!("xtask: $ bpftool map dump pinned {pins}/{map}   (first lines)");
        if let Ok(out) = Command::new("bpftool")
            .args(["map", "dump", "pinned", &format!("{pins}/{map}")])
            .output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines().take(lines) {
                eprintln!("  {line}");
            }
        }
    }

    let (code, stderr) = serveflow.stop(libc_sigint())?;
    drop(servers);
    for line in &stderr[seen..] {
        eprintln!("{line}");
    }
    anyhow::ensure!(code == 0, "serveflow exited with {code}");

    let lines = exchanges::read_verdicts(&verdicts)?;
    let score = exchanges::score(&bed, &lines);
    eprintln!("\nxtask: per class serveflow answered, and the stage that decided (verdicts.jsonl)");
    eprint!("{}", exchanges::class_table(&lines));
    eprintln!("\nxtask: scored against what each client did (right: the service, or the protocol where the models have no class for it; named: the service)");
    eprint!("{}", exchanges::table(&score));
    for w in &score.wrong {
        eprintln!("  wrong: {w}");
    }
    for u in &score.unmatched {
        eprintln!("  no client made: {u}");
    }
    let total = score.total();
    let inline = total.inline();
    eprintln!(
        "xtask: {} flows, {} right ({:.0}%), {} decided inline ({:.0}%)",
        total.flows,
        total.right,
        percent(total.right, total.flows),
        inline,
        percent(inline, total.flows)
    );
    eprintln!("xtask: {}", exchanges::latency_line(&lines));
    eprintln!(
        "xtask: verdicts (one JSON line per flow) in {}; summary in {}; latency report (index.html to open in a browser, .hgrm, .hlog, latency_cdf.svg) in {}",
        verdicts.display(),
        summary.display(),
        report.display()
    );
    Ok(())
}

fn percent(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

/// SIGINT, without pulling libc into xtask for one constant.
fn libc_sigint() -> i32 {
    2
}
