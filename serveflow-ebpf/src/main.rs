//! serveflow's XDP program: the first stage of the data path.
//!
//! ```text
//!  NIC RX queue q ──► serveflow (XDP) ──┬─► XSKS[q] ─► AF_XDP socket ─► userspace worker
//!                       │  parse L2-L4  ├─► XDP_PASS (not TCP/UDP, fragment, truncated,
//!                       │               │              malformed, or no socket on q)
//!                       ▼               │
//!                    FLOWS (LRU)      COUNTERS (per-CPU, one slot per outcome)
//! ```
//!
//! For every TCP/UDP packet it updates the flow's entry in `FLOWS` (keyed by the
//! direction-normalised 5-tuple, so both directions share an entry) and redirects it to the
//! AF_XDP socket bound to its RX queue. Everything else is passed to the stack and counted by
//! reason, so `COUNTERS` explains every packet. Userspace owns all three maps: it binds
//! sockets into `XSKS`, reads `FLOWS` and `COUNTERS`, and pins them for `bpftool`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program;

/// Host builds (`cargo check --workspace`, clippy) compile this crate as an empty binary;
/// the real program only exists for the BPF target.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
