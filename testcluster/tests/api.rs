//! The API as kube-rs sees it: discovery, list/get/watch with selectors, errors, tokens and RBAC,
//! logs, and port-forward through the pod's network.

mod common;

use std::time::Duration;

use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, LogParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{sh_pod, DEADLINE};

fn api_error(err: kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(status) => (status.code, status.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn list_get_and_watch_pods_with_selectors() {
    let env = common::start().await;
    let mut yaml = String::new();
    for (name, labels) in [
        ("a", "app: web, tier: front"),
        ("b", "app: web, tier: back"),
        ("c", "app: db"),
    ] {
        yaml += &sh_pod("demo", name, labels, "sleep 600", "");
        yaml += "---\n";
    }
    env.cluster.apply_yaml(&yaml).expect("apply");
    let pods: Api<Pod> = Api::namespaced(env.admin().await, "demo");

    let names = |list: kube::core::ObjectList<Pod>| {
        let mut n: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        n.sort();
        n
    };
    for (selector, want) in [
        ("app=web", vec!["a", "b"]),
        ("app==web,tier!=back", vec!["a"]),
        ("tier in (front,back)", vec!["a", "b"]),
        ("tier notin (front)", vec!["b", "c"]),
        ("tier", vec!["a", "b"]),
        ("!tier", vec!["c"]),
    ] {
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .expect("list");
        assert_eq!(names(list), want, "{selector}");
    }
    let list = pods
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .expect("list");
    assert!(list.metadata.resource_version.is_some());
    assert_eq!(names(list), ["b"]);

    let (code, message) = api_error(pods.get("nope").await.expect_err("404"));
    assert_eq!((code, message.as_str()), (404, r#"pods "nope" not found"#));

    // A raw watch from the list's version sees a new pod, its changes and its deletion.
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list");
    let rv = list.metadata.resource_version.expect("rv");
    let mut events = pods
        .watch(&WatchParams::default().labels("app=web").timeout(60), &rv)
        .await
        .expect("watch")
        .boxed();
    env.cluster
        .apply_yaml(&sh_pod("demo", "d", "app: web", "sleep 600", ""))
        .expect("apply d");
    env.cluster
        .apply_yaml(&sh_pod("demo", "e", "app: other", "sleep 600", ""))
        .expect("apply e");
    let first = tokio::time::timeout(DEADLINE, events.try_next())
        .await
        .expect("event in time");
    match first.expect("watch ok").expect("an event") {
        WatchEvent::Added(p) => assert_eq!(p.metadata.name.as_deref(), Some("d")),
        other => panic!("expected ADDED, got {other:?}"),
    }
    env.cluster.delete_pod("demo", "d").await.expect("delete d");
    let deleted = tokio::time::timeout(DEADLINE, async {
        while let Some(event) = events.try_next().await.expect("watch ok") {
            if let WatchEvent::Deleted(p) = event {
                return p;
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("DELETED in time");
    assert_eq!(deleted.metadata.name.as_deref(), Some("d"));

    // A version older than the event log answers 410 Gone (Expired) as an ERROR event.
    let mut old = pods
        .watch(&WatchParams::default(), "1")
        .await
        .expect("watch")
        .boxed();
    match old.try_next().await.expect("watch ok") {
        Some(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        other => panic!("expected a 410 error event, got {other:?}"),
    }
    env.shutdown().await;
}

#[tokio::test]
async fn kube_runtime_watcher_follows_pods() {
    let env = common::start().await;
    env.cluster
        .apply_yaml(&sh_pod("demo", "w1", "app: w", "sleep 600", ""))
        .expect("apply");
    let pods: Api<Pod> = Api::namespaced(env.admin().await, "demo");
    for config in [
        watcher::Config::default(),
        watcher::Config::default().streaming_lists(),
    ] {
        let mut stream = watcher(pods.clone(), config.labels("app=w")).boxed();
        let mut seen_init_done = false;
        let mut seen_w1 = false;
        tokio::time::timeout(DEADLINE, async {
            while let Some(event) = stream.try_next().await.expect("watcher") {
                match event {
                    watcher::Event::InitApply(p) if p.metadata.name.as_deref() == Some("w1") => {
                        seen_w1 = true
                    }
                    watcher::Event::InitDone => {
                        seen_init_done = true;
                        break;
                    }
                    _ => {}
                }
            }
        })
        .await
        .expect("initial list in time");
        assert!(seen_w1 && seen_init_done);
        env.cluster
            .restart_pod("demo", "w1")
            .await
            .expect("restart");
        tokio::time::timeout(DEADLINE, async {
            while let Some(event) = stream.try_next().await.expect("watcher") {
                if let watcher::Event::Apply(p) = event {
                    if common::container_status(&p).is_some_and(|c| c.restart_count >= 1) {
                        return;
                    }
                }
            }
        })
        .await
        .expect("restart seen through the watcher");
    }
    env.shutdown().await;
}

const MINIMAL_RBAC: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: podtun, namespace: demo}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
- apiGroups: [""]
  resources: [pods/portforward]
  verbs: [get, create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: podtun, namespace: demo}
subjects:
- {kind: User, name: podtun-user, apiGroup: rbac.authorization.k8s.io}
roleRef: {kind: Role, name: podtun, apiGroup: rbac.authorization.k8s.io}
"#;

#[tokio::test]
async fn tokens_and_rbac() {
    let env = common::start().await;
    env.cluster
        .apply_yaml(&sh_pod("demo", "p", "app: p", "echo hi; sleep 600", ""))
        .expect("apply");

    let bad: Api<Pod> = Api::namespaced(env.client("bad-token").await, "demo");
    let (code, _) = api_error(bad.list(&ListParams::default()).await.expect_err("401"));
    assert_eq!(code, 401);

    let minimal = env.client("minimal").await;
    let pods: Api<Pod> = Api::default_namespaced(minimal.clone());
    let (code, message) = api_error(pods.list(&ListParams::default()).await.expect_err("403"));
    assert_eq!(code, 403);
    assert_eq!(
        message,
        r#"pods is forbidden: User "podtun-user" cannot list resource "pods" in API group "" in the namespace "demo""#
    );

    env.cluster.apply_yaml(MINIMAL_RBAC).expect("rbac");
    assert_eq!(
        pods.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        1
    );
    pods.get("p").await.expect("get");
    env.wait_pod("demo", "p", |p| {
        (common::phase(p) == Some("Running")).then_some(())
    })
    .await;
    let log = common::poll(
        || async {
            pods.logs("p", &LogParams::default())
                .await
                .ok()
                .filter(|l| !l.is_empty())
        },
        "log",
    )
    .await;
    assert_eq!(log, "hi\n");

    let deployments: Api<Deployment> = Api::default_namespaced(minimal.clone());
    let (code, message) = api_error(deployments.get("web").await.expect_err("403"));
    assert_eq!(code, 403);
    assert_eq!(
        message,
        r#"deployments.apps "web" is forbidden: User "podtun-user" cannot get resource "deployments" in API group "apps" in the namespace "demo""#
    );
    let namespaces: Api<Namespace> = Api::all(minimal.clone());
    let (code, message) = api_error(
        namespaces
            .list(&ListParams::default())
            .await
            .expect_err("403"),
    );
    assert_eq!(code, 403);
    assert!(message.ends_with("at the cluster scope"), "{message}");
    let other: Api<Pod> = Api::namespaced(minimal, "default");
    assert_eq!(
        api_error(other.list(&ListParams::default()).await.expect_err("403")).0,
        403
    );

    let admin_ns: Api<Namespace> = Api::all(env.admin().await);
    let all = admin_ns
        .list(&ListParams::default())
        .await
        .expect("admin lists namespaces");
    assert!(all
        .items
        .iter()
        .any(|n| n.metadata.name.as_deref() == Some("demo")));
    env.shutdown().await;
}

#[tokio::test]
async fn logs_follow_tail_previous_and_container_errors() {
    let env = common::start().await;
    env.cluster
        .apply_yaml(&sh_pod(
            "demo",
            "talk",
            "app: t",
            "echo hello; echo oops >&2; sleep 1; echo world; sleep 600",
            "",
        ))
        .expect("apply");
    let pods: Api<Pod> = Api::namespaced(env.admin().await, "demo");
    env.wait_pod("demo", "talk", |p| {
        common::container_status(p)
            .is_some_and(|c| c.started == Some(true))
            .then_some(())
    })
    .await;

    let stream = pods
        .log_stream(
            "talk",
            &LogParams {
                follow: true,
                ..LogParams::default()
            },
        )
        .await
        .expect("follow");
    let mut lines = stream.lines();
    let mut got = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while got.len() < 3 {
            got.push(lines.next().await.expect("a line").expect("read"));
        }
    })
    .await
    .expect("three lines in time");
    got.sort();
    assert_eq!(got, ["hello", "oops", "world"]);

    let tail = pods
        .logs(
            "talk",
            &LogParams {
                tail_lines: Some(1),
                ..LogParams::default()
            },
        )
        .await
        .expect("tail");
    assert_eq!(tail, "world\n");
    let stamped = pods
        .logs(
            "talk",
            &LogParams {
                timestamps: true,
                ..LogParams::default()
            },
        )
        .await
        .expect("ts");
    assert!(
        stamped
            .lines()
            .all(|l| l.split_once(' ').is_some_and(|(t, _)| t.ends_with('Z'))),
        "{stamped}"
    );

    let (code, message) = api_error(
        pods.logs(
            "talk",
            &LogParams {
                previous: true,
                ..LogParams::default()
            },
        )
        .await
        .expect_err("no previous"),
    );
    assert_eq!(
        (code, message.as_str()),
        (
            400,
            r#"previous terminated container "main" in pod "talk" not found"#
        )
    );

    env.cluster
        .apply_yaml(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: two, namespace: demo}
spec:
  containers:
  - {name: a, image: x, command: [sleep, "600"]}
  - {name: b, image: x, command: [sh, -c, "echo from-b; sleep 600"]}
"#,
        )
        .expect("apply two");
    let (code, message) = api_error(
        pods.logs("two", &LogParams::default())
            .await
            .expect_err("400"),
    );
    assert_eq!(
        (code, message.as_str()),
        (
            400,
            "a container name must be specified for pod two, choose one of: [a b]"
        )
    );
    let b = common::poll(
        || async {
            pods.logs(
                "two",
                &LogParams {
                    container: Some("b".into()),
                    ..LogParams::default()
                },
            )
            .await
            .ok()
            .filter(|l| !l.is_empty())
        },
        "logs of container b",
    )
    .await;
    assert_eq!(b, "from-b\n");
    env.shutdown().await;
}

#[tokio::test]
async fn portforward_reaches_the_pod_and_can_be_dropped() {
    let env = common::start().await;
    env.cluster
        .apply_yaml(&format!(
            "{}\n    readinessProbe: {{tcpSocket: {{port: 7070}}, periodSeconds: 1}}\n",
            sh_pod("demo", "echo", "app: echo", "exec python3 -u -c \"import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('127.0.0.1', 7070))\ns.listen()\nwhile True:\n c,_=s.accept()\n c.sendall(b'pong\\n')\n c.close()\"", "")
        ))
        .expect("apply");
    env.cluster
        .wait_ready("demo", "echo", DEADLINE)
        .await
        .expect("ready");
    env.cluster.apply_yaml(MINIMAL_RBAC).expect("rbac");
    let pods: Api<Pod> = Api::default_namespaced(env.client("minimal").await);
    let mut pf = pods
        .portforward("echo", &[7070])
        .await
        .expect("portforward");
    let mut stream = pf.take_stream(7070).expect("stream");
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut buf))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(buf, b"pong\n");
    assert_eq!(env.cluster.portforward_upgrades(), 1);
    drop(stream);
    let _ = pf.join().await;

    // Dropping every port-forward ends an idle session.
    let mut pf = pods
        .portforward("echo", &[7070])
        .await
        .expect("portforward");
    let mut stream = pf.take_stream(7070).expect("stream");
    env.cluster.drop_portforwards().await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut rest))
        .await
        .expect("ended in time");
    let _ = stream.shutdown().await;

    env.cluster.refuse_portforwards(Duration::from_secs(60));
    assert!(pods.portforward("echo", &[7070]).await.is_err());
    env.shutdown().await;
}

/// What the API server answers a port-forward upgrade from `client` over each transport: the
/// status and the `Status` body's reason and message.
async fn upgrade_answers(client: &kube::Client, path: &str) -> Vec<(u16, String, String)> {
    use http_body_util::BodyExt;
    let requests = [
        // SPDY tunnelled in a WebSocket (kubectl from 1.31).
        hyper::Request::get(path)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-protocol", "SPDY/3.1+portforward.k8s.io"),
        // Classic SPDY (a POST).
        hyper::Request::post(path)
            .header("connection", "Upgrade")
            .header("upgrade", "SPDY/3.1")
            .header("x-stream-protocol-version", "portforward.k8s.io"),
        // v4 WebSocket (kube-rs).
        hyper::Request::get(format!("{path}?ports=80"))
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-protocol", "v4.channel.k8s.io"),
    ];
    let mut answers = Vec::new();
    for request in requests {
        let request = request
            .body(kube::client::Body::from(Vec::new()))
            .expect("request");
        let response = client.send(request).await.expect("an answer");
        let code = response.status().as_u16();
        let body = response.into_body().collect().await.expect("body");
        let status: serde_json::Value =
            serde_json::from_slice(&body.to_bytes()).expect("a Status body");
        assert_eq!(status["kind"], "Status", "{status}");
        assert_eq!(status["status"], "Failure", "{status}");
        assert_eq!(status["code"], code, "{status}");
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        answers.push((code, text(&status["reason"]), text(&status["message"])));
    }
    answers
}

#[tokio::test]
async fn port_forward_upgrades_are_refused_as_the_api_server_refuses_them() {
    let env = common::start().await;
    env.cluster
        .apply_yaml(&sh_pod("demo", "p", "app: p", "sleep 600", ""))
        .expect("apply");
    let path = "/api/v1/namespaces/demo/pods/p/portforward";
    let minimal = env.client("minimal").await;

    // Pods and their logs, no port-forward: `get` refuses the WebSocket forms, `create` the POST.
    env.cluster
        .apply_yaml(&MINIMAL_RBAC.replace("verbs: [get, create]", "verbs: [watch]"))
        .expect("rbac");
    let cannot = |verb: &str| {
        format!(
            r#"pods "p" is forbidden: User "podtun-user" cannot {verb} resource "pods/portforward" in API group "" in the namespace "demo""#
        )
    };
    let forbidden = |message: String| (403, "Forbidden".to_string(), message);
    assert_eq!(
        upgrade_answers(&minimal, path).await,
        vec![
            forbidden(cannot("get")),
            forbidden(cannot("create")),
            forbidden(cannot("get"))
        ]
    );

    // `get` only, as roles written for kube-rs before Kubernetes 1.35 grant: the pod registry
    // checks `create` on WebSocket upgrades too, and its refusal names the pod only.
    env.cluster
        .apply_yaml(&MINIMAL_RBAC.replace("verbs: [get, create]", "verbs: [get]"))
        .expect("rbac");
    let registry = forbidden(r#"pods "p" is forbidden: "#.to_string());
    assert_eq!(
        upgrade_answers(&minimal, path).await,
        vec![registry.clone(), forbidden(cannot("create")), registry]
    );
    env.shutdown().await;
}
