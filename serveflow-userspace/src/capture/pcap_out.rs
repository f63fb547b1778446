//! Writes frames as a classic pcap file (nanosecond timestamps, one link type), so that a
//! capture serveflow makes (the amplified benchmark input) can be handed to other tools:
//! NFStream, nDPI's `ndpiReader`, tcpreplay. A pcap file holds one link type, and libpcap
//! refuses pcapng files whose interfaces differ, so frames of other link types are counted and
//! left out rather than written.

use std::{
    fs::File,
    io::{self, BufWriter, Write as _},
    path::Path,
};

use crate::frame::{CapturedPacket, LinkType};

/// Magic of a little-endian pcap file with nanosecond timestamps.
const MAGIC_NS: u32 = 0xa1b2_3c4d;
/// Largest frame written whole; longer ones are cut, as a capture with this snaplen would.
pub const SNAPLEN: u32 = 65_535;

/// An open pcap file being written.
#[derive(Debug)]
pub struct PcapOut {
    out: BufWriter<File>,
    link: LinkType,
    link_number: u32,
    /// Frames written.
    pub written: u64,
    /// Frames of another link type, left out.
    pub other_link: u64,
}

impl PcapOut {
    /// Creates `path` for frames of `link` (given by its pcap number, e.g. 1 for Ethernet).
    pub fn create(path: &Path, link_number: u32) -> io::Result<PcapOut> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        out.write_all(&header(link_number))?;
        Ok(PcapOut {
            out,
            link: LinkType::from(link_number),
            link_number,
            written: 0,
            other_link: 0,
        })
    }

    /// Appends `packet`, or counts it in `other_link` when its link type is not the file's.
    pub fn write(&mut self, packet: &CapturedPacket) -> io::Result<()> {
        if packet.link != self.link {
            self.other_link += 1;
            return Ok(());
        }
        self.out.write_all(&record_header(packet))?;
        self.out.write_all(kept(&packet.data))?;
        self.written += 1;
        Ok(())
    }

    /// Flushes and closes the file; the link type's pcap number, for the caller's report.
    pub fn finish(mut self) -> io::Result<u32> {
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        Ok(self.link_number)
    }
}

fn header(link_number: u32) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&MAGIC_NS.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    // Bytes 8..16: time zone and accuracy, both 0.
    h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    h[20..24].copy_from_slice(&link_number.to_le_bytes());
    h
}

fn kept(data: &[u8]) -> &[u8] {
    &data[..data.len().min(SNAPLEN as usize)]
}

fn record_header(packet: &CapturedPacket) -> [u8; 16] {
    let mut r = [0u8; 16];
    let secs = u32::try_from(packet.ts_ns / 1_000_000_000).unwrap_or(u32::MAX);
    let nanos = (packet.ts_ns % 1_000_000_000) as u32;
    r[0..4].copy_from_slice(&secs.to_le_bytes());
    r[4..8].copy_from_slice(&nanos.to_le_bytes());
    r[8..12].copy_from_slice(&(kept(&packet.data).len() as u32).to_le_bytes());
    // The original length: what a reader counts as bytes on the wire.
    r[12..16].copy_from_slice(&(packet.data.len() as u32).to_le_bytes());
    r
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "tests fail loudly on purpose"
    )]

    use super::*;
    use crate::capture::file::CaptureFile;

    fn packet(ts_ns: u64, link: LinkType, len: usize) -> CapturedPacket {
        CapturedPacket {
            ts_ns,
            link,
            data: (0..len).map(|i| i as u8).collect::<Vec<u8>>().into(),
            file: 0,
        }
    }

    #[test]
    fn what_is_written_reads_back_the_same_and_other_links_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.pcap");
        let mut out = PcapOut::create(&path, 1).unwrap();
        let frames = [
            packet(1_700_000_000_123_456_789, LinkType::Ethernet, 60),
            packet(1_700_000_001_000_000_001, LinkType::Raw, 40),
            packet(1_700_000_002_999_999_999, LinkType::Ethernet, 1514),
        ];
        for f in &frames {
            out.write(f).unwrap();
        }
        assert_eq!((out.written, out.other_link), (2, 1));
        out.finish().unwrap();
        let mut reader = CaptureFile::open(&path).unwrap();
        let back: Vec<CapturedPacket> = std::iter::from_fn(|| reader.next_packet()).collect();
        assert_eq!(back.len(), 2);
        for (got, want) in back.iter().zip([&frames[0], &frames[2]]) {
            assert_eq!(got.ts_ns, want.ts_ns, "nanoseconds survive");
            assert_eq!(got.link, LinkType::Ethernet);
            assert_eq!(got.data, want.data);
        }
    }
}
