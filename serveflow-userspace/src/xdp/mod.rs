//! The kernel half of the data path, seen from userspace: loads the XDP program embedded in
//! this binary, attaches it to an interface, pins its maps for `bpftool`, binds AF_XDP sockets
//! into its `XSKS` map, and reads its counters and flow map.
//!
//! Attachment uses a `bpf_link`, which the kernel detaches when the last fd closes: a process
//! killed with `kill -9` leaves no program attached. Its pinned maps do stay; the next start
//! on the same interface removes them before pinning its own.

pub mod pinned;

use std::{
    fmt,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, XskMap},
    programs::{
        tc::{SchedClassifierLinkId, TcAttachType},
        xdp::XdpLinkId,
        ProgramError, SchedClassifier, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use serveflow_common::{
    counters::XDP_COUNTER_SLOTS, FlowKey, FlowStats, XdpCounter, FLOW_MAP_ENTRIES, PIN_SCHEMA,
    STEER_PACKETS,
};

use crate::system::{self, Interface, SystemError};

/// The XDP object built by `build.rs`, 8-byte aligned as the ELF parser requires.
#[cfg(not(serveflow_ebpf_skipped))]
static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/serveflow"));
#[cfg(serveflow_ebpf_skipped)]
static XDP_OBJECT: &[u8] = &[];

/// Where bpffs is expected.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Names of the program and maps inside the object.
const PROGRAM: &str = "serveflow";
const FLOWS: &str = "FLOWS";
const XSKS: &str = "XSKS";
const COUNTERS: &str = "COUNTERS";
const VERDICTS: &str = "VERDICTS";
const STEER: &str = "STEER";
const ACTIONS: &str = "ACTIONS";
const MARKS: &str = "MARKS";
const MARKER: &str = "serveflow_mark";

/// How the program is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachMode {
    /// Native (driver) XDP: fastest, needs driver support.
    #[default]
    Native,
    /// Generic (skb) XDP: works on any interface, slower.
    Skb,
}

impl crate::limits::Choice for AttachMode {
    const ALL: &'static [Self] = &[AttachMode::Native, AttachMode::Skb];
    fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Skb => "skb",
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native",
            AttachMode::Skb => "skb",
        })
    }
}

/// Why the XDP program could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The binary was built with AYA_BUILD_SKIP=1.
    #[error(
        "this binary was built without its XDP program (AYA_BUILD_SKIP=1); rebuild without it"
    )]
    NotBuilt,
    /// A host precondition failed.
    #[error(transparent)]
    System(#[from] SystemError),
    /// The kernel refused the program or its maps.
    #[error("loading the XDP program into the kernel failed: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    /// The verifier or the kernel refused the program (the full verifier log is logged at
    /// debug level: `RUST_LOG=debug`).
    #[error("the kernel refused the XDP program: {0}")]
    Program(String),
    /// Another XDP program holds the interface.
    #[error("{iface} already has an XDP program attached (another serveflow?); see `bpftool net show dev {iface}`")]
    Busy {
        /// Interface.
        iface: String,
    },
    /// The driver cannot run XDP in the requested mode.
    #[error("{iface} cannot take XDP in {mode} mode (try `-m skb` for generic XDP)")]
    Mode {
        /// Interface.
        iface: String,
        /// Requested mode.
        mode: AttachMode,
        /// Kernel's answer.
        source: Box<ProgramError>,
    },
    /// A map is missing or has the wrong type (a stale or foreign object).
    #[error("XDP object has no usable map {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// Why.
        source: Box<aya::maps::MapError>,
    },
    /// Pinning failed.
    #[error("pinning maps under {path}: {reason}")]
    Pin {
        /// Pin directory.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The loaded, attached program with its pinned maps. Dropping it detaches the program and
/// removes the pins.
pub struct XdpProgram {
    ebpf: Ebpf,
    link: Option<XdpLinkId>,
    /// The TC marking program's tcx link, when a class is marked.
    marker: Option<SchedClassifierLinkId>,
    pin_dir: PathBuf,
    iface: Interface,
    mode: AttachMode,
}

/// Totals read from the kernel flow map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FlowMapTotals {
    /// Entries (flows) in the map.
    pub flows: u64,
    /// Sum of their packet counts.
    pub packets: u64,
    /// Sum of their byte counts.
    pub bytes: u64,
}

