//! Start-up checks of the host: capabilities, locked-memory limit, bpffs, interfaces.
//!
//! Each failure names what is missing and how to fix it, so an operator never has to read a
//! raw `EPERM` from deep inside a syscall.

pub mod rss;

use std::{fs, path::Path};

/// A host precondition that is not met.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// Capabilities missing from the effective set.
    #[error("missing capabilities: {}. Run as root, or grant them (see deploy/serveflow.service)", .0.join("; "))]
    MissingCapabilities(Vec<String>),
    /// bpffs is not mounted where maps are pinned.
    #[error("{0} is not a bpffs mount: run `mount -t bpf bpf {0}` (or let systemd mount it)")]
    NoBpffs(String),
    /// The interface does not exist in this network namespace.
    #[error(
        "no network interface named {0:?} in this network namespace: list them with `ip link`"
    )]
    NoInterface(String),
    /// Reading /proc or /sys failed.
    #[error("reading {path}: {source}")]
    Read {
        /// What was read.
        path: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// A Linux capability and why serveflow needs it.
struct Needed {
    bit: u32,
    name: &'static str,
    why: &'static str,
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Capabilities `serveflow run` needs. CAP_SYS_ADMIN stands in for CAP_BPF on old kernels.
const NEEDED: [Needed; 4] = [
    Needed {
        bit: CAP_BPF,
        name: "CAP_BPF",
        why: "load the XDP program and create its maps",
    },
    Needed {
        bit: CAP_PERFMON,
        name: "CAP_PERFMON",
        why: "let the verifier accept the parser's packet-pointer arithmetic",
    },
    Needed {
        bit: CAP_NET_ADMIN,
        name: "CAP_NET_ADMIN",
        why: "attach XDP to the interface",
    },
    Needed {
        bit: CAP_NET_RAW,
        name: "CAP_NET_RAW",
        why: "open AF_XDP sockets",
    },
];

/// Reads the effective capability mask of this process.
fn effective_caps() -> Result<u64, SystemError> {
    let path = "/proc/self/status";
    let status = fs::read_to_string(path).map_err(|source| SystemError::Read {
        path: path.into(),
        source,
    })?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0))
}

fn has(mask: u64, bit: u32) -> bool {
    mask & (1u64 << bit) != 0
}

/// Whether `bit` is effective, counting CAP_SYS_ADMIN as CAP_BPF and CAP_PERFMON (which it
/// stood for before Linux 5.8).
fn granted(mask: u64, bit: u32) -> bool {
    has(mask, bit) || ((bit == CAP_BPF || bit == CAP_PERFMON) && has(mask, CAP_SYS_ADMIN))
}

/// Checks the capabilities `serveflow run` needs and raises RLIMIT_MEMLOCK for the AF_XDP
/// UMEM (which is still charged to it). Lists every missing capability at once.
pub fn check_run_privileges() -> Result<(), SystemError> {
    let caps = effective_caps()?;
    let mut missing: Vec<String> = NEEDED
        .iter()
        .filter(|n| !granted(caps, n.bit))
        .map(|n| format!("{} (to {})", n.name, n.why))
        .collect();
    if !raise_memlock() && !has(caps, CAP_IPC_LOCK) {
        missing.push(format!(
            "CAP_SYS_RESOURCE or CAP_IPC_LOCK (RLIMIT_MEMLOCK is {} KiB, too low to lock the AF_XDP UMEM; or set LimitMEMLOCK=infinity)",
            memlock_kib()
        ));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SystemError::MissingCapabilities(missing))
    }
}

/// Lifts RLIMIT_MEMLOCK to infinity; false when not allowed (no CAP_SYS_RESOURCE).
fn raise_memlock() -> bool {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid, initialised rlimit struct.
    let ok = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } == 0;
    ok || memlock_kib() == u64::MAX / 1024
}

fn memlock_kib() -> u64 {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid rlimit struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut current) } != 0 {
        return 0;
    }
    current.rlim_cur / 1024
}

/// bpffs magic number (`BPF_FS_MAGIC` in linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Checks that `dir` is on a bpffs mount, where maps can be pinned.
pub fn check_bpffs(dir: &Path) -> Result<(), SystemError> {
    let not_bpffs = || SystemError::NoBpffs(dir.display().to_string());
    let c_path =
        std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| not_bpffs())?;
    // SAFETY: statfs is plain old data; all-zero is a valid value to be overwritten.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is NUL-terminated and st is a valid out-pointer.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } != 0 {
        return Err(not_bpffs());
    }
    if st.f_type as i64 == BPF_FS_MAGIC {
        Ok(())
    } else {
        Err(not_bpffs())
    }
}

/// An interface's index and its number of RX queues.
#[derive(Clone, Debug)]
pub struct Interface {
    /// Name.
    pub name: String,
    /// ifindex.
    pub index: u32,
    /// RX queues the driver reports (ETHTOOL_GCHANNELS), 1 when it reports none.
    pub rx_queues: u32,
}

