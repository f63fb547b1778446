//! `cargo xtask fuzz --minutes N`: runs every cargo-fuzz target (libFuzzer with
//! AddressSanitizer, on the eBPF nightly) for N minutes each, from the committed seeds in
//! `fuzz/seeds/` plus the corpus earlier runs grew in `fuzz/corpus/`, and prints a table of
//! executions, coverage and crashes (also written to `target/fuzz/summary.md`). A crash
//! leaves its input in `fuzz/artifacts/<target>/` and fails the command: turn it into a
//! regression test.

use std::{path::Path, process::Command};

use anyhow::{bail, Context as _};

use crate::{exec, output, root, setup::EBPF_TOOLCHAIN, show};

/// The fuzz targets, in run order.
pub const TARGETS: [&str; 5] = [
    "packet_parser",
    "capture_reader",
    "name_parsers",
    "lightgbm_text",
    "model_dir",
];

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// One target's result.
struct Outcome {
    target: String,
    seconds: u64,
    runs: u64,
    coverage: u64,
    corpus: u64,
    crashes: usize,
}

pub fn run(minutes: f64, only: Option<&str>) -> anyhow::Result<()> {
    if !(minutes > 0.0 && minutes <= 24.0 * 60.0) {
        bail!("--minutes {minutes} is outside 0..=1440");
    }
    let targets: Vec<&str> = match only {
        Some(t) if TARGETS.contains(&t) => vec![t],
        Some(t) => bail!("--target {t:?}: the targets are {}", TARGETS.join(", ")),
        None => TARGETS.to_vec(),
    };
    cargo_fuzz()?;
    let fuzz = root().join("fuzz");
    let seconds = (minutes * 60.0).round().max(1.0) as u64;
    let mut outcomes = Vec::new();
    for target in targets {
        let corpus = fuzz.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        let artifacts = fuzz.join("artifacts").join(target);
        std::fs::create_dir_all(&artifacts)?;
        let before = count(&artifacts);
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&fuzz)
            // The library's build script would build the XDP program: not what is fuzzed.
            .env("AYA_BUILD_SKIP", "1")
            .args([&format!("+{EBPF_TOOLCHAIN}"), "fuzz", "run", target])
            .arg(&corpus)
            .arg(fuzz.join("seeds").join(target))
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-rss_limit_mb=4096",
                "-timeout=20",
                "-print_final_stats=1",
            ])
            .arg(format!("-artifact_prefix={}/", artifacts.display()));
        eprintln!("xtask: $ {}", show(&cmd));
        let out = cmd
            .output()
            .with_context(|| format!("starting {}", show(&cmd)))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let log_path = root().join("target/fuzz").join(format!("{target}.log"));
        std::fs::create_dir_all(log_path.parent().unwrap_or(Path::new(".")))?;
        std::fs::write(&log_path, log.as_bytes())?;
        let crashes = count(&artifacts) - before;
        let outcome = Outcome {
            target: target.to_owned(),
            seconds,
            runs: stat(&log, "stat::number_of_executed_units:"),
            coverage: last_field(&log, "cov: "),
            corpus: count(&corpus) as u64,
            crashes,
        };
        eprintln!(
            "xtask: {target}: {} runs, cov {}, corpus {}, {} crashes (log: {})",
            outcome.runs,
            outcome.coverage,
            outcome.corpus,
            outcome.crashes,
            log_path.display()
        );
        if !out.status.success() && crashes == 0 {
            bail!(
                "fuzzing {target} failed ({}) without a crash input; see {}",
                out.status,
                log_path.display()
            );
        }
        outcomes.push(outcome);
    }
    let table = markdown(&outcomes);
    eprintln!("{table}");
    let summary = root().join("target/fuzz/summary.md");
    std::fs::write(&summary, &table)?;
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.crashes > 0)
        .map(|o| o.target.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!(
            "crashes in {}: inputs are in fuzz/artifacts/; make each a regression test",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// Installs cargo-fuzz when missing.
fn cargo_fuzz() -> anyhow::Result<()> {
    let version = output(Command::new("cargo").args(["fuzz", "--version"])).unwrap_or_default();
    if version.contains(CARGO_FUZZ_VERSION) {
        return Ok(());
    }
    exec(Command::new("cargo").args([
        "install",
        &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
        "--locked",
    ]))
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.filter_map(Result::ok).count())
}

/// A `-print_final_stats` value.
fn stat(log: &str, key: &str) -> u64 {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The number after `key` on the last status line that has it (`cov: 1234 ft: ...`).
fn last_field(log: &str, key: &str) -> u64 {
    log.lines()
        .rev()
        .find_map(|l| {
            let rest = &l[l.find(key)? + key.len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

fn markdown(outcomes: &[Outcome]) -> String {
    let mut s = String::from(
        "| target | seconds | executions | coverage (edges) | corpus | crashes |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for o in outcomes {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            o.target, o.seconds, o.runs, o.coverage, o.corpus, o.crashes
        ));
    }
    s
}
