//! The capture files a command reads. Folders are searched recursively; every file is opened
//! once up front, so an input that cannot be read is known before any work starts. Unless
//! the operator said `--keep-going`, one unreadable input stops the command there, naming
//! every such input and why; with it, they are skipped and listed in the summary.

use std::path::{Path, PathBuf};

use crate::capture::file::CaptureFile;

/// Extensions a folder search takes.
pub const EXTENSIONS: [&str; 3] = ["pcap", "pcapng", "cap"];

/// An input passed over, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SkippedInput {
    /// The path as named or found.
    pub path: PathBuf,
    /// Why it cannot be read.
    pub reason: String,
}

impl std::fmt::Display for SkippedInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// Readable capture files, and the inputs skipped.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// Files that open as captures, in order (folders' files sorted).
    pub files: Vec<PathBuf>,
    /// Inputs that do not (only with `keep_going`).
    pub skipped: Vec<SkippedInput>,
}

/// Why a command has no inputs to work on.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Some inputs cannot be read and the operator did not allow skipping them.
    #[error("{} of {} inputs cannot be read (--keep-going skips them):\n  {}", .skipped.len(), .total, list(.skipped))]
    Unreadable {
        /// The unreadable ones.
        skipped: Vec<SkippedInput>,
        /// All inputs found.
        total: usize,
    },
    /// Nothing readable at all.
    #[error("no readable capture files (.pcap, .pcapng, .cap) in the inputs{}", if .skipped.is_empty() { String::new() } else { format!(":\n  {}", list(.skipped)) })]
    NoneReadable {
        /// The unreadable ones.
        skipped: Vec<SkippedInput>,
    },
}

fn list(skipped: &[SkippedInput]) -> String {
    skipped
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}

impl Inputs {
    /// Lines for a human summary, one per skipped input.
    pub fn skipped_lines(&self) -> Vec<String> {
        self.skipped.iter().map(ToString::to_string).collect()
    }
}

/// Capture files found under the inputs, not yet opened.
#[derive(Clone, Debug, Default)]
pub struct Found {
    /// Files, in order.
    pub files: Vec<PathBuf>,
    /// Folders that could not be listed.
    pub skipped: Vec<SkippedInput>,
}

/// The capture files under `inputs`. Files named on the command line are taken whatever
/// their extension; folders contribute files with one of [`EXTENSIONS`], sorted.
pub fn find(inputs: &[PathBuf]) -> Found {
    let mut found = Found::default();
    for input in inputs {
        if input.is_dir() {
            walk(input, &mut found.files, &mut found.skipped);
        } else {
            found.files.push(input.clone());
        }
    }
    found
}

impl Found {
    /// Opens every file once; see [`resolve`].
    pub fn open(self, keep_going: bool) -> Result<Inputs, InputError> {
        let Found {
            files: found,
            mut skipped,
        } = self;
        let total = found.len() + skipped.len();
        let mut files = Vec::with_capacity(found.len());
        for f in found {
            match CaptureFile::open(&f) {
                Ok(_) => files.push(f),
                Err(e) => skipped.push(SkippedInput {
                    reason: reason(&e, &f),
                    path: f,
                }),
            }
        }
        if files.is_empty() {
            return Err(InputError::NoneReadable { skipped });
        }
        if !skipped.is_empty() && !keep_going {
            return Err(InputError::Unreadable { skipped, total });
        }
        Ok(Inputs { files, skipped })
    }
}

/// The capture files under `inputs` (see [`find`]), each checked to open: with an unreadable
/// one, an error listing them all, or with `keep_going` the rest and the list.
pub fn resolve(inputs: &[PathBuf], keep_going: bool) -> Result<Inputs, InputError> {
    find(inputs).open(keep_going)
}

/// The error's text without its leading path (the skip carries the path).
fn reason(e: &crate::capture::file::CaptureError, path: &Path) -> String {
    let text = e.to_string();
    let prefix = format!("{}: ", path.display());
    text.strip_prefix(&prefix)
        .map_or(text.clone(), str::to_owned)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, skipped: &mut Vec<SkippedInput>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            skipped.push(SkippedInput {
                path: dir.to_owned(),
                reason: format!("cannot list the folder: {e}"),
            });
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, out, skipped);
        } else if p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| EXTENSIONS.contains(&x))
        {
            out.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;

    #[test]
    fn unreadable_inputs_stop_the_command_unless_keep_going() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.pcap");
        let mut header = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        header.extend_from_slice(&[0; 8]);
        header.extend_from_slice(&[0xff, 0xff, 0, 0, 1, 0, 0, 0]);
        std::fs::write(&good, &header).unwrap();
        let notes = dir.path().join("notes.pcap");
        std::fs::write(&notes, b"just some notes").unwrap();
        let missing = dir.path().join("missing.pcap");
        let inputs = vec![good.clone(), missing.clone(), notes.clone()];

        let err = resolve(&inputs, false).unwrap_err().to_string();
        assert!(err.starts_with("2 of 3 inputs cannot be read"), "{err}");
        assert!(err.contains("missing.pcap: No such file"), "{err}");
        assert!(err.contains("notes.pcap: not a pcap"), "{err}");
        // One cause per line: the OS error once.
        assert_eq!(err.matches("os error 2").count(), 1, "{err}");

        let ok = resolve(&inputs, true).unwrap();
        assert_eq!(ok.files, vec![good]);
        assert_eq!(
            ok.skipped.iter().map(|s| &s.path).collect::<Vec<_>>(),
            vec![&missing, &notes]
        );

        let err = resolve(&[missing, notes], true).unwrap_err().to_string();
        assert!(err.starts_with("no readable capture files"), "{err}");
        // A folder contributes only captures, sorted; its notes.pcap is still checked.
        let err = resolve(&[dir.path().to_owned()], false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 of 2 inputs"), "{err}");
    }
}
