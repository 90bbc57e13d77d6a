//! podtun's driver for the SPDY/3.1 port-forward (`portforward.k8s.io`), as kubectl speaks it.
//!
//! ```text
//!   Link (one per forward) ── one Session per pod ──┬─ connection 1: error stream + data stream
//!                                                   ├─ connection 2: …
//!                                                   └─ PING keepalive
//! ```
//!
//! Every local connection is a new stream pair in the pod's one session: the error stream and
//! the data stream (headers `streamtype`, `port`, `requestid`) are opened without waiting for the
//! kubelet's replies, and the client's first bytes follow at once, so a new connection costs no
//! round trip on this side. FIN carries each direction's end (no EOF hold, unlike v4), a reset
//! from either application is an RST_STREAM, and a refused port in the pod is the text the
//! kubelet writes on the error stream.
//!
//! Transports, tried in this order and remembered per cluster ([`ProtocolMemo`]): SPDY in a
//! WebSocket (`SPDY/3.1+portforward.k8s.io`, KEP-4006, API servers from 1.31), the classic
//! `Upgrade: SPDY/3.1`, then the v4 WebSocket of [`super::wsforward`] (where this module hands
//! over: [`Link::session`] answers `None`). The upgrades are in `spdyupgrade`: kube's client
//! sends the request (kubeconfig, TLS, auth stay kube's); the upgraded connection is ours.
//!
//! The session is opened when the forward starts and again, in the background, as soon as one
//! ends, so that connections do not wait on an upgrade; a pod replaced starts a session to the
//! new pod.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::anyhow;
use futures::FutureExt;
use podtun_spdy::{Headers, Session, Stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use super::client::Cluster;
use super::protocol::Protocol;
use super::spdyupgrade::negotiate;
use crate::net::splice::{splice, Moved};

/// How long the kubelet's word on a connection may trail its data's end.
const ERROR_WAIT: Duration = Duration::from_secs(2);
/// Most of the error stream that is read (the kubelet writes one line).
const ERROR_MAX: u64 = 64 * 1024;
/// How long a test connection waits for the kubelet's error (it dials as soon as the data
/// stream arrives, so a refused port is reported within a round trip).
pub const CHECK_WINDOW: Duration = Duration::from_secs(1);
static REQUEST_IDS: AtomicU64 = AtomicU64::new(0);

/// The SPDY sessions of one forward: one to the pod connections go to now.
#[derive(Clone)]
pub struct Link {
    inner: Arc<Inner>,
}

struct Inner {
    cluster: Cluster,
    /// Held across an upgrade, so that connections arriving meanwhile share its session.
    state: tokio::sync::Mutex<LinkState>,
}

#[derive(Default)]
struct LinkState {
    pod: String,
    session: Option<Session>,
}

impl Link {
    /// A link with no session yet.
    pub fn new(cluster: Cluster) -> Link {
        Link {
            inner: Arc::new(Inner {
                cluster,
                state: tokio::sync::Mutex::default(),
            }),
        }
    }

    /// A live session to `pod`, opened now when there is none; `None` when this cluster serves
    /// port-forward over the v4 WebSocket only.
    pub async fn session(&self, pod: &str) -> anyhow::Result<Option<Session>> {
        let cluster = &self.inner.cluster;
        if cluster.protocol.get() == Some(Protocol::WebSocket) {
            return Ok(None);
        }
        let mut state = self.inner.state.lock().await;
        if state.pod != pod {
            state.pod = pod.to_string();
            state.session = None;
        }
        if let Some(session) = &state.session {
            if session.ended().is_none() {
                return Ok(Some(session.clone()));
            }
        }
        state.session = None;
        let session = negotiate(cluster, pod).await?;
        if let Some(session) = &session {
            state.session = Some(session.clone());
            tokio::spawn(reopen_when_ended(
                Arc::downgrade(&self.inner),
                pod.to_string(),
                session.watch(),
            ));
        }
        Ok(session)
    }

    /// Forgets the session (its pod was replaced): connections still on it go on, new ones get
    /// a session of their own.
    pub async fn reset(&self) {
        let mut state = self.inner.state.lock().await;
        state.pod.clear();
        state.session = None;
    }

    /// Opens the session to `pod` in the background, so that the first connection finds it.
    pub fn warm(&self, pod: &str) {
        let (link, pod) = (self.clone(), pod.to_string());
        tokio::spawn(async move {
            if let Err(e) = link.session(&pod).await {
                debug!(pod, "could not open the port-forward session ahead: {e:#}");
            }
        });
    }

    /// Forwards one client connection to `pod:port`: `Ok(None)` hands it back when the cluster
    /// speaks v4 only.
    pub async fn forward<C>(&self, pod: &str, port: u16, client: C) -> ForwardResult<C>
    where
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let session = match self.session(pod).await {
            Ok(Some(session)) => session,
            Ok(None) => return ForwardResult::Unserved(client),
            Err(e) => return ForwardResult::Done(Err(e)),
        };
        let ns = &self.inner.cluster.namespace;
        let pair = match open_pair(&session, port).await {
            Ok(pair) => pair,
            // The session ended between the check and the open: once more, on a new one.
            Err(e) => {
                debug!(%e, "port-forward session ended under a new connection; reopening");
                let session = match self.session(pod).await {
                    Ok(Some(session)) => session,
                    Ok(None) => return ForwardResult::Unserved(client),
                    Err(e) => return ForwardResult::Done(Err(e)),
                };
                match open_pair(&session, port).await {
                    Ok(pair) => pair,
                    Err(e) => {
                        let err = anyhow!(e).context(format!(
                            "could not open a port-forward stream to `{ns}/{pod}:{port}`"
                        ));
                        return ForwardResult::Done(Err(err));
                    }
                }
            }
        };
        ForwardResult::Done(forward_pair(pair, client, ns, pod, port).await)
    }
}

