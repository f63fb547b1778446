//! The real XDP program run on crafted frames through BPF_PROG_TEST_RUN (no interface needed).
//!
//! For every frame: the program's action, the counter slot it bumped, and the flow-map entry
//! it made must match what serveflow's userspace parser says of the same frame. No socket is
//! bound in XSKS here, so TCP/UDP packets end as `pass_no_socket` (the live netns test covers
//! the redirect itself).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use std::collections::HashSet;

use aya::programs::{TestRun, TestRunOptions};
use serveflow::{parse, xdp};
use serveflow_common::{FlowKey, XdpCounter};
use serveflow_testbed::{frames::*, netns::is_root};

const XDP_PASS: u32 = 2;

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    expect: XdpCounter,
}

fn cases() -> Vec<Case> {
    let a = [10, 0, 0, 1];
    let b = [10, 0, 0, 2];
    let mut v6a = [0u8; 16];
    v6a[0] = 0xfd;
    v6a[15] = 1;
    let mut v6b = v6a;
    v6b[15] = 2;
    let tcp = tcp4(a, 1234, b, 80, true, b"");
    let udp = udp4(a, 5353, b, 53, b"q");
    let mut cases = vec![
        Case {
            name: "tcp/ipv4",
            frame: tcp.clone(),
            expect: XdpCounter::PassNoSocket,
        },
        Case {
            name: "tcp/ipv4 reply",
            frame: tcp4(b, 80, a, 1234, true, b""),
            expect: XdpCounter::PassNoSocket,
        },
        Case {
            name: "udp/ipv4",
            frame: udp.clone(),
            expect: XdpCounter::PassNoSocket,
        },
        Case {
            name: "udp/ipv4 + 8 words of options",
            frame: with_ipv4_options(&udp, 8),
            expect: XdpCounter::PassNoSocket,
        },
        Case {
            name: "tcp/ipv4 + 10 words of options (max IHL)",
            frame: with_ipv4_options(&tcp4(a, 7, b, 8, false, b"x"), 10),
            expect: XdpCounter::PassNoSocket,
        },
        Case {
            name: "tcp/ipv6",
            frame: tcp6(v6a, 4000, v6b, 443, b"x"),
            expect: XdpCounter::PassNoSocket,
        },
        Case {
            name: "udp/ipv6 + hop-by-hop",
            frame: with_ipv6_ext(&udp6(v6a, 4001, v6b, 53, b"x"), 0),
            expect: XdpCounter::PassNoSocket,
        },
        Case {
            name: "udp/ipv6 + dest options + routing",
            frame: with_ipv6_ext(&with_ipv6_ext(&udp6(v6a, 4002, v6b, 53, b"x"), 60), 43),
            expect: XdpCounter::PassNoSocket,
        },
        Case {
            name: "802.1Q tcp",
            frame: with_vlan(&tcp4(a, 1, b, 2, false, b""), 10, false),
            expect: XdpCounter::PassNoSocket,
        },
        Case {
            name: "QinQ udp",
            frame: with_vlan(&with_vlan(&udp4(a, 3, b, 4, b""), 20, false), 30, true),
            expect: XdpCounter::PassNoSocket,
        },
        Case {
            name: "arp",
            frame: arp(a, b),
            expect: XdpCounter::PassNotIp,
        },
        Case {
            name: "icmp",
            frame: icmp4(a, b),
            expect: XdpCounter::PassNotTcpUdp,
        },
        Case {
            name: "ipv6 fragment header",
            frame: with_ipv6_ext(&udp6(v6a, 1, v6b, 2, b"x"), 44),
            expect: XdpCounter::PassFragment,
        },
        Case {
            name: "ipv6 no next header",
            frame: with_ipv6_ext(&udp6(v6a, 1, v6b, 2, b"x"), 59),
            expect: XdpCounter::PassNotTcpUdp,
        },
        Case {
            name: "ethernet header only",
            frame: tcp[..14].to_vec(),
            expect: XdpCounter::PassTruncated,
        },
        Case {
            name: "ipv4 header cut",
            frame: tcp[..30].to_vec(),
            expect: XdpCounter::PassTruncated,
        },
        Case {
            name: "tcp header cut",
            frame: tcp[..40].to_vec(),
            expect: XdpCounter::PassTruncated,
        },
        Case {
            name: "udp header cut",
            frame: udp[..38].to_vec(),
            expect: XdpCounter::PassTruncated,
        },
        Case {
            name: "ipv4 options announced, absent",
            frame: with_ipv4_options(&udp, 8)[..40].to_vec(),
            expect: XdpCounter::PassTruncated,
        },
    ];
    // PPPoE session over VLAN, carrying TCP/IPv4.
    let inner = tcp4(a, 61000, b, 443, false, b"x");
    let mut pppoe = inner[..12].to_vec();
    pppoe.extend_from_slice(&[0x88, 0x64, 0x11, 0x00, 0x00, 0x01]);
    pppoe.extend_from_slice(&((inner.len() - 14 + 2) as u16).to_be_bytes());
    pppoe.extend_from_slice(&[0x00, 0x21]);
    pppoe.extend_from_slice(&inner[14..]);
    cases.push(Case {
        name: "pppoe tcp",
        frame: pppoe.clone(),
        expect: XdpCounter::PassNoSocket,
    });
    cases.push(Case {
        name: "802.1Q pppoe tcp",
        frame: with_vlan(&pppoe, 5, false),
        expect: XdpCounter::PassNoSocket,
    });
    let mut pppoe_lcp = pppoe.clone();
    pppoe_lcp[20..22].copy_from_slice(&[0xc0, 0x21]);
    cases.push(Case {
        name: "pppoe lcp",
        frame: pppoe_lcp,
        expect: XdpCounter::PassNotIp,
    });
    // Two MPLS labels over UDP/IPv6.
    let inner6 = udp6(v6a, 7000, v6b, 53, b"q");
    let mut mpls = inner6[..12].to_vec();
    mpls.extend_from_slice(&[0x88, 0x47, 0x00, 0x01, 0x00, 0x40, 0x00, 0x02, 0x01, 0x40]);
    mpls.extend_from_slice(&inner6[14..]);
    cases.push(Case {
        name: "mpls x2 udp/ipv6",
        frame: mpls.clone(),
        expect: XdpCounter::PassNoSocket,
    });
    let mut mpls_deep = inner6[..12].to_vec();
    mpls_deep.extend_from_slice(&[0x88, 0x47]);
    for _ in 0..5 {
        mpls_deep.extend_from_slice(&[0x00, 0x01, 0x00, 0x40]);
    }
    mpls_deep.extend_from_slice(&inner6[14..]);
    cases.push(Case {
        name: "mpls stack of 5",
        frame: mpls_deep,
        expect: XdpCounter::PassMalformed,
    });
    let mut mf = udp.clone();
    mf[14 + 6] = 0x20;
    cases.push(Case {
        name: "ipv4 first fragment (MF)",
        frame: mf,
        expect: XdpCounter::PassFragment,
    });
    let mut later = udp.clone();
    later[14 + 7] = 0x10;
    cases.push(Case {
        name: "ipv4 later fragment",
        frame: later,
        expect: XdpCounter::PassFragment,
    });
    let mut ihl = tcp.clone();
    ihl[14] = 0x44;
    cases.push(Case {
        name: "ipv4 IHL 4",
        frame: ihl,
        expect: XdpCounter::PassMalformed,
    });
    let mut version = tcp.clone();
    version[14] = 0x55;
    cases.push(Case {
        name: "ipv4 ethertype with version 5",
        frame: version,
        expect: XdpCounter::PassMalformed,
    });
    let mut doff = tcp.clone();
    doff[14 + 20 + 12] = 0x30;
    cases.push(Case {
        name: "tcp data offset 3",
        frame: doff,
        expect: XdpCounter::PassMalformed,
    });
    let mut chain = udp6(v6a, 1, v6b, 2, b"x");
    for _ in 0..7 {
        chain = with_ipv6_ext(&chain, 60);
    }
    cases.push(Case {
        name: "ipv6 extension chain of 7",
        frame: chain,
        expect: XdpCounter::PassMalformed,
    });
    cases
}

