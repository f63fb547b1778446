//! Subcommands of the `serveflow` binary, one module each.

pub mod bench;
pub mod calibrate;
pub mod extract;
pub mod models;
pub mod replay;
pub mod run;
pub mod status;
