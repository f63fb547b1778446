//! Several capture files merged into one timeline, by timestamp.
//!
//! Each file keeps one packet read ahead; a min-heap picks the earliest. Ties keep the order
//! of the files on the command line, so a run is deterministic. Files whose own timestamps go
//! backwards are passed through in file order (flow timeouts then see time stand still rather
//! than run backwards: see `flow`).

use std::{cmp::Reverse, collections::BinaryHeap, path::PathBuf};

use crate::{
    capture::file::{CaptureError, CaptureFile, EarlyEnd, Skip},
    frame::CapturedPacket,
};

/// Per-file outcome, for the run's report.
#[derive(Clone, Debug)]
pub struct FileReport {
    /// File.
    pub path: PathBuf,
    /// Packets read.
    pub packets: u64,
    /// Set when the file ended early.
    pub early_end: Option<EarlyEnd>,
    /// Records or blocks skipped.
    pub skipped_blocks: u64,
    /// The first few of them, with offset and reason.
    pub skips: Vec<Skip>,
}

impl FileReport {
    /// The summary line for a file that ended before its data did.
    pub fn early_end_line(&self) -> Option<String> {
        let e = self.early_end.as_ref()?;
        Some(format!("{}: {e}", self.path.display()))
    }

    /// The summary line for a file with records or blocks skipped, naming the first.
    pub fn skipped_line(&self) -> Option<String> {
        if self.skipped_blocks == 0 {
            return None;
        }
        let first = self
            .skips
            .first()
            .map_or(String::new(), |s| format!(" (first at {s})"));
        Some(format!(
            "{}: {} blocks skipped{first}",
            self.path.display(),
            self.skipped_blocks
        ))
    }
}

/// A merged, timestamp-ordered stream of packets from several files.
pub struct MergedCaptures {
    files: Vec<CaptureFile>,
    heads: Vec<Option<CapturedPacket>>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
}

impl MergedCaptures {
    /// Opens every file first, so a bad path fails before any work.
    pub fn open(paths: &[PathBuf]) -> Result<Self, CaptureError> {
        let files = paths
            .iter()
            .map(|p| CaptureFile::open(p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut merged = MergedCaptures {
            heads: (0..files.len()).map(|_| None).collect(),
            files,
            heap: BinaryHeap::new(),
        };
        for i in 0..merged.files.len() {
            merged.advance(i);
        }
        Ok(merged)
    }

    fn advance(&mut self, i: usize) {
        if let Some(p) = self.files[i].next_packet() {
            self.heap.push(Reverse((p.ts_ns, i)));
            self.heads[i] = Some(p);
        }
    }

    /// Reports for every file, in command-line order.
    pub fn reports(&self) -> Vec<FileReport> {
        self.files
            .iter()
            .map(|f| FileReport {
                path: f.path().to_owned(),
                packets: f.packets(),
                early_end: f.early_end().cloned(),
                skipped_blocks: f.skipped_blocks(),
                skips: f.skips().to_vec(),
            })
            .collect()
    }
}

impl Iterator for MergedCaptures {
    type Item = CapturedPacket;

    fn next(&mut self) -> Option<CapturedPacket> {
        // One file (the usual replay) needs no merging: no heap, no packet held ahead.
        if let [only] = self.files.as_mut_slice() {
            if let Some(p) = self.heads[0].take() {
                return Some(p);
            }
            return only.next_packet();
        }
        let Reverse((_, i)) = self.heap.pop()?;
        let mut packet = self.heads[i].take();
        if let Some(p) = &mut packet {
            p.file = i as u32;
        }
        self.advance(i);
        packet
    }
}