/// Loads the embedded XDP object without attaching it (BPF_PROG_TEST_RUN tests use this).
pub fn load_object() -> Result<Ebpf, XdpError> {
    load_sized(serveflow_common::FLOW_MAP_ENTRIES as u32)
}

/// Loads the object with `flow_map_entries` entries in the flow and verdict maps.
pub fn load_sized(flow_map_entries: u32) -> Result<Ebpf, XdpError> {
    if XDP_OBJECT.is_empty() {
        return Err(XdpError::NotBuilt);
    }
    EbpfLoader::new()
        .map_max_entries(FLOWS, flow_map_entries.max(1))
        .map_max_entries(VERDICTS, flow_map_entries.max(1))
        .load(XDP_OBJECT)
        .map_err(|e| XdpError::Load(Box::new(e)))
}

/// Loads and verifies the program of `ebpf` and returns it.
pub fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, XdpError> {
    let program: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| XdpError::Program(format!("no program {PROGRAM} in the object")))?
        .try_into()
        .map_err(|e: ProgramError| XdpError::Program(e.to_string()))?;
    if program.fd().is_err() {
        program
            .load()
            .map_err(|e| XdpError::Program(one_line(&e)))?;
    }
    Ok(program)
}

impl XdpProgram {
    /// Loads the program with `flow_map_entries` flows in its LRU maps, attaches it to
    /// `iface` in `mode`, and pins its maps under `/sys/fs/bpf/serveflow_v3/<iface>/`.
    pub fn attach(iface: &str, mode: AttachMode, flow_map_entries: u32) -> Result<Self, XdpError> {
        let iface = system::interface(iface)?;
        system::check_bpffs(Path::new(BPFFS))?;
        let mut ebpf = load_sized(flow_map_entries)?;
        let program = program(&mut ebpf)?;
        let aya_mode = match mode {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        };
        let link = program
            .attach_to_if_index(iface.index, aya_mode)
            .map_err(|e| attach_error(&iface.name, mode, e))?;
        let pin_dir = pin_dir(&iface.name);
        let mut this = XdpProgram {
            ebpf,
            link: Some(link),
            marker: None,
            pin_dir,
            iface,
            mode,
        };
        this.pin()?;
        Ok(this)
    }

    /// The interface the program is attached to.
    pub fn interface(&self) -> &Interface {
        &self.iface
    }

