//! What a capture file is read from: a mapping whose frames are lent in place, or a buffered
//! read where a file cannot be mapped. Both are one [`Source`] to the reader in
//! [`crate::capture::file`], which lends frames where the source can and copies them where it
//! cannot.

use std::{
    fs::File,
    io::{BufReader, Cursor, ErrorKind, Read, Seek, SeekFrom},
    sync::Arc,
};

use crate::frame::{mapped::Mapping, FrameData};

/// What a capture is read from: seekable bytes. A mapped file also lends its bytes in place,
/// so its frames are not copied.
pub trait Source: Read + Seek {
    /// The next `len` bytes in place, moving past them: None where the source cannot lend
    /// (read them instead); `Err(n)` where only `n` are left.
    fn lend(&mut self, _len: usize) -> Option<Result<FrameData, usize>> {
        None
    }

    /// The next `N` bytes copied out in place, moving past them (a record header without a
    /// call to `memcpy`): None where the source cannot lend, as for [`Source::lend`].
    fn lend_array<const N: usize>(&mut self) -> Option<Result<[u8; N], usize>> {
        None
    }

    /// Whether the file shrank while it was read (what was lost reads as zeros).
    fn was_cut(&self) -> bool {
        false
    }
}

impl Source for BufReader<File> {}
impl Source for Cursor<Vec<u8>> {}
impl Source for Cursor<&[u8]> {}

/// A capture file: mapped, or read through a buffer.
pub enum FileSource {
    /// Mapped in memory.
    Mapped(MappedFile),
    /// Not mappable (a pipe, a device, `mmap` refused): read.
    Read(BufReader<File>),
}

impl FileSource {
    /// `file` mapped where it is a regular file that maps, else read through a 64 KiB buffer.
    pub fn of(file: File) -> std::io::Result<FileSource> {
        let meta = file.metadata()?;
        let mapping = meta
            .is_file()
            .then(|| Mapping::of(&file, meta.len()))
            .flatten();
        Ok(match mapping {
            Some(map) => FileSource::Mapped(MappedFile::new(map)),
            None => FileSource::Read(BufReader::with_capacity(1 << 16, file)),
        })
    }
}

impl Read for FileSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            FileSource::Mapped(m) => m.read(buf),
            FileSource::Read(r) => r.read(buf),
        }
    }
}

impl Seek for FileSource {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        match self {
            FileSource::Mapped(m) => m.seek(to),
            FileSource::Read(r) => r.seek(to),
        }
    }
}

impl Source for FileSource {
    fn lend(&mut self, len: usize) -> Option<Result<FrameData, usize>> {
        match self {
            FileSource::Mapped(m) => m.lend(len),
            FileSource::Read(_) => None,
        }
    }

    fn lend_array<const N: usize>(&mut self) -> Option<Result<[u8; N], usize>> {
        match self {
            FileSource::Mapped(m) => m.lend_array(),
            FileSource::Read(_) => None,
        }
    }

    fn was_cut(&self) -> bool {
        match self {
            FileSource::Mapped(m) => m.map.was_cut(),
            FileSource::Read(_) => false,
        }
    }
}

/// Resident pages the reader keeps behind its position; older ones are released. More than
/// the frames in flight to two workers (64 batches of 64 frames each, ~2.7 MiB of this
/// capture): a page released under a frame not yet parsed is faulted in again and stays.
const KEEP_BEHIND: usize = 8 << 20;
/// Released at a time.
const RELEASE_STEP: usize = 1 << 20;
/// What of the next record the reader asks the CPU to fetch while the current frame is
/// parsed: its header and the frame's first headers (Ethernet, IP, TCP). Read in place,
/// each frame's first touch otherwise waits for memory, one frame at a time.
const PREFETCH_NEXT: usize = 192;

/// A mapped file read like a file, lending frames in place.
pub struct MappedFile {
    map: Arc<Mapping>,
    pos: usize,
    /// Everything before this was released from the resident set.
    released: usize,
    /// Everything before this was prefetched.
    fetched: usize,
}

impl MappedFile {
    fn new(map: Mapping) -> Self {
        MappedFile {
            map: Arc::new(map),
            pos: 0,
            released: 0,
            fetched: 0,
        }
    }

    fn advance(&mut self, n: usize) {
        self.pos += n;
        let bytes = self.map.bytes();
        let until = (self.pos + PREFETCH_NEXT).min(bytes.len());
        let mut line = self.pos.max(self.fetched);
        while line < until {
            prefetch(&bytes[line]);
            line = (line | 63) + 1;
        }
        self.fetched = self.fetched.max(until);
        if self.pos > self.released + KEEP_BEHIND + RELEASE_STEP {
            let to = self.pos - KEEP_BEHIND;
            self.map.release(self.released, to);
            self.released = to;
        }
    }
}

/// Asks the CPU to bring the cache line of `byte` in (a hint: it never faults).
#[inline(always)]
fn prefetch(byte: &u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint on a valid reference; SSE is part of x86_64.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (byte as *const u8).cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = byte;
}

impl Read for MappedFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = self.map.bytes().get(self.pos..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.advance(n);
        Ok(n)
    }
}

impl Seek for MappedFile {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let len = self.map.bytes().len() as i128;
        let at = match to {
            SeekFrom::Start(n) => i128::from(n),
            SeekFrom::Current(d) => self.pos as i128 + i128::from(d),
            SeekFrom::End(d) => len + i128::from(d),
        };
        let at = usize::try_from(at).map_err(|_| {
            std::io::Error::new(ErrorKind::InvalidInput, "seek before the start of the file")
        })?;
        self.pos = at;
        // Going back (a pcapng resync) keeps the release mark where it is: re-read pages
        // come back from the page cache.
        Ok(at as u64)
    }
}

impl Source for MappedFile {
    fn lend(&mut self, len: usize) -> Option<Result<FrameData, usize>> {
        let left = self.map.bytes().len().saturating_sub(self.pos);
        if len > left {
            return Some(Err(left));
        }
        let frame = FrameData::Mapped {
            map: self.map.clone(),
            start: self.pos,
            len,
        };
        self.advance(len);
        Some(Ok(frame))
    }

    fn lend_array<const N: usize>(&mut self) -> Option<Result<[u8; N], usize>> {
        let bytes = self.map.bytes();
        let Some(head) = bytes
            .get(self.pos..)
            .and_then(|rest| rest.first_chunk::<N>())
        else {
            return Some(Err(bytes.len().saturating_sub(self.pos)));
        };
        let head = *head;
        self.advance(N);
        Some(Ok(head))
    }
}
