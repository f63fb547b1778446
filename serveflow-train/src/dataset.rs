//! Labeled flows from the captures in a data folder (`../shared/data` layout), with the
//! features of both stages computed by serveflow's own extraction code, so training sees
//! exactly what serving will compute.
//!
//! Labels come from `labels/nfstream_flows.csv` through `serveflow::labels` (the same join
//! replay and calibration score against): capture path and 5-tuple (initiator
//! as `src` on both sides). Service task: the app part of `application_name`, confident rows
//! only. Device task: the IoT Sentinel device type of the flow's source or destination MAC.

use std::path::{Path, PathBuf};

use serveflow::{
    extract::{extract, ip},
    features::{FeatureSpec, StagePair},
    flow::FlowConfig,
    labels::{FlowLabels, LabelKey},
    services::ServiceMap,
};

/// Which labels to learn: the library's task, so training and scoring join labels alike.
pub use serveflow::labels::Task;

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

/// Extracts every capture that has labels and returns its labeled flows.
pub fn build(
    data: &Path,
    task: Task,
    fast: FeatureSpec,
    slow: FeatureSpec,
) -> anyhow::Result<(Vec<Example>, DatasetReport)> {
    let labels = FlowLabels::load(&data.join("labels/nfstream_flows.csv"), task)?;
    let files: Vec<String> = labels.files().into_iter().map(str::to_owned).collect();
    let mut report = DatasetReport {
        malformed_label_rows: labels.malformed_rows,
        ..DatasetReport::default()
    };
    let mut examples = Vec::new();
    for file in &files {
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
                let key = LabelKey {
                    path: file.clone(),
                    src: ip(flow.src),
                    sport: flow.sport,
                    dst: ip(flow.dst),
                    dport: flow.dport,
                    proto: flow.proto,
                };
                if let Some(label) = labels.get(&key) {
                    found += 1;
                    let (mut f, mut s) = (Vec::new(), Vec::new());
                    flow.state.fast.values(&mut f);
                    flow.state.slow.values(&mut s);
                    examples.push(Example {
                        file: file.clone(),
                        label: label.to_owned(),
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
