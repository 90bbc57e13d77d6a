//! A kube `Client` from the kubeconfig, on a connector with TCP_NODELAY.
//!
//! kube's default connector leaves Nagle's algorithm on; every port-forward upgrade then waits on
//! a delayed ACK (≈40 ms per new connection on a real cluster: 62 → 19 ms once fixed), so the
//! client is assembled here from `ConfigExt`'s layers instead of `Client::try_from`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::sync::watch;
use tower::{BoxError, ServiceBuilder};
use tracing::debug;

use super::protocol::ProtocolMemo;
use crate::error::HintExt;
use crate::proto::refusal::{refusal_of, ForwardRefused};
pub use crate::proto::wire::ClusterRef;

/// Bound on the TCP connect to the API server.
const API_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connected client and the namespace to work in.
#[derive(Clone)]
pub struct Cluster {
    /// The kube client (shares one connection pool).
    pub client: Client,
    /// The namespace of the target.
    pub namespace: String,
    /// Which port-forward protocol this cluster answered to (shared by every clone).
    pub protocol: Arc<ProtocolMemo>,
    /// The first port-forward the API server refused to this user (shared by every clone):
    /// whatever opened it (a connection, a session opened ahead, a pool refill), the forward
    /// ends with it.
    refused: Arc<watch::Sender<Option<ForwardRefused>>>,
}

impl Cluster {
    /// A cluster reached through `client`, working in `namespace`.
    pub fn new(client: Client, namespace: String) -> Cluster {
        Cluster {
            client,
            namespace,
            protocol: Arc::default(),
            refused: Arc::new(watch::channel(None).0),
        }
    }

    /// Notes `err` when it is a refused port-forward; returns it unchanged.
    pub fn note_refusal(&self, err: anyhow::Error) -> anyhow::Error {
        if let Some(refused) = refusal_of(&err) {
            let first = self.refused.send_if_modified(|slot| {
                let new = slot.is_none();
                if new {
                    *slot = Some(refused.clone());
                }
                new
            });
            if first {
                debug!("{refused}");
            }
        }
        err
    }

    /// Resolves with the first refused port-forward.
    pub async fn refused(&self) -> ForwardRefused {
        let mut seen = self.refused.subscribe();
        loop {
            if let Some(refused) = seen.borrow_and_update().clone() {
                return refused;
            }
            // The sender lives as long as `self`: `changed` cannot fail while we wait.
            if seen.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Loads the kubeconfig and builds the client.
pub async fn connect(cluster: &ClusterRef) -> anyhow::Result<Cluster> {
    let config = load_config(cluster).await?;
    let namespace = cluster
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = build_client(config)?;
    Ok(Cluster::new(client, namespace))
}

/// [`connect`], and the API server's URL (for `podtun doctor`; no credentials in it).
pub async fn connect_described(cluster: &ClusterRef) -> anyhow::Result<(Cluster, String)> {
    let config = load_config(cluster).await?;
    let url = config.cluster_url.to_string();
    let namespace = cluster
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = build_client(config)?;
    Ok((Cluster::new(client, namespace), url))
}

async fn load_config(cluster: &ClusterRef) -> anyhow::Result<Config> {
    let options = KubeConfigOptions {
        context: cluster.context.clone(),
        ..KubeConfigOptions::default()
    };
    if let Some(path) = &cluster.kubeconfig {
        let kubeconfig = Kubeconfig::read_from(path)
            .with_context(|| format!("could not read kubeconfig `{}`", path.display()))
            .hint("check the path given to --kubeconfig")?;
        return Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .with_context(|| format!("could not use kubeconfig `{}`", path.display()))
            .with_hint(|| context_hint(cluster));
    }
    if cluster.context.is_some() {
        return Config::from_kubeconfig(&options)
            .await
            .context("could not load the kubeconfig")
            .with_hint(|| context_hint(cluster));
    }
    Config::infer()
        .await
        .context("could not find a kubeconfig")
        .hint("set KUBECONFIG, pass --kubeconfig, or check ~/.kube/config")
}

fn context_hint(cluster: &ClusterRef) -> String {
    match &cluster.context {
        Some(ctx) => format!("is `{ctx}` a context there? see `kubectl config get-contexts`"),
        None => "see `kubectl config view`".into(),
    }
}

fn build_client(config: Config) -> anyhow::Result<Client> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(API_CONNECT_TIMEOUT));
    let https = config
        .rustls_https_connector_with_connector(http)
        .context("could not set up TLS for the API server")?;
    let hyper_client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .auth_layer()
                .context("could not set up API authentication")?,
        )
        .layer(
            config
                .extra_headers_layer()
                .context("bad kubeconfig headers")?,
        )
        .map_err(BoxError::from)
        .service(hyper_client);
    Ok(Client::new(service, config.default_namespace))
}
