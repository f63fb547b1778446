//! The server-name parsers (TLS SNI, QUIC Initial, HTTP/SSDP Host, DNS/mDNS/LLMNR, DHCP) on
//! arbitrary payloads: never panic, and a name they return is clean (printable, bounded).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serveflow::services::{dns, names, quic, tls};

fn check(parser: &str, name: Option<String>) {
    if let Some(n) = name {
        assert!(n.len() <= 255, "{parser}: {n}");
        assert!(!n.chars().any(char::is_control), "{parser}: {n:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    check("tls_sni", tls::tls_sni(data));
    check("client_hello_sni", tls::client_hello_sni(data));
    check("http_host", names::http_host(data));
    check("dhcp_host_name", names::dhcp_host_name(data));
    check("quic_sni", quic::quic_sni(data));
    check("message_name", dns::message_name(data));
    let _ = dns::parse_answers(data);
    for (proto, sport, dport) in [
        (17, 5353, 5353),
        (17, 53000, 53),
        (17, 68, 67),
        (17, 50000, 443),
        (17, 50000, 1900),
        (6, 50000, 443),
        (6, 50000, 80),
        (6, 50000, 53),
    ] {
        check("server_name", names::server_name(proto, sport, dport, data));
    }
});
