//! Shared test support: temp homes, the test cluster, sshd in network namespaces.
#![allow(dead_code)]
pub mod cluster;
pub mod http;
pub mod podtun;
pub mod redis;
pub mod sshd;
pub mod topology;

/// Deterministic bytes that are not all alike, so a shifted or dropped chunk shows.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
