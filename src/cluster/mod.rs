//! Everything that talks to (or reasons about) the Kubernetes cluster.

/// Pure discovery: target, ports, pod state, Jupyter token.
pub mod discover;
pub mod pod;
pub mod ports;
pub mod preset;
pub mod service;
pub mod target;
pub mod token;
pub mod client;
// pub mod resolve;
// pub mod forward;
// pub mod tunnel;
