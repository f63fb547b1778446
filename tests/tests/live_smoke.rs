//! The live path on a throwaway test bed: `serveflow run` on one end of a veth, the smoke
//! capture replayed by tcpreplay from the other end, and exact counts asserted for what
//! reached userspace through AF_XDP and what the kernel flow map holds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use std::time::Duration;

use serveflow_testbed::{
    frames::smoke_capture,
    live::{self, Scratch},
    netns::is_root,
    serveflow_bin::{self, Running},
    VethPair,
};

fn summary(path: &std::path::Path) -> serde_json::Value {
    live::summary(path).unwrap()
}

fn start_with(bed: &VethPair, mode: &str, summary: &std::path::Path, extra: &[&str]) -> Running {
    live::start(bed, mode, summary, extra).unwrap()
}

fn exact_counts(mode: &str, queues: u32) {
    let bed = VethPair::new("smoke", queues).unwrap();
    let capture = smoke_capture(20, 10);
    let scratch = Scratch::new(&format!("smoke-{mode}"));
    let pcap = scratch.pcap(&capture.frames).unwrap();
    let summary_path = scratch.summary();
    // Several queues: one worker per AF_XDP socket (the default), forwarding flows between
    // them.
    let running = start_with(&bed, mode, &summary_path, &["--no-steer"]);

    bed.replay_from_b(&pcap, 2000).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (code, stderr) = running.stop(libc::SIGINT).unwrap();
    assert_eq!(code, 0, "serveflow exit; stderr:\n{}", stderr.join("\n"));

    let s = summary(&summary_path);
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    let afxdp = &s["afxdp"];
    assert_eq!(
        n(&afxdp["packets"]),
        capture.tcp_udp_packets,
        "AF_XDP packets; {s:#}"
    );
    assert_eq!(n(&afxdp["flows"]), capture.flows, "AF_XDP flows");
    assert_eq!(n(&afxdp["tcp_flows"]), capture.tcp_flows);
    assert_eq!(n(&afxdp["udp_flows"]), capture.udp_flows);
    assert!(
        afxdp["skipped"].as_object().unwrap().is_empty(),
        "parser skipped frames the kernel redirected"
    );
    let by_queue: Vec<u64> = afxdp["by_queue"]
        .as_array()
        .unwrap()
        .iter()
        .map(n)
        .collect();
    assert_eq!(
        n(&afxdp["kernel_timestamps"]),
        capture.tcp_udp_packets,
        "every frame carries the kernel's arrival time"
    );
    assert_eq!(by_queue.len() as u32, queues);
    assert_eq!(by_queue.iter().sum::<u64>(), capture.tcp_udp_packets);
    // Generic (skb) XDP on a veth sees every packet on queue 0; native XDP sees the queue the
    // peer's TX hash picked.
    if mode == "native" {
        assert!(
            by_queue.iter().all(|q| *q > 0),
            "flows hash over every queue: {by_queue:?}"
        );
    }

    // The serving pipeline classified every flow exactly once.
    let serving = &s["serving"];
    assert_eq!(n(&serving["flows_in"]), capture.flows, "{serving:#}");
    assert_eq!(n(&serving["verdicts_out"]), capture.flows);
    assert_eq!(serving["every_flow_one_verdict"], true);
    let verdicts = live::verdicts(&summary_path).unwrap();
    assert_eq!(verdicts.len() as u64, capture.flows);
    // Latency runs from the first packet's kernel arrival, so it covers the serving time.
    assert!(verdicts.iter().all(|v| v["label"].is_string()
        && v["latency_us"].as_f64().unwrap() >= v["serving_us"].as_f64().unwrap()));

    let k = &s["kernel_counters"];
    assert_eq!(
        n(&k["redirected"]),
        capture.tcp_udp_packets,
        "kernel redirected"
    );
    assert_eq!(n(&k["pass_no_socket"]), 0);
    assert_eq!(n(&k["pass_fragment"]), capture.fragments);
    // The namespaces' own stacks may add ARP/ICMP of their own; ours are a lower bound.
    assert!(n(&k["pass_not_ip"]) >= capture.not_ip);
    assert!(n(&k["pass_not_tcp_udp"]) >= capture.not_tcp_udp);
    assert_eq!(
        live::kernel_outcomes(k),
        n(&k["packets"]),
        "every packet has exactly one outcome"
    );

    let fm = &s["kernel_flow_map"];
    assert_eq!(n(&fm["flows"]), capture.flows, "kernel flow map entries");
    assert_eq!(
        n(&fm["packets"]),
        capture.tcp_udp_packets,
        "kernel flow map packets"
    );
    assert_eq!(n(&s["socket_drops"]["rx_dropped"]), 0);

    // Detached and unpinned on SIGINT.
    let pins = live::pin_dir(&bed);
    assert!(!pins.exists(), "pins left behind at {}", pins.display());
    assert!(!live::xdp_attached(&bed).unwrap(), "XDP still attached");
}

