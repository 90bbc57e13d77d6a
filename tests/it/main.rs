//! podtun's integration tests: one binary, one module per area.

#[cfg(unix)]
mod agent;
mod common;
mod ssh;
