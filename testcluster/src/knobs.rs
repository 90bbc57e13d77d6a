//! Fault knobs: delay every response, stall the API, drop or refuse port-forwards.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The fault settings of one cluster.
pub(crate) struct Knobs {
    delay: Mutex<Duration>,
    stall_until: Mutex<Option<Instant>>,
    refuse_until: Mutex<Option<Instant>>,
    /// Cancelled (and replaced) to drop every open port-forward at once; the tracker sees the
    /// sessions of that generation end.
    portforwards: Mutex<(CancellationToken, TaskTracker)>,
    upgrades: AtomicU64,
    /// Upgrades served per transport, in [`Transport`] order.
    by_transport: [AtomicU64; 3],
    /// Transports turned off, in [`Transport`] order.
    off: [AtomicBool; 3],
}

/// The port-forward transports the cluster serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket `v4.channel.k8s.io` (kube-rs).
    WebSocket = 0,
    /// `Upgrade: SPDY/3.1` (kubectl before 1.31, or with `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`).
    Spdy = 1,
    /// SPDY tunnelled in a WebSocket (kubectl from 1.31; API servers from 1.31).
    Tunnel = 2,
}

impl Transport {
    /// Every transport, in order.
    pub const ALL: [Transport; 3] = [Transport::WebSocket, Transport::Spdy, Transport::Tunnel];

    /// The name used by the admin endpoints and stats.
    pub fn name(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Spdy => "spdy",
            Transport::Tunnel => "tunnel",
        }
    }

    /// The transport of that name.
    pub fn from_name(name: &str) -> Option<Transport> {
        Transport::ALL.into_iter().find(|t| t.name() == name)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Knobs {
    pub fn new() -> Knobs {
        Knobs {
            delay: Mutex::new(Duration::ZERO),
            stall_until: Mutex::new(None),
            refuse_until: Mutex::new(None),
            portforwards: Mutex::new((CancellationToken::new(), TaskTracker::new())),
            upgrades: AtomicU64::new(0),
            by_transport: Default::default(),
            off: Default::default(),
        }
    }

    pub fn set_delay(&self, d: Duration) {
        *lock(&self.delay) = d;
    }

    pub fn stall(&self, d: Duration) {
        *lock(&self.stall_until) = Some(Instant::now() + d);
    }

    pub fn refuse_portforwards(&self, d: Duration) {
        *lock(&self.refuse_until) = Some(Instant::now() + d);
    }

    pub fn refusing_portforwards(&self) -> bool {
        lock(&self.refuse_until).is_some_and(|until| Instant::now() < until)
    }

    /// Drops every open port-forward session, and returns once each has ended: from then on,
    /// nothing sent to one reaches a pod.
    pub async fn drop_portforwards(&self) {
        let fresh = (CancellationToken::new(), TaskTracker::new());
        let (token, tracker) = std::mem::replace(&mut *lock(&self.portforwards), fresh);
        token.cancel();
        tracker.close();
        tracker.wait().await;
    }

    /// The token a new port-forward session is dropped by, and the tracker its task joins.
    pub fn portforward_token(&self) -> (CancellationToken, TaskTracker) {
        lock(&self.portforwards).clone()
    }

    pub fn count_upgrade(&self, transport: Transport) {
        self.upgrades.fetch_add(1, Ordering::Relaxed);
        self.by_transport[transport as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Upgrades served over `transport`.
    pub fn upgrades_over(&self, transport: Transport) -> u64 {
        self.by_transport[transport as usize].load(Ordering::Relaxed)
    }

    /// Turns a transport on or off.
    pub fn set_transport(&self, transport: Transport, on: bool) {
        self.off[transport as usize].store(!on, Ordering::Relaxed);
    }

    pub fn serves(&self, transport: Transport) -> bool {
        !self.off[transport as usize].load(Ordering::Relaxed)
    }

    pub fn upgrades(&self) -> u64 {
        self.upgrades.load(Ordering::Relaxed)
    }

    /// Holds a request while the API is stalled, then delays it by the configured delay.
    pub async fn hold(&self) {
        loop {
            let until = *lock(&self.stall_until);
            match until {
                Some(until) if Instant::now() < until => tokio::time::sleep_until(until).await,
                _ => break,
            }
        }
        let delay = *lock(&self.delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}
