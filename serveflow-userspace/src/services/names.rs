//! Server names read off the wire from a flow's first initiator payloads: TLS ClientHello SNI,
//! the HTTP/1 (and SSDP) `Host` header, QUIC SNI, the name a DNS/mDNS/LLMNR message asks
//! about and a DHCP client's host name. Every parser bounds its reads and gives up (None) on
//! anything unexpected; a ClientHello split over several TCP segments is not reassembled.

use serveflow_common::proto;

use super::{dns, dns::clean_name, quic, tls::tls_sni};

/// UDP ports whose payload is a DNS-format message: DNS, mDNS, LLMNR.
const DNS_PORTS: [u16; 3] = [53, 5353, 5355];
/// DHCP server and client ports.
const DHCP_PORTS: [u16; 2] = [67, 68];

/// The server name an initiator payload of a `proto` packet between `sport` and `dport`
/// carries, if any. The one place the flow table (and so every feature) reads names from.
pub fn server_name(proto: u8, sport: u16, dport: u16, payload: &[u8]) -> Option<String> {
    let on = |ports: &[u16]| ports.contains(&sport) || ports.contains(&dport);
    match proto {
        proto::UDP if on(&DNS_PORTS) => dns::message_name(payload),
        proto::UDP if on(&DHCP_PORTS) => dhcp_host_name(payload),
        proto::UDP => quic::quic_sni(payload).or_else(|| http_host(payload)),
        proto::TCP if on(&[53]) => dns::message_name(payload.get(2..)?),
        proto::TCP => tls_sni(payload).or_else(|| http_host(payload)),
        _ => None,
    }
}

/// The host name option (12) of a BOOTP/DHCP message.
pub fn dhcp_host_name(msg: &[u8]) -> Option<String> {
    // Fixed BOOTP part (236 bytes), then the magic cookie 99.130.83.99 and the options.
    if msg.get(236..240)? != [99, 130, 83, 99] {
        return None;
    }
    let mut at = 240;
    while let Some(&code) = msg.get(at) {
        match code {
            0 => at += 1,
            255 => return None,
            _ => {
                let len = usize::from(*msg.get(at + 1)?);
                let value = msg.get(at + 2..at + 2 + len)?;
                if code == 12 {
                    return clean_name(value);
                }
                at += 2 + len;
            }
        }
    }
    None
}

/// The `Host` of an HTTP/1.x request, if `payload` starts with one.
pub fn http_host(payload: &[u8]) -> Option<String> {
    const METHODS: [&[u8]; 11] = [
        b"GET ",
        b"POST ",
        b"HEAD ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"CONNECT ",
        b"PATCH ",
        b"TRACE ",
        b"M-SEARCH ",
        b"NOTIFY ",
    ];
    if !METHODS.iter().any(|m| payload.starts_with(m)) {
        return None;
    }
    let head = &payload[..payload.len().min(4096)];
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.len() > 5 && line[..5].eq_ignore_ascii_case(b"host:") {
            let value = line[5..].trim_ascii();
            // Drop a port; keep an IPv6 literal's inside.
            let host = if value.first() == Some(&b'[') {
                value[1..].split(|b| *b == b']').next()?
            } else {
                value.split(|b| *b == b':').next()?
            };
            return clean_name(host);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello with one cipher suite and an SNI of `name`.
    pub fn client_hello(name: &str) -> Vec<u8> {
        let n = name.as_bytes();
        let mut sni = vec![0u8, 0]; // extension type server_name
        let list_len = 3 + n.len();
        sni.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
        sni.extend_from_slice(&(list_len as u16).to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&(n.len() as u16).to_be_bytes());
        sni.extend_from_slice(n);
        let mut hello = vec![3, 3];
        hello.extend_from_slice(&[7; 32]);
        hello.push(0); // session id
        hello.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        hello.extend_from_slice(&[1, 0]); // null compression
        hello.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        hello.extend_from_slice(&sni);
        let mut hs = vec![1, 0, (hello.len() >> 8) as u8, hello.len() as u8];
        hs.extend_from_slice(&hello);
        let mut rec = vec![22, 3, 1, (hs.len() >> 8) as u8, hs.len() as u8];
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn sni_is_read_and_garbage_is_not() {
        let hello = client_hello("Www.Example.COM");
        assert_eq!(tls_sni(&hello).as_deref(), Some("www.example.com"));
        for cut in 0..hello.len() {
            assert_eq!(tls_sni(&hello[..cut]), None, "cut at {cut}");
        }
        assert_eq!(tls_sni(b"GET / HTTP/1.1\r\n"), None);
    }

    #[test]
    fn dhcp_host_names_and_the_dispatch_by_port() {
        let mut msg = vec![0u8; 236];
        msg.extend_from_slice(&[99, 130, 83, 99, 53, 1, 1, 0, 12, 6]);
        msg.extend_from_slice(b"Gainsp");
        msg.push(255);
        assert_eq!(dhcp_host_name(&msg).as_deref(), Some("gainsp"));
        assert_eq!(
            server_name(proto::UDP, 68, 67, &msg).as_deref(),
            Some("gainsp")
        );
        for cut in 0..msg.len() {
            let _ = dhcp_host_name(&msg[..cut]);
        }
        msg[236] = 0;
        assert_eq!(dhcp_host_name(&msg), None, "no magic cookie");
        let ssdp = b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n\r\n";
        assert_eq!(
            server_name(proto::UDP, 50000, 1900, ssdp).as_deref(),
            Some("239.255.255.250")
        );
        let hello = client_hello("a.example");
        assert_eq!(
            server_name(proto::TCP, 40000, 443, &hello).as_deref(),
            Some("a.example")
        );
        assert_eq!(server_name(proto::UDP, 40000, 443, &hello), None);
    }

    #[test]
    fn http_host_with_and_without_port() {
        let req = b"GET /x HTTP/1.1\r\nUser-Agent: a\r\nHost: Example.org:8080\r\n\r\n";
        assert_eq!(http_host(req).as_deref(), Some("example.org"));
        assert_eq!(
            http_host(b"POST / HTTP/1.0\r\nhost: api.test\r\n\r\n").as_deref(),
            Some("api.test")
        );
        assert_eq!(http_host(b"HTTP/1.1 200 OK\r\nHost: x\r\n"), None);
    }
}
