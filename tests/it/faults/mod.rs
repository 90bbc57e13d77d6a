//! What happens to a tunnel over a day, injected on purpose: bulk transfers next to resets, pod
//! restarts, dropped port-forwards, refused ports, many connections at once, request-then-EOF
//! clients, idle connections, a cut link and a restarted sshd, hostile input, and shutdown under
//! load. Each test checks the bytes that came back, not only an exit code, and prints how long
//! recovery took (`--nocapture` shows it).

mod bulk;
mod clients;
mod hostile;
mod link;
mod pods;

use std::time::{Duration, Instant};

use crate::common::cluster::Cluster;
use crate::common::redis::Redis;

pub const REDIS: &[&str] = &["manifests/00-namespace.yaml", "manifests/30-redis.yaml"];
pub const JUPYTER: &[&str] = &["manifests/00-namespace.yaml", "manifests/20-jupyter.yaml"];

/// How often a condition is polled while waiting on a deadline.
pub const POLL: Duration = Duration::from_millis(50);

/// A pod that answers, per connection, the sha256 of what it was sent: the client sends an
/// 8-byte big-endian length, then that many bytes; the sink answers `HEX COUNT\n` and closes.
/// Length-prefixed on purpose: the end of the data is known without the client's EOF, which
/// podtun holds back from the pod (see `splice.rs`).
pub const SHA_SINK: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: sha-sink
  namespace: fixtures
spec:
  containers:
    - name: sink
      image: python:3.12-slim
      command: ["python3", "-u", "-c"]
      args:
        - |
          import hashlib, socket, struct, threading
          def recv_exact(c, n):
              b = b""
              while len(b) < n:
                  chunk = c.recv(n - len(b))
                  if not chunk:
                      raise EOFError
                  b += chunk
              return b
          def serve(c):
              try:
                  want = struct.unpack(">Q", recv_exact(c, 8))[0]
                  h, got = hashlib.sha256(), 0
                  while got < want:
                      chunk = c.recv(min(want - got, 1 << 20))
                      if not chunk:
                          break
                      h.update(chunk)
                      got += len(chunk)
                  c.sendall(("%s %d\n" % (h.hexdigest(), got)).encode())
              except (OSError, EOFError):
                  pass
              finally:
                  c.close()
          s = socket.socket()
          s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
          s.bind(("0.0.0.0", 7000))
          s.listen(256)
          print("sink listening on 7000")
          while True:
              c, _ = s.accept()
              threading.Thread(target=serve, args=(c,), daemon=True).start()
      ports:
        - name: sink
          containerPort: 7000
      readinessProbe:
        tcpSocket:
          port: sink
        periodSeconds: 1
"#;

/// Applies the fixtures namespace and the sha256 sink, and waits for it.
pub async fn start_sink(c: &Cluster) {
    c.tc.apply_file(&crate::common::cluster::repo().join("tests/fixtures/pods/00-namespace.yaml"))
        .expect("apply the fixtures namespace");
    c.tc.apply_yaml(SHA_SINK).expect("apply the sha256 sink");
    c.ready("fixtures", "sha-sink").await;
}

pub use crate::common::redis_local;

/// PING on a new connection: `Ok` with the reply's text, or why not.
pub async fn try_ping(addr: &str) -> Result<String, String> {
    let attempt = async {
        let mut r = Redis::connect(addr).await?;
        r.call(&[b"PING"]).await
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(Some(reply))) => Ok(String::from_utf8_lossy(&reply).into_owned()),
        Ok(Ok(None)) => Err("nil reply".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no reply within 5s".into()),
    }
}

/// Retries `PING` on new connections until one gets `+PONG`; returns how long that took
/// from `since`. Fails after `within` with the last error.
pub async fn pong_within(addr: &str, since: Instant, within: Duration) -> Duration {
    let deadline = since + within;
    loop {
        let last = match try_ping(addr).await {
            Ok(reply) if reply == "+PONG" => return since.elapsed(),
            Ok(other) => other,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "no PONG through {addr} within {within:?} (last: {last})"
        );
        tokio::time::sleep(POLL).await;
    }
}

pub use crate::common::wait_until;

/// Prints a measured recovery time (shown with `--nocapture`).
pub fn report(what: &str, took: Duration) {
    eprintln!("faults: {what}: {:.2}s", took.as_secs_f64());
}
