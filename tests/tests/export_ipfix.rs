//! `serveflow replay --export` against real IPFIX engines: pmacct's `nfacctd` collects the
//! export of the committed smoke capture and decodes serveflow's elements with the primitives
//! file under `deploy/ipfix/`; Wireshark's `tshark` dissects the same datagrams (received by
//! the test and written to a pcap) without a malformed packet or an expert warning. Each
//! collector must hold exactly one record per verdict, with the verdict's 5-tuple and label.
//! Both programs come from Debian (`cargo xtask setup` installs them); without them the test
//! says SKIPPED.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use std::{net::UdpSocket, process::Command, time::Duration};

use serveflow_testbed::{
    engines::{free_udp_port, on_path, repo, ExportLine, IpfixRow, Nfacctd},
    frames, serveflow_bin,
};

/// Datagrams arriving on `socket` until it has been quiet for a second.
fn receive_all(socket: &UdpSocket) -> Vec<Vec<u8>> {
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = socket.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    got
}

#[test]
fn a_replay_exports_one_ipfix_record_per_verdict_to_nfacctd_and_tshark() {
    if !on_path("nfacctd") || !on_path("tshark") {
        eprintln!("SKIPPED: nfacctd (pmacct) and tshark are needed: run `cargo xtask setup`");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pcap = repo().join("tests/fixtures/smoke.pcap");
    let collector_port = free_udp_port();
    let collector = Nfacctd::start(None, dir.path(), collector_port).unwrap();
    let tap = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tap_port = tap.local_addr().unwrap().port();
    let out = Command::new(serveflow_bin::path().unwrap())
        .arg("replay")
        .arg(&pcap)
        .args(["--out", "-", "--no-pin"])
        .arg("--export")
        .arg(format!("ipfix+udp://127.0.0.1:{collector_port}"))
        .arg("--export")
        .arg(format!("ipfix+udp://127.0.0.1:{tap_port}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let mut want: Vec<IpfixRow> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| IpfixRow::of_verdict(&serde_json::from_str(l).unwrap()))
        .collect();
    assert_eq!(want.len(), 42, "{stderr}");
    for port in [collector_port, tap_port] {
        let line = format!("export:    ipfix+udp://127.0.0.1:{port}  sent 42  dropped 0");
        assert!(stderr.contains(&line), "{line}\n{stderr}");
    }

    let mut got = collector.rows(want.len());
    want.sort();
    got.sort();
    assert_eq!(got, want, "nfacctd's records are the verdicts");

    let datagrams = receive_all(&tap);
    assert!(datagrams.len() >= 2, "templates, then data");
    let frames: Vec<Vec<u8>> = datagrams
        .iter()
        .map(|d| frames::udp4([127, 0, 0, 1], 50000, [127, 0, 0, 1], 4739, d))
        .collect();
    let capture = dir.path().join("ipfix.pcap");
    frames::write_pcap(&capture, &frames).unwrap();
    let fields = Command::new("tshark")
        .arg("-r")
        .arg(&capture)
        .args([
            "-d",
            "udp.port==4739,cflow",
            "-T",
            "fields",
            "-E",
            "separator=;",
        ])
        .args([
            "-e",
            "cflow.srcport",
            "-e",
            "_ws.malformed",
            "-e",
            "_ws.expert",
        ])
        .output()
        .unwrap();
    assert!(fields.status.success());
    let text = String::from_utf8_lossy(&fields.stdout);
    let mut ports = 0;
    for line in text.lines() {
        let cells: Vec<&str> = line.split(';').collect();
        assert!(
            cells.len() == 3 && cells[1].is_empty() && cells[2].is_empty(),
            "tshark flagged a datagram: {line}"
        );
        ports += cells[0].split(',').filter(|p| !p.is_empty()).count();
    }
    assert_eq!(ports, 42, "tshark decodes every record\n{text}");
}

#[test]
fn bad_export_urls_and_refusing_collectors_stop_the_run_at_start() {
    let pcap = repo().join("tests/fixtures/smoke.pcap");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for (url, says) in [
        ("netflow://127.0.0.1:2055", "unknown scheme"),
        ("ipfix+udp://127.0.0.1", "is not HOST:PORT"),
        ("kafka://127.0.0.1:9092", "no topic"),
        (&format!("ipfix+tcp://{closed}") as &str, "connecting"),
    ] {
        let out = Command::new(serveflow_bin::path().unwrap())
            .arg("replay")
            .arg(&pcap)
            .args(["--no-pin", "--export", url])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: {stderr}");
        assert!(stderr.contains(says), "{url}: {stderr}");
        assert!(stderr.lines().count() <= 3, "a short error: {stderr}");
    }
}

#[test]
fn a_collector_that_is_not_there_costs_counted_drops_not_the_run() {
    // A UDP port nobody reads: ICMP port-unreachable makes sends fail; every verdict is
    // still written and each lost one is counted.
    let port = free_udp_port();
    let out = Command::new(serveflow_bin::path().unwrap())
        .arg("replay")
        .arg(repo().join("tests/fixtures/smoke.pcap"))
        .args(["--out", "-", "--no-pin", "--export"])
        .arg(format!("ipfix+udp://127.0.0.1:{port}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 42);
    let line = ExportLine::find(&stderr).expect("an export line");
    let num = |name: &str| -> u64 {
        line.count(name)
            .unwrap_or_else(|| panic!("no {name} count: {}", line.0))
    };
    assert_eq!(num("sent") + num("dropped"), 42, "{}", line.0);
}
