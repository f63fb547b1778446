//! The labeled corpus: every labeled flow of a data folder (`../shared/data` layout) with its
//! first packets recorded, so the features of any stage are computed later by serveflow's own
//! feature code ([`FeatureState`], fed the recorded packets exactly as the flow table fed
//! them), from one pass over the captures.
//!
//! Labels come from every `labels/*nfstream_flows.csv` through `serveflow::labels` (the same
//! join replay and calibration score against): capture path and 5-tuple (initiator as `src` on
//! both sides). Service task: the app part of `application_name`, confident rows only. Device
//! task: the IoT Sentinel device type of the flow's source or destination MAC.
//!
//! Exact duplicates (the same feature row and label) are removed before any split, so a flow
//! and its copy never sit on both sides of one (duplicated flows inflate published accuracy,
//! Jerabek et al. 2025). The feature row compared is the richest any stage can ask for: masked
//! header bits, sizes, gaps, first payload bytes and ports of the first [`MAX_PACKETS`]
//! packets, and the server name.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasher as _, Hasher as _},
    path::{Path, PathBuf},
};

use serveflow::{
    extract::extract,
    features::{FeatureSpec, FeatureState},
    flow::{Direction, FlowConfig, FlowState},
    labels::{FlowLabels, LabelKey},
    parse::{IpVersion, Packet},
    services::ServiceMap,
};

use crate::progress::STEPS;

/// Which labels to learn: the library's task, so training and scoring join labels alike.
pub use serveflow::labels::Task;

/// Packets recorded per flow: the most any stage of the crafting grid waits for.
pub const MAX_PACKETS: usize = 8;

/// The spec whose values (plus the server name and label) identify duplicate flows.
const FINGERPRINT: &str = "stats,ports,seq,bytes:64,nprint,nprint-masked";

/// One packet as the flow table handed it to the flow's state.
#[derive(Clone, Debug)]
struct Recorded {
    ts_ns: u64,
    dir: Direction,
    frame: Vec<u8>,
    ip: IpVersion,
    l3: usize,
    l4: usize,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    proto: u8,
}

/// A flow state that records the first packets (and when the server name became known).
#[derive(Clone, Debug, Default)]
struct Recorder {
    packets: Vec<Recorded>,
    /// Index of the packet after which the name was known, and the name.
    name: Option<(usize, String)>,
}

impl FlowState for Recorder {
    type Config = ();

    fn new(_: &()) -> Self {
        Recorder::default()
    }

    fn update(&mut self, ts_ns: u64, p: &Packet<'_>, dir: Direction, name: Option<&str>) {
        if self.packets.len() >= MAX_PACKETS {
            return;
        }
        if self.name.is_none() {
            self.name = name.map(|n| (self.packets.len(), n.to_owned()));
        }
        self.packets.push(Recorded {
            ts_ns,
            dir,
            frame: p.frame.to_vec(),
            ip: p.ip,
            l3: p.l3,
            l4: p.l4,
            src: p.src,
            dst: p.dst,
            sport: p.sport,
            dport: p.dport,
            proto: p.proto,
        });
    }
}

/// One labeled flow.
#[derive(Clone, Debug)]
pub struct Example {
    /// Capture the flow came from (its label path: the split unit).
    pub file: String,
    /// Label name.
    pub label: String,
    recorder: Recorder,
}

impl Example {
    /// Appends the flow's values for `spec` (packets and horizon included), computed by the
    /// serving feature code from the recorded packets.
    pub fn features(&self, spec: &FeatureSpec, out: &mut Vec<f32>) {
        let mut state = FeatureState::new(spec);
        let r = &self.recorder;
        for (i, p) in r.packets.iter().enumerate() {
            let packet = Packet {
                frame: &p.frame,
                ip: p.ip,
                l3: p.l3,
                l4: p.l4,
                src: p.src,
                dst: p.dst,
                sport: p.sport,
                dport: p.dport,
                proto: p.proto,
            };
            let name = r
                .name
                .as_ref()
                .filter(|(at, _)| *at <= i)
                .map(|(_, n)| n.as_str());
            state.update(p.ts_ns, &packet, p.dir, name);
        }
        state.values(out);
    }

    /// The data set the capture belongs to: its path's first folder (`ndpi`, `iot_sentinel`,
    /// `tcpdump`, ...).
    pub fn source(&self) -> &str {
        source_of(&self.file)
    }

    /// The server name the flow carried, if any.
    pub fn server_name(&self) -> Option<&str> {
        self.recorder.name.as_ref().map(|(_, n)| n.as_str())
    }

    /// The (proto, initiator port, responder port) of the first packet.
    pub fn ports(&self) -> Option<(u8, u16, u16)> {
        let p = self.recorder.packets.first()?;
        Some((p.proto, p.sport, p.dport))
    }

    /// A 128-bit hash of the flow's feature row for `spec` and its server name (not its
    /// label).
    fn row_id(&self, spec: &FeatureSpec, scratch: &mut Vec<f32>) -> (u64, u64) {
        scratch.clear();
        self.features(spec, scratch);
        let mut h = [
            foldhash::fast::FixedState::with_seed(0x5eed_0001).build_hasher(),
            foldhash::fast::FixedState::with_seed(0x5eed_0002).build_hasher(),
        ];
        for h in &mut h {
            h.write(self.server_name().unwrap_or("").as_bytes());
            h.write_u8(0xff);
            for v in scratch.iter() {
                h.write_u32(v.to_bits());
            }
        }
        (h[0].finish(), h[1].finish())
    }
}

