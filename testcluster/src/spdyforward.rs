//! `pods/portforward` over SPDY/3.1, served the way the API server and kubelet serve it to
//! kubectl.
//!
//! Two ways in, one session behind them:
//! - classic: `POST` with `Connection: Upgrade`, `Upgrade: SPDY/3.1` and
//!   `X-Stream-Protocol-Version: portforward.k8s.io`; the 101 names the chosen protocol.
//! - tunnelled (KEP-4006, API servers from 1.31): a WebSocket upgrade (`GET`) offering the
//!   subprotocol `SPDY/3.1+portforward.k8s.io`; the API server answers with that subprotocol and
//!   then carries the SPDY bytes in binary WebSocket messages, one message per write.
//!
//! Inside the session the client opens a stream pair per connection: headers `streamType`
//! (`error` or `data`), `port` and `requestID` (streams without a valid port or type are reset,
//! as the kubelet rejects them). Once both streams of a request are there, the data stream dials
//! the pod's port; a failed dial is written as text on the error stream. Then bytes flow as
//! containerd forwards them: when one direction ends (the client's FIN, or the pod's EOF), the
//! other gets a second to finish, then both streams get FIN and the pod connection is closed
//! (no half-close reaches the pod). A client's RST_STREAM ends its direction as a FIN does (what
//! spdystream's reads see), and writes to the stream fail from then on. This side, like the
//! kubelet's spdystream, keeps no flow-control windows.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use podtun_spdy::{Config, Headers, Role, Session, Stream, WsIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role as WsRole, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The port-forward protocol of the SPDY streams.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The `Upgrade` token of the classic form.
pub const UPGRADE: &str = "SPDY/3.1";
/// The WebSocket subprotocol of the tunnelled form.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
const ACCEPTED_HEADER: &str = "x-accepted-stream-protocol-versions";
/// How long the kubelet waits for the second stream of a pair (its default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long containerd lets the other direction finish once one is done.
const LINGER: Duration = Duration::from_secs(1);
/// Largest WebSocket message accepted from the client.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// What one read of the pod socket may return (Go's io.Copy buffer).
const COPY_BUFFER: usize = 32 * 1024;

/// Which form of SPDY port-forward a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `Upgrade: SPDY/3.1`.
    Classic,
    /// SPDY in a WebSocket.
    Tunnel,
}

/// Whether `req` is a classic SPDY upgrade (`Connection: upgrade`, `Upgrade: SPDY/3.1`).
pub fn is_spdy_upgrade<B>(req: &Request<B>) -> bool {
    has_token(req.headers(), header::CONNECTION, "upgrade")
        && has_token(req.headers(), header::UPGRADE, UPGRADE)
}

/// Whether `req` is a WebSocket upgrade offering the tunnelled SPDY subprotocol.
pub fn is_tunnel_request<B>(req: &Request<B>) -> bool {
    crate::portforward::is_upgrade_request(req)
        && offered_subprotocols(req.headers())
            .iter()
            .any(|p| p.starts_with("SPDY/3.1+") && p.ends_with(".k8s.io"))
}

/// Validates the upgrade and returns the 101 response plus a future to spawn that serves the
/// session. `dial(port)` opens a connection to `port` inside the pod; cancelling `cancel` drops
/// the connection at once. A bad handshake gets the error response the API server would send.
#[allow(clippy::result_large_err, clippy::type_complexity)]
pub fn accept<B, D, F>(
    req: Request<B>,
    transport: Transport,
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
    let response = match transport {
        Transport::Classic => classic_response(&req)?,
        Transport::Tunnel => tunnel_response(&req)?,
    };
    let pod: Arc<str> = pod_from_path(req.uri().path()).into();
    let upgrade = hyper::upgrade::on(req);
    let session = async move {
        let upgraded = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            upgraded = upgrade => match upgraded {
                Ok(upgraded) => TokioIo::new(upgraded),
                Err(err) => {
                    debug!(%err, %pod, "port-forward upgrade failed");
                    return;
                }
            },
        };
        let session = match transport {
            Transport::Classic => Session::new(Tap::new(upgraded), Role::Server, kubelet_config()),
            Transport::Tunnel => {
                let config = WebSocketConfig::default()
                    .max_frame_size(Some(MAX_MESSAGE))
                    .max_message_size(Some(MAX_MESSAGE));
                let ws =
                    WebSocketStream::from_raw_socket(upgraded, WsRole::Server, Some(config)).await;
                Session::new(Tap::new(WsIo::new(ws)), Role::Server, kubelet_config())
            }
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => debug!(%pod, "SPDY port-forward session dropped"),
            () = serve(session, dial, pod.clone()) => debug!(%pod, "SPDY port-forward session closed"),
        }
    };
    Ok((response, session))
}

