//! `cargo xtask models`: retrains the bundled models of both tasks from `../shared/data` with
//! `serveflow-train craft` (candidates, Pareto front, picked models) into `models/<task>/`,
//! adds the service task's 1-packet `first` stage, then calibrates both cascades' routing
//! thresholds with `serveflow calibrate` on the calibration half of the held-out captures: the
//! commands the README and `models/README.md` record.

use std::{io::Write as _, process::Command};

use crate::{cargo, root};

/// The service task's first stage: statistics of the first packet, 4 rounds x 8 leaves (on
/// the crafting table's Pareto front). Only its fast model is kept, so the slow model it also
/// trains is kept tiny.
const FIRST_STAGE: [&str; 14] = [
    "train",
    "--task",
    "service",
    "--data",
    "../shared/data",
    "--fast-packets",
    "1",
    "--fast-rounds",
    "4",
    "--fast-leaves",
    "8",
    "--epochs",
    "1",
    "--hidden=8,8",
];

pub fn run() -> anyhow::Result<()> {
    let data = root().join("../shared/data");
    if !data.join("labels/nfstream_flows.csv").is_file() {
        anyhow::bail!(
            "{} is absent: the bundled models are trained from its labeled captures",
            data.display()
        );
    }
    crate::exec(cargo().args([
        "build",
        "--release",
        "-p",
        "serveflow-train",
        "-p",
        "serveflow-userspace",
    ]))?;
    let trainer = root().join("target/release/serveflow-train");
    let serveflow = root().join("target/release/serveflow");
    for task in ["service", "device"] {
        crate::exec(Command::new(&trainer).current_dir(root()).args([
            "craft",
            "--task",
            task,
            "--data",
            "../shared/data",
        ]))?;
    }
    let first = tempfile_dir()?;
    crate::exec(
        Command::new(&trainer)
            .current_dir(root())
            .args(FIRST_STAGE)
            .arg("--out")
            .arg(&first),
    )?;
    let service = root().join("models/service");
    std::fs::copy(first.join("fast.txt"), service.join("first.txt"))?;
    let mut manifest = std::fs::OpenOptions::new()
        .append(true)
        .open(service.join("serveflow-model.toml"))?;
    writeln!(
        manifest,
        "\n[[early]]\nname = \"first\"\nmodel = \"first.txt\"\nfeatures = \"stats\"\npackets = 1\n\
         routing = {{ uncertainty = \"least_confidence\", threshold = -1.0 }}"
    )?;
    for task in ["service", "device"] {
        crate::exec(Command::new(&serveflow).current_dir(root()).args([
            "calibrate",
            "--models",
            &format!("models/{task}"),
            "--labels",
            "../shared/data/labels/nfstream_flows.csv",
            "--max-drop",
            "0.005",
            "../shared/data",
        ]))?;
    }
    std::fs::remove_dir_all(&first)?;
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("serveflow-first-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
