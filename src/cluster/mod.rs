//! The cluster half: everything that talks to (or reasons about) the Kubernetes cluster. It
//! runs in the agent on the login host, and on the laptop in local and kubectl mode.
//!
//! It knows no SSH, prints nothing and reads no flags: it reports through `progress`
//! callbacks and [`ClusterEvent`](crate::proto::wire::ClusterEvent)s, so that each side shows
//! them its own way.

pub mod client;
/// Pure discovery: target, ports, pod state, Jupyter token.
pub mod discover;
pub mod doctor;
pub mod forward;
pub mod launch;
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
