//! `cargo xtask live-bench`: new flows per second through the live path on the veth test bed.
//!
//! The sender (tcpreplay in the peer namespace, on this same machine) replays a capture of
//! 2-packet UDP flows in loops with `--unique-ip`, so every loop is new flows. First the
//! sender's own ceiling is measured with nothing attached; then, for each offered rate,
//! `serveflow run` (release, bundled models, one queue and worker, one slow thread) classifies what
//! arrives and the run counts as zero-loss when every flow sent got its verdict and no socket
//! dropped a frame. Last, the AF_XDP packet rate at the sender's top speed, classifying every
//! packet against draining only, on those 2-packet flows (decided inline, and every one
//! escalated to the slow model) and on real traffic (nDPI's captures from ../shared/data,
//! when present).

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use serveflow_testbed::{
    frames::{flow_packet_counts, read_pcap, udp4, write_pcap},
    serveflow_bin::Running,
    VethPair,
};

use crate::root;

/// Flows in the capture (each loop rewrites their addresses).
const FLOWS: u32 = 5_000;
/// Alternating drain-only / classifying rounds per packet-rate workload.
const RATE_ROUNDS: u32 = 3;

/// Packets and seconds tcpreplay reports ("Actual: N packets (...) sent in S seconds").
fn actual(stdout: &str) -> Option<(u64, f64)> {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("Actual:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let packets = words.get(1)?.parse().ok()?;
    let secs_at = words.iter().position(|w| *w == "seconds")?;
    let secs = words.get(secs_at - 1)?.parse().ok()?;
    Some((packets, secs))
}

fn tcpreplay(
    bed: &VethPair,
    pcap: &Path,
    rate: Option<u64>,
    loops: u64,
) -> anyhow::Result<(u64, f64)> {
    let mut cmd = bed.command(&bed.ns_b, "tcpreplay");
    cmd.arg(format!("--intf1={}", bed.dev_b))
        .arg(format!("--loop={loops}"))
        .arg("--unique-ip");
    match rate {
        Some(pps) => cmd.arg(format!("--pps={pps}")),
        None => cmd.arg("--topspeed"),
    };
    let out = cmd.arg(pcap).output().context("running tcpreplay")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "tcpreplay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    actual(&stdout).with_context(|| format!("no 'Actual:' line in tcpreplay's output:\n{stdout}"))
}

/// Runs `serveflow run` with `flags` on the bed while `send` runs, stops it with SIGINT and
/// returns what `send` returned with the run's summary.
pub(crate) fn serve_while<T>(
    bed: &VethPair,
    bin: &Path,
    summary: &Path,
    flags: &[&str],
    send: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, serde_json::Value)> {
    let mut cmd = bed.command(&bed.ns_a, &bin.to_string_lossy());
    cmd.args([
        "run",
        "-i",
        &bed.dev_a,
        "--metrics",
        "off",
        "--status-interval",
        "0",
    ])
    .args(flags)
    .arg("--summary")
    .arg(summary);
    let mut serveflow = Running::spawn(cmd)?;
    serveflow.wait_for("serveflow: ready", Duration::from_secs(30))?;
    let sent = send()?;
    std::thread::sleep(Duration::from_millis(500));
    let (code, stderr) = serveflow.stop(2)?;
    anyhow::ensure!(
        code == 0,
        "serveflow exited with {code}: {}",
        stderr.join("\n")
    );
    let s = serde_json::from_str(&std::fs::read_to_string(summary)?)?;
    Ok((sent, s))
}

/// The Ethernet pcap captures of nDPI's test suite in ../shared/data (fuzzed ones left out),
/// their frames that fit a 1500-byte MTU, as one capture: (path, packets, flows). None when
/// the data is absent.
fn real_mix(out_dir: &Path) -> anyhow::Result<Option<(std::path::PathBuf, u64, u64)>> {
    let dir = root().join("../shared/data/ndpi/pcap");
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut names: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "pcap") && !p.to_string_lossy().contains("fuzz")
        })
        .collect();
    names.sort();
    let mut frames = Vec::new();
    for path in names {
        // pcapng files named .pcap and other link types are skipped.
        if let Ok(f) = read_pcap(&path) {
            frames.extend(f.into_iter().filter(|f| f.len() <= 1514));
        }
    }
    let flows = flow_packet_counts(&frames).len() as u64;
    let path = out_dir.join("ndpi-mix.pcap");
    write_pcap(&path, &frames)?;
    Ok(Some((path, frames.len() as u64, flows)))
}

