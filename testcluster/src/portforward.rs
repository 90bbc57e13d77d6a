//! `pods/portforward` over WebSocket, served the way the kubelet serves it to kube-rs.
//!
//! Protocol `v4.channel.k8s.io`: every binary frame is `[channel][payload]`; port `i` of the
//! request uses data channel `2i` and error channel `2i+1`, and the server's first frame on each
//! channel is the port as u16 little-endian. Every port entry (the same port more than once
//! included) dials its own connection in the pod as soon as the upgrade completes. A failed dial
//! is reported as text on the error channel. The WebSocket closes when every pod connection is
//! done, or when the client closes it; v4 has no per-channel close.
//!
//! This module knows nothing about pods: the caller parses the request path and `ports`, and
//! passes a `dial` function that connects to a port inside the pod.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The only subprotocol the kubelet's WebSocket port-forward speaks that kube-rs asks for.
pub const PROTOCOL: &str = "v4.channel.k8s.io";

/// Largest payload of one pod → client frame: what one read of the pod socket returns, up to this.
const FRAME_PAYLOAD: usize = 64 * 1024;
/// Largest client frame accepted; clients send whole writes as one frame (kube-rs: 4 KiB).
const MAX_CLIENT_FRAME: usize = 16 * 1024 * 1024;
/// Frames queued towards the client, shared by all ports of one session.
const OUT_QUEUE: usize = 32;
/// Client frames queued towards one pod connection.
const IN_QUEUE: usize = 16;
/// How long a closing session waits for the client's answer to its Close frame (kube-rs never
/// answers while the caller holds its streams) before dropping the connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

type Upgraded = TokioIo<hyper::upgrade::Upgraded>;
type Sink = SplitSink<WebSocketStream<Upgraded>, Message>;
type Stream = SplitStream<WebSocketStream<Upgraded>>;

/// Whether `req` asks for a WebSocket upgrade (`Connection: upgrade` and `Upgrade: websocket`).
pub fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    has_token(req.headers(), header::CONNECTION, "upgrade")
        && has_token(req.headers(), header::UPGRADE, "websocket")
}

/// Validates the handshake and returns the 101 response plus a future to spawn; the future
/// awaits hyper's upgrade and then serves the session until done.
///
/// `ports` are the pod ports in the order of the request's `ports` parameter; `dial(port)` opens
/// one connection to `port` inside the pod. Cancelling `cancel` drops the connection at once,
/// without a Close frame. A bad handshake gets a 400 response carrying a `Status`.
// The rejection is the response to send as is; it is built once per rejected handshake.
#[allow(clippy::result_large_err, clippy::type_complexity)]
pub fn accept<B, D, F>(
    req: Request<B>,
    ports: Vec<u16>,
    dial: D,
    cancel: CancellationToken,
) -> Result<
    (
        Response<Full<Bytes>>,
        impl Future<Output = ()> + Send + 'static,
    ),
    Response<Full<Bytes>>,
>
where
    D: Fn(u16) -> F + Send + Sync + 'static,
    F: Future<Output = io::Result<TcpStream>> + Send + 'static,
{
    let key = check_handshake(&req, &ports).map_err(bad_request)?;
    let protocol = choose_protocol(req.headers()).map_err(bad_request)?;
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        );
    if let Some(protocol) = protocol {
        response = response.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    let response = response
        .body(Full::default())
        .map_err(|err| bad_request(err.to_string()))?;
    let pod: Arc<str> = pod_from_path(req.uri().path()).into();
    let upgrade = hyper::upgrade::on(req);
    let session = async move {
        let upgraded = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            upgraded = upgrade => match upgraded {
                Ok(upgraded) => upgraded,
                Err(err) => {
                    debug!(%err, %pod, "port-forward upgrade failed");
                    return;
                }
            },
        };
        let config = WebSocketConfig::default()
            .max_frame_size(Some(MAX_CLIENT_FRAME))
            .max_message_size(Some(MAX_CLIENT_FRAME));
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        tokio::select! {
            biased;
            _ = cancel.cancelled() => debug!(%pod, "port-forward session dropped"),
            () = serve(ws, ports, dial, pod.clone()) => debug!(%pod, "port-forward session closed"),
        }
    };
    Ok((response, session))
}

