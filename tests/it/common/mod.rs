//! Shared test support: temp homes, the test cluster, sshd in network namespaces.
#![allow(dead_code)]
pub mod cluster;
pub mod http;
pub mod podtun;
pub mod redis;
pub mod sshd;
pub mod topology;
