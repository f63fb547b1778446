//! The subcommands of the `serveflow` binary, one module each, each owning its `Args`;
//! [`args`] holds the option groups several of them flatten in.

pub mod args;
pub mod bench;
pub mod bench_memory;
pub mod bench_steady;
pub mod calibrate;
pub mod docs;
pub mod extract;
pub mod models;
pub mod replay;
pub mod run;
pub mod status;
pub mod train;
