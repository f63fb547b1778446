//! Builds the XDP program (`serveflow-ebpf`) for the BPF target with the pinned nightly, so the
//! object embedded in the `serveflow` binary always matches the source. `AYA_BUILD_SKIP=1`
//! skips it (the library then refuses to load XDP with a clear error).

/// The dated nightly that builds the eBPF crate; its LLVM major must match bpf-linker's
/// (`cargo xtask setup` installs both). Keep in step with `xtask/src/setup.rs`.
const EBPF_TOOLCHAIN: &str = "nightly-2026-05-20";

fn main() -> anyhow::Result<()> {
    println!("cargo:rustc-check-cfg=cfg(serveflow_ebpf_skipped)");
    if std::env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v == "true") {
        println!("cargo:rustc-cfg=serveflow_ebpf_skipped");
    }
    println!("cargo:rerun-if-changed=../serveflow-common/src");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../serveflow-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "serveflow-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}