pub fn run() -> anyhow::Result<()> {
    let bin = crate::build_serveflow()?;
    let out_dir = root().join("target/live-bench");
    std::fs::create_dir_all(&out_dir)?;
    let pcap = out_dir.join("udp-flows.pcap");
    let mut frames = Vec::new();
    for i in 0..FLOWS {
        let client = [10, 1, (i >> 8) as u8, i as u8];
        let server = [192, 0, 2, 53];
        let sport = 20_000 + (i % 40_000) as u16;
        frames.push(udp4(client, sport, server, 53, b"query-payload"));
        frames.push(udp4(server, 53, client, sport, b"answer-payload"));
    }
    write_pcap(&pcap, &frames)?;
    let packets_per_loop = frames.len() as u64;

    // The sender alone: nothing attached on the receiving end.
    let bed = VethPair::new("lbench", 1).context("making the veth test bed (needs root)")?;
    let (sent, secs) = tcpreplay(&bed, &pcap, None, 20)?;
    let ceiling = sent as f64 / secs.max(1e-9);
    eprintln!("xtask: sender ceiling (tcpreplay --topspeed, nothing attached): {ceiling:.0} packets/s = {:.0} new flows/s", ceiling / 2.0);

    let mut rows = Vec::new();
    for flows_per_s in [25_000u64, 50_000, 75_000, 100_000, 150_000] {
        let pps = flows_per_s * 2;
        if pps as f64 > ceiling * 1.05 {
            eprintln!(
                "xtask: {flows_per_s} flows/s is beyond the sender's ceiling; stopping the sweep"
            );
            break;
        }
        let loops = (pps * 3).div_ceil(packets_per_loop).max(1);
        let summary = out_dir.join(format!("summary-{flows_per_s}.json"));
        let ((sent, secs), s) = serve_while(&bed, &bin, &summary, &[], || {
            tcpreplay(&bed, &pcap, Some(pps), loops)
        })?;
        let flows_sent = sent / 2;
        let flows_in = s["serving"]["flows_in"].as_u64().unwrap_or(0);
        let drops = s["socket_drops"]["rx_dropped"].as_u64().unwrap_or(0)
            + s["socket_drops"]["rx_ring_full"].as_u64().unwrap_or(0)
            + s["socket_drops"]["rx_invalid_descs"].as_u64().unwrap_or(0);
        let fallback = s["serving"]["result"]["verdicts"]["fallback"]
            .as_u64()
            .unwrap_or(0);
        let achieved = flows_sent as f64 / secs.max(1e-9);
        let zero_loss =
            flows_in == flows_sent && drops == 0 && s["serving"]["every_flow_one_verdict"] == true;
        eprintln!(
            "xtask: offered {flows_per_s} flows/s: sent {flows_sent} flows in {secs:.2} s ({achieved:.0}/s), classified {flows_in}, socket drops {drops}, fallbacks {fallback}: {}",
            if zero_loss { "zero loss" } else { "LOSS" }
        );
        rows.push(serde_json::json!({
            "offered_flows_per_s": flows_per_s,
            "achieved_flows_per_s": achieved,
            "flows_sent": flows_sent,
            "flows_classified": flows_in,
            "socket_drops": drops,
            "fallbacks": fallback,
            "zero_loss": zero_loss,
        }));
    }
    // AF_XDP packet rate at the sender's top speed: serveflow classifying every packet
    // (--no-steer) against the same sockets drained with no processing (--drain-only), for the
    // 2-packet flows above (every packet an early packet of a new flow) and, where
    // ../shared/data is present, for real traffic (nDPI's captures, ~12 packets a flow).
    // The worst case: every packet an early packet of a new flow and every flow escalated to
    // the slow model (a routing threshold of 0: any uncertainty escalates). The bundled models
    // decide these DNS-like flows inline, so without it they would not reach the slow stage.
    let escalate_all = out_dir.join("escalate-all.toml");
    std::fs::write(
        &escalate_all,
        "# cargo xtask live-bench: every flow to the slow stage\n[routing]\nthreshold = 0.0\n",
    )?;
    let escalate_all = escalate_all.to_string_lossy().into_owned();
    let mut workloads = vec![
        ("udp 2-packet flows", pcap.clone(), 100u64, None),
        (
            "udp 2-packet flows, every flow escalated",
            pcap.clone(),
            100,
            Some(escalate_all.as_str()),
        ),
    ];
    match real_mix(&out_dir) {
        Ok(Some((mix, packets, flows))) => {
            eprintln!("xtask: real traffic mix: {packets} packets in {flows} flows from nDPI's Ethernet captures");
            workloads.push((
                "nDPI captures",
                mix,
                (1_000_000 / packets.max(1)).max(1),
                None,
            ));
        }
        Ok(None) => eprintln!("xtask: ../shared/data is absent: no real-traffic packet rate"),
        Err(e) => eprintln!("xtask: no real-traffic packet rate: {e:#}"),
    }
    // The shared machine's speed drifts between runs (the sender alone has measured anywhere
    // from 244k to 458k packets/s), so drain-only and classifying runs alternate, three
    // rounds each, and the median round's ratio is the result.
    let mut rates = Vec::new();
    let mut ratios = Vec::new();
    for (workload, capture, loops, config) in &workloads {
        let classify: Vec<&str> = match config {
            Some(c) => vec!["--no-steer", "--config", c],
            None => vec!["--no-steer"],
        };
        let (sent, secs) = tcpreplay(&bed, capture, None, *loops)?;
        eprintln!(
            "xtask: {workload}: sender alone (nothing attached): {:.0} packets/s",
            sent as f64 / secs.max(1e-9)
        );
        rates.push(serde_json::json!({"workload": workload, "receiver": "none (sender alone)", "sent": sent, "seconds": secs, "received": 0, "packets_per_s": sent as f64 / secs.max(1e-9)}));
        let mut round_ratios = Vec::new();
        for round in 1..=RATE_ROUNDS {
            let mut pair = Vec::new();
            for (name, flags) in [
                (
                    "drain-only (copy-mode ceiling)",
                    &["--drain-only", "--no-steer"][..],
                ),
                ("serveflow, every packet classified", &classify[..]),
            ] {
                let summary = out_dir.join("summary-rate.json");
                let ((sent, secs), s) = serve_while(&bed, &bin, &summary, flags, || {
                    tcpreplay(&bed, capture, None, *loops)
                })?;
                // Only TCP/UDP frames are redirected; the captures' ARP, ICMP and such pass.
                let received = s["afxdp"]["packets"].as_u64().unwrap_or(0);
                let rate = received as f64 / secs.max(1e-9);
                let drops = s["socket_drops"]["rx_dropped"].as_u64().unwrap_or(0)
                    + s["socket_drops"]["rx_ring_full"].as_u64().unwrap_or(0)
                    + s["socket_drops"]["rx_fill_ring_empty_descs"]
                        .as_u64()
                        .unwrap_or(0);
                let escalated = s["serving"]["escalated"].as_u64().unwrap_or(0);
                let fallback = s["serving"]["result"]["verdicts"]["fallback"]
                    .as_u64()
                    .unwrap_or(0);
                eprintln!("xtask: {workload} round {round}: {name}: sender {sent} packets in {secs:.2} s, received {received} (socket drops {drops}, escalated flows {escalated}, fallbacks {fallback}): {rate:.0} packets/s");
                pair.push(rate);
                rates.push(serde_json::json!({"workload": workload, "round": round, "receiver": name, "sent": sent, "seconds": secs, "received": received, "socket_drops": drops, "escalated_flows": escalated, "fallbacks": fallback, "packets_per_s": rate}));
            }
            if let [drain, serve] = pair.as_slice() {
                round_ratios.push(serve / drain.max(1e-9));
            }
        }
        round_ratios.sort_by(f64::total_cmp);
        let median = round_ratios
            .get(round_ratios.len() / 2)
            .copied()
            .unwrap_or(0.0);
        eprintln!(
            "xtask: {workload}: AF_XDP packet rate with classification = {:.0}% of the drain-only ceiling (median of rounds {:?})",
            median * 100.0,
            round_ratios.iter().map(|r| format!("{:.0}%", r * 100.0)).collect::<Vec<_>>()
        );
        ratios.push(serde_json::json!({"workload": workload, "median_ratio": median, "round_ratios": round_ratios}));
    }
    let result = serde_json::json!({
        "command": "cargo xtask live-bench",
        "sender_ceiling_packets_per_s": ceiling,
        "sender_ceiling_flows_per_s": ceiling / 2.0,
        "rows": rows,
        "packet_rate": rates,
        "packet_rate_ratio": ratios,
    });
    let path = out_dir.join("live-bench.json");
    std::fs::write(&path, serde_json::to_string_pretty(&result)? + "\n")?;
    eprintln!("xtask: results in {}", path.display());
    Ok(())
}
