//! Via mode end to end on the walled-off topology (`common::topology`): podtun on the laptop
//! logs in to a real sshd on the login host (through a bastion in some tests), starts its agent
//! there, and forwards to real redis and Jupyter pods that only the login host's API server can
//! reach. The first test proves that wall before the others go through it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::net::TcpStream;

use crate::common::http;
use crate::common::pattern;
use crate::common::podtun::{self, Podtun};
use crate::common::redis::Redis;
use crate::common::sshd::run;
use crate::common::topology::{
    ensure_user, identity, ids, wait_until, Shape, Topology, LOGIN_USER, OTHER_USER,
};

pub(crate) const REDIS: &[&str] = &["manifests/00-namespace.yaml", "manifests/30-redis.yaml"];
pub(crate) const JUPYTER: &[&str] = &["manifests/00-namespace.yaml", "manifests/20-jupyter.yaml"];

/// Bound on a connection attempt that must fail (an unreachable address may just stay silent).
const CONNECT_PROBE: Duration = Duration::from_secs(2);

/// Bound on the agent and its socket going away once the laptop has.
pub(crate) const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound on one client's work through the tunnel (100 MiB each way on a debug build included).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

/// Bound on one HTTP request through the tunnel.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn shape(manifests: &[&'static str]) -> Shape {
    Shape {
        manifests: manifests.to_vec(),
        ..Default::default()
    }
}

/// `podtun PRESET TARGET -n demo -p 0 --via VIA --kubeconfig (login's) [--remote-bin BIN]`.
pub(crate) fn args(t: &Topology, preset: &str, via: &str, remote_bin: bool) -> Vec<String> {
    let mut args: Vec<String> = [preset, preset, "-n", "demo", "-p", "0", "--via", via]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--kubeconfig".to_string(), t.kubeconfig_arg()]);
    if remote_bin {
        args.extend(["--remote-bin".to_string(), podtun::bin().to_string()]);
    }
    args
}

pub(crate) fn spawn(t: &Topology, args: &[String]) -> Podtun {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Podtun::spawn_command(t.podtun(&args))
}

/// Starts `podtun redis` through `via` with the built binary as the agent; waits for ready.
async fn redis_via(t: &Topology, via: &str) -> (Podtun, String) {
    let mut p = spawn(t, &args(t, "redis", via, true));
    let (local, ready) = p.ready().await;
    assert_eq!(ready["pod"], "redis", "{ready}");
    assert_eq!(ready["remote_port"], 6379, "{ready}");
    assert!(local.starts_with("127.0.0.1:"), "{local}");
    (p, local)
}

/// PING from the laptop's namespace.
pub(crate) async fn ping(t: &Topology, local: &str) {
    let local = local.to_string();
    let pong = t
        .on_laptop(move || async move {
            let mut r = Redis::connect(&local).await?;
            r.call(&[b"PING"]).await
        })
        .await
        .expect("PING through the tunnel");
    assert_eq!(pong.as_deref(), Some(&b"+PONG"[..]));
}

/// SET then GET of a `len`-byte value from the laptop's namespace, compared byte for byte.
pub(crate) async fn round_trip(t: &Topology, local: &str, len: usize) {
    let local = local.to_string();
    let (set, same, got_len) = t
        .on_laptop(move || async move {
            tokio::time::timeout(CLIENT_TIMEOUT, async {
                let value = pattern(len);
                let mut r = Redis::connect(&local).await.expect("connect");
                let set = r
                    .call(&[b"SET", b"big", &value])
                    .await
                    .expect("SET")
                    .expect("SET reply");
                let back = r
                    .call(&[b"GET", b"big"])
                    .await
                    .expect("GET")
                    .unwrap_or_default();
                (set, back == value, back.len())
            })
            .await
            .expect("SET/GET did not finish in time")
        })
        .await;
    assert_eq!(set, b"+OK");
    assert!(
        same,
        "a {len}-byte value came back different ({got_len} bytes)"
    );
}

