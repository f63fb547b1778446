//! Labeled flows from the captures in a data folder (`../shared/data` layout), with the
//! features of both stages computed by serveflow's own extraction code, so training sees
//! exactly what serving will compute.
//!
//! Labels come from `labels/nfstream_flows.csv`, joined by capture path and 5-tuple (initiator
//! as `src` on both sides). Service task: the app part of `application_name`, confident rows
//! only. Device task: the IoT Sentinel device type of the flow's source or destination MAC.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use serveflow::{
    extract::{extract, ip},
    features::{FeatureSpec, StagePair},
    flow::FlowConfig,
    services::ServiceMap,
};

/// Which labels to learn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Task {
    /// Application/service (nDPI's app name).
    Service,
    /// IoT device type.
    Device,
}

impl Task {
    /// The task's name in manifests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Task::Service => "service",
            Task::Device => "device",
        }
    }
}

/// One labeled flow.
#[derive(Clone, Debug)]
pub struct Example {
    /// Capture the flow came from (the split unit).
    pub file: String,
    /// Label name.
    pub label: String,
    /// Fast-stage features.
    pub fast: Vec<f32>,
    /// Slow-stage features.
    pub slow: Vec<f32>,
}

/// What building the dataset read and skipped.
#[derive(Debug, Default)]
pub struct DatasetReport {
    /// Flows extracted.
    pub flows: u64,
    /// Flows with a label.
    pub labeled: u64,
    /// Captures without any labeled flow.
    pub files_without_labels: u64,
    /// Captures that could not be read.
    pub unreadable: Vec<String>,
    /// Label rows skipped because their field count was wrong.
    pub malformed_label_rows: u64,
}

type Key = (String, String, u16, String, u16, u8);

/// Header and rows of a plain CSV file; rows whose field count differs from the header's
/// (quoted commas, truncation) are skipped and counted.
fn csv_rows(path: &Path) -> anyhow::Result<(Vec<String>, Vec<Vec<String>>, u64)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .context("empty file")?
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

fn column(header: &[String], name: &str, file: &Path) -> anyhow::Result<usize> {
    header.iter().position(|h| h == name).with_context(|| {
        format!(
            "{}: no column {name:?} (columns: {})",
            file.display(),
            header.join(", ")
        )
    })
}

/// Flow labels for `task`, keyed by (path, src, sport, dst, dport, proto), and the number of
/// malformed label rows skipped.
pub fn labels(data: &Path, task: Task) -> anyhow::Result<(HashMap<Key, String>, u64)> {
    let flows = data.join("labels/nfstream_flows.csv");
    let (header, rows, mut skipped) = csv_rows(&flows)?;
    let c = |n: &str| column(&header, n, &flows);
    let (path, src, sport, dst, dport, proto) = (
        c("path")?,
        c("src_ip")?,
        c("src_port")?,
        c("dst_ip")?,
        c("dst_port")?,
        c("protocol")?,
    );
    let devices: HashMap<String, String> = match task {
        Task::Device => {
            let file = data.join("labels/iot_sentinel_devices.csv");
            let (h, r, bad) = csv_rows(&file)?;
            skipped += bad;
            let (mac, ty) = (column(&h, "mac", &file)?, column(&h, "device_type", &file)?);
            r.into_iter()
                .map(|row| (row[mac].to_ascii_lowercase(), row[ty].clone()))
                .collect()
        }
        Task::Service => HashMap::new(),
    };
    let (app, guessed, src_mac, dst_mac) = (
        c("application_name")?,
        c("application_is_guessed")?,
        c("src_mac")?,
        c("dst_mac")?,
    );
    let mut out = HashMap::new();
    for row in rows {
        let Ok(proto_n) = row[proto].parse::<u8>() else {
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
        let (Ok(sp), Ok(dp)) = (row[sport].parse(), row[dport].parse()) else {
            continue;
        };
        let key = (
            row[path].clone(),
            row[src].clone(),
            sp,
            row[dst].clone(),
            dp,
            proto_n,
        );
        out.entry(key).or_insert(label);
    }
    if out.is_empty() {
        bail!(
            "{}: no usable labels for the {task:?} task",
            flows.display()
        );
    }
    Ok((out, skipped))
}

/// Extracts every capture that has labels and returns its labeled flows.
pub fn build(
    data: &Path,
    task: Task,
    fast: FeatureSpec,
    slow: FeatureSpec,
) -> anyhow::Result<(Vec<Example>, DatasetReport)> {
    let (labels, malformed) = labels(data, task)?;
    let mut files: BTreeMap<String, ()> = BTreeMap::new();
    for key in labels.keys() {
        files.insert(key.0.clone(), ());
    }
    let mut report = DatasetReport {
        malformed_label_rows: malformed,
        ..DatasetReport::default()
    };
    let mut examples = Vec::new();
    for file in files.keys() {
        let path: PathBuf = data.join(file);
        let mut found = 0u64;
        let result = extract::<StagePair>(
            &[path],
            FlowConfig::default(),
            (fast, slow),
            &mut ServiceMap::default(),
            None,
            |flow, _, _| {
                report.flows += 1;
                let key = (
                    file.clone(),
                    ip(flow.src).to_string(),
                    flow.sport,
                    ip(flow.dst).to_string(),
                    flow.dport,
                    flow.proto,
                );
                if let Some(label) = labels.get(&key) {
                    found += 1;
                    let (mut f, mut s) = (Vec::new(), Vec::new());
                    flow.state.fast.values(&mut f);
                    flow.state.slow.values(&mut s);
                    examples.push(Example {
                        file: file.clone(),
                        label: label.clone(),
                        fast: f,
                        slow: s,
                    });
                }
            },
        );
        if let Err(e) = result {
            report.unreadable.push(format!("{file}: {e}"));
        }
        if found == 0 {
            report.files_without_labels += 1;
        }
        report.labeled += found;
    }
    Ok((examples, report))
}
