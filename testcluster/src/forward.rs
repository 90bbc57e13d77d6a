//! `pods/portforward`: picks the transport (v4 WebSocket, classic SPDY, SPDY tunnelled in a
//! WebSocket), checks the pod (and, for v4, the `ports` parameter), then hands the upgrade to
//! [`crate::portforward`] or [`crate::spdyforward`] with a dialer into the pod's network.

use std::sync::Arc;

use futures::FutureExt;
use hyper::body::Incoming;
use hyper::Request;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use crate::cluster::Cluster;
use crate::knobs::Transport;
use crate::respond::{self, Body, Query};
use crate::store::Key;
use crate::{portforward, spdyforward};

/// The `ports` parameter: repeated and/or comma-separated port numbers.
fn parse_ports(query: &Query) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for value in query.all("ports") {
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => return Err(format!("invalid port value \"{part}\"")),
            }
        }
    }
    if ports.is_empty() {
        return Err("at least one port must be specified".into());
    }
    Ok(ports)
}

/// Which transport a port-forward request asks for, as the API server routes it: a WebSocket
/// offering `SPDY/3.1+…` goes to the tunnelling handler (unless the tunnel is off, as before
/// 1.31: then it reaches the kubelet as any WebSocket), other WebSockets are v4, and an
/// `Upgrade: SPDY/3.1` is classic SPDY.
fn transport<B>(cluster: &Cluster, req: &Request<B>) -> Option<Transport> {
    if spdyforward::is_tunnel_request(req) && cluster.knobs.serves(Transport::Tunnel) {
        Some(Transport::Tunnel)
    } else if portforward::is_upgrade_request(req) {
        Some(Transport::WebSocket)
    } else if spdyforward::is_spdy_upgrade(req) {
        Some(Transport::Spdy)
    } else {
        None
    }
}

pub(crate) fn serve(
    cluster: &Arc<Cluster>,
    key: &Key,
    pod: &Value,
    query: &Query,
    req: Request<Incoming>,
) -> hyper::Response<Body> {
    let Some(transport) = transport(cluster, &req) else {
        return respond::bad_request("Upgrade request required");
    };
    if !cluster.knobs.serves(transport) {
        return respond::bad_request(&format!(
            "unable to upgrade connection: {} port-forward is turned off in this cluster",
            transport.name()
        ));
    }
    // Only v4 names its ports in the request; SPDY streams carry theirs in headers.
    let ports = match transport {
        Transport::WebSocket => match parse_ports(query) {
            Ok(ports) => ports,
            Err(message) => return respond::bad_request(&message),
        },
        Transport::Spdy | Transport::Tunnel => Vec::new(),
    };
    if cluster.knobs.refusing_portforwards() {
        return respond::error(
            500,
            "InternalError",
            "error dialing backend: dial tcp 127.0.0.1:10250: connect: connection refused",
            None,
        );
    }
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    let runtime = cluster.pods.get(key);
    let network = runtime.as_ref().and_then(|rt| rt.network.get().cloned());
    let (Some(runtime), Some(network), "Running") = (runtime, network, phase) else {
        return respond::bad_request(&format!(
            "unable to upgrade connection: pod {} is not running (phase {phase})",
            key.name
        ));
    };
    let cancel = CancellationToken::new();
    let (dropped, sessions) = cluster.knobs.portforward_token();
    let pod_gone = runtime.cancel.clone();
    let watcher = cancel.clone();
    let dial = move |port: u16| {
        let network = network.clone();
        async move { network.connect(port).await }
    };
    let accepted = match transport {
        Transport::WebSocket => portforward::accept(req, ports.clone(), dial, cancel.clone())
            .map(|(response, session)| (response, session.boxed())),
        Transport::Spdy | Transport::Tunnel => {
            let form = match transport {
                Transport::Tunnel => spdyforward::Transport::Tunnel,
                _ => spdyforward::Transport::Classic,
            };
            spdyforward::accept(req, form, dial, cancel.clone())
                .map(|(response, session)| (response, session.boxed()))
        }
    };
    match accepted {
        Ok((response, session)) => {
            cluster.knobs.count_upgrade(transport);
            let span = tracing::debug_span!("portforward", pod = %key.name, transport = transport.name(), ?ports);
            cluster.tasks.spawn(async move {
                tokio::select! {
                    _ = dropped.cancelled() => watcher.cancel(),
                    _ = pod_gone.cancelled() => watcher.cancel(),
                    _ = watcher.cancelled() => {}
                }
            });
            cluster.tasks.spawn(
                sessions.track_future(
                    async move {
                        session.await;
                        debug!("port-forward session ended");
                        cancel.cancel();
                    }
                    .instrument(span),
                ),
            );
            respond::boxed(response)
        }
        Err(response) => respond::boxed(response),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_repeated_and_comma_separated() {
        let q = Query::parse(Some("ports=80&ports=81,82&ports=80"));
        assert_eq!(parse_ports(&q), Ok(vec![80, 81, 82, 80]));
        assert!(parse_ports(&Query::parse(Some("ports=x"))).is_err());
        assert!(parse_ports(&Query::parse(None)).is_err());
    }
}
