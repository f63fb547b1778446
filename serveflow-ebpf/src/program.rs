//! The XDP entry point, its maps and the packet parser (BPF target only).

use aya_ebpf::{
    bindings::{xdp_action, BPF_NOEXIST, TC_ACT_UNSPEC},
    btf_maps::{Array, LruHashMap, PerCpuArray, XskMap},
    helpers::{bpf_ktime_get_ns, bpf_xdp_adjust_meta},
    macros::{btf_map, classifier, xdp},
    programs::{TcContext, XdpContext},
};
use serveflow_common::{
    action, arrival, Action, FlowKey, FlowStats, XdpCounter, FLOW_MAP_ENTRIES, MAX_CLASSES,
    MAX_QUEUES, STEER_PACKETS,
};

use crate::program::parse::{parse_l4, Parsed};

mod parse;

/// Per-flow totals, both directions in one entry; the least recently seen flow is evicted.
#[btf_map]
static FLOWS: LruHashMap<FlowKey, FlowStats, FLOW_MAP_ENTRIES> = LruHashMap::new();

/// Flows userspace has decided, with their class index: their packets are no longer steered.
/// Userspace writes an entry per verdict; LRU, so it never fills up.
#[btf_map]
static VERDICTS: LruHashMap<FlowKey, u32, FLOW_MAP_ENTRIES> = LruHashMap::new();

/// Steering settings written by userspace: slot [`STEER_PACKETS`] is the most packets per flow
/// userspace needs (the deepest stage's count); 0 steers every packet.
#[btf_map]
static STEER: Array<u32, 1> = Array::new();

/// What to do with a decided flow's packets, by class index ([`action`]; 0 = pass).
#[btf_map]
static ACTIONS: Array<u32, MAX_CLASSES> = Array::new();

/// The skb mark of each class whose action is [`Action::Mark`].
#[btf_map]
static MARKS: Array<u32, MAX_CLASSES> = Array::new();

/// AF_XDP sockets, indexed by the RX queue they are bound to.
#[btf_map]
static XSKS: XskMap<MAX_QUEUES> = XskMap::new();

/// One u64 per [`XdpCounter`] slot, per CPU (no atomics on the hot path).
#[btf_map]
static COUNTERS: PerCpuArray<u64, { serveflow_common::counters::XDP_COUNTER_SLOTS }> =
    PerCpuArray::new();

#[xdp]
pub fn serveflow(ctx: XdpContext) -> u32 {
    count(XdpCounter::Packets);
    match try_serveflow(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            count(reason);
            xdp_action::XDP_PASS
        }
    }
}

/// Returns the action for a TCP/UDP packet, or the reason the packet is passed.
#[inline(always)]
fn try_serveflow(ctx: &XdpContext) -> Result<u32, XdpCounter> {
    let Parsed {
        src,
        dst,
        sport,
        dport,
        proto,
    } = parse_l4(ctx)?;
    let (key, _reply) = FlowKey::from_endpoints(src, sport, dst, dport, proto);
    let packets = track_flow(&key, (ctx.data_end() - ctx.data()) as u64);

    // Early-packet steering: userspace only needs a flow's first packets, until its verdict.
    // SAFETY: the value is a plain u32 copied out at once.
    if let Some(class) = unsafe { VERDICTS.get(&key) }.copied() {
        match ACTIONS.get(class).copied().and_then(Action::from_u32) {
            Some(Action::Drop) => {
                count(XdpCounter::DropByClass);
                return Ok(xdp_action::XDP_DROP);
            }
            Some(Action::Mark) => {
                if let Some(mark) = MARKS.get(class).copied() {
                    if attach_mark(ctx, mark) {
                        count(XdpCounter::MarkByClass);
                        return Ok(xdp_action::XDP_PASS);
                    }
                }
            }
            _ => {}
        }
        return Err(XdpCounter::PassDecided);
    }
    let limit = STEER.get(STEER_PACKETS).copied().unwrap_or(0);
    if limit != 0 && packets > u64::from(limit) {
        return Err(XdpCounter::PassEnoughPackets);
    }

    let queue = ctx.rx_queue_index();
    if XSKS.get(queue).is_none() {
        return Err(XdpCounter::PassNoSocket);
    }
    stamp_arrival(ctx);
    match XSKS.redirect(queue, u64::from(xdp_action::XDP_PASS)) {
        Ok(action) => {
            count(XdpCounter::Redirected);
            Ok(action)
        }
        // The socket went away between the lookup and the redirect.
        Err(_) => Err(XdpCounter::PassNoSocket),
    }
}

