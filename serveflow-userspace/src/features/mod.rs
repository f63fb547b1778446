//! Feature sets, chosen in config, computed from a flow's first N packets by one code path for
//! training and serving.
//!
//! - `nprint`: header bits of each of the first N packets (1024 per packet by default),
//!   encoded on demand from raw headers kept in `headers`;
//! - `stats`: flow statistics, updated incrementally with no per-packet storage;
//! - `ports`: transport, server and client ports and their classes;
//! - `payload`: the first payload bytes of each direction, as numbers;
//! - `name`: the server name the flow carries, as hashed 3-grams and tokens;
//! - `sequence`: each packet's signed size and gap.
//!
//! A flow stores only what its feature sets need, so the cost of each set (CPU per packet,
//! bytes of state per flow, output per flow) can be measured apart: `serveflow extract
//! --profile`. A stage may also see only the packets within a time `horizon_ns` of the flow's
//! first: what the stage will have when its wait runs out, so training sees what serving
//! will.

pub(crate) mod headers;
pub(crate) mod name;
pub(crate) mod nprint;
pub(crate) mod payload;
pub mod ports;
pub(crate) mod sequence;
pub(crate) mod stats;

use std::str::FromStr;

use crate::{
    flow::{Direction, FlowState},
    parse::Packet,
};
use headers::HeaderSnapshot;
use nprint::NprintOptions;
use payload::PayloadBytes;
use ports::PortState;
use sequence::Sequence;
use stats::StatsState;

/// Which feature sets to compute, over how many packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureSpec {
    /// nPrint bits, with their options, if asked for.
    pub nprint: Option<NprintOptions>,
    /// Flow statistics.
    pub stats: bool,
    /// Port features.
    pub ports: bool,
    /// Signed size and gap of each packet.
    pub seq: bool,
    /// First payload bytes per direction as values (0: none).
    pub bytes: u16,
    /// Hash buckets of the server-name features (0: none).
    pub name: u16,
    /// Packets per flow the features cover.
    pub packets: u32,
    /// Only packets within this many ns of the flow's first count (`u64::MAX`: all). Not part
    /// of the `--features` syntax: set from the serving waits.
    pub horizon_ns: u64,
}

impl Default for FeatureSpec {
    fn default() -> Self {
        FeatureSpec {
            nprint: None,
            stats: true,
            ports: false,
            seq: false,
            bytes: 0,
            name: 0,
            packets: 5,
            horizon_ns: u64::MAX,
        }
    }
}

/// A feature spec that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("bad feature spec {spec:?}: {reason} (expected a comma list of: stats, ports, seq, bytes:N, name:B, nprint, nprint-ipv6, nprint-masked, payload:N)")]
pub struct SpecError {
    spec: String,
    reason: String,
}

impl FromStr for FeatureSpec {
    type Err = SpecError;

