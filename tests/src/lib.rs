//! Test beds for serveflow: throwaway network namespaces joined by a veth pair, crafted frames,
//! and small captures the project makes itself. Used by the integration tests in `tests/tests`
//! and by `cargo xtask demo`.

pub mod engines;
pub mod frames;
pub mod live;
pub mod netns;
pub mod serveflow_bin;

pub use netns::VethPair;
