//! IPFIX (RFC 7011) messages for verdicts: one data record per decided flow.
//!
//! Two templates, IPv4 (256) and IPv6 (257), differ only in the address fields. Standard
//! information elements carry the 5-tuple, the flow's start and its packet and octet counts
//! when it was decided; enterprise-specific ones (under [`PEN`]) carry the verdict. The same
//! list is written for collectors in `deploy/ipfix/` (pmacct's primitives file and a Wireshark
//! / nfdump-style element list), and a unit test keeps the two in step.

use std::net::IpAddr;

use crate::verdict::Verdict;

/// Private enterprise number of the verdict fields: 32473, the number IANA reserves for
/// documentation and examples (RFC 5612). serveflow has none registered; a collector needs only
/// to agree with the exporter, and the element files under `deploy/ipfix/` say which.
pub const PEN: u32 = 32473;

/// Template of IPv4 flows.
pub const TEMPLATE_V4: u16 = 256;
/// Template of IPv6 flows.
pub const TEMPLATE_V6: u16 = 257;

/// A field length meaning "variable" (RFC 7011 section 7).
const VARIABLE: u16 = 65535;
/// Message header (16 bytes) and set header (4 bytes).
const MESSAGE_HEADER: usize = 16;
const SET_HEADER: usize = 4;

/// What a field holds, for the element files collectors read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataType {
    /// An unsigned integer of the field's length.
    Unsigned,
    /// IEEE 754 single precision.
    Float32,
    /// UTF-8 text, variable length.
    String,
    /// An address.
    Ipv4,
    /// An address.
    Ipv6,
    /// Milliseconds since the Unix epoch.
    Milliseconds,
}

/// One field of a template.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// Information element id.
    pub id: u16,
    /// Enterprise number, or 0 for an IANA element.
    pub enterprise: u32,
    /// Length in bytes, or [`u16::MAX`] for variable.
    pub len: u16,
    /// Its name (IANA's, or serveflow's for enterprise elements).
    pub name: &'static str,
    /// Its type.
    pub kind: DataType,
}

const fn iana(id: u16, len: u16, name: &'static str, kind: DataType) -> Field {
    Field {
        id,
        enterprise: 0,
        len,
        name,
        kind,
    }
}

const fn ours(id: u16, len: u16, name: &'static str, kind: DataType) -> Field {
    Field {
        id,
        enterprise: PEN,
        len,
        name,
        kind,
    }
}

/// The verdict's own elements, the same in both templates.
pub const VERDICT_FIELDS: [Field; 8] = [
    ours(1, VARIABLE, "serveflowLabel", DataType::String),
    ours(2, 4, "serveflowConfidence", DataType::Float32),
    ours(3, VARIABLE, "serveflowStage", DataType::String),
    ours(4, VARIABLE, "serveflowModel", DataType::String),
    ours(5, VARIABLE, "serveflowTrigger", DataType::String),
    ours(6, 8, "serveflowLatencyMicroseconds", DataType::Unsigned),
    ours(7, 8, "serveflowServingNanoseconds", DataType::Unsigned),
    ours(8, VARIABLE, "serveflowServerName", DataType::String),
];

/// The flow's standard elements after its addresses.
const FLOW_FIELDS: [Field; 6] = [
    iana(7, 2, "sourceTransportPort", DataType::Unsigned),
    iana(11, 2, "destinationTransportPort", DataType::Unsigned),
    iana(4, 1, "protocolIdentifier", DataType::Unsigned),
    iana(152, 8, "flowStartMilliseconds", DataType::Milliseconds),
    iana(2, 8, "packetDeltaCount", DataType::Unsigned),
    iana(1, 8, "octetDeltaCount", DataType::Unsigned),
];

const V4_ADDRESSES: [Field; 2] = [
    iana(8, 4, "sourceIPv4Address", DataType::Ipv4),
    iana(12, 4, "destinationIPv4Address", DataType::Ipv4),
];
const V6_ADDRESSES: [Field; 2] = [
    iana(27, 16, "sourceIPv6Address", DataType::Ipv6),
    iana(28, 16, "destinationIPv6Address", DataType::Ipv6),
];

/// A template's fields in record order.
pub fn template_fields(template: u16) -> impl Iterator<Item = &'static Field> {
    let addresses = if template == TEMPLATE_V6 {
        &V6_ADDRESSES
    } else {
        &V4_ADDRESSES
    };
    addresses
        .iter()
        .chain(FLOW_FIELDS.iter())
        .chain(VERDICT_FIELDS.iter())
}

/// Builds IPFIX messages of at most `max_len` bytes from verdicts, numbering them as RFC 7011
/// asks (the sequence number counts data records sent before the message, per domain).
#[derive(Debug)]
pub struct Encoder {
    domain: u32,
    max_len: usize,
    sequence: u32,
}

