//! `podtun agent` driven as the laptop drives it: a Hello line on stdin, JSON events on stdout,
//! redis through the private Unix socket (directly and through `podtun agent pipe`), the
//! socket's privacy against a second unix user, and cleanup when the laptop goes away.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::common::cluster;
use crate::common::pattern;

const REDIS: &[&str] = &["manifests/00-namespace.yaml", "manifests/30-redis.yaml"];

/// Bound on one event (the redis pod starting included).
const EVENT_TIMEOUT: Duration = Duration::from_secs(90);

/// Bound on the agent's exit once its laptop is gone (its grace is 2 s).
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The second unix user of the login host.
const OTHER_USER: &str = "podtun-other";

/// A temp "login host" home: HOME and XDG_RUNTIME_DIR inside a directory others may traverse,
/// so that only podtun's own directory modes keep a second user out.
struct LoginHome {
    root: tempfile::TempDir,
}

impl LoginHome {
    fn new() -> LoginHome {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["home", "xdg"] {
            std::fs::create_dir(root.path().join(sub)).unwrap();
            std::fs::set_permissions(
                root.path().join(sub),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();
        }
        LoginHome { root }
    }

    fn home(&self) -> PathBuf {
        self.root.path().join("home")
    }

    fn xdg(&self) -> PathBuf {
        self.root.path().join("xdg")
    }

    /// Where the agent must put its sockets.
    fn socket_dir(&self) -> PathBuf {
        self.xdg().join("podtun")
    }

    fn sockets(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.socket_dir()) else {
            return Vec::new();
        };
        entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sock"))
            .collect()
    }
}

/// A running `podtun agent`, as the laptop sees it.
struct Agent {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Lines<BufReader<ChildStdout>>,
}

impl Agent {
    /// Starts the agent and checks its first line is `hello`.
    async fn spawn(login: &LoginHome) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_podtun"))
            .args(["agent", "-v"])
            .env("HOME", login.home())
            .env("XDG_RUNTIME_DIR", login.xdg())
            .env_remove("KUBECONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn podtun agent");
        let stdin = child.stdin.take();
        let events = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut agent = Agent {
            child,
            stdin,
            events,
        };
        let hello = agent.next_event(EVENT_TIMEOUT).await;
        assert_eq!(hello["event"], "hello", "first line: {hello}");
        assert_eq!(hello["protocol"], ::podtun::proto::wire::PROTOCOL);
        assert_eq!(hello["version"], env!("CARGO_PKG_VERSION"));
        agent
    }

    /// Sends the laptop's first line.
    async fn send(&mut self, hello: &Value) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{hello}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    async fn next_event(&mut self, within: Duration) -> Value {
        let line = tokio::time::timeout(within, self.events.next_line())
            .await
            .expect("no event from the agent in time")
            .expect("read the agent's stdout")
            .expect("the agent closed stdout");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line: {e}: {line}"))
    }

    /// The next event named `name`, with the laptop's heartbeat (an empty line) every `every`
    /// meanwhile, as the laptop sends it from the start; an error event fails the test.
    async fn wait_beating(&mut self, name: &str, every: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        let mut beats = tokio::time::interval(every);
        loop {
            tokio::select! {
                line = tokio::time::timeout_at(deadline, self.events.next_line()) => {
                    let line = line
                        .expect("no event from the agent in time")
                        .expect("read the agent's stdout")
                        .expect("the agent closed stdout");
                    let ev: Value = serde_json::from_str(&line).unwrap();
                    assert_ne!(ev["event"], "error", "{ev}");
                    if ev["event"] == name {
                        return ev;
                    }
                }
                _ = beats.tick() => {
                    let stdin = self.stdin.as_mut().unwrap();
                    stdin.write_all(b"\n").await.unwrap();
                    stdin.flush().await.unwrap();
                }
            }
        }
    }

    /// The next event named `name`, skipping progress; an error event fails the test.
    async fn wait_for(&mut self, name: &str) -> Value {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ev = self.next_event(left).await;
            if ev["event"] == name {
                return ev;
            }
            assert_ne!(ev["event"], "error", "the agent reported an error: {ev}");
        }
    }

    /// The exit status, bounded.
    async fn exit(&mut self, within: Duration) -> ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the agent did not exit in time")
            .unwrap()
    }
}

