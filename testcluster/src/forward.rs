//! `pods/portforward`: checks the pod and the `ports` parameter, then hands the WebSocket
//! upgrade to [`crate::portforward`] with a dialer into the pod's network.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::Request;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use crate::cluster::Cluster;
use crate::portforward;
use crate::respond::{self, Body, Query};
use crate::store::Key;

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

pub(crate) fn serve(
    cluster: &Arc<Cluster>,
    key: &Key,
    pod: &Value,
    query: &Query,
    req: Request<Incoming>,
) -> hyper::Response<Body> {
    if !portforward::is_upgrade_request(&req) {
        return respond::bad_request("Upgrade request required");
    }
    let ports = match parse_ports(query) {
        Ok(ports) => ports,
        Err(message) => return respond::bad_request(&message),
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
    let dropped = cluster.knobs.portforward_token();
    let pod_gone = runtime.cancel.clone();
    let watcher = cancel.clone();
    let dial = move |port: u16| {
        let network = network.clone();
        async move { network.connect(port).await }
    };
    match portforward::accept(req, ports.clone(), dial, cancel.clone()) {
        Ok((response, session)) => {
            cluster.knobs.count_upgrade();
            let span = tracing::debug_span!("portforward", pod = %key.name, ?ports);
            cluster.tasks.spawn(async move {
                tokio::select! {
                    _ = dropped.cancelled() => watcher.cancel(),
                    _ = pod_gone.cancelled() => watcher.cancel(),
                    _ = watcher.cancelled() => {}
                }
            });
            cluster.tasks.spawn(
                async move {
                    session.await;
                    debug!("port-forward session ended");
                    cancel.cancel();
                }
                .instrument(span),
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
