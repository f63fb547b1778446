//! Idempotent set-up of a fresh machine; quick (a few `--version` calls) when all is there.
//! `base` is what building, the demo and the benches need; `test_engines` adds what only the
//! tests need; `cargo xtask setup` and `cargo xtask test` do both.
//!
//! - the dated nightly with rust-src that builds the eBPF crate (the stable host toolchain is
//!   pinned in rust-toolchain.toml and installed by rustup on first use);
//! - bpf-linker, linked against that nightly's own LLVM so their versions always match;
//! - Debian packages: iproute2 (ip, tc, ss), bpftool, tcpreplay, util-linux (nsenter, setpriv,
//!   unshare), libclang-dev (bindgen for lightgbm3), the demo's servers and clients (dnsmasq,
//!   chrony, openssh, redis, curl, openssl, python3, ethtool; started by no install script),
//!   the export tests' real engines: pmacct (nfacctd,
//!   an IPFIX collector) and tshark (Wireshark's dissectors), and chromium (the HTML report
//!   rendered in a real browser);
//! - the Kafka export tests' engines: tansu, a Kafka-protocol broker from crates.io, into
//!   `.tools/bin`, and confluent-kafka (a consumer) from PyPI into `.tools/venv`;
//! - CMake >= 3.28 for lightgbm3's C++ build, from PyPI into `.tools/venv` (Debian has 3.25);
//! - bpffs mounted at /sys/fs/bpf.

use std::{path::Path, process::Command};

use anyhow::{bail, Context as _};

use crate::{exec, output};

/// Builds serveflow-ebpf; must equal EBPF_TOOLCHAIN in serveflow-userspace/build.rs.
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-05-20";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// bpf-linker's LLVM feature: the nightly's LLVM major version.
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";

/// (command on PATH, or absolute file, that must exist; Debian package providing it)
const APT: [(&str, &str); 20] = [
    ("ip", "iproute2"),
    ("tc", "iproute2"),
    ("ss", "iproute2"),
    ("bpftool", "bpftool"),
    ("tcpreplay", "tcpreplay"),
    ("nsenter", "util-linux"),
    ("setpriv", "util-linux"),
    ("unshare", "util-linux"),
    ("/usr/lib/llvm-14/lib/libclang.so", "libclang-dev"),
    // The demo's link, servers and clients (`serveflow_testbed::exchanges`).
    ("ethtool", "ethtool"),
    ("curl", "curl"),
    ("openssl", "openssl"),
    ("/usr/bin/python3", "python3"),
    ("dnsmasq", "dnsmasq-base"),
    ("chronyd", "chrony"),
    ("/usr/sbin/sshd", "openssh-server"),
    ("ssh-keygen", "openssh-client"),
    ("redis-server", "redis-server"),
    ("redis-cli", "redis-tools"),
    ("logger", "bsdutils"),
];

/// What only the tests need: the real engines the export tests talk to, and the browser the
/// HTML report is rendered in.
const TEST_APT: [(&str, &str); 3] = [
    ("nfacctd", "pmacct"),
    ("tshark", "tshark"),
    ("chromium", "chromium"),
];

/// What `cargo xtask compare` measures serveflow against: nDPI's own reader (Debian's nDPI
/// 4.2); NFStream comes from PyPI into `.tools/venv`.
const COMPARE_APT: [(&str, &str); 1] = [("ndpiReader", "libndpi-bin")];

/// The Kafka-protocol broker of the export tests, with its in-memory storage (`dynostore`).
const TANSU_VERSION: &str = "0.6.0";

/// Everything: what building and running need, and what the tests need.
pub fn run() -> anyhow::Result<()> {
    base()?;
    test_engines()
}

/// What building, the demo and the benches need.
pub fn base() -> anyhow::Result<()> {
    nightly()?;
    bpf_linker()?;
    apt_packages(&APT)?;
    cmake()?;
    bpffs()
}

/// What only the tests add: the export tests' engines and the browser (tansu takes minutes to
/// build, once per machine; the demo does not wait for it).
pub fn test_engines() -> anyhow::Result<()> {
    apt_packages(&TEST_APT)?;
    kafka_consumer()?;
    tansu()
}

/// The peers of `cargo xtask compare`.
pub fn compare_engines() -> anyhow::Result<()> {
    apt_packages(&COMPARE_APT)?;
    cmake()?;
    python_package("nfstream", "nfstream>=6.5")
}

