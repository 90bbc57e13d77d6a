//! The laptop ↔ agent protocol, spoken over SSH: JSON lines on the agent's control channel
//! ([`wire`]) and many connections over one channel ([`mux`]).

pub mod mux;
pub mod refusal;
pub mod wire;
