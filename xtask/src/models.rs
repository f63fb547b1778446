//! `cargo xtask models`: retrains the bundled models of both tasks from `../shared/data` with
//! `serveflow-train craft` (candidates, Pareto front, picked models) into `models/<task>/`,
//! the command the README and `models/README.md` record.

use crate::{cargo, root};

pub fn run() -> anyhow::Result<()> {
    let data = root().join("../shared/data");
    if !data.join("labels/nfstream_flows.csv").is_file() {
        anyhow::bail!(
            "{} is absent: the bundled models are trained from its labeled captures",
            data.display()
        );
    }
    crate::exec(cargo().args(["build", "--release", "-p", "serveflow-train"]))?;
    let trainer = root().join("target/release/serveflow-train");
    for task in ["service", "device"] {
        crate::exec(
            std::process::Command::new(&trainer)
                .current_dir(root())
                .args(["craft", "--task", task, "--data", "../shared/data"]),
        )?;
    }
    Ok(())
}