fn nightly() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        EBPF_TOOLCHAIN,
    ]))
    .is_some_and(|list| list.lines().any(|l| l.starts_with("rust-src")));
    if !installed {
        exec(Command::new("rustup").args([
            "toolchain",
            "install",
            EBPF_TOOLCHAIN,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    Ok(())
}

fn bpf_linker() -> anyhow::Result<()> {
    let version = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if version.contains(BPF_LINKER_VERSION) {
        return Ok(());
    }
    // Link bpf-linker against the nightly's libLLVM: no system LLVM needed, and the LLVM that
    // reads rustc's bitcode is exactly the one that wrote it.
    let sysroot =
        output(Command::new("rustc").args([&format!("+{EBPF_TOOLCHAIN}"), "--print", "sysroot"]))
            .context("finding the nightly's sysroot")?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("listing {}", lib.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("lib")?
                .strip_suffix(".so")
                .filter(|n| n.starts_with("LLVM-"))
                .map(str::to_owned)
        })
        .next();
    let Some(llvm) = llvm else {
        bail!(
            "no libLLVM-*.so in {}: is {EBPF_TOOLCHAIN} installed?",
            lib.display()
        );
    };
    let rustflags = format!(
        "-L {0} -l dylib={llvm} -C link-arg=-Wl,-rpath,{0}",
        lib.display()
    );
    exec(Command::new("cargo").env("RUSTFLAGS", rustflags).args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
        "--no-default-features",
        "--features",
        &format!("{BPF_LINKER_LLVM_FEATURE},no-llvm-linking"),
    ]))
}

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0")
}

fn apt_packages(wanted: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut missing: Vec<&str> = wanted
        .iter()
        .filter(|(bin, _)| !have(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing packages {}: run `sudo apt-get install -y {}` or run this as root",
            missing.join(" "),
            missing.join(" ")
        );
    }
    exec(Command::new("apt-get").args(["update", "-q"]))?;
    // Servers among them (sshd, redis, chrony) must not start on the host: the demo runs its
    // own in a namespace. A policy-rc.d answering 101 tells their install scripts so.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        std::fs::write(
            policy,
            "#!/bin/sh\n# serveflow set-up: start no services\nexit 101\n",
        )?;
        std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let installed = exec(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    );
    if ours {
        std::fs::remove_file(policy)?;
    }
    installed
}

/// Minimum CMake for LightGBM 4.7 (lightgbm3-sys).
const CMAKE_MIN: (u32, u32) = (3, 28);

/// `.tools/venv`: CMake for lightgbm3-sys.
fn cmake() -> anyhow::Result<()> {
    let venv = crate::root().join(".tools/venv");
    let cmake = venv.join("bin/cmake");
    let version = output(Command::new(&cmake).arg("--version")).unwrap_or_default();
    let ok = version
        .split_whitespace()
        .nth(2)
        .and_then(|v| {
            let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .is_some_and(|v| v >= CMAKE_MIN);
    if ok {
        return Ok(());
    }
    exec(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    exec(Command::new(venv.join("bin/pip")).args(["install", "-q", "cmake>=3.28"]))
}

/// The Kafka export tests' consumer (its wheel carries a current librdkafka), in the same
/// venv as CMake.
fn kafka_consumer() -> anyhow::Result<()> {
    python_package("confluent_kafka", "confluent-kafka>=2.6")
}

/// `requirement` from PyPI into `.tools/venv` (made by [`cmake`]), unless `module` imports.
fn python_package(module: &str, requirement: &str) -> anyhow::Result<()> {
    let venv = crate::root().join(".tools/venv");
    let there = Command::new(venv.join("bin/python"))
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if there {
        return Ok(());
    }
    exec(Command::new(venv.join("bin/pip")).args(["install", "-q", requirement]))
}

fn tansu() -> anyhow::Result<()> {
    let tools = crate::root().join(".tools");
    let version =
        output(Command::new(tools.join("bin/tansu")).arg("--version")).unwrap_or_default();
    if version.contains(TANSU_VERSION) {
        return Ok(());
    }
    exec(
        Command::new("cargo")
            .arg("install")
            .arg("--root")
            .arg(&tools)
            .args([
                &format!("tansu@{TANSU_VERSION}"),
                "--locked",
                "--features",
                "dynostore",
            ]),
    )
}

fn bpffs() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mounted = mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "));
    if mounted {
        return Ok(());
    }
    if !is_root() {
        eprintln!("xtask: note: bpffs is not mounted at /sys/fs/bpf; `serveflow run` needs it (as root: mount -t bpf bpf /sys/fs/bpf)");
        return Ok(());
    }
    exec(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}
