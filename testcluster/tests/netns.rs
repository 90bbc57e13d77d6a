//! Pod networks: an isolated pod's port is reachable through `connect` and not from the host.
//! Needs root (`ip netns`), as the test cluster does for isolated pods.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use testcluster::netns::{cleanup_stale, PodNetwork};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(30);

/// Listens on 127.0.0.1:PORT, says "ready" once listening, greets one connection, exits.
const GREETER: &str = r#"
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print("ready", flush=True)
c, _ = s.accept()
c.sendall(b"hello from the pod")
c.close()
"#;

async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    timeout(DEADLINE, fut).await.expect("deadline passed")
}

#[tokio::test]
async fn isolated_pod_port_is_reachable_only_through_connect() {
    // The same port on the host is bound but not listening: a host connect is refused there,
    // and no other process can listen on it meanwhile.
    let reserved = TcpSocket::new_v4().expect("socket");
    reserved
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let port = reserved.local_addr().expect("addr").port();

    let network = PodNetwork::isolated("greeter test").expect("isolated network (needs root)");
    let name = network.netns_name().expect("a netns").to_string();
    assert!(Path::new("/var/run/netns").join(&name).exists());

    let args = vec!["-c".to_string(), GREETER.to_string(), port.to_string()];
    let mut child = network
        .command("python3", &args, None)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = within(lines.next_line()).await.expect("read stdout");
    assert_eq!(line.as_deref(), Some("ready"));

    // An exec chain: the child's pid is the program's, not `ip`'s.
    let pid = child.id().expect("pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert!(String::from_utf8_lossy(&cmdline).contains("python"));

    let refused = TcpStream::connect(("127.0.0.1", port)).await;
    let err = refused.expect_err("the pod's port must not be reachable from the host");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);

    let mut conn = within(network.connect(port)).await.expect("connect");
    assert!(conn.nodelay().expect("nodelay"));
    let mut greeting = String::new();
    within(conn.read_to_string(&mut greeting))
        .await
        .expect("read");
    assert_eq!(greeting, "hello from the pod");
    assert!(within(child.wait()).await.expect("wait").success());

    drop(network);
    assert!(!Path::new("/var/run/netns").join(&name).exists());
}

#[tokio::test]
async fn connect_in_a_netns_reports_refused_ports() {
    let network = PodNetwork::isolated("refused").expect("isolated network (needs root)");
    let err = within(network.connect(80))
        .await
        .expect_err("nothing listens");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn host_network_connects_to_host_ports() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let network = PodNetwork::host();
    assert_eq!(network.netns_name(), None);
    let (conn, accepted) = tokio::join!(network.connect(port), listener.accept());
    assert!(conn.expect("connect").nodelay().expect("nodelay"));
    accepted.expect("accept");
}

#[tokio::test]
async fn run_as_drops_to_the_given_user_and_group() {
    let args = vec!["-c".to_string(), "id -u; id -g; id -G".to_string()];
    for network in [
        PodNetwork::host(),
        PodNetwork::isolated("run-as").expect("isolated network (needs root)"),
    ] {
        let output = within(network.command("sh", &args, Some((65534, 65534))).output())
            .await
            .expect("run");
        assert!(output.status.success(), "{output:?}");
        let ids = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            ids,
            "65534\n65534\n65534\n",
            "in {:?}",
            network.netns_name()
        );
    }
}

#[tokio::test]
async fn cleanup_stale_removes_namespaces_of_dead_processes_only() {
    let dead = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let dead_pid = dead.id();
    let mut dead = dead;
    dead.wait().expect("wait");
    let prefix = "tcstaletest-";
    let stale = format!("{prefix}{dead_pid}-0-gone");
    let live = format!("{prefix}{}-0-mine", std::process::id());
    for name in [&stale, &live] {
        let status = std::process::Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .expect("ip netns add (needs root)");
        assert!(status.success());
    }

    cleanup_stale(prefix).expect("cleanup");
    let dir = Path::new("/var/run/netns");
    assert!(!dir.join(&stale).exists());
    assert!(dir.join(&live).exists());
    let status = std::process::Command::new("ip")
        .args(["netns", "del", &live])
        .status()
        .expect("ip netns del");
    assert!(status.success());
}
