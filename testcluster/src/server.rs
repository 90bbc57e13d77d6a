//! The HTTPS listener: TLS handshake, HTTP/1.1 with upgrades, bearer-token authentication and
//! the fault knobs that hold requests, then [`crate::api::route`].

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, trace, Instrument};

use crate::api;
use crate::cluster::Cluster;
use crate::respond::{self, Body};

/// Bound on a client's TLS handshake, so a stuck client cannot hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until the cluster shuts down; one task per connection.
pub(crate) async fn serve(
    cluster: Arc<Cluster>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    debug!(%err, "accept failed");
                    continue;
                }
            },
            _ = cluster.shutdown.cancelled() => return,
        };
        let _ = tcp.set_nodelay(true);
        let conn = serve_connection(cluster.clone(), acceptor.clone(), tcp);
        cluster
            .tasks
            .spawn(conn.instrument(tracing::debug_span!("conn", %peer)));
    }
}

async fn serve_connection(
    cluster: Arc<Cluster>,
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            debug!(%err, "TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!("TLS handshake timed out");
            return;
        }
    };
    let service = {
        let cluster = cluster.clone();
        service_fn(move |req| {
            let cluster = cluster.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(cluster, req).await) }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades();
    tokio::select! {
        result = conn => if let Err(err) = result { debug!(%err, "connection ended with an error") },
        _ = cluster.shutdown.cancelled() => {}
    }
}

async fn handle(cluster: Arc<Cluster>, req: Request<Incoming>) -> Response<Body> {
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let Some(user) = cluster.tokens.authenticate(auth) else {
        debug!(path = req.uri().path(), "unauthorized request");
        return respond::unauthorized();
    };
    if !req.uri().path().starts_with("/testcluster/") {
        cluster.knobs.hold().await;
    }
    trace!(method = %req.method(), uri = %req.uri(), user = user.name(), "request");
    api::route(&cluster, &user, req).await
}