impl Link {
    /// One test connection to `pod:port` that sends nothing: the kubelet's word when it could
    /// not connect in the pod, `Ok(None)` when it did (or said nothing within [`CHECK_WINDOW`]),
    /// [`Checked::Unserved`] when the cluster speaks v4 only.
    pub async fn check(&self, pod: &str, port: u16) -> anyhow::Result<Checked> {
        let Some(session) = self.session(pod).await? else {
            return Ok(Checked::Unserved);
        };
        let Pair { mut data, error } = open_pair(&session, port).await?;
        // Our end at once: a server that got its connection closes it, and the kubelet then
        // closes the error stream without a word.
        data.shutdown().await.ok();
        let said = tokio::time::timeout(CHECK_WINDOW, read_error(error)).await;
        Ok(Checked::Said(said.ok().flatten()))
    }
}

/// What [`Link::check`] found.
pub enum Checked {
    /// The kubelet's error, or `None` when it connected.
    Said(Option<String>),
    /// The cluster speaks v4 only: nothing checked.
    Unserved,
}

/// What [`Link::forward`] did with a connection.
pub enum ForwardResult<C> {
    /// Forwarded until done.
    Done(anyhow::Result<Moved>),
    /// Not forwarded: the cluster speaks v4 only.
    Unserved(C),
}

/// Opens a session again when one ends while its link still wants that pod.
async fn reopen_when_ended(inner: Weak<Inner>, pod: String, watch: podtun_spdy::Watch) {
    let why = watch.closed().await;
    let Some(inner) = inner.upgrade() else {
        return;
    };
    let link = Link { inner };
    if link.inner.state.lock().await.pod != pod {
        return;
    }
    debug!(pod, "port-forward session ended ({why}); opening another");
    link.warm(&pod);
}

/// One connection's two streams.
struct Pair {
    data: Stream,
    error: Stream,
}

/// Opens a connection's error and data streams, as kubectl does, without waiting for replies.
async fn open_pair(session: &Session, port: u16) -> io::Result<Pair> {
    let id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
    let headers = |kind: &str| {
        Headers::new()
            .with("streamtype", kind)
            .with("port", port.to_string())
            .with("requestid", id.to_string())
    };
    let mut error = session.open(headers("error"))?;
    // Nothing is ever written to the error stream.
    error.shutdown().await?;
    let data = session.open(headers("data"))?;
    Ok(Pair { data, error })
}

/// Copies between `client` and the pair's data stream, each direction's end passed on as FIN,
/// with the kubelet's error (a refused port in the pod) raced against the copy.
async fn forward_pair<C>(
    pair: Pair,
    client: C,
    ns: &str,
    pod: &str,
    port: u16,
) -> anyhow::Result<Moved>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let Pair { data, error } = pair;
    let mut refused = read_error(error).boxed();
    let mut heard = false;
    let copy = splice(client, data);
    tokio::pin!(copy);
    let failed = |message: String| {
        let err = anyhow!("port-forward to `{ns}/{pod}:{port}` failed: {message}");
        super::forward::report(&err);
        Err(err)
    };
    let moved = loop {
        tokio::select! {
            biased;
            message = &mut refused, if !heard => {
                heard = true;
                if let Some(message) = message {
                    return failed(message);
                }
            }
            moved = &mut copy => break moved,
        }
    };
    // The kubelet's error ends the data too: prefer its words to a bare EOF.
    if !heard {
        if let Ok(Some(message)) = tokio::time::timeout(ERROR_WAIT, refused).await {
            return failed(message);
        }
    }
    match moved {
        Ok(moved) => {
            debug!(up = moved.up, down = moved.down, "connection closed");
            Ok(moved)
        }
        // A reset from either application ends this connection only.
        Err(e) => {
            debug!(%e, "connection to `{ns}/{pod}:{port}` ended");
            Err(anyhow!(e).context(format!("connection to `{ns}/{pod}:{port}` failed")))
        }
    }
}

