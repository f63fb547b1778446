//! Receiving frames from one AF_XDP socket (one RX queue), with `xdpilone`.
//!
//! Each socket owns its UMEM: a page-aligned anonymous mapping cut into fixed frames. All
//! frames start in the fill ring; the kernel copies (or, with zero-copy, DMAs) a packet into a
//! frame and posts its descriptor on the RX ring; [`XskReceiver::receive`] hands each frame to
//! the caller and puts the frame straight back on the fill ring. Zero-copy is tried first and
//! copy mode used when the driver refuses it (veth does). With need_wakeup the kernel only
//! needs a syscall when it says so, which keeps a busy receiver syscall-free.

use std::{fmt, ptr::NonNull, time::Duration};

use serde::Serialize;
use xdpilone::{
    xdp::XdpDesc, DeviceQueue, IfInfo, RingRx, Socket, SocketConfig, Umem, UmemConfig, User,
};

use crate::system::Interface;

/// Frames per socket; also the size of the fill and RX rings (powers of two). 16,384 absorbs
/// the bursts that build up while the worker is preempted on a busy machine: with 4,096 the
/// live benchmark lost 1.5% of flows to an empty fill ring at 50k new flows/s (measured).
const FRAMES: u32 = 16384;
/// Bytes per frame: half a page (the smallest aligned-mode size), enough for a standard-MTU
/// frame; 32 MiB of UMEM per socket.
const FRAME_SIZE: u32 = 2048;
/// UMEM bytes each socket maps (and locks).
pub const UMEM_BYTES: u64 = FRAMES as u64 * FRAME_SIZE as u64;
/// Descriptors taken from the RX ring per call.
const BATCH: u32 = 64;

/// `sockaddr_xdp` bind flags (linux/if_xdp.h).
const XDP_COPY: u16 = 1 << 1;
const XDP_ZEROCOPY: u16 = 1 << 2;
const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;

/// Why an AF_XDP socket could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    /// A step of socket set-up failed.
    #[error("AF_XDP {step} failed: {source}")]
    Setup {
        /// What was being done.
        step: &'static str,
        /// OS error.
        source: std::io::Error,
    },
}

fn setup(step: &'static str) -> impl Fn(xdpilone::Errno) -> AfXdpError {
    move |e| AfXdpError::Setup {
        step,
        source: std::io::Error::from_raw_os_error(e.get_raw()),
    }
}

/// How the socket is bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindMode {
    /// The driver DMAs into the UMEM.
    ZeroCopy,
    /// The kernel copies each frame into the UMEM.
    Copy,
}

impl fmt::Display for BindMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BindMode::ZeroCopy => "zero-copy",
            BindMode::Copy => "copy mode",
        })
    }
}

/// Drops the kernel reports for AF_XDP sockets (`XDP_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SocketStatistics {
    /// Dropped for other reasons (e.g. frame larger than the UMEM frame).
    pub rx_dropped: u64,
    /// Invalid descriptors on the fill ring.
    pub rx_invalid_descs: u64,
    /// RX ring full: userspace did not keep up.
    pub rx_ring_full: u64,
    /// Fill ring empty when a packet arrived.
    pub rx_fill_ring_empty_descs: u64,
}

impl SocketStatistics {
    /// Packets lost between the XDP redirect and userspace.
    pub fn total(&self) -> u64 {
        self.rx_dropped + self.rx_invalid_descs + self.rx_ring_full
    }
}

impl std::ops::AddAssign for SocketStatistics {
    fn add_assign(&mut self, o: Self) {
        self.rx_dropped += o.rx_dropped;
        self.rx_invalid_descs += o.rx_invalid_descs;
        self.rx_ring_full += o.rx_ring_full;
        self.rx_fill_ring_empty_descs += o.rx_fill_ring_empty_descs;
    }
}

