//! The pod side fails: a restart of the redis and the Jupyter pod mid-session (same local port,
//! `pod-replaced`, the new token), every port-forward dropped at once, and a port in the pod
//! where nothing listens.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{pong_within, redis_local, report, JUPYTER, POLL, REDIS};
use crate::common::cluster::{self, Cluster};
use crate::common::http;
use crate::common::podtun::Podtun;
use crate::common::redis::Redis;

/// How soon after the restarted pod is Ready new connections must work.
const AFTER_READY: Duration = Duration::from_secs(5);

/// Bound on a restarted pod becoming Ready again (Jupyter on a loaded 2-core machine).
const RESTART_READY: Duration = Duration::from_secs(90);

/// The pod's restart count and whether it is Running with its Ready condition true.
fn restarts_and_ready(c: &Cluster, ns: &str, name: &str) -> (i32, bool) {
    let Some(status) = c.tc.pod(ns, name).and_then(|p| p.status) else {
        return (-1, false);
    };
    let restarts = status
        .container_statuses
        .as_ref()
        .and_then(|cs| cs.first())
        .map_or(0, |cs| cs.restart_count);
    let ready = status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
    (restarts, ready)
}

/// Restarts the pod and returns the moment it was Ready again (restart count up by one).
async fn restart_and_wait_ready(c: &Cluster, ns: &str, name: &str) -> Instant {
    let (before, ready) = restarts_and_ready(c, ns, name);
    assert!(ready, "{ns}/{name} is Ready before its restart");
    c.tc.restart_pod(ns, name).await.expect("restart the pod");
    let deadline = Instant::now() + RESTART_READY;
    loop {
        let (restarts, ready) = restarts_and_ready(c, ns, name);
        if restarts > before && ready {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{ns}/{name} not Ready again within {RESTART_READY:?} of its restart"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_keeps_the_port_and_new_connections_work() {
    let c = cluster::start(REDIS).await;
    let home = tempfile::tempdir().unwrap();
    let (mut p, local) = redis_local(&c, home.path()).await;
    let mut open = Redis::connect(&local).await.unwrap();
    assert_eq!(
        open.call(&[b"SET", b"k", b"before"])
            .await
            .unwrap()
            .unwrap(),
        b"+OK"
    );

    let restarted = Instant::now();
    let ready = restart_and_wait_ready(&c, "demo", "redis").await;
    report("redis restart → pod Ready", ready - restarted);
    let took = pong_within(&local, ready, AFTER_READY).await;
    report("redis Ready → PONG on the same local port", took);
    let replaced = p.wait_for("pod-replaced", Duration::from_secs(30)).await;
    assert_eq!(replaced["pod"], "redis", "{replaced}");
    assert!(
        replaced.get("url").is_none(),
        "no URL for redis: {replaced}"
    );

    // A new process: its data is gone, and the connection to the old one is over.
    let mut r = Redis::connect(&local).await.unwrap();
    assert_eq!(
        r.call(&[b"GET", b"k"]).await.unwrap(),
        None,
        "a fresh redis"
    );
    let old = tokio::time::timeout(Duration::from_secs(10), open.call(&[b"PING"])).await;
    assert!(
        !matches!(old, Ok(Ok(Some(ref pong))) if pong == b"+PONG"),
        "the connection to the killed process still answers"
    );
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
}

/// The token in a `…/lab?token=T` URL, and the URL's address.
fn token_of(url: &str) -> (String, String) {
    let (addr, path) = http::split_url(url);
    let token = path
        .split_once("token=")
        .map(|(_, t)| t.to_string())
        .unwrap_or_else(|| panic!("no token in {url}"));
    (addr, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyter_restart_gives_a_new_token_and_the_old_one_is_refused() {
    let c = cluster::start(JUPYTER).await;
    let home = tempfile::tempdir().unwrap();
    let mut p = Podtun::spawn(
        c.kubeconfig(),
        home.path(),
        &["jupyter", "jupyter", "-n", "demo", "-p", "0"],
    );
    let (local, ready) = p.ready().await;
    let (addr, old) = token_of(ready["url"].as_str().expect("url"));
    assert_eq!(addr, local);
    let status = |token: &str| format!("/api/status?token={token}");
    assert_eq!(http::get(&local, &status(&old)).await.0, 200);

    let restarted = Instant::now();
    let pod_ready = restart_and_wait_ready(&c, "demo", "jupyter").await;
    report("jupyter restart → pod Ready", pod_ready - restarted);
    let replaced = p
        .wait_for("pod-replaced", pod_ready + AFTER_READY - Instant::now())
        .await;
    report("jupyter Ready → pod-replaced", pod_ready.elapsed());
    assert_eq!(replaced["pod"], "jupyter", "{replaced}");
    let url = replaced["url"]
        .as_str()
        .expect("the new URL: the token changed");
    let (addr, new) = token_of(url);
    assert_eq!(addr, local, "the same local port");
    assert_ne!(new, old, "a restarted Jupyter has a new token");

    let deadline = pod_ready + AFTER_READY;
    loop {
        let (code, _) = http::get(&local, &status(&new)).await;
        if code == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/api/status with the new token: {code} {AFTER_READY:?} after Ready"
        );
        tokio::time::sleep(POLL).await;
    }
    report(
        "jupyter Ready → 200 with the new token",
        pod_ready.elapsed(),
    );
    assert_eq!(
        http::get(&local, &status(&old)).await.0,
        403,
        "the old token opens the new server"
    );
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_port_forwards_end_open_connections_only() {
    let c = cluster::start(REDIS).await;
    let home = tempfile::tempdir().unwrap();
    let (p, local) = redis_local(&c, home.path()).await;
    let mut open = TcpStream::connect(&local).await.unwrap();
    open.write_all(b"PING\r\n").await.unwrap();
    let mut pong = [0u8; 7];
    open.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"+PONG\r\n");

    let dropped = Instant::now();
    c.tc.drop_portforwards().await;
    // The open connection ends (EOF or reset) with no reply to a request sent after the drop.
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = open.write_all(b"PING\r\n").await;
        open.read_to_end(&mut rest).await
    })
    .await;
    assert!(
        ended.is_ok(),
        "the open connection outlived its port-forward"
    );
    assert!(
        rest.is_empty() || ended.unwrap().is_err(),
        "a reply after the drop: {rest:?}"
    );
    report(
        "drop_portforwards → open connection ended",
        dropped.elapsed(),
    );

    let took = pong_within(&local, dropped, Duration::from_secs(5)).await;
    report("drop_portforwards → PONG on a new connection", took);
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
}

/// A pod with a control port (7000: `ping`, `close`, `open`, one line each, answered with a
/// line) and a service port (7001: says hello and closes) that `close` stops listening, so that
/// connections to it are refused inside the pod until `open`.
const TOGGLE: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: toggle
  namespace: fixtures
spec:
  containers:
    - name: toggle
      image: python:3.12-slim
      command: ["python3", "-u", "-c"]
      args:
        - |
          import socket, threading
          def listen(port):
              s = socket.socket()
              s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
              s.bind(("0.0.0.0", port))
              s.listen(64)
              return s
          def hello(s):
              while True:
                  try:
                      c, _ = s.accept()
                  except OSError:
                      return
                  c.sendall(b"hello from 7001\n")
                  c.close()
          extra = [None]
          def start():
              extra[0] = listen(7001)
              threading.Thread(target=hello, args=(extra[0],), daemon=True).start()
          def control(c):
              f = c.makefile("rwb")
              for line in f:
                  cmd = line.strip()
                  if cmd == b"close":
                      # shutdown wakes the accept() and stops listening; close alone would not.
                      extra[0].shutdown(socket.SHUT_RDWR)
                      extra[0].close()
                      reply = b"closed"
                  elif cmd == b"open":
                      start()
                      reply = b"opened"
                  else:
                      reply = b"pong"
                  f.write(reply + b"\n")
                  f.flush()
              c.close()
          start()
          ctl = listen(7000)
          while True:
              c, _ = ctl.accept()
              threading.Thread(target=control, args=(c,), daemon=True).start()
      ports:
        - name: control
          containerPort: 7000
        - name: service
          containerPort: 7001
      readinessProbe:
        tcpSocket:
          port: control
        periodSeconds: 1
"#;

/// One control command on an open control connection.
async fn control(conn: &mut BufReader<TcpStream>, cmd: &str) -> String {
    conn.get_mut()
        .write_all(format!("{cmd}\n").as_bytes())
        .await
        .expect("send a control command");
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_line(&mut line))
        .await
        .expect("the control port answers")
        .expect("read the control answer");
    line.trim().to_string()
}

