//! The same scenarios against a real kind cluster (`kind create cluster --config
//! kind-config.yaml`, then `kubectl apply -f manifests/`): run with `cargo test -- --ignored`.

use std::path::PathBuf;

use crate::common::http;
use crate::common::podtun::Podtun;
use crate::common::redis::Redis;

/// The kubeconfig kind wrote: `$KUBECONFIG`, else `~/.kube/config`.
fn kubeconfig() -> PathBuf {
    std::env::var_os("KUBECONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config")))
        .expect("KUBECONFIG or HOME")
}

const CONTEXT: &str = "kind-podtun";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster with manifests/ applied"]
async fn kind_redis_pod_and_service() {
    let home = tempfile::tempdir().unwrap();
    for target in ["pod/redis", "svc/redis-cache", "deploy/redis-cache"] {
        let args = [
            "redis",
            target,
            "-n",
            "demo",
            "--context",
            CONTEXT,
            "-p",
            "0",
        ];
        let mut p = Podtun::spawn(&kubeconfig(), home.path(), &args);
        let (local, _) = p.ready().await;
        let mut r = Redis::connect(&local).await.unwrap();
        assert_eq!(
            r.call(&[b"PING"]).await.unwrap().unwrap(),
            b"+PONG",
            "{target}"
        );
        assert!(p.terminate().await.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster with manifests/ applied"]
async fn kind_jupyter_url_works() {
    let home = tempfile::tempdir().unwrap();
    let args = [
        "jupyter",
        "jupyter",
        "-n",
        "demo",
        "--context",
        CONTEXT,
        "-p",
        "0",
    ];
    let mut p = Podtun::spawn(&kubeconfig(), home.path(), &args);
    let (_, ready) = p.ready().await;
    let url = ready["url"].as_str().expect("url");
    let (addr, path) = http::split_url(url);
    assert_eq!(http::get(&addr, &path).await.0, 200);
    assert!(p.terminate().await.success());
}
