//! The SNI of a QUIC client Initial packet (RFC 9000/9001: QUIC v1, v2, IETF drafts 29-34 and
//! Google's T051).
//!
//! Initial packets are encrypted, but with keys every observer can derive from the packet's
//! own Destination Connection ID; decrypting them is how DPI engines (nDPI, Wireshark) read
//! QUIC server names. Steps: derive the client Initial key, IV and header-protection key
//! (HKDF-SHA256 with the version's fixed salt), remove header protection (AES-128-ECB mask),
//! decrypt the payload (AES-128-GCM), gather the CRYPTO frames from offset 0 and read the
//! ClientHello's server_name. Anything unexpected gives None.

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use aes_gcm::{aead::AeadInPlace, Aes128Gcm, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;

use super::tls::client_hello_sni;

const V1: u32 = 0x0000_0001;
const V2: u32 = 0x6b33_43cf;
/// IETF drafts 29-32 (their own salt) and 33-34 (the v1 salt).
const DRAFT_29_32: std::ops::RangeInclusive<u32> = 0xff00_001d..=0xff00_0020;
const DRAFT_33_34: std::ops::RangeInclusive<u32> = 0xff00_0021..=0xff00_0022;
/// Google QUIC T051: IETF packet format and TLS with its own salt.
const T051: u32 = 0x5430_3531;
const SALT_DRAFT_29: [u8; 20] = [
    0xaf, 0xbf, 0xec, 0x28, 0x99, 0x93, 0xd2, 0x4c, 0x9e, 0x97, 0x86, 0xf1, 0x9c, 0x61, 0x11, 0xe0,
    0x43, 0x90, 0xa8, 0x99,
];
const SALT_T051: [u8; 20] = [
    0x7a, 0x4e, 0xde, 0xf4, 0xe7, 0xcc, 0xee, 0x5f, 0xa4, 0x50, 0x6c, 0x19, 0x12, 0x4f, 0xc8, 0xcc,
    0xda, 0x6e, 0x03, 0x3d,
];
const SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];
const SALT_V2: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb,
    0xf9, 0xbd, 0x2e, 0xd9,
];

/// Client Initial keys.
#[derive(Debug, PartialEq, Eq)]
pub struct InitialKeys {
    /// AEAD key.
    pub key: [u8; 16],
    /// AEAD IV.
    pub iv: [u8; 12],
    /// Header-protection key.
    pub hp: [u8; 16],
}

/// HKDF-Expand-Label (RFC 8446 7.1) with an empty context.
fn expand_label<const N: usize>(prk: &Hkdf<Sha256>, label: &[u8]) -> Option<[u8; N]> {
    let mut info = Vec::with_capacity(4 + 6 + label.len());
    info.extend_from_slice(&(N as u16).to_be_bytes());
    info.push((6 + label.len()) as u8);
    info.extend_from_slice(b"tls13 ");
    info.extend_from_slice(label);
    info.push(0);
    let mut out = [0u8; N];
    prk.expand(&info, &mut out).ok()?;
    Some(out)
}

/// Derives the client Initial keys for a version and Destination Connection ID.
pub fn client_initial_keys(version: u32, dcid: &[u8]) -> Option<InitialKeys> {
    let v1_labels: (&[u8], &[u8], &[u8]) = (b"quic key", b"quic iv", b"quic hp");
    let (salt, (key_label, iv_label, hp_label)): (&[u8], _) = match version {
        V1 => (&SALT_V1, v1_labels),
        V2 => (&SALT_V2, (b"quicv2 key", b"quicv2 iv", b"quicv2 hp")),
        v if DRAFT_33_34.contains(&v) => (&SALT_V1, v1_labels),
        v if DRAFT_29_32.contains(&v) => (&SALT_DRAFT_29, v1_labels),
        T051 => (&SALT_T051, v1_labels),
        _ => return None,
    };
    let initial = Hkdf::<Sha256>::new(Some(salt), dcid);
    let client: [u8; 32] = expand_label(&initial, b"client in")?;
    let client = Hkdf::<Sha256>::from_prk(&client).ok()?;
    Some(InitialKeys {
        key: expand_label(&client, key_label)?,
        iv: expand_label(&client, iv_label)?,
        hp: expand_label(&client, hp_label)?,
    })
}

/// Reads a QUIC variable-length integer at `*at`.
fn varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let first = *buf.get(*at)?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(*at..*at + len)?;
    let mut v = u64::from(first & 0x3f);
    for b in &bytes[1..] {
        v = (v << 8) | u64::from(*b);
    }
    *at += len;
    Some(v)
}

