//! The server name (SNI) of a TLS ClientHello, in a TLS record or bare (as QUIC carries it).

use super::dns::clean_name;

/// The SNI host name of a TLS ClientHello record, if `payload` starts with one.
pub fn tls_sni(payload: &[u8]) -> Option<String> {
    // Record: type 22 (handshake), version, length.
    let rec = payload.get(..5)?;
    if rec[0] != 22 {
        return None;
    }
    client_hello_sni(payload.get(5..)?)
}

/// The SNI of a TLS handshake message that starts with a ClientHello (no record header: as
/// carried in TLS records' bodies and in QUIC CRYPTO frames).
pub fn client_hello_sni(body: &[u8]) -> Option<String> {
    // Handshake: type 1 (ClientHello), 3-byte length.
    if *body.first()? != 1 {
        return None;
    }
    let mut at = 4 + 2 + 32; // header, client version, random
    let sid_len = usize::from(*body.get(at)?);
    at += 1 + sid_len;
    let suites = usize::from(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
    at += 2 + suites;
    let comp = usize::from(*body.get(at)?);
    at += 1 + comp;
    let ext_total = usize::from(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
    at += 2;
    let end = (at + ext_total).min(body.len());
    while at + 4 <= end {
        let kind = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
        at += 4;
        if kind == 0 {
            // server_name: list length (2), then entries of type (1), length (2), name.
            let list = body.get(at..at + len)?;
            let mut i = 2;
            while i + 3 <= list.len() {
                let name_type = list[i];
                let name_len = usize::from(u16::from_be_bytes([list[i + 1], list[i + 2]]));
                let name = list.get(i + 3..i + 3 + name_len)?;
                if name_type == 0 {
                    return clean_name(name);
                }
                i += 3 + name_len;
            }
            return None;
        }
        at += len;
    }
    None
}
