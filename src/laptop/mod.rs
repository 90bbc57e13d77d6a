//! The laptop side: SSH to the login host, the local listener, the session with the agent.

mod auth;
pub mod doctor;
pub mod host;
mod host_pick;
mod host_remote;
mod host_script;
pub mod install;
mod known_hosts;
pub mod kubectl;
pub mod listener;
pub mod pick;
pub mod probe;
pub mod release;
mod remote;
pub mod run;
pub mod session;
pub mod slurm;
pub mod ssh;
mod ssh_config;
mod ssh_config_file;
mod ssh_config_g;
mod ssh_handler;
mod ssh_hostkey;
mod ssh_prompt;
pub use ssh_prompt::restore_terminal;
mod ssh_route;
pub mod transport;
