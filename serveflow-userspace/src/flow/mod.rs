//! The flow table: bidirectional 5-tuple flows with the initiator as `src`, ended by idle and
//! active timeouts, TCP FIN/RST, or eviction when the table is full.
//!
//! The same table serves live AF_XDP traffic and capture replay, so flow boundaries never
//! differ between training and serving. Time is the packets' own (capture or arrival
//! timestamps): idle flows are expired as time advances, oldest first, in O(1) each, because
//! the table is kept in least-recently-seen order. Every flow that enters the table leaves it
//! exactly once through the `on_end` callback, with the reason.

mod id;

use lru::LruCache;
use serveflow_common::{proto, FlowKey};

use crate::{parse::Packet, services::names};
pub use id::{ip, FlowId};

/// Flow-table settings. Defaults follow nfstream (idle 120 s, active 1800 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowConfig {
    /// A flow with no packet for this long ends (seconds).
    pub idle_timeout_s: u64,
    /// A flow older than this ends at its next packet, which starts a new flow (seconds).
    pub active_timeout_s: u64,
    /// Most flows held at once; the least recently seen is evicted beyond it.
    pub max_flows: usize,
    /// End TCP flows at their first FIN or RST (the packet itself still counts).
    pub end_on_fin_rst: bool,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            idle_timeout_s: 120,
            active_timeout_s: 1800,
            max_flows: 1 << 20,
            end_on_fin_rst: false,
        }
    }
}

/// Why a flow left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// No packet for the idle timeout.
    Idle,
    /// Older than the active timeout.
    Active,
    /// TCP FIN or RST seen.
    FinRst,
    /// Pushed out of a full table.
    Evicted,
    /// The input ended.
    Flush,
}

/// Direction of a packet relative to its flow's initiator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the initiator (`src`) to the responder.
    Forward,
    /// From the responder back to the initiator.
    Backward,
}

/// Per-flow state a feature extractor keeps; updated on every packet of the flow.
pub trait FlowState {
    /// What every new flow's state is made from (e.g. the feature spec).
    type Config;
    /// State for a new flow.
    fn new(config: &Self::Config) -> Self;
    /// Adds one packet; `server_name` is the flow's server name as known after it (the
    /// flow table reads names once, for every feature set).
    fn update(
        &mut self,
        ts_ns: u64,
        packet: &Packet<'_>,
        dir: Direction,
        server_name: Option<&str>,
    );
}

impl FlowState for () {
    type Config = ();
    fn new(_: &()) {}
    fn update(&mut self, _: u64, _: &Packet<'_>, _: Direction, _: Option<&str>) {}
}

/// One flow.
#[derive(Clone, Debug)]
pub struct Flow<S> {
    /// Normalised key.
    pub key: FlowKey,
    /// Initiator address (first packet's source).
    pub src: [u8; 16],
    /// Initiator port.
    pub sport: u16,
    /// Responder address.
    pub dst: [u8; 16],
    /// Responder port.
    pub dport: u16,
    /// 6 or 17.
    pub proto: u8,
    /// First packet's timestamp (ns).
    pub first_seen_ns: u64,
    /// Latest packet's timestamp (ns).
    pub last_seen_ns: u64,
    /// Packets, both directions.
    pub packets: u64,
    /// Bytes (captured frame lengths), both directions.
    pub bytes: u64,
    /// Packets from the initiator.
    pub fwd_packets: u64,
    /// Packets and bytes since the last periodic export (Traffic Refinery counters).
    pub interval: IntervalCounts,
    /// Server name the flow carried (TLS/QUIC SNI, HTTP Host, the DNS/mDNS/LLMNR name asked
    /// about or the DHCP client's host name, from the initiator's first payloads).
    pub server_name: Option<String>,
    /// Feature state.
    pub state: S,
    /// Whether the initiator is the key's lower endpoint.
    initiator_is_lo: bool,
    /// Initiator payloads left to look at for a server name.
    name_tries: u8,
}

impl<S> Flow<S> {
    /// The flow's identity in every output.
    pub fn id(&self) -> FlowId {
        FlowId::new(self.src, self.sport, self.dst, self.dport, self.proto)
    }
}

/// Per-direction packets and bytes over one export interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IntervalCounts {
    /// Packets from the initiator.
    pub fwd_packets: u64,
    /// Packets from the responder.
    pub bwd_packets: u64,
    /// Bytes from the initiator.
    pub fwd_bytes: u64,
    /// Bytes from the responder.
    pub bwd_bytes: u64,
}

