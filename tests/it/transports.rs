//! Port-forward transports: SPDY in a WebSocket first, then classic SPDY, then the v4 WebSocket,
//! each one chosen when the cluster does not serve the ones before it (as an API server before
//! 1.31 serves no tunnel, and a proxy may pass WebSockets only).

use std::process::Stdio;
use std::time::Duration;

use testcluster::Transport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::cluster;
use crate::common::podtun::{self, Podtun};
use crate::common::redis::Redis;

const REDIS: &[&str] = &["manifests/00-namespace.yaml", "manifests/30-redis.yaml"];
/// New connections made one after another, each with one request.
const CONNECTIONS: u64 = 20;

/// `printf 'PING\r\n' | nc -N`: the request, EOF, then the whole reply and the connection's end.
async fn ping_then_eof(local: &str) -> Vec<u8> {
    let mut conn = TcpStream::connect(local).await.expect("connect");
    conn.write_all(b"PING\r\n").await.expect("send PING");
    conn.shutdown().await.expect("send EOF");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut reply))
        .await
        .expect("the connection ends after the reply")
        .expect("read the reply");
    reply
}

/// Forwards redis with `off` turned off in the cluster, and checks that `over` carried it.
async fn forwards_over(off: &[Transport], over: Transport, says: &str) {
    let c = cluster::start(REDIS).await;
    for transport in off {
        c.tc.set_portforward_transport(*transport, false);
    }
    let home = tempfile::tempdir().expect("home");
    let args = ["redis", "redis", "-n", "demo", "-p", "0", "-v"];
    let mut cmd = podtun::command(c.kubeconfig(), home.path(), &args);
    cmd.stderr(Stdio::piped());
    let mut p = Podtun::spawn_command(cmd);
    let stderr = p.capture_stderr();
    let (local, _) = p.ready().await;

    for i in 0..CONNECTIONS {
        let mut r = Redis::connect(&local).await.expect("connect");
        let key = format!("k{i}");
        let set = r.call(&[b"SET", key.as_bytes(), b"v"]).await.expect("SET");
        assert_eq!(set.as_deref(), Some(&b"+OK"[..]), "connection {i}");
    }
    assert_eq!(ping_then_eof(&local).await, b"+PONG\r\n");

    for transport in Transport::ALL {
        let upgrades = c.tc.portforward_upgrades_over(transport);
        if transport == over {
            assert!(upgrades >= 1, "no upgrade over {}", transport.name());
        } else {
            assert_eq!(upgrades, 0, "upgrades over {}", transport.name());
        }
    }
    if over != Transport::WebSocket {
        // One session carries every connection: no upgrade per connection.
        let upgrades = c.tc.portforward_upgrades();
        assert!(
            upgrades < CONNECTIONS / 4,
            "{upgrades} upgrades for {CONNECTIONS} connections"
        );
    }
    let seen = stderr.lock().expect("stderr").clone();
    assert!(
        seen.contains(&format!("port-forward over {says}")),
        "-v names the transport:\n{seen}"
    );
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdy_in_a_websocket_first() {
    forwards_over(&[], Transport::Tunnel, "SPDY/3.1 in a WebSocket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_spdy_when_the_tunnel_is_not_served() {
    forwards_over(
        &[Transport::Tunnel],
        Transport::Spdy,
        "SPDY/3.1 (Upgrade: SPDY/3.1)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_v4_when_no_spdy_is_served() {
    forwards_over(
        &[Transport::Tunnel, Transport::Spdy],
        Transport::WebSocket,
        "WebSocket v4.channel.k8s.io",
    )
    .await;
}