/// The laptop's first line.
fn hello(kubeconfig: &Path, target: &str, preset: &str) -> Value {
    json!({
        "v": ::podtun::proto::wire::PROTOCOL,
        "request": {
            "target": target,
            "namespace": "demo",
            "kubeconfig": kubeconfig,
            "preset": preset,
            "timeout_secs": 60,
        }
    })
}

/// One RESP command.
fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut buf = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        buf.extend_from_slice(a);
        buf.extend_from_slice(b"\r\n");
    }
    buf
}

/// Reads one reply: a status line, or a bulk string's payload.
async fn reply(conn: &mut BufReader<UnixStream>) -> Vec<u8> {
    let mut line = String::new();
    assert!(conn.read_line(&mut line).await.unwrap() > 0, "EOF");
    let line = line.trim_end();
    match line.strip_prefix('$') {
        Some(len) => {
            let mut data = vec![0u8; len.parse::<usize>().unwrap() + 2];
            conn.read_exact(&mut data).await.unwrap();
            data.truncate(data.len() - 2);
            data
        }
        None => line.as_bytes().to_vec(),
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Creates the second unix user if it is missing (tests run as root).
fn ensure_other_user() {
    let exists = std::process::Command::new("id")
        .arg(OTHER_USER)
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        let status = std::process::Command::new("useradd")
            .args(["-M", "-r", "-s", "/usr/sbin/nologin", OTHER_USER])
            .status()
            .unwrap();
        // 9: created meanwhile by a parallel test.
        assert!(
            status.success() || status.code() == Some(9),
            "useradd: {status}"
        );
    }
}

/// Connects to `socket` as the second user and sends a PING: `denied`, or `got:` and the reply.
fn connect_as_other_user(socket: &Path) -> String {
    crate::common::ping_unix_socket_as(std::process::Command::new("setpriv"), OTHER_USER, socket)
}

/// A connection to an agent socket, opened as the laptop opens one (its first byte).
async fn open_socket(socket: &Path) -> UnixStream {
    let mut conn = UnixStream::connect(socket).await.unwrap();
    conn.write_all(&[::podtun::proto::wire::STREAM_OPEN])
        .await
        .unwrap();
    conn
}

/// The pid of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_forwards_redis_over_a_private_socket_and_cleans_up() {
    let c = cluster::start(REDIS).await;
    let login = LoginHome::new();

    // A dead agent's socket and a file that is none of ours, left in the shared directory.
    let dir = login.socket_dir();
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let stale = dir.join(format!("{}-0.sock", dead_pid()));
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let keep = dir.join("keep.txt");
    std::fs::write(&keep, "not the agent's").unwrap();

    let mut agent = Agent::spawn(&login).await;
    agent
        .send(&hello(c.kubeconfig(), "pod/redis", "redis"))
        .await;
    let resolved = agent.wait_for("resolved").await;
    assert_eq!(resolved["pod"], "redis");
    assert_eq!(resolved["ports"][0]["remote"], 6379);
    let listening = agent.wait_for("listening").await;
    let sockets = listening["sockets"].as_array().unwrap();
    assert_eq!(sockets.len(), 1, "{listening}");
    let socket = PathBuf::from(sockets[0].as_str().unwrap());
    let pid = agent.child.id().unwrap();
    assert_eq!(socket, dir.join(format!("{pid}-0.sock")));

    // Private: the socket 0600 in a 0700 directory; a dead agent's socket is gone, other files
    // stay.
    assert!(std::fs::symlink_metadata(&socket)
        .unwrap()
        .file_type()
        .is_socket());
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(&dir), 0o700);
    assert!(!stale.exists(), "a dead agent's socket is removed");
    assert!(keep.exists(), "other files are left alone");

    // redis through the socket: PING and a 1 MiB round trip.
    let mut conn = BufReader::new(open_socket(&socket).await);
    conn.get_mut().write_all(&resp(&[b"PING"])).await.unwrap();
    assert_eq!(reply(&mut conn).await, b"+PONG");
    let value = pattern(1 << 20);
    conn.get_mut()
        .write_all(&resp(&[b"SET", b"big", &value]))
        .await
        .unwrap();
    assert_eq!(reply(&mut conn).await, b"+OK");
    conn.get_mut()
        .write_all(&resp(&[b"GET", b"big"]))
        .await
        .unwrap();
    let back = reply(&mut conn).await;
    assert!(
        back == value,
        "1 MiB came back different ({} bytes)",
        back.len()
    );
    drop(conn);

    // Another user of the login host can't connect: the directory keeps them out, and the peer
    // uid check drops them even when the modes are opened up.
    ensure_other_user();
    assert_eq!(connect_as_other_user(&socket), "denied");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(
        connect_as_other_user(&socket),
        "got:",
        "the agent must drop another uid's connection unanswered"
    );
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();

    // The exec fallback: `podtun agent pipe SOCKET` carries a PING both ways (after the
    // laptop's first byte); redis closing the connection (QUIT) ends the pipe, and stdin's EOF
    // still lets the reply through.
    let out = pipe(&socket, b"+PING\r\nQUIT\r\n").await;
    assert_eq!(out, b"+PONG\r\n+OK\r\n");
    let out = pipe(&socket, b"+PING\r\n").await;
    assert_eq!(out, b"+PONG\r\n");

    // The laptop goes away: the agent exits 0 and removes its socket, nothing else.
    drop(agent.stdin.take());
    let status = agent.exit(EXIT_TIMEOUT).await;
    assert!(status.success(), "exit 0 when stdin closes: {status}");
    assert!(!socket.exists(), "the socket is removed");
    assert!(keep.exists() && dir.is_dir(), "the shared directory stays");
}