/// The kubelet's spdystream: no windows, no pings of its own, Go's 32 KiB copies.
fn kubelet_config() -> Config {
    Config {
        windows: false,
        max_frame: COPY_BUFFER,
        keepalive: None,
        ..Config::default()
    }
}

/// The kubelet's `httpstream.Handshake` and SPDY response upgrader.
#[allow(clippy::result_large_err)]
fn classic_response<B>(req: &Request<B>) -> Result<Response<Full<Bytes>>, Response<Full<Bytes>>> {
    if req.method() != Method::POST && req.method() != Method::GET {
        return Err(status(
            StatusCode::BAD_REQUEST,
            format!("method {} cannot upgrade", req.method()),
        ));
    }
    let offered: Vec<&str> = req
        .headers()
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: X-Stream-Protocol-Version is required".to_string(),
        ));
    }
    if !offered.contains(&PROTOCOL) {
        let mut response = status(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts [{PROTOCOL:?}]"
            ),
        );
        response
            .headers_mut()
            .insert(ACCEPTED_HEADER, HeaderValue::from_static(PROTOCOL));
        return Err(response);
    }
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, UPGRADE)
        .header(PROTOCOL_HEADER, PROTOCOL)
        .body(Full::default())
        .map_err(|err| status(StatusCode::BAD_REQUEST, err.to_string()))
}

/// The API server's tunnelling handler: a WebSocket upgrade naming the SPDY protocol it chose.
#[allow(clippy::result_large_err)]
fn tunnel_response<B>(req: &Request<B>) -> Result<Response<Full<Bytes>>, Response<Full<Bytes>>> {
    if req.method() != Method::GET {
        return Err(status(
            StatusCode::BAD_REQUEST,
            format!("method {} cannot upgrade to a WebSocket", req.method()),
        ));
    }
    let version = req.headers().get(header::SEC_WEBSOCKET_VERSION);
    if version.map(HeaderValue::as_bytes) != Some(b"13") {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Version must be 13".to_string(),
        ));
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key".to_string(),
        ));
    };
    if !offered_subprotocols(req.headers()).contains(&TUNNEL_PROTOCOL) {
        // Another SPDY/3.1+ protocol only: the kubelet behind cannot negotiate it.
        return Err(status(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: server accepts [{PROTOCOL:?}]"
            ),
        ));
    }
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .header(header::SEC_WEBSOCKET_PROTOCOL, TUNNEL_PROTOCOL)
        .body(Full::default())
        .map_err(|err| status(StatusCode::BAD_REQUEST, err.to_string()))
}

fn offered_subprotocols(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
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

/// A `Status` error response, as the kubelet's `http.Error` is passed through the API server.
fn status(code: StatusCode, message: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message + "\n")));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// One half of a request's pair, until the other arrives.
#[derive(Default)]
struct Pending {
    data: Option<Stream>,
    error: Option<Stream>,
}