impl IntervalCounts {
    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.fwd_packets + self.bwd_packets == 0
    }

    /// Adds another interval's counts.
    pub fn add(&mut self, o: &IntervalCounts) {
        self.fwd_packets += o.fwd_packets;
        self.bwd_packets += o.bwd_packets;
        self.fwd_bytes += o.fwd_bytes;
        self.bwd_bytes += o.bwd_bytes;
    }
}

/// Initiator payload packets searched for a server name (a ClientHello or request line comes
/// first; later ones would only cost time).
const NAME_TRIES: u8 = 2;

/// Counters of the table's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FlowCounters {
    /// Flows started.
    pub started: u64,
    /// Ended by idle timeout.
    pub idle: u64,
    /// Ended by active timeout.
    pub active: u64,
    /// Ended by FIN/RST.
    pub fin_rst: u64,
    /// Evicted from a full table.
    pub evicted: u64,
    /// Ended because the input ended.
    pub flushed: u64,
}

/// The hasher of the flow table: foldhash, several times cheaper than SipHash on the 40-byte
/// key. Flooding resistance comes from its per-table random seed and from `max_flows`.
type FlowHasher = foldhash::fast::RandomState;

/// The table.
pub struct FlowTable<S: FlowState> {
    flows: LruCache<FlowKey, Flow<S>, FlowHasher>,
    state_config: S::Config,
    config: FlowConfig,
    idle_ns: u64,
    active_ns: u64,
    now_ns: u64,
    counters: FlowCounters,
}

impl<S: FlowState> FlowTable<S> {
    /// An empty table whose flows' states are made from `state_config`.
    pub fn new(config: FlowConfig, state_config: S::Config) -> Self {
        FlowTable {
            state_config,
            // The table grows on demand up to max_flows; eviction is ours, not the cache's.
            flows: LruCache::unbounded_with_hasher(FlowHasher::default()),
            idle_ns: config.idle_timeout_s.saturating_mul(1_000_000_000),
            active_ns: config.active_timeout_s.saturating_mul(1_000_000_000),
            config,
            now_ns: 0,
            counters: FlowCounters::default(),
        }
    }

    /// Flows currently held.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no flow is held.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The table's counters.
    pub fn counters(&self) -> FlowCounters {
        self.counters
    }

    fn count_end(&mut self, reason: EndReason) {
        let c = &mut self.counters;
        match reason {
            EndReason::Idle => c.idle += 1,
            EndReason::Active => c.active += 1,
            EndReason::FinRst => c.fin_rst += 1,
            EndReason::Evicted => c.evicted += 1,
            EndReason::Flush => c.flushed += 1,
        }
    }

    /// Ends every flow idle at `ts_ns`, least recently seen first.
    pub fn expire(&mut self, ts_ns: u64, on_end: &mut impl FnMut(Flow<S>, EndReason)) {
        // Time never runs backwards for the table (some captures' timestamps do).
        self.now_ns = self.now_ns.max(ts_ns);
        while let Some((_, oldest)) = self.flows.peek_lru() {
            if self.now_ns.saturating_sub(oldest.last_seen_ns) < self.idle_ns {
                break;
            }
            if let Some((_, flow)) = self.flows.pop_lru() {
                self.count_end(EndReason::Idle);
                on_end(flow, EndReason::Idle);
            }
        }
    }

    /// Adds a packet at `ts_ns`: expires idle flows, finds or starts the packet's flow,
    /// updates it, and ends it if the packet closes it. Returns the packet's direction.
    pub fn observe(
        &mut self,
        ts_ns: u64,
        packet: &Packet<'_>,
        on_end: &mut impl FnMut(Flow<S>, EndReason),
    ) -> Direction {
        self.observe_with(ts_ns, packet, on_end, |_, _| {})
    }

