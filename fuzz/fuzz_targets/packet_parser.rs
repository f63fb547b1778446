//! The packet parser on every link type: never panics, and what it returns lies inside the
//! frame. The first byte picks the link type; the rest is the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serveflow::{frame::LinkType, parse};

const LINKS: [u32; 14] = [
    0, 1, 9, 12, 101, 104, 105, 108, 113, 127, 192, 228, 229, 276,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, frame)) = data.split_first() else {
        return;
    };
    let link = LinkType::from(LINKS[usize::from(pick) % LINKS.len()]);
    if let Ok(p) = parse::parse_link(link, frame) {
        assert!(p.l3 < p.l4 && p.l4 < frame.len());
        assert!(p.payload_offset() <= frame.len());
        assert!(p.ip_end() <= frame.len());
        let _ = (
            p.flow_key(),
            p.tcp_flags(),
            p.tcp_window(),
            p.ttl(),
            p.payload_len(),
        );
    }
});