/// Runs `podtun agent pipe SOCKET` with `input` on stdin (then EOF) and returns its stdout.
async fn pipe(socket: &Path, input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_podtun"))
        .args(["agent", "pipe"])
        .arg(socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn podtun agent pipe");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    let mut out = Vec::new();
    let mut stdout = child.stdout.take().unwrap();
    // After stdin's EOF, the agent holds the connection open until redis has been quiet for a
    // few seconds (splice::QUIET_AFTER_EOF).
    tokio::time::timeout(Duration::from_secs(20), stdout.read_to_end(&mut out))
        .await
        .expect("the pipe did not end")
        .unwrap();
    let status = tokio::time::timeout(EXIT_TIMEOUT, child.wait())
        .await
        .expect("the pipe did not exit")
        .unwrap();
    assert!(status.success(), "pipe exit: {status}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_stops_on_sigterm_and_removes_its_socket() {
    let c = cluster::start(REDIS).await;
    let login = LoginHome::new();
    let mut agent = Agent::spawn(&login).await;
    agent
        .send(&hello(c.kubeconfig(), "pod/redis", "redis"))
        .await;
    let listening = agent.wait_for("listening").await;
    let socket = PathBuf::from(listening["sockets"][0].as_str().unwrap());
    assert!(socket.exists());
    let pid = agent.child.id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = agent.exit(EXIT_TIMEOUT).await;
    assert!(status.success(), "exit 0 after SIGTERM: {status}");
    assert!(!socket.exists(), "the socket is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_exits_when_the_laptops_heartbeats_stop() {
    // A link that died without a FIN: stdin stays open but nothing arrives. With a 1 s
    // heartbeat, three missed ones end the agent (the laptop's default is every 10 s).
    let c = cluster::start(REDIS).await;
    let login = LoginHome::new();
    let mut agent = Agent::spawn(&login).await;
    let mut hello = hello(c.kubeconfig(), "pod/redis", "redis");
    hello["heartbeat_secs"] = json!(1);
    agent.send(&hello).await;
    // The laptop beats from its hello on, while the pod and its ports are looked up.
    let listening = agent
        .wait_beating("listening", Duration::from_millis(250))
        .await;
    let socket = PathBuf::from(listening["sockets"][0].as_str().unwrap());
    let status = agent.exit(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "a silent laptop ends the agent cleanly: {status}"
    );
    assert!(!socket.exists(), "the socket is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_refuses_another_protocol_version_with_a_hint() {
    let login = LoginHome::new();
    let mut agent = Agent::spawn(&login).await;
    let mut hello = hello(Path::new("/nonexistent"), "pod/redis", "redis");
    hello["v"] = json!(99);
    hello["version"] = json!("9.9.9");
    agent.send(&hello).await;
    let ev = agent.next_event(EVENT_TIMEOUT).await;
    assert_eq!(ev["event"], "error", "{ev}");
    let hint = ev["hint"].as_str().expect("a hint");
    assert!(
        hint.contains("podtun 9.9.9 with protocol 99"),
        "the hint names the laptop's version: {hint}"
    );
    assert!(
        hint.contains("install the same version on the login host"),
        "{hint}"
    );
    assert_eq!(agent.exit(EXIT_TIMEOUT).await.code(), Some(1));
    assert!(login.sockets().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reports_an_unknown_pod_and_leaves_nothing_behind() {
    let c = cluster::start(&["manifests/00-namespace.yaml"]).await;
    let login = LoginHome::new();
    let mut agent = Agent::spawn(&login).await;
    agent
        .send(&hello(c.kubeconfig(), "pod/no-such-pod", "redis"))
        .await;
    let ev = loop {
        let ev = agent.next_event(EVENT_TIMEOUT).await;
        if ev["event"] != "progress" {
            break ev;
        }
    };
    assert_eq!(ev["event"], "error", "{ev}");
    let message = ev["message"].as_str().unwrap();
    assert!(message.contains("no-such-pod"), "names the pod: {message}");
    assert_eq!(agent.exit(EXIT_TIMEOUT).await.code(), Some(1));
    assert!(login.sockets().is_empty(), "no socket is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reports_jupyters_token_after_listening() {
    let c = cluster::start(&["manifests/00-namespace.yaml", "manifests/20-jupyter.yaml"]).await;
    let login = LoginHome::new();
    let mut agent = Agent::spawn(&login).await;
    agent
        .send(&hello(c.kubeconfig(), "jupyter", "jupyter"))
        .await;
    let listening = agent.wait_for("listening").await;
    let socket = PathBuf::from(listening["sockets"][0].as_str().unwrap());
    let token = agent.wait_for("token").await;
    let secret = token["token"].as_str().expect("a token").to_string();
    assert!(secret.len() >= 16, "a real token");

    // The token opens Jupyter's API through the socket.
    let mut conn = open_socket(&socket).await;
    let base = token["base_path"].as_str().unwrap().trim_end_matches('/');
    let request = format!(
        "GET {base}/api/status?token={secret} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(EVENT_TIMEOUT, conn.read_to_end(&mut response))
        .await
        .expect("Jupyter answered in time")
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "status through the socket: {}",
        response.lines().next().unwrap_or_default()
    );

    drop(agent.stdin.take());
    assert!(agent.exit(EXIT_TIMEOUT).await.success());
    assert!(!socket.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_follows_a_restart_and_reports_a_lost_pod_without_leaving_its_socket() {
    let c = cluster::start(REDIS).await;
    let login = LoginHome::new();
    let mut agent = Agent::spawn(&login).await;
    let mut request = hello(c.kubeconfig(), "pod/redis", "redis");
    // Also the bound on waiting for a replacement.
    request["request"]["timeout_secs"] = json!(10);
    agent.send(&request).await;
    let listening = agent.wait_for("listening").await;
    let socket = PathBuf::from(listening["sockets"][0].as_str().unwrap());

    // A restart: the agent reports it and the same socket reaches the new process.
    c.tc.restart_pod("demo", "redis").await.unwrap();
    let replaced = agent.wait_for("pod-replaced").await;
    assert_eq!(replaced["pod"], "redis");
    let mut conn = BufReader::new(open_socket(&socket).await);
    conn.get_mut().write_all(&resp(&[b"PING"])).await.unwrap();
    assert_eq!(reply(&mut conn).await, b"+PONG");
    drop(conn);

    // Deleted with nothing to replace it: an error event, exit 1, and the socket is gone.
    c.tc.delete_pod("demo", "redis").await.unwrap();
    let ev = loop {
        let ev = agent.next_event(EVENT_TIMEOUT).await;
        if ev["event"] != "progress" {
            break ev;
        }
    };
    assert_eq!(ev["event"], "error", "{ev}");
    let message = ev["message"].as_str().unwrap();
    assert!(message.contains("not replaced"), "{message}");
    assert_eq!(agent.exit(EXIT_TIMEOUT).await.code(), Some(1));
    assert!(!socket.exists(), "the socket is removed on the error path");
}
