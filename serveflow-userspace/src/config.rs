//! The settings of every command, as one TOML file reads them and as reports write them back.

/// Pool settings.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Threads.
    pub threads: usize,
    /// Jobs the queue holds before workers fall back.
    pub queue: usize,
    /// Largest batch.
    pub max_batch: usize,
    /// Longest a batch waits to fill after its first job (µs).
    pub max_wait_us: u64,
    /// Nice value of the pool threads (0..=19). The slow stage is best effort (a flow it
    /// cannot take keeps its fast answer), while a starved fast path or NIC loses packets, so
    /// where they share cores the scheduler should favour the fast path.
    pub nice: i32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            threads: 1,
            queue: 4096,
            max_batch: 32,
            max_wait_us: 200,
            nice: 10,
        }
    }
}
