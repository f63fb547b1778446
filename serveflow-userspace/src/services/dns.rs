//! DNS answers seen on the wire, kept as an address -> name cache with the answers' TTLs, so a
//! later flow to that address can be named after what the client asked for.
//!
//! The name recorded is the question's (what the client resolved), not the end of a CNAME
//! chain: `www.youtube.com -> CNAME youtube-ui.l.google.com -> A 142.250.x.x` names flows to
//! 142.250.x.x `www.youtube.com`.

use std::{collections::HashMap, net::IpAddr};

/// Most entries kept; the cache is cleared of expired entries when it reaches this.
const MAX_ENTRIES: usize = 1 << 20;

/// The cache.
#[derive(Debug, Default)]
pub struct DnsCache {
    by_addr: HashMap<IpAddr, (String, u64), foldhash::fast::RandomState>,
    /// Responses parsed.
    pub responses: u64,
    /// Responses that did not parse.
    pub malformed: u64,
}

impl DnsCache {
    /// Reads a DNS message (UDP payload from port 53) seen at `now_ns` and caches its A/AAAA
    /// answers under the question's name.
    pub fn observe(&mut self, msg: &[u8], now_ns: u64) {
        match parse_answers(msg) {
            Some((name, answers)) => {
                self.responses += 1;
                if self.by_addr.len() + answers.len() > MAX_ENTRIES {
                    self.by_addr.retain(|_, (_, exp)| *exp > now_ns);
                }
                for (addr, ttl) in answers {
                    let expires = now_ns.saturating_add(u64::from(ttl) * 1_000_000_000);
                    self.by_addr.insert(addr, (name.clone(), expires));
                }
            }
            None => self.malformed += 1,
        }
    }

    /// The name a still-valid answer gave `addr` at `now_ns`.
    pub fn lookup(&self, addr: &IpAddr, now_ns: u64) -> Option<&str> {
        self.by_addr
            .get(addr)
            .filter(|(_, exp)| *exp >= now_ns)
            .map(|(name, _)| name.as_str())
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }
}

