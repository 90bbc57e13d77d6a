//! One port-forward per connection: a WebSocket to the pod's port, its error channel raced
//! against the copy so that "connection refused" in the pod becomes a message, not a bare reset.

use anyhow::anyhow;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, warn};

use super::client::Cluster;
use super::resolve::api_error;
use crate::splice::{splice_holding_eof, Moved};

/// Forwards one client connection to `pod:port` until either side is done.
pub async fn forward<C>(cluster: &Cluster, pod: &str, port: u16, client: C) -> anyhow::Result<Moved>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let ns = &cluster.namespace;
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let mut forwarder = api
        .portforward(pod, &[port])
        .await
        .map_err(|e| api_error(e, &format!("port-forward to `{ns}/{pod}:{port}`"), ns))?;
    let stream = forwarder
        .take_stream(port)
        .ok_or_else(|| anyhow!("port-forward to `{ns}/{pod}:{port}` gave no stream"))?;
    let refused = forwarder
        .take_error(port)
        .ok_or_else(|| anyhow!("port-forward to `{ns}/{pod}:{port}` gave no error channel"))?;
    let copy = splice_holding_eof(client, stream);
    tokio::pin!(copy, refused);
    let result = tokio::select! {
        moved = &mut copy => match moved {
            Ok(moved) => {
                debug!(up = moved.up, down = moved.down, "connection closed");
                Ok(moved)
            }
            // A reset from either application ends this connection only.
            Err(e) => {
                debug!(%e, "connection to `{ns}/{pod}:{port}` ended");
                Err(anyhow!(e).context(format!("connection to `{ns}/{pod}:{port}` failed")))
            }
        },
        Some(message) = &mut refused => {
            let err = anyhow!("port-forward to `{ns}/{pod}:{port}` failed: {message}");
            warn!("{err:#}");
            Err(err)
        }
    };
    // `join` reports `SendAfterClosing` after a normal close: worth a debug line, not an error.
    forwarder.abort();
    if let Err(e) = forwarder.join().await {
        debug!(%e, "port-forward closed");
    }
    result
}
