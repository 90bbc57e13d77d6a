//! Upgrading to a SPDY port-forward session, tunnelled in a WebSocket or classic, and what a
//! refused upgrade means.

use std::time::Duration;

use anyhow::anyhow;
use http::header::{self, HeaderValue};
use http::StatusCode;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use podtun_spdy::{Config, Role, Session, WsIo};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role as WsRole, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use super::client::Cluster;
use super::protocol::Protocol;
use super::wsforward;
use crate::proto::refusal::ForwardRefused;

/// The port-forward protocol of the SPDY streams.
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol of SPDY tunnelled in a WebSocket.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The `Upgrade` token of the classic form.
const UPGRADE: &str = "SPDY/3.1";
const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
/// Bound on one upgrade request.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(20);
/// PING period, and how long a PING may go unanswered before the session is taken for gone:
/// idle forwards outlive the idle timeouts of proxies on the way.
const KEEPALIVE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(30));
/// Largest WebSocket message accepted in the tunnelled form.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Largest body of a refused upgrade that is read for its message.
const REFUSAL_MAX: usize = 64 * 1024;

/// Why an upgrade did not give a session.
enum Refusal {
    /// This transport is not served here (or not allowed): the next one may be.
    Unsupported(String),
    /// The pod or the cluster failed: no other transport would do better.
    Failed(anyhow::Error),
}

/// Upgrades over each transport in turn, from the one this cluster answered to last.
pub(super) async fn negotiate(cluster: &Cluster, pod: &str) -> anyhow::Result<Option<Session>> {
    let from = cluster.protocol.get().unwrap_or(Protocol::Tunnel);
    for transport in Protocol::ORDER
        .into_iter()
        .filter(|t| *t as u8 >= from as u8)
    {
        if transport == Protocol::WebSocket {
            cluster.protocol.set(transport);
            return Ok(None);
        }
        match upgrade(cluster, pod, transport).await {
            Ok(session) => {
                cluster.protocol.set(transport);
                return Ok(Some(session));
            }
            Err(Refusal::Unsupported(why)) => {
                debug!("port-forward over {} refused: {why}", transport.describe());
            }
            Err(Refusal::Failed(e)) => return Err(cluster.note_refusal(e)),
        }
    }
    Ok(None)
}

/// One upgrade to `pod` over `transport` (tunnelled or classic SPDY), and its session.
async fn upgrade(cluster: &Cluster, pod: &str, transport: Protocol) -> Result<Session, Refusal> {
    let ns = &cluster.namespace;
    let what = format!("port-forward to `{ns}/{pod}`");
    let path = format!("/api/v1/namespaces/{ns}/pods/{pod}/portforward");
    let key = generate_key();
    let request = match transport {
        Protocol::Tunnel => http::Request::get(path)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, &key)
            .header(header::SEC_WEBSOCKET_PROTOCOL, TUNNEL_PROTOCOL),
        _ => http::Request::post(path)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, UPGRADE)
            .header(PROTOCOL_HEADER, PROTOCOL),
    }
    .body(kube::client::Body::from(Vec::new()))
    .map_err(|e| Refusal::Failed(anyhow!(e)))?;
    wsforward::count_upgrade();
    let exchange = async {
        let response = cluster
            .client
            .send(request)
            .await
            .map_err(|e| Refusal::Failed(wsforward::upgrade_error(e, &what, ns, pod)))?;
        let response = check_response(response, transport, &key, &what, ns, pod).await?;
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| Refusal::Unsupported(format!("the upgrade did not complete: {e}")))?;
        Ok::<_, Refusal>(TokioIo::new(upgraded))
    };
    let io = tokio::time::timeout(UPGRADE_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            Refusal::Failed(anyhow!(
                "could not {what}: no answer in {UPGRADE_TIMEOUT:?}"
            ))
        })??;
    Ok(match transport {
        Protocol::Tunnel => {
            let config = WebSocketConfig::default()
                .max_frame_size(Some(MAX_MESSAGE))
                .max_message_size(Some(MAX_MESSAGE));
            let ws = WebSocketStream::from_raw_socket(io, WsRole::Client, Some(config)).await;
            Session::new(WsIo::new(ws), Role::Client, session_config())
        }
        _ => Session::new(io, Role::Client, session_config()),
    })
}

/// Accepts a 101 that switched to what was asked; anything else says why not.
async fn check_response(
    response: http::Response<kube::client::Body>,
    transport: Protocol,
    key: &str,
    what: &str,
    ns: &str,
    pod: &str,
) -> Result<http::Response<kube::client::Body>, Refusal> {
    let status = response.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        return Err(refused(response, what, ns, pod).await);
    }
    let headers = response.headers();
    let has = |name: &str, want: &str| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case(want))
    };
    let ok = match transport {
        Protocol::Tunnel => {
            has(header::SEC_WEBSOCKET_PROTOCOL.as_str(), TUNNEL_PROTOCOL)
                && has(
                    header::SEC_WEBSOCKET_ACCEPT.as_str(),
                    &derive_accept_key(key.as_bytes()),
                )
        }
        _ => has(header::UPGRADE.as_str(), UPGRADE) && has(PROTOCOL_HEADER, PROTOCOL),
    };
    if ok {
        Ok(response)
    } else {
        Err(Refusal::Unsupported(format!(
            "the server switched protocols without agreeing to {}",
            transport.describe()
        )))
    }
}

/// What a refused upgrade means. A protocol the server does not serve (400, 405, 426, 501, a
/// 404 that is not the pod's) leaves the next transport to try; 401 and 403 are this user's
/// answer on every transport ([`ForwardRefused`]), and the pod gone or the API failing is final
/// too.
async fn refused(
    response: http::Response<kube::client::Body>,
    what: &str,
    ns: &str,
    pod: &str,
) -> Refusal {
    let code = response.status().as_u16();
    let body = http_body_util::Limited::new(response.into_body(), REFUSAL_MAX)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let status = serde_json::from_slice::<kube::core::Status>(&body)
        .ok()
        .filter(|s| !s.message.is_empty())
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&body).trim().to_string();
            kube::core::Status::failure(&text, "").with_code(code)
        });
    // The API server's own 404 for the pod is a `Status` that names it; a server that does
    // not route the upgrade answers a bare 404.
    let pod_gone = code == 404 && status.reason == "NotFound";
    if let Some(refused) = ForwardRefused::of(code, ns, pod, &status.message) {
        Refusal::Failed(refused.into_error())
    } else if matches!(code, 400 | 405 | 426 | 501) || (code == 404 && !pod_gone) {
        Refusal::Unsupported(format!("HTTP {code}: {}", status.message))
    } else {
        Refusal::Failed(wsforward::upgrade_error(
            kube::Error::Api(status.with_code(code).boxed()),
            what,
            ns,
            pod,
        ))
    }
}

/// The client's session knobs: windows on (the kubelet ignores them; they bound what one stream
/// buffers here), frames as large as what one read of a client gives, PING keepalive.
pub(super) fn session_config() -> Config {
    Config {
        keepalive: Some(KEEPALIVE),
        ..Config::default()
    }
}
