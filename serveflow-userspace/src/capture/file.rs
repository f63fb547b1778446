//! Reading capture files: classic pcap (µs and ns, either byte order) and pcapng (either byte
//! order, several sections and interfaces with their own link types, `if_tsresol` and
//! `if_tsoffset`), one packet at a time in file order.
//!
//! The reader is our own, not a crate's, because bad input must end well: every record is
//! bounds-checked before anything is allocated for it (a 4 GB `incl_len` costs nothing), and
//! a pcapng block whose framing is broken is skipped by scanning for the next well-framed
//! block, with its offset and reason kept for the summary. Classic pcap has no framing to
//! resynchronise on, so an impossible record ends that file, again with offset and reason.
//! A regular file is mapped and its frames are read in place ([`crate::capture::source`]:
//! only the bytes the parser looks at are read at all); anything else, or a file that cannot
//! be mapped, is read through a 64 KiB buffer, without the per-file 8 MiB zeroed buffer the
//! crate it replaced allocated.

use std::{
    fs::File,
    io::{ErrorKind, Read, SeekFrom},
    path::{Path, PathBuf},
};

use crate::capture::source::{FileSource, Source};
use crate::frame::{pool, CapturedPacket, FrameData, LinkType};

/// The largest packet a record may carry: libpcap's `MAXIMUM_SNAPLEN`. Anything larger is a
/// corrupt length, not a packet.
pub const MAX_PACKET_BYTES: u32 = 262_144;
/// The largest pcapng block accepted (a packet plus generous options, or a big name block).
pub const MAX_BLOCK_BYTES: u32 = 16 << 20;
/// How far past a broken pcapng block the reader looks for the next good one.
const RESYNC_WINDOW: u64 = 16 << 20;
/// Skips whose offset and reason are kept (all are counted).
const SKIPS_KEPT: usize = 8;

const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BOM: u32 = 0x1a2b_3c4d;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_PB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;
/// Block types the resynchronising scan accepts as a fresh start: the standard ones
/// (SHB, IDB, PB, SPB, NRB, ISB, EPB, DSB).
const KNOWN_BLOCKS: [u32; 9] = [PCAPNG_SHB, 1, 2, 3, 4, 5, 6, 7, 10];

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
    /// The file header is corrupt or cut short.
    #[error("{path}: bad capture header: {reason}")]
    Header {
        /// File.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Why a file's packet stream ended early.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EarlyEnd {
    /// Packets read before it.
    pub after_packets: u64,
    /// Byte offset of the record or block that could not be read.
    pub offset: u64,
    /// What was wrong with it.
    pub reason: String,
}

impl std::fmt::Display for EarlyEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ended at byte {} after {} packets: {}",
            self.offset, self.after_packets, self.reason
        )
    }
}

/// A record or block passed over, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Skip {
    /// Byte offset where it starts.
    pub offset: u64,
    /// Why it was skipped.
    pub reason: String,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "byte {}: {}", self.offset, self.reason)
    }
}

/// A pcapng timestamp unit: `value * num / den` nanoseconds.
#[derive(Clone, Copy, Debug)]
struct TsUnit {
    num: u128,
    den: u128,
}

impl TsUnit {
    const MICROS: TsUnit = TsUnit { num: 1000, den: 1 };

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
            den: per_second.max(1),
        }
    }

    fn to_ns(self, raw: u64) -> u64 {
        (u128::from(raw) * self.num / self.den).min(u128::from(u64::MAX)) as u64
    }
}

/// A pcapng interface: its link type, timestamp unit and offset (seconds).
#[derive(Clone, Copy, Debug)]
struct Interface {
    link: LinkType,
    unit: TsUnit,
    offset_ns: i128,
}

impl Interface {
    fn ts_ns(&self, raw: u64) -> u64 {
        (i128::from(self.unit.to_ns(raw)) + self.offset_ns).clamp(0, i128::from(u64::MAX)) as u64
    }
}