/// With early-packet steering (the default), userspace receives at most the packets its
/// deepest stage needs (the bundled service models' slow stage's packets) and none of a decided flow; the
/// kernel passes the rest and counts why; every flow still gets one verdict.
#[test]
fn kernel_steers_only_the_packets_userspace_needs() {
    if !is_root() {
        eprintln!("SKIPPED: the netns test bed needs root (run `cargo xtask test` as root)");
        return;
    }
    let bed = VethPair::new("steer", 1).unwrap();
    let capture = smoke_capture(20, 10);
    let scratch = Scratch::new("steer");
    let pcap = scratch.pcap(&capture.frames).unwrap();
    let summary_path = scratch.summary();
    let running = start_with(&bed, "native", &summary_path, &[]);
    bed.replay_from_b(&pcap, 2000).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // `serveflow status` reads the running instance's pinned maps.
    let status = std::process::Command::new(serveflow_bin::path().unwrap())
        .args(["status", "-i", &bed.dev_a, "--json"])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let st: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        st[0]["steer_packets"].as_u64(),
        Some(live::bundled_stage_packets().unwrap()),
        "{st:#}"
    );
    assert_eq!(st[0]["flows"].as_u64().unwrap(), capture.flows, "{st:#}");
    assert!(st[0]["decided_flows"].as_u64().unwrap() > 0, "{st:#}");
    // The per-flow maps' memory, as the kernel charges it: at least both keys and values per
    // flow slot, the same slots in both maps.
    let maps = st[0]["maps"].as_array().unwrap();
    assert_eq!(maps.len(), 2, "{st:#}");
    let slots = maps[0]["max_entries"].as_u64().unwrap();
    assert!(
        slots > 0 && maps[1]["max_entries"].as_u64() == Some(slots),
        "{st:#}"
    );
    let per_flow = st[0]["kernel_bytes_per_flow"].as_f64().unwrap();
    let least = (2 * std::mem::size_of::<serveflow_common::FlowKey>()
        + std::mem::size_of::<serveflow_common::FlowStats>()
        + 4) as f64;
    assert!(per_flow >= least && per_flow < 4096.0, "{per_flow} {st:#}");
    assert_eq!(
        st[0]["counters"]["packets"].as_u64().unwrap(),
        st[0]["counters"]["redirected"].as_u64().unwrap()
            + st[0]["counters"]["pass_decided"].as_u64().unwrap()
            + st[0]["counters"]["pass_enough_packets"].as_u64().unwrap()
            + st[0]["counters"]["pass_not_ip"].as_u64().unwrap()
            + st[0]["counters"]["pass_not_tcp_udp"].as_u64().unwrap()
            + st[0]["counters"]["pass_fragment"].as_u64().unwrap(),
        "{st:#}"
    );

    // Prometheus metrics on the instance's loopback (inside its namespace).
    let body = live::scrape_metrics(&bed).unwrap();
    assert!(body.contains("200 OK"), "{body}");
    assert!(body.contains("serveflow_verdicts_total{stage="), "{body}");
    for family in [
        "serveflow_flows_total ",
        "serveflow_escalated_total ",
        "serveflow_fallbacks_total ",
        "serveflow_slow_queue_depth ",
        "serveflow_afxdp_drops_total{queue=\"0\",reason=\"rx_ring_full\"} 0",
        "serveflow_link_up 1",
    ] {
        assert!(body.contains(family), "{family}: {body}");
    }
    assert!(
        body.contains("serveflow_kernel_packets_total{slot=\"pass_enough_packets\"}"),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "serveflow_afxdp_packets_total {}",
            st[0]["counters"]["redirected"]
        )),
        "{body}"
    );

    let (code, stderr) = running.stop(libc::SIGINT).unwrap();
    assert_eq!(code, 0, "serveflow exit; stderr:\n{}", stderr.join("\n"));
    let s = summary(&summary_path);
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    // Per flow: TCP 5 packets -> at most 4, UDP 3, the IPv6 pairs 2 each.
    let needed = 20 * 4 + 10 * 3 + 2 + 2;
    let got = n(&s["afxdp"]["packets"]);
    assert!(
        got <= needed && got >= capture.flows,
        "AF_XDP packets {got}; {s:#}"
    );
    let k = &s["kernel_counters"];
    assert_eq!(n(&k["redirected"]), got);
    assert_eq!(
        n(&k["redirected"]) + n(&k["pass_decided"]) + n(&k["pass_enough_packets"]),
        capture.tcp_udp_packets,
        "every TCP/UDP packet redirected or passed with its reason; {k:#}"
    );
    assert!(
        n(&k["pass_enough_packets"]) + n(&k["pass_decided"]) >= 20,
        "{k:#}"
    );
    assert_eq!(n(&s["afxdp"]["flows"]), capture.flows);
    assert_eq!(s["serving"]["every_flow_one_verdict"], true);
    let verdicts = live::verdicts(&summary_path).unwrap();
    assert_eq!(verdicts.len() as u64, capture.flows);
    for v in &verdicts {
        assert!(n(&v["packets"]) <= 4, "{v}");
    }
}

