//! The live path under bad conditions: a second instance on the same interface, SIGTERM and
//! kill -9, the interface going down and disappearing, a flood of flows beyond the flow maps,
//! and set-ups that cannot work. Each is handled, counted and reported, and no XDP program
//! stays attached without a process serving it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use std::{process::Command, time::Duration};

use serveflow_testbed::{
    frames::smoke_capture,
    live::{self, pin_dir, xdp_attached, Scratch},
    netns::is_root,
    serveflow_bin::{self, Running},
    VethPair,
};

fn summary(path: &std::path::Path) -> serde_json::Value {
    live::summary(path).unwrap()
}

fn start(bed: &VethPair, mode: &str, summary: &std::path::Path) -> Running {
    live::start(bed, mode, summary, &["--no-steer"]).unwrap()
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn ip_in(bed: &VethPair, args: &[&str]) {
    let out = Command::new("ip")
        .args(["-n", &bed.ns_a])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The interface goes down (reported, counted, served again once it is back up), then is
/// deleted: the instance stops on its own with a one-line error, after deciding every flow it
/// saw and writing its summary, and leaves no pins.
#[test]
fn interface_down_up_and_gone() {
    if !is_root() {
        eprintln!("SKIPPED: the netns test bed needs root");
        return;
    }
    let bed = VethPair::new("link", 2).unwrap();
    let capture = smoke_capture(20, 10);
    let scratch = Scratch::new("link");
    let pcap = scratch.pcap(&capture.frames).unwrap();
    let summary_path = scratch.summary();
    let mut running = start(&bed, "native", &summary_path);
    bed.replay_from_b(&pcap, 2000).unwrap();

    ip_in(&bed, &["link", "set", &bed.dev_a, "down"]);
    running
        .wait_for("went down", Duration::from_secs(5))
        .unwrap();
    ip_in(&bed, &["link", "set", &bed.dev_a, "up"]);
    running
        .wait_for("is up again", Duration::from_secs(5))
        .unwrap();
    // Traffic after the link came back reaches userspace through the same program and sockets.
    bed.replay_from_b(&pcap, 2000).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    ip_in(&bed, &["link", "del", &bed.dev_a]);
    running
        .wait_for("disappeared; stopping", Duration::from_secs(5))
        .unwrap();
    let (code, stderr) = running.stop(0).unwrap();
    assert_eq!(code, 1, "{}", stderr.join("\n"));
    let last = stderr.last().unwrap();
    assert!(
        last.contains("disappeared while serving") && !last.contains("panicked"),
        "{}",
        stderr.join("\n")
    );

    let s = summary(&summary_path);
    assert_eq!(s["interface_gone"], true);
    assert_eq!(n(&s["link_down_events"]), 1);
    assert_eq!(
        n(&s["afxdp"]["packets"]),
        2 * capture.tcp_udp_packets,
        "both replays received (steering off); {s:#}"
    );
    assert!(
        n(&s["afxdp"]["packets_after_verdict"]) >= capture.tcp_udp_packets,
        "the second replay's flows were already decided; {s:#}"
    );
    assert_eq!(s["serving"]["every_flow_one_verdict"], true);
    assert_eq!(
        live::verdicts(&summary_path).unwrap().len() as u64,
        capture.flows
    );
    assert!(!pin_dir(&bed).exists(), "pins left behind");
}

/// More flows than the kernel's flow map and the userspace flow table hold: the LRU maps
/// forget the oldest flows and the table evicts them (decided at once with what they had);
/// every flow that entered the table still gets exactly one verdict and every packet one
/// kernel outcome.
#[test]
fn flow_flood_beyond_the_flow_maps() {
    if !is_root() {
        eprintln!("SKIPPED: the netns test bed needs root");
        return;
    }
    let bed = VethPair::new("flood", 1).unwrap();
    let capture = smoke_capture(400, 400);
    let scratch = Scratch::new("flood");
    let pcap = scratch.pcap(&capture.frames).unwrap();
    let summary_path = scratch.summary();
    let running = live::start(
        &bed,
        "native",
        &summary_path,
        &["--flow-map-entries", "64", "--max-flows", "50"],
    )
    .unwrap();
    bed.replay_from_b(&pcap, 5000).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (code, stderr) = running.stop(libc::SIGINT).unwrap();
    assert_eq!(code, 0, "{}", stderr.join("\n"));

    let s = summary(&summary_path);
    let fm = &s["kernel_flow_map"];
    assert!(n(&fm["flows"]) <= 64, "kernel flow map over its size: {fm}");
    let k = &s["kernel_counters"];
    assert_eq!(
        live::kernel_outcomes(k),
        n(&k["packets"]),
        "one outcome per packet: {k:#}"
    );
    assert_eq!(n(&k["flow_insert_failed"]), 0, "{k:#}");
    let serving = &s["serving"];
    assert!(n(&serving["flows_evicted"]) > 0, "{serving:#}");
    assert!(n(&serving["flows_in"]) >= capture.flows, "{serving:#}");
    assert_eq!(serving["every_flow_one_verdict"], true, "{serving:#}");
    assert_eq!(
        live::verdicts(&summary_path).unwrap().len() as u64,
        n(&serving["flows_in"])
    );
    assert_eq!(n(&s["socket_drops"]["rx_dropped"]), 0);
}

#[test]
fn sigterm_detaches_and_second_instance_is_refused() {
    if !is_root() {
        eprintln!("SKIPPED: the netns test bed needs root");
        return;
    }
    let bed = VethPair::new("term", 1).unwrap();
    let scratch = Scratch::new("term");
    let summary_path = scratch.summary();
    let running = start(&bed, "native", &summary_path);
    let capture = smoke_capture(20, 10);
    let pcap = scratch.pcap(&capture.frames).unwrap();

    let second = bed
        .command(&bed.ns_a, serveflow_bin::path().unwrap().to_str().unwrap())
        .args(["run", "-i", &bed.dev_a, "--duration", "1"])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("already has an XDP program"),
        "second instance: {err}"
    );
    // The refused instance touched nothing of the first: its pins stay and it still serves.
    assert!(
        pin_dir(&bed).exists(),
        "the first instance's pins were removed"
    );
    bed.replay_from_b(&pcap, 2000).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let (code, stderr) = running.stop(libc::SIGTERM).unwrap();
    assert_eq!(code, 0, "{}", stderr.join("\n"));
    let s = summary(&summary_path);
    assert_eq!(n(&s["afxdp"]["packets"]), capture.tcp_udp_packets, "{s:#}");
    assert_eq!(s["serving"]["every_flow_one_verdict"], true);
    assert!(!xdp_attached(&bed).unwrap(), "XDP still attached");
    assert!(!pin_dir(&bed).exists(), "pins left behind");
}

#[test]
fn kill_9_leaves_nothing_attached_and_next_start_recovers() {
    if !is_root() {
        eprintln!("SKIPPED: the netns test bed needs root");
        return;
    }
    let bed = VethPair::new("kill", 1).unwrap();
    let scratch = Scratch::new("kill");
    let summary_path = scratch.summary();
    let running = start(&bed, "native", &summary_path);
    let (_, _) = running.stop(libc::SIGKILL).unwrap();
    assert!(
        !xdp_attached(&bed).unwrap(),
        "bpf_link outlived the process"
    );
    // Stale pins remain; the next start removes them and runs normally.
    let pins = pin_dir(&bed);
    assert!(pins.exists());
    let again = start(&bed, "native", &summary_path);
    let (code, stderr) = again.stop(libc::SIGINT).unwrap();
    assert_eq!(code, 0, "{}", stderr.join("\n"));
    assert!(!pins.exists());
}

/// Runs `outer... nsenter --net=NS -- inner... serveflow run -i IFACE extra...` in a fresh
/// namespace, expects it to fail, and returns its stderr.
fn run_fails(outer: &[&str], inner: &[&str], iface: &str, extra: &[&str]) -> String {
    let bed = VethPair::new("err", 1).unwrap();
    let bin = serveflow_bin::path().unwrap();
    let mut argv: Vec<String> = outer.iter().map(|s| s.to_string()).collect();
    argv.push("nsenter".into());
    argv.push(format!("--net=/run/netns/{}", bed.ns_a));
    argv.push("--".into());
    argv.extend(inner.iter().map(|s| s.to_string()));
    argv.push(bin.display().to_string());
    argv.extend(["run", "-i", iface, "--duration", "1"].map(String::from));
    argv.extend(extra.iter().map(|s| s.to_string()));
    let out = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "expected failure, got success: {err}"
    );
    assert_eq!(
        err.trim().lines().count(),
        1,
        "one-line error expected: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_setups_give_one_line_errors() {
    if !is_root() {
        eprintln!("SKIPPED: the netns test bed needs root");
        return;
    }
    let err = run_fails(&[], &[], "nope0", &[]);
    assert!(
        err.contains("no network interface named \"nope0\"") && err.contains("ip link"),
        "{err}"
    );

    // Loopback has no native XDP support.
    let err = run_fails(&[], &[], "lo", &["-m", "native"]);
    assert!(
        err.contains("cannot take XDP in native mode") && err.contains("-m skb"),
        "{err}"
    );

    // No capabilities: root with an empty bounding set.
    let err = run_fails(
        &[],
        &["setpriv", "--bounding-set=-all", "--inh-caps=-all"],
        "lo",
        &[],
    );
    assert!(
        err.contains("missing capabilities")
            && err.contains("CAP_BPF")
            && err.contains("CAP_NET_ADMIN"),
        "{err}"
    );

    // bpffs not mounted: unmounted in a private mount namespace only.
    let err = run_fails(
        &[
            "unshare",
            "--mount",
            "--propagation=private",
            "sh",
            "-c",
            "umount /sys/fs/bpf && exec \"$0\" \"$@\"",
        ],
        &[],
        "lo",
        &["-m", "skb"],
    );
    assert!(
        err.contains("not a bpffs mount") && err.contains("mount -t bpf"),
        "{err}"
    );
}
