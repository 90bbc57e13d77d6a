//! `/testcluster/...`: the fault knobs over HTTP, for scripts and the standalone server.
//! Admin token only.
//!
//! ```text
//! POST /testcluster/delay?ms=N                  delay every response by N ms (0 turns it off)
//! POST /testcluster/stall?ms=N                  hold every request for N ms
//! POST /testcluster/drop-portforwards           abort every open port-forward WebSocket
//! POST /testcluster/refuse-portforwards?ms=N    refuse new port-forwards for N ms
//! POST /testcluster/restart/NAMESPACE/POD       kill the pod's processes (restart policy applies)
//! POST /testcluster/delete/NAMESPACE/POD        delete the pod and wait until it is gone
//! POST /testcluster/apply                       apply the YAML body
//! POST /testcluster/portforward-transport?name=T&on=B  serve transport T (websocket|spdy|tunnel) or not
//! GET  /testcluster/stats                       {"portforwardUpgrades": N, "portforwardTransports": {T: N}}
//! ```

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::json;

use crate::auth::User;
use crate::cluster::Cluster;
use crate::kinds::Kind;
use crate::knobs::Transport;
use crate::respond::{self, Body, Query};
use crate::store::Key;

/// How long `delete` waits for the pod to be gone.
const DELETE_TIMEOUT: Duration = Duration::from_secs(60);

fn done() -> Response<Body> {
    respond::ok(&json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}))
}

pub(crate) async fn route(
    cluster: &Arc<Cluster>,
    user: &User,
    req: Request<Incoming>,
) -> Response<Body> {
    if *user != User::Admin {
        return respond::error(
            403,
            "Forbidden",
            "the test cluster's knobs need the admin token",
            None,
        );
    }
    let query = Query::parse(req.uri().query());
    let ms = Duration::from_millis(
        query
            .number("ms")
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0),
    );
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (req.method(), &segments[1..]) {
        (&Method::POST, ["delay"]) => cluster.knobs.set_delay(ms),
        (&Method::POST, ["stall"]) => cluster.knobs.stall(ms),
        (&Method::POST, ["drop-portforwards"]) => cluster.knobs.drop_portforwards().await,
        (&Method::POST, ["refuse-portforwards"]) => cluster.knobs.refuse_portforwards(ms),
        (&Method::POST, ["restart", ns, name]) => {
            if !crate::runtime::kill_processes(cluster, &Key::new(Kind::Pod, ns, name)) {
                return respond::not_found(Kind::Pod, name);
            }
        }
        (&Method::POST, ["delete", ns, name]) => {
            let key = Key::new(Kind::Pod, ns, name);
            let Some(pod) = cluster.delete(&key, None) else {
                return respond::not_found(Kind::Pod, name);
            };
            let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
            if let Err(err) = cluster.wait_gone(&key, &uid, DELETE_TIMEOUT).await {
                return respond::error(504, "Timeout", &format!("{err:#}"), None);
            }
        }
        (&Method::POST, ["apply"]) => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(err) => {
                    return respond::bad_request(&format!("could not read the body: {err}"))
                }
            };
            let yaml = String::from_utf8_lossy(&body);
            if let Err(err) = cluster.apply_yaml(&yaml) {
                return respond::bad_request(&format!("{err:#}"));
            }
        }
        (&Method::POST, ["portforward-transport"]) => {
            let name = query.get("name").unwrap_or_default();
            let Some(transport) = Transport::from_name(name) else {
                return respond::bad_request(&format!(
                    "unknown port-forward transport {name:?} (websocket, spdy or tunnel)"
                ));
            };
            let on = !matches!(query.get("on"), Some("false" | "0"));
            cluster.knobs.set_transport(transport, on);
        }
        (&Method::GET, ["stats"]) => {
            let by_transport: serde_json::Map<String, serde_json::Value> = Transport::ALL
                .into_iter()
                .map(|t| (t.name().to_string(), json!(cluster.knobs.upgrades_over(t))))
                .collect();
            return respond::ok(&json!({
                "portforwardUpgrades": cluster.knobs.upgrades(),
                "portforwardTransports": by_transport,
            }));
        }
        _ => return respond::no_such_path(),
    }
    done()
}
