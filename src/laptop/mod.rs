//! The laptop side: SSH to the login host, the local listener, the session with the agent.

pub mod doctor;
pub mod host;
mod host_pick;
mod host_remote;
mod host_script;
pub mod install;
pub mod kubectl;
pub mod listener;
pub mod pick;
pub mod probe;
pub mod release;
pub mod run;
pub mod session;
pub mod slurm;
pub mod ssh;
pub use ssh::restore_terminal;
pub mod transport;