enum Format {
    Pcap {
        big_endian: bool,
        nanos: bool,
        link: LinkType,
    },
    PcapNg {
        big_endian: bool,
        interfaces: Vec<Interface>,
    },
}

/// What reading a fixed-size piece found.
enum Fill {
    /// All of it.
    Full,
    /// Nothing: the file ends here, cleanly.
    Eof,
    /// Part of it, then the end: the file was cut.
    Cut(usize),
}

/// A capture being read from any seekable byte source.
pub struct CaptureReader<R> {
    source: R,
    path: PathBuf,
    format: Format,
    /// Offset of the next unread byte.
    offset: u64,
    packets: u64,
    early_end: Option<EarlyEnd>,
    skipped: u64,
    skips: Vec<Skip>,
    /// Reused for block bodies.
    scratch: Vec<u8>,
}

/// An open capture file.
pub type CaptureFile = CaptureReader<FileSource>;

impl CaptureFile {
    /// Opens a pcap or pcapng file, telling them apart by their magic number.
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let io = |source| CaptureError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let source = FileSource::of(file).map_err(io)?;
        CaptureReader::new(source, path)
    }
}

fn u16_at(b: &[u8], at: usize, big: bool) -> u16 {
    let v = [b[at], b[at + 1]];
    if big {
        u16::from_be_bytes(v)
    } else {
        u16::from_le_bytes(v)
    }
}

fn u32_at(b: &[u8], at: usize, big: bool) -> u32 {
    let v = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    if big {
        u32::from_be_bytes(v)
    } else {
        u32::from_le_bytes(v)
    }
}

fn u64_at(b: &[u8], at: usize, big: bool) -> u64 {
    let hi = u64::from(u32_at(b, at, big));
    let lo = u64::from(u32_at(b, at + 4, big));
    if big {
        hi << 32 | lo
    } else {
        lo << 32 | hi
    }
}

/// The pcapng byte order from a section header's byte-order magic.
fn pcapng_order(bom: [u8; 4]) -> Option<bool> {
    match u32::from_le_bytes(bom) {
        PCAPNG_BOM => Some(false),
        x if x.swap_bytes() == PCAPNG_BOM => Some(true),
        _ => None,
    }
}

