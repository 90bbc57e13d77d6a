//! kubectl mode end to end on the walled-off topology (`common::topology`): nothing of podtun's
//! runs on the login host, only `kubectl proxy` on a private Unix socket there, reached over SSH
//! stream-local channels; the cluster half runs on the laptop. These tests cover what a user of
//! such a login host checks: Jupyter's URL, a replaced pod, a dropped SSH connection, the
//! socket's privacy, the choice `auto` makes, and the errors when kubectl mode cannot work.
//! (`via.rs` covers redis byte-exactness and the cleanup after SIGTERM and kill -9.)

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::http;
use crate::common::podtun::{self, Podtun};
use crate::common::topology::{
    ensure_user, ids, parent_pid, wait_until, Shape, Topology, LOGIN_USER, OTHER_USER,
};
use crate::via::{
    args, get, login_kubectl_proxies, ping, shape, spawn, CLEANUP_TIMEOUT, JUPYTER, REDIS,
};

/// Bound on a replacement pod being served on the same local port (the old pod's grace
/// period, the new pod's start and readiness on a loaded 2-core machine included).
const REPLACEMENT: Duration = Duration::from_secs(90);

/// Bound on `reconnecting` and then `ready` after the SSH connection dropped (backoff included).
const RECOVERY: Duration = Duration::from_secs(60);

/// How soon a new connection must work once podtun reports the new pod or is ready again.
const AFTER_READY: Duration = Duration::from_secs(10);

/// What counts as failing fast: well below the 30 s podtun gives kubectl proxy to start, which
/// an error that waited on a timeout would reach.
const FAIL_FAST: Duration = Duration::from_secs(25);

/// `podtun PRESET TARGET -n demo -p 0 --via LOGIN --kubeconfig (login's) --agent kubectl`.
fn kubectl_args(t: &Topology, preset: &str, target: &str) -> Vec<String> {
    let mut args = args(t, preset, &t.addrs.login, false);
    args[1] = target.to_string();
    args.extend(["--agent".to_string(), "kubectl".to_string()]);
    args
}

/// Starts `args` and waits for `ready`, which must name kubectl mode: the process, the local
/// address and the event.
async fn ready_in_kubectl_mode(t: &Topology, args: &[String]) -> (Podtun, String, Value) {
    let mut p = spawn(t, args);
    let (local, ready) = p.ready().await;
    assert_eq!(ready["agent"], "kubectl", "{ready}");
    assert!(local.starts_with("127.0.0.1:"), "{local}");
    (p, local, ready)
}

/// PING on new connections from the laptop until one answers, within `within`.
async fn pong_within(t: &Topology, local: &str, within: Duration) {
    let local = local.to_string();
    t.on_laptop(
        move || async move { crate::faults::pong_within(&local, Instant::now(), within).await },
    )
    .await;
}

/// The TCP ports listening on the login host, as `ADDR:PORT`.
fn login_tcp_listeners(t: &Topology) -> Vec<String> {
    let out = crate::common::sshd::run(t.login.command("ss").args(["-H", "-l", "-t", "-n"]));
    out.lines()
        .filter_map(|line| line.split_whitespace().nth(3).map(str::to_string))
        .collect()
}

/// Nothing of podtun's on the login host: no agent process, nothing uploaded.
fn no_podtun_on_the_login_host(t: &Topology) {
    assert!(t.login_podtuns().is_empty(), "{:?}", t.login_podtuns());
    let cache = t.login_home.path().join(".cache/podtun");
    let files: Vec<PathBuf> = crate::release::walk(&cache)
        .into_iter()
        .filter(|p| !p.is_dir())
        .collect();
    assert!(files.is_empty(), "files on the login host: {files:?}");
}

/// Writes `~/.profile` on the login host, owned by the login user.
fn login_profile(t: &Topology, text: &str) {
    let path = t.login_home.path().join(".profile");
    std::fs::write(&path, text).expect("write ~/.profile");
    let (uid, gid) = t.login_home.owner;
    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown ~/.profile");
}

/// Makes `~/NAME` on the login host, the login user's, with `mode`; returns its path.
fn login_dir(t: &Topology, name: &str, mode: u32) -> PathBuf {
    let dir = t.login_home.path().join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
    let (uid, gid) = t.login_home.owner;
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown");
    dir
}

