//! The laptop side. Four ways of reaching a target, each in its own module, which use the
//! shared parts below and never each other:
//! - [`local`]: a pod, with the cluster half in this process (no SSH);
//! - [`via`]: a pod through the login host, with podtun's agent or with kubectl only;
//! - [`host`]: a Jupyter server on the SSH host itself (`podtun jupyter @`);
//! - [`slurm`]: Jupyter in a Slurm job, through the login host.
//!
//! The shared parts: [`ssh`] (every russh call), [`listen`] (the local ports), [`ready`]
//! (readiness through the whole chain, and the reports), [`pick`] (the terminal chooser),
//! [`watchdog`] (undoing on the login host what podtun made there, once the laptop is gone).
//! [`doctor`] checks each step of a route.

pub mod doctor;
pub mod host;
pub mod link;
pub mod listen;
pub mod local;
pub mod pick;
pub mod ready;
pub mod slurm;
pub mod ssh;
pub mod via;
pub mod watchdog;

pub use ssh::restore_terminal;
