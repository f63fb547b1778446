//! `cargo xtask`: the project's own commands. `setup` installs everything a fresh machine
//! lacks; `demo` (the README's main job) and `test` (the README's test command) run it first.

mod compare;
mod demo;
mod fuzz;
mod kernel_maps;
mod live_bench;
mod models;
mod setup;
mod test;

use std::process::{Command, ExitCode};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "serveflow set-up, demo, tests")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: pinned toolchains, rust-src, bpf-linker, apt packages, bpffs,
    /// and the tests' engines (pmacct, tshark, chromium, tansu, confluent-kafka).
    Setup,
    /// The main job on a built-in default: real clients and servers in a throwaway test bed,
    /// their link mirrored into `serveflow run` with the bundled models, and the tables.
    Demo,
    /// Every check CI runs: fmt, clippy, unit and integration tests (root for the netns ones).
    Test,
    /// Retrain the bundled models (both tasks) from ../shared/data into models/.
    Models,
    /// Zero-loss new flows/s through the live path on the veth test bed (a rate sweep), with
    /// the sender's own ceiling measured alone.
    LiveBench,
    /// Kernel memory per flow slot: the flow and verdict maps' memlock at 64 Ki to 4 Mi
    /// entries, read by `serveflow status` from an instance on the veth test bed.
    KernelMaps,
    /// serveflow against NFStream and ndpiReader on one large capture amplified from
    /// ../shared/data: wall time and peak RSS, min/median/max of alternating rounds.
    Compare {
        /// Distinct flows in the capture (~13 packets each).
        #[arg(long, default_value_t = 160_000)]
        flows: u64,
        /// Rounds; each runs every tool once, in a rotating order.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
        rounds: u64,
    },
    /// Coverage-guided fuzzing (cargo-fuzz, libFuzzer + ASan) of the packet parser, capture
    /// reader, name parsers, LightGBM parser and models-directory loader.
    Fuzz {
        /// Minutes per target.
        #[arg(long, default_value_t = 1.0)]
        minutes: f64,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => setup::run(),
        Cmd::Demo => setup::base().and_then(|()| demo::run()),
        Cmd::Test => setup::run().and_then(|()| test::run()),
        Cmd::Models => setup::base().and_then(|()| models::run()),
        Cmd::LiveBench => setup::base().and_then(|()| live_bench::run()),
        Cmd::KernelMaps => setup::base().and_then(|()| kernel_maps::run()),
        Cmd::Compare { flows, rounds } => setup::base()
            .and_then(|()| setup::compare_engines())
            .and_then(|()| {
                compare::run(&compare::CompareOptions {
                    flows,
                    rounds: rounds as usize,
                })
            }),
        Cmd::Fuzz { minutes, target } => {
            setup::base().and_then(|()| fuzz::run(minutes, target.as_deref()))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the release `serveflow` binary and returns its path.
fn build_serveflow() -> anyhow::Result<std::path::PathBuf> {
    exec(cargo().args([
        "build",
        "--release",
        "-p",
        "serveflow-userspace",
        "--bin",
        "serveflow",
    ]))?;
    Ok(root().join("target/release/serveflow"))
}

/// The workspace root (xtask lives one level below it).
fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| ".".into())
}

/// Runs a command in the workspace root, echoing it, and fails if it fails.
fn exec(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: $ {}", show(cmd));
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("starting {}", show(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", show(cmd));
    }
    Ok(())
}

/// Runs a command quietly and returns its stdout if it succeeded.
fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `cargo` with the workspace's pinned toolchain.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}
