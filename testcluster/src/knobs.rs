//! Fault knobs: delay every response, stall the API, drop or refuse port-forwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The fault settings of one cluster.
pub(crate) struct Knobs {
    delay: Mutex<Duration>,
    stall_until: Mutex<Option<Instant>>,
    refuse_until: Mutex<Option<Instant>>,
    /// Cancelled (and replaced) to drop every open port-forward at once.
    portforwards: Mutex<CancellationToken>,
    upgrades: AtomicU64,
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
            portforwards: Mutex::new(CancellationToken::new()),
            upgrades: AtomicU64::new(0),
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

    pub fn drop_portforwards(&self) {
        let old = std::mem::replace(&mut *lock(&self.portforwards), CancellationToken::new());
        old.cancel();
    }

    /// The token a new port-forward session is dropped by.
    pub fn portforward_token(&self) -> CancellationToken {
        lock(&self.portforwards).clone()
    }

    pub fn count_upgrade(&self) {
        self.upgrades.fetch_add(1, Ordering::Relaxed);
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
