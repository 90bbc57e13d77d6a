//! The three ways the API server serves a port-forward, in the order podtun tries them, and
//! the one a cluster answered to, remembered for its later connections.

use std::sync::atomic::{AtomicU8, Ordering};

use tracing::info;

/// The port-forward protocols, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// SPDY/3.1 in a WebSocket (KEP-4006).
    Tunnel = 1,
    /// `Upgrade: SPDY/3.1`.
    Classic = 2,
    /// The v4 WebSocket channel protocol (no half-close).
    WebSocket = 3,
}

impl Protocol {
    /// Every transport, in the order they are tried.
    pub const ORDER: [Protocol; 3] = [Protocol::Tunnel, Protocol::Classic, Protocol::WebSocket];

    /// How `-v` names it.
    pub fn describe(self) -> &'static str {
        match self {
            Protocol::Tunnel => "SPDY/3.1 in a WebSocket (SPDY/3.1+portforward.k8s.io)",
            Protocol::Classic => "SPDY/3.1 (Upgrade: SPDY/3.1)",
            Protocol::WebSocket => "WebSocket v4.channel.k8s.io",
        }
    }
}

/// Which transport a cluster answered to; unknown until its first port-forward.
#[derive(Debug, Default)]
pub struct ProtocolMemo(AtomicU8);

impl ProtocolMemo {
    /// The transport that worked last, if any did.
    pub fn get(&self) -> Option<Protocol> {
        let known = self.0.load(Ordering::Relaxed);
        Protocol::ORDER.into_iter().find(|t| *t as u8 == known)
    }

    pub(super) fn set(&self, transport: Protocol) {
        if self.0.swap(transport as u8, Ordering::Relaxed) != transport as u8 {
            info!("port-forward over {}", transport.describe());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memo_remembers_the_last_transport() {
        let memo = ProtocolMemo::default();
        assert_eq!(memo.get(), None);
        memo.set(Protocol::Classic);
        assert_eq!(memo.get(), Some(Protocol::Classic));
        memo.set(Protocol::WebSocket);
        assert_eq!(memo.get(), Some(Protocol::WebSocket));
    }
}
