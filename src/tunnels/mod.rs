//! The tunnels running on this machine, in the foreground or in the background (`-d`): one
//! state file each in the state directory, so that `ls`, `stop`, `logs` and a second start of
//! the same command find them.
//!
//! ```text
//! STATE/tunnels/ID.json    what `ls` shows: target, via, local address or URL, state, pid (0600)
//! STATE/tunnels/ID.lock    held (flock / LockFileEx) by the tunnel's process as long as it lives
//! STATE/tunnels/ID.start   held by whoever is starting the tunnel, until it is ready or failed
//! STATE/tunnels/ID.log     a background tunnel's stderr (`podtun logs ID`)
//! STATE/ports.json         the local port last used per (login host, context, namespace, target)
//! ```
//!
//! The id is a digest of the tunnel's identity (login host, context, namespace, target, preset,
//! ports), so the same command finds the same files. Liveness is the lock, which the kernel
//! drops when the process dies however it dies (kill -9, crash, reboot): a state file whose lock
//! is free belongs to a dead tunnel, and is cleaned as soon as it is seen.

pub mod commands;
pub mod control;
pub mod detach;
mod paths;
pub mod ports;
mod registration;
mod state;

pub use detach::DETACHED_ENV;
pub use paths::Paths;
pub use registration::{print_running, register, Registered, Registration};
pub use state::{now, Forward, Phase, State};
