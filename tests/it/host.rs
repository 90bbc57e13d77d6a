//! `podtun jupyter @`: a Jupyter server on the SSH host itself, on the walled-off topology
//! (`common::topology`): podtun on the laptop logs in to the real sshd of the login host
//! (through a bastion in one test), finds the login user's running server, or starts one with
//! `--start`, and forwards to it over SSH channels alone. The login user's PATH finds jupyter
//! only through `~/.profile`, so every run also proves the login environment is used.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::cluster::JUPYTER_BIN;
use crate::common::http;
use crate::common::podtun::{self, Podtun};
use crate::common::topology::{
    ensure_user, ids, wait_until, Shape, Topology, LOGIN_USER, OTHER_USER,
};

/// Bound on a server started by the test writing its `jpserver-PID.json` (a loaded machine).
const SERVER_START: Duration = Duration::from_secs(90);

/// Bound on a started server and its directory going away once podtun has.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on one HTTP request through the tunnel.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Bound on `reconnecting` and the next `ready` after the SSH session was killed (backoff and a
/// new Jupyter start included).
const RECOVERY: Duration = Duration::from_secs(120);

/// `~/.profile` of the login user puts jupyter on PATH: a plain `sh -c` would not find it.
fn login_profile(t: &Topology) {
    let profile = t.login_home.path().join(".profile");
    std::fs::write(
        &profile,
        format!("PATH={JUPYTER_BIN}:$PATH\nexport PATH\necho 'welcome to the login host'\n"),
    )
    .expect("write ~/.profile");
    let (uid, gid) = t.login_home.owner;
    std::os::unix::fs::chown(&profile, Some(uid), Some(gid)).expect("chown ~/.profile");
}

/// The login user's Jupyter runtime directory (no XDG variables in these sessions).
fn runtime_dir(t: &Topology) -> PathBuf {
    t.login_home.path().join(".local/share/jupyter/runtime")
}

/// A Jupyter server the login user started on the login host by hand (`--port=0`), stopped
/// when dropped.
struct HandStarted {
    child: std::process::Child,
    pid: u32,
    info: Value,
}

impl Drop for HandStarted {
    fn drop(&mut self) {
        podtun::sigterm(self.pid);
        let _ = self.child.wait();
    }
}

/// Starts `jupyter lab --no-browser --port=0` as the login user in the login host's namespace,
/// HOME the login home; waits for its `jpserver-PID.json`.
async fn hand_started(t: &Topology) -> HandStarted {
    let home = t.login_home.path();
    let log = std::fs::File::create(home.parent().expect("root").join("jupyter.log"))
        .expect("jupyter log");
    let child = t
        .login
        .command("setpriv")
        .args([
            &format!("--reuid={LOGIN_USER}"),
            &format!("--regid={LOGIN_USER}"),
            "--clear-groups",
            "env",
            "-i",
        ])
        .arg(format!("HOME={}", home.display()))
        .arg(format!("PATH={JUPYTER_BIN}:/usr/bin:/bin"))
        .args(["jupyter", "lab", "--no-browser", "--port=0"])
        .current_dir(&home)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start jupyter on the login host");
    // `ip netns exec`, setpriv, env and jupyter each exec the next: one process throughout.
    let pid = child.id();
    let info = runtime_dir(t).join(format!("jpserver-{pid}.json"));
    let mut server = HandStarted {
        child,
        pid,
        info: Value::Null,
    };
    wait_until(
        "the hand-started Jupyter server writes its jpserver file",
        SERVER_START,
        || {
            std::fs::read_to_string(&info)
                .ok()
                .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                .is_some()
        },
    )
    .await;
    server.info =
        serde_json::from_str(&std::fs::read_to_string(&info).expect("read")).expect("json");
    server
}

/// `podtun jupyter @ --via VIA -p 0 --no-browser EXTRA --json` on the laptop.
fn spawn(t: &Topology, via: &str, extra: &[&str]) -> Podtun {
    let mut args = vec!["jupyter", "@", "--via", via, "-p", "0", "--no-browser"];
    args.extend(extra);
    Podtun::spawn_command(t.podtun(&args))
}

