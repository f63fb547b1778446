//! The live session: what `serveflow run` does between attaching to an interface and printing
//! its summary. [`source`] turns the AF_XDP sockets into pipeline input; [`metrics`] publishes
//! what the run does for Prometheus and the status lines.

pub mod metrics;
pub mod source;
