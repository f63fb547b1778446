//! Server-name features (`name:B`): the name a flow carries (TLS/QUIC SNI, HTTP Host, the
//! DNS/mDNS/LLMNR name asked about, a DHCP host name) as hashed character 3-grams and hashed
//! tokens, so a tree can tell `*.googlevideo.com` from `*.whatsapp.net` from the first
//! packet that names it, and names never seen in training still share pieces with ones that
//! were.
//!
//! Layout: `nm_present`, `nm_len`, `nm_labels`, `nm_digits` (share of digits), then `B`
//! 3-gram buckets and `B` token buckets (counts). A flow without a name is -1 everywhere, so
//! "no name" is apart from "a name without this piece".

/// Values before the buckets.
const FIXED: [&str; 4] = ["nm_present", "nm_len", "nm_labels", "nm_digits"];

/// Most buckets a spec may ask for.
pub const MAX_BUCKETS: usize = 1024;

/// Values per flow for `buckets` buckets.
pub fn width(buckets: usize) -> usize {
    FIXED.len() + 2 * buckets
}

/// Column names, in value order.
pub fn names(buckets: usize, out: &mut Vec<String>) {
    out.extend(FIXED.iter().map(|s| (*s).to_owned()));
    out.extend((0..buckets).map(|b| format!("nm_gram_{b}")));
    out.extend((0..buckets).map(|b| format!("nm_token_{b}")));
}

/// FNV-1a over `bytes`, started from `seed`: fixed across machines and releases, because the
/// buckets a model was trained on must be the buckets it is served.
fn fnv1a(seed: u32, bytes: &[u8]) -> u32 {
    let mut h = 0x811c_9dc5u32 ^ seed;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

const GRAM_SEED: u32 = 0;
const TOKEN_SEED: u32 = 0x70c3_e115;

/// Appends the name's values (see the module doc) for `buckets` buckets.
pub fn values(name: Option<&str>, buckets: usize, out: &mut Vec<f32>) {
    let start = out.len();
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        out.resize(start + width(buckets), -1.0);
        return;
    };
    let bytes = name.as_bytes();
    let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();
    out.extend_from_slice(&[
        1.0,
        bytes.len() as f32,
        name.split('.').filter(|l| !l.is_empty()).count() as f32,
        digits as f32 / bytes.len() as f32,
    ]);
    let grams = out.len();
    out.resize(grams + 2 * buckets, 0.0);
    if buckets == 0 {
        return;
    }
    // 3-grams of the name between dots, so the first and last characters form grams too.
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.push(b'.');
    framed.extend_from_slice(bytes);
    framed.push(b'.');
    for g in framed.windows(3) {
        out[grams + fnv1a(GRAM_SEED, g) as usize % buckets] += 1.0;
    }
    // Tokens: every label and every piece between hyphens, plus the last two labels together
    // (the registrable domain, roughly: "google.com").
    let tokens = grams + buckets;
    let mut token = |t: &[u8]| {
        if !t.is_empty() {
            out[tokens + fnv1a(TOKEN_SEED, t) as usize % buckets] += 1.0;
        }
    };
    for label in name.split('.') {
        token(label.as_bytes());
        if label.contains('-') {
            for piece in label.split('-') {
                token(piece.as_bytes());
            }
        }
    }
    let mut labels = name.rsplitn(3, '.');
    if let (Some(last), Some(second)) = (labels.next(), labels.next()) {
        let cut = name.len() - last.len() - second.len() - 1;
        token(&bytes[cut..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: Option<&str>, buckets: usize) -> Vec<f32> {
        let mut v = Vec::new();
        values(name, buckets, &mut v);
        v
    }

    #[test]
    fn absent_names_are_minus_one_and_widths_match_the_names() {
        let mut n = Vec::new();
        names(16, &mut n);
        assert_eq!(n.len(), width(16));
        assert_eq!(row(None, 16), vec![-1.0; width(16)]);
        assert_eq!(row(Some(""), 16), vec![-1.0; width(16)]);
    }

    #[test]
    fn grams_and_tokens_are_counted_in_fixed_buckets() {
        let v = row(Some("www.google.com"), 64);
        assert_eq!(&v[..4], &[1.0, 14.0, 3.0, 0.0]);
        let grams: f32 = v[4..68].iter().sum();
        assert_eq!(grams, 14.0, "one 3-gram per character of .www.google.com.");
        let tokens: f32 = v[68..].iter().sum();
        assert_eq!(tokens, 4.0, "www, google, com, google.com");
        // The same name always lands in the same buckets; a sibling shares most of them.
        assert_eq!(v, row(Some("www.google.com"), 64));
        let sibling = row(Some("mail.google.com"), 64);
        let shared: f32 = v[68..]
            .iter()
            .zip(&sibling[68..])
            .map(|(a, b)| a.min(*b))
            .sum();
        assert!(shared >= 3.0, "google, com, google.com");
        let digits = row(Some("10.0.0.1"), 8);
        assert!((digits[3] - 5.0 / 8.0).abs() < 1e-6);
        let hyphens = row(Some("a-b.c"), 8);
        assert_eq!(
            hyphens[12..].iter().sum::<f32>(),
            5.0,
            "a-b, a, b, c, a-b.c"
        );
    }
}