/// Checks the WebSocket handshake headers and returns the client's key.
fn check_handshake<B>(req: &Request<B>, ports: &[u16]) -> Result<String, String> {
    if req.method() != Method::GET {
        return Err(format!("method {} cannot upgrade", req.method()));
    }
    if !is_upgrade_request(req) {
        return Err("expected a WebSocket upgrade request".to_string());
    }
    let version = req.headers().get(header::SEC_WEBSOCKET_VERSION);
    if version.map(HeaderValue::as_bytes) != Some(b"13") {
        return Err("Sec-WebSocket-Version must be 13".to_string());
    }
    if ports.is_empty() {
        return Err("at least one port must be given".to_string());
    }
    // Two channels per port, and a channel is one byte.
    if ports.len() > 128 {
        return Err(format!("too many ports: {} (at most 128)", ports.len()));
    }
    req.headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|key| key.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| "missing Sec-WebSocket-Key".to_string())
}

/// `Ok(None)` when the client offers no subprotocol (the kubelet then speaks v4 anyway).
fn choose_protocol(headers: &HeaderMap) -> Result<Option<&'static str>, String> {
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|protocol| !protocol.is_empty())
        .collect();
    if offered.is_empty() {
        Ok(None)
    } else if offered.contains(&PROTOCOL) {
        Ok(Some(PROTOCOL))
    } else {
        Err(format!(
            "requested protocol(s) are not supported: {offered:?}; supports [{PROTOCOL:?}]"
        ))
    }
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|part| part.trim().eq_ignore_ascii_case(token))
}

/// `ns/name` from `/api/v1/namespaces/{ns}/pods/{name}/portforward`, for error texts.
fn pod_from_path(path: &str) -> String {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        [.., "namespaces", ns, "pods", name, _] => format!("{ns}/{name}"),
        _ => path.to_string(),
    }
}

fn bad_request(message: String) -> Response<Full<Bytes>> {
    let status = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "BadRequest", "code": 400,
    });
    let mut response = Response::new(Full::new(Bytes::from(status.to_string())));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    let json = HeaderValue::from_static("application/json");
    response.headers_mut().insert(header::CONTENT_TYPE, json);
    response
}

/// Runs one upgraded session: a writer and a reader over the split WebSocket, and one task per
/// port entry. Reading never waits on writing: kube-rs's client alternates between the two on
/// one task, so a server that stops reading while its writes are blocked can deadlock with it.
async fn serve<D, F>(ws: WebSocketStream<Upgraded>, ports: Vec<u16>, dial: D, pod: Arc<str>)
where
    D: Fn(u16) -> F,
    F: Future<Output = io::Result<TcpStream>> + Send + 'static,
{
    let (sink, stream) = ws.split();
    // The pairs hold the only senders: when every pair is done, the writer drains what they
    // sent and then closes.
    let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
    let mut pairs = JoinSet::new();
    let mut inbound = Vec::with_capacity(ports.len());
    for (index, &port) in ports.iter().enumerate() {
        let (in_tx, in_rx) = mpsc::channel(IN_QUEUE);
        inbound.push(Some(in_tx));
        let pair = Pair {
            // At most 128 ports (checked in `check_handshake`), so channels fit in a byte.
            data: (2 * index) as u8,
            port,
            pod: pod.clone(),
            out: out_tx.clone(),
        };
        pairs.spawn(pair.forward(dial(port), in_rx));
    }
    drop(out_tx);
    let first_frames = (0..2 * ports.len())
        .map(|ch| port_frame(ch, ports[ch / 2]))
        .collect();
    let writer_done = CancellationToken::new();
    let stop_writer = CancellationToken::new();
    let writer = write_frames(sink, first_frames, out_rx, stop_writer.clone());
    let writer = async {
        let sink = writer.await;
        writer_done.cancel();
        sink
    };
    let reader = read_frames(stream, pairs, inbound, &writer_done, &stop_writer);
    let (sink, stream) = tokio::join!(writer, reader);
    let Ok(mut ws) = stream.reunite(sink) else {
        return;
    };
    // Close frame sent: end the TCP stream too, then wait briefly for the client's side.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        let _ = ws.get_mut().shutdown().await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

fn port_frame(ch: usize, port: u16) -> Bytes {
    let [lo, hi] = port.to_le_bytes();
    Bytes::from(vec![ch as u8, lo, hi])
}

/// Sends the initial port frames, then what the pairs send until they are all done or `stop`;
/// then sends (or answers) the Close frame.
async fn write_frames(
    mut sink: Sink,
    first_frames: Vec<Bytes>,
    mut out: mpsc::Receiver<Bytes>,
    stop: CancellationToken,
) -> Sink {
    for frame in first_frames {
        if sink.feed(Message::Binary(frame)).await.is_err() {
            return sink;
        }
    }
    loop {
        if out.is_empty() && sink.flush().await.is_err() {
            break;
        }
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            next = out.recv() => next,
        };
        let Some(frame) = next else { break };
        if sink.feed(Message::Binary(frame)).await.is_err() {
            break;
        }
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
    sink
}

/// Reads client frames and hands data to the port tasks until the session ends: every pair
/// done (reading goes on until the writer has sent their last data and the Close frame), a
/// client Close frame (pod connections are dropped), or the client going away.
async fn read_frames(
    mut stream: Stream,
    mut pairs: JoinSet<()>,
    mut inbound: Vec<Option<mpsc::Sender<Bytes>>>,
    writer_done: &CancellationToken,
    stop_writer: &CancellationToken,
) -> Stream {
    let mut closing = false;
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(Ok(Message::Binary(frame))) if !closing => {
                    deliver(frame, &mut inbound).await;
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                // Pings are answered by tungstenite; text and late data are dropped.
                Some(Ok(_)) => {}
            },
            Some(_) = pairs.join_next(), if !pairs.is_empty() => {
                if pairs.is_empty() {
                    closing = true;
                    inbound.clear();
                }
            }
            _ = writer_done.cancelled() => break,
        }
    }
    pairs.abort_all();
    stop_writer.cancel();
    stream
}

