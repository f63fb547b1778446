//! The range of every numeric option, checked when the command line is parsed, so a value
//! that cannot run is refused in one line (option, value, range, why) before any work, and
//! nothing is silently clamped: what a report records is what ran.
//!
//! Thread counts are bounded by the cores present (x4: oversubscription beyond that only
//! costs memory and context switches), packet counts by the deepest a stage may wait for,
//! kernel map sizes by what the kernel's hash map accepts, and table sizes by the memory
//! they would take against what the machine has available.

use std::ops::RangeInclusive;

/// The deepest packet count a stage may use (the manifest's limit too).
pub const MAX_PACKETS: u32 = 64;
/// Most entries of the kernel's LRU hash maps: the kernel rounds `max_entries` up to a power
/// of two of 16-byte buckets and refuses (E2BIG) a bucket table beyond 4 GiB, i.e. beyond
/// 2^28 entries (4e9 entries gave E2BIG here).
pub const MAX_MAP_ENTRIES: u64 = 1 << 28;
/// Kernel bytes per flow-map entry plus verdict-map entry, measured: the two maps' `memlock`
/// (what `serveflow status` and `bpftool map show` print) over their entries, 136 + 112 at
/// 64 Ki to 4 Mi entries on kernel 6.18 (docs/benchmarks.md). LRU maps are allocated whole
/// when created, so this is what `--flow-map-entries` costs, empty or full.
pub const MAP_BYTES_PER_ENTRY: u64 = 136 + 112;
/// Most flows the userspace tables may be sized for.
pub const MAX_FLOWS: u64 = 1 << 28;
/// Largest slow-pool queue (flows).
pub const MAX_QUEUE: u64 = 1 << 22;
/// Largest slow-pool batch.
pub const MAX_BATCH: u64 = 4096;
/// Longest any wait or timeout may be, in milliseconds (one day).
pub const MAX_WAIT_MS: f64 = 86_400_000.0;

/// CPUs this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Most threads of one kind: the cores present x 4.
pub fn max_threads() -> u64 {
    cores() as u64 * 4
}

/// `MemAvailable` from /proc/meminfo, bytes (None where it cannot be read).
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A size that would take more than half the available memory, as a one-line refusal.
pub fn check_memory(what: &str, bytes: u64) -> Result<(), String> {
    match available_memory() {
        Some(avail) if bytes > avail / 2 => Err(format!(
            "{what} would need about {} but {} is available (at most half may be used); \
             lower it",
            human_bytes(bytes),
            human_bytes(avail)
        )),
        _ => Ok(()),
    }
}

/// Bytes in binary units, one decimal.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A range check on an integer value (from the command line or a config file).
pub fn check_int(value: u64, range: RangeInclusive<u64>, why: &str) -> Result<u64, String> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{value} is outside {}..={} ({why})",
            range.start(),
            range.end()
        ))
    }
}

/// A range check on a real value (finite values only).
pub fn check_real(value: f64, range: RangeInclusive<f64>, why: &str) -> Result<f64, String> {
    if value.is_finite() && range.contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{value} is outside {}..={} ({why})",
            range.start(),
            range.end()
        ))
    }
}

/// Threads of one kind: 1..=4 per core.
pub fn check_threads(value: u64) -> Result<usize, String> {
    let max = max_threads();
    if value == 0 || value > max {
        return Err(format!(
            "{value} is outside 1..={max} (at most 4 threads per core; this machine has {} cores)",
            cores()
        ));
    }
    Ok(value as usize)
}

/// Entries of the kernel's flow and verdict maps: the hash-map limit and available memory.
pub fn check_map_entries(value: u64) -> Result<u32, String> {
    let value = check_int(value, 1..=MAX_MAP_ENTRIES, "the kernel's hash-map limit")?;
    check_memory(
        &format!("{value} entries of the kernel's flow and verdict maps"),
        value * MAP_BYTES_PER_ENTRY,
    )?;
    Ok(value as u32)
}

/// An option that takes one of a few names (modes, tasks, splits): its values and their
/// names on the command line and in config files.
pub trait Choice: Copy + Sized + 'static {
    /// Every value, in the order help lists them.
    const ALL: &'static [Self];
    /// The value's name.
    fn name(self) -> &'static str;
    /// The value named `name`.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == name)
    }
    /// Every name, for help and error messages.
    fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|v| v.name()).collect()
    }
}

/// A clap value parser for an integer option in `range`; `why` says where the bound comes
/// from, and goes into the error.
pub fn int<T>(
    range: RangeInclusive<u64>,
    why: &'static str,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: TryFrom<u64>,
{
    move |text: &str| {
        let value: u64 = text
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a whole number"))?;
        let value = check_int(value, range.clone(), why)?;
        T::try_from(value).map_err(|_| format!("{value} does not fit"))
    }
}

/// A clap value parser for a real option in `range` (finite values only).
pub fn real(
    range: RangeInclusive<f64>,
    why: &'static str,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |text: &str| {
        let value: f64 = text
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a number"))?;
        check_real(value, range.clone(), why)
    }
}

/// Worker and slow-pool thread counts: 1..=cores x 4.
pub fn threads(text: &str) -> Result<usize, String> {
    let value: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    check_threads(value)
}

/// `--flow-map-entries`: 1..=2^28, and both kernel maps must fit in memory.
pub fn map_entries(text: &str) -> Result<u32, String> {
    let value: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    check_map_entries(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;

    #[test]
    fn refusals_name_the_value_and_the_range() {
        let packets = int::<u32>(1..=u64::from(MAX_PACKETS), "the deepest a stage may wait");
        assert_eq!(packets("5"), Ok(5));
        let e = packets("0").unwrap_err();
        assert!(e.contains("0 is outside 1..=64"), "{e}");
        assert!(packets("100000").unwrap_err().contains("deepest"));
        assert!(packets("-3").unwrap_err().contains("not a whole number"));

        let e = threads("100000").unwrap_err();
        assert!(e.contains("cores"), "{e}");
        assert!(threads("0").is_err());
        assert_eq!(threads("1"), Ok(1));

        let e = map_entries("4000000000").unwrap_err();
        assert!(e.contains("268435456"), "{e}");
        assert_eq!(map_entries("1024"), Ok(1024));

        let wait = real(0.0..=MAX_WAIT_MS, "one day");
        assert!(wait("NaN").is_err());
        assert!(wait("inf").is_err());
        assert!(wait("-1").is_err());
        assert_eq!(wait("15"), Ok(15.0));
    }

    #[test]
    fn memory_refusal_says_how_much() {
        let e = check_memory("a test table", u64::MAX / 2).unwrap_err();
        assert!(e.contains("a test table would need about"), "{e}");
        assert!(check_memory("a small table", 1024).is_ok());
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12), "12 B");
    }
}
