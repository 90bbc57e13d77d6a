//! A pod through the login host (`--via`). The first connection settles what runs there:
//! podtun's agent ([`agent`], with [`transport`] carrying local connections to its sockets,
//! found or uploaded by [`install`] and [`release`]), or only kubectl ([`kubectl`]: the
//! cluster half runs here, through `kubectl proxy` on the login host).

pub mod agent;
pub mod control;
pub mod install;
pub mod kubectl;
mod launched;
pub mod release;
mod start;
mod tar;
pub mod transport;

pub use agent::run_via;