impl<R: Source> CaptureReader<R> {
    /// Reads the file header from `source`; `path` names it in messages.
    pub fn new(mut source: R, path: &Path) -> Result<Self, CaptureError> {
        let header_err = |reason: String| CaptureError::Header {
            path: path.to_owned(),
            reason,
        };
        let mut head = [0u8; 24];
        let got = read_up_to(&mut source, &mut head).map_err(|source| CaptureError::Io {
            path: path.to_owned(),
            source,
        })?;
        if got < 4 {
            return Err(header_err(format!(
                "{got} bytes: too short to be a capture"
            )));
        }
        let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let (format, offset) = match magic {
            0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1 => {
                if got < 24 {
                    return Err(header_err(format!(
                        "pcap header is 24 bytes, the file has {got}"
                    )));
                }
                let big_endian = matches!(magic, 0xd4c3_b2a1 | 0x4d3c_b2a1);
                let nanos = matches!(magic, 0xa1b2_3c4d | 0x4d3c_b2a1);
                // The upper bits of the link-type word carry FCS flags (pcap spec §8.2).
                let link = LinkType::from(u32_at(&head, 20, big_endian) & 0x0fff_ffff);
                (
                    Format::Pcap {
                        big_endian,
                        nanos,
                        link,
                    },
                    24,
                )
            }
            PCAPNG_SHB => {
                if got < 12 {
                    return Err(header_err(format!(
                        "pcapng section header needs 12 bytes, the file has {got}"
                    )));
                }
                let big_endian = pcapng_order([head[8], head[9], head[10], head[11]])
                    .ok_or_else(|| header_err("pcapng byte-order magic is wrong".into()))?;
                (
                    Format::PcapNg {
                        big_endian,
                        interfaces: Vec::new(),
                    },
                    0,
                )
            }
            _ => {
                return Err(CaptureError::Format {
                    path: path.to_owned(),
                    magic,
                })
            }
        };
        source
            .seek(SeekFrom::Start(offset))
            .map_err(|source| CaptureError::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok(CaptureReader {
            source,
            path: path.to_owned(),
            format,
            offset,
            packets: 0,
            early_end: None,
            skipped: 0,
            skips: Vec::new(),
            scratch: Vec::new(),
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

    /// Records or blocks skipped (broken pcapng blocks, packets of undeclared interfaces).
    pub fn skipped_blocks(&self) -> u64 {
        self.skipped
    }

    /// The first few skips, with offset and reason.
    pub fn skips(&self) -> &[Skip] {
        &self.skips
    }

    /// The next packet in file order, or None at the end (or where the file cannot be read
    /// on, which is recorded in [`Self::early_end`] and logged).
    pub fn next_packet(&mut self) -> Option<CapturedPacket> {
        if self.early_end.is_some() {
            return None;
        }
        let start = self.offset;
        let next = match self.format {
            Format::Pcap { .. } => self.next_pcap(),
            Format::PcapNg { .. } => self.next_pcapng(),
        };
        let next = match next {
            Ok(Some(_)) if self.source.was_cut() => Err((
                self.offset,
                "the file shrank while it was read (another program cut it)".to_string(),
            )),
            other => other,
        };
        match next {
            Ok(Some(packet)) => {
                self.packets += 1;
                Some(packet)
            }
            Ok(None) => None,
            Err((offset, reason)) => {
                let end = EarlyEnd {
                    after_packets: self.packets,
                    offset: offset.max(start),
                    reason,
                };
                log::warn!("{}: capture {end}", self.path.display());
                self.early_end = Some(end);
                None
            }
        }
    }

    fn skip(&mut self, offset: u64, reason: String) {
        self.skipped += 1;
        if self.skips.len() < SKIPS_KEPT {
            log::warn!(
                "{}: skipped block at byte {offset}: {reason}",
                self.path.display()
            );
            self.skips.push(Skip { offset, reason });
        }
    }

    /// Reads exactly `buf.len()` bytes at the current offset.
    fn fill(&mut self, buf: &mut [u8]) -> Result<Fill, (u64, String)> {
        let got = read_up_to(&mut self.source, buf)
            .map_err(|e| (self.offset, format!("read error: {e}")))?;
        self.offset += got as u64;
        Ok(match got {
            0 if !buf.is_empty() => Fill::Eof,
            n if n == buf.len() => Fill::Full,
            n => Fill::Cut(n),
        })
    }

    fn next_pcap(&mut self) -> Result<Option<CapturedPacket>, (u64, String)> {
        let Format::Pcap {
            big_endian,
            nanos,
            link,
        } = self.format
        else {
            return Ok(None);
        };
        let start = self.offset;
        let mut head = [0u8; 16];
        let filled = match self.source.lend_array::<16>() {
            Some(Ok(h)) => {
                head = h;
                self.offset += 16;
                Fill::Full
            }
            Some(Err(0)) => Fill::Eof,
            Some(Err(n)) => {
                // Move to the end, as a read of the rest would have.
                self.offset += n as u64;
                Fill::Cut(n)
            }
            None => self.fill(&mut head)?,
        };
        match filled {
            Fill::Eof => return Ok(None),
            Fill::Cut(n) => {
                return Err((
                    start,
                    format!("file ends inside a record header ({n} of 16 bytes)"),
                ))
            }
            Fill::Full => {}
        }
        let sec = u64::from(u32_at(&head, 0, big_endian));
        let frac = u64::from(u32_at(&head, 4, big_endian));
        let incl = u32_at(&head, 8, big_endian);
        if incl > MAX_PACKET_BYTES {
            // No framing to find the next record by: the rest of the file is unreadable.
            return Err((
                start,
                format!(
                    "record length {incl} exceeds the {MAX_PACKET_BYTES}-byte limit of a \
                     packet (corrupt record)"
                ),
            ));
        }
        let cut = |n| {
            Err((
                start,
                format!("file ends inside a record ({n} of {incl} bytes)"),
            ))
        };
        let data = match self.source.lend(incl as usize) {
            Some(Ok(frame)) => {
                self.offset += u64::from(incl);
                frame
            }
            Some(Err(n)) => return cut(n),
            None => {
                let mut data = pool::take(incl as usize);
                data.resize(incl as usize, 0);
                if let Fill::Cut(n) = self.fill(&mut data)? {
                    return cut(n);
                }
                FrameData::Owned(data)
            }
        };
        let frac_ns = if nanos { frac } else { frac * 1000 };
        Ok(Some(CapturedPacket {
            ts_ns: sec * 1_000_000_000 + frac_ns,
            link,
            data,
            file: 0,
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<CapturedPacket>, (u64, String)> {
        loop {
            let start = self.offset;
            let mut head = [0u8; 12];
            match self.fill(&mut head[..8])? {
                Fill::Eof => return Ok(None),
                Fill::Cut(n) => {
                    return Err((
                        start,
                        format!("file ends inside a block header ({n} of 8 bytes)"),
                    ))
                }
                Fill::Full => {}
            }
            let Format::PcapNg { big_endian, .. } = self.format else {
                return Ok(None);
            };
            let raw_type = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            // A section header sets the byte order of everything up to the next one.
            let big = if raw_type == PCAPNG_SHB {
                match self.fill(&mut head[8..12])? {
                    Fill::Full => {}
                    _ => return Err((start, "file ends inside a section header".to_string())),
                }
                match pcapng_order([head[8], head[9], head[10], head[11]]) {
                    Some(big) => big,
                    None => {
                        self.resync(start, "section header with a wrong byte-order magic")?;
                        continue;
                    }
                }
            } else {
                big_endian
            };
            let kind = u32_at(&head, 0, big);
            let len = u32_at(&head, 4, big);
            if len < 12 || !len.is_multiple_of(4) || len > MAX_BLOCK_BYTES {
                self.resync(
                    start,
                    &format!("block length {len} is impossible (12..={MAX_BLOCK_BYTES}, a multiple of 4)"),
                )?;
                continue;
            }
            let read = self.offset - start;
            // A section header's fixed fields alone take 16 bytes after the type and length.
            let least = if raw_type == PCAPNG_SHB { 28 } else { 12 };
            if len < least {
                self.resync(
                    start,
                    &format!("block length {len} is too short for its type"),
                )?;
                continue;
            }
            let body_len = len as usize - read as usize;
            let cut = || (start, format!("file ends inside a block of {len} bytes"));
            let body = match self.source.lend(body_len) {
                Some(Ok(body)) => {
                    self.offset += body_len as u64;
                    body
                }
                Some(Err(_)) => return Err(cut()),
                None => {
                    let mut body = std::mem::take(&mut self.scratch);
                    body.resize(body_len, 0);
                    let filled = self.fill(&mut body);
                    let outcome = match filled {
                        Err(e) => Err(e),
                        Ok(Fill::Full) => Ok(()),
                        Ok(_) => Err(cut()),
                    };
                    if let Err(e) = outcome {
                        self.scratch = body;
                        return Err(e);
                    }
                    FrameData::Owned(body)
                }
            };
            let trailer = u32_at(&body, body_len - 4, big);
            if trailer != len {
                self.keep_scratch(body);
                self.resync(
                    start,
                    &format!("block length {len} and trailing length {trailer} differ"),
                )?;
                continue;
            }
            // Now the block's fields: the section header's 4-byte magic is already read.
            let result = self.block(kind, big, &body, body_len - 4);
            self.keep_scratch(body);
            match result {
                Ok(Some(p)) => return Ok(Some(p)),
                Ok(None) => continue,
                Err(reason) => self.skip(start, reason),
            }
        }
    }

    /// A block body read into the scratch buffer goes back to it.
    fn keep_scratch(&mut self, body: FrameData) {
        if let FrameData::Owned(v) = body {
            self.scratch = v;
        }
    }

    /// Handles one well-framed block (its first `fields` bytes of `body`): a packet, an
    /// interface, a new section, or nothing.
    fn block(
        &mut self,
        kind: u32,
        big: bool,
        body: &FrameData,
        fields: usize,
    ) -> Result<Option<CapturedPacket>, String> {
        let b = body.get(..fields).unwrap_or_default();
        let Format::PcapNg {
            big_endian,
            interfaces,
        } = &mut self.format
        else {
            return Ok(None);
        };
        match kind {
            PCAPNG_SHB => {
                *big_endian = big;
                interfaces.clear();
                Ok(None)
            }
            PCAPNG_IDB => {
                if b.len() < 8 {
                    return Err(format!("interface block of {} bytes is too short", b.len()));
                }
                let link = LinkType::from(u32::from(u16_at(b, 0, big)));
                let mut iface = Interface {
                    link,
                    unit: TsUnit::MICROS,
                    offset_ns: 0,
                };
                for (code, value) in options(&b[8..], big) {
                    match (code, value.len()) {
                        (9, 1) => iface.unit = TsUnit::from_tsresol(value[0]),
                        (14, 8) => {
                            iface.offset_ns =
                                i128::from(u64_at(value, 0, big) as i64) * 1_000_000_000;
                        }
                        _ => {}
                    }
                }
                interfaces.push(iface);
                Ok(None)
            }
            PCAPNG_EPB | PCAPNG_PB => {
                // EPB: interface (4); obsolete PB: interface (2), drops (2). Then both:
                // timestamp high, low, captured length, original length, data.
                if b.len() < 20 {
                    return Err(format!("packet block of {} bytes is too short", b.len()));
                }
                let iface_id = if kind == PCAPNG_EPB {
                    u32_at(b, 0, big) as usize
                } else {
                    usize::from(u16_at(b, 0, big))
                };
                let ts = u64::from(u32_at(b, 4, big)) << 32 | u64::from(u32_at(b, 8, big));
                let cap = u32_at(b, 12, big);
                let data_at = 20;
                if cap > MAX_PACKET_BYTES || cap as usize > b.len() - data_at {
                    return Err(format!(
                        "captured length {cap} does not fit its block ({} bytes of data)",
                        b.len() - data_at
                    ));
                }
                let Some(iface) = interfaces.get(iface_id) else {
                    return Err(format!(
                        "packet of interface {iface_id}, but the section declares {}",
                        interfaces.len()
                    ));
                };
                Ok(Some(CapturedPacket {
                    ts_ns: iface.ts_ns(ts),
                    link: iface.link,
                    data: body.part(data_at, cap as usize),
                    file: 0,
                }))
            }
            PCAPNG_SPB => {
                if b.len() < 4 {
                    return Err("simple packet block too short".into());
                }
                let Some(iface) = interfaces.first() else {
                    return Err("simple packet before any interface".into());
                };
                // No timestamp: it gets 0 and sorts first. Captured length is what fits.
                let orig = u32_at(b, 0, big) as usize;
                let cap = orig.min(b.len() - 4).min(MAX_PACKET_BYTES as usize);
                Ok(Some(CapturedPacket {
                    ts_ns: 0,
                    link: iface.link,
                    data: body.part(4, cap),
                    file: 0,
                }))
            }
            _ => Ok(None),
        }
    }

    /// After a block at `start` whose framing is broken: records the skip and moves to the
    /// next offset (4-byte aligned, within [`RESYNC_WINDOW`]) where a known block type starts
    /// whose leading and trailing lengths agree. None found ends the file.
    fn resync(&mut self, start: u64, reason: &str) -> Result<(), (u64, String)> {
        let big = match self.format {
            Format::PcapNg { big_endian, .. } => big_endian,
            Format::Pcap { .. } => false,
        };
        let mut at = start + 4;
        while at < start + RESYNC_WINDOW {
            let mut head = [0u8; 8];
            if !self.read_at(at, &mut head)? {
                break;
            }
            // The section header's type reads the same in both orders; its byte-order magic
            // says how to read its length. Other blocks keep the current section's order.
            let order = if head[..4] == PCAPNG_SHB.to_le_bytes() {
                let mut bom = [0u8; 4];
                match self.read_at(at + 8, &mut bom)? {
                    true => pcapng_order(bom),
                    false => None,
                }
            } else {
                Some(big)
            };
            let Some(order) = order else {
                at += 4;
                continue;
            };
            let kind = u32_at(&head, 0, order);
            let len = u32_at(&head, 4, order);
            if KNOWN_BLOCKS.contains(&kind)
                && len >= 12
                && len.is_multiple_of(4)
                && len <= MAX_BLOCK_BYTES
            {
                let mut tail = [0u8; 4];
                if self.read_at(at + u64::from(len) - 4, &mut tail)?
                    && u32_at(&tail, 0, order) == len
                {
                    self.skip(
                        start,
                        format!("{reason}; resumed at byte {at}, {} bytes on", at - start),
                    );
                    self.seek(at)?;
                    return Ok(());
                }
            }
            at += 4;
        }
        Err((start, format!("{reason}; no readable block follows")))
    }

    /// Reads `buf` at `at`; false where the file ends before it is full.
    fn read_at(&mut self, at: u64, buf: &mut [u8]) -> Result<bool, (u64, String)> {
        self.seek(at)?;
        Ok(matches!(self.fill(buf)?, Fill::Full))
    }

    fn seek(&mut self, at: u64) -> Result<(), (u64, String)> {
        self.source
            .seek(SeekFrom::Start(at))
            .map_err(|e| (at, format!("seek error: {e}")))?;
        self.offset = at;
        Ok(())
    }
}

/// The options of a pcapng block (code, value), up to `opt_endofopt` or a malformed one.
fn options(mut b: &[u8], big: bool) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let code = u16_at(b, 0, big);
        let len = usize::from(u16_at(b, 2, big));
        if code == 0 || b.len() - 4 < len {
            return None;
        }
        let value = &b[4..4 + len];
        let padded = (4 + len).div_ceil(4) * 4;
        b = b.get(padded..).unwrap_or(&[]);
        Some((code, value))
    })
}

/// Reads until `buf` is full or the source ends; the count read.
fn read_up_to(source: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match source.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
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
                interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
            },
            PcapNgWriter,
        },
        DataLink, TsResolution,
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

    /// A pcapng block: type, length, body padded to 4, length (little-endian).
    fn block(kind: u32, body: &[u8]) -> Vec<u8> {
        let mut padded = body.to_vec();
        padded.resize(body.len().div_ceil(4) * 4, 0);
        let len = (padded.len() + 12) as u32;
        let mut b = kind.to_le_bytes().to_vec();
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&padded);
        b.extend_from_slice(&len.to_le_bytes());
        b
    }

    fn shb() -> Vec<u8> {
        let mut body = PCAPNG_BOM.to_le_bytes().to_vec();
        body.extend_from_slice(&[1, 0, 0, 0]);
        body.extend_from_slice(&u64::MAX.to_le_bytes());
        block(PCAPNG_SHB, &body)
    }

    fn idb(link: u16, options: &[u8]) -> Vec<u8> {
        let mut body = link.to_le_bytes().to_vec();
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        body.extend_from_slice(options);
        block(PCAPNG_IDB, &body)
    }

    fn epb(iface: u32, ts: u64, data: &[u8]) -> Vec<u8> {
        let mut body = iface.to_le_bytes().to_vec();
        body.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(ts as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        block(PCAPNG_EPB, &body)
    }

    fn read_bytes(bytes: Vec<u8>) -> CaptureReader<std::io::Cursor<Vec<u8>>> {
        CaptureReader::new(std::io::Cursor::new(bytes), Path::new("mem.pcapng")).unwrap()
    }

    fn drain<R: Source>(r: &mut CaptureReader<R>) -> Vec<CapturedPacket> {
        std::iter::from_fn(|| r.next_packet()).collect()
    }

    #[test]
    fn impossible_pcap_record_ends_the_file_with_offset_and_reason() {
        let mut bytes = vec![
            0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 101, 0,
            0, 0,
        ];
        let record = |len: u32, data: &[u8]| {
            let mut r = vec![1, 0, 0, 0, 0, 0, 0, 0];
            r.extend_from_slice(&len.to_le_bytes());
            r.extend_from_slice(&len.to_le_bytes());
            r.extend_from_slice(data);
            r
        };
        bytes.extend(record(4, &[0x45, 0, 0, 0]));
        let bad_at = bytes.len() as u64;
        bytes.extend(record(0xF000_0000, &[0; 64]));
        let mut r = read_bytes(bytes);
        assert_eq!(drain(&mut r).len(), 1);
        let end = r.early_end().unwrap();
        assert_eq!((end.after_packets, end.offset), (1, bad_at));
        assert!(end.reason.contains("4026531840"), "{}", end.reason);
        assert!(end.to_string().contains(&format!("byte {bad_at}")), "{end}");
    }

    #[test]
    fn files_are_read_in_place_and_one_cut_while_read_ends_early() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.pcap");
        let mut bytes = vec![
            0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 101, 0,
            0, 0,
        ];
        // 2,000 records of 100 bytes: ~230 KiB, dozens of pages.
        for i in 0..2000u32 {
            bytes.extend_from_slice(&i.to_le_bytes());
            bytes.extend_from_slice(&[0; 4]);
            bytes.extend_from_slice(&100u32.to_le_bytes());
            bytes.extend_from_slice(&100u32.to_le_bytes());
            bytes.extend_from_slice(&[(i % 200) as u8 + 1; 100]);
        }
        std::fs::write(&path, &bytes).unwrap();
        let mut f = CaptureFile::open(&path).unwrap();
        let first = f.next_packet().unwrap();
        assert!(
            matches!(first.data, FrameData::Mapped { .. }),
            "a regular file is mapped"
        );
        assert_eq!(&first.data[..], &[1; 100][..]);
        // Another program cuts the file to a tenth while it is read: no crash, an early end.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(bytes.len() as u64 / 10)
            .unwrap();
        let mut read = 1;
        while f.next_packet().is_some() {
            read += 1;
        }
        assert!(read < 2000, "{read} packets read of a cut file");
        let end = f.early_end().unwrap();
        assert!(end.reason.contains("shrank"), "{end}");
        assert_eq!(
            &first.data[..],
            &[1; 100][..],
            "a frame of a kept page reads the same"
        );
    }

    #[test]
    fn broken_pcapng_blocks_are_skipped_and_reading_resumes() {
        let mut bytes = shb();
        bytes.extend(idb(101, &[]));
        bytes.extend(epb(0, 1, &[0x45, 1]));
        // A block whose length field is garbage, then one whose captured length overruns it,
        // then one of an undeclared interface: three skips, and the last packet still read.
        let garbage_at = bytes.len() as u64;
        let mut garbage = epb(0, 2, &[0x45, 2]);
        garbage[4..8].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        bytes.extend(garbage);
        let mut overrun = epb(0, 3, &[0x45, 3]);
        overrun[20..24].copy_from_slice(&1000u32.to_le_bytes());
        bytes.extend(overrun);
        bytes.extend(epb(7, 4, &[0x45, 4]));
        bytes.extend(epb(0, 5, &[0x45, 5]));
        let mut r = read_bytes(bytes);
        let packets = drain(&mut r);
        assert_eq!(
            packets.iter().map(|p| p.data[1]).collect::<Vec<_>>(),
            vec![1, 5]
        );
        assert!(r.early_end().is_none());
        assert_eq!(r.skipped_blocks(), 3);
        assert_eq!(r.skips()[0].offset, garbage_at);
        assert!(
            r.skips()[0].reason.contains("resumed at byte"),
            "{:?}",
            r.skips()
        );
        assert!(
            r.skips()[1].reason.contains("does not fit"),
            "{:?}",
            r.skips()
        );
        assert!(
            r.skips()[2].reason.contains("interface 7"),
            "{:?}",
            r.skips()
        );
    }

    #[test]
    fn pcapng_tsoffset_big_endian_and_a_cut_block() {
        // Interface with if_tsresol 3 (ms) and if_tsoffset 10 s.
        let mut opts = vec![9, 0, 1, 0, 3, 0, 0, 0, 14, 0, 8, 0];
        opts.extend_from_slice(&10u64.to_le_bytes());
        let mut bytes = shb();
        bytes.extend(idb(1, &opts));
        bytes.extend(epb(0, 1500, &[0; 14]));
        let cut = epb(0, 1600, &[0; 14]);
        bytes.extend_from_slice(&cut[..cut.len() - 5]);
        let mut r = read_bytes(bytes);
        let packets = drain(&mut r);
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0].ts_ns, 11_500_000_000);
        assert!(r
            .early_end()
            .unwrap()
            .reason
            .contains("ends inside a block"));

        // The same section big-endian, hand-swapped.
        let be = |kind: u32, body: &[u8]| {
            let len = (body.len() + 12) as u32;
            let mut b = kind.to_be_bytes().to_vec();
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(body);
            b.extend_from_slice(&len.to_be_bytes());
            b
        };
        let mut shb_body = PCAPNG_BOM.to_be_bytes().to_vec();
        shb_body.extend_from_slice(&[0, 1, 0, 0]);
        shb_body.extend_from_slice(&u64::MAX.to_be_bytes());
        let mut bytes = be(PCAPNG_SHB, &shb_body);
        bytes.extend(be(PCAPNG_IDB, &[0, 101, 0, 0, 0, 0, 0, 0]));
        let mut epb_body = vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 4, 0, 0, 0, 4];
        epb_body.extend_from_slice(&[0x45, 9, 9, 9]);
        bytes.extend(be(PCAPNG_EPB, &epb_body));
        let mut r = read_bytes(bytes);
        let packets = drain(&mut r);
        assert_eq!(packets.len(), 1);
        assert_eq!((packets[0].ts_ns, packets[0].link), (7_000, LinkType::Raw));
    }

    /// Regression (fuzz `capture_reader`, crash-4bf3cef6): a section header whose length
    /// field says 12 made the body length underflow. Now the block is skipped as too short.
    #[test]
    fn section_header_shorter_than_its_fields_is_skipped() {
        let mut bytes = shb();
        bytes.extend(idb(101, &[]));
        let at = bytes.len() as u64;
        let mut short = shb();
        short[4..8].copy_from_slice(&12u32.to_le_bytes());
        bytes.extend_from_slice(&short[..12]);
        bytes.extend(epb(0, 1, &[0x45, 1]));
        let mut r = read_bytes(bytes);
        let packets = drain(&mut r);
        assert!(
            r.skips()
                .iter()
                .any(|s| s.offset == at && s.reason.contains("too short")),
            "{:?}",
            r.skips()
        );
        assert!(packets.len() <= 1);
    }

    #[test]
    fn short_files_are_header_errors() {
        for bytes in [vec![], vec![0xd4, 0xc3], vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0]] {
            let err = CaptureReader::new(std::io::Cursor::new(bytes), Path::new("x"))
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("bad capture header"), "{err}");
        }
    }
}