/// Puts `mark` in front of the packet as XDP metadata (magic, mark) for the TC program; false
/// when the driver has no room for metadata.
#[inline(always)]
fn attach_mark(ctx: &XdpContext, mark: u32) -> bool {
    // SAFETY: the helper only moves the metadata start within the frame's headroom; every
    // packet pointer is re-read afterwards.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(action::MARK_META_LEN as i32)) } != 0 {
        return false;
    }
    let meta = ctx.metadata();
    if meta + action::MARK_META_LEN > ctx.data() {
        return false;
    }
    // SAFETY: [meta, meta + 8) lies before data (checked above), inside the metadata area.
    unsafe {
        *(meta as *mut u32) = action::MARK_META_MAGIC;
        *((meta + 4) as *mut u32) = mark;
    }
    true
}

/// Puts the arrival time in front of a packet bound for AF_XDP (the socket copies metadata
/// with the frame); best effort: without room for metadata userspace stamps the batch.
#[inline(always)]
fn stamp_arrival(ctx: &XdpContext) {
    // SAFETY: the helper only moves the metadata start within the headroom; pointers are
    // re-read below.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(arrival::META_LEN as i32)) } != 0 {
        return;
    }
    let meta = ctx.metadata();
    if meta + arrival::META_LEN > ctx.data() {
        return;
    }
    // SAFETY: [meta, meta + 16) lies before data (checked above), inside the metadata area;
    // bpf_ktime_get_ns has no preconditions.
    unsafe {
        *(meta as *mut u32) = arrival::META_MAGIC;
        *((meta + 4) as *mut u32) = 0;
        *((meta + 8) as *mut u64) = bpf_ktime_get_ns();
    }
}

/// TC ingress (tcx): sets the skb mark the XDP program left in the metadata, then lets every
/// later program and filter run.
#[classifier]
pub fn serveflow_mark(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    // SAFETY: skb is the program's context; data_meta and data are packet pointers the
    // verifier tracks, and the read below is bounds-checked against data.
    let (meta, data) = unsafe { ((*skb).data_meta as usize, (*skb).data as usize) };
    if meta + action::MARK_META_LEN <= data {
        // SAFETY: 8 bytes of metadata exist before data (checked above).
        let (magic, mark) = unsafe { (*(meta as *const u32), *((meta + 4) as *const u32)) };
        if magic == action::MARK_META_MAGIC {
            ctx.set_mark(mark);
            count(XdpCounter::TcMarked);
        }
    }
    TC_ACT_UNSPEC
}

/// Adds one packet of `len` bytes to the flow's entry, creating it on first sight; returns the
/// flow's packets so far (0 when the map refused the entry: the packet is steered regardless).
#[inline(always)]
fn track_flow(key: &FlowKey, len: u64) -> u64 {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(stats) = FLOWS.get_ptr_mut(key) {
        return bump(stats, now, len);
    }
    let fresh = FlowStats {
        first_seen_ns: now,
        last_seen_ns: now,
        packets: 1,
        bytes: len,
    };
    if FLOWS.insert(key, fresh, u64::from(BPF_NOEXIST)).is_ok() {
        return 1;
    }
    // Another CPU created the entry between our lookup and insert.
    match FLOWS.get_ptr_mut(key) {
        Some(stats) => bump(stats, now, len),
        None => {
            count(XdpCounter::FlowInsertFailed);
            0
        }
    }
}

#[inline(always)]
fn bump(stats: *mut FlowStats, now: u64, len: u64) -> u64 {
    // SAFETY: the pointer comes from a successful map lookup and stays valid for this program
    // run. Two CPUs updating one flow at once can lose an increment; flows are steered to one
    // queue by RSS, so this is rare and only affects these statistics, never the verdict path.
    unsafe {
        (*stats).packets += 1;
        (*stats).bytes += len;
        (*stats).last_seen_ns = now;
        (*stats).packets
    }
}

#[inline(always)]
fn count(slot: XdpCounter) {
    if let Some(value) = COUNTERS.get_ptr_mut(slot as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *value += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program with a reachable panic, so this is never called.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
