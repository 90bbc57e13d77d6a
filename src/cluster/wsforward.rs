//! podtun's own driver for the Kubernetes WebSocket port-forward (`v4.channel.k8s.io`).
//!
//! One upgrade carries one or more *pairs* (the same port several times included); pair `i`
//! uses data channel `2i` and error channel `2i+1`, every binary frame is `[channel][payload]`,
//! and the server's first frame on each channel is the port (u16 LE). Each pair is its own
//! connection in the pod, exposed as a [`PodStream`].
//!
//! One task per WebSocket does all reads and writes ([`drive`]), so bytes take one task hop per
//! direction: writers hand whole frames to it over one bounded queue ([`OUT_QUEUE`] frames of up
//! to [`FRAME_MAX`]), and it routes pod data to one bounded queue per pair ([`PAIR_QUEUE`]
//! frames). A pair whose reader falls behind holds back reading the socket only once its own
//! queue is full (writes and pings go on meanwhile): that keeps TCP back-pressure towards the
//! pod, at the price of the other pairs of that socket waiting for it. A pair nobody has
//! claimed yet (a warm one in the pool) never holds anything back: past [`UNCLAIMED_LIMIT`]
//! bytes it is evicted. v4 has no per-pair close: dropping a stream only stops its routing, and
//! the pod connection ends with the WebSocket, which closes when its last stream is dropped.

mod frame;
mod stream;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::anyhow;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::PollSender;

use super::client::Cluster;
use super::resolve::api_error;
use crate::error::hinted;
use crate::proto::refusal::ForwardRefused;
use frame::{route, Pair};
pub use stream::PodStream;
use stream::{Shared, CLAIMED, UNCLAIMED};

/// The subprotocol of the kubelet's WebSocket port-forward.
pub const PROTOCOL: &str = "v4.channel.k8s.io";
/// Largest pod-bound frame. A 64 MiB redis SET through one stream on the test cluster took
/// ≈330–590 ms with 32 KiB frames, ≈330–410 ms with 64 KiB, ≈245–265 ms with 128 KiB and
/// ≈205–255 ms with 256 KiB (three runs each; kube's Portforwarder sends 4 KiB).
pub const FRAME_MAX: usize = 256 * 1024;
/// Frames queued towards the API server, shared by the pairs of one WebSocket.
const OUT_QUEUE: usize = 8;
/// Frames from the pod queued for one pair before it holds back reading the WebSocket.
const PAIR_QUEUE: usize = 16;
/// Pod data buffered for a pair nobody has claimed yet before it is evicted.
pub const UNCLAIMED_LIMIT: usize = 64 * 1024;
/// WebSocket ping period: idle forwards survive the idle timeouts of proxies on the way, and a
/// server that answers nothing for two periods is taken for gone.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
/// Bound on the upgrade request.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on the closing handshake once every stream is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

static UPGRADES: AtomicU64 = AtomicU64::new(0);

/// Counts one port-forward upgrade, whatever its transport.
pub(super) fn count_upgrade() {
    UPGRADES.fetch_add(1, Ordering::Relaxed);
}

/// How many port-forward upgrades this process has asked for.
pub fn upgrades() -> u64 {
    UPGRADES.load(Ordering::Relaxed)
}

/// Opens one upgrade to `pod:port` with `count` pairs; `claimed` streams are in use at once,
/// the others are warm ones for the pool.
pub async fn open(
    cluster: &Cluster,
    pod: &str,
    port: u16,
    count: usize,
    claimed: bool,
) -> anyhow::Result<Vec<PodStream>> {
    let ns = &cluster.namespace;
    let what = format!("port-forward to `{ns}/{pod}:{port}`");
    let query = vec![format!("ports={port}"); count.clamp(1, 128)].join("&");
    let request = http::Request::get(format!(
        "/api/v1/namespaces/{ns}/pods/{pod}/portforward?{query}"
    ))
    .header(http::header::SEC_WEBSOCKET_PROTOCOL, PROTOCOL)
    .body(Vec::new())?;
    UPGRADES.fetch_add(1, Ordering::Relaxed);
    let connection = tokio::time::timeout(UPGRADE_TIMEOUT, cluster.client.connect(request))
        .await
        .map_err(|_| anyhow!("could not {what}: no answer in {UPGRADE_TIMEOUT:?}"))?
        .map_err(|e| cluster.note_refusal(upgrade_error(e, &what, ns, pod)))?;
    Ok(start(connection.into_stream(), port, count, claimed))
}

/// One test connection to `pod:port` that sends nothing: the kubelet's word when it could not
/// connect in the pod, `None` when it said nothing within `window` (v4 has no sign of success).
pub async fn check(
    cluster: &Cluster,
    pod: &str,
    port: u16,
    window: Duration,
) -> anyhow::Result<Option<String>> {
    let mut streams = open(cluster, pod, port, 1, true).await?;
    let Some(stream) = streams.pop() else {
        return Ok(None);
    };
    let said = tokio::time::timeout(window, stream.error()).await;
    Ok(said.ok().flatten())
}

