//! The trainer's progress line: drawn on a terminal (a pty made by `script`, from bsdutils),
//! never into a pipe, and neither it nor the notes with `--quiet`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use std::process::Command;

/// A data folder whose labels name one missing capture and one that is not a capture: the
/// trainer reads both, then stops with its error.
fn bad_data() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("labels")).unwrap();
    std::fs::write(
        dir.path().join("labels/nfstream_flows.csv"),
        "path,src_ip,src_mac,src_port,dst_ip,dst_mac,dst_port,protocol,application_name,application_is_guessed,extra\n\
         missing.pcap,10.0.0.1,aa,1000,10.0.0.2,bb,53,17,DNS,0,x\n\
         junk.pcap,10.0.0.1,aa,1000,10.0.0.2,bb,53,17,DNS,0,x\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("junk.pcap"), b"not a capture").unwrap();
    dir
}

fn train_args(data: &std::path::Path, quiet: bool) -> String {
    format!(
        "{} {}train --task service --data {} --out {}",
        env!("CARGO_BIN_EXE_serveflow-train"),
        if quiet { "--quiet " } else { "" },
        data.display(),
        data.join("out").display()
    )
}

/// What the trainer wrote to a terminal (stdout and stderr together, as `script` records).
fn on_a_terminal(command: &str) -> String {
    let out = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running script (bsdutils, installed by cargo xtask setup)");
    assert_eq!(
        out.status.code(),
        Some(1),
        "the data is bad: the trainer fails"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn drew_the_line(output: &str) -> bool {
    [
        "train: reading the labeled captures (",
        "train: reading the labeled captures: ",
    ]
    .iter()
    .any(|l| output.contains(l))
}

#[test]
fn a_terminal_gets_the_progress_line_and_quiet_silences_it() {
    let data = bad_data();
    let shown = on_a_terminal(&train_args(data.path(), false));
    assert!(drew_the_line(&shown), "{shown:?}");
    assert!(
        shown.contains("no capture yielded a labeled flow"),
        "{shown:?}"
    );

    let quiet = on_a_terminal(&train_args(data.path(), true));
    assert!(!drew_the_line(&quiet), "{quiet:?}");
    assert!(
        !quiet.contains("serveflow-train: reading"),
        "no notes: {quiet:?}"
    );
    assert!(
        quiet.contains("no capture yielded a labeled flow"),
        "errors still print: {quiet:?}"
    );
}

#[test]
fn a_pipe_gets_the_notes_and_no_progress_line() {
    let data = bad_data();
    let out = Command::new(env!("CARGO_BIN_EXE_serveflow-train"))
        .args(["train", "--task", "service", "--data"])
        .arg(data.path())
        .arg("--out")
        .arg(data.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("serveflow-train: reading the labeled captures of"),
        "{err}"
    );
    assert!(!drew_the_line(&err) && !err.contains('\r'), "{err:?}");
}