/// `GET path` on `addr`, failing the test when no response comes in time.
pub(crate) async fn get(addr: &str, path: &str) -> (u16, String) {
    tokio::time::timeout(HTTP_TIMEOUT, http::get(addr, path))
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no response within {HTTP_TIMEOUT:?}"))
}

/// Connects to `addr` from the current namespace: `Ok` or why not (a silent drop counts as a
/// failure after [`CONNECT_PROBE`]).
async fn try_connect(addr: &str) -> Result<(), String> {
    match tokio::time::timeout(CONNECT_PROBE, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer".into()),
    }
}

/// The agents on the login host, and their sockets, are gone within [`CLEANUP_TIMEOUT`].
async fn login_host_is_clean(t: &Topology, after: &str) {
    wait_until(
        &format!("agent processes and sockets gone from the login host after {after}"),
        CLEANUP_TIMEOUT,
        || t.login_podtuns().is_empty() && t.login_home.sockets().is_empty(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn laptop_reaches_the_login_sshd_and_nothing_behind_it() {
    let t = Topology::start(shape(REDIS)).await;
    t.cluster.ready("demo", "redis").await;
    let pod_ip = t
        .cluster
        .tc
        .pod("demo", "redis")
        .and_then(|p| p.status?.pod_ip)
        .expect("the pod has an IP");

    for ns in [&t.login, &t.cluster_ns] {
        let forwarding = run(ns.command("sysctl").args(["-n", "net.ipv4.ip_forward"]));
        assert_eq!(forwarding.trim(), "0", "{} forwards packets", ns.name());
    }

    let sshd = t.sshd.addr();
    let api = t.api.clone();
    let pod_addr = format!("{pod_ip}:6379");
    let (to_sshd, to_api, to_pod, to_loopback) = t
        .on_laptop(move || async move {
            (
                try_connect(&sshd).await,
                try_connect(&api).await,
                try_connect(&pod_addr).await,
                try_connect("127.0.0.1:6379").await,
            )
        })
        .await;
    assert_eq!(to_sshd, Ok(()), "the laptop reaches the login host's sshd");
    assert!(
        to_api.is_err(),
        "the laptop reached the API server {}",
        t.api
    );
    assert!(to_pod.is_err(), "the laptop reached the pod at {pod_ip}");
    assert!(to_loopback.is_err(), "a pod port answers on the laptop");

    // Even a route through the login host leads nowhere: its kernel forwards nothing.
    let subnet = format!("{}.0/24", t.addrs.api_ip.rsplit_once('.').expect("ip").0);
    run(t
        .laptop
        .command("ip")
        .args(["route", "add", &subnet, "via", &t.addrs.login]));
    let api = t.api.clone();
    let routed = t
        .on_laptop(move || async move { try_connect(&api).await })
        .await;
    assert!(
        routed.is_err(),
        "the login host forwarded to the API server"
    );

    // The login host talks to the API server; the pod is reachable only through it.
    let kubeconfig = t.kubeconfig.clone();
    let pod_addr = format!("{pod_ip}:6379");
    let (pods, login_to_pod) = t
        .on_login(move || async move {
            let kc = kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig");
            let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .expect("kube config");
            let client = kube::Client::try_from(config).expect("kube client");
            let pods: kube::Api<Pod> = kube::Api::namespaced(client, "demo");
            let names: Vec<String> = pods
                .list(&Default::default())
                .await
                .expect("list pods from the login host")
                .items
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect();
            (names, try_connect(&pod_addr).await)
        })
        .await;
    assert!(pods.contains(&"redis".to_string()), "{pods:?}");
    assert!(
        login_to_pod.is_err(),
        "the login host reached the pod directly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyter_through_the_login_host() {
    let t = Topology::start(shape(JUPYTER)).await;
    let mut p = spawn(&t, &args(&t, "jupyter", &t.addrs.login, true));
    let (local, ready) = p.ready().await;
    let url = ready["url"].as_str().expect("a url").to_string();
    let (addr, path) = http::split_url(&url);
    assert_eq!(addr, local);
    assert!(local.starts_with("127.0.0.1:"), "{local}");
    assert!(path.starts_with("/lab?token="), "tokenized lab URL: {path}");
    let token = path.trim_start_matches("/lab?token=").to_string();

    let (lab, status, kernels, anonymous) = t
        .on_laptop(move || async move {
            (
                get(&addr, &path).await.0,
                get(&addr, &format!("/api/status?token={token}")).await.0,
                get(&addr, &format!("/api/kernels?token={token}")).await,
                get(&addr, "/api/kernels").await.0,
            )
        })
        .await;
    assert_eq!(lab, 200, "the printed URL");
    assert_eq!(status, 200, "/api/status");
    assert_eq!(kernels.0, 200, "/api/kernels: {}", kernels.1);
    let list: serde_json::Value = serde_json::from_str(&kernels.1).expect("kernels JSON");
    assert!(list.is_array(), "kernel list: {}", kernels.1);
    assert_eq!(anonymous, 403, "no token, no access");
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_through_the_login_host_100_mib_and_50_connections() {
    let t = Topology::start(shape(REDIS)).await;
    let (p, local) = redis_via(&t, &t.addrs.login).await;
    ping(&t, &local).await;
    round_trip(&t, &local, 100 << 20).await;

    let addr = local.clone();
    let ok = t
        .on_laptop(move || async move { crate::common::redis::concurrent_set_get(&addr, 50).await })
        .await;
    assert_eq!(
        ok, 50,
        "all 50 concurrent connections round-trip their value"
    );
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_bastion_by_via_list_and_by_proxyjump() {
    let t = Topology::start(Shape {
        bastion: true,
        ..shape(REDIS)
    })
    .await;
    let bastion = t.addrs.bastion.clone().expect("bastion");
    let login = t.sshd.addr();
    let direct = t
        .on_laptop(move || async move { try_connect(&login).await })
        .await;
    assert!(
        direct.is_err(),
        "the laptop reached the login host without the bastion"
    );

    let (p, local) = redis_via(&t, &format!("{bastion},{}", t.addrs.login)).await;
    ping(&t, &local).await;
    assert!(p.terminate().await.success());

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
    let mut args = args(&t, "redis", "login", true);
    args.extend(["-F".to_string(), config.display().to_string()]);
    let mut p = spawn(&t, &args);
    let (local, _) = p.ready().await;
    ping(&t, &local).await;
    assert!(p.terminate().await.success());
    let log = t.bastion_sshd.as_ref().expect("bastion sshd").log();
    assert_eq!(
        log.matches("Accepted publickey for podtun-login").count(),
        2,
        "both runs went through the bastion:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_fallback_when_the_server_refuses_stream_local_forwarding() {
    let t = Topology::start(Shape {
        login_sshd: vec!["AllowStreamLocalForwarding no".into()],
        ..shape(REDIS)
    })
    .await;
    let mut args = args(&t, "redis", &t.addrs.login, true);
    args.push("-v".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = t.podtun(&args);
    cmd.stderr(Stdio::piped());
    let mut p = Podtun::spawn_command(cmd);
    let stderr = p.capture_stderr();
    let (local, _) = p.ready().await;
    ping(&t, &local).await;
    round_trip(&t, &local, 10 << 20).await;
    // More connections open at once than sshd's MaxSessions (10 by default) allows sessions:
    // they all answer, and they share one `podtun agent pipe` on the login host.
    let addr = local.clone();
    let login = t.login.name().to_string();
    let (pongs, pipes) = t
        .on_laptop(move || async move {
            let mut conns = Vec::new();
            for _ in 0..30 {
                conns.push(Redis::connect(&addr).await.expect("connect"));
            }
            let mut pongs = Vec::new();
            for conn in &mut conns {
                pongs.push(conn.call(&[b"PING"]).await.expect("PING"));
            }
            // Counted while all 30 are open.
            (pongs, agent_pipes(&login))
        })
        .await;
    assert!(
        pongs.iter().all(|p| p.as_deref() == Some(&b"+PONG"[..])),
        "{pongs:?}"
    );
    assert_eq!(pipes.len(), 1, "30 open connections, one pipe: {pipes:?}");
    wait_until(
        "podtun -v says it uses the exec fallback",
        Duration::from_secs(5),
        || stderr.lock().expect("stderr").contains("exec fallback"),
    )
    .await;
    assert!(p.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_of_one_connection_at_a_time_answers_every_request() {
    // podtun opens its SSH channel to the agent before any connection arrives; were the agent
    // to open a pod side for it, this server would sit on an idle connection and answer nobody.
    let t = Topology::start(shape(&[
        "tests/fixtures/pods/00-namespace.yaml",
        "tests/fixtures/pods/one-at-a-time.yaml",
    ]))
    .await;
    let args = ["forward", "pod/one-at-a-time", "-n", "fixtures", "-p", "0"];
    let mut p = Podtun::spawn_command(t.podtun_via(&args));
    let (local, ready) = p.ready().await;
    assert_eq!(ready["remote_port"], 8000, "{ready}");
    // Bursts of requests at once, as a browser makes them.
    for round in 0..5 {
        let addr = local.clone();
        let answers = t
            .on_laptop(move || async move {
                futures::future::join_all((0..4).map(|_| get(&addr, "/"))).await
            })
            .await;
        for (status, body) in answers {
            assert_eq!(status, 200, "round {round}: {body}");
            assert!(body.ends_with("ok\n"), "round {round}: {body}");
        }
    }
    assert!(p.terminate().await.success());
}

/// The `podtun agent pipe` processes in network namespace `ns` (the login host).
fn agent_pipes(ns: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|raw| String::from_utf8_lossy(&raw).contains("agent\0pipe"))
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_itself_once_then_reuses_it_and_no_install_refuses() {
    let t = Topology::start(shape(REDIS)).await;
    let installed = t.login_home.installed_binary();

    // A fresh home, --no-install and podtun's agent asked for: nothing to run, nothing
    // uploaded.
    let mut no_install = args(&t, "redis", &t.addrs.login, false);
    no_install.extend(["--no-install".into(), "--agent".into(), "podtun".into()]);
    let no_install: Vec<&str> = no_install.iter().map(String::as_str).collect();
    let out = podtun::finish(t.podtun(&no_install)).await;
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(out.stderr.contains("error:"), "{}", out.stderr);
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
    assert!(
        !installed.exists(),
        "--no-install uploaded {}",
        installed.display()
    );

    // The same in auto mode: kubectl on the login host serves, and still nothing is uploaded.
    let mut auto = args(&t, "redis", &t.addrs.login, false);
    auto.push("--no-install".into());
    let mut p = spawn(&t, &auto);
    let (local, ready) = p.ready().await;
    assert_eq!(ready["agent"], "kubectl", "{ready}");
    ping(&t, &local).await;
    assert!(p.terminate().await.success());
    assert!(!installed.exists(), "auto with --no-install uploaded");

    // Without --remote-bin: uploaded once, private to the login user.
    let mut p = spawn(&t, &args(&t, "redis", &t.addrs.login, false));
    let (local, ready) = p.ready().await;
    assert_eq!(ready["agent"], "podtun", "{ready}");
    ping(&t, &local).await;
    assert!(p.terminate().await.success());
    let meta = std::fs::metadata(&installed)
        .unwrap_or_else(|e| panic!("{} after the upload: {e}", installed.display()));
    assert_eq!(meta.mode() & 0o7777, 0o700, "mode of the uploaded binary");
    assert_eq!(
        meta.uid(),
        t.login_home.owner.0,
        "owner of the uploaded binary"
    );
    assert_eq!(
        std::fs::read(&installed).expect("uploaded binary"),
        std::fs::read(podtun::bin()).expect("local binary"),
        "the upload is this very binary"
    );
    let first = identity(&installed);

    // A second run finds it and leaves it alone.
    let mut p = spawn(&t, &args(&t, "redis", &t.addrs.login, false));
    let (local, _) = p.ready().await;
    ping(&t, &local).await;
    assert!(p.terminate().await.success());
    assert_eq!(
        identity(&installed),
        first,
        "the second run rewrote the binary"
    );
}

/// Connects to `socket` on the login host as `user` and sends a PING: `denied` or `got:REPLY`.
fn connect_as(t: &Topology, user: &str, socket: &std::path::Path) -> String {
    crate::common::ping_unix_socket_as(t.login.command("setpriv"), user, socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_login_host_user_cannot_reach_the_agent() {
    ensure_user(OTHER_USER, &["-M", "-r", "-s", "/usr/sbin/nologin"]);
    let t = Topology::start(shape(REDIS)).await;
    // ~/.cache as many homes have it, open to others: only podtun's own modes may keep them out.
    let (uid, gid) = ids(LOGIN_USER);
    for dir in [".cache", ".cache/podtun"] {
        let dir = t.login_home.path().join(dir);
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown");
    }

    let (p, local) = redis_via(&t, &t.addrs.login).await;
    ping(&t, &local).await;
    let sockets = t.login_home.sockets();
    assert_eq!(sockets.len(), 1, "one socket for one port: {sockets:?}");
    let socket = &sockets[0];
    let dir = std::fs::metadata(t.login_home.socket_dir()).expect("socket dir");
    assert_eq!(dir.mode() & 0o7777, 0o700, "socket directory mode");
    assert_eq!(dir.uid(), uid, "socket directory owner");
    let sock = std::fs::symlink_metadata(socket).expect("socket");
    assert_eq!(sock.mode() & 0o777, 0o600, "socket mode");
    assert_eq!(sock.uid(), uid, "socket owner");

    assert_eq!(connect_as(&t, OTHER_USER, socket), "denied");
    // The same probe gets through as the login user: the refusal above is the modes' doing.
    assert_eq!(connect_as(&t, LOGIN_USER, socket), "got:+PONG");
    ping(&t, &local).await;
    assert!(p.terminate().await.success());
    login_host_is_clean(&t, "SIGTERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_outlives_the_laptop_on_the_login_host() {
    let t = Topology::start(shape(REDIS)).await;

    let (p, local) = redis_via(&t, &t.addrs.login).await;
    ping(&t, &local).await;
    assert!(
        !t.login_podtuns().is_empty(),
        "an agent runs on the login host"
    );
    assert!(!t.login_home.sockets().is_empty(), "the agent has a socket");
    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
    login_host_is_clean(&t, "SIGTERM").await;

    let (mut p, local) = redis_via(&t, &t.addrs.login).await;
    ping(&t, &local).await;
    assert!(
        !t.login_podtuns().is_empty(),
        "an agent runs on the login host"
    );
    p.child.start_kill().expect("kill -9 podtun");
    p.child.wait().await.expect("wait for podtun");
    login_host_is_clean(&t, "kill -9").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_login_host_key_is_refused_without_a_terminal() {
    let t = Topology::start(Shape {
        unknown_login_key: true,
        ..shape(REDIS)
    })
    .await;
    let args = args(&t, "redis", &t.addrs.login, true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = podtun::finish(t.podtun(&args)).await;
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    assert!(out.stdout.is_empty(), "stdout: {}", out.stdout);
    let error = format!(
        "error: could not connect to {}:22 (login host)\n  Caused by: host key for `{}:22` is not known",
        t.addrs.login, t.addrs.login
    );
    assert!(out.stderr.contains(&error), "{}", out.stderr);
    assert!(
        out.stderr.contains("\n  hint: connect once with ssh"),
        "{}",
        out.stderr
    );
    assert_eq!(t.home.known_hosts(), "", "nothing learned");
    // It never logged in: no agent, no files, no session.
    assert!(t.login_podtuns().is_empty());
    assert!(!t.login_home.path().join(".cache").exists());
    assert!(
        !t.sshd.log().contains("Accepted"),
        "podtun logged in:\n{}",
        t.sshd.log()
    );
}

/// DSMLP-like: KUBECONFIG comes only from the login host's `~/.profile`, which also prints a
/// banner on stdout. podtun finds (uploads) itself and the agent finds the cluster, with no
/// `--kubeconfig` and no `~/.kube/config`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_from_the_login_profile_and_a_banner() {
    let t = Topology::start(shape(REDIS)).await;
    let elsewhere = t.login_home.path().join("cluster.yaml");
    std::fs::rename(&t.kubeconfig, &elsewhere).expect("move the kubeconfig");
    std::fs::write(
        t.login_home.path().join(".profile"),
        "echo 'Welcome to the login host: be nice to others'\nexport KUBECONFIG=\"$HOME/cluster.yaml\"\n",
    )
    .expect("write ~/.profile");

    let via = [
        "redis",
        "redis",
        "-n",
        "demo",
        "-p",
        "0",
        "--via",
        &t.addrs.login,
    ];
    let mut p = Podtun::spawn_command(t.podtun(&via));
    let (local, ready) = p.ready().await;
    assert_eq!(ready["pod"], "redis", "{ready}");
    ping(&t, &local).await;
    assert!(p.terminate().await.success());
    assert!(
        t.login_home.installed_binary().exists(),
        "the upload went through the banner"
    );
    login_host_is_clean(&t, "SIGTERM").await;
}

/// The `kubectl proxy` processes on the login host, with their socket paths.
pub(crate) fn login_kubectl_proxies(t: &Topology) -> Vec<String> {
    t.login
        .pids()
        .iter()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmd| cmd.contains("proxy --unix-socket="))
        .filter_map(|cmd| {
            let rest = cmd.split("--unix-socket=").nth(1)?;
            Some(rest.split(' ').next()?.to_string())
        })
        // The login-side script's own command line names `"$s"`; kubectl's dispatcher and the
        // kubectl it runs both name the path.
        .filter(|path| path.starts_with('/'))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_mode_needs_nothing_but_kubectl_on_the_login_host() {
    let t = Topology::start(shape(REDIS)).await;
    let mut args = args(&t, "redis", &t.addrs.login, false);
    args.extend(["--agent".to_string(), "kubectl".to_string()]);
    let mut p = spawn(&t, &args);
    let (local, ready) = p.ready().await;
    assert_eq!(ready["agent"], "kubectl", "{ready}");
    assert_eq!(ready["pod"], "redis", "{ready}");
    ping(&t, &local).await;
    round_trip(&t, &local, 10 << 20).await;
    assert!(t.login_podtuns().is_empty(), "no podtun on the login host");
    assert!(
        !t.login_home.installed_binary().exists(),
        "nothing uploaded"
    );

    let sockets = login_kubectl_proxies(&t);
    assert_eq!(sockets.len(), 1, "one kubectl proxy: {sockets:?}");
    let socket = std::path::PathBuf::from(&sockets[0]);
    let meta = std::fs::symlink_metadata(&socket).expect("the proxy's socket");
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");
    assert_eq!(meta.uid(), ids(LOGIN_USER).0, "owned by the login user");
    let dir = socket.parent().expect("dir").to_path_buf();
    let dir_mode = std::fs::metadata(&dir).expect("dir").permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700, "directory mode");

    assert!(p.terminate().await.success(), "exit 0 after SIGTERM");
    wait_until(
        "kubectl proxy and its socket gone after SIGTERM",
        CLEANUP_TIMEOUT,
        || login_kubectl_proxies(&t).is_empty() && !dir.exists(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_mode_leaves_nothing_after_kill_9() {
    let t = Topology::start(shape(REDIS)).await;
    let mut args = args(&t, "redis", &t.addrs.login, false);
    args.extend(["--agent".to_string(), "kubectl".to_string()]);
    let mut p = spawn(&t, &args);
    let (local, _) = p.ready().await;
    ping(&t, &local).await;
    let sockets = login_kubectl_proxies(&t);
    assert_eq!(sockets.len(), 1, "one kubectl proxy: {sockets:?}");
    let dir = std::path::PathBuf::from(&sockets[0])
        .parent()
        .expect("dir")
        .to_path_buf();
    p.child.start_kill().expect("kill -9 podtun");
    p.child.wait().await.ok();
    wait_until(
        "kubectl proxy and its socket gone after kill -9",
        CLEANUP_TIMEOUT,
        || login_kubectl_proxies(&t).is_empty() && !dir.exists(),
    )
    .await;
}
