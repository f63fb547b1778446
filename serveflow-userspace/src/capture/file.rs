//! Reading capture files: classic pcap (µs and ns) and pcapng (any `if_tsresol`, several
//! interfaces with different link types), one packet at a time in file order.
//!
//! A file that ends mid-record (a truncated capture) or holds a corrupt block ends with a
//! warning, keeping every packet read before; nothing here panics on bad input.

use std::{
    fs::File,
    io::{BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use pcap_file::{
    pcap::PcapReader,
    pcapng::{blocks::interface_description::InterfaceDescriptionOption, Block, PcapNgReader},
    TsResolution,
};

use crate::capture::LinkType;

/// Why a capture file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// Not a pcap or pcapng file.
    #[error("{path}: not a pcap or pcapng file (magic {magic:08x})")]
    Format {
        /// File.
        path: PathBuf,
        /// First four bytes.
        magic: u32,
    },
    /// The file header is corrupt.
    #[error("{path}: bad capture header: {reason}")]
    Header {
        /// File.
        path: PathBuf,
        /// Parser's message.
        reason: String,
    },
}

/// One captured frame.
#[derive(Clone, Debug)]
pub struct CapturedPacket {
    /// Capture timestamp, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Link type of `data`.
    pub link: LinkType,
    /// Captured bytes (may be shorter than on the wire).
    pub data: Vec<u8>,
    /// Index of the input file it came from (its position on the command line; 0 for live
    /// and generated traffic).
    pub file: u32,
}

enum Format {
    Pcap {
        reader: PcapReader<BufReader<File>>,
        link: LinkType,
    },
    PcapNg {
        reader: Box<PcapNgReader<BufReader<File>>>,
        /// (link type, nanoseconds per timestamp unit as numerator/denominator) per interface.
        interfaces: Vec<(LinkType, TsUnit)>,
    },
}

/// A pcapng timestamp unit: `value * num / den` nanoseconds.
#[derive(Clone, Copy, Debug)]
struct TsUnit {
    num: u128,
    den: u128,
}

impl TsUnit {
    /// From the `if_tsresol` option byte: 10^-n seconds, or 2^-n with the top bit set.
    fn from_tsresol(byte: u8) -> TsUnit {
        let exp = u32::from(byte & 0x7f);
        let per_second: u128 = if byte & 0x80 == 0 {
            10u128.checked_pow(exp.min(30)).unwrap_or(1)
        } else {
            1u128.checked_shl(exp.min(100)).unwrap_or(1)
        };
        TsUnit {
            num: 1_000_000_000,
            den: per_second,
        }
    }

    fn to_ns(self, raw: u64) -> u64 {
        (u128::from(raw) * self.num / self.den.max(1)).min(u128::from(u64::MAX)) as u64
    }
}

/// Why a file's packet stream ended early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EarlyEnd {
    /// Packets read before it.
    pub after_packets: u64,
    /// The reader's message.
    pub reason: String,
}

/// An open capture file.
pub struct CaptureFile {
    path: PathBuf,
    format: Format,
    packets: u64,
    early_end: Option<EarlyEnd>,
    /// Blocks or records skipped (pcapng blocks of unknown interfaces).
    skipped_blocks: u64,
}

