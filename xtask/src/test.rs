//! `cargo xtask test`: formatting, lints, then every unit and integration test. The netns and
//! BPF_PROG_TEST_RUN tests need root; without it they print SKIPPED and pass.

use crate::{cargo, root};

pub fn run() -> anyhow::Result<()> {
    crate::exec(cargo().args(["fmt", "--all", "--check"]))?;
    crate::exec(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The integration tests drive the real binary: `cargo test` builds it (serveflow-userspace
    // has integration tests of its own) before any test runs, with the same features as the
    // tests. A separate `cargo build` first resolved features without the dev-dependencies and
    // built every dependency a second time (~1.5 GB and minutes on CI).
    let bin = root().join("target/debug/serveflow");
    crate::exec(
        cargo()
            .env("SERVEFLOW_BIN", &bin)
            .args(["test", "--workspace", "--no-fail-fast"]),
    )
}