/// `GET path` from the laptop's namespace, failing the test when no response comes in time.
async fn laptop_get(t: &Topology, addr: &str, path: &str) -> u16 {
    let (addr, path) = (addr.to_string(), path.to_string());
    t.on_laptop(move || async move {
        let (status, _) = tokio::time::timeout(HTTP_TIMEOUT, http::get(&addr, &path))
            .await
            .unwrap_or_else(|_| panic!("GET {path}: no response within {HTTP_TIMEOUT:?}"));
        status
    })
    .await
}

/// The `ready` event's URL answers on the laptop: the API with the token 200, without 403.
/// Returns the token.
async fn url_works(t: &Topology, ready: &Value) -> String {
    assert_eq!(ready["target"], "@", "{ready}");
    assert_eq!(ready["agent"], "none", "{ready}");
    let url = ready["url"].as_str().expect("a URL");
    let (addr, path) = http::split_url(url);
    assert_eq!(ready["local"], addr.as_str(), "{ready}");
    assert!(addr.starts_with("127.0.0.1:"), "{url}");
    let (page, token) = path.split_once("?token=").expect("a tokenized URL");
    assert_eq!(page, "/lab", "{url}");
    assert!(!token.is_empty(), "{url}");
    assert_eq!(
        laptop_get(t, &addr, &format!("/api/status?token={token}")).await,
        200
    );
    assert_eq!(laptop_get(t, &addr, "/api/status").await, 403);
    token.to_string()
}

/// The Jupyter servers podtun started on the login host: (pid, socket path).
fn started_servers(t: &Topology) -> Vec<(u32, PathBuf)> {
    t.login
        .pids()
        .into_iter()
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).to_string();
            let sock = cmd
                .split('\0')
                .find_map(|arg| arg.strip_prefix("--ServerApp.sock="))?
                .to_string();
            Some((pid.parse().ok()?, PathBuf::from(sock)))
        })
        .collect()
}

/// The started server's process and its private directory are gone within [`CLEANUP_TIMEOUT`].
async fn server_is_gone(pid: u32, dir: &Path, after: &str) {
    let dir = dir.to_path_buf();
    wait_until(
        &format!(
            "the started Jupyter ({pid}) and {} gone after {after}",
            dir.display()
        ),
        CLEANUP_TIMEOUT,
        || !Path::new(&format!("/proc/{pid}")).exists() && !dir.exists(),
    )
    .await;
}

/// The Jupyter servers podtun started on 127.0.0.1 (sshd refused stream-local forwarding).
fn started_on_tcp(t: &Topology) -> Vec<u32> {
    t.login
        .pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
                cmd.contains("jupyter-lab")
                    && cmd.contains("--ServerApp.ip=127.0.0.1 --ServerApp.port=0")
            })
        })
        .filter_map(|pid| pid.parse().ok())
        .collect()
}

