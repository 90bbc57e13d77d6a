//! The login-host side of `--via`: `podtun agent`, started by the laptop over an SSH exec
//! channel.
//!
//! stdin carries the laptop's request (one JSON line), stdout only protocol events (one JSON
//! object per line, flushed each time), stderr the logs. The agent does the cluster work and
//! exposes one private Unix socket per forwarded port ([`socket`]); the laptop reaches them with
//! `direct-streamlocal@openssh.com` channels, or through `podtun agent pipe SOCKET` ([`pipe`]).
//! It ends when its stdin closes (the laptop went away), on SIGTERM/SIGHUP, or when the target
//! is lost, and removes its sockets on every way out.
//!
//! `podtun agent delete-pod …` ([`delete`]) deletes a pod podtun launched: the undo command of
//! the login host's watchdog in agent mode.

mod control;
pub mod delete;
mod events;
mod forward;
mod hello;
pub mod pipe;
mod serve;
pub mod socket;
mod stdin;

pub use control::run;
pub use hello::HELLO_TIMEOUT;
pub use serve::SHUTDOWN_GRACE;
