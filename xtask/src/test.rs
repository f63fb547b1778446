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
    // The integration tests drive the real binary; build it first and tell them where it is.
    crate::exec(cargo().args(["build", "-p", "serveflow-userspace", "--bin", "serveflow"]))?;
    let bin = root().join("target/debug/serveflow");
    crate::exec(
        cargo()
            .env("SERVEFLOW_BIN", &bin)
            .args(["test", "--workspace", "--no-fail-fast"]),
    )
}
