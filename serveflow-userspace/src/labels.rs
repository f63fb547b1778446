//! Ground-truth flow labels, for training and for scoring a replay: nfstream's per-flow CSVs
//! (`labels/nfstream_flows.csv` and `labels/extra_nfstream_flows.csv` in the data folder, or
//! any `*nfstream_flows.csv` in a labels folder) joined by capture path and 5-tuple, the
//! initiator as `src` on both sides.
//!
//! Service task: the app part of nDPI's `application_name` (`DNS.Google` -> `Google`), confident
//! rows only. Device task: the IoT Sentinel device type of the flow's source or destination MAC
//! (`iot_sentinel_devices.csv` beside the flows file). The split of capture files into training
//! and held-out sets lives here too, so the trainer and the benchmarks agree on it.

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
};

use crate::{flow::FlowId, limits::Choice};

/// Which labels to learn or score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Application/service (nDPI's app name).
    Service,
    /// IoT device type.
    Device,
}

/// Names in manifests and on the command line.
impl Choice for Task {
    const ALL: &'static [Self] = &[Task::Service, Task::Device];
    fn name(self) -> &'static str {
        match self {
            Task::Service => "service",
            Task::Device => "device",
        }
    }
}

/// A label file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    /// The file cannot be read.
    #[error("reading {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file has no header line.
    #[error("{path}: empty file")]
    Empty {
        /// File.
        path: PathBuf,
    },
    /// A column the join needs is absent.
    #[error("{path}: no column {column:?} (columns: {columns})")]
    MissingColumn {
        /// File.
        path: PathBuf,
        /// The column.
        column: String,
        /// The columns it has.
        columns: String,
    },
    /// A labels folder without label files.
    #[error("{path}: no *nfstream_flows.csv label file in this folder")]
    NoLabelFiles {
        /// Folder.
        path: PathBuf,
    },
    /// Nothing usable for the task.
    #[error("{path}: no usable labels for the {task} task")]
    NoLabels {
        /// File.
        path: PathBuf,
        /// Task name.
        task: &'static str,
    },
}

/// A flow's identity in the labels: capture path (relative to the data folder) and 5-tuple.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LabelKey {
    /// Capture path as written in the label file.
    pub path: String,
    /// The flow's 5-tuple.
    pub flow: FlowId,
}

/// Labels of one task, by flow.
#[derive(Debug, Default)]
pub struct FlowLabels {
    by_flow: HashMap<LabelKey, String>,
    /// Rows skipped because their field count was wrong (quoted commas, truncation).
    pub malformed_rows: u64,
}

/// A CSV file's header, its rows, and the count of rows skipped.
type CsvRows = (Vec<String>, Vec<Vec<String>>, u64);

/// Header and rows of a plain CSV file; rows whose field count differs from the header's are
/// skipped and counted.
fn csv_rows(path: &Path) -> Result<CsvRows, LabelError> {
    let text = std::fs::read_to_string(path).map_err(|source| LabelError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .ok_or_else(|| LabelError::Empty {
            path: path.to_owned(),
        })?
        .split(',')
        .map(str::to_owned)
        .collect();
    let mut skipped = 0;
    let rows = lines
        .map(|l| l.split(',').map(str::to_owned).collect::<Vec<_>>())
        .filter(|r| {
            let ok = r.len() == header.len();
            skipped += u64::from(!ok);
            ok
        })
        .collect();
    Ok((header, rows, skipped))
}

fn column(header: &[String], name: &str, path: &Path) -> Result<usize, LabelError> {
    header
        .iter()
        .position(|h| h == name)
        .ok_or_else(|| LabelError::MissingColumn {
            path: path.to_owned(),
            column: name.to_owned(),
            columns: header.join(", "),
        })
}

/// The label files of a labels folder: every `*nfstream_flows.csv` in it, sorted (so
/// `extra_nfstream_flows.csv` comes before `nfstream_flows.csv`; a flow in both keeps the first
/// file's label).
pub fn label_files(dir: &Path) -> Result<Vec<PathBuf>, LabelError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LabelError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with("nfstream_flows.csv"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(LabelError::NoLabelFiles {
            path: dir.to_owned(),
        });
    }
    Ok(files)
}

