//! The bundled models (`models/<task>/`): they load through the serving code, and retraining
//! them with the settings recorded in their `metrics.json` reproduces the recorded held-out
//! scores (needs `../shared/data`; skipped with a message when it is absent). Also: bad label
//! files and data folders give clear errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use std::path::{Path, PathBuf};

use serde_json::Value;
use serveflow::{features::FeatureSpec, model::dir::ModelDir};
use serveflow_train::{
    dataset::Task,
    mlp::TrainConfig,
    pipeline::{self, FastParams, SplitOptions, TrainOptions},
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn data() -> Option<PathBuf> {
    let d = root().join("../shared/data");
    if d.join("labels/nfstream_flows.csv").is_file() {
        Some(d)
    } else {
        eprintln!(
            "SKIP: {} is absent; the retraining check needs the labeled captures",
            d.display()
        );
        None
    }
}

fn recorded(task: &str) -> Value {
    let path = root().join("models").join(task).join("metrics.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn bundled_models_load_and_match_their_manifests() {
    for task in ["service", "device"] {
        let dir = root().join("models").join(task);
        let m = ModelDir::load(&dir).unwrap_or_else(|e| panic!("{task}: {e}"));
        let r = recorded(task);
        assert_eq!(m.manifest.task, task);
        let classes: Vec<String> = serde_json::from_value(r["classes"].clone()).unwrap();
        assert_eq!(m.manifest.classes, classes);
        assert!(
            m.manifest.fast.packets <= 2,
            "the fast stage waits for at most 2 packets"
        );
        assert!(m.manifest.slow.packets >= m.manifest.fast.packets);
        // Slow-only must be a real improvement over fast-only.
        let (f, s) = (
            r["fast"]["scores"]["macro_f1"].as_f64().unwrap(),
            r["slow"]["scores"]["macro_f1"].as_f64().unwrap(),
        );
        assert!(
            s > f + 0.05,
            "{task}: slow-only macro-F1 {s:.3} is not well above fast-only {f:.3}"
        );
        // Nothing silently dropped: grouped labels are listed and their flows counted as other.
        let grouped = r["grouped_as_other"].as_object().unwrap();
        if !grouped.is_empty() {
            assert_eq!(classes.last().map(String::as_str), Some("other"));
        }
    }
}

#[test]
fn retraining_reproduces_the_recorded_scores() {
    let Some(data) = data() else { return };
    for (task, t) in [("service", Task::Service), ("device", Task::Device)] {
        let r = recorded(task);
        let split = &r["split"];
        let spec = |stage: &str| -> FeatureSpec {
            let s: FeatureSpec = r[stage]["features"].as_str().unwrap().parse().unwrap();
            FeatureSpec {
                packets: u32::try_from(r[stage]["packets"].as_u64().unwrap()).unwrap(),
                ..s
            }
        };
        let out = tempfile::tempdir().unwrap();
        let opts = TrainOptions {
            split: SplitOptions {
                data: data.clone(),
                task: t,
                min_flows: usize::try_from(split["min_flows"].as_u64().unwrap()).unwrap(),
                min_files: usize::try_from(split["min_files"].as_u64().unwrap()).unwrap(),
                test_percent: split["test_percent"].as_u64().unwrap(),
                seed: split["seed"].as_u64().unwrap(),
            },
            out: out.path().to_owned(),
            fast: spec("fast"),
            slow: spec("slow"),
            fast_params: serde_json::from_value::<FastParams>(r["fast"]["fast_params"].clone())
                .unwrap(),
            mlp: serde_json::from_value::<TrainConfig>(r["slow"]["mlp"].clone()).unwrap(),
            command: "test".into(),
        };
        let report = pipeline::train(&opts).unwrap();
        for (stage, got) in [("fast", &report.fast.scores), ("slow", &report.slow.scores)] {
            for (metric, value) in [("accuracy", got.accuracy), ("macro_f1", got.macro_f1)] {
                let want = r[stage]["scores"][metric].as_f64().unwrap();
                assert!(
                    (value - want).abs() <= 0.01,
                    "{task} {stage} {metric}: retrained {value:.4}, recorded {want:.4}"
                );
            }
        }
    }
}

fn split_options(data: &Path) -> SplitOptions {
    SplitOptions {
        data: data.to_owned(),
        task: Task::Service,
        min_flows: 1,
        min_files: 1,
        test_percent: 25,
        seed: 1,
    }
}

#[test]
fn bad_label_files_and_data_folders_are_clear_errors() {
    let stats: FeatureSpec = "stats".parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels");
    std::fs::create_dir_all(&labels).unwrap();

    // No label file at all.
    let e = pipeline::Split::prepare(&split_options(dir.path()), stats, stats)
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("nfstream_flows.csv"), "{e:#}");

    // A label file without a column the join needs.
    std::fs::write(
        labels.join("nfstream_flows.csv"),
        "path,src_ip,src_port,dst_ip,dst_port,colour\n",
    )
    .unwrap();
    let e = pipeline::Split::prepare(&split_options(dir.path()), stats, stats)
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("no column \"protocol\""), "{e:#}");

    // Labels that point at captures that are not there: counted as unreadable, then an error
    // saying nothing could be learnt, not an empty model.
    std::fs::write(
        labels.join("nfstream_flows.csv"),
        "path,src_ip,src_mac,src_port,dst_ip,dst_mac,dst_port,protocol,application_name,application_is_guessed,extra\n\
         ndpi/pcap/missing.pcap,10.0.0.1,aa,1000,10.0.0.2,bb,53,17,DNS.Google,0,x\n",
    )
    .unwrap();
    let e = pipeline::Split::prepare(&split_options(dir.path()), stats, stats)
        .err()
        .unwrap();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("no capture yielded a labeled flow") && msg.contains("1 unreadable"),
        "{msg}"
    );
}
