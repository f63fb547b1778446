//! Property tests over arbitrary bytes: the packet parser (every link type), the capture
//! reader (random files, and valid headers followed by random records), and the DNS, DHCP, TLS
//! and HTTP parsers never panic, and what they return stays inside the input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use std::io::Write as _;

use proptest::prelude::*;
use serveflow::{
    capture::file::CaptureFile,
    frame::LinkType,
    parse,
    services::{dns, names, tls},
};

const LINKS: [u32; 14] = [
    0, 1, 9, 12, 101, 104, 105, 108, 113, 127, 192, 228, 229, 276,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn parser_never_panics_and_stays_in_bounds(
        link in prop::sample::select(LINKS.to_vec()),
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        if let Ok(p) = parse::parse_link(LinkType::from(link), &bytes) {
            prop_assert!(p.l3 < p.l4 && p.l4 < bytes.len());
            prop_assert!(p.payload_offset() <= bytes.len());
            prop_assert!(p.ip_end() <= bytes.len());
            let _ = (p.flow_key(), p.tcp_flags(), p.tcp_window(), p.ttl(), p.payload_len());
        }
    }

    #[test]
    fn name_parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = tls::tls_sni(&bytes);
        let _ = names::http_host(&bytes);
        let _ = dns::parse_answers(&bytes);
        let _ = dns::message_name(&bytes);
        let _ = names::dhcp_host_name(&bytes);
        for (proto, sport, dport) in [(17, 53, 5000), (17, 68, 67), (17, 5000, 443), (6, 5000, 443), (6, 5000, 53)] {
            let _ = names::server_name(proto, sport, dport, &bytes);
        }
        let mut dhcp = vec![0u8; 236];
        dhcp.extend_from_slice(&[99, 130, 83, 99]);
        dhcp.extend_from_slice(&bytes);
        let _ = names::dhcp_host_name(&dhcp);
        let mut with_tls_header = vec![22, 3, 1, 0, 200, 1];
        with_tls_header.extend_from_slice(&bytes);
        let _ = tls::tls_sni(&with_tls_header);
    }
}

fn read_all(bytes: &[u8]) -> u64 {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(bytes).unwrap();
    match CaptureFile::open(file.path()) {
        Ok(mut capture) => {
            let mut n = 0;
            while capture.next_packet().is_some() {
                n += 1;
            }
            n
        }
        Err(_) => 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn capture_reader_survives_garbage(
        header in prop::sample::select(vec![
            // pcap µs little-endian, Ethernet
            vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0],
            // pcap ns big-endian, raw IP
            vec![0xa1, 0xb2, 0x3c, 0x4d, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 101],
            // pcapng section header start
            vec![0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 28, 0, 0, 0],
            vec![],
        ]),
        body in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = header;
        bytes.extend_from_slice(&body);
        read_all(&bytes);
    }
}
