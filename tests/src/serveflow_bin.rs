//! Finding and driving the `serveflow` binary from tests and xtask.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{bail, Context as _};

/// The `serveflow` binary: `$SERVEFLOW_BIN`, else `target/{release,debug}/serveflow` of this
/// workspace (whichever is newer). `cargo xtask test` builds it and sets the variable.
pub fn path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SERVEFLOW_BIN") {
        return Ok(PathBuf::from(p));
    }
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    let newest = ["debug", "release"]
        .iter()
        .map(|p| target.join(p).join("serveflow"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max();
    match newest {
        Some((_, p)) => Ok(p),
        None => bail!(
            "no serveflow binary: run `cargo build -p serveflow-userspace` or `cargo xtask test`"
        ),
    }
}

/// A `serveflow` process whose stderr is collected line by line.
pub struct Running {
    /// The process.
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Every stderr line read so far.
    pub stderr: Vec<String>,
}

impl Running {
    /// Starts `cmd` (already carrying its arguments) with stderr captured.
    pub fn spawn(mut cmd: Command) -> anyhow::Result<Self> {
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting serveflow")?;
        let stderr = child.stderr.take().context("stderr pipe")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Running {
            child,
            lines,
            stderr: Vec::new(),
        })
    }

    /// Waits for a stderr line containing `needle`; fails if the process exits first.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.stderr.push(line);
                    if hit {
                        return Ok(());
                    }
                }
                Err(_) => bail!(
                    "serveflow did not print {needle:?} in {timeout:?}; stderr:\n{}",
                    self.stderr.join("\n")
                ),
            }
        }
    }

    /// Sends `signal` and waits for the exit; returns the exit code and all stderr lines.
    pub fn stop(mut self, signal: i32) -> anyhow::Result<(i32, Vec<String>)> {
        let pid = self.child.id() as i32;
        // SAFETY: kill with a pid of our own child.
        unsafe { libc::kill(pid, signal) };
        let status = self.child.wait()?;
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.stderr.push(line);
        }
        Ok((status.code().unwrap_or(-1), self.stderr))
    }
}
