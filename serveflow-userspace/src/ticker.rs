//! Progress on stderr while long commands work: one spinner line with running totals, redrawn
//! a few times a second, and gone when the work ends. Hidden when stderr is not a terminal
//! (logs, pipes, CI) or with `--quiet`, so it never mixes into what a script reads. Shared by
//! `serveflow` and `serveflow-train`: the pipeline publishes [`Progress`], work made of steps
//! (files read, candidates, epochs) publishes [`Steps`].

use std::{
    io::IsTerminal as _,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::pipeline::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static QUIET: AtomicBool = AtomicBool::new(false);

/// The line drawn now, if any, so that [`note`] can print above it.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// `--quiet`: no progress lines (and warnings only, see main).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Relaxed);
}

/// Whether progress lines are drawn: stderr is a terminal and nobody asked for quiet.
pub fn shown() -> bool {
    drawn(quiet(), std::io::stderr().is_terminal())
}

fn drawn(quiet: bool, terminal: bool) -> bool {
    terminal && !quiet
}

/// Whether `--quiet` was given.
pub fn quiet() -> bool {
    QUIET.load(Relaxed)
}

/// Prints `line` on stderr, above the progress line when one is drawn, so that the two never
/// share a line on the terminal.
pub fn note(line: &str) {
    let active = ACTIVE.lock().ok().and_then(|a| a.clone());
    match active {
        Some(bar) => bar.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
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
        // Set up hidden, then shown: every setter draws, and a half-set line would flash.
        let bar = ProgressBar::hidden();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix}: {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(what);
        bar.set_message(line());
        bar.set_draw_target(ProgressDrawTarget::stderr());
        // The first line is drawn before the work starts, so even a short run shows one.
        bar.tick();
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
        if let Ok(mut active) = ACTIVE.lock() {
            *active = Some(bar.clone());
        }
        Ticker { bar, stop, thread }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Ok(mut active) = ACTIVE.lock() {
            *active = None;
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

/// What a piece of work made of steps is doing: a task (set by whoever runs the outer loop)
/// and `done` of `total` steps of it (set by an inner loop: files, epochs). Atomics and one
/// short lock, so publishing costs nothing next to a step.
#[derive(Debug, Default)]
pub struct Steps {
    /// The task and what its steps are called.
    task: Mutex<(String, &'static str)>,
    done: AtomicU64,
    total: AtomicU64,
}

impl Steps {
    /// Nothing started yet (usable in a `static`).
    pub const fn new() -> Steps {
        Steps {
            task: Mutex::new((String::new(), "")),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    /// A new task, with no count until [`Steps::count`].
    pub fn begin(&self, task: impl Into<String>) {
        if let Ok(mut t) = self.task.lock() {
            *t = (task.into(), "");
        }
        self.total.store(0, Relaxed);
    }

    /// A step count within the current task (`unit`: what a step is, like `epochs`).
    pub fn count(&self, total: u64, unit: &'static str) {
        self.done.store(0, Relaxed);
        self.total.store(total, Relaxed);
        if let Ok(mut t) = self.task.lock() {
            t.1 = unit;
        }
    }

    /// One more step done.
    pub fn step(&self) {
        self.done.fetch_add(1, Relaxed);
    }

    /// `task: done/total unit`, or the task alone before it has a count.
    pub fn line(&self) -> String {
        let (task, unit) = self.task.lock().map(|t| t.clone()).unwrap_or_default();
        match self.total.load(Relaxed) {
            0 => task,
            total => {
                let done = self.done.load(Relaxed).min(total);
                format!("{task}: {done}/{total} {unit}")
            }
        }
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
    fn steps_say_the_task_and_how_far_it_is() {
        let steps = Steps::new();
        assert_eq!(steps.line(), "");
        steps.begin("reading captures");
        assert_eq!(steps.line(), "reading captures");
        steps.count(3, "files");
        steps.step();
        assert_eq!(steps.line(), "reading captures: 1/3 files");
        steps.count(30, "epochs");
        steps.step();
        steps.step();
        assert_eq!(
            steps.line(),
            "reading captures: 2/30 epochs",
            "a new count restarts"
        );
        steps.begin("writing the models");
        assert_eq!(
            steps.line(),
            "writing the models",
            "a new task has no count"
        );
        steps.count(2, "files");
        for _ in 0..5 {
            steps.step();
        }
        assert_eq!(
            steps.line(),
            "writing the models: 2/2 files",
            "never more than all"
        );
    }

    #[test]
    fn only_a_terminal_without_quiet_gets_the_line() {
        assert!(drawn(false, true));
        assert!(!drawn(true, true), "--quiet hides it on a terminal too");
        assert!(!drawn(false, false), "never into a pipe or a log");
    }
}
