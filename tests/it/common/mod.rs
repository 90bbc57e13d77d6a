//! Shared test support: temp homes, the test cluster, sshd in network namespaces.
#![allow(dead_code)]
pub mod sshd;
