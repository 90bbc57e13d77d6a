//! Everything that talks to (or reasons about) the Kubernetes cluster.

pub mod client;
/// Pure discovery: target, ports, pod state, Jupyter token.
pub mod discover;
pub mod doctor;
pub mod forward;
mod listening;
pub mod pick;
pub mod pod;
pub mod pool;
pub mod ports;
pub mod preset;
pub mod refusal;
pub mod resolve;
pub mod service;
pub mod spdyforward;
pub mod target;
pub mod token;
pub mod tunnel;
pub mod wsforward;

pub use refusal::{is_refusal, ForwardRefused};
