//! Flow statistics over a flow's first N packets, updated incrementally (no per-packet
//! storage): sizes, directions, inter-arrival times, TCP flags and windows, TTL/hop limit,
//! ports and payload sizes.

use crate::{flow::Direction, parse::Packet};

/// Running sums for a mean and standard deviation (Welford).
#[derive(Clone, Copy, Debug, Default)]
struct Moments {
    n: u32,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Moments {
    fn add(&mut self, x: f64) {
        self.n += 1;
        if self.n == 1 {
            self.min = x;
            self.max = x;
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        let delta = x - self.mean;
        self.mean += delta / f64::from(self.n);
        self.m2 += delta * (x - self.mean);
    }

    fn std(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            (self.m2 / f64::from(self.n)).sqrt()
        }
    }
}

/// Statistics state of one flow.
#[derive(Clone, Debug, Default)]
pub struct StatsState {
    seen: u32,
    fwd: u32,
    sizes: Moments,
    first_size: u32,
    fwd_bytes: u64,
    bwd_bytes: u64,
    iat_ms: Moments,
    first_ts_ns: u64,
    last_ts_ns: u64,
    flags: [u32; 6],
    fwd_window: Option<u16>,
    bwd_window: Option<u16>,
    fwd_ttl: Option<u8>,
    bwd_ttl: Option<u8>,
    fwd_payload: u64,
    bwd_payload: u64,
    first_payload: Option<u32>,
}

/// Names of the statistics, in output order.
pub const NAMES: [&str; 29] = [
    "st_packets",
    "st_fwd_packets",
    "st_bwd_packets",
    "st_size_first",
    "st_size_min",
    "st_size_max",
    "st_size_mean",
    "st_size_std",
    "st_fwd_bytes",
    "st_bwd_bytes",
    "st_iat_min_ms",
    "st_iat_max_ms",
    "st_iat_mean_ms",
    "st_iat_std_ms",
    "st_duration_ms",
    "st_syn",
    "st_ack",
    "st_fin",
    "st_rst",
    "st_psh",
    "st_urg",
    "st_fwd_window",
    "st_bwd_window",
    "st_fwd_ttl",
    "st_bwd_ttl",
    "st_fwd_payload",
    "st_bwd_payload",
    "st_first_payload",
    "st_payload_ratio",
];

/// TCP flag bits counted, in `flags` order: SYN, ACK, FIN, RST, PSH, URG.
const FLAG_BITS: [u8; 6] = [0x02, 0x10, 0x01, 0x04, 0x08, 0x20];

impl StatsState {
    /// Adds a packet if the flow has seen fewer than `limit` packets.
    pub fn update(&mut self, limit: u32, ts_ns: u64, p: &Packet<'_>, dir: Direction) {
        if self.seen >= limit {
            return;
        }
        self.seen += 1;
        let size = p.frame.len() as u32;
        let fwd = dir == Direction::Forward;
        if self.seen == 1 {
            self.first_size = size;
            self.first_ts_ns = ts_ns;
        } else {
            self.iat_ms
                .add(ts_ns.saturating_sub(self.last_ts_ns) as f64 / 1e6);
        }
        self.last_ts_ns = ts_ns;
        self.sizes.add(f64::from(size));
        let payload = p.payload_len() as u64;
        if fwd {
            self.fwd += 1;
            self.fwd_bytes += u64::from(size);
            self.fwd_payload += payload;
        } else {
            self.bwd_bytes += u64::from(size);
            self.bwd_payload += payload;
        }
        if self.first_payload.is_none() && payload > 0 {
            self.first_payload = Some(payload as u32);
        }
        if let Some(flags) = p.tcp_flags() {
            for (count, bit) in self.flags.iter_mut().zip(FLAG_BITS) {
                *count += u32::from(flags & bit != 0);
            }
            let window = p.tcp_window();
            let slot = if fwd {
                &mut self.fwd_window
            } else {
                &mut self.bwd_window
            };
            if slot.is_none() {
                *slot = window;
            }
        }
        let ttl = p.ttl();
        let slot = if fwd {
            &mut self.fwd_ttl
        } else {
            &mut self.bwd_ttl
        };
        if slot.is_none() {
            *slot = ttl;
        }
    }

    /// The statistics in [`NAMES`] order; -1 for values never seen (e.g. no backward packet).
    pub fn values(&self, out: &mut Vec<f32>) {
        let opt = |v: Option<f64>| v.map_or(-1.0, |v| v as f32);
        let n = self.seen;
        let iat = (self.iat_ms.n > 0).then_some(self.iat_ms);
        out.extend_from_slice(&[
            n as f32,
            self.fwd as f32,
            (n - self.fwd) as f32,
            self.first_size as f32,
            self.sizes.min as f32,
            self.sizes.max as f32,
            self.sizes.mean as f32,
            self.sizes.std() as f32,
            self.fwd_bytes as f32,
            self.bwd_bytes as f32,
            opt(iat.map(|m| m.min)),
            opt(iat.map(|m| m.max)),
            opt(iat.map(|m| m.mean)),
            opt(iat.map(|m| m.std())),
            (self.last_ts_ns.saturating_sub(self.first_ts_ns)) as f32 / 1e6,
        ]);
        out.extend(self.flags.iter().map(|c| *c as f32));
        out.extend_from_slice(&[
            opt(self.fwd_window.map(f64::from)),
            opt(self.bwd_window.map(f64::from)),
            opt(self.fwd_ttl.map(f64::from)),
            opt(self.bwd_ttl.map(f64::from)),
            self.fwd_payload as f32,
            self.bwd_payload as f32,
            opt(self.first_payload.map(f64::from)),
            (self.fwd_payload as f64 / (self.fwd_payload + self.bwd_payload).max(1) as f64) as f32,
        ]);
    }
}