/// Serves one session: pairs streams by `requestID`, then forwards each complete pair.
async fn serve<D, F>(session: Session, dial: D, pod: Arc<str>)
where
    D: Fn(u16) -> F,
    F: Future<Output = io::Result<TcpStream>> + Send + 'static,
{
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let (expired_tx, mut expired_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut pairs = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            stream = session.accept() => stream,
            Some(request) = expired_rx.recv() => {
                if let Some(half) = pending.remove(&request) {
                    let message = format!("(conn=0x0, request={request}) timed out waiting for streams");
                    if let Some(mut error) = half.error {
                        let _ = error.write_all(message.as_bytes()).await;
                        let _ = error.shutdown().await;
                    }
                    if let Some(mut data) = half.data {
                        let _ = data.shutdown().await;
                    }
                }
                continue;
            }
            Some(_) = pairs.join_next(), if !pairs.is_empty() => continue,
        };
        let Some(stream) = stream else { break };
        let Some((kind, _port)) = check_stream(stream.headers()) else {
            // The kubelet's stream handler refuses it: the stream is reset, the session goes on.
            stream.reset();
            continue;
        };
        stream.reply(Headers::new());
        let request = request_id(&stream, kind);
        let half = pending.entry(request.clone()).or_default();
        if half.data.is_none() && half.error.is_none() {
            let expired = expired_tx.clone();
            let request = request.clone();
            tokio::spawn(async move {
                tokio::time::sleep(STREAM_CREATION_TIMEOUT).await;
                let _ = expired.send(request);
            });
        }
        let slot = match kind {
            Kind::Data => &mut half.data,
            Kind::Error => &mut half.error,
        };
        if slot.is_some() {
            // A second stream of one type for one request: reported on the error stream.
            let message = format!(
                "error processing stream for request {request}: {} stream already assigned",
                kind.name()
            );
            debug!(%pod, "{message}");
            if let Some(error) = half.error.as_mut() {
                let _ = error.write_all(message.as_bytes()).await;
            }
            stream.reset();
            continue;
        }
        *slot = Some(stream);
        if half.data.is_some() && half.error.is_some() {
            let Some(Pending {
                data: Some(data),
                error: Some(error),
            }) = pending.remove(&request)
            else {
                continue;
            };
            let port = check_stream(data.headers()).map_or(0, |(_, port)| port);
            pairs.spawn(forward(data, error, port, dial(port), pod.clone()));
        }
    }
    pairs.abort_all();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Data,
    Error,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Data => "data",
            Kind::Error => "error",
        }
    }
}

/// The stream's type and port, if both headers are valid.
fn check_stream(headers: &Headers) -> Option<(Kind, u16)> {
    let port = headers
        .get("port")?
        .parse::<u16>()
        .ok()
        .filter(|&p| p > 0)?;
    let kind = match headers.get("streamtype")? {
        "data" => Kind::Data,
        "error" => Kind::Error,
        _ => return None,
    };
    Some((kind, port))
}

/// The `requestID` header, or (old clients) one derived from the stream id as the kubelet does.
fn request_id(stream: &Stream, kind: Kind) -> String {
    match stream.headers().get("requestid") {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => match kind {
            Kind::Error => stream.id().to_string(),
            Kind::Data => (i64::from(stream.id()) - 2).to_string(),
        },
    }
}