/// The SNI of the ClientHello in a QUIC client Initial packet (UDP payload), if any.
pub fn quic_sni(datagram: &[u8]) -> Option<String> {
    let first = *datagram.first()?;
    // Long header with the fixed bit.
    if first & 0xc0 != 0xc0 {
        return None;
    }
    let version = u32::from_be_bytes(datagram.get(1..5)?.try_into().ok()?);
    // v2 renumbered the long-header packet types: Initial is 1 there, 0 elsewhere.
    let initial_type = if version == V2 { 1 } else { 0 };
    if (first >> 4) & 0x03 != initial_type {
        return None;
    }
    let mut at = 5;
    let dcid_len = usize::from(*datagram.get(at)?);
    let dcid = datagram.get(at + 1..at + 1 + dcid_len)?;
    at += 1 + dcid_len;
    let scid_len = usize::from(*datagram.get(at)?);
    at += 1 + scid_len;
    let token_len = usize::try_from(varint(datagram, &mut at)?).ok()?;
    at = at.checked_add(token_len)?;
    let length = usize::try_from(varint(datagram, &mut at)?).ok()?;
    let pn_offset = at;
    let end = pn_offset.checked_add(length)?;
    if end > datagram.len() || length < 20 {
        return None;
    }
    let keys = client_initial_keys(version, dcid)?;

    // Header protection: the sample starts 4 bytes after the packet number's start.
    let sample = datagram.get(pn_offset + 4..pn_offset + 20)?;
    let mut mask = GenericArray::clone_from_slice(sample);
    aes::Aes128::new(GenericArray::from_slice(&keys.hp)).encrypt_block(&mut mask);
    let mut packet = datagram[..end].to_vec();
    packet[0] ^= mask[0] & 0x0f;
    let pn_len = usize::from(packet[0] & 0x03) + 1;
    let mut pn = 0u64;
    for i in 0..pn_len {
        packet[pn_offset + i] ^= mask[1 + i];
        pn = (pn << 8) | u64::from(packet[pn_offset + i]);
    }

    let mut nonce = keys.iv;
    for (i, b) in pn.to_be_bytes().iter().enumerate() {
        nonce[4 + i] ^= b;
    }
    let (header, rest) = packet.split_at_mut(pn_offset + pn_len);
    if rest.len() < 16 {
        return None;
    }
    let (ciphertext, tag) = rest.split_at_mut(rest.len() - 16);
    let cipher = Aes128Gcm::new(GenericArray::from_slice(&keys.key));
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(&nonce),
            header,
            ciphertext,
            Tag::from_slice(tag),
        )
        .ok()?;
    client_hello_sni(&crypto_stream(ciphertext)?)
}

/// The contiguous CRYPTO data from offset 0 in a decrypted Initial payload.
fn crypto_stream(frames: &[u8]) -> Option<Vec<u8>> {
    let mut pieces: Vec<(usize, &[u8])> = Vec::new();
    let mut at = 0;
    while at < frames.len() {
        match varint(frames, &mut at)? {
            0x00 | 0x01 => {}                       // PADDING, PING
            0x02 | 0x03 => return assemble(pieces), // ACK: CRYPTO frames usually come first
            0x06 => {
                let offset = usize::try_from(varint(frames, &mut at)?).ok()?;
                let len = usize::try_from(varint(frames, &mut at)?).ok()?;
                pieces.push((offset, frames.get(at..at.checked_add(len)?)?));
                at += len;
            }
            0x1c | 0x1d => return assemble(pieces), // CONNECTION_CLOSE
            _ => return assemble(pieces),
        }
    }
    assemble(pieces)
}

fn assemble(mut pieces: Vec<(usize, &[u8])>) -> Option<Vec<u8>> {
    pieces.sort_by_key(|(offset, _)| *offset);
    let mut out: Vec<u8> = Vec::new();
    for (offset, data) in pieces {
        if offset > out.len() {
            break; // a gap: the rest is in another packet
        }
        let skip = out.len() - offset;
        if skip < data.len() {
            out.extend_from_slice(&data[skip..]);
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
            .collect()
    }

    /// RFC 9001 Appendix A.1: keys for DCID 0x8394c8f03e515708.
    #[test]
    fn rfc9001_client_initial_keys() {
        let keys = client_initial_keys(V1, &hex("8394c8f03e515708")).unwrap_or(InitialKeys {
            key: [0; 16],
            iv: [0; 12],
            hp: [0; 16],
        });
        assert_eq!(keys.key.to_vec(), hex("1f369613dd76d5467730efcbe3b1a22d"));
        assert_eq!(keys.iv.to_vec(), hex("fa044b2f42a3fd3b46fb255c"));
        assert_eq!(keys.hp.to_vec(), hex("9f50449e04a0e810283a1e9933adedd2"));
    }

    #[test]
    fn garbage_is_not_an_initial() {
        assert_eq!(quic_sni(&[]), None);
        assert_eq!(quic_sni(&[0xc3, 0, 0, 0, 1, 8]), None);
        let mut fake = vec![
            0xc3, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0x41, 0x00,
        ];
        fake.resize(1200, 0);
        assert_eq!(quic_sni(&fake), None, "authentication fails");
    }
}
