//! Subcommands of the `serveflow` binary, one module each.

pub mod extract;
pub mod models;
pub mod run;
