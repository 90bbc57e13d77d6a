//! Shared test support: temp homes, the test cluster, sshd in network namespaces.
#![allow(dead_code)]
pub mod cluster;
pub mod http;
pub mod podtun;
pub mod redis;
#[cfg(unix)]
pub mod slurm;
pub mod sshd;
pub mod topology;

/// Polls `check` until it holds or `within` passes, then fails with `what`.
pub async fn wait_until(what: &str, within: std::time::Duration, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Deterministic bytes that are not all alike, so a shifted or dropped chunk shows.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Connects to a Unix socket and sends a redis PING (after the agent's `+`, as the laptop
/// opens a connection): prints `denied` when the connect is not permitted, else `got:` and the
/// reply (empty when the other end dropped the connection).
const PING_UNIX_SOCKET: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("denied")
    sys.exit(0)
s.settimeout(10)
data = b""
try:
    s.sendall(b"+PING\r\n")
    while not data.endswith(b"\r\n"):
        chunk = s.recv(100)
        if not chunk:
            break
        data += chunk
except (BrokenPipeError, ConnectionResetError, TimeoutError):
    # Dropped before or after the PING was written: the same outcome.
    pass
print("got:" + data.decode().strip())
"#;

/// Runs the PING probe on `socket` as `user`; `setpriv` is the command to run it with (plain,
/// or inside a namespace). Returns `denied` or `got:REPLY`.
pub fn ping_unix_socket_as(
    mut setpriv: std::process::Command,
    user: &str,
    socket: &std::path::Path,
) -> String {
    let out = setpriv
        .args([
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            PING_UNIX_SOCKET,
        ])
        .arg(socket)
        .current_dir("/")
        .output()
        .expect("run the socket probe");
    assert!(
        out.status.success(),
        "socket probe as {user}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `podtun redis redis -n demo -p 0` in local mode, ready: the process and its local address.
pub async fn redis_local(c: &cluster::Cluster, home: &std::path::Path) -> (podtun::Podtun, String) {
    let mut p = podtun::Podtun::spawn(
        c.kubeconfig(),
        home,
        &["redis", "redis", "-n", "demo", "-p", "0"],
    );
    let (local, ready) = p.ready().await;
    assert_eq!(ready["pod"], "redis", "{ready}");
    (p, local)
}
