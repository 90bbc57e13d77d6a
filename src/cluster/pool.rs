//! A warm pool of port-forward pairs for one pod port, so that a new connection costs no
//! upgrade on its critical path.
//!
//! Up to [`POOL_SIZE`] pairs wait ready. [`Pool::take`] hands out the oldest live one at once,
//! or opens a single pair when none is left, and starts one refill (never two at a time) when fewer than [`LOW_WATER`] remain.
//! A pair is dropped instead of handed out when its WebSocket ended, the kubelet reported an
//! error on it, it was evicted for unread data, or it is older than the pool's time to live:
//! v4 cannot tell that the pod closed one pair of a WebSocket, so a pair must not wait longer
//! than the pod's server keeps a silent connection. Pairs expire on their own (nothing is
//! refilled without a connection asking), and a new pod name starts the pool afresh.
//!
//! [`Warmup::SharedUpgrade`] opens a refill as one upgrade asking for the port several times.
//! The pod closing one pair then shows only when the whole WebSocket closes (v4 has no per-pair
//! close), so it suits protocols whose client decides when a connection ends (redis), not HTTP's
//! `Connection: close`. [`Warmup::Off`] opens nothing ahead: a server that serves one connection
//! at a time (Python's `http.server`, many dev servers) would sit on an idle warm connection and
//! never answer the one in use.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::anyhow;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::debug;

use super::client::Cluster;
use super::wsforward::{self, PodStream};

/// Pairs kept ready per pod port (and asked for in one upgrade). On a real kubelet an upgrade
/// asking for the same port 8 times costs what one asking once does (≈14 ms), so a refill of
/// 6–7 pairs serves that many connections for one upgrade (0.14 per connection, against 0.33
/// with 4); each ready pair is one idle connection to the pod.
pub const POOL_SIZE: usize = 8;
/// A refill starts when fewer pairs than this are ready.
pub const LOW_WATER: usize = 2;
/// How long a ready pair may wait for servers known to keep silent connections (redis has no
/// idle timeout by default, Jupyter's is an hour): the pool drains after two idle minutes.
pub const WARM_TTL: Duration = Duration::from_secs(120);
/// How long a ready pair may wait for any other server: below MySQL's 10 s `connect_timeout`,
/// the shortest common deadline for a client's first bytes.
pub const WARM_TTL_UNKNOWN: Duration = Duration::from_secs(8);

/// How a refill opens its pairs (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warmup {
    /// All pairs of a refill in one upgrade.
    SharedUpgrade,
    /// No warm pairs: every connection opens its own upgrade.
    Off,
}

/// Whether a stream came from the pool or from an upgrade of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warmth {
    /// Pre-opened: no upgrade on the critical path.
    Warm,
    /// Opened for this connection.
    Cold,
}

impl fmt::Display for Warmth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Warmth::Warm => "warm",
            Warmth::Cold => "cold",
        })
    }
}

/// The warm pairs of one pod port (see the module doc).
pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    cluster: Cluster,
    port: u16,
    ttl: Duration,
    warmup: Warmup,
    /// Woken when a refill ends, whatever its outcome.
    refilled: Notify,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    pod: String,
    /// Bumped on every pod switch or reset: a refill of an older generation is dropped.
    generation: u64,
    ready: VecDeque<(Instant, PodStream)>,
    refilling: bool,
    reaping: bool,
}

impl Pool {
    /// An empty pool for `port`; pairs wait at most `ttl` for a connection.
    pub fn new(cluster: Cluster, port: u16, ttl: Duration, warmup: Warmup) -> Pool {
        let shared = Shared {
            cluster,
            port,
            ttl,
            warmup,
            refilled: Notify::new(),
            state: Mutex::default(),
        };
        Pool {
            shared: Arc::new(shared),
        }
    }

    /// The namespace of the pods.
    pub fn namespace(&self) -> &str {
        &self.shared.cluster.namespace
    }

    /// The pod port this pool forwards to.
    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// A stream to `pod`: a warm one when ready, else one opened now.
    pub async fn take(&self, pod: &str) -> anyhow::Result<(PodStream, Warmth)> {
        let refilled = self.shared.refilled.notified();
        tokio::pin!(refilled);
        refilled.as_mut().enable();
        if let Some(stream) = self.take_warm(pod) {
            return Ok((stream, Warmth::Warm));
        }
        // With a refill on its way, waiting for it costs no more than an upgrade of our own
        // (the refill is bounded like one) and saves that upgrade.
        if self.shared.lock().refilling {
            refilled.await;
            if let Some(stream) = self.take_warm(pod) {
                return Ok((stream, Warmth::Warm));
            }
        }
        let (cluster, port) = (&self.shared.cluster, self.shared.port);
        let mut streams = wsforward::open(cluster, pod, port, 1, true).await?;
        let stream = streams
            .pop()
            .ok_or_else(|| anyhow!("port-forward to `{pod}:{port}` gave no stream"))?;
        Ok((stream, Warmth::Cold))
    }

    /// Closes every ready pair (after the pod was replaced, for instance).
    pub fn reset(&self) {
        let mut state = self.shared.lock();
        state.generation += 1;
        state.ready.clear();
    }

    /// How many pairs are ready (live or not yet found dead).
    pub fn ready(&self) -> usize {
        self.shared.lock().ready.len()
    }

    fn take_warm(&self, pod: &str) -> Option<PodStream> {
        if self.shared.warmup == Warmup::Off {
            return None;
        }
        let mut state = self.shared.lock();
        if state.pod != pod {
            state.pod = pod.to_string();
            state.generation += 1;
            state.ready.clear();
        }
        let now = Instant::now();
        let mut found = None;
        while let Some((opened, stream)) = state.ready.pop_front() {
            if now < opened + self.shared.ttl && stream.claim() {
                found = Some(stream);
                break;
            }
        }
        if state.ready.len() < LOW_WATER && !state.refilling {
            state.refilling = true;
            let count = POOL_SIZE - state.ready.len();
            let job = refill(
                self.shared.clone(),
                pod.to_string(),
                state.generation,
                count,
            );
            tokio::spawn(job);
        }
        found
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every change is one step.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Opens `count` warm pairs in one upgrade and adds them, unless the pool moved on meanwhile.
async fn refill(shared: Arc<Shared>, pod: String, generation: u64, count: usize) {
    let (cluster, port) = (&shared.cluster, shared.port);
    let opened = wsforward::open(cluster, &pod, port, count, false).await;
    let reap = {
        let mut state = shared.lock();
        state.refilling = false;
        match opened {
            Ok(streams) if state.generation == generation => {
                let now = Instant::now();
                state.ready.extend(streams.into_iter().map(|s| (now, s)));
                !std::mem::replace(&mut state.reaping, true)
            }
            Ok(_) => false,
            Err(e) => {
                debug!(
                    pod,
                    port = shared.port,
                    "could not refill the port-forward pool: {e:#}"
                );
                false
            }
        }
    };
    shared.refilled.notify_waiters();
    if reap {
        tokio::spawn(reap_expired(shared));
    }
}

/// Drops expired and dead pairs as they go, until the pool is empty.
async fn reap_expired(shared: Arc<Shared>) {
    loop {
        let next = {
            let mut state = shared.lock();
            let now = Instant::now();
            state
                .ready
                .retain(|(opened, s)| now < *opened + shared.ttl && s.is_alive());
            match state.ready.front() {
                Some((opened, _)) => *opened + shared.ttl,
                None => {
                    state.reaping = false;
                    return;
                }
            }
        };
        tokio::time::sleep_until(next).await;
    }
}
