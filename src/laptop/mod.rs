//! The laptop side: SSH to the login host, the local listener, the session with the agent.

pub mod listener;