/// Passes a client frame's payload to its pair; frames for error channels, unknown channels or
/// finished pairs are dropped.
async fn deliver(mut frame: Bytes, inbound: &mut [Option<mpsc::Sender<Bytes>>]) {
    if frame.len() < 2 {
        return;
    }
    let ch = usize::from(frame[0]);
    if ch % 2 != 0 {
        return;
    }
    let Some(slot) = inbound.get_mut(ch / 2) else {
        return;
    };
    if let Some(tx) = slot {
        if tx.send(frame.split_off(1)).await.is_err() {
            *slot = None;
        }
    }
}

/// One port entry of the request: its own connection in the pod.
struct Pair {
    data: u8,
    port: u16,
    pod: Arc<str>,
    out: mpsc::Sender<Bytes>,
}

impl Pair {
    /// Dials, then copies both ways until the pod side reaches EOF or fails; a dial or read
    /// failure is reported on the error channel.
    async fn forward<F>(self, dial: F, mut from_client: mpsc::Receiver<Bytes>)
    where
        F: Future<Output = io::Result<TcpStream>>,
    {
        let conn = match dial.await {
            Ok(conn) => conn,
            Err(err) => return self.report(&dial_error(self.port, &err)).await,
        };
        let (mut pod_rx, mut pod_tx) = conn.into_split();
        let upload = async {
            while let Some(chunk) = from_client.recv().await {
                if let Err(err) = pod_tx.write_all(&chunk).await {
                    debug!(%err, port = self.port, "write to pod failed; dropping client data");
                    break;
                }
            }
            // Keep draining so one dead connection never stalls the session's reader.
            while from_client.recv().await.is_some() {}
            std::future::pending::<()>().await;
        };
        let download = async {
            let mut buf = BytesMut::new();
            loop {
                buf.reserve(1 + FRAME_PAYLOAD);
                buf.put_u8(self.data);
                match pod_rx.read_buf(&mut (&mut buf).limit(FRAME_PAYLOAD)).await {
                    Ok(0) => return,
                    Ok(_) => {
                        let frame = buf.split().freeze();
                        if self.out.send(frame).await.is_err() {
                            return;
                        }
                    }
                    Err(err) => {
                        let message = format!("read tcp4 127.0.0.1:{}: {err}", self.port);
                        return self.report(&message).await;
                    }
                }
            }
        };
        tokio::select! {
            () = download => {}
            () = upload => {}
        }
    }

    async fn report(&self, cause: &str) {
        let text = format!(
            "error forwarding port {} to pod {}, uid : failed to execute portforward in network namespace: {cause}",
            self.port, self.pod
        );
        debug!(port = self.port, pod = %self.pod, "{text}");
        let mut frame = BytesMut::with_capacity(1 + text.len());
        frame.put_u8(self.data + 1);
        frame.put_slice(text.as_bytes());
        let _ = self.out.send(frame.freeze()).await;
    }
}

/// Go's wording for a failed dial, as the kubelet reports it.
fn dial_error(port: u16, err: &io::Error) -> String {
    let reason = match err.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        io::ErrorKind::TimedOut => "i/o timeout".to_string(),
        _ => err.to_string(),
    };
    format!("dial tcp4 127.0.0.1:{port}: connect: {reason}")
}