fn connect_as(t: &Topology, user: &str, socket: &Path) -> String {
    crate::common::ping_unix_socket_as(t.login.command("setpriv"), user, socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_the_users_running_server_and_its_url_works_on_the_laptop() {
    let t = Topology::start(Shape::default()).await;
    login_profile(&t);
    let server = hand_started(&t).await;

    let args = [
        "jupyter",
        "@",
        "--via",
        &t.addrs.login,
        "-p",
        "0",
        "--no-browser",
        "-vv",
    ];
    let mut cmd = t.podtun(&args);
    cmd.stderr(Stdio::piped());
    let mut p = Podtun::spawn_command(cmd);
    let stderr = p.capture_stderr();
    let (_, ready) = p.ready().await;
    assert_eq!(ready["remote_port"], server.info["port"], "{ready}");
    let token = url_works(&t, &ready).await;
    assert_eq!(token, server.info["token"].as_str().expect("token"));
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
    let log = stderr.lock().expect("stderr").clone();
    assert!(
        log.contains("welcome to the login host"),
        "-v shows the login shell's output, so ~/.profile ran:\n{log}"
    );
    assert!(
        !log.contains(&token),
        "the token never reaches the log:\n{log}"
    );
    // podtun never stops a server it did not start.
    assert!(
        Path::new(&format!("/proc/{}", server.pid)).exists(),
        "the user's own server still runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_runs_jupyter_on_a_private_socket_and_stops_it_with_podtun() {
    ensure_user(OTHER_USER, &["-M", "-r", "-s", "/usr/sbin/nologin"]);
    let t = Topology::start(Shape::default()).await;
    login_profile(&t);
    let mut p = spawn(&t, &t.addrs.login, &["--start"]);
    let (_, ready) = p.ready().await;
    url_works(&t, &ready).await;

    let started = started_servers(&t);
    assert_eq!(started.len(), 1, "one server started: {started:?}");
    let (pid, socket) = started[0].clone();
    let dir = socket.parent().expect("socket dir").to_path_buf();
    let (uid, _) = ids(LOGIN_USER);
    let meta = std::fs::metadata(&dir).expect("socket dir");
    assert_eq!(meta.mode() & 0o7777, 0o700, "socket directory mode");
    assert_eq!(meta.uid(), uid, "socket directory owner");
    assert_eq!(connect_as(&t, OTHER_USER, &socket), "denied");
    // The same probe gets through as the login user: the refusal above is the modes' doing.
    let own = connect_as(&t, LOGIN_USER, &socket);
    assert!(own.starts_with("got:"), "{own}");
    let info = runtime_dir(&t).join(format!("jpserver-{pid}.json"));
    assert!(
        info.exists(),
        "Jupyter lists it as any server of the user's"
    );

    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
    server_is_gone(pid, &dir, "SIGTERM").await;
    assert!(!info.exists(), "its jpserver file is gone too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_listens_on_loopback_when_sshd_refuses_stream_local_forwarding() {
    let t = Topology::start(Shape {
        login_sshd: vec!["AllowStreamLocalForwarding no".into()],
        ..Default::default()
    })
    .await;
    login_profile(&t);
    let mut p = spawn(&t, &t.addrs.login, &["--start"]);
    let (_, ready) = p.ready().await;
    url_works(&t, &ready).await;
    assert!(started_servers(&t).is_empty(), "no server left on a socket");
    let pids = started_on_tcp(&t);
    assert_eq!(pids.len(), 1, "one server on 127.0.0.1: {pids:?}");
    assert_ne!(ready["remote_port"], 0, "{ready}");
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
    let pid = pids[0];
    wait_until(
        &format!("the started Jupyter ({pid}) gone after SIGTERM"),
        CLEANUP_TIMEOUT,
        || !Path::new(&format!("/proc/{pid}")).exists(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_bastion_by_via_list_and_by_proxyjump() {
    let t = Topology::start(Shape {
        bastion: true,
        ..Default::default()
    })
    .await;
    login_profile(&t);
    let bastion = t.addrs.bastion.clone().expect("bastion");

    let mut p = spawn(&t, &format!("{bastion},{}", t.addrs.login), &["--start"]);
    let (_, ready) = p.ready().await;
    url_works(&t, &ready).await;
    let (pid, socket) = started_servers(&t).pop().expect("a started server");
    assert!(p.terminate().await.success());
    server_is_gone(pid, socket.parent().expect("dir"), "SIGTERM").await;

    // The same route from an ssh config: `login` is an alias that jumps through `bastion`.
    let config = t.home.ssh("jump_config");
    std::fs::write(
        &config,
        format!(
            "Host login\n  HostName {login}\n  ProxyJump bastion\n\
             Host bastion\n  HostName {bastion}\n\
             Host *\n  User {LOGIN_USER}\n  IdentityFile {key}\n  IdentitiesOnly yes\n  \
             UserKnownHostsFile {known}\n",
            login = t.addrs.login,
            key = t.home.ssh("id_ed25519").display(),
            known = t.home.ssh("known_hosts").display(),
        ),
    )
    .expect("ssh config");
    let config = config.display().to_string();
    let mut p = spawn(&t, "login", &["--start", "-F", &config]);
    let (_, ready) = p.ready().await;
    url_works(&t, &ready).await;
    assert!(p.terminate().await.success());
    let log = t.bastion_sshd.as_ref().expect("bastion sshd").log();
    assert_eq!(
        log.matches("Accepted publickey for podtun-login").count(),
        2,
        "both runs went through the bastion:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_and_no_start_is_an_error_with_a_hint() {
    let t = Topology::start(Shape::default()).await;
    let args = [
        "jupyter",
        "@",
        "--via",
        &t.addrs.login,
        "-p",
        "0",
        "--no-browser",
    ];
    // No jupyter on the login PATH at all.
    let out = podtun::finish(t.podtun(&args)).await;
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(out.stdout.is_empty(), "stdout: {}", out.stdout);
    assert!(
        out.stderr.contains("error: no running Jupyter server"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
    assert!(out.stderr.contains("not on the PATH"), "{}", out.stderr);
    assert!(out.stderr.contains("--start"), "{}", out.stderr);

    // jupyter on PATH, no server running.
    login_profile(&t);
    let out = podtun::finish(t.podtun(&args)).await;
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr.contains("error: no running Jupyter server"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint: pass --start"), "{}", out.stderr);
    assert!(
        started_servers(&t).is_empty(),
        "nothing started without --start"
    );
}

#[tokio::test]
async fn host_target_without_via_is_a_usage_error() {
    let home = tempfile::tempdir().unwrap();
    let out = podtun::run_raw(home.path(), &["jupyter", "@"]).await;
    assert_eq!(out.status.code(), Some(2), "stderr:\n{}", out.stderr);
    assert!(out.stderr.contains("error:"), "{}", out.stderr);
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
    assert!(out.stderr.contains("--via HOST"), "{}", out.stderr);
    let out = podtun::run_raw(home.path(), &["jupyter", "mypod", "--start"]).await;
    assert_eq!(out.status.code(), Some(2), "stderr:\n{}", out.stderr);
    assert!(out.stderr.contains("`@`"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_keeps_the_port_and_prints_the_new_url() {
    let t = Topology::start(Shape::default()).await;
    login_profile(&t);
    let mut p = spawn(&t, &t.addrs.login, &["--start"]);
    let (local, ready) = p.ready().await;
    let old_token = url_works(&t, &ready).await;
    let (old_pid, old_socket) = started_servers(&t).pop().expect("a started server");

    // The laptop's SSH session dies on the login host (sshd's listener stays).
    t.kill_login_ssh_sessions();

    let ev = p.wait_for("reconnecting", RECOVERY).await;
    assert!(ev["reason"].is_string(), "{ev}");
    let ready = p.wait_for("ready", RECOVERY).await;
    assert_eq!(ready["local"], local.as_str(), "the same local port");
    let token = url_works(&t, &ready).await;
    assert_ne!(token, old_token, "a new server, a new token, a new URL");
    server_is_gone(
        old_pid,
        old_socket.parent().expect("dir"),
        "the session died",
    )
    .await;
    assert!(p.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_servers_without_a_terminal_are_listed_and_port_picks_one() {
    let t = Topology::start(Shape::default()).await;
    login_profile(&t);
    let older = hand_started(&t).await;
    let newer = hand_started(&t).await;
    let port = |s: &HandStarted| s.info["port"].as_u64().expect("port").to_string();

    let args = [
        "jupyter",
        "@",
        "--via",
        &t.addrs.login,
        "-p",
        "0",
        "--no-browser",
    ];
    let out = podtun::finish(t.podtun(&args)).await;
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(
        out.stderr
            .contains("error: 2 Jupyter servers of yours run on"),
        "{}",
        out.stderr
    );
    let (newer_at, older_at) = (
        out.stderr.find(&format!("--port {}", port(&newer))),
        out.stderr.find(&format!("--port {}", port(&older))),
    );
    assert!(
        matches!((newer_at, older_at), (Some(n), Some(o)) if n < o),
        "each listed with the --port that picks it, newest first:\n{}",
        out.stderr
    );

    let mut p = spawn(&t, &t.addrs.login, &["--port", &port(&older)]);
    let (_, ready) = p.ready().await;
    assert_eq!(ready["remote_port"], older.info["port"], "{ready}");
    let token = url_works(&t, &ready).await;
    assert_eq!(token, older.info["token"].as_str().expect("token"));
    assert!(p.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_with_env_and_dir_and_the_server_goes_when_podtun_is_killed() {
    let t = Topology::start(Shape::default()).await;
    // No ~/.profile: jupyter is found through --env alone.
    let work = t.login_home.path().join("work");
    std::fs::create_dir(&work).expect("mkdir ~/work");
    let (uid, gid) = t.login_home.owner;
    std::os::unix::fs::chown(&work, Some(uid), Some(gid)).expect("chown ~/work");
    let venv = JUPYTER_BIN.trim_end_matches("/bin");
    let mut p = spawn(
        &t,
        &t.addrs.login,
        &["--start", "--env", venv, "--dir", "~/work"],
    );
    let (_, ready) = p.ready().await;
    url_works(&t, &ready).await;
    let (pid, socket) = started_servers(&t).pop().expect("a started server");
    let info = runtime_dir(&t).join(format!("jpserver-{pid}.json"));
    let info: Value = serde_json::from_str(&std::fs::read_to_string(&info).expect("jpserver file"))
        .expect("json");
    assert_eq!(info["root_dir"], work.display().to_string(), "{info}");

    // The laptop dies: nothing tells the host but the closed connection.
    p.child.start_kill().expect("kill -9 podtun");
    p.child.wait().await.expect("wait for podtun");
    server_is_gone(pid, socket.parent().expect("dir"), "kill -9 of podtun").await;
}

/// On a terminal (a pty from `script`), several servers are a numbered choice, newest first,
/// and the forward goes to the one typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_several_servers_are_a_numbered_choice() {
    let t = Topology::start(Shape::default()).await;
    login_profile(&t);
    let older = hand_started(&t).await;
    let _newer = hand_started(&t).await;
    let older_port = older.info["port"].as_u64().expect("port");

    let line = format!(
        "exec {bin} jupyter @ --via {login} -p 0 --no-browser",
        bin = podtun::bin(),
        login = t.addrs.login,
    );
    let mut child = tokio::process::Command::new("ip")
        .args(["netns", "exec", t.laptop.name()])
        .args(["script", "-qefc", &line, "/dev/null"])
        .env("HOME", t.home.path())
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("PODTUN_VIA")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("podtun on a pty");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = child.stdout.take().expect("stdout");
    let (mut seen, mut buf, mut answered) = (String::new(), [0u8; 4096], false);
    let deadline = tokio::time::Instant::now() + podtun::READY_TIMEOUT;
    let forwarding = format!("(port {older_port}) (Ctrl-C to stop)");
    let token = older.info["token"].as_str().expect("token");
    let url = format!("lab?token={token}");
    // The URL comes once the server answers through the chain, after the forwarding line.
    while !(seen.contains(&forwarding) && seen.contains(&url)) {
        let n = tokio::time::timeout_at(deadline, out.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no choice and no forward in time:\n{seen}"))
            .expect("read the pty");
        assert!(n > 0, "the terminal closed:\n{seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if !answered && seen.contains("Which one?") {
            assert!(
                seen.contains(&format!("2) port {older_port},")),
                "the older server listed second:\n{seen}"
            );
            stdin.write_all(b"2\n").await.expect("answer");
            answered = true;
        }
    }
    assert!(answered, "a choice was offered:\n{seen}");
}

/// `-d`: the shell comes back with the URL; `ls` lists the tunnel; `stop` ends it and the
/// server it started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_background_stop_ends_the_started_server() {
    let t = Topology::start(Shape::default()).await;
    login_profile(&t);
    let start = ["jupyter", "@", "--via", &t.addrs.login, "--start", "-d"];
    let done = podtun::finish(t.podtun(&start)).await;
    assert!(done.status.success(), "{}", done.stderr);
    let url = done.stdout.trim().to_string();
    let (addr, path) = http::split_url(&url);
    assert!(path.starts_with("/lab?token="), "{url}");
    assert_eq!(
        laptop_get(&t, &addr, &path.replace("lab?", "api/status?")).await,
        200
    );

    let listed = podtun::finish(t.podtun(&["ls", "--json"])).await;
    let entry: Value = serde_json::from_str(listed.stdout.trim()).expect("one JSON line");
    assert_eq!(entry["target"], "@", "{entry}");
    assert_eq!(entry["state"], "ready", "{entry}");
    let (pid, socket) = started_servers(&t).pop().expect("a started server");

    let stopped = podtun::finish(t.podtun(&["stop", "--all"])).await;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    server_is_gone(pid, socket.parent().expect("dir"), "podtun stop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_noticed_and_its_successor_served_on_the_same_port() {
    let t = Topology::start(Shape::default()).await;
    login_profile(&t);
    let first = hand_started(&t).await;
    let mut p = spawn(&t, &t.addrs.login, &[]);
    let (local, ready) = p.ready().await;
    let old_token = url_works(&t, &ready).await;

    // The user stops their server: podtun says so without waiting for a connection to fail.
    drop(first);
    let ev = p.wait_for("reconnecting", RECOVERY).await;
    assert!(
        ev["reason"]
            .as_str()
            .is_some_and(|r| r.contains("your Jupyter server on") && r.contains("stopped")),
        "{ev}"
    );

    // … and serves the next one the user starts, on the same local port, with its token.
    let second = hand_started(&t).await;
    let again = p.wait_for("ready", RECOVERY).await;
    assert_eq!(again["local"], local.as_str(), "the same local port");
    assert_eq!(again["remote_port"], second.info["port"], "{again}");
    let token = url_works(&t, &again).await;
    assert_eq!(token, second.info["token"].as_str().expect("token"));
    assert_ne!(token, old_token);

    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
    wait_until(
        "no server watcher left on the login host",
        CLEANUP_TIMEOUT,
        || {
            !t.login_commands()
                .iter()
                .any(|c| c.contains("podtun-jupyter:") && c.contains("kill -0"))
        },
    )
    .await;
    assert!(
        Path::new(&format!("/proc/{}", second.pid)).exists(),
        "podtun never stops a server it did not start"
    );
}

#[tokio::test]
async fn a_jupyter_that_cannot_run_shows_what_the_shell_said() {
    let t = Topology::start(Shape::default()).await;
    // A virtualenv whose interpreter is not executable for its user: the shell refuses to run
    // its `jupyter` script.
    let bin = t.login_home.path().join("brokenenv/bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let python = bin.join("python3");
    std::fs::write(&python, "not a program\n").expect("python3");
    let jupyter = bin.join("jupyter");
    std::fs::write(&jupyter, format!("#!{}\nimport sys\n", python.display())).expect("jupyter");
    std::fs::set_permissions(&jupyter, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let profile = t.login_home.path().join(".profile");
    std::fs::write(
        &profile,
        format!("PATH={}:$PATH\nexport PATH\n", bin.display()),
    )
    .expect("write ~/.profile");
    let (uid, gid) = t.login_home.owner;
    for path in [
        bin.parent().expect("env"),
        &bin,
        &python,
        &jupyter,
        &profile,
    ] {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    }
    let args = [
        "jupyter",
        "@",
        "--via",
        &t.addrs.login,
        "--start",
        "-p",
        "0",
        "--no-browser",
    ];
    let out = podtun::finish(t.podtun(&args)).await;
    let err = &out.stderr;
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Jupyter did not start on `") && err.contains("(exit status 126)"),
        "{err}"
    );
    // The shell's own words (dash: `jupyter: Permission denied`; bash: `bad interpreter`).
    assert!(
        err.contains("jupyter: Permission denied") || err.contains("bad interpreter"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
}
