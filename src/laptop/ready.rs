//! "Ready" means usable from the laptop: the forwarded port answers through the whole chain
//! (redis a PING, Jupyter `GET {base}api/status` with its token, anything else an open
//! connection that the pod side does not refuse).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::cluster::discover::Preset;
use crate::error::hinted;
use crate::proto::wire::JupyterAccess;

/// Pause between two probes while a port is not yet usable.
const PROBE_RETRY: Duration = Duration::from_millis(250);
/// Bound on one probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// A generic port counts as open when the pod side has not refused it within this time.
const REFUSAL_WINDOW: Duration = Duration::from_millis(500);

/// Waits until `local` is usable through the forward, or `deadline`.
pub async fn wait_usable(
    local: SocketAddr,
    preset: Preset,
    jupyter: Option<&JupyterAccess>,
    deadline: Instant,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> anyhow::Result<()> {
    loop {
        let attempt = tokio::time::timeout(PROBE_TIMEOUT, probe(local, preset, jupyter));
        let last = match attempt.await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => "no answer".to_string(),
        };
        progress(&format!(
            "waiting for the service to answer on {local}: {last}"
        ));
        if Instant::now() + PROBE_RETRY >= deadline {
            return Err(hinted(
                anyhow!("the forwarded port {} did not answer in time: {last}", local.port()),
                "is the service in the pod listening on that port? see the pod's logs, or pass a longer --timeout",
            ));
        }
        tokio::time::sleep(PROBE_RETRY).await;
    }
}

async fn probe(
    local: SocketAddr,
    preset: Preset,
    jupyter: Option<&JupyterAccess>,
) -> anyhow::Result<()> {
    let mut conn = TcpStream::connect(local).await?;
    conn.set_nodelay(true)?;
    match (preset, jupyter) {
        (Preset::Jupyter, Some(access)) => probe_jupyter(conn, local, access).await,
        (Preset::Redis, _) => {
            conn.write_all(b"PING\r\n").await?;
            // Read the whole reply line, so closing leaves nothing unread (no reset).
            let mut reply = Vec::new();
            let mut byte = [0u8; 1];
            while !reply.ends_with(b"\n") && reply.len() < 512 {
                if conn.read(&mut byte).await? == 0 {
                    bail!("the connection was closed before redis answered");
                }
                reply.push(byte[0]);
            }
            match reply.first() {
                Some(b'+' | b'-') => Ok(()),
                _ => bail!(
                    "unexpected reply to PING: {:?}",
                    String::from_utf8_lossy(&reply)
                ),
            }
        }
        _ => {
            let mut byte = [0u8; 1];
            match tokio::time::timeout(REFUSAL_WINDOW, conn.read(&mut byte)).await {
                Err(_) | Ok(Ok(1..)) => Ok(()),
                Ok(Ok(_)) => bail!("the connection was closed on the pod side"),
                Ok(Err(e)) => Err(e.into()),
            }
        }
    }
}

async fn probe_jupyter(
    mut conn: TcpStream,
    local: SocketAddr,
    access: &JupyterAccess,
) -> anyhow::Result<()> {
    let auth = access
        .token
        .as_ref()
        .map(|t| format!("Authorization: token {}\r\n", t.expose()))
        .unwrap_or_default();
    let request = format!(
        "GET {}api/status HTTP/1.1\r\nHost: {local}\r\n{auth}Connection: close\r\n\r\n",
        access.base_path
    );
    conn.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            bail!("the connection was closed before Jupyter answered");
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status_line = String::from_utf8_lossy(&head);
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    match code {
        "200" => Ok(()),
        // Password-protected servers answer 403 without a token: the server is up.
        "403" if access.token.is_none() => Ok(()),
        other => bail!("Jupyter answered {other} to /api/status"),
    }
}