/// Names what a refused upgrade means for a port-forward.
pub(super) fn upgrade_error(err: kube::Error, what: &str, ns: &str, pod: &str) -> anyhow::Error {
    match &err {
        kube::Error::Api(status) if matches!(status.code, 401 | 403) => {
            match ForwardRefused::of(status.code, ns, pod, &status.message) {
                Some(refused) => refused.into_error(),
                None => api_error(err, what, ns),
            }
        }
        kube::Error::Api(status) if status.code == 404 => hinted(
            anyhow!("pod `{ns}/{pod}` is gone: {}", status.message),
            format!("it was deleted or replaced; see `kubectl -n {ns} get pods`"),
        ),
        _ => api_error(err, what, ns),
    }
}

/// Starts the task of an upgraded WebSocket and returns its `count` streams.
pub fn start<S>(ws: WebSocketStream<S>, port: u16, count: usize, claimed: bool) -> Vec<PodStream>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ended = Arc::new(OnceLock::new());
    let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
    let (mut streams, mut pairs) = (Vec::new(), Vec::new());
    for i in 0..count.clamp(1, 128) {
        let (data_tx, data_rx) = mpsc::channel(PAIR_QUEUE);
        let (error_tx, error_rx) = watch::channel(None);
        let claim = if claimed { CLAIMED } else { UNCLAIMED };
        let shared = Arc::new(Shared {
            claim: AtomicU8::new(claim),
            ended: ended.clone(),
        });
        let out = PollSender::new(out_tx.clone());
        let channel = (2 * i) as u8;
        let stream = PodStream::new(port, channel, out, data_rx, error_rx, shared.clone());
        streams.push(stream);
        pairs.push(Pair {
            port,
            data: Some(data_tx),
            error: error_tx,
            shared,
            headers_seen: [false; 2],
            unclaimed_bytes: 0,
        });
    }
    tokio::spawn(drive(ws, out_rx, pairs, ended));
    streams
}

/// Reads and writes one WebSocket until the server closes it, it fails, or every stream is gone.
async fn drive<S>(
    mut ws: WebSocketStream<S>,
    mut out: mpsc::Receiver<Bytes>,
    mut pairs: Vec<Pair>,
    ended: Arc<OnceLock<Option<String>>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = tokio::time::Instant::now() + PING_INTERVAL;
    let mut ping = tokio::time::interval_at(start, PING_INTERVAL);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = true;
    // A frame for a claimed pair whose queue is full: reading waits until it has room.
    let mut held: Option<(usize, Bytes)> = None;
    let end = loop {
        let room = held.as_ref().and_then(|(i, _)| pairs[*i].data.clone());
        tokio::select! {
            permit = async { room?.reserve_owned().await.ok() }, if held.is_some() => {
                if let (Some(permit), Some((_, frame))) = (permit, held.take()) {
                    permit.send(frame);
                }
            }
            message = ws.next(), if held.is_none() => {
                heard = true;
                match message {
                    Some(Ok(Message::Binary(frame))) => match route(&mut pairs, frame) {
                        Ok(hold) => held = hold,
                        Err(e) => break Some(e),
                    },
                    Some(Ok(Message::Close(_))) => {
                        // Send tungstenite's queued answer to the server's Close.
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.flush()).await;
                        break None;
                    }
                    None => break None,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break Some(format!("port-forward connection lost: {e}")),
                }
            }
            frame = out.recv() => match frame {
                Some(frame) => if let Err(e) = send_queued(&mut ws, &mut out, frame).await {
                    break Some(format!("port-forward connection lost: {e}"));
                },
                None => {
                    // Every stream is gone: close, and give the server a moment to answer.
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                        let _ = ws.close(None).await;
                        while let Some(Ok(_)) = ws.next().await {}
                    })
                    .await;
                    break None;
                }
            },
            _ = ping.tick() => {
                if !heard && held.is_none() {
                    break Some("the API server stopped answering port-forward pings".into());
                }
                // While reading waits for a slow pair, answers cannot be heard: judge later.
                heard = held.is_some();
                if let Err(e) = ws.send(Message::Ping(Bytes::new())).await {
                    break Some(format!("port-forward connection lost: {e}"));
                }
            }
        }
    };
    // Readers see the end after the data already queued; error futures resolve with `None`.
    let _ = ended.set(end);
}

/// Sends `first` and whatever else is queued already, then flushes once.
async fn send_queued<S>(
    ws: &mut WebSocketStream<S>,
    out: &mut mpsc::Receiver<Bytes>,
    first: Bytes,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.feed(Message::Binary(first)).await?;
    // A bounded batch, so that a busy writer cannot keep the socket from being read.
    for _ in 1..OUT_QUEUE {
        let Ok(frame) = out.try_recv() else { break };
        ws.feed(Message::Binary(frame)).await?;
    }
    ws.flush().await
}
