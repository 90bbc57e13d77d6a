//! kubectl mode: nothing on the login host but kubectl. podtun starts `kubectl proxy` there on a
//! private Unix socket over an exec channel, and runs the cluster half (the same code as local
//! mode) on this machine over a kube client whose connections are SSH `direct-streamlocal`
//! channels to that socket.
//!
//! The login host keeps everything that is the user's: kubeconfig, contexts, exec credential
//! plugins, the default namespace. The socket is 0600 in a 0700 directory; the proxy lives as
//! long as its exec channel and the laptop's heartbeats, and takes its socket with it. Never a
//! TCP port: on a shared host it would lend the owner's cluster rights to every local user.

mod connector;
mod launcher;
mod link;
mod proxy;
mod run;

pub use link::{doctor, establish_on, Established};
pub use proxy::Proxy;
pub(super) use run::run;