/// Reads a (possibly compressed) name at `at`; returns it and the offset after it in place.
fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut end = None;
    for _ in 0..64 {
        let len = *msg.get(at)?;
        match len {
            0 => {
                if name.len() > 255 || name.chars().any(char::is_control) {
                    return None;
                }
                return Some((name.to_ascii_lowercase(), end.unwrap_or(at + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                let ptr = usize::from(u16::from_be_bytes([l & 0x3f, *msg.get(at + 1)?]));
                end.get_or_insert(at + 2);
                if ptr >= at {
                    return None; // pointers must go backwards: no loops
                }
                at = ptr;
            }
            l if l & 0xc0 == 0 => {
                let label = msg.get(at + 1..at + 1 + usize::from(l))?;
                // Names end up in features, CSV rows and logs: a label with control bytes is
                // not a name (mDNS instance names may hold spaces and UTF-8, so no stricter).
                if label.iter().any(|b| b.is_ascii_control()) {
                    return None;
                }
                if !name.is_empty() {
                    name.push('.');
                }
                name.push_str(&String::from_utf8_lossy(label));
                at += 1 + usize::from(l);
            }
            _ => return None,
        }
    }
    None
}

/// The name a DNS message (query or response; DNS, mDNS or LLMNR) is about: its first
/// question's, or for an answer-only message (mDNS announcements) its first answer's.
pub fn message_name(msg: &[u8]) -> Option<String> {
    let header = msg.get(..12)?;
    let qd = u16::from_be_bytes([header[4], header[5]]);
    let an = u16::from_be_bytes([header[6], header[7]]);
    if qd == 0 && an == 0 {
        return None;
    }
    let (name, _) = read_name(msg, 12)?;
    (!name.is_empty()).then_some(name)
}

/// The question name and the A/AAAA answers (address, TTL) of a DNS response.
pub fn parse_answers(msg: &[u8]) -> Option<(String, Vec<(IpAddr, u32)>)> {
    let header = msg.get(..12)?;
    if header[2] & 0x80 == 0 {
        return None; // a query, not a response
    }
    let qd = u16::from_be_bytes([header[4], header[5]]);
    let an = u16::from_be_bytes([header[6], header[7]]);
    if qd != 1 {
        return None;
    }
    let (question, mut at) = read_name(msg, 12)?;
    at += 4; // type, class
    let mut answers = Vec::new();
    for _ in 0..an.min(64) {
        let (_, after) = read_name(msg, at)?;
        let fixed = msg.get(after..after + 10)?;
        let kind = u16::from_be_bytes([fixed[0], fixed[1]]);
        let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let data = msg.get(after + 10..after + 10 + len)?;
        match (kind, len) {
            (1, 4) => answers.push((IpAddr::from([data[0], data[1], data[2], data[3]]), ttl)),
            (28, 16) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(data);
                answers.push((IpAddr::from(a), ttl));
            }
            _ => {}
        }
        at = after + 10 + len;
    }
    Some((question, answers))
}

/// Lower-cases a DNS-style name and rejects anything that is not one.
pub fn clean_name(raw: &[u8]) -> Option<String> {
    if raw.is_empty() || raw.len() > 253 {
        return None;
    }
    let ok = raw
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':'));
    ok.then(|| {
        String::from_utf8_lossy(raw)
            .trim_end_matches('.')
            .to_ascii_lowercase()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (fuzz `name_parsers`, crash-e69f8394): a DNS-over-TCP payload whose name
    /// labels hold control bytes gave the name "\u{1}\0g.\0", which then reached features
    /// and CSV rows. Such labels are not a name.
    #[test]
    fn names_with_control_bytes_are_not_names() {
        let mut msg = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&[2, 1, 0, 2, b'g', 0, 0, 0, 1, 0, 1]);
        assert_eq!(message_name(&msg), None);
        let mut ok = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        ok.extend_from_slice(&[
            7, b'M', b'y', b' ', b'd', b'e', b'v', b'x', 5, b'l', b'o', b'c', b'a', b'l', 0,
        ]);
        assert_eq!(message_name(&ok).as_deref(), Some("my devx.local"));
    }

    /// A response to `www.example.com` with a CNAME (compressed) and an A record.
    fn response(ttl: u32) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        for label in ["www", "example", "com"] {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        // CNAME: name = pointer to question (offset 12), rdata "cdn" + pointer to "example.com"
        m.extend_from_slice(&[
            0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 6, 3, b'c', b'd', b'n', 0xc0, 16,
        ]);
        // A: name = pointer to the CNAME's rdata (offset of "cdn")
        let cdn = m.len() - 6;
        m.extend_from_slice(&[0xc0, cdn as u8, 0, 1, 0, 1]);
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&[0, 4, 93, 184, 216, 34]);
        m
    }

    #[test]
    fn answers_are_cached_under_the_question_until_their_ttl() {
        let mut cache = DnsCache::default();
        cache.observe(&response(30), 1_000_000_000);
        let addr = IpAddr::from([93, 184, 216, 34]);
        assert_eq!(cache.lookup(&addr, 2_000_000_000), Some("www.example.com"));
        assert_eq!(cache.lookup(&addr, 32_000_000_000), None, "expired");
        assert_eq!(cache.responses, 1);
    }

    #[test]
    fn message_names_of_queries_responses_and_announcements() {
        let mut query = response(30);
        query[2] = 0x01; // a query
        assert_eq!(message_name(&query).as_deref(), Some("www.example.com"));
        assert_eq!(
            message_name(&response(30)).as_deref(),
            Some("www.example.com")
        );
        let mut announce = response(30);
        announce[5] = 0; // no question: the first answer's name is read at offset 12
        assert_eq!(message_name(&announce).as_deref(), Some("www.example.com"));
        let mut empty = response(30);
        empty[5] = 0;
        empty[7] = 0;
        assert_eq!(message_name(&empty), None);
        for cut in 0..query.len() {
            let _ = message_name(&query[..cut]);
        }
    }

    #[test]
    fn truncated_or_looping_messages_are_rejected() {
        let m = response(30);
        for cut in 0..m.len() {
            let _ = parse_answers(&m[..cut]);
        }
        let mut looped = m.clone();
        looped[12] = 0xc0;
        looped[13] = 12; // points at itself
        assert_eq!(parse_answers(&looped), None);
    }
}