/// The arrival time the XDP program wrote in front of the frame at `start`, if it did: the
/// kernel copies metadata with the frame into the same UMEM chunk, just before the data.
fn arrival_time(base: *const u8, start: usize) -> Option<u64> {
    let len = serveflow_common::arrival::META_LEN;
    // The metadata must lie inside the frame's own chunk (the kernel leaves 256 bytes of
    // headroom in front of the data, so it always does when present).
    if start % FRAME_SIZE as usize >= len {
        // SAFETY: [start - len, start) is inside the same chunk of the mapping as the frame
        // (checked above); unaligned reads of plain integers.
        let (magic, time) = unsafe {
            let meta = base.add(start - len);
            (
                std::ptr::read_unaligned(meta.cast::<u32>()),
                std::ptr::read_unaligned(meta.add(8).cast::<u64>()),
            )
        };
        if magic == serveflow_common::arrival::META_MAGIC {
            return Some(time);
        }
    }
    None
}

/// The UMEM's backing memory, unmapped on drop (after the socket that uses it).
struct Mapping {
    area: NonNull<[u8]>,
}

impl Mapping {
    fn new(len: usize) -> Result<Self, AfXdpError> {
        // SAFETY: anonymous private mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(AfXdpError::Setup {
                step: "mmap of the UMEM",
                source: std::io::Error::last_os_error(),
            });
        }
        let slice = std::ptr::slice_from_raw_parts_mut(ptr.cast::<u8>(), len);
        let area = NonNull::new(slice).ok_or(AfXdpError::Setup {
            step: "mmap of the UMEM",
            source: std::io::Error::from_raw_os_error(libc::ENOMEM),
        })?;
        Ok(Mapping { area })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: area came from our mmap of exactly this length and is unmapped once.
        unsafe { libc::munmap(self.area.as_ptr().cast(), self.area.len()) };
    }
}

/// One AF_XDP socket bound to one RX queue, with its own UMEM.
pub struct XskReceiver {
    // Field order is drop order: rings and sockets first, the memory they point into last.
    rx: RingRx,
    device: DeviceQueue,
    user: User,
    _umem: Umem,
    mapping: Mapping,
    mode: BindMode,
    queue: u32,
    received: u64,
}

// SAFETY: the receiver exclusively owns its rings and mapping; xdpilone's rings are Send, and
// the raw mapping pointer is only dereferenced by the thread that owns the receiver.
unsafe impl Send for XskReceiver {}

impl XskReceiver {
    /// Opens a socket on `iface` queue `queue`, zero-copy if the driver allows, else copy mode.
    pub fn open(iface: &Interface, queue: u32) -> Result<Self, AfXdpError> {
        match Self::open_with(iface, queue, BindMode::ZeroCopy) {
            Ok(rx) => Ok(rx),
            Err(zc_err) => {
                log::debug!(
                    "zero-copy refused on {} queue {queue}: {zc_err}",
                    iface.name
                );
                Self::open_with(iface, queue, BindMode::Copy)
            }
        }
    }