impl CaptureFile {
    /// Opens a pcap or pcapng file, telling them apart by their magic number.
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let io = |source| CaptureError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        let mut magic = [0u8; 4];
        file.read_exact(&mut magic).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        let magic = u32::from_le_bytes(magic);
        let header = |e: pcap_file::PcapError| CaptureError::Header {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let reader = BufReader::with_capacity(1 << 16, file);
        let format = match magic {
            0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1 => {
                let reader = PcapReader::new(reader).map_err(header)?;
                let link = LinkType::from(u32::from(reader.header().datalink));
                Format::Pcap { reader, link }
            }
            0x0a0d_0d0a => Format::PcapNg {
                reader: Box::new(PcapNgReader::new(reader).map_err(header)?),
                interfaces: Vec::new(),
            },
            _ => {
                return Err(CaptureError::Format {
                    path: path.to_owned(),
                    magic,
                })
            }
        };
        Ok(CaptureFile {
            path: path.to_owned(),
            format,
            packets: 0,
            early_end: None,
            skipped_blocks: 0,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Packets returned so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Set when the file ended before its data did (truncated or corrupt).
    pub fn early_end(&self) -> Option<&EarlyEnd> {
        self.early_end.as_ref()
    }

    /// pcapng blocks skipped (packets of undeclared interfaces).
    pub fn skipped_blocks(&self) -> u64 {
        self.skipped_blocks
    }

    /// The next packet in file order, or None at the end (or at the first unreadable record,
    /// which is recorded in [`Self::early_end`] and logged).
    pub fn next_packet(&mut self) -> Option<CapturedPacket> {
        if self.early_end.is_some() {
            return None;
        }
        let next = match &mut self.format {
            // Raw records: pcap-file's checked packets reject orig_len > snaplen, which is
            // legal (snaplen bounds what was captured, not the wire length).
            Format::Pcap { reader, link } => {
                let nanos = reader.header().ts_resolution == TsResolution::NanoSecond;
                match reader.next_raw_packet()? {
                    Ok(p) => {
                        let frac = u64::from(p.ts_frac);
                        let frac_ns = if nanos { frac } else { frac * 1000 };
                        Ok(CapturedPacket {
                            ts_ns: u64::from(p.ts_sec) * 1_000_000_000 + frac_ns,
                            link: *link,
                            data: p.data.into_owned(),
                            file: 0,
                        })
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Format::PcapNg { reader, interfaces } => loop {
                match reader.next_block()? {
                    Ok(Block::SectionHeader(_)) => interfaces.clear(),
                    Ok(Block::InterfaceDescription(idb)) => {
                        let tsresol = idb
                            .options
                            .iter()
                            .find_map(|o| match o {
                                InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                                _ => None,
                            })
                            .unwrap_or(6);
                        interfaces.push((
                            LinkType::from(u32::from(idb.linktype)),
                            TsUnit::from_tsresol(tsresol),
                        ));
                    }
                    Ok(Block::EnhancedPacket(epb)) => {
                        let Some((link, unit)) = interfaces.get(epb.interface_id as usize) else {
                            self.skipped_blocks += 1;
                            continue;
                        };
                        // pcap-file stores the raw 64-bit count in a Duration's nanoseconds.
                        let raw = u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX);
                        break Ok(CapturedPacket {
                            ts_ns: unit.to_ns(raw),
                            link: *link,
                            data: epb.data.into_owned(),
                            file: 0,
                        });
                    }
                    Ok(Block::SimplePacket(spb)) => {
                        // No timestamp: it inherits 0 and sorts first; link of interface 0.
                        let Some((link, _)) = interfaces.first() else {
                            self.skipped_blocks += 1;
                            continue;
                        };
                        break Ok(CapturedPacket {
                            ts_ns: 0,
                            link: *link,
                            data: spb.data.into_owned(),
                            file: 0,
                        });
                    }
                    Ok(Block::Packet(pb)) => {
                        let Some((link, unit)) = interfaces.get(usize::from(pb.interface_id))
                        else {
                            self.skipped_blocks += 1;
                            continue;
                        };
                        break Ok(CapturedPacket {
                            ts_ns: unit.to_ns(pb.timestamp),
                            link: *link,
                            data: pb.data.into_owned(),
                            file: 0,
                        });
                    }
                    Ok(_) => continue,
                    Err(e) => break Err(e.to_string()),
                }
            },
        };
        match next {
            Ok(packet) => {
                self.packets += 1;
                Some(packet)
            }
            Err(reason) => {
                log::warn!(
                    "{}: capture ends early after {} packets: {reason}",
                    self.path.display(),
                    self.packets
                );
                self.early_end = Some(EarlyEnd {
                    after_packets: self.packets,
                    reason,
                });
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use std::{borrow::Cow, io::Write as _, time::Duration};

    use pcap_file::{
        pcap::{PcapHeader, PcapPacket, PcapWriter},
        pcapng::{
            blocks::{
                enhanced_packet::EnhancedPacketBlock,
                interface_description::InterfaceDescriptionBlock,
            },
            PcapNgWriter,
        },
        DataLink,
    };

    use super::*;

    fn read(path: &Path) -> (Vec<CapturedPacket>, Option<EarlyEnd>) {
        let mut f = CaptureFile::open(path).unwrap();
        let mut out = Vec::new();
        while let Some(p) = f.next_packet() {
            out.push(p);
        }
        (out, f.early_end().cloned())
    }

    #[test]
    fn pcap_nanosecond_timestamps_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns.pcap");
        let header = PcapHeader {
            ts_resolution: TsResolution::NanoSecond,
            datalink: DataLink::RAW,
            ..Default::default()
        };
        let mut w = PcapWriter::with_header(std::fs::File::create(&path).unwrap(), header).unwrap();
        for i in 0..3u64 {
            let ts = Duration::new(1_700_000_000, 123_456_789 + i as u32);
            w.write_packet(&PcapPacket::new(ts, 4, &[0x45, 0, 0, i as u8]))
                .unwrap();
        }
        drop(w);
        let (packets, early) = read(&path);
        assert_eq!(packets.len(), 3);
        assert_eq!(packets[2].ts_ns, 1_700_000_000_123_456_791);
        assert_eq!(packets[0].link, LinkType::Raw);
        assert!(early.is_none());

        // Cut the last record in half: two packets survive, with a warning.
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.pcap");
        std::fs::File::create(&cut)
            .unwrap()
            .write_all(&bytes[..bytes.len() - 3])
            .unwrap();
        let (packets, early) = read(&cut);
        assert_eq!(packets.len(), 2);
        assert_eq!(early.map(|e| e.after_packets), Some(2));
    }

    #[test]
    fn pcapng_interfaces_link_types_and_tsresol() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("two.pcapng");
        let mut w = PcapNgWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
        // Interface 0: Ethernet, default µs. Interface 1: Linux SLL, ns (tsresol 9).
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![],
        })
        .unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::LINUX_SLL,
            snaplen: 0,
            options: vec![InterfaceDescriptionOption::IfTsResol(9)],
        })
        .unwrap();
        for (iface, raw) in [
            (0u32, 1_700_000_000_000_001u64),
            (1, 1_700_000_000_000_000_002),
        ] {
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: iface,
                timestamp: Duration::from_nanos(raw),
                original_len: 4,
                data: Cow::Borrowed(&[1, 2, 3, 4]),
                options: vec![],
            })
            .unwrap();
        }
        drop(w);
        let mut f = CaptureFile::open(&path).unwrap();
        let a = f.next_packet().unwrap();
        let b = f.next_packet().unwrap();
        assert!(f.next_packet().is_none());
        assert_eq!(
            (a.link, a.ts_ns),
            (LinkType::Ethernet, 1_700_000_000_000_001_000)
        );
        assert_eq!(
            (b.link, b.ts_ns),
            (LinkType::LinuxSll, 1_700_000_000_000_000_002)
        );
    }

    #[test]
    fn not_a_capture_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.txt");
        std::fs::write(&path, b"hello world").unwrap();
        let err = CaptureFile::open(&path).err().unwrap().to_string();
        assert!(err.contains("not a pcap or pcapng file"), "{err}");
        let err = CaptureFile::open(&dir.path().join("missing.pcap"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("missing.pcap"), "{err}");
    }
}