#[test]
fn xdp_program_matches_userspace_parser_on_crafted_frames() {
    if !is_root() {
        eprintln!("SKIPPED: BPF_PROG_TEST_RUN needs root (run `cargo xtask test` as root)");
        return;
    }
    let mut ebpf = xdp::load_object().expect("load XDP object");
    let mut seen_keys: HashSet<FlowKey> = HashSet::new();
    for case in cases() {
        let before = xdp::read_counters(&ebpf).unwrap();
        let program = xdp::program(&mut ebpf).unwrap();
        let mut out = vec![0u8; case.frame.len() + 256];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(&case.frame),
                data_out: Some(&mut out),
                ..TestRunOptions::new()
            })
            .unwrap_or_else(|e| panic!("{}: test run failed: {e}", case.name));
        assert_eq!(result.return_value, XDP_PASS, "{}: action", case.name);

        let after = xdp::read_counters(&ebpf).unwrap();
        let delta: Vec<(XdpCounter, u64)> = XdpCounter::ALL
            .iter()
            .map(|c| (*c, after[*c as usize] - before[*c as usize]))
            .filter(|(_, d)| *d > 0)
            .collect();
        assert_eq!(
            delta,
            vec![(XdpCounter::Packets, 1), (case.expect, 1)],
            "{}: counters",
            case.name
        );

        // The userspace parser gives the same verdict, and the kernel entry has its key.
        let keys: HashSet<FlowKey> = xdp::read_flows(&ebpf)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let new: Vec<&FlowKey> = keys.difference(&seen_keys).collect();
        match parse::parse_ethernet(&case.frame) {
            Ok(packet) => {
                assert_eq!(
                    case.expect,
                    XdpCounter::PassNoSocket,
                    "{}: parser tracked it",
                    case.name
                );
                let (key, _) = packet.flow_key();
                assert!(
                    keys.contains(&key),
                    "{}: kernel has no entry for {key:?}",
                    case.name
                );
                assert!(
                    new.iter().all(|k| **k == key),
                    "{}: wrong key(s) {new:?}",
                    case.name
                );
            }
            Err(skip) => {
                assert_eq!(
                    skip.counter(),
                    Some(case.expect),
                    "{}: parser reason",
                    case.name
                );
                assert!(
                    new.is_empty(),
                    "{}: untracked frame made entries {new:?}",
                    case.name
                );
            }
        }
        seen_keys = keys;
    }
}