/// One forwarded connection: dial, then copy as containerd does.
async fn forward<F>(mut data: Stream, mut error: Stream, port: u16, dial: F, pod: Arc<str>)
where
    F: Future<Output = io::Result<TcpStream>>,
{
    match dial.await {
        Ok(conn) => {
            let (mut pod_rx, mut pod_tx) = conn.into_split();
            let (mut client_rx, mut client_tx) = tokio::io::split(&mut data);
            let download = async {
                let mut buf = vec![0; COPY_BUFFER];
                loop {
                    match pod_rx.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if client_tx.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            };
            let upload = async {
                let mut buf = vec![0; COPY_BUFFER];
                loop {
                    match client_rx.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if pod_tx.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            };
            tokio::pin!(download, upload);
            tokio::select! {
                () = &mut download => {
                    let _ = tokio::time::timeout(LINGER, &mut upload).await;
                }
                () = &mut upload => {
                    let _ = tokio::time::timeout(LINGER, &mut download).await;
                }
            }
        }
        Err(err) => {
            let text = format!(
                "error forwarding port {port} to pod {pod}, uid : failed to execute portforward in network namespace: {}",
                dial_error(port, &err)
            );
            debug!(%pod, port, "{text}");
            let _ = error.write_all(text.as_bytes()).await;
        }
    }
    // The kubelet closes both streams (FIN) and forgets them.
    let _ = data.shutdown().await;
    let _ = error.shutdown().await;
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

/// The environment variable naming a directory where every SPDY session's bytes are recorded
/// (`N.client` as received, `N.server` as sent): how the codec's fixtures of kubectl's frames
/// were captured. Unset, nothing is recorded.
pub const TAP_ENV: &str = "TESTCLUSTER_SPDY_TAP";

/// A byte stream that appends what crosses it to two files, when [`TAP_ENV`] is set.
struct Tap<T> {
    io: T,
    files: Option<(std::fs::File, std::fs::File)>,
}

impl<T> Tap<T> {
    fn new(io: T) -> Tap<T> {
        static SESSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let files = std::env::var_os(TAP_ENV).and_then(|dir| {
            let n = SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::path::PathBuf::from(dir);
            let open = |name: String| std::fs::File::create(dir.join(name)).ok();
            Some((open(format!("{n}.client"))?, open(format!("{n}.server"))?))
        });
        Tap { io, files }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tap<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        let Tap { files, .. } = &mut *self;
        if let Some((client, _)) = files.as_mut() {
            let _ = io::Write::write_all(client, &buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tap<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.io).poll_write(cx, buf))?;
        if let Some((_, server)) = self.files.as_mut() {
            let _ = io::Write::write_all(server, &buf[..n]);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_need_a_port_and_a_known_type() {
        let ok = Headers::new()
            .with("Streamtype", "data")
            .with("Port", "6379")
            .with("Requestid", "0");
        assert_eq!(check_stream(&ok), Some((Kind::Data, 6379)));
        let error = Headers::new().with("streamtype", "error").with("port", "1");
        assert_eq!(check_stream(&error), Some((Kind::Error, 1)));
        for bad in [
            Headers::new().with("streamtype", "data"),
            Headers::new().with("streamtype", "data").with("port", "0"),
            Headers::new()
                .with("streamtype", "data")
                .with("port", "70000"),
            Headers::new()
                .with("streamtype", "stdin")
                .with("port", "80"),
            Headers::new().with("port", "80"),
        ] {
            assert_eq!(check_stream(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_classic_handshake_negotiates_portforward() {
        let req = |protocols: &[&str]| {
            let mut b = Request::builder()
                .method(Method::POST)
                .uri("/api/v1/namespaces/demo/pods/redis/portforward")
                .header("Connection", "Upgrade")
                .header("Upgrade", "SPDY/3.1");
            for p in protocols {
                b = b.header("X-Stream-Protocol-Version", *p);
            }
            b.body(()).expect("request")
        };
        let ok = req(&["portforward.k8s.io"]);
        assert!(is_spdy_upgrade(&ok) && !is_tunnel_request(&ok));
        let response = classic_response(&ok).expect("101");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(response.headers()["upgrade"], "SPDY/3.1");
        assert_eq!(response.headers()[PROTOCOL_HEADER], PROTOCOL);
        let refused = classic_response(&req(&["v2.portforward.k8s.io"])).expect_err("403");
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(refused.headers()[ACCEPTED_HEADER], PROTOCOL);
        assert_eq!(
            classic_response(&req(&[])).expect_err("400").status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn the_tunnel_is_a_websocket_offering_spdy() {
        let req = |protocol: &str| {
            Request::builder()
                .method(Method::GET)
                .uri("/api/v1/namespaces/demo/pods/redis/portforward")
                .header("Connection", "Upgrade")
                .header("Upgrade", "websocket")
                .header("Sec-WebSocket-Version", "13")
                .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
                .header("Sec-WebSocket-Protocol", protocol)
                .body(())
                .expect("request")
        };
        let tunnel = req("SPDY/3.1+portforward.k8s.io");
        assert!(is_tunnel_request(&tunnel));
        let response = tunnel_response(&tunnel).expect("101");
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            TUNNEL_PROTOCOL
        );
        assert_eq!(
            response.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(!is_tunnel_request(&req("v4.channel.k8s.io")));
    }
}
