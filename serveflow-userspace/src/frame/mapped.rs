//! Capture files mapped into memory, so their frames are read in place instead of copied.
//!
//! Reading a file copies every byte out of the page cache (the kernel's `read`) and then into
//! a frame buffer; the parser reads only the headers, a line or two of a ~330-byte frame.
//! Reading in place touches only those lines: on the comparison capture (639 MiB) a pass that
//! reads the headers of a mapped file took 0.065 s against 0.195 s for `read` and a copy
//! (docs/benchmarks.md, issue 17).
//!
//! Two things a mapping must not do that a read would not:
//! - **Crash when the file shrinks.** Another process that truncates a mapped file makes the
//!   next read of the lost pages raise SIGBUS. A handler, installed with the first mapping,
//!   puts zero pages over the mapping from the faulting page to its end and marks it cut;
//!   the reader then ends that file early with a reason (frames already handed out read
//!   zeros, which the parser counts as skips). Any other SIGBUS goes to the handler that was
//!   there before (Rust's own, for stack overflows) or the default action.
//! - **Count the whole file as resident memory.** Mapped pages that were touched count in the
//!   process's RSS; [`Mapping::release_before`] drops the pages the reader has passed (a
//!   frame still pointing there reads them again from the page cache).

use std::sync::{
    atomic::{AtomicBool, AtomicUsize, Ordering},
    Once,
};

/// Mappings the SIGBUS handler can tell apart; a file opened while all are in use is read
/// with `read` instead.
const SLOTS: usize = 256;

static STARTS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static ENDS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static CUT: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];

/// A read-only private mapping of a whole file.
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
    slot: usize,
}

// SAFETY: the memory is mapped read-only and never written through `ptr`; it is unmapped
// only in `drop`, when no reference to it is left.
unsafe impl Send for Mapping {}
// SAFETY: as above: shared reads of read-only memory.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `file` (its size now); None where it cannot be mapped (an empty
    /// file, a pipe, every slot taken, or `mmap` refusing): the caller reads it instead.
    pub fn of(file: &std::fs::File, len: u64) -> Option<Mapping> {
        use std::os::fd::AsRawFd as _;
        let len = usize::try_from(len).ok().filter(|&l| l > 0)?;
        install_handler();
        let slot = (0..SLOTS).find(|&i| {
            STARTS[i]
                .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        // SAFETY: a fresh read-only private mapping of an open file; the kernel picks the
        // address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            STARTS[slot].store(0, Ordering::Release);
            return None;
        }
        // SAFETY: advice on the mapping just made; failure only loses the read-ahead hint.
        unsafe { libc::madvise(ptr, len, libc::MADV_SEQUENTIAL) };
        CUT[slot].store(false, Ordering::Release);
        ENDS[slot].store(ptr as usize + len, Ordering::Release);
        STARTS[slot].store(ptr as usize, Ordering::Release);
        Some(Mapping {
            ptr: ptr.cast(),
            len,
            slot,
        })
    }

    /// The file's bytes as mapped.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is mapped readable for the life of `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Whether the file shrank under the mapping (a read past its new end was answered with
    /// zeros).
    pub fn was_cut(&self) -> bool {
        CUT[self.slot].load(Ordering::Acquire)
    }

    /// Drops the resident pages of `[from, to)` (rounded inwards to pages) from this process:
    /// the bytes stay readable, from the page cache, if anything reads them again.
    pub fn release(&self, from: usize, to: usize) {
        let page = page_size();
        let start = from.div_ceil(page) * page;
        let end = to.min(self.len) / page * page;
        if end > start {
            // SAFETY: a page-aligned range inside the mapping; MADV_DONTNEED on a private
            // file mapping that was never written only drops page-table entries.
            unsafe { libc::madvise(self.ptr.add(start).cast(), end - start, libc::MADV_DONTNEED) };
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        STARTS[self.slot].store(usize::MAX, Ordering::Release);
        ENDS[self.slot].store(0, Ordering::Release);
        // SAFETY: the mapping made in `of`, unmapped once; nothing borrows it any more.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
        STARTS[self.slot].store(0, Ordering::Release);
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .unwrap_or(4096)
        .max(1)
}

/// The SIGBUS action that was in place before ours, to pass other faults on to.
static mut PREVIOUS: std::mem::MaybeUninit<libc::sigaction> = std::mem::MaybeUninit::uninit();
static INSTALLED: AtomicBool = AtomicBool::new(false);

fn install_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; PREVIOUS is written here, once, before the
        // handler that reads it is installed.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let previous = std::ptr::addr_of_mut!(PREVIOUS).cast::<libc::sigaction>();
            if libc::sigaction(libc::SIGBUS, &action, previous) == 0 {
                INSTALLED.store(true, Ordering::Release);
            }
        }
    });
}

/// Zero pages over a cut mapping from the faulting page on; anything else to the action
/// before ours. Only async-signal-safe calls: atomics, `mmap`, `sigaction`.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    for i in 0..SLOTS {
        let (start, end) = (
            STARTS[i].load(Ordering::Acquire),
            ENDS[i].load(Ordering::Acquire),
        );
        if start == 0 || start == usize::MAX || addr < start || addr >= end {
            continue;
        }
        let page = page_size();
        let from = addr / page * page;
        // SAFETY: replaces pages of our own read-only mapping with anonymous zero pages.
        let ok = unsafe {
            libc::mmap(
                from as *mut libc::c_void,
                end - from,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        } != libc::MAP_FAILED;
        if ok {
            CUT[i].store(true, Ordering::Release);
            return;
        }
    }
    // SAFETY: PREVIOUS was filled before this handler was installed.
    unsafe {
        let previous = &*std::ptr::addr_of!(PREVIOUS).cast::<libc::sigaction>();
        let handler = previous.sa_sigaction;
        if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
            // Back to the default action: the faulting access runs again and ends the process.
            libc::sigaction(libc::SIGBUS, previous, std::ptr::null_mut());
        } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(handler);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
            f(sig);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;

    #[test]
    fn a_mapped_file_reads_its_bytes_and_survives_being_cut() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let page = page_size();
        let bytes: Vec<u8> = (0..4 * page).map(|i| (i % 251) as u8 + 1).collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&bytes)
            .unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let m = Mapping::of(&file, bytes.len() as u64).unwrap();
        assert_eq!(m.bytes(), &bytes[..]);
        assert!(!m.was_cut());
        // Released pages read the same again.
        m.release(0, 2 * page);
        assert_eq!(&m.bytes()[..2 * page], &bytes[..2 * page]);

        // Another writer cuts the file to one page: past it the mapping reads zeros, no crash.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(page as u64)
            .unwrap();
        m.release(0, 4 * page);
        assert_eq!(&m.bytes()[..page], &bytes[..page]);
        assert!(m.bytes()[2 * page..].iter().all(|&b| b == 0));
        assert!(m.was_cut());
        drop(m);
        assert!(
            Mapping::of(&file, 0).is_none(),
            "an empty file is read, not mapped"
        );
    }
}
