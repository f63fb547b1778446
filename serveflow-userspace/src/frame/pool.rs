//! Frame buffers handed round instead of allocated per packet.
//!
//! A frame is read (from a capture, or copied out of a UMEM ring) on one thread and dropped on
//! another, its worker: a per-thread cache would never see its buffers come back. So the free
//! buffers sit on one lock-free queue, shared by every source and worker of the process, and
//! bounded: at most [`KEPT`] buffers of at most [`KEPT_CAPACITY`] bytes stay parked (what two
//! workers' full inboxes, 64 batches of 64 frames each, hold in flight); the rest are freed as
//! before. The per-packet `calloc` and `free` this replaces were 6% of a 2-worker replay's
//! instructions (docs/benchmarks.md has the before/after figures and the memory it costs).

use std::sync::OnceLock;

use crossbeam_queue::ArrayQueue;

/// Free buffers parked at most; more in flight than this are allocated and freed as usual.
pub const KEPT: usize = 8192;
/// Larger buffers (jumbo frames, oversized records) are not kept: one would pin its size.
pub const KEPT_CAPACITY: usize = 2048;

fn free() -> &'static ArrayQueue<Vec<u8>> {
    static FREE: OnceLock<ArrayQueue<Vec<u8>>> = OnceLock::new();
    FREE.get_or_init(|| ArrayQueue::new(KEPT))
}

/// An empty buffer with room for at least `len` bytes: a parked one when there is one.
pub fn take(len: usize) -> Vec<u8> {
    match free().pop() {
        Some(mut buf) => {
            buf.clear();
            buf.reserve(len);
            buf
        }
        // Exactly the size: in-flight frames are mostly small, and the parked ones grow only
        // as far as the packets they carry.
        None => Vec::with_capacity(len),
    }
}

/// A buffer holding a copy of `bytes`.
pub fn copy_of(bytes: &[u8]) -> Vec<u8> {
    let mut buf = take(bytes.len());
    buf.extend_from_slice(bytes);
    buf
}

/// Gives a buffer back for a later [`take`]; it is freed instead when the queue is full or it
/// grew past [`KEPT_CAPACITY`].
pub fn give(buf: Vec<u8>) {
    if worth_keeping(buf.capacity()) {
        // A full queue hands the buffer back, and dropping it frees it.
        let _ = free().push(buf);
    }
}

fn worth_keeping(capacity: usize) -> bool {
    capacity > 0 && capacity <= KEPT_CAPACITY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_comes_back_empty_with_its_room() {
        // Other tests share the queue: check what this one can see, a buffer with room.
        let mut buf = take(100);
        assert!(buf.is_empty() && buf.capacity() >= 100);
        buf.extend_from_slice(&[7; 100]);
        give(buf);
        let again = take(60);
        assert!(again.is_empty(), "a reused buffer starts empty");
        assert!(again.capacity() >= 60);
    }

    #[test]
    fn copies_hold_the_bytes_and_big_buffers_are_not_kept() {
        assert_eq!(copy_of(&[1, 2, 3]), vec![1, 2, 3]);
        let big = take(KEPT_CAPACITY * 4);
        assert!(big.capacity() >= KEPT_CAPACITY * 4);
        assert!(
            !worth_keeping(big.capacity()),
            "a jumbo buffer is freed, not parked"
        );
        assert!(
            worth_keeping(take(64).capacity()),
            "a fresh buffer is parked"
        );
        assert!(!worth_keeping(0), "an empty Vec owns nothing");
    }
}
