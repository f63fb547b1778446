//! Feature sets, chosen in config, computed from a flow's first N packets by one code path for
//! training and serving.
//!
//! - [`nprint`]: header bits of each of the first N packets (1024 per packet by default),
//!   encoded on demand from raw headers kept in [`headers`];
//! - [`stats`]: flow statistics, updated incrementally with no per-packet storage.
//!
//! A flow stores only what its feature sets need, so the cost of each set (CPU per packet,
//! bytes of state per flow, output per flow) can be measured apart: `serveflow extract
//! --profile`.

pub mod headers;
pub mod nprint;
pub mod stats;

use std::str::FromStr;

use crate::{
    flow::{Direction, FlowState},
    parse::Packet,
};
use headers::HeaderSnapshot;
use nprint::NprintOptions;
use stats::StatsState;

/// Which feature sets to compute, over how many packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureSpec {
    /// nPrint bits, with their options, if asked for.
    pub nprint: Option<NprintOptions>,
    /// Flow statistics.
    pub stats: bool,
    /// Packets per flow the features cover.
    pub packets: u32,
}

impl Default for FeatureSpec {
    fn default() -> Self {
        FeatureSpec {
            nprint: None,
            stats: true,
            packets: 5,
        }
    }
}

/// A feature spec that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("bad feature spec {spec:?}: {reason} (expected a comma list of: stats, nprint, nprint-ipv6, nprint-masked, payload:N)")]
pub struct SpecError {
    spec: String,
    reason: String,
}

impl FromStr for FeatureSpec {
    type Err = SpecError;

    /// `stats`, `nprint`, `nprint-ipv6` (adds IPv6 bits), `nprint-masked` (addresses and
    /// checksums as 0), `payload:N` (adds N payload bytes to nprint), comma-separated; `none`
    /// for no features.
    fn from_str(spec: &str) -> Result<Self, SpecError> {
        let err = |reason: String| SpecError {
            spec: spec.to_owned(),
            reason,
        };
        let mut out = FeatureSpec {
            nprint: None,
            stats: false,
            packets: FeatureSpec::default().packets,
        };
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item {
                "none" => {}
                "stats" => out.stats = true,
                "nprint" => {
                    out.nprint.get_or_insert_with(NprintOptions::default);
                }
                "nprint-ipv6" => out.nprint.get_or_insert_with(NprintOptions::default).ipv6 = true,
                "nprint-masked" => {
                    out.nprint.get_or_insert_with(NprintOptions::default).masked = true;
                }
                _ => match item.strip_prefix("payload:") {
                    Some(n) => {
                        let n: usize = n.parse().map_err(|_| {
                            err(format!("payload byte count {n:?} is not a number"))
                        })?;
                        if n > 1500 {
                            return Err(err(format!("payload:{n} is more than a packet holds")));
                        }
                        out.nprint
                            .get_or_insert_with(NprintOptions::default)
                            .payload_bytes = n;
                    }
                    None => return Err(err(format!("unknown feature set {item:?}"))),
                },
            }
        }
        Ok(out)
    }
}

/// The spec in `--features` syntax (packets not included), so it parses back to itself.
impl std::fmt::Display for FeatureSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if self.stats {
            parts.push("stats".into());
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
        if let Some(opts) = self.nprint {
            for i in 0..self.packets as usize {
                opts.names(i, &mut names);
            }
        }
        names
    }
}

/// Per-flow feature state: what the chosen sets need, nothing more.
#[derive(Clone, Debug)]
pub struct FeatureState {
    spec: FeatureSpec,
    stats: Option<StatsState>,
    headers: Vec<HeaderSnapshot>,
}

impl FeatureState {
    /// Appends the flow's feature values in [`FeatureSpec::names`] order.
    pub fn values(&self, out: &mut Vec<f32>) {
        let spec = self.spec;
        if let Some(stats) = &self.stats {
            stats.values(out);
        }
        if let Some(opts) = spec.nprint {
            out.reserve(opts.bits_per_packet() * spec.packets as usize);
            for i in 0..spec.packets as usize {
                nprint::encode_packet(self.headers.get(i), opts, out);
            }
        }
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
    }
}

impl FlowState for FeatureState {
    type Config = FeatureSpec;

    fn new(spec: &FeatureSpec) -> Self {
        FeatureState {
            spec: *spec,
            stats: spec.stats.then(StatsState::default),
            headers: Vec::new(),
        }
    }

    fn update(&mut self, ts_ns: u64, p: &Packet<'_>, dir: Direction) {
        let spec = self.spec;
        if let Some(stats) = &mut self.stats {
            stats.update(spec.packets, ts_ns, p, dir);
        }
        if let Some(opts) = spec.nprint {
            if self.headers.len() < spec.packets as usize {
                if self.headers.capacity() == 0 {
                    self.headers.reserve_exact(spec.packets as usize);
                }
                self.headers
                    .push(HeaderSnapshot::new(ts_ns, p, dir, opts.payload_bytes));
            }
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

    fn update(&mut self, ts_ns: u64, packet: &Packet<'_>, dir: Direction) {
        self.fast.update(ts_ns, packet, dir);
        self.slow.update(ts_ns, packet, dir);
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
        ] {
            let spec: FeatureSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
            assert_eq!(spec.to_string().parse::<FeatureSpec>().unwrap(), spec);
        }
        // Order and repeats do not matter.
        let spec: FeatureSpec = "payload:8, nprint-masked ,stats,stats".parse().unwrap();
        assert_eq!(spec.to_string(), "stats,nprint,nprint-masked,payload:8");
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (text, needle) in [
            ("stats,bogus", "unknown feature set \"bogus\""),
            ("payload:x", "not a number"),
            ("payload:9000", "more than a packet holds"),
        ] {
            let e = text.parse::<FeatureSpec>().unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
