//! `serveflow train` and `serveflow craft`: run `serveflow-train`. The trainer is its own
//! binary so the serving build never compiles LightGBM's C++ library; it is looked up next to
//! this executable, then on PATH.

use std::path::PathBuf;

use anyhow::Context as _;

/// Arguments handed to `serveflow-train <command>` as they are.
#[derive(clap::Args, Debug)]
pub struct TrainerArgs {
    /// Arguments for `serveflow-train` (see its --help).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

impl TrainerArgs {
    /// Runs `serveflow-train <command> <args>`.
    pub fn run(&self, command: &str) -> anyhow::Result<()> {
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join("serveflow-train")))
            .filter(|p| p.is_file());
        let program = beside.unwrap_or_else(|| PathBuf::from("serveflow-train"));
        let status = std::process::Command::new(&program)
            .arg(command)
            .args(serveflow::ticker::quiet().then_some("--quiet"))
            .args(&self.args)
            .status()
            .with_context(|| {
                format!(
                    "running {}: the trainer is a separate binary (it builds LightGBM's C++ library); \
                     build it with `cargo xtask setup && cargo build --release -p serveflow-train`",
                    program.display()
                )
            })?;
        if !status.success() {
            anyhow::bail!("serveflow-train {command} failed ({status})");
        }
        Ok(())
    }
}