impl FlowLabels {
    /// Reads labels for `task` from `path`: one nfstream CSV, or a labels folder (every
    /// `*nfstream_flows.csv` in it, see [`label_files`]).
    pub fn load(path: &Path, task: Task) -> Result<Self, LabelError> {
        if !path.is_dir() {
            return Self::load_file(path, task);
        }
        let mut all = FlowLabels::default();
        for file in label_files(path)? {
            match Self::load_file(&file, task) {
                Ok(labels) => {
                    all.malformed_rows += labels.malformed_rows;
                    for (k, v) in labels.by_flow {
                        all.by_flow.entry(k).or_insert(v);
                    }
                }
                // A file with nothing for this task (the extra captures have no devices).
                Err(LabelError::NoLabels { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if all.by_flow.is_empty() {
            return Err(LabelError::NoLabels {
                path: path.to_owned(),
                task: task.name(),
            });
        }
        Ok(all)
    }

    /// Reads one label file `flows_csv` (nfstream's columns) for `task`.
    pub fn load_file(flows_csv: &Path, task: Task) -> Result<Self, LabelError> {
        let (header, rows, mut skipped) = csv_rows(flows_csv)?;
        let c = |n: &str| column(&header, n, flows_csv);
        let (path, src, sport, dst, dport, proto) = (
            c("path")?,
            c("src_ip")?,
            c("src_port")?,
            c("dst_ip")?,
            c("dst_port")?,
            c("protocol")?,
        );
        let (app, guessed, src_mac, dst_mac) = (
            c("application_name")?,
            c("application_is_guessed")?,
            c("src_mac")?,
            c("dst_mac")?,
        );
        let devices: HashMap<String, String> = match task {
            Task::Device => {
                let file = flows_csv.with_file_name("iot_sentinel_devices.csv");
                let (h, r, bad) = csv_rows(&file)?;
                skipped += bad;
                let (mac, ty) = (column(&h, "mac", &file)?, column(&h, "device_type", &file)?);
                r.into_iter()
                    .map(|row| (row[mac].to_ascii_lowercase(), row[ty].clone()))
                    .collect()
            }
            Task::Service => HashMap::new(),
        };
        let mut by_flow = HashMap::new();
        for row in rows {
            let Ok(proto_n) = row[proto].parse::<u8>() else {
                skipped += 1;
                continue;
            };
            if proto_n != 6 && proto_n != 17 {
                continue;
            }
            let label = match task {
                Task::Service => {
                    if row[guessed] != "0" {
                        continue;
                    }
                    let name = &row[app];
                    let app = name.split_once('.').map_or(name.as_str(), |(_, a)| a);
                    if app == "Unknown" || app.is_empty() {
                        continue;
                    }
                    app.to_owned()
                }
                Task::Device => {
                    if !row[path].starts_with("iot_sentinel/") {
                        continue;
                    }
                    let by_mac = |m: &str| devices.get(&m.to_ascii_lowercase()).cloned();
                    match by_mac(&row[src_mac]).or_else(|| by_mac(&row[dst_mac])) {
                        Some(device) => device,
                        None => continue,
                    }
                }
            };
            let (Ok(sp), Ok(dp), Ok(s), Ok(d)) = (
                row[sport].parse(),
                row[dport].parse(),
                row[src].parse(),
                row[dst].parse(),
            ) else {
                skipped += 1;
                continue;
            };
            let key = LabelKey {
                path: row[path].clone(),
                flow: FlowId {
                    src: s,
                    sport: sp,
                    dst: d,
                    dport: dp,
                    proto: proto_n,
                },
            };
            by_flow.entry(key).or_insert(label);
        }
        if by_flow.is_empty() {
            return Err(LabelError::NoLabels {
                path: flows_csv.to_owned(),
                task: task.name(),
            });
        }
        Ok(FlowLabels {
            by_flow,
            malformed_rows: skipped,
        })
    }

    /// The label of a flow, if it has one.
    pub fn get(&self, key: &LabelKey) -> Option<&str> {
        self.by_flow.get(key).map(String::as_str)
    }

    /// Capture paths (as written in the file) that have labels, sorted.
    pub fn files(&self) -> BTreeSet<&str> {
        self.by_flow.keys().map(|k| k.path.as_str()).collect()
    }

    /// Labeled flows.
    pub fn len(&self) -> usize {
        self.by_flow.len()
    }

    /// Whether no flow is labeled.
    pub fn is_empty(&self) -> bool {
        self.by_flow.is_empty()
    }

    /// The label-file path of a capture given on the command line: the longest label path
    /// that `capture` ends with (`../shared/data/ndpi/pcap/dns.pcap` -> `ndpi/pcap/dns.pcap`).
    pub fn path_of(&self, capture: &Path) -> Option<String> {
        let text = capture.to_string_lossy();
        self.files()
            .into_iter()
            .filter(|p| {
                text.ends_with(p) && {
                    let cut = text.len() - p.len();
                    cut == 0 || text[..cut].ends_with('/')
                }
            })
            .max_by_key(|p| p.len())
            .map(str::to_owned)
    }
}

/// The class index a true label scores as among `classes`: itself, else `other` where the
/// model has it (labels too rare to learn were grouped there), else none.
pub fn class_of(label: &str, classes: &[String]) -> Option<usize> {
    classes
        .iter()
        .position(|c| c == label)
        .or_else(|| classes.iter().position(|c| c == "other"))
}

/// The split bucket (0..100) of a capture file: FNV-1a of its label path with the seed, stable
/// across runs and machines. Files with `bucket < test_percent` are held out.
pub fn split_bucket(path: &str, seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in path.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % 100
}

/// The split the bundled models were trained with: seed 7, 25% of files held out.
pub const DEFAULT_SEED: u64 = 7;
/// See [`DEFAULT_SEED`].
pub const DEFAULT_TEST_PERCENT: u64 = 25;

/// Which capture files a run takes, by the bundled models' split. The held-out files are
/// halved again (by a second hash) so routing thresholds are calibrated on one half and the
/// cascade is scored on the other, never on the files it was tuned on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// Every input.
    All,
    /// Files the models were trained on.
    Train,
    /// Files held out from training (both halves).
    HeldOut,
    /// The held-out half used to calibrate routing thresholds.
    Calibration,
    /// The held-out half used to score the cascade.
    Test,
}

impl Choice for Split {
    const ALL: &'static [Self] = &[
        Split::All,
        Split::Train,
        Split::HeldOut,
        Split::Calibration,
        Split::Test,
    ];
    fn name(self) -> &'static str {
        match self {
            Split::All => "all",
            Split::Train => "train",
            Split::HeldOut => "held-out",
            Split::Calibration => "calibration",
            Split::Test => "test",
        }
    }
}

impl Split {
    /// Whether the capture with label path `path` is in this split.
    pub fn contains(self, path: &str) -> bool {
        let held_out = split_bucket(path, DEFAULT_SEED) < DEFAULT_TEST_PERCENT;
        let calibration = split_bucket(path, DEFAULT_SEED ^ 0xca1) < 50;
        match self {
            Split::All => true,
            Split::Train => !held_out,
            Split::HeldOut => held_out,
            Split::Calibration => held_out && calibration,
            Split::Test => held_out && !calibration,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;

    const HEADER: &str = "path,src_ip,src_mac,src_port,dst_ip,dst_mac,dst_port,protocol,application_name,application_is_guessed";

    #[test]
    fn service_labels_join_by_path_and_tuple() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("nfstream_flows.csv");
        std::fs::write(
            &csv,
            format!(
                "{HEADER}\n\
                 ndpi/pcap/a.pcap,10.0.0.1,aa,1000,10.0.0.2,bb,53,17,DNS.Google,0\n\
                 ndpi/pcap/a.pcap,10.0.0.1,aa,1001,10.0.0.2,bb,443,6,TLS,1\n\
                 ndpi/pcap/a.pcap,10.0.0.1,aa,1002,10.0.0.2,bb,0,1,ICMP,0\n\
                 ndpi/pcap/a.pcap,2001:db8::1,aa,1003,2001:db8::2,bb,443,6,TLS.Unknown,0\n\
                 bad,row\n"
            ),
        )
        .unwrap();
        let labels = FlowLabels::load(&csv, Task::Service).unwrap();
        assert_eq!(
            labels.len(),
            1,
            "guessed, non-TCP/UDP and Unknown rows are not labels"
        );
        assert_eq!(labels.malformed_rows, 1);
        let key = LabelKey {
            path: "ndpi/pcap/a.pcap".into(),
            flow: FlowId {
                src: "10.0.0.1".parse().unwrap(),
                sport: 1000,
                dst: "10.0.0.2".parse().unwrap(),
                dport: 53,
                proto: 17,
            },
        };
        assert_eq!(labels.get(&key), Some("Google"));
        assert_eq!(
            labels.path_of(Path::new("../shared/data/ndpi/pcap/a.pcap")),
            Some("ndpi/pcap/a.pcap".into())
        );
        assert_eq!(labels.path_of(Path::new("/x/dpi/pcap/a.pcap")), None);
    }

    #[test]
    fn a_labels_folder_merges_its_files_first_file_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("nfstream_flows.csv"),
            format!(
                "{HEADER}\n\
                 a.pcap,10.0.0.1,aa,1000,10.0.0.2,bb,53,17,DNS.Google,0\n\
                 b.pcap,10.0.0.1,aa,1000,10.0.0.2,bb,53,17,DNS,0\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("extra_nfstream_flows.csv"),
            format!("{HEADER}\nb.pcap,10.0.0.1,aa,1000,10.0.0.2,bb,53,17,DNS.Apple,0\nbad\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("files.csv"), "not,labels\n").unwrap();
        let labels = FlowLabels::load(dir.path(), Task::Service).unwrap();
        assert_eq!(labels.len(), 2);
        assert_eq!(labels.malformed_rows, 1);
        let key = |path: &str| LabelKey {
            path: path.into(),
            flow: FlowId {
                src: "10.0.0.1".parse().unwrap(),
                sport: 1000,
                dst: "10.0.0.2".parse().unwrap(),
                dport: 53,
                proto: 17,
            },
        };
        assert_eq!(labels.get(&key("a.pcap")), Some("Google"));
        assert_eq!(
            labels.get(&key("b.pcap")),
            Some("Apple"),
            "extra_ sorts first"
        );
        let empty = tempfile::tempdir().unwrap();
        let e = FlowLabels::load(empty.path(), Task::Service).unwrap_err();
        assert!(e.to_string().contains("no *nfstream_flows.csv"), "{e}");
    }

    #[test]
    fn missing_columns_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("nfstream_flows.csv");
        std::fs::write(&csv, "path,src_ip\n").unwrap();
        let e = FlowLabels::load(&csv, Task::Service)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no column \"src_port\""), "{e}");
        std::fs::write(&csv, "").unwrap();
        let e = FlowLabels::load(&csv, Task::Service)
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty file"), "{e}");
        std::fs::write(&csv, format!("{HEADER}\n")).unwrap();
        let e = FlowLabels::load(&csv, Task::Device)
            .unwrap_err()
            .to_string();
        assert!(e.contains("iot_sentinel_devices.csv"), "{e}");
    }

    #[test]
    fn unknown_labels_score_as_other() {
        let classes: Vec<String> = ["DNS", "TLS", "other"].map(String::from).to_vec();
        assert_eq!(class_of("TLS", &classes), Some(1));
        assert_eq!(class_of("Rare", &classes), Some(2));
        assert_eq!(class_of("Rare", &classes[..2]), None);
        assert!(split_bucket("ndpi/pcap/a.pcap", 7) < 100);
    }
}
