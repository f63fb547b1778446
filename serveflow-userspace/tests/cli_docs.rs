//! Shell completions and man pages come from the command line itself: every shell's script is
//! generated and names the subcommands (bash's passes `bash -n`), and `serveflow man --out DIR`
//! writes one page per command.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use std::process::Command;

fn serveflow(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_serveflow"))
        .args(args)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn completions_name_every_subcommand_and_bash_parses_them() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (ok, script) = serveflow(&["completions", shell]);
        assert!(ok, "{shell}");
        for sub in ["run", "replay", "status", "extract", "bench", "export"] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
        if shell == "bash" {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("serveflow.bash");
            std::fs::write(&path, &script).unwrap();
            let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
            assert!(
                check.status.success(),
                "{}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_serveflow"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_pages_cover_every_command() {
    let (ok, page) = serveflow(&["man"]);
    assert!(ok);
    assert!(page.contains(".TH serveflow 1"), "{page}");
    assert!(
        page.contains("Exit status"),
        "the exit statuses are documented"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let (ok, _) = serveflow(&["man", "--out", out.to_str().unwrap()]);
    assert!(ok);
    for sub in [
        "run",
        "replay",
        "status",
        "extract",
        "models",
        "bench",
        "calibrate",
    ] {
        let text = std::fs::read_to_string(out.join(format!("serveflow-{sub}.1"))).unwrap();
        assert!(text.contains(&format!(".TH serveflow-{sub} 1")), "{sub}");
        assert!(text.contains(".SH OPTIONS"), "{sub}");
    }
}