    /// The attach mode in use.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Where the maps are pinned.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    fn pin(&mut self) -> Result<(), XdpError> {
        let pin_err = |reason: String| XdpError::Pin {
            path: self.pin_dir.display().to_string(),
            reason,
        };
        // Pins left by a process that was killed: its program is gone with its link, so the
        // maps are orphans. We only get here after our own attach succeeded, so no live
        // instance owns this interface.
        if self.pin_dir.exists() {
            std::fs::remove_dir_all(&self.pin_dir)
                .map_err(|e| pin_err(format!("removing stale pins: {e}")))?;
        }
        std::fs::create_dir_all(&self.pin_dir).map_err(|e| pin_err(e.to_string()))?;
        for (name, file) in [
            (FLOWS, "flows"),
            (COUNTERS, "counters"),
            (XSKS, "xsks"),
            (VERDICTS, "verdicts"),
            (STEER, "steer"),
            (ACTIONS, "actions"),
            (MARKS, "marks"),
        ] {
            let map = self
                .ebpf
                .map(name)
                .ok_or_else(|| pin_err(format!("map {name} not in object")))?;
            map.pin(self.pin_dir.join(file))
                .map_err(|e| pin_err(format!("{name}: {e}")))?;
        }
        Ok(())
    }

    /// Binds an AF_XDP socket into `XSKS` at `queue`: from then on the program redirects that
    /// queue's TCP/UDP packets to it.
    pub fn bind_socket(&mut self, queue: u32, socket: &impl AsRawFd) -> Result<(), XdpError> {
        let map = self.ebpf.map_mut(XSKS).ok_or(XdpError::Map {
            name: XSKS,
            source: Box::new(aya::maps::MapError::InvalidName { name: XSKS.into() }),
        })?;
        let mut xsks: XskMap<&mut MapData> = XskMap::try_from(map).map_err(|e| XdpError::Map {
            name: XSKS,
            source: Box::new(e),
        })?;
        xsks.set(queue, socket.as_raw_fd(), 0)
            .map_err(|e| XdpError::Map {
                name: XSKS,
                source: Box::new(e),
            })
    }

    /// Early-packet steering: from now on the program passes a flow's packets beyond the
    /// first `packets` (0: steers every packet) and every packet of a decided flow.
    pub fn set_steer_packets(&mut self, packets: u32) -> Result<(), XdpError> {
        self.set_array(STEER, STEER_PACKETS, packets)
    }

    /// Sets what the program does with later packets of flows decided as class `class`
    /// ([`serveflow_common::Action`]); for `Action::Mark` also the mark, and the TC program
    /// that applies it is attached on first use.
    pub fn set_class_action(
        &mut self,
        class: u32,
        action: serveflow_common::Action,
        mark: u32,
    ) -> Result<(), XdpError> {
        self.set_array(ACTIONS, class, action as u32)?;
        if action == serveflow_common::Action::Mark {
            self.set_array(MARKS, class, mark)?;
            self.attach_marker()?;
        }
        Ok(())
    }

    fn set_array(&mut self, name: &'static str, index: u32, value: u32) -> Result<(), XdpError> {
        let map_err = |e| XdpError::Map {
            name,
            source: Box::new(e),
        };
        let map = self.ebpf.map_mut(name).ok_or(XdpError::Map {
            name,
            source: Box::new(aya::maps::MapError::InvalidName { name: name.into() }),
        })?;
        let mut array: Array<&mut MapData, u32> = Array::try_from(map).map_err(map_err)?;
        array.set(index, value, 0).map_err(map_err)
    }

    /// Loads the TC marking program and attaches it to the interface's ingress through tcx
    /// (a link, detached with the process like the XDP one).
    fn attach_marker(&mut self) -> Result<(), XdpError> {
        if self.marker.is_some() {
            return Ok(());
        }
        let program: &mut SchedClassifier = self
            .ebpf
            .program_mut(MARKER)
            .ok_or_else(|| XdpError::Program(format!("no program {MARKER} in the object")))?
            .try_into()
            .map_err(|e: ProgramError| XdpError::Program(e.to_string()))?;
        program
            .load()
            .map_err(|e| XdpError::Program(one_line(&e)))?;
        let link = program
            .attach(&self.iface.name, TcAttachType::Ingress)
            .map_err(|e| {
                XdpError::Program(format!(
                    "attaching the marking program to {} ingress: {}",
                    self.iface.name,
                    one_line(&e)
                ))
            })?;
        self.marker = Some(link);
        Ok(())
    }

    /// Counter totals over all CPUs, indexed by [`XdpCounter`].
    pub fn counters(&self) -> Result<[u64; XDP_COUNTER_SLOTS], XdpError> {
        read_counters(&self.ebpf)
    }

    /// Totals over the kernel flow map.
    pub fn flow_totals(&self) -> Result<FlowMapTotals, XdpError> {
        read_flow_totals(&self.ebpf)
    }

    /// Detaches the program and removes the pins; also done on drop.
    pub fn detach(&mut self) {
        if let Some(link) = self.marker.take() {
            if let Some(Ok(program)) = self
                .ebpf
                .program_mut(MARKER)
                .map(<&mut SchedClassifier>::try_from)
            {
                if let Err(e) = program.detach(link) {
                    log::warn!(
                        "detaching the marking program from {}: {e}",
                        self.iface.name
                    );
                }
            }
        }
        if let Some(link) = self.link.take() {
            if let Ok(program) = program(&mut self.ebpf) {
                if let Err(e) = program.detach(link) {
                    log::warn!("detaching XDP from {}: {e}", self.iface.name);
                }
            }
        }
        if self.pin_dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.pin_dir) {
                log::warn!("removing pins {}: {e}", self.pin_dir.display());
            }
        }
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        self.detach();
    }
}

/// The kernel's verdict map, opened from its pin by each thread that decides flows: a flow
/// written here is no longer steered to userspace.
pub struct VerdictMap {
    map: BpfHashMap<MapData, FlowKey, u32>,
    /// Writes that failed (counted, never fatal: the flow only keeps being steered).
    pub failed: u64,
}

impl VerdictMap {
    /// Opens `<pin_dir>/verdicts`.
    pub fn open(pin_dir: &Path) -> Result<Self, XdpError> {
        let map_err = |e| XdpError::Map {
            name: VERDICTS,
            source: Box::new(e),
        };
        let data = MapData::from_pin(pin_dir.join("verdicts")).map_err(map_err)?;
        let map = BpfHashMap::try_from(aya::maps::Map::LruHashMap(data)).map_err(map_err)?;
        Ok(VerdictMap { map, failed: 0 })
    }

