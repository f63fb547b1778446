//! Reading a running instance's pinned maps (the same maps `bpftool map dump pinned ...`
//! shows) from any process, without touching the instance: `serveflow status`, the live
//! metrics and the status lines all read the kernel's side through here.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use serde::Serialize;
use serveflow_common::{FlowKey, FlowStats, XdpCounter, PIN_SCHEMA, STEER_PACKETS};

/// The pin directories of every instance under `bpffs` (one per interface), sorted; none when
/// nothing is pinned.
pub fn instances(bpffs: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(bpffs.join(PIN_SCHEMA)) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    dirs
}

/// One interface's live state.
#[derive(Debug, Serialize)]
pub struct InterfaceStatus {
    /// Interface.
    pub interface: String,
    /// Where its maps are pinned.
    pub pins: String,
    /// Per-outcome counters summed over CPUs.
    pub counters: BTreeMap<&'static str, u64>,
    /// Flows in the kernel flow map.
    pub flows: u64,
    /// Their packets.
    pub flow_packets: u64,
    /// Their bytes.
    pub flow_bytes: u64,
    /// Flows with a verdict in the kernel.
    pub decided_flows: u64,
    /// Packets per flow steered to userspace (0: all).
    pub steer_packets: u32,
    /// The per-flow maps' memory as the kernel accounts it.
    pub maps: Vec<MapMemory>,
    /// Their memory per flow slot (both maps hold every flow; LRU maps are allocated whole
    /// when created, so this is the cost of a flow whether the maps are empty or full).
    pub kernel_bytes_per_flow: f64,
}

/// One kernel map's size and memory: `max_entries` and `memlock` from its fdinfo, the figures
/// `bpftool map show` prints.
#[derive(Debug, Serialize)]
pub struct MapMemory {
    /// The map.
    pub name: &'static str,
    /// Entries it was created for.
    pub max_entries: u64,
    /// Bytes the kernel charges for it.
    pub memlock_bytes: u64,
}

/// The fdinfo figures of an open map; None where the kernel does not report them.
fn memory(name: &'static str, map: &MapData) -> Option<MapMemory> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let fd = map.fd().as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    let field = |key: &str| -> Option<u64> {
        info.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
    };
    Some(MapMemory {
        name,
        max_entries: field("max_entries:")?,
        memlock_bytes: field("memlock:")?,
    })
}

/// A pinned map that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PinnedError {
    /// The map is not pinned there, or bpf(2) refused to open it.
    #[error("opening pinned map {}: {source}", path.display())]
    Open {
        /// The pin.
        path: PathBuf,
        /// The kernel's answer.
        source: aya::maps::MapError,
    },
    /// The map is not of the type and layout this build expects.
    #[error("reading pinned map {name}: {source}")]
    Read {
        /// The map's name.
        name: &'static str,
        /// What went wrong.
        source: aya::maps::MapError,
    },
}

fn open(dir: &Path, name: &str) -> Result<MapData, PinnedError> {
    let path = dir.join(name);
    MapData::from_pin(&path).map_err(|source| PinnedError::Open { path, source })
}

fn read_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> PinnedError {
    move |source| PinnedError::Read { name, source }
}

/// Reads one interface's pinned maps.
pub fn read(dir: &Path) -> Result<InterfaceStatus, PinnedError> {
    let counters: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(open(dir, "counters")?))
            .map_err(read_err("counters"))?;
    let mut totals = BTreeMap::new();
    for slot in XdpCounter::ALL {
        let per_cpu = counters
            .get(&(slot as u32), 0)
            .map_err(read_err("counters"))?;
        totals.insert(slot.name(), per_cpu.iter().sum());
    }
    let flows_map = open(dir, "flows")?;
    let verdicts_map = open(dir, "verdicts")?;
    let maps: Vec<MapMemory> = [("flows", &flows_map), ("verdicts", &verdicts_map)]
        .into_iter()
        .filter_map(|(name, m)| memory(name, m))
        .collect();
    let slots = maps.first().map_or(0, |m| m.max_entries);
    let kernel_bytes_per_flow =
        maps.iter().map(|m| m.memlock_bytes).sum::<u64>() as f64 / slots.max(1) as f64;
    let flows: BpfHashMap<MapData, FlowKey, FlowStats> =
        BpfHashMap::try_from(Map::LruHashMap(flows_map)).map_err(read_err("flows"))?;
    let (mut n, mut packets, mut bytes) = (0, 0, 0);
    for entry in flows.iter() {
        let (_, s) = entry.map_err(read_err("flows"))?;
        n += 1;
        packets += s.packets;
        bytes += s.bytes;
    }
    let verdicts: BpfHashMap<MapData, FlowKey, u32> =
        BpfHashMap::try_from(Map::LruHashMap(verdicts_map)).map_err(read_err("verdicts"))?;
    let decided = verdicts.keys().filter(Result::is_ok).count() as u64;
    let steer: Array<MapData, u32> =
        Array::try_from(Map::Array(open(dir, "steer")?)).map_err(read_err("steer"))?;
    Ok(InterfaceStatus {
        interface: dir
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        pins: dir.display().to_string(),
        counters: totals,
        flows: n,
        flow_packets: packets,
        flow_bytes: bytes,
        decided_flows: decided,
        steer_packets: steer.get(&STEER_PACKETS, 0).map_err(read_err("steer"))?,
        maps,
        kernel_bytes_per_flow,
    })
}
