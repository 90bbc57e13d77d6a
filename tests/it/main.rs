//! podtun's integration tests: one binary, one module per area. Linux only: they put the laptop,
//! the login host and the pods in network namespaces, with a real sshd and testcluster.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(unix)]
mod agent;
#[cfg(unix)]
mod agent_delete;
#[cfg(unix)]
mod background;
mod cli;
mod common;
#[cfg(unix)]
mod doctor;
mod errors;
#[cfg(unix)]
mod failfast;
#[cfg(unix)]
mod faults;
#[cfg(unix)]
mod host;
mod kind;
#[cfg(unix)]
mod kubectl_mode;
#[cfg(unix)]
mod kubectl_portforward;
#[cfg(unix)]
mod launch;
mod layers;
mod local;
#[cfg(unix)]
mod pick;
mod release;
#[cfg(unix)]
mod slurm;
#[cfg(unix)]
mod slurm_cli;
mod ssh;
#[cfg(unix)]
mod transports;
#[cfg(unix)]
mod via;
#[cfg(unix)]
mod watchdog;
mod wsforward;
