//! What the trainer is doing now, for the progress line `serveflow-train` draws on a terminal
//! (see `serveflow::ticker`), and its notes on stderr. One process-wide [`STEPS`]: a run
//! trains one thing at a time, and the loops that know how far they are (captures read,
//! candidates, epochs) sit deep in the library, where passing a handle would add a parameter to
//! every function on the way for a line on a terminal.

use serveflow::ticker::{self, Steps};

/// The task and its steps.
pub static STEPS: Steps = Steps::new();

/// A note on stderr (`serveflow-train: ...`) above the progress line; none with `--quiet`.
pub fn note(line: &str) {
    if !ticker::quiet() {
        ticker::note(&format!("serveflow-train: {line}"));
    }
}