/// Looks up an interface in this network namespace.
pub fn interface(name: &str) -> Result<Interface, SystemError> {
    let no_iface = || SystemError::NoInterface(name.to_owned());
    let c_name = std::ffi::CString::new(name).map_err(|_| no_iface())?;
    // SAFETY: c_name is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(no_iface());
    }
    let rx_queues = rx_queue_count(name).unwrap_or(1).max(1);
    Ok(Interface {
        name: name.to_owned(),
        index,
        rx_queues,
    })
}

/// `struct ethtool_channels` (linux/ethtool.h).
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

const ETHTOOL_GCHANNELS: u32 = 0x3c;
const SIOCETHTOOL: libc::c_ulong = 0x8946;

/// Runs an interface ioctl (`ifreq` named `name`, prepared by `prepare`) on a socket of this
/// network namespace, because /sys/class/net shows the namespace sysfs was mounted in, which
/// under `nsenter` is not ours. Returns the ifreq the kernel filled in, or None on failure.
fn if_ioctl(
    name: &str,
    request: libc::c_ulong,
    prepare: impl FnOnce(&mut libc::ifreq),
) -> Option<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= ifr.ifr_name.len() {
        return None;
    }
    for (dst, src) in ifr.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    prepare(&mut ifr);
    // SAFETY: plain socket call; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the request reads ifr (valid, NUL-terminated name) and writes into it or into
    // the buffer `prepare` pointed it at, which the caller keeps alive across this call.
    let rc = unsafe { libc::ioctl(fd, request, &mut ifr) };
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
    (rc == 0).then_some(ifr)
}

/// Asks the driver how many RX queues it runs (rx or combined channels).
fn rx_queue_count(name: &str) -> Option<u32> {
    let mut channels = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    if_ioctl(name, SIOCETHTOOL, |ifr| {
        ifr.ifr_ifru.ifru_data = (&mut channels as *mut EthtoolChannels).cast();
    })?;
    Some(channels.rx_count.max(channels.combined_count))
}

/// Whether an interface can carry traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Administratively up with carrier.
    Up,
    /// Down, or up without carrier: the XDP program and sockets stay in place and traffic
    /// resumes when it comes back.
    Down,
    /// The interface no longer exists in this namespace (deleted or moved): the kernel has
    /// detached the program and unbound the sockets.
    Gone,
}

/// The state of interface `iface` (found by its index, so a rename does not matter).
pub fn link_state(iface: &Interface) -> LinkState {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let name = unsafe { libc::if_indextoname(iface.index, buf.as_mut_ptr()) };
    if name.is_null() {
        return LinkState::Gone;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
    let Some(ifr) = if_ioctl(&name, libc::SIOCGIFFLAGS, |_| {}) else {
        return LinkState::Gone;
    };
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = i32::from(unsafe { ifr.ifr_ifru.ifru_flags });
    let up = libc::IFF_UP | libc::IFF_RUNNING;
    if flags & up == up {
        LinkState::Up
    } else {
        LinkState::Down
    }
}

/// CPUs on the NUMA node of `iface`'s device, when the kernel reports one (PCI NICs on
/// multi-socket machines); None for virtual interfaces and single-node machines.
pub fn numa_cpus(iface: &str) -> Option<Vec<usize>> {
    let node: i64 = std::fs::read_to_string(format!("/sys/class/net/{iface}/device/numa_node"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if node < 0 {
        return None;
    }
    let list =
        std::fs::read_to_string(format!("/sys/devices/system/node/node{node}/cpulist")).ok()?;
    let cpus = parse_cpulist(list.trim());
    (!cpus.is_empty()).then_some(cpus)
}

/// Parses a kernel CPU list (`0-3,8,10-11`).
pub fn parse_cpulist(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(c) = part.parse() {
                    out.push(c);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_exists_and_bogus_does_not() {
        assert!(interface("lo").is_ok_and(|i| i.index > 0 && i.rx_queues >= 1));
        let gone = Interface {
            name: "gone0".into(),
            index: u32::MAX,
            rx_queues: 1,
        };
        assert_eq!(link_state(&gone), LinkState::Gone);
        if let Ok(lo) = interface("lo") {
            assert_eq!(link_state(&lo), LinkState::Up);
        }
        let err = interface("no-such-if0").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("ip link")));
    }

    #[test]
    fn cpulists_and_virtual_interfaces() {
        assert_eq!(parse_cpulist("0-3,8,10-11"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpulist("5"), vec![5]);
        assert!(parse_cpulist("x-y").is_empty());
        assert_eq!(numa_cpus("lo"), None, "loopback has no device node");
    }

    #[test]
    fn tmp_is_not_bpffs() {
        let err = check_bpffs(Path::new("/tmp")).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("mount -t bpf")));
    }
}
