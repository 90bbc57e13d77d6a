//! Everything that talks to (or reasons about) the Kubernetes cluster.

/// Pure discovery: target, ports, pod state, Jupyter token.
pub mod discover;
pub mod ports;
pub mod target;
pub mod token;
pub mod client;
// pub mod resolve;
// pub mod forward;
// pub mod tunnel;
