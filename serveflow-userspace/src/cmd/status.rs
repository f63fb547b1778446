//! `serveflow status`: live counters of running instances, read from their pinned maps (the
//! same maps `bpftool map dump pinned ...` shows), without touching the running process.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use serde::Serialize;
use serveflow_common::{FlowKey, FlowStats, XdpCounter, PIN_SCHEMA, STEER_PACKETS};

/// Options of `serveflow status`.
#[derive(Clone, Debug)]
pub struct StatusOptions {
    /// Interface; every pinned one when absent.
    pub interface: Option<String>,
    /// Print JSON.
    pub json: bool,
    /// bpffs mount point.
    pub bpffs: PathBuf,
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
}

fn open(dir: &Path, name: &str) -> anyhow::Result<MapData> {
    let path = dir.join(name);
    MapData::from_pin(&path).with_context(|| format!("opening pinned map {}", path.display()))
}

/// Reads one interface's pinned maps.
pub fn read(dir: &Path) -> anyhow::Result<InterfaceStatus> {
    let counters: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(open(dir, "counters")?))?;
    let mut totals = BTreeMap::new();
    for slot in XdpCounter::ALL {
        let per_cpu = counters.get(&(slot as u32), 0)?;
        totals.insert(slot.name(), per_cpu.iter().sum());
    }
    let flows: BpfHashMap<MapData, FlowKey, FlowStats> =
        BpfHashMap::try_from(Map::LruHashMap(open(dir, "flows")?))?;
    let (mut n, mut packets, mut bytes) = (0, 0, 0);
    for entry in flows.iter() {
        let (_, s) = entry?;
        n += 1;
        packets += s.packets;
        bytes += s.bytes;
    }
    let verdicts: BpfHashMap<MapData, FlowKey, u32> =
        BpfHashMap::try_from(Map::LruHashMap(open(dir, "verdicts")?))?;
    let decided = verdicts.keys().filter(Result::is_ok).count() as u64;
    let steer: Array<MapData, u32> = Array::try_from(Map::Array(open(dir, "steer")?))?;
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
        steer_packets: steer.get(&STEER_PACKETS, 0)?,
    })
}

/// Runs `serveflow status`.
pub fn run(opts: &StatusOptions) -> anyhow::Result<()> {
    let root = opts.bpffs.join(PIN_SCHEMA);
    let dirs: Vec<PathBuf> = match &opts.interface {
        Some(i) => vec![root.join(i)],
        None => match std::fs::read_dir(&root) {
            Ok(entries) => {
                let mut d: Vec<PathBuf> =
                    entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
                d.sort();
                d
            }
            Err(_) => Vec::new(),
        },
    };
    if dirs.is_empty() {
        anyhow::bail!(
            "no serveflow instance has pinned maps under {}: is `serveflow run` running?",
            root.display()
        );
    }
    let mut all = Vec::new();
    for dir in &dirs {
        if !dir.is_dir() {
            anyhow::bail!(
                "{} does not exist: no `serveflow run` on that interface",
                dir.display()
            );
        }
        all.push(read(dir)?);
    }
    let out = &mut std::io::stdout().lock();
    if opts.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
        return Ok(());
    }
    for s in &all {
        let steer = if s.steer_packets == 0 {
            "every packet".to_owned()
        } else {
            format!("first {} packets of undecided flows", s.steer_packets)
        };
        writeln!(out, "{} ({}): steering {steer}", s.interface, s.pins)?;
        writeln!(
            out,
            "  kernel flow map: {} flows, {} packets, {} bytes; {} flows decided",
            s.flows, s.flow_packets, s.flow_bytes, s.decided_flows
        )?;
        let nonzero: Vec<String> = s
            .counters
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(out, "  counters: {}", nonzero.join(" "))?;
    }
    Ok(())
}