    /// Records the verdict `class` of the flow `key`.
    pub fn set(&mut self, key: FlowKey, class: u32) {
        if self.map.insert(key, class, 0).is_err() {
            self.failed += 1;
        }
    }
}

impl crate::verdict::VerdictHook for VerdictMap {
    fn decided(&mut self, v: &crate::verdict::Verdict, class: usize) {
        self.set(v.key, class as u32);
    }
}

impl Drop for VerdictMap {
    fn drop(&mut self) {
        if self.failed > 0 {
            log::warn!("{} verdicts could not be written to the kernel's verdict map; those flows stayed steered", self.failed);
        }
    }
}

/// The pin directory for an interface.
pub fn pin_dir(iface: &str) -> PathBuf {
    Path::new(BPFFS).join(PIN_SCHEMA).join(iface)
}

/// Shortens a load error to one line: the syscall's answer and the verifier's last word.
fn one_line(e: &ProgramError) -> String {
    let text = e.to_string();
    let Some((head, log)) = text.split_once("Verifier output:") else {
        return text;
    };
    log::debug!("verifier output:{log}");
    let reason = log
        .lines()
        .map(str::trim)
        .rfind(|l| {
            !l.is_empty()
                && !l.starts_with("processed ")
                && !l.starts_with("verification time")
                && !l.starts_with("stack depth")
                && !l.starts_with(':')
        })
        .unwrap_or("");
    let hint = if text.contains("Permission denied") || text.contains("Operation not permitted") {
        " (needs CAP_BPF and CAP_PERFMON, or root)"
    } else {
        ""
    };
    format!("{} {reason}{hint}", head.trim().trim_end_matches('.'))
}

fn attach_error(iface: &str, mode: AttachMode, e: ProgramError) -> XdpError {
    let errno = match &e {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    };
    match errno {
        Some(libc::EBUSY) | Some(libc::EEXIST) => XdpError::Busy {
            iface: iface.to_owned(),
        },
        _ => XdpError::Mode {
            iface: iface.to_owned(),
            mode,
            source: Box::new(e),
        },
    }
}

/// Reads the per-CPU counters of a loaded object and sums them per slot.
pub fn read_counters(ebpf: &Ebpf) -> Result<[u64; XDP_COUNTER_SLOTS], XdpError> {
    let map_err = |e| XdpError::Map {
        name: COUNTERS,
        source: Box::new(e),
    };
    let map = ebpf.map(COUNTERS).ok_or(XdpError::Map {
        name: COUNTERS,
        source: Box::new(aya::maps::MapError::InvalidName {
            name: COUNTERS.into(),
        }),
    })?;
    let counters: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map).map_err(map_err)?;
    let mut totals = [0u64; XDP_COUNTER_SLOTS];
    for slot in XdpCounter::ALL {
        let per_cpu = counters.get(&(slot as u32), 0).map_err(map_err)?;
        totals[slot as usize] = per_cpu.iter().sum();
    }
    Ok(totals)
}

/// Sums the kernel flow map of a loaded object.
pub fn read_flow_totals(ebpf: &Ebpf) -> Result<FlowMapTotals, XdpError> {
    let mut totals = FlowMapTotals::default();
    for entry in read_flows(ebpf)? {
        let (_, stats) = entry;
        totals.flows += 1;
        totals.packets += stats.packets;
        totals.bytes += stats.bytes;
    }
    Ok(totals)
}

/// All entries of the kernel flow map of a loaded object.
pub fn read_flows(ebpf: &Ebpf) -> Result<Vec<(FlowKey, FlowStats)>, XdpError> {
    let map_err = |e| XdpError::Map {
        name: FLOWS,
        source: Box::new(e),
    };
    let map = ebpf.map(FLOWS).ok_or(XdpError::Map {
        name: FLOWS,
        source: Box::new(aya::maps::MapError::InvalidName { name: FLOWS.into() }),
    })?;
    let flows: BpfHashMap<&MapData, FlowKey, FlowStats> =
        BpfHashMap::try_from(map).map_err(map_err)?;
    let mut out = Vec::with_capacity(FLOW_MAP_ENTRIES.min(4096));
    for entry in flows.iter() {
        out.push(entry.map_err(map_err)?);
    }
    Ok(out)
}
