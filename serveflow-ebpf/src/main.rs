//! serveflow's XDP program: the first stage of the data path.
//!
//! ```text
//!  NIC RX queue q ──► serveflow (XDP) ──┬─► XSKS[q] ─► AF_XDP socket ─► userspace worker
//!                       │  parse L2-L4  ├─► XDP_PASS (not TCP/UDP, fragment, truncated,
//!                       │               │   malformed, no socket on q, decided, enough packets)
//!                       ▼               ├─► XDP_DROP (decided flow whose class is dropped)
//!                    FLOWS (LRU)        └─► XDP_PASS + mark metadata ─► tcx `serveflow_mark`
//!                    VERDICTS, STEER,                                   sets skb->mark
//!                    ACTIONS, MARKS     COUNTERS (per-CPU, one slot per outcome)
//! ```
//!
//! For every TCP/UDP packet it updates the flow's entry in `FLOWS` (keyed by the
//! direction-normalised 5-tuple, so both directions share an entry) and redirects it to the
//! AF_XDP socket bound to its RX queue while userspace still needs it: until the flow is in
//! `VERDICTS` or has more packets than `STEER` allows. A decided flow's packets get its class's
//! action from `ACTIONS` (pass, drop, or mark with `MARKS`). Everything else is passed to the
//! stack and counted by reason, so `COUNTERS` explains every packet. Userspace owns every map:
//! it binds sockets into `XSKS`, writes verdicts, steering and actions, reads `FLOWS` and
//! `COUNTERS`, and pins them for `bpftool`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program;

/// Host builds (`cargo check --workspace`, clippy) compile this crate as an empty binary;
/// the real program only exists for the BPF target.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
