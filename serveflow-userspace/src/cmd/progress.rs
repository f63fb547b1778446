//! Progress on stderr while long commands work: one spinner line with running totals, redrawn
//! a few times a second, and gone when the work ends. Hidden when stderr is not a terminal
//! (logs, pipes, CI) or with `--quiet`, so it never mixes into what a script reads.

use std::{
    io::IsTerminal as _,
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serveflow::pipeline::Progress;

static QUIET: AtomicBool = AtomicBool::new(false);

/// `--quiet`: no progress lines (and warnings only, see main).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Relaxed);
}

/// Whether progress lines are drawn: stderr is a terminal and nobody asked for quiet.
pub fn shown() -> bool {
    drawn(QUIET.load(Relaxed), std::io::stderr().is_terminal())
}

fn drawn(quiet: bool, terminal: bool) -> bool {
    terminal && !quiet
}

/// A progress line, drawn until dropped.
pub struct Ticker {
    bar: ProgressBar,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Shows `what: <line()> (<elapsed>)`, asking `line` for the totals every 250 ms.
    pub fn start(what: &'static str, line: impl Fn() -> String + Send + 'static) -> Ticker {
        let stop = Arc::new(AtomicBool::new(false));
        if !shown() {
            return Ticker {
                bar: ProgressBar::hidden(),
                stop,
                thread: None,
            };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix}: {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(what);
        let (b, s) = (bar.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("serveflow-progress".into())
            .spawn(move || {
                while !s.load(Relaxed) {
                    b.set_message(line());
                    b.tick();
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
            .ok();
        Ticker { bar, stop, thread }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}

/// The line of a pipeline run (replay, bench): packets, flows, escalations so far.
pub fn pipeline_totals(p: Arc<Progress>) -> impl Fn() -> String + Send + 'static {
    move || {
        let n = |a: &std::sync::atomic::AtomicU64| count(a.load(Relaxed));
        format!(
            "{} packets, {} flows, {} escalated",
            n(&p.packets),
            n(&p.flows),
            n(&p.escalated)
        )
    }
}

/// `1234567` as `1.23 M`, `45678` as `45.7 k`: totals that change four times a second.
pub fn count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1} k", n as f64 / 1e3),
        _ => format!("{:.2} M", n as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_at_a_glance() {
        assert_eq!(count(42), "42");
        assert_eq!(count(45_678), "45.7 k");
        assert_eq!(count(1_234_567), "1.23 M");
    }

    #[test]
    fn only_a_terminal_without_quiet_gets_the_line() {
        assert!(drawn(false, true));
        assert!(!drawn(true, true), "--quiet hides it on a terminal too");
        assert!(!drawn(false, false), "never into a pipe or a log");
    }
}