    /// `stats`, `ports`, `seq`, `bytes:N` (first N payload bytes per direction), `name:B`
    /// (server name in B hash buckets), `nprint`, `nprint-ipv6` (adds IPv6 bits),
    /// `nprint-masked` (addresses and checksums as 0), `payload:N` (adds N payload bytes to
    /// nprint), comma-separated; `none` for no features.
    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let err = |reason: String| SpecError {
            spec: spec.to_owned(),
            reason,
        };
        let number = |item: &str, n: &str, max: usize| -> Result<usize, SpecError> {
            let v: usize = n
                .parse()
                .map_err(|_| err(format!("{item}: {n:?} is not a number")))?;
            if v == 0 || v > max {
                return Err(err(format!("{item}: must be 1..={max}")));
            }
            Ok(v)
        };
        let mut out = FeatureSpec {
            stats: false,
            ..FeatureSpec::default()
        };
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item {
                "none" => {}
                "stats" => out.stats = true,
                "ports" => out.ports = true,
                "seq" => out.seq = true,
                "nprint" => {
                    out.nprint.get_or_insert_with(NprintOptions::default);
                }
                "nprint-ipv6" => out.nprint.get_or_insert_with(NprintOptions::default).ipv6 = true,
                "nprint-masked" => {
                    out.nprint.get_or_insert_with(NprintOptions::default).masked = true;
                }
                _ => {
                    if let Some(n) = item.strip_prefix("payload:") {
                        let n: usize = n.parse().map_err(|_| {
                            err(format!("payload byte count {n:?} is not a number"))
                        })?;
                        if n > 1500 {
                            return Err(err(format!("payload:{n} is more than a packet holds")));
                        }
                        out.nprint
                            .get_or_insert_with(NprintOptions::default)
                            .payload_bytes = n;
                    } else if let Some(n) = item.strip_prefix("bytes:") {
                        out.bytes = number("bytes", n, payload::MAX_BYTES)? as u16;
                    } else if let Some(n) = item.strip_prefix("name:") {
                        out.name = number("name", n, name::MAX_BUCKETS)? as u16;
                    } else {
                        return Err(err(format!("unknown feature set {item:?}")));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The spec in `--features` syntax (packets and horizon not included), so it parses back to
/// itself.
impl std::fmt::Display for FeatureSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if self.stats {
            parts.push("stats".into());
        }
        if self.ports {
            parts.push("ports".into());
        }
        if self.seq {
            parts.push("seq".into());
        }
        if self.bytes > 0 {
            parts.push(format!("bytes:{}", self.bytes));
        }
        if self.name > 0 {
            parts.push(format!("name:{}", self.name));
        }
        if let Some(n) = self.nprint {
            parts.push("nprint".into());
            if n.ipv6 {
                parts.push("nprint-ipv6".into());
            }
            if n.masked {
                parts.push("nprint-masked".into());
            }
            if n.payload_bytes > 0 {
                parts.push(format!("payload:{}", n.payload_bytes));
            }
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

impl FeatureSpec {
    /// Feature names in row order.
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.stats {
            names.extend(stats::NAMES.iter().map(|s| (*s).to_owned()));
        }
        if self.ports {
            names.extend(ports::NAMES.iter().map(|s| (*s).to_owned()));
        }
        if self.seq {
            sequence::names(self.packets as usize, &mut names);
        }
        if self.bytes > 0 {
            payload::names(usize::from(self.bytes), &mut names);
        }
        if self.name > 0 {
            name::names(usize::from(self.name), &mut names);
        }
        if let Some(opts) = self.nprint {
            for i in 0..self.packets as usize {
                opts.names(i, &mut names);
            }
        }
        names
    }

    /// Values per flow ([`Self::names`]'s length, without building the names).
    pub fn width(&self) -> usize {
        let packets = self.packets as usize;
        usize::from(self.stats) * stats::NAMES.len()
            + usize::from(self.ports) * ports::NAMES.len()
            + usize::from(self.seq) * 2 * packets
            + 2 * usize::from(self.bytes)
            + if self.name > 0 {
                name::width(usize::from(self.name))
            } else {
                0
            }
            + self.nprint.map_or(0, |o| o.bits_per_packet() * packets)
    }

    /// An upper bound of the memory one flow's feature state takes (bytes), for sizing flow
    /// tables against the machine's memory before a run.
    pub fn state_bytes_bound(&self) -> usize {
        let packets = self.packets as usize;
        std::mem::size_of::<FeatureState>()
            + self.nprint.map_or(0, |_| {
                packets
                    * (std::mem::size_of::<HeaderSnapshot>()
                        + headers::IPV4_MAX.max(headers::IPV6_LEN)
                        + headers::TCP_MAX)
            })
            + usize::from(self.seq) * packets * 16
            + if self.bytes > 0 {
                32 + 2 * usize::from(self.bytes)
            } else {
                0
            }
            + if self.name > 0 { 256 } else { 0 }
    }

    /// The same features seen only within `horizon_ns` of the first packet.
    pub fn within(self, horizon_ns: u64) -> Self {
        FeatureSpec { horizon_ns, ..self }
    }
}

/// Per-flow feature state: what the chosen sets need, nothing more.
#[derive(Clone, Debug)]
pub struct FeatureState {
    spec: FeatureSpec,
    /// Packets taken so far.
    seen: u32,
    /// The first packet's time; packets past `first_ts_ns + horizon` are not taken.
    first_ts_ns: u64,
    /// A packet past the horizon came: nothing later is taken either.
    closed: bool,
    stats: Option<StatsState>,
    headers: Vec<HeaderSnapshot>,
    ports: Option<PortState>,
    sequence: Option<Sequence>,
    bytes: Option<Box<PayloadBytes>>,
    name: Option<Box<str>>,
}

impl FeatureState {
    /// Appends the flow's feature values in [`FeatureSpec::names`] order.
    pub fn values(&self, out: &mut Vec<f32>) {
        let spec = self.spec;
        if let Some(stats) = &self.stats {
            stats.values(out);
        }
        if spec.ports {
            match &self.ports {
                Some(p) => p.values(out),
                None => ports::absent(out),
            }
        }
        if let Some(seq) = &self.sequence {
            seq.values(spec.packets as usize, out);
        }
        if spec.bytes > 0 {
            let n = usize::from(spec.bytes);
            match &self.bytes {
                Some(b) => b.values(n, out),
                None => PayloadBytes::default().values(n, out),
            }
        }
        if spec.name > 0 {
            name::values(self.name.as_deref(), usize::from(spec.name), out);
        }
        if let Some(opts) = spec.nprint {
            out.reserve(opts.bits_per_packet() * spec.packets as usize);
            for i in 0..spec.packets as usize {
                nprint::encode_packet(self.headers.get(i), opts, out);
            }
        }
    }

    /// Packets the features took (at most the spec's count, within its horizon).
    pub fn packets_seen(&self) -> u32 {
        self.seen
    }

    /// Bytes this flow's feature state occupies (inline + heap), for the cost report.
    pub fn state_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.headers.capacity() * std::mem::size_of::<HeaderSnapshot>()
            + self
                .headers
                .iter()
                .map(HeaderSnapshot::heap_bytes)
                .sum::<usize>()
            + self.sequence.as_ref().map_or(0, Sequence::heap_bytes)
            + self
                .bytes
                .as_ref()
                .map_or(0, |b| std::mem::size_of::<PayloadBytes>() + b.heap_bytes())
            + self.name.as_ref().map_or(0, |n| n.len())
    }
}

impl FlowState for FeatureState {
    type Config = FeatureSpec;

    fn new(spec: &FeatureSpec) -> Self {
        FeatureState {
            spec: *spec,
            seen: 0,
            first_ts_ns: 0,
            closed: false,
            stats: spec.stats.then(StatsState::default),
            headers: Vec::new(),
            ports: None,
            sequence: spec.seq.then(Sequence::default),
            bytes: None,
            name: None,
        }
    }

    fn update(&mut self, ts_ns: u64, p: &Packet<'_>, dir: Direction, name: Option<&str>) {
        let spec = self.spec;
        if self.closed || self.seen >= spec.packets {
            return;
        }
        if self.seen == 0 {
            self.first_ts_ns = ts_ns;
        } else if ts_ns.saturating_sub(self.first_ts_ns) > spec.horizon_ns {
            self.closed = true;
            return;
        }
        self.seen += 1;
        if let Some(stats) = &mut self.stats {
            stats.update(spec.packets, ts_ns, p, dir);
        }
        if spec.ports && self.ports.is_none() {
            // The first packet's source is the initiator.
            let (initiator, responder) = match dir {
                Direction::Forward => (p.sport, p.dport),
                Direction::Backward => (p.dport, p.sport),
            };
            self.ports = Some(PortState {
                proto: p.proto,
                initiator,
                responder,
            });
        }
        if let Some(seq) = &mut self.sequence {
            seq.update(ts_ns, p.frame.len(), dir);
        }
        if spec.bytes > 0 {
            let payload = p.frame.get(p.payload_offset()..p.ip_end()).unwrap_or(&[]);
            self.bytes.get_or_insert_with(Box::default).update(
                usize::from(spec.bytes),
                payload,
                dir,
            );
        }
        if spec.name > 0 && self.name.is_none() {
            self.name = name.map(Box::from);
        }
        if let Some(opts) = spec.nprint {
            if self.headers.capacity() == 0 {
                self.headers.reserve_exact(spec.packets as usize);
            }
            self.headers
                .push(HeaderSnapshot::new(p, opts.payload_bytes));
        }
    }
}

/// The fast and the slow stage's features of one flow, side by side: what the trainer
/// learns from and what the serving pipeline feeds the two models, from one packet pass.
pub struct StagePair {
    /// Fast-stage features.
    pub fast: FeatureState,
    /// Slow-stage features.
    pub slow: FeatureState,
}

impl FlowState for StagePair {
    type Config = (FeatureSpec, FeatureSpec);

    fn new(config: &Self::Config) -> Self {
        StagePair {
            fast: FeatureState::new(&config.0),
            slow: FeatureState::new(&config.1),
        }
    }

    fn update(&mut self, ts_ns: u64, packet: &Packet<'_>, dir: Direction, name: Option<&str>) {
        self.fast.update(ts_ns, packet, dir, name);
        self.slow.update(ts_ns, packet, dir, name);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;

    #[test]
    fn specs_print_back_to_themselves() {
        for text in [
            "stats",
            "nprint",
            "none",
            "stats,nprint,nprint-ipv6,nprint-masked,payload:64",
            "nprint,payload:16",
            "stats,ports,seq,bytes:16,name:64,nprint,nprint-masked",
            "name:8",
        ] {
            let spec: FeatureSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
            assert_eq!(spec.to_string().parse::<FeatureSpec>().unwrap(), spec);
        }
        // Order and repeats do not matter.
        let spec: FeatureSpec = "payload:8, nprint-masked ,stats,stats".parse().unwrap();
        assert_eq!(spec.to_string(), "stats,nprint,nprint-masked,payload:8");
    }

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(sport, dport)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    /// A stage sees only its packets within its horizon, the name only if one of those
    /// packets carried it, and the ports of the first packet.
    #[test]
    fn horizon_packets_names_and_ports() {
        let spec = FeatureSpec {
            packets: 4,
            horizon_ns: 15_000_000,
            ..("stats,ports,seq,bytes:2,name:4"
                .parse::<FeatureSpec>()
                .unwrap())
        };
        let frames = [
            udp(5000, 53, b"ab"),
            udp(53, 5000, b"cd"),
            udp(5000, 53, b"ef"),
        ];
        let mut state = FeatureState::new(&spec);
        let times = [0, 10_000_000, 30_000_000];
        let dirs = [Direction::Forward, Direction::Backward, Direction::Forward];
        let names = [None, None, Some("late.example")];
        for ((f, t), (d, n)) in frames.iter().zip(times).zip(dirs.iter().zip(names)) {
            let p = crate::parse::parse_ethernet(f).unwrap();
            state.update(t, &p, *d, n);
        }
        assert_eq!(state.packets_seen(), 2, "the third packet came after 15 ms");
        let mut v = Vec::new();
        state.values(&mut v);
        assert_eq!(v.len(), spec.width());
        let names = spec.names();
        let at = |n: &str| v[names.iter().position(|x| x == n).unwrap()];
        assert_eq!(at("st_packets"), 2.0);
        assert_eq!(
            (at("pt_server"), at("pt_client"), at("pt_proto")),
            (53.0, 5000.0, 17.0)
        );
        assert_eq!(
            (at("by_fwd_0"), at("by_bwd_1")),
            (f32::from(b'a'), f32::from(b'd'))
        );
        assert_eq!(
            (at("sq1_size"), at("sq1_iat_ms"), at("sq2_iat_ms")),
            (-44.0, 10.0, -1.0)
        );
        assert_eq!(
            at("nm_present"),
            -1.0,
            "the name came too late for this stage"
        );
        let mut named = FeatureState::new(&spec);
        let p = crate::parse::parse_ethernet(&frames[0]).unwrap();
        named.update(0, &p, Direction::Forward, Some("a.example"));
        let mut v = Vec::new();
        named.values(&mut v);
        assert_eq!(
            v[spec.names().iter().position(|x| x == "nm_present").unwrap()],
            1.0
        );
    }

    #[test]
    fn widths_equal_the_names() {
        for text in [
            "stats",
            "stats,ports,seq,bytes:16,name:64,nprint,nprint-masked,payload:8",
            "none",
        ] {
            for packets in [1, 4] {
                let spec = FeatureSpec {
                    packets,
                    ..text.parse::<FeatureSpec>().unwrap()
                };
                assert_eq!(spec.width(), spec.names().len(), "{text} x{packets}");
            }
        }
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (text, needle) in [
            ("stats,bogus", "unknown feature set \"bogus\""),
            ("payload:x", "not a number"),
            ("payload:9000", "more than a packet holds"),
            ("bytes:0", "must be 1..=64"),
            ("name:x", "not a number"),
            ("name:5000", "must be 1..=1024"),
        ] {
            let e = text.parse::<FeatureSpec>().unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
