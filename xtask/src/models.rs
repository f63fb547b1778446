//! `cargo xtask models`: rebuilds the bundled models of both tasks from `../shared/data`:
//! `serveflow-train craft` (candidates for the first, fast and slow stages, their Pareto
//! fronts, baselines, the picked stages) into `models/<task>/`, then `serveflow calibrate`
//! (temperatures and routing thresholds on the calibration half of the held-out captures,
//! checked on the test half), then the leave-one-source-out check of the service recipe, whose
//! table goes into `models/README.md`: the commands the README and `models/README.md` record.

use std::process::Command;

use anyhow::Context as _;

use crate::{cargo, root};

/// Where the leave-one-source-out table sits in `models/README.md`.
const LOSO_BEGIN: &str = "<!-- loso:begin (cargo xtask models writes this table) -->";
const LOSO_END: &str = "<!-- loso:end -->";

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
        let dir = format!("models/{task}");
        crate::exec(
            Command::new(&serveflow)
                .current_dir(root())
                .args([
                    "calibrate",
                    "--models",
                    &dir,
                    "--labels",
                    "../shared/data/labels",
                ])
                .args(target(task))
                .args(["--in-place", "../shared/data"]),
        )?;
        // The manifest calibration replaced is craft's uncalibrated one: nothing to keep.
        let prev = root().join(&dir).join("serveflow-model.toml.prev");
        std::fs::remove_file(&prev).with_context(|| format!("removing {}", prev.display()))?;
    }
    crate::exec(Command::new(&trainer).current_dir(root()).args([
        "loso",
        "--models",
        "models/service",
        "--data",
        "../shared/data",
    ]))?;
    loso_into_readme()
}

/// Each task's calibration target. Service: the cascade within half a point of slow-only with
/// the fewest escalations (its inline stages are about as good as the slow one: ~2% escalate,
/// ~98% of flows decided within 16 ms). Device: the best macro-F1 with at most 30% escalated
/// (its slow stage is clearly better on some devices; the mix beats both stages alone on the
/// test half, where the half-point target fitted on the calibration half escalated 1.4% and
/// lost 2.5 points of macro-F1).
fn target(task: &str) -> [&'static str; 2] {
    match task {
        "device" => ["--max-escalated", "30"],
        _ => ["--max-drop", "0.005"],
    }
}

/// Replaces the table between the markers of `models/README.md` with `models/service/loso.md`'s.
fn loso_into_readme() -> anyhow::Result<()> {
    let readme = root().join("models/README.md");
    let text = std::fs::read_to_string(&readme)?;
    let loso = std::fs::read_to_string(root().join("models/service/loso.md"))?;
    let table: String = loso
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| format!("{l}\n"))
        .collect();
    let (Some(a), Some(b)) = (text.find(LOSO_BEGIN), text.find(LOSO_END)) else {
        anyhow::bail!(
            "{}: no {LOSO_BEGIN} ... {LOSO_END} markers for the leave-one-source-out table",
            readme.display()
        );
    };
    let updated = format!("{}{LOSO_BEGIN}\n{table}{}", &text[..a], &text[b..]);
    std::fs::write(&readme, updated)?;
    Ok(())
}
