//! Local mode against the test cluster: real redis and Jupyter pods behind kube port-forwards.

use std::time::Duration;

use crate::common::cluster;
use crate::common::http;
use crate::common::podtun::Podtun;
use crate::common::redis::Redis;
use crate::common::{pattern, redis_local};

const REDIS: &[&str] = &["manifests/00-namespace.yaml", "manifests/30-redis.yaml"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_answers_ping_and_round_trips_10_mib() {
    let c = cluster::start(REDIS).await;
    let home = tempfile::tempdir().unwrap();
    let mut p = Podtun::spawn(
        c.kubeconfig(),
        home.path(),
        &["redis", "redis", "-n", "demo", "-p", "0"],
    );
    let (local, ready) = p.ready().await;
    assert_eq!(ready["pod"], "redis");
    assert_eq!(ready["remote_port"], 6379);
    assert!(
        local.starts_with("127.0.0.1:"),
        "listens on loopback: {local}"
    );

    let mut r = Redis::connect(&local).await.unwrap();
    assert_eq!(r.call(&[b"PING"]).await.unwrap().unwrap(), b"+PONG");
    let value = pattern(10 << 20);
    assert_eq!(
        r.call(&[b"SET", b"big", &value]).await.unwrap().unwrap(),
        b"+OK"
    );
    let back = r.call(&[b"GET", b"big"]).await.unwrap().unwrap();
    assert!(
        back == value,
        "10 MiB value came back different ({} bytes)",
        back.len()
    );
    drop(r);
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_connections_all_succeed() {
    let c = cluster::start(REDIS).await;
    let home = tempfile::tempdir().unwrap();
    let (p, local) = redis_local(&c, home.path()).await;
    let ok = crate::common::redis::concurrent_set_get(&local, 50).await;
    assert_eq!(
        ok, 50,
        "all 50 concurrent connections round-trip their value"
    );
    assert!(p.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyter_url_answers_with_its_token() {
    let c = cluster::start(&["manifests/00-namespace.yaml", "manifests/20-jupyter.yaml"]).await;
    let home = tempfile::tempdir().unwrap();
    let mut p = Podtun::spawn(
        c.kubeconfig(),
        home.path(),
        &["jupyter", "jupyter", "-n", "demo", "-p", "0"],
    );
    let (local, ready) = p.ready().await;
    let url = ready["url"]
        .as_str()
        .expect("jupyter ready event has a url")
        .to_string();
    let (addr, path) = http::split_url(&url);
    assert_eq!(addr, local);
    assert!(path.starts_with("/lab?token="), "tokenized lab URL: {path}");
    let token = path.trim_start_matches("/lab?token=");
    assert!(token.len() >= 16, "a real token");

    // What the browser opens, then what the API answers with the token, and without it.
    assert_eq!(http::get(&addr, &path).await.0, 200);
    assert_eq!(
        http::get(&addr, &format!("/api/status?token={token}"))
            .await
            .0,
        200
    );
    let (status, body) = http::get(&addr, &format!("/api/kernels?token={token}")).await;
    assert_eq!(status, 200);
    let kernels: serde_json::Value = serde_json::from_str(&body).expect("kernels JSON");
    assert!(kernels.is_array(), "kernel list: {body}");
    assert_eq!(
        http::get(&addr, "/api/kernels").await.0,
        403,
        "no token, no access"
    );
    assert!(p.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svc_and_deploy_targets_reach_the_deployment_pod() {
    let c = cluster::start(REDIS).await;
    let home = tempfile::tempdir().unwrap();
    let mut svc = Podtun::spawn(
        c.kubeconfig(),
        home.path(),
        &["forward", "svc/redis-cache", ":6379", "-n", "demo"],
    );
    let mut deploy = Podtun::spawn(
        c.kubeconfig(),
        home.path(),
        &["redis", "deploy/redis-cache", "-n", "demo", "-p", "0"],
    );
    let mut pod = Podtun::spawn(
        c.kubeconfig(),
        home.path(),
        &["redis", "pod/redis", "-n", "demo", "-p", "0"],
    );
    let (svc_local, svc_ready) = svc.ready().await;
    let (deploy_local, deploy_ready) = deploy.ready().await;
    let (pod_local, _) = pod.ready().await;
    assert!(
        svc_ready["pod"]
            .as_str()
            .unwrap()
            .starts_with("redis-cache-"),
        "{svc_ready}"
    );
    assert_eq!(svc_ready["pod"], deploy_ready["pod"]);
    assert_eq!(
        svc_ready["remote_port"], 6379,
        "service port → named targetPort → 6379"
    );

    let mut via_svc = Redis::connect(&svc_local).await.unwrap();
    assert_eq!(
        via_svc
            .call(&[b"SET", b"where", b"deployment"])
            .await
            .unwrap()
            .unwrap(),
        b"+OK"
    );
    let mut via_deploy = Redis::connect(&deploy_local).await.unwrap();
    assert_eq!(
        via_deploy.call(&[b"GET", b"where"]).await.unwrap().unwrap(),
        b"deployment"
    );
    let mut via_pod = Redis::connect(&pod_local).await.unwrap();
    assert_eq!(
        via_pod.call(&[b"GET", b"where"]).await.unwrap(),
        None,
        "the bare pod is another redis"
    );
    for p in [svc, deploy, pod] {
        assert!(p.terminate().await.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_rights_token_works_end_to_end() {
    let c = cluster::start(&[
        "manifests/00-namespace.yaml",
        "manifests/10-rbac.yaml",
        "manifests/30-redis.yaml",
    ])
    .await;
    // The token really is minimal: it may not list namespaces.
    let kc = kube::config::Kubeconfig::read_from(c.kubeconfig()).unwrap();
    let opts = kube::config::KubeConfigOptions {
        context: Some("minimal".into()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    match namespaces.list(&Default::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403),
        other => panic!("minimal token listed namespaces: {other:?}"),
    }

    let home = tempfile::tempdir().unwrap();
    let mut p = Podtun::spawn(
        c.kubeconfig(),
        home.path(),
        &["redis", "redis", "--context", "minimal", "-p", "0"],
    );
    let (local, _) = p.ready().await;
    let mut r = Redis::connect(&local).await.unwrap();
    assert_eq!(r.call(&[b"PING"]).await.unwrap().unwrap(), b"+PONG");
    assert!(p.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_pod_fails_open_connections_and_the_port_stays() {
    let c = cluster::start(REDIS).await;
    let home = tempfile::tempdir().unwrap();
    let mut p = Podtun::spawn(
        c.kubeconfig(),
        home.path(),
        &["redis", "deploy/redis-cache", "-n", "demo", "-p", "0"],
    );
    let (local, ready) = p.ready().await;
    let first = ready["pod"].as_str().unwrap().to_string();
    let mut open = Redis::connect(&local).await.unwrap();
    assert_eq!(open.call(&[b"PING"]).await.unwrap().unwrap(), b"+PONG");

    c.tc.delete_pod("demo", &first).await.unwrap();
    let failed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match open.call(&[b"PING"]).await {
                Ok(Some(r)) if r == b"+PONG" => tokio::task::yield_now().await,
                _ => return,
            }
        }
    })
    .await;
    assert!(
        failed.is_ok(),
        "the open connection to the deleted pod ends"
    );

    let replaced = p.wait_for("pod-replaced", Duration::from_secs(60)).await;
    assert_ne!(replaced["pod"], first.as_str(), "a new pod serves");
    let mut again = Redis::connect(&local)
        .await
        .expect("same local port still listens");
    assert_eq!(again.call(&[b"PING"]).await.unwrap().unwrap(), b"+PONG");
    assert!(p.terminate().await.success());
}