impl Encoder {
    /// An encoder for observation domain `domain`; `max_len` bounds each message (a UDP
    /// datagram's payload: keep it under the path MTU).
    pub fn new(domain: u32, max_len: usize) -> Self {
        Encoder {
            domain,
            max_len: max_len.clamp(256, usize::from(u16::MAX)),
            sequence: 0,
        }
    }

    /// A message holding both templates.
    pub fn templates(&self, export_time_s: u32) -> Vec<u8> {
        let mut msg = Vec::with_capacity(256);
        header(&mut msg, export_time_s, self.sequence, self.domain);
        let set = msg.len();
        msg.extend_from_slice(&[0, 2, 0, 0]);
        for template in [TEMPLATE_V4, TEMPLATE_V6] {
            let fields: Vec<&Field> = template_fields(template).collect();
            put16(&mut msg, template);
            put16(&mut msg, fields.len() as u16);
            for f in fields {
                if f.enterprise == 0 {
                    put16(&mut msg, f.id);
                    put16(&mut msg, f.len);
                } else {
                    put16(&mut msg, f.id | 0x8000);
                    put16(&mut msg, f.len);
                    msg.extend_from_slice(&f.enterprise.to_be_bytes());
                }
            }
        }
        finish_set(&mut msg, set);
        finish_message(&mut msg);
        msg
    }

    /// Encodes `verdicts` into as few messages as fit `max_len`, each calling `out`. A record
    /// too long for any message (a huge server name) is cut to fit.
    pub fn data(&mut self, verdicts: &[Verdict], export_time_s: u32, out: &mut dyn FnMut(&[u8])) {
        let mut msg = Vec::with_capacity(self.max_len);
        let mut record = Vec::with_capacity(256);
        let mut set: Option<(u16, usize)> = None;
        let mut records = 0u32;
        for v in verdicts {
            let template = template_of(v);
            record.clear();
            encode_record(&mut record, v, self.max_len - MESSAGE_HEADER - SET_HEADER);
            let needs_set = set.map(|(t, _)| t) != Some(template);
            let room = record.len() + if needs_set { SET_HEADER } else { 0 };
            if !msg.is_empty() && msg.len() + room > self.max_len {
                if let Some((_, at)) = set.take() {
                    finish_set(&mut msg, at);
                }
                finish_message(&mut msg);
                out(&msg);
                self.sequence = self.sequence.wrapping_add(records);
                records = 0;
                msg.clear();
            }
            if msg.is_empty() {
                header(&mut msg, export_time_s, self.sequence, self.domain);
            }
            if set.map(|(t, _)| t) != Some(template) {
                if let Some((_, at)) = set.take() {
                    finish_set(&mut msg, at);
                }
                set = Some((template, msg.len()));
                put16(&mut msg, template);
                put16(&mut msg, 0);
            }
            msg.extend_from_slice(&record);
            records += 1;
        }
        if records > 0 {
            if let Some((_, at)) = set {
                finish_set(&mut msg, at);
            }
            finish_message(&mut msg);
            out(&msg);
            self.sequence = self.sequence.wrapping_add(records);
        }
    }
}

fn template_of(v: &Verdict) -> u16 {
    match (v.flow.src, v.flow.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => TEMPLATE_V4,
        _ => TEMPLATE_V6,
    }
}

fn v6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// One data record, at most `max` bytes (the server name gives way).
fn encode_record(buf: &mut Vec<u8>, v: &Verdict, max: usize) {
    match (v.flow.src, v.flow.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            buf.extend_from_slice(&s.octets());
            buf.extend_from_slice(&d.octets());
        }
        (s, d) => {
            buf.extend_from_slice(&v6(s));
            buf.extend_from_slice(&v6(d));
        }
    }
    put16(buf, v.flow.sport);
    put16(buf, v.flow.dport);
    buf.push(v.flow.proto);
    buf.extend_from_slice(&(v.first_seen_us / 1000).to_be_bytes());
    buf.extend_from_slice(&u64::from(v.packets).to_be_bytes());
    buf.extend_from_slice(&v.bytes.to_be_bytes());
    put_str(buf, &v.label);
    buf.extend_from_slice(&v.confidence.to_be_bytes());
    put_str(buf, v.stage.name());
    put_str(buf, v.model);
    put_str(buf, v.trigger.name());
    buf.extend_from_slice(&(v.latency_us.max(0.0).round() as u64).to_be_bytes());
    buf.extend_from_slice(&((v.serving_us * 1e3).max(0.0).round() as u64).to_be_bytes());
    let name = v.server_name.as_deref().unwrap_or("");
    // The length prefix takes 1 byte below 255, else 3.
    let room = max.saturating_sub(buf.len() + 3);
    put_str(buf, cut(name, room));
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A variable-length field: 1 length byte below 255, else 255 and 2 bytes (RFC 7011 7).
fn put_str(buf: &mut Vec<u8>, s: &str) {
    let s = cut(s, usize::from(u16::MAX) - 3);
    if s.len() < 255 {
        buf.push(s.len() as u8);
    } else {
        buf.push(255);
        put16(buf, s.len() as u16);
    }
    buf.extend_from_slice(s.as_bytes());
}