/// The kubelet's text on an error stream, if it wrote any before closing it.
async fn read_error(error: Stream) -> Option<String> {
    let mut text = Vec::new();
    error.take(ERROR_MAX).read_to_end(&mut text).await.ok()?;
    let text = String::from_utf8_lossy(&text).trim().to_string();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use podtun_spdy::{Config, Role};

    use super::*;
    use crate::cluster::spdyupgrade::session_config;

    /// A client session and a kubelet-like server session over an in-memory pipe.
    fn sessions() -> (Session, Session) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let server = Config {
            windows: false,
            ..Config::default()
        };
        (
            Session::new(a, Role::Client, session_config()),
            Session::new(b, Role::Server, server),
        )
    }

    /// The server's two streams of one connection, error stream first as kubectl opens them.
    async fn accept_pair(server: &Session) -> (Stream, Stream) {
        let error = server.accept().await.unwrap();
        let data = server.accept().await.unwrap();
        (error, data)
    }

    #[tokio::test]
    async fn a_connection_is_an_error_and_a_data_stream_with_the_kubelets_headers() {
        let (client, server) = sessions();
        let first = open_pair(&client, 6379).await.unwrap();
        let second = open_pair(&client, 8888).await.unwrap();
        let (error, data) = accept_pair(&server).await;
        assert_eq!(error.headers().get("streamtype"), Some("error"));
        assert_eq!(data.headers().get("streamtype"), Some("data"));
        assert_eq!(data.headers().get("port"), Some("6379"));
        let id = data.headers().get("requestid").unwrap();
        assert_eq!(error.headers().get("requestid"), Some(id));
        let (error2, data2) = accept_pair(&server).await;
        assert_eq!(data2.headers().get("port"), Some("8888"));
        assert_ne!(
            error2.headers().get("requestid"),
            Some(id),
            "one id per connection"
        );
        drop((first, second));
    }

    #[tokio::test]
    async fn the_clients_eof_reaches_the_pod_as_a_fin_and_the_reply_comes_back() {
        let (client, server) = sessions();
        let (app, mut user) = tokio::io::duplex(4096);
        let pair = open_pair(&client, 6379).await.unwrap();
        let forward =
            tokio::spawn(async move { forward_pair(pair, app, "demo", "redis", 6379).await });
        let (mut error, mut data) = accept_pair(&server).await;
        // `printf 'PING\r\n' | nc -N`: the request, then EOF.
        user.write_all(b"PING\r\n").await.unwrap();
        user.shutdown().await.unwrap();
        let mut request = Vec::new();
        data.read_to_end(&mut request).await.unwrap();
        assert_eq!(request, b"PING\r\n", "the request, then the client's FIN");
        data.write_all(b"+PONG\r\n").await.unwrap();
        data.shutdown().await.unwrap();
        error.shutdown().await.unwrap();
        let mut reply = Vec::new();
        user.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"+PONG\r\n");
        let moved = forward.await.unwrap().unwrap();
        assert_eq!((moved.up, moved.down), (6, 7));
    }

    #[tokio::test]
    async fn the_kubelets_error_text_fails_the_connection_with_its_words() {
        let (client, server) = sessions();
        let (app, mut user) = tokio::io::duplex(4096);
        let pair = open_pair(&client, 6390).await.unwrap();
        let forward =
            tokio::spawn(async move { forward_pair(pair, app, "demo", "redis", 6390).await });
        let (mut error, mut data) = accept_pair(&server).await;
        let refusal = "error forwarding port 6390 to pod redis: dial tcp4 127.0.0.1:6390: connect: connection refused";
        error.write_all(refusal.as_bytes()).await.unwrap();
        error.shutdown().await.unwrap();
        data.shutdown().await.unwrap();
        let err = forward.await.unwrap().unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("connection refused"), "{text}");
        assert!(text.contains("demo/redis:6390"), "{text}");
        let mut rest = Vec::new();
        user.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
