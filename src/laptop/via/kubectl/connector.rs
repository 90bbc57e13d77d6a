//! The kube client of kubectl mode: every connection is a `direct-streamlocal` channel to the
//! proxy's socket, over whichever SSH connection is up.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::{BoxError, ServiceBuilder};

use crate::cluster::client::Cluster;
use crate::laptop::link::Waiter;
use crate::laptop::ssh::{SshSession, Stream};

/// Where the proxy is now: the SSH connection and the socket on the login host.
pub(super) struct ProxyRoute {
    pub(super) ssh: SshSession,
    pub(super) socket: String,
}

/// hyper's connector: every connection is a `direct-streamlocal` channel to the proxy's socket,
/// over whichever SSH connection is up (waiting, bounded, while it is being re-established).
#[derive(Clone)]
struct ProxyConnector {
    route: Waiter<ProxyRoute>,
}

impl tower::Service<http::Uri> for ProxyConnector {
    type Response = TokioIo<Stream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let mut route = self.route.clone();
        Box::pin(async move {
            let route = route.link().await?;
            let channel = route.ssh.open_streamlocal(&route.socket).await?;
            Ok(TokioIo::new(channel))
        })
    }
}

/// hyper asks every connection what it is; one to kubectl proxy is plain.
impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// A kube client that talks to the login host's kubectl proxy. The proxy adds the user's
/// credentials there; nothing here holds any.
pub(super) fn proxy_client(route: Waiter<ProxyRoute>, namespace: &str) -> anyhow::Result<Cluster> {
    let base: http::Uri = "http://localhost".parse()?;
    let mut config = kube::Config::new(base);
    config.default_namespace = namespace.to_string();
    let hyper_client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build(ProxyConnector { route });
    let service = ServiceBuilder::new()
        .layer(kube::client::ConfigExt::base_uri_layer(&config))
        .map_err(BoxError::from)
        .service(hyper_client);
    Ok(Cluster::new(
        kube::Client::new(service, namespace.to_string()),
        namespace.to_string(),
    ))
}
