//! The laptop side: SSH to the login host, the local listener, the session with the agent.

pub mod listener;
pub mod ssh;
mod auth;
mod known_hosts;
mod ssh_config;
mod ssh_config_file;
mod ssh_config_g;
mod ssh_handler;
mod ssh_hostkey;
mod ssh_prompt;
mod ssh_route;
