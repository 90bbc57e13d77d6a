//! Real `kubectl port-forward` against the test cluster's redis pod, over each SPDY transport:
//! kubectl from 1.31 tunnels SPDY in a WebSocket by default, `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`
//! (or an older kubectl) sends the classic `Upgrade: SPDY/3.1`. kubectl talks as the minimal-rights
//! user, so the RBAC verbs (`create` for SPDY, `get` for the tunnel) are exercised too.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use testcluster::Transport;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::cluster::{self, Cluster};
use crate::common::redis::Redis;

const MANIFESTS: &[&str] = &[
    "manifests/00-namespace.yaml",
    "manifests/10-rbac.yaml",
    "manifests/30-redis.yaml",
];
/// Bound on kubectl saying where it listens, and on one redis exchange.
const WITHIN: Duration = Duration::from_secs(60);

/// `kubectl.1.MINOR` next to the version dispatcher that `kubectl` on PATH points to.
fn kubectl(minor: u32) -> PathBuf {
    let dispatcher = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("kubectl"))
        .find(|p| p.exists())
        .expect("kubectl on PATH (scripts/install-deps)");
    let real = std::fs::canonicalize(&dispatcher).expect("resolve kubectl");
    let versioned = real.with_file_name(format!("kubectl.1.{minor}"));
    assert!(
        versioned.exists(),
        "{} is missing: the kubectl dispatcher at {} should carry kubectl 1.{minor}",
        versioned.display(),
        real.display()
    );
    versioned
}

/// A running `kubectl port-forward` and the local address it printed.
struct Forward {
    child: Child,
    addr: String,
    stderr: tokio::task::JoinHandle<String>,
}

async fn port_forward(
    bin: &Path,
    kubeconfig: &Path,
    websockets: Option<bool>,
    remote: u16,
) -> Forward {
    let mut cmd = Command::new(bin);
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--context", "minimal", "-n", "demo", "port-forward"])
        .args(["--address", "127.0.0.1", "pod/redis"])
        .arg(format!(":{remote}"))
        .env_remove("KUBECTL_PORT_FORWARD_WEBSOCKETS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(on) = websockets {
        cmd.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", on.to_string());
    }
    let mut child = cmd.spawn().expect("start kubectl port-forward");
    let mut stderr = child.stderr.take().expect("stderr");
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let want = format!(" -> {remote}");
    let addr = tokio::time::timeout(WITHIN, async {
        while let Some(line) = lines.next_line().await.expect("kubectl stdout") {
            // "Forwarding from 127.0.0.1:41234 -> 6379"
            if let Some(rest) = line.strip_prefix("Forwarding from ") {
                if let Some(addr) = rest.strip_suffix(want.as_str()) {
                    return Some(addr.to_string());
                }
            }
        }
        None
    })
    .await
    .expect("kubectl printed its address in time");
    let Some(addr) = addr else {
        let _ = child.kill().await;
        panic!(
            "kubectl port-forward ended without forwarding: {}",
            stderr.await.unwrap_or_default()
        );
    };
    // Keep draining stdout so kubectl never blocks on it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Forward {
        child,
        addr,
        stderr,
    }
}

impl Forward {
    async fn stop(mut self) -> String {
        let _ = self.child.kill().await;
        self.stderr.await.unwrap_or_default()
    }
}

fn upgrades(c: &Cluster) -> [u64; 3] {
    Transport::ALL.map(|t| c.tc.portforward_upgrades_over(t))
}