    fn open_with(iface: &Interface, queue: u32, mode: BindMode) -> Result<Self, AfXdpError> {
        let mapping = Mapping::new(FRAMES as usize * FRAME_SIZE as usize)?;
        let config = UmemConfig {
            fill_size: FRAMES,
            complete_size: FRAMES,
            frame_size: FRAME_SIZE,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: the area is a page-aligned mapping of FRAMES * FRAME_SIZE bytes that lives in
        // `mapping`, which the receiver drops after the UMEM and its rings.
        let umem =
            unsafe { Umem::new(config, mapping.area) }.map_err(setup("UMEM registration"))?;
        let mut info = IfInfo::invalid();
        info.from_ifindex(iface.index)
            .map_err(setup("interface lookup"))?;
        info.set_queue(queue);
        let socket = Socket::with_shared(&info, &umem).map_err(setup("socket creation"))?;
        let mut device = umem
            .fq_cq(&socket)
            .map_err(setup("fill/completion rings"))?;
        let flags = XDP_USE_NEED_WAKEUP
            | match mode {
                BindMode::ZeroCopy => XDP_ZEROCOPY,
                BindMode::Copy => XDP_COPY,
            };
        let user = umem
            .rx_tx(
                &socket,
                &SocketConfig {
                    rx_size: std::num::NonZeroU32::new(FRAMES),
                    tx_size: None,
                    bind_flags: flags,
                },
            )
            .map_err(setup("RX ring"))?;
        umem.bind(&user).map_err(setup("bind"))?;
        let rx = user.map_rx().map_err(setup("RX ring mapping"))?;

        // Give every frame to the kernel.
        let mut fill = device.fill(FRAMES);
        let inserted = fill.insert((0..u64::from(FRAMES)).map(|i| i * u64::from(FRAME_SIZE)));
        fill.commit();
        drop(fill);
        log::debug!(
            "AF_XDP {} queue {queue}: {mode}, {inserted} frames filled",
            iface.name
        );
        Ok(XskReceiver {
            rx,
            device,
            user,
            _umem: umem,
            mapping,
            mode,
            queue,
            received: 0,
        })
    }

    /// How the socket is bound.
    pub fn bind_mode(&self) -> BindMode {
        self.mode
    }

    /// The RX queue this socket serves.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Frames received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The socket's fd, for the XSKS map.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the fd belongs to the socket owned by self and stays open while the borrow
        // lives.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.rx.as_raw_fd()) }
    }

    /// Hands every frame waiting on the RX ring (up to a batch) to `on_frame`, with the
    /// kernel's arrival time (CLOCK_MONOTONIC ns) when the XDP program left it in the frame's
    /// metadata, and returns the frames to the fill ring. Returns how many were received.
    pub fn receive(
        &mut self,
        mut on_frame: impl FnMut(&[u8], Option<u64>),
    ) -> Result<usize, AfXdpError> {
        let base = self.mapping.area.as_ptr().cast::<u8>();
        let area_len = self.mapping.area.len();
        let mut addrs = [0u64; BATCH as usize];
        let mut n = 0usize;
        {
            let mut batch = self.rx.receive(BATCH);
            while let Some(XdpDesc { addr, len, .. }) = batch.read() {
                let (start, len) = (addr as usize, len as usize);
                if start.checked_add(len).is_some_and(|end| end <= area_len) {
                    // SAFETY: [start, start+len) lies inside the mapping (checked above), and
                    // the kernel does not write a frame while it sits on the RX ring.
                    let frame = unsafe { std::slice::from_raw_parts(base.add(start), len) };
                    on_frame(frame, arrival_time(base, start));
                }
                // Frames go back whole: align the address down to its frame.
                addrs[n] = addr - addr % u64::from(FRAME_SIZE);
                n += 1;
            }
            batch.release();
        }
        self.received += n as u64;
        if n > 0 {
            let mut fill = self.device.fill(n as u32);
            fill.insert(addrs[..n].iter().copied());
            fill.commit();
            drop(fill);
            // With need_wakeup the kernel asks for a syscall only when it ran out of fill
            // entries; new entries exist only after a refill, so that is the only time to wake.
            if self.device.needs_wakeup() {
                self.device.wake();
            }
        }
        Ok(n)
    }

    /// Waits until any of `sockets` has frames or `timeout` passes.
    pub fn wait_any(sockets: &[XskReceiver], timeout: Duration) -> Result<(), AfXdpError> {
        let mut fds: Vec<libc::pollfd> = sockets
            .iter()
            .map(|s| libc::pollfd {
                fd: s.rx.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: fds is a valid array of fds.len() pollfd structs.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(AfXdpError::Setup {
                    step: "poll",
                    source: err,
                });
            }
        }
        Ok(())
    }

    /// The kernel's drop counters for this socket.
    pub fn statistics(&self) -> Result<SocketStatistics, AfXdpError> {
        let s = self.user.statistics_v2().map_err(setup("XDP_STATISTICS"))?;
        Ok(SocketStatistics {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
        })
    }
}
