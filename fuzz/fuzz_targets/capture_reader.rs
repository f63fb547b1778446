//! The pcap/pcapng reader on arbitrary bytes: never panics or hangs, every packet it returns
//! is within the size limit, and offsets it reports lie inside the input.
#![no_main]

use std::{io::Cursor, path::Path};

use libfuzzer_sys::fuzz_target;
use serveflow::capture::file::{CaptureReader, MAX_PACKET_BYTES};

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = CaptureReader::new(Cursor::new(data), Path::new("fuzz")) else {
        return;
    };
    while let Some(p) = reader.next_packet() {
        assert!(p.data.len() <= MAX_PACKET_BYTES as usize);
    }
    if let Some(end) = reader.early_end() {
        assert!(end.offset <= data.len() as u64);
    }
    for s in reader.skips() {
        assert!(s.offset < data.len() as u64);
    }
});
