//! Everything that talks to (or reasons about) the Kubernetes cluster.

pub mod client;
/// Pure discovery: target, ports, pod state, Jupyter token.
pub mod discover;
pub mod doctor;
pub mod forward;
mod listening;
pub mod pick;
pub mod podwait;
pub mod pool;
pub mod protocol;
pub mod resolve;
pub mod spdyforward;
mod spdyupgrade;
pub mod tunnel;
pub mod wsforward;

pub use crate::proto::refusal::{is_refusal, ForwardRefused};