    /// A flow by key, without touching its recency.
    pub fn peek_mut(&mut self, key: &FlowKey) -> Option<&mut Flow<S>> {
        self.flows.peek_mut(key)
    }

    /// [`Self::observe`], calling `on_packet` with the packet's flow once it is updated and
    /// before a closing FIN/RST ends it (the serving pipeline decides flows there).
    pub fn observe_with(
        &mut self,
        ts_ns: u64,
        packet: &Packet<'_>,
        on_end: &mut impl FnMut(Flow<S>, EndReason),
        on_packet: impl FnOnce(&mut Flow<S>, Direction),
    ) -> Direction {
        self.expire(ts_ns, on_end);
        let now = self.now_ns;
        let (key, reverse) = packet.flow_key();
        // One hash-table lookup for a packet of a live flow (the common case): `get_mut`
        // finds it and moves it to the front of the recency list, as this packet does.
        let active_ns = self.active_ns;
        let flow = match self.flows.get_mut(&key) {
            Some(flow) if now.saturating_sub(flow.first_seen_ns) < active_ns => flow,
            found => {
                // A new flow, or one past its active timeout, which ends and starts anew.
                let expired = found.is_some();
                if expired {
                    if let Some(flow) = self.flows.pop(&key) {
                        self.count_end(EndReason::Active);
                        on_end(flow, EndReason::Active);
                    }
                }
                if self.flows.len() >= self.config.max_flows.max(1) {
                    if let Some((_, victim)) = self.flows.pop_lru() {
                        self.count_end(EndReason::Evicted);
                        on_end(victim, EndReason::Evicted);
                    }
                }
                self.counters.started += 1;
                self.flows.get_or_insert_mut(key, || Flow {
                    key,
                    src: packet.src,
                    sport: packet.sport,
                    dst: packet.dst,
                    dport: packet.dport,
                    proto: packet.proto,
                    first_seen_ns: now,
                    last_seen_ns: now,
                    packets: 0,
                    bytes: 0,
                    fwd_packets: 0,
                    interval: IntervalCounts::default(),
                    server_name: None,
                    state: S::new(&self.state_config),
                    initiator_is_lo: !reverse,
                    name_tries: NAME_TRIES,
                })
            }
        };
        // `reverse` says the packet goes hi -> lo; forward means from the initiator.
        let dir = if reverse != flow.initiator_is_lo {
            Direction::Forward
        } else {
            Direction::Backward
        };
        flow.last_seen_ns = now;
        flow.packets += 1;
        flow.bytes += packet.frame.len() as u64;
        let len = packet.frame.len() as u64;
        match dir {
            Direction::Forward => {
                flow.interval.fwd_packets += 1;
                flow.interval.fwd_bytes += len;
            }
            Direction::Backward => {
                flow.interval.bwd_packets += 1;
                flow.interval.bwd_bytes += len;
            }
        }
        if dir == Direction::Forward {
            flow.fwd_packets += 1;
            if flow.name_tries > 0 && packet.payload_len() > 0 {
                flow.name_tries -= 1;
                let payload = &packet.frame[packet.payload_offset()..packet.ip_end()];
                flow.server_name =
                    names::server_name(packet.proto, packet.sport, packet.dport, payload);
                if flow.server_name.is_some() {
                    flow.name_tries = 0;
                }
            }
        }
        flow.state
            .update(now, packet, dir, flow.server_name.as_deref());
        on_packet(flow, dir);
        let closes = self.config.end_on_fin_rst
            && packet.proto == proto::TCP
            && packet
                .tcp_flags()
                .is_some_and(|f| f & (TCP_FIN | TCP_RST) != 0);
        if closes {
            if let Some(flow) = self.flows.pop(&key) {
                self.count_end(EndReason::FinRst);
                on_end(flow, EndReason::FinRst);
            }
        }
        dir
    }

