//! Test beds for serveflow: throwaway network namespaces joined by a veth pair or a mirrored
//! link with real servers and clients on it, crafted frames, and small captures the project
//! makes itself. Used by the integration tests in `tests/tests`
//! and by `cargo xtask demo`.

pub mod engines;
pub mod exchanges;
pub mod frames;
pub mod live;
pub mod netns;
pub mod serveflow_bin;
pub mod span;

pub use netns::VethPair;