#[test]
fn both_directions_share_one_kernel_entry() {
    if !is_root() {
        eprintln!("SKIPPED: BPF_PROG_TEST_RUN needs root");
        return;
    }
    let mut ebpf = xdp::load_object().expect("load XDP object");
    let a = [172, 16, 0, 1];
    let b = [172, 16, 0, 2];
    let frames = [
        tcp4(a, 30000, b, 22, true, b""),
        tcp4(b, 22, a, 30000, true, b""),
        tcp4(a, 30000, b, 22, false, b"data"),
    ];
    let program = xdp::program(&mut ebpf).unwrap();
    for f in &frames {
        program
            .test_run(TestRunOptions {
                data_in: Some(f),
                ..TestRunOptions::new()
            })
            .unwrap();
    }
    let flows = xdp::read_flows(&ebpf).unwrap();
    assert_eq!(flows.len(), 1, "one bidirectional entry: {flows:?}");
    let (_, stats) = flows[0];
    assert_eq!(stats.packets, 3);
    assert_eq!(
        stats.bytes,
        frames.iter().map(|f| f.len() as u64).sum::<u64>()
    );
    assert!(stats.last_seen_ns >= stats.first_seen_ns);
}

/// Early-packet steering in the kernel: with `STEER` at 2, a flow's third packet is passed as
/// `pass_enough_packets`; a flow in `VERDICTS` is passed as `pass_decided` from its next packet,
/// dropped when its class's action in `ACTIONS` is drop, or passed with its mark in the XDP
/// metadata when the action is mark.
#[test]
fn steering_passes_what_userspace_no_longer_needs() {
    if !is_root() {
        eprintln!("SKIPPED: BPF_PROG_TEST_RUN needs root");
        return;
    }
    let mut ebpf = xdp::load_object().expect("load XDP object");
    {
        let map = ebpf.map_mut("STEER").unwrap();
        let mut steer: aya::maps::Array<&mut aya::maps::MapData, u32> =
            aya::maps::Array::try_from(map).unwrap();
        steer.set(serveflow_common::STEER_PACKETS, 2, 0).unwrap();
    }
    let (a, b, c) = ([172, 16, 0, 1], [172, 16, 0, 2], [172, 16, 0, 3]);
    let decided = tcp4(c, 40000, b, 443, true, b"");
    let dropped = tcp4(c, 40001, b, 443, true, b"");
    let marked = tcp4(c, 40002, b, 443, true, b"");
    {
        let map = ebpf.map_mut("VERDICTS").unwrap();
        let mut verdicts: aya::maps::HashMap<&mut aya::maps::MapData, FlowKey, u32> =
            aya::maps::HashMap::try_from(map).unwrap();
        let key = |f: &[u8]| parse::parse_ethernet(f).unwrap().flow_key().0;
        verdicts.insert(key(&decided), 3, 0).unwrap();
        verdicts.insert(key(&dropped), 5, 0).unwrap();
        verdicts.insert(key(&marked), 7, 0).unwrap();
    }
    {
        // Class 5's action is drop.
        let map = ebpf.map_mut("ACTIONS").unwrap();
        let mut actions: aya::maps::Array<&mut aya::maps::MapData, u32> =
            aya::maps::Array::try_from(map).unwrap();
        actions
            .set(5, serveflow_common::Action::Drop as u32, 0)
            .unwrap();
        // Class 7's action is mark 0x10.
        actions
            .set(7, serveflow_common::Action::Mark as u32, 0)
            .unwrap();
        let map = ebpf.map_mut("MARKS").unwrap();
        let mut marks: aya::maps::Array<&mut aya::maps::MapData, u32> =
            aya::maps::Array::try_from(map).unwrap();
        marks.set(7, 0x10, 0).unwrap();
    }
    let frames = [
        tcp4(a, 30000, b, 22, true, b""),
        tcp4(b, 22, a, 30000, true, b""),
        tcp4(a, 30000, b, 22, false, b"data"),
        tcp4(b, 22, a, 30000, false, b"more"),
        decided,
        marked,
    ];
    let program = xdp::program(&mut ebpf).unwrap();
    for f in &frames {
        let r = program
            .test_run(TestRunOptions {
                data_in: Some(f),
                ..TestRunOptions::new()
            })
            .unwrap();
        assert_eq!(r.return_value, XDP_PASS);
    }
    let r = program
        .test_run(TestRunOptions {
            data_in: Some(&dropped),
            ..TestRunOptions::new()
        })
        .unwrap();
    assert_eq!(
        r.return_value, 1,
        "XDP_DROP for a class whose action is drop"
    );
    let c = xdp::read_counters(&ebpf).unwrap();
    assert_eq!(c[XdpCounter::DropByClass as usize], 1);
    assert_eq!(
        c[XdpCounter::MarkByClass as usize],
        1,
        "the marked flow, passed with its mark in the metadata"
    );
    assert_eq!(
        c[XdpCounter::PassNoSocket as usize],
        2,
        "packets 1-2: steered (no socket here)"
    );
    assert_eq!(c[XdpCounter::PassEnoughPackets as usize], 2, "packets 3-4");
    assert_eq!(c[XdpCounter::PassDecided as usize], 1, "the decided flow");
    let outcomes: u64 = XdpCounter::ALL
        .iter()
        .filter(|s| s.is_outcome())
        .map(|s| c[*s as usize])
        .sum();
    assert_eq!(outcomes, c[XdpCounter::Packets as usize]);
}