#[test]
fn afxdp_receives_exact_counts_native_mode() {
    if !is_root() {
        eprintln!("SKIPPED: the netns test bed needs root (run `cargo xtask test` as root)");
        return;
    }
    exact_counts("native", 1);
}

#[test]
fn afxdp_receives_exact_counts_skb_mode_multi_queue() {
    if !is_root() {
        eprintln!("SKIPPED: the netns test bed needs root");
        return;
    }
    exact_counts("skb", 2);
}

/// A UDP socket bound to `addr` inside namespace `ns`, asking for each datagram's skb mark
/// (SO_RCVMARK). Created on a thread that entered the namespace; the socket stays in it.
fn marked_udp_socket(ns: &str, addr: std::net::SocketAddrV4) -> std::net::UdpSocket {
    use std::os::fd::AsRawFd as _;
    let ns_path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&ns_path).unwrap();
        // SAFETY: setns on this thread only, with a valid namespace fd.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let s = std::net::UdpSocket::bind(addr).unwrap();
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads one c_int from a valid pointer.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVMARK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_RCVMARK: {}", std::io::Error::last_os_error());
        s
    })
    .join()
    .unwrap()
}

/// The skb mark of every datagram waiting on `socket` (0 where none).
fn received_marks(socket: &std::net::UdpSocket) -> Vec<u32> {
    use std::os::fd::AsRawFd as _;
    let mut marks = Vec::new();
    loop {
        let mut buf = [0u8; 2048];
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain old data; the pointers set below outlive recvmsg.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: recvmsg writes into the buffers msg points at.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            return marks;
        }
        let mut mark = 0;
        // SAFETY: walking the control messages the kernel wrote into `control`.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_MARK {
                    mark = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<u32>());
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        marks.push(mark);
    }
}

/// Per-class marks end to end: with every class set to `mark:0x10`, the datagrams of flows
/// already decided are passed with the mark in XDP metadata, the TC program sets it as the
/// skb mark, and a socket in the serving namespace receives them carrying it (SO_RCVMARK).
/// The flows are sent twice; the second time every flow is decided (its longest wait, 1 s,
/// has run out), so all of those packets reach the stack, marked.
#[test]
fn decided_flows_carry_their_class_mark_into_the_stack() {
    if !is_root() {
        eprintln!("SKIPPED: the netns test bed needs root (run `cargo xtask test` as root)");
        return;
    }
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/service/serveflow-model.toml"),
    )
    .unwrap();
    let classes: Vec<String> = manifest
        .lines()
        .find_map(|l| l.strip_prefix("classes = "))
        .map(|json| serde_json::from_str(json).unwrap())
        .unwrap();
    let scratch = Scratch::new("mark");
    let config = scratch.path("run.toml");
    let mut text = String::from("[actions]\n");
    for c in &classes {
        text.push_str(&format!("{c:?} = \"mark:0x10\"\n"));
    }
    std::fs::write(&config, text).unwrap();

    let bed = VethPair::new("mark", 1).unwrap();
    // 10 UDP flows of 3 datagrams from the peer to a socket on the serving end.
    let link = bed
        .command(&bed.ns_a, "ip")
        .args(["-o", "link", "show", &bed.dev_a])
        .output()
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout).to_string();
    let mac: Vec<u8> = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    let mut frames = Vec::new();
    for i in 0..10u16 {
        for payload in [&b"one"[..], b"two", b"three"] {
            let mut f =
                serveflow_testbed::frames::udp4(bed.addr_b, 41_000 + i, bed.addr_a, 5353, payload);
            f[..6].copy_from_slice(&mac);
            frames.push(f);
        }
    }
    let pcap = scratch.pcap(&frames).unwrap();
    let socket = marked_udp_socket(
        &bed.ns_a,
        std::net::SocketAddrV4::new(bed.addr_a.into(), 5353),
    );

    let summary_path = scratch.summary();
    let running = start_with(
        &bed,
        "native",
        &summary_path,
        &["--config", config.to_str().unwrap()],
    );
    bed.replay_from_b(&pcap, 2000).unwrap();
    std::thread::sleep(Duration::from_millis(1300));
    bed.replay_from_b(&pcap, 2000).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (code, stderr) = running.stop(libc::SIGINT).unwrap();
    assert_eq!(code, 0, "{}", stderr.join("\n"));
    let marks = received_marks(&socket);

    let s = summary(&summary_path);
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    let k = &s["kernel_counters"];
    assert!(
        n(&k["mark_by_class"]) >= frames.len() as u64,
        "at least the second sending's packets; {k:#}"
    );
    assert_eq!(n(&k["tc_marked"]), n(&k["mark_by_class"]), "{k:#}");
    // What reached the stack were packets of decided flows: every one carries the mark.
    assert_eq!(marks.len() as u64, n(&k["mark_by_class"]), "{marks:?}");
    assert!(marks.iter().all(|m| *m == 0x10), "{marks:?}");
}