/// The first folder of a label path.
pub fn source_of(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

/// What building the corpus read and skipped.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DatasetReport {
    /// Flows extracted from the labeled captures.
    pub flows: u64,
    /// Flows with a label.
    pub labeled: u64,
    /// Captures with labels but without any labeled flow.
    pub files_without_labels: u64,
    /// Captures named in the labels that are not in the data folder.
    pub missing: Vec<String>,
    /// Captures that could not be read, with the reason.
    pub unreadable: Vec<String>,
    /// Label rows skipped because their fields were wrong.
    pub malformed_label_rows: u64,
    /// Labeled flows removed as exact duplicates of an earlier one (same feature row and
    /// label), in all and per source.
    pub duplicates_removed: u64,
    /// See [`Self::duplicates_removed`].
    pub duplicates_by_source: BTreeMap<String, u64>,
    /// Distinct feature rows that carry more than one label (kept: they are not duplicates,
    /// but no model can get all of them right).
    pub conflicting_rows: u64,
    /// Labeled flows kept, per source.
    pub flows_by_source: BTreeMap<String, u64>,
}

/// Every labeled flow of a data folder, duplicates removed.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// The task the labels are for.
    pub task: Task,
    /// Labeled flows, in capture order.
    pub examples: Vec<Example>,
    /// What was read and skipped.
    pub report: DatasetReport,
}

impl Corpus {
    /// Extracts every capture the labels name (on all cores), keeps its labeled flows and
    /// removes exact duplicates.
    pub fn build(data: &Path, task: Task) -> anyhow::Result<Corpus> {
        let labels = FlowLabels::load(&data.join("labels"), task)?;
        let files: Vec<String> = labels.files().into_iter().map(str::to_owned).collect();
        let mut report = DatasetReport {
            malformed_label_rows: labels.malformed_rows,
            ..DatasetReport::default()
        };
        STEPS.begin("reading the labeled captures");
        STEPS.count(files.len() as u64, "files");
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = files.len().div_ceil(threads.max(1)).max(1);
        let parts: Vec<Vec<FileResult>> = std::thread::scope(|scope| {
            let handles: Vec<_> = files
                .chunks(chunk)
                .map(|part| {
                    let labels = &labels;
                    scope.spawn(move || {
                        part.iter()
                            .map(|f| {
                                let r = read_file(data, f, labels);
                                STEPS.step();
                                r
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join())
                .collect::<Result<_, _>>()
        })
        .map_err(|_| anyhow::anyhow!("a capture reader thread panicked"))?;
        let mut examples = Vec::new();
        for r in parts.into_iter().flatten() {
            report.flows += r.flows;
            match r.outcome {
                FileOutcome::Missing => report.missing.push(r.file),
                FileOutcome::Unreadable(e) => report.unreadable.push(format!("{}: {e}", r.file)),
                FileOutcome::Read if r.examples.is_empty() => report.files_without_labels += 1,
                FileOutcome::Read => {}
            }
            report.labeled += r.examples.len() as u64;
            examples.extend(r.examples);
        }
        if examples.is_empty() {
            anyhow::bail!(
                "{}: no capture yielded a labeled flow ({} flows read, {} captures missing, {} unreadable)",
                data.display(),
                report.flows,
                report.missing.len(),
                report.unreadable.len()
            );
        }
        STEPS.begin("removing duplicate flows");
        let examples = dedup(examples, &mut report)?;
        Ok(Corpus {
            task,
            examples,
            report,
        })
    }
}

/// Removes exact duplicates (first occurrence kept) and counts conflicting rows.
fn dedup(examples: Vec<Example>, report: &mut DatasetReport) -> anyhow::Result<Vec<Example>> {
    let spec = FeatureSpec {
        packets: MAX_PACKETS as u32,
        ..FINGERPRINT.parse::<FeatureSpec>()?
    };
    // Row -> the labels it was seen with.
    let mut rows: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    let mut scratch = Vec::new();
    let mut kept = Vec::with_capacity(examples.len());
    for e in examples {
        let labels = rows.entry(e.row_id(&spec, &mut scratch)).or_default();
        if labels.contains(&e.label) {
            report.duplicates_removed += 1;
            *report
                .duplicates_by_source
                .entry(e.source().to_owned())
                .or_default() += 1;
            continue;
        }
        if !labels.is_empty() {
            report.conflicting_rows += 1;
        }
        labels.push(e.label.clone());
        *report
            .flows_by_source
            .entry(e.source().to_owned())
            .or_default() += 1;
        kept.push(e);
    }
    Ok(kept)
}

enum FileOutcome {
    Read,
    Missing,
    Unreadable(String),
}

struct FileResult {
    file: String,
    flows: u64,
    examples: Vec<Example>,
    outcome: FileOutcome,
}

fn read_file(data: &Path, file: &str, labels: &FlowLabels) -> FileResult {
    let path: PathBuf = data.join(file);
    let mut r = FileResult {
        file: file.to_owned(),
        flows: 0,
        examples: Vec::new(),
        outcome: FileOutcome::Read,
    };
    if !path.is_file() {
        r.outcome = FileOutcome::Missing;
        return r;
    }
    let result = extract::<Recorder>(
        &[path],
        FlowConfig::default(),
        (),
        &mut ServiceMap::default(),
        None,
        |flow, _, _| {
            r.flows += 1;
            let key = LabelKey {
                path: file.to_owned(),
                flow: flow.id(),
            };
            if let Some(label) = labels.get(&key) {
                r.examples.push(Example {
                    file: file.to_owned(),
                    label: label.to_owned(),
                    recorder: flow.state,
                });
            }
        },
    );
    if let Err(e) = result {
        r.outcome = FileOutcome::Unreadable(e.to_string());
    }
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;

    #[test]
    fn sources_are_the_first_folder() {
        assert_eq!(source_of("ndpi/pcap/a.pcap"), "ndpi");
        assert_eq!(source_of("a.pcap"), "a.pcap");
    }
}