/// Several connections at once through one kubectl, each with its own large value, then a
/// fast sequence of new connections: every reply intact, and one upgrade over `transport` only.
async fn forwards_redis(minor: u32, websockets: Option<bool>, transport: Transport) {
    let c = cluster::start(MANIFESTS).await;
    c.ready("demo", "redis").await;
    let before = upgrades(&c);
    let fwd = port_forward(&kubectl(minor), c.kubeconfig(), websockets, 6379).await;

    let clients: Vec<_> = (0..8)
        .map(|i| {
            let addr = fwd.addr.clone();
            tokio::spawn(async move {
                let mut r = Redis::connect(&addr).await.expect("connect");
                assert_eq!(
                    r.call(&[b"PING"]).await.expect("PING"),
                    Some(b"+PONG".to_vec())
                );
                let key = format!("kubectl-{i}");
                let value = crate::common::pattern(300_000 + i * 4093);
                let set = r
                    .call(&[b"SET", key.as_bytes(), &value])
                    .await
                    .expect("SET");
                assert_eq!(set, Some(b"+OK".to_vec()));
                let got = r.call(&[b"GET", key.as_bytes()]).await.expect("GET");
                assert!(
                    got.as_deref() == Some(&value[..]),
                    "connection {i}: GET differs"
                );
            })
        })
        .collect();
    for client in clients {
        tokio::time::timeout(WITHIN, client)
            .await
            .expect("redis clients done in time")
            .expect("redis client");
    }
    for i in 0..20 {
        let mut r = Redis::connect(&fwd.addr).await.expect("connect");
        let reply = tokio::time::timeout(WITHIN, r.call(&[b"PING"]))
            .await
            .expect("PING in time")
            .expect("PING");
        assert_eq!(
            reply,
            Some(b"+PONG".to_vec()),
            "connection {i} of a sequence"
        );
    }

    let after = upgrades(&c);
    let stderr = fwd.stop().await;
    for t in Transport::ALL {
        let served = after[t as usize] - before[t as usize];
        let expected = u64::from(t == transport);
        assert_eq!(
            served,
            expected,
            "kubectl 1.{minor} (websockets {websockets:?}): {} upgrades over {}; kubectl said: {stderr}",
            served,
            t.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_tunnels_spdy_in_a_websocket() {
    forwards_redis(33, None, Transport::Tunnel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_33_without_websockets_upgrades_to_spdy() {
    forwards_redis(33, Some(false), Transport::Spdy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_28_upgrades_to_spdy() {
    forwards_redis(28, None, Transport::Spdy).await;
}

/// An API server without the tunnel (before 1.31) passes kubectl's WebSocket to the kubelet,
/// which refuses it; kubectl falls back to classic SPDY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_falls_back_to_spdy_when_the_tunnel_is_off() {
    let c = cluster::start(MANIFESTS).await;
    c.ready("demo", "redis").await;
    c.tc.set_portforward_transport(Transport::Tunnel, false);
    let before = upgrades(&c);
    let fwd = port_forward(&kubectl(33), c.kubeconfig(), None, 6379).await;
    let mut r = Redis::connect(&fwd.addr).await.expect("connect");
    let reply = tokio::time::timeout(WITHIN, r.call(&[b"PING"]))
        .await
        .expect("PING in time")
        .expect("PING");
    assert_eq!(reply, Some(b"+PONG".to_vec()));
    let after = upgrades(&c);
    fwd.stop().await;
    assert_eq!(
        after[Transport::Spdy as usize] - before[Transport::Spdy as usize],
        1
    );
    assert_eq!(
        after[Transport::Tunnel as usize],
        before[Transport::Tunnel as usize]
    );
}

/// A port nobody listens on in the pod: the connection is closed and kubectl reports the
/// kubelet's error text from the error stream, over either transport.
async fn reports_a_refused_port(websockets: Option<bool>) {
    let c = cluster::start(MANIFESTS).await;
    c.ready("demo", "redis").await;
    let fwd = port_forward(&kubectl(33), c.kubeconfig(), websockets, 1).await;
    let mut conn = tokio::net::TcpStream::connect(&fwd.addr)
        .await
        .expect("kubectl accepts locally");
    let mut buf = [0; 64];
    let read = tokio::time::timeout(WITHIN, conn.read(&mut buf))
        .await
        .expect("the connection ends in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    drop(conn);
    // kubectl logs the error stream's text, then (1.33) gives up the forward.
    let stderr = tokio::time::timeout(WITHIN, async {
        let mut fwd = fwd;
        let _ = tokio::time::timeout(Duration::from_secs(5), fwd.child.wait()).await;
        fwd.stop().await
    })
    .await
    .expect("kubectl stopped");
    assert!(
        stderr.contains("error forwarding port 1 to pod")
            && stderr.contains("dial tcp4 127.0.0.1:1: connect: connection refused"),
        "kubectl said: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reports_a_refused_port_through_the_tunnel() {
    reports_a_refused_port(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reports_a_refused_port_over_spdy() {
    reports_a_refused_port(Some(false)).await;
}