/// Sends `GET /version` to the Unix socket `socket` on the login host as `user`: `denied` when
/// the connect is not permitted, else `got:` and the response's status line.
fn http_get_as(t: &Topology, user: &str, socket: &Path) -> String {
    const PROBE: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("denied")
    sys.exit(0)
s.settimeout(10)
s.sendall(b"GET /version HTTP/1.0\r\nHost: localhost\r\n\r\n")
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print("got:" + data.split(b"\r\n", 1)[0].decode())
"#;
    let out = t
        .login
        .command("setpriv")
        .args([
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            PROBE,
        ])
        .arg(socket)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("run the socket probe");
    assert!(
        out.status.success(),
        "socket probe as {user}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The one kubectl proxy's socket on the login host.
fn the_proxy_socket(t: &Topology) -> PathBuf {
    let sockets = login_kubectl_proxies(t);
    assert_eq!(sockets.len(), 1, "one kubectl proxy: {sockets:?}");
    PathBuf::from(&sockets[0])
}

/// The proxy and its directory are gone from the login host within [`CLEANUP_TIMEOUT`].
async fn proxy_gone(t: &Topology, dir: &Path, after: &str) {
    wait_until(
        &format!("kubectl proxy and its socket gone after {after}"),
        CLEANUP_TIMEOUT,
        || login_kubectl_proxies(t).is_empty() && !dir.exists(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_mode_jupyter_url_answers_on_the_laptop() {
    let t = Topology::start(shape(JUPYTER)).await;
    let (p, local, ready) =
        ready_in_kubectl_mode(&t, &kubectl_args(&t, "jupyter", "jupyter")).await;
    assert_eq!(ready["pod"], "jupyter", "{ready}");
    let url = ready["url"].as_str().expect("a url").to_string();
    let (addr, path) = http::split_url(&url);
    assert_eq!(addr, local);
    assert!(path.starts_with("/lab?token="), "tokenized lab URL: {path}");
    let token = path.trim_start_matches("/lab?token=").to_string();

    let (lab, status, anonymous) = t
        .on_laptop(move || async move {
            (
                get(&addr, &path).await.0,
                get(&addr, &format!("/api/status?token={token}")).await.0,
                get(&addr, "/api/status").await.0,
            )
        })
        .await;
    assert_eq!(lab, 200, "the printed URL");
    assert_eq!(status, 200, "/api/status with the token");
    assert_eq!(anonymous, 403, "no token, no access");

    // The login host runs kubectl proxy, on a Unix socket only.
    let socket = the_proxy_socket(&t);
    no_podtun_on_the_login_host(&t);
    assert_eq!(
        login_tcp_listeners(&t),
        [t.sshd.addr()],
        "no TCP port on the login host but sshd's"
    );
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
    proxy_gone(&t, socket.parent().expect("dir"), "SIGTERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_mode_keeps_the_port_across_a_pod_replacement() {
    let t = Topology::start(shape(REDIS)).await;
    let (mut p, local, ready) =
        ready_in_kubectl_mode(&t, &kubectl_args(&t, "redis", "deploy/redis-cache")).await;
    let first = ready["pod"].as_str().expect("pod").to_string();
    ping(&t, &local).await;

    t.cluster
        .tc
        .delete_pod("demo", &first)
        .await
        .expect("delete the pod");
    let replaced = p.wait_for("pod-replaced", REPLACEMENT).await;
    let second = replaced["pod"].as_str().expect("pod").to_string();
    assert_ne!(second, first, "a new pod serves: {replaced}");
    pong_within(&t, &local, AFTER_READY).await;
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_mode_proxy_socket_is_closed_to_other_login_host_users() {
    ensure_user(OTHER_USER, &["-M", "-r", "-s", "/usr/sbin/nologin"]);
    let t = Topology::start(shape(REDIS)).await;
    let (p, local, _) = ready_in_kubectl_mode(&t, &kubectl_args(&t, "redis", "redis")).await;
    ping(&t, &local).await;

    let socket = the_proxy_socket(&t);
    let dir = socket.parent().expect("dir").to_path_buf();
    let (uid, _) = ids(LOGIN_USER);
    let meta = std::fs::metadata(&dir).expect("the proxy's directory");
    assert_eq!(meta.mode() & 0o7777, 0o700, "directory mode");
    assert_eq!(meta.uid(), uid, "directory owner");
    let meta = std::fs::symlink_metadata(&socket).expect("the proxy's socket");
    assert_eq!(meta.mode() & 0o777, 0o600, "socket mode");
    assert_eq!(meta.uid(), uid, "socket owner");

    // The proxy holds the login user's cluster rights: another user gets nowhere near it.
    assert_eq!(http_get_as(&t, OTHER_USER, &socket), "denied");
    // The same probe gets an answer as the login user: the refusal is the modes' doing.
    let owner = http_get_as(&t, LOGIN_USER, &socket);
    assert!(
        owner.starts_with("got:HTTP/") && owner.ends_with(" 200 OK"),
        "kubectl proxy answers its owner: {owner}"
    );
    ping(&t, &local).await;
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
    proxy_gone(&t, &dir, "SIGTERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_mode_refuses_without_stream_local_forwarding() {
    let t = Topology::start(Shape {
        login_sshd: vec!["AllowStreamLocalForwarding no".into()],
        ..shape(REDIS)
    })
    .await;
    // A TMPDIR of the test's own, where kubectl mode makes its private directory.
    let tmp = login_dir(&t, "tmp", 0o700);
    login_profile(&t, "export TMPDIR=\"$HOME/tmp\"\n");

    let args = kubectl_args(&t, "redis", "redis");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let out = podtun::finish(t.podtun(&args)).await;
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(
        started.elapsed() < FAIL_FAST,
        "took {:?}",
        started.elapsed()
    );
    assert!(out.stdout.is_empty(), "stdout: {}", out.stdout);
    assert!(
        out.stderr.contains(&format!(
            "error: kubectl mode needs stream-local forwarding, and login host `{}` does not allow it",
            t.addrs.login
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("\n  hint: ") && out.stderr.contains("AllowStreamLocalForwarding"),
        "{}",
        out.stderr
    );
    // Never a TCP port instead, and nothing left behind.
    wait_until(
        "kubectl proxy and its directory gone from the login host",
        CLEANUP_TIMEOUT,
        || {
            login_kubectl_proxies(&t).is_empty()
                && std::fs::read_dir(&tmp).is_ok_and(|mut d| d.next().is_none())
        },
    )
    .await;
    assert_eq!(
        login_tcp_listeners(&t),
        [t.sshd.addr()],
        "no TCP port on the login host but sshd's"
    );
    no_podtun_on_the_login_host(&t);
}

/// The commands a login host without podtun and kubectl still has.
const BASIC_TOOLS: &[&str] = &[
    "cat", "chmod", "gzip", "id", "ls", "mkdir", "mktemp", "mv", "rm", "sed", "sleep", "uname",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_without_podtun_or_kubectl_fails_fast_naming_both() {
    let t = Topology::start(shape(REDIS)).await;
    // PATH on the login host: basic tools, no kubectl (and no podtun).
    let bin = login_dir(&t, "bin", 0o755);
    for tool in BASIC_TOOLS {
        std::os::unix::fs::symlink(format!("/usr/bin/{tool}"), bin.join(tool)).expect("symlink");
    }
    login_profile(&t, "export PATH=\"$HOME/bin\"\n");

    let mut args = args(&t, "redis", &t.addrs.login, false);
    args.push("--no-install".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let out = podtun::finish(t.podtun(&args)).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(took < FAIL_FAST, "took {took:?}:\n{}", out.stderr);
    assert!(out.stdout.is_empty(), "stdout: {}", out.stdout);
    let err = &out.stderr;
    assert!(
        err.contains(&format!(
            "error: nothing to reach the cluster with on login host `{}`",
            t.addrs.login
        )),
        "{err}"
    );
    assert!(
        err.contains("\n  podtun: ") && err.contains("is not installed on login host"),
        "{err}"
    );
    assert!(
        err.contains("\n  kubectl: kubectl is not on login host"),
        "{err}"
    );
    assert!(err.contains("\n  hint: "), "{err}");
    assert!(err.contains("--no-install"), "{err}");
    assert!(login_kubectl_proxies(&t).is_empty());
    no_podtun_on_the_login_host(&t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_chooses_kubectl_mode_when_the_upload_cannot_run() {
    let t = Topology::start(shape(REDIS)).await;
    let (_folder, releases) = crate::release::unrunnable_release();
    let args = args(&t, "redis", &t.addrs.login, false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = t.podtun(&args);
    // This podtun cannot be uploaded, and the release build it fetches does not run there.
    cmd.env("PODTUN_TEST_FOREIGN_BUILD", "1")
        .env("PODTUN_RELEASES_URL", &releases)
        .env("XDG_CACHE_HOME", t.home.path().join(".cache"));
    let mut p = Podtun::spawn_command(cmd);
    let (local, ready) = p.ready().await;
    assert_eq!(ready["agent"], "kubectl", "{ready}");
    assert_eq!(ready["pod"], "redis", "{ready}");
    ping(&t, &local).await;
    // The build that did not run was removed; only kubectl runs there.
    no_podtun_on_the_login_host(&t);
    let socket = the_proxy_socket(&t);
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
    proxy_gone(&t, socket.parent().expect("dir"), "SIGTERM").await;
}

/// DSMLP-like: KUBECONFIG comes only from the login host's `~/.profile`, which also prints a
/// banner on stdout; kubectl mode finds the cluster with no `--kubeconfig` and no
/// `~/.kube/config`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_mode_kubeconfig_from_the_login_profile_and_a_banner() {
    let t = Topology::start(shape(REDIS)).await;
    let elsewhere = t.login_home.path().join("cluster.yaml");
    std::fs::rename(&t.kubeconfig, &elsewhere).expect("move the kubeconfig");
    login_profile(
        &t,
        "echo 'Welcome to the login host: be nice to others'\nexport KUBECONFIG=\"$HOME/cluster.yaml\"\n",
    );

    let args: Vec<String> = [
        "redis",
        "redis",
        "-n",
        "demo",
        "-p",
        "0",
        "--via",
        &t.addrs.login,
        "--agent",
        "kubectl",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (p, local, ready) = ready_in_kubectl_mode(&t, &args).await;
    assert_eq!(ready["pod"], "redis", "{ready}");
    ping(&t, &local).await;
    no_podtun_on_the_login_host(&t);
    let socket = the_proxy_socket(&t);
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
    proxy_gone(&t, socket.parent().expect("dir"), "SIGTERM").await;
}

/// The login host's sshd processes serving connections (not its listener).
fn ssh_sessions(t: &Topology) -> Vec<String> {
    let sshds: Vec<String> = t
        .login
        .pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.starts_with("sshd"))
        })
        .collect();
    sshds
        .iter()
        .filter(|pid| parent_pid(pid).is_some_and(|ppid| sshds.contains(&ppid)))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_mode_reconnects_on_the_same_port() {
    let t = Topology::start(shape(REDIS)).await;
    let (mut p, local, _) = ready_in_kubectl_mode(&t, &kubectl_args(&t, "redis", "redis")).await;
    ping(&t, &local).await;
    let old = the_proxy_socket(&t);

    // The SSH connection dies on the login host's side (its sshd session is killed).
    let sessions = ssh_sessions(&t);
    assert!(!sessions.is_empty(), "an sshd session serves the laptop");
    crate::common::sshd::run(
        std::process::Command::new("kill")
            .arg("-KILL")
            .args(&sessions),
    );
    let ev = p.wait_for("reconnecting", RECOVERY).await;
    assert!(ev["reason"].is_string(), "{ev}");
    let ready = p.wait_for("ready", RECOVERY).await;
    assert_eq!(ready["local"], local.as_str(), "the same local port");
    assert_eq!(ready["agent"], "kubectl", "{ready}");
    pong_within(&t, &local, AFTER_READY).await;

    // The old proxy went with its connection; one proxy serves the new one.
    wait_until(
        "the old kubectl proxy and its directory gone, one proxy left",
        CLEANUP_TIMEOUT,
        || {
            let proxies = login_kubectl_proxies(&t);
            proxies.len() == 1
                && Path::new(&proxies[0]) != old
                && !old.parent().is_some_and(Path::exists)
        },
    )
    .await;
    ping(&t, &local).await;
    let socket = the_proxy_socket(&t);
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
    proxy_gone(&t, socket.parent().expect("dir"), "SIGTERM").await;
}