/// Everything a new connection to `addr` gets before it ends (a reset counts as the end).
async fn everything(addr: &str) -> String {
    let mut conn = TcpStream::connect(addr)
        .await
        .expect("the local port accepts");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut got))
        .await
        .expect("the connection ends");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_port_fails_alone_and_the_forward_keeps_serving() {
    let c = cluster::start(&["tests/fixtures/pods/00-namespace.yaml"]).await;
    c.tc.apply_yaml(TOGGLE).expect("apply the toggle pod");
    let home = tempfile::tempdir().unwrap();
    let mut p = Podtun::spawn(
        c.kubeconfig(),
        home.path(),
        &["forward", "toggle", ":7000", ":7001", "-n", "fixtures"],
    );
    let mut locals = std::collections::HashMap::new();
    for _ in 0..2 {
        let (local, ready) = p.ready().await;
        locals.insert(ready["remote_port"].as_u64().expect("remote_port"), local);
    }
    let (ctl_addr, service) = (locals[&7000].clone(), locals[&7001].clone());
    let mut ctl = BufReader::new(TcpStream::connect(&ctl_addr).await.unwrap());
    assert_eq!(control(&mut ctl, "ping").await, "pong");
    assert_eq!(everything(&service).await, "hello from 7001\n");

    // Refused inside the pod: each such connection ends with nothing; the open control
    // connection and new ones to the other port carry on in between.
    assert_eq!(control(&mut ctl, "close").await, "closed");
    for _ in 0..3 {
        assert_eq!(everything(&service).await, "", "bytes from a refused port");
        assert_eq!(control(&mut ctl, "ping").await, "pong");
        let mut other = BufReader::new(TcpStream::connect(&ctl_addr).await.unwrap());
        assert_eq!(control(&mut other, "ping").await, "pong");
    }

    // Listening again: the same local port serves it again.
    assert_eq!(control(&mut ctl, "open").await, "opened");
    let reopened = Instant::now();
    loop {
        if everything(&service).await == "hello from 7001\n" {
            break;
        }
        assert!(
            reopened.elapsed() < Duration::from_secs(5),
            "7001 does not serve again"
        );
        tokio::time::sleep(POLL).await;
    }
    report("port listening again → served", reopened.elapsed());
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
}
