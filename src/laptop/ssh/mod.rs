//! SSH from the laptop, behaving as an OpenSSH user expects: `~/.ssh/config` ([`config`],
//! read directly or through `ssh -G`), the route of hops ([`route`]), known_hosts and host-key
//! checks ([`known_hosts`], [`hostkey`]), authentication ([`auth`]) and prompts ([`prompt`]).
//!
//! Every russh call lives in this folder, and it knows nothing of podtun's plan. The rest of
//! podtun sees [`SshSession`], a cheap, cloneable handle that opens channels; [`exec`] runs one
//! command to its end; [`script`] follows a long-running one.

mod agent;
mod auth;
pub mod channel;
mod config;
mod config_file;
mod config_openssh;
pub mod exec;
mod handler;
mod hostkey;
mod known_hosts;
mod options;
mod prompt;
pub(crate) mod route;
pub mod script;
mod session;

pub use auth::AuthRefused;
pub use channel::{Heartbeat, Running, Said, Stream};
pub use hostkey::HostKeyChanged;
pub use options::{user_home, SshOptions};
pub use prompt::{restore_terminal, Prompter};
pub use session::{client_config, OpenError, SshSession};