    /// Hands every flow with traffic since the last call to `export` with its interval
    /// counts, and starts a new interval (periodic counters, Traffic Refinery style).
    pub fn export_intervals(&mut self, mut export: impl FnMut(&Flow<S>, IntervalCounts)) {
        for (_, flow) in self.flows.iter_mut() {
            if !flow.interval.is_empty() {
                let counts = std::mem::take(&mut flow.interval);
                export(flow, counts);
            }
        }
    }

    /// Ends every remaining flow (input finished), oldest first.
    pub fn flush(&mut self, on_end: &mut impl FnMut(Flow<S>, EndReason)) {
        while let Some((_, flow)) = self.flows.pop_lru() {
            self.count_end(EndReason::Flush);
            on_end(flow, EndReason::Flush);
        }
    }
}

const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;
    use crate::parse::parse_ethernet;
    use etherparse::PacketBuilder;

    fn frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, fin: bool) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4(src, dst, 64)
            .tcp(sport, dport, 1, 100);
        if fin {
            b = b.fin();
        }
        let mut out = Vec::new();
        b.write(&mut out, b"").unwrap();
        out
    }

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [10, 0, 0, 2];
    const S: u64 = 1_000_000_000;

    fn run(config: FlowConfig, packets: &[(u64, Vec<u8>)]) -> Vec<(Flow<()>, EndReason)> {
        let mut table: FlowTable<()> = FlowTable::new(config, ());
        let mut ended = Vec::new();
        let mut on_end = |f, r| ended.push((f, r));
        for (ts, f) in packets {
            table.observe(*ts, &parse_ethernet(f).unwrap(), &mut on_end);
        }
        table.flush(&mut on_end);
        ended
    }

    #[test]
    fn initiator_is_src_and_directions_are_counted() {
        let ended = run(
            FlowConfig::default(),
            &[
                (S, frame(B, 80, A, 5000, false)),
                (2 * S, frame(A, 5000, B, 80, false)),
            ],
        );
        assert_eq!(ended.len(), 1);
        let (flow, reason) = &ended[0];
        assert_eq!(*reason, EndReason::Flush);
        assert_eq!(
            (flow.sport, flow.dport),
            (80, 5000),
            "first packet's source is src"
        );
        assert_eq!((flow.packets, flow.fwd_packets), (2, 1));
        assert_eq!((flow.first_seen_ns, flow.last_seen_ns), (S, 2 * S));
    }

    #[test]
    fn idle_and_active_timeouts_split_flows() {
        let config = FlowConfig {
            idle_timeout_s: 10,
            active_timeout_s: 25,
            ..FlowConfig::default()
        };
        let p = |t| (t * S, frame(A, 1, B, 2, false));
        // 0, 5 | 16 (idle gap 11 >= 10: new flow), 20, 29, 38 | 43 (27 s after 16 >= 25)
        let ended = run(config, &[p(0), p(5), p(16), p(20), p(29), p(38), p(43)]);
        let reasons: Vec<_> = ended.iter().map(|(f, r)| (*r, f.packets)).collect();
        assert_eq!(
            reasons,
            vec![
                (EndReason::Idle, 2),
                (EndReason::Active, 4),
                (EndReason::Flush, 1)
            ]
        );
    }

    #[test]
    fn fin_ends_when_asked_and_full_table_evicts_oldest() {
        let config = FlowConfig {
            end_on_fin_rst: true,
            max_flows: 2,
            ..FlowConfig::default()
        };
        let ended = run(
            config,
            &[
                (S, frame(A, 1, B, 2, false)),
                (S, frame(A, 1, B, 2, true)),
                (2 * S, frame(A, 3, B, 2, false)),
                (3 * S, frame(A, 4, B, 2, false)),
                (4 * S, frame(A, 5, B, 2, false)),
            ],
        );
        let reasons: Vec<_> = ended.iter().map(|(f, r)| (*r, f.sport)).collect();
        assert_eq!(
            reasons,
            vec![
                (EndReason::FinRst, 1),
                (EndReason::Evicted, 3),
                (EndReason::Flush, 4),
                (EndReason::Flush, 5)
            ]
        );
    }
}