fn put16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_be_bytes());
}

fn header(msg: &mut Vec<u8>, export_time_s: u32, sequence: u32, domain: u32) {
    put16(msg, 10);
    put16(msg, 0);
    msg.extend_from_slice(&export_time_s.to_be_bytes());
    msg.extend_from_slice(&sequence.to_be_bytes());
    msg.extend_from_slice(&domain.to_be_bytes());
}

fn finish_set(msg: &mut [u8], at: usize) {
    let len = (msg.len() - at) as u16;
    msg[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn finish_message(msg: &mut [u8]) {
    let len = msg.len() as u16;
    msg[2..4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "tests fail loudly on purpose"
    )]
    use std::collections::HashMap;

    use super::*;
    use crate::verdict::{StageKind, Trigger};

    /// A decoder written from RFC 7011 independently of the encoder's helpers: templates are
    /// learned from template sets, data records are split into fields by them.
    #[derive(Default)]
    struct Decoder {
        templates: HashMap<u16, Vec<(u16, u32, u16)>>,
    }

    type Record = HashMap<(u32, u16), Vec<u8>>;

    impl Decoder {
        fn message(&mut self, m: &[u8]) -> (u32, Vec<Record>) {
            assert_eq!(u16::from_be_bytes([m[0], m[1]]), 10, "version");
            assert_eq!(usize::from(u16::from_be_bytes([m[2], m[3]])), m.len());
            let seq = u32::from_be_bytes(m[8..12].try_into().unwrap());
            let mut at = 16;
            let mut records = Vec::new();
            while at < m.len() {
                let id = u16::from_be_bytes([m[at], m[at + 1]]);
                let len = usize::from(u16::from_be_bytes([m[at + 2], m[at + 3]]));
                assert!(len >= 4 && at + len <= m.len(), "set length");
                let body = &m[at + 4..at + len];
                if id == 2 {
                    self.template_set(body);
                } else {
                    let fields = self.templates.get(&id).expect("data before its template");
                    let mut p = 0;
                    while p < body.len() {
                        let mut r = Record::new();
                        for &(ie, pen, flen) in fields {
                            let n = if flen == VARIABLE {
                                let n = usize::from(body[p]);
                                p += 1;
                                if n == 255 {
                                    let n = usize::from(u16::from_be_bytes([body[p], body[p + 1]]));
                                    p += 2;
                                    n
                                } else {
                                    n
                                }
                            } else {
                                usize::from(flen)
                            };
                            r.insert((pen, ie), body[p..p + n].to_vec());
                            p += n;
                        }
                        records.push(r);
                    }
                }
                at += len;
            }
            (seq, records)
        }

        fn template_set(&mut self, mut b: &[u8]) {
            while b.len() >= 4 {
                let id = u16::from_be_bytes([b[0], b[1]]);
                let n = u16::from_be_bytes([b[2], b[3]]);
                b = &b[4..];
                let mut fields = Vec::new();
                for _ in 0..n {
                    let ie = u16::from_be_bytes([b[0], b[1]]);
                    let len = u16::from_be_bytes([b[2], b[3]]);
                    b = &b[4..];
                    let pen = if ie & 0x8000 != 0 {
                        let pen = u32::from_be_bytes(b[..4].try_into().unwrap());
                        b = &b[4..];
                        pen
                    } else {
                        0
                    };
                    fields.push((ie & 0x7fff, pen, len));
                }
                self.templates.insert(id, fields);
            }
        }
    }

    fn verdict(i: u16, v6: bool) -> Verdict {
        let (src, dst): (IpAddr, IpAddr) = if v6 {
            (
                "2001:db8::1".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
            )
        } else {
            ([10, 0, 0, 1].into(), [192, 0, 2, 7].into())
        };
        let mut v = Verdict::sample();
        v.flow.src = src;
        v.flow.dst = dst;
        v.flow.sport = 40000 + i;
        v.flow.dport = 443;
        v.first_seen_us = 1_700_000_000_123_456;
        v.label = format!("class{i}").into();
        v.confidence = 0.75;
        v.stage = StageKind::Slow;
        v.trigger = Trigger::Timeout;
        v.packets = 3;
        v.bytes = 1234;
        v.latency_us = 1500.4;
        v.serving_us = 2.5;
        v.server_name = Some("example.org".into());
        v
    }

    fn text(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn records_decode_back_to_their_verdicts_across_both_templates() {
        let mut enc = Encoder::new(7, 1400);
        let mut dec = Decoder::default();
        dec.message(&enc.templates(1));
        let verdicts: Vec<Verdict> = (0..100).map(|i| verdict(i, i % 3 == 0)).collect();
        let mut messages = Vec::new();
        enc.data(&verdicts, 1, &mut |m| messages.push(m.to_vec()));
        assert!(messages.len() > 1, "100 records do not fit one datagram");
        let mut got = Vec::new();
        let mut expected_seq = 0;
        for m in &messages {
            assert!(m.len() <= 1400);
            let (seq, records) = dec.message(m);
            assert_eq!(
                seq, expected_seq,
                "sequence counts records before the message"
            );
            expected_seq += records.len() as u32;
            got.extend(records);
        }
        assert_eq!(got.len(), 100);
        for (v, r) in verdicts.iter().zip(&got) {
            let (s, d) = match v.flow.src {
                IpAddr::V4(_) => ((0, 8), (0, 12)),
                IpAddr::V6(_) => ((0, 27), (0, 28)),
            };
            let addr = |b: &[u8]| -> IpAddr {
                if b.len() == 4 {
                    <[u8; 4]>::try_from(b).unwrap().into()
                } else {
                    <[u8; 16]>::try_from(b).unwrap().into()
                }
            };
            assert_eq!(addr(&r[&s]), v.flow.src);
            assert_eq!(addr(&r[&d]), v.flow.dst);
            assert_eq!(r[&(0, 7)], v.flow.sport.to_be_bytes());
            assert_eq!(r[&(0, 11)], 443u16.to_be_bytes());
            assert_eq!(r[&(0, 4)], [6]);
            assert_eq!(r[&(0, 152)], 1_700_000_000_123u64.to_be_bytes());
            assert_eq!(r[&(0, 2)], 3u64.to_be_bytes());
            assert_eq!(r[&(0, 1)], 1234u64.to_be_bytes());
            assert_eq!(text(&r[&(PEN, 1)]), &*v.label);
            assert_eq!(r[&(PEN, 2)], 0.75f32.to_be_bytes());
            assert_eq!(text(&r[&(PEN, 3)]), "slow");
            assert_eq!(text(&r[&(PEN, 4)]), "fast");
            assert_eq!(text(&r[&(PEN, 5)]), "timeout");
            assert_eq!(r[&(PEN, 6)], 1500u64.to_be_bytes());
            assert_eq!(r[&(PEN, 7)], 2500u64.to_be_bytes());
            assert_eq!(text(&r[&(PEN, 8)]), "example.org");
        }
    }

    #[test]
    fn long_strings_take_the_three_byte_length_and_oversized_names_are_cut() {
        let mut enc = Encoder::new(0, 512);
        let mut dec = Decoder::default();
        dec.message(&enc.templates(0));
        let mut v = verdict(1, false);
        v.label = "l".repeat(300).into();
        v.server_name = Some("é".repeat(2000));
        let mut messages = Vec::new();
        enc.data(&[v], 0, &mut |m| messages.push(m.to_vec()));
        assert_eq!(messages.len(), 1);
        assert!(messages[0].len() <= 512);
        let (_, records) = dec.message(&messages[0]);
        assert_eq!(text(&records[0][&(PEN, 1)]).len(), 300);
        let name = text(&records[0][&(PEN, 8)]);
        assert!(!name.is_empty() && name.chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_collector_files_list_every_verdict_element() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ipfix");
        let pmacct = std::fs::read_to_string(dir.join("pmacct-primitives.lst")).unwrap();
        let csv = std::fs::read_to_string(dir.join("serveflow-elements.csv")).unwrap();
        for f in &VERDICT_FIELDS {
            let len = if f.len == VARIABLE {
                "vlen".to_string()
            } else {
                f.len.to_string()
            };
            let primitive = format!("field_type={PEN}:{}", f.id);
            let line = pmacct
                .lines()
                .find(|l| l.contains(&format!("{primitive} ")))
                .unwrap_or_else(|| panic!("{} missing from pmacct-primitives.lst", f.name));
            assert!(line.contains(&format!("len={len} ")), "{line}");
            let row = csv
                .lines()
                .find(|l| l.starts_with(&format!("{},{},", f.id, f.name)))
                .unwrap_or_else(|| panic!("{} missing from serveflow-elements.csv", f.name));
            assert!(row.ends_with(&format!(",{PEN}")), "{row}");
        }
        assert_eq!(
            pmacct.lines().filter(|l| l.starts_with("name=")).count(),
            VERDICT_FIELDS.len()
        );
    }

    #[test]
    fn nothing_to_send_sends_nothing() {
        let mut enc = Encoder::new(0, 1400);
        let mut n = 0;
        enc.data(&[], 0, &mut |_| n += 1);
        assert_eq!(n, 0);
    }
}
