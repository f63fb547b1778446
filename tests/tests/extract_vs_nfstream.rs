//! `serveflow extract` over the real labeled captures in `../shared/data`, against the flows
//! nfstream found in them (`labels/nfstream_flows.csv`, same 120 s / 1800 s timeouts): TCP and
//! UDP flow counts must agree within 2% in total and exactly for at least 95% of the files.
//! Skipped, with a message, where the data folder is absent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use serveflow::{extract::extract, flow::FlowConfig, services::ServiceMap};

fn data_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
    dir.join("labels/nfstream_flows.csv")
        .is_file()
        .then_some(dir)
}

/// TCP/UDP flows per capture path according to nfstream.
fn nfstream_counts(dir: &Path) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(dir.join("labels/nfstream_flows.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (path, protocol) = (col("path"), col("protocol"));
    let mut counts = BTreeMap::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        if matches!(fields.get(protocol), Some(&"6") | Some(&"17")) {
            *counts.entry(fields[path].to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

/// Every capture listed in files.csv.
fn capture_paths(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("labels/files.csv")).unwrap();
    text.lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn flow_counts_match_nfstream() {
    let Some(dir) = data_dir() else {
        eprintln!("SKIPPED: ../shared/data is absent; this test needs the labeled captures");
        return;
    };
    let expected = nfstream_counts(&dir);
    let mut ours: HashMap<String, u64> = HashMap::new();
    let mut open_errors = Vec::new();
    for rel in capture_paths(&dir) {
        let path = dir.join(&rel);
        let mut n = 0u64;
        match extract::<()>(
            &[path],
            FlowConfig::default(),
            (),
            &mut ServiceMap::default(),
            None,
            |_, _, _| n += 1,
        ) {
            Ok(_) => {
                ours.insert(rel, n);
            }
            Err(e) => open_errors.push(format!("{rel}: {e}")),
        }
    }
    let files: Vec<&String> = ours.keys().collect();
    let mut mismatched = Vec::new();
    let (mut total_ours, mut total_theirs) = (0u64, 0u64);
    for f in &files {
        let o = ours[*f];
        let t = expected.get(*f).copied().unwrap_or(0);
        total_ours += o;
        total_theirs += t;
        if o != t {
            mismatched.push(format!("{f}: serveflow {o}, nfstream {t}"));
        }
    }
    mismatched.sort();
    eprintln!(
        "flows: serveflow {total_ours}, nfstream {total_theirs} over {} files; {} files differ; {} unreadable",
        files.len(),
        mismatched.len(),
        open_errors.len()
    );
    for m in mismatched.iter().chain(open_errors.iter()) {
        eprintln!("  {m}");
    }
    let diff = (total_ours as f64 - total_theirs as f64).abs() / total_theirs as f64;
    assert!(diff <= 0.02, "total differs by {:.2}%", diff * 100.0);
    let matching = files.len() - mismatched.len();
    assert!(
        matching as f64 >= 0.95 * (files.len() + open_errors.len()) as f64,
        "only {matching} of {} files match",
        files.len() + open_errors.len()
    );
}

/// Rows join to nfstream's labels by 5-tuple (initiator as src on both sides), and where both
/// read a TLS/HTTP server name from a flow, the names agree.
#[test]
fn rows_join_labels_and_server_names_agree() {
    let Some(dir) = data_dir() else {
        eprintln!("SKIPPED: ../shared/data is absent; this test needs the labeled captures");
        return;
    };
    let text = std::fs::read_to_string(dir.join("labels/nfstream_flows.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let c = [
        col("path"),
        col("src_ip"),
        col("src_port"),
        col("dst_ip"),
        col("dst_port"),
        col("protocol"),
        col("requested_server_name"),
    ];
    // (path, src, sport, dst, dport, proto) -> nfstream's server name
    let mut labels: HashMap<(String, String, String, String, String, String), String> =
        HashMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != header.len() || !matches!(f[c[5]], "6" | "17") {
            continue;
        }
        let key = (f[c[0]], f[c[1]], f[c[2]], f[c[3]], f[c[4]], f[c[5]]);
        let key = (
            key.0.to_owned(),
            key.1.to_owned(),
            key.2.to_owned(),
            key.3.to_owned(),
            key.4.to_owned(),
            key.5.to_owned(),
        );
        labels.insert(key, f[c[6]].to_owned());
    }
    let mut matched = std::collections::HashSet::new();
    let (mut names_both, mut names_agree) = (0u64, 0u64);
    let mut disagreements = Vec::new();
    for rel in capture_paths(&dir) {
        let _ = extract::<()>(
            &[dir.join(&rel)],
            FlowConfig::default(),
            (),
            &mut ServiceMap::default(),
            None,
            |flow, end, services| {
                let r = serveflow::extract::FlowRecord::new(&flow, end, services);
                let key = (
                    rel.clone(),
                    r.flow.src.to_string(),
                    r.flow.sport.to_string(),
                    r.flow.dst.to_string(),
                    r.flow.dport.to_string(),
                    r.flow.proto.to_string(),
                );
                if let Some(theirs) = labels.get(&key) {
                    matched.insert(key.clone());
                    let ours = flow.server_name.as_deref().unwrap_or("");
                    if !ours.is_empty() && !theirs.is_empty() {
                        names_both += 1;
                        if ours == theirs.to_ascii_lowercase() {
                            names_agree += 1;
                        } else if disagreements.len() < 10 {
                            disagreements
                                .push(format!("{rel}: ours {ours:?}, nfstream {theirs:?}"));
                        }
                    }
                }
            },
        );
    }
    let joined = matched.len();
    eprintln!(
        "joined {joined} of {} labeled TCP/UDP 5-tuples; server names: {names_agree} of {names_both} agree",
        labels.len()
    );
    for d in &disagreements {
        eprintln!("  {d}");
    }
    assert!(
        joined as f64 >= 0.97 * labels.len() as f64,
        "too few rows join the labels"
    );
    assert!(
        names_both > 1000,
        "too few server names compared: {names_both}"
    );
    assert!(
        names_agree as f64 >= 0.98 * names_both as f64,
        "server names disagree"
    );
}
