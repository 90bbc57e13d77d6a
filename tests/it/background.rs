//! Background tunnels and saved settings on the walled-off topology, as a user drives them:
//! `-d` returns with a URL that answers, `ls` shows it, the same command again prints the same
//! URL, two starts at once give one tunnel, `stop` leaves nothing on the laptop or the login
//! host, a killed tunnel is reported gone, the local port is remembered, and the config file's
//! profiles and defaults give way to flags and the environment.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::common::http;
use crate::common::podtun::{self, Finished};
use crate::common::redis::Redis;
use crate::common::topology::{wait_until, Shape, Topology};

const REDIS: &[&str] = &["manifests/00-namespace.yaml", "manifests/30-redis.yaml"];
const JUPYTER: &[&str] = &["manifests/00-namespace.yaml", "manifests/20-jupyter.yaml"];

/// Bound on a start with `-d` (the pod starting and Jupyter's token included) or a stop.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// Bound on the agent, its sockets and the laptop's processes going away after a stop.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(15);

async fn topology(manifests: &[&'static str]) -> Topology {
    Topology::start(Shape {
        manifests: manifests.to_vec(),
        ..Default::default()
    })
    .await
}

/// Runs a podtun command to completion (bounded) and returns what it printed.
async fn finish(cmd: tokio::process::Command) -> Finished {
    podtun::finish_within(cmd, RUN_TIMEOUT).await
}

/// Runs `podtun ARGS` on the laptop; asserts exit 0 and returns stdout.
async fn ok(t: &Topology, args: &[&str]) -> String {
    let done = finish(t.podtun(args)).await;
    assert!(
        done.status.success(),
        "podtun {args:?}: {}\nstdout: {}\nstderr: {}",
        done.status,
        done.stdout,
        done.stderr
    );
    done.stdout
}

/// `podtun ls --json`.
async fn ls(t: &Topology) -> Vec<Value> {
    ok(t, &["ls", "--json"])
        .await
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l}: {e}")))
        .collect()
}

/// The laptop's podtun processes.
fn laptop_podtuns(t: &Topology) -> Vec<String> {
    t.laptop
        .pids()
        .iter()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmd| cmd.contains("podtun"))
        .collect()
}

async fn ping(t: &Topology, addr: &str) -> bool {
    let addr = addr.to_string();
    t.on_laptop(move || async move {
        let Ok(mut r) = Redis::connect(&addr).await else {
            return false;
        };
        r.call(&[b"PING"]).await.ok().flatten().as_deref() == Some(&b"+PONG"[..])
    })
    .await
}

/// Waits until nothing of the tunnel is left: no podtun on the laptop, no agent or socket on
/// the login host, nothing listed.
async fn assert_all_gone(t: &Topology) {
    wait_until(
        "the tunnel's processes and sockets gone",
        CLEANUP_TIMEOUT,
        || {
            laptop_podtuns(t).is_empty()
                && t.login_podtuns().is_empty()
                && t.login_home.sockets().is_empty()
        },
    )
    .await;
    assert!(ls(t).await.is_empty(), "a stopped tunnel is still listed");
}

fn redis_args<'a>(t: &'a Topology, kubeconfig: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "redis",
        "redis",
        "-n",
        "demo",
        "--via",
        &t.addrs.login,
        "--kubeconfig",
        kubeconfig,
        "--remote-bin",
        podtun::bin(),
    ];
    args.extend_from_slice(extra);
    args
}

#[tokio::test(flavor = "multi_thread")]
async fn detach_returns_a_url_that_answers_and_stop_cleans_up() {
    let t = topology(JUPYTER).await;
    let kubeconfig = t.kubeconfig_arg();
    let start = [
        "jupyter",
        "jupyter",
        "-n",
        "demo",
        "-d",
        "--via",
        &t.addrs.login,
        "--kubeconfig",
        &kubeconfig,
        "--remote-bin",
        podtun::bin(),
    ];
    let url = ok(&t, &start).await.trim().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "not a URL: {url}");
    assert!(url.contains("token="), "no token in {url}");

    // The shell is back, and the URL answers.
    let (addr, path) = http::split_url(&url);
    let (status, _) = t
        .on_laptop(move || async move { http::get(&addr, &path).await })
        .await;
    assert_eq!(status, 200, "GET {url}");

    // `ls` shows it, for humans and as JSON.
    let listed = ls(&t).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let entry = &listed[0];
    assert_eq!(entry["state"], "ready");
    assert_eq!(entry["target"], "pod/jupyter");
    assert_eq!(entry["via"], t.addrs.login.as_str());
    assert_eq!(entry["forwards"][0]["url"], url.as_str());
    let id = entry["id"].as_str().expect("id").to_string();
    let human = ok(&t, &["ls"]).await;
    let row = human
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("no row for {id} in:\n{human}"));
    for word in ["pod/jupyter", &t.addrs.login, &url, "ready", "ago"] {
        assert!(row.contains(word), "`{word}` missing from `{row}`");
    }
    assert!(human.starts_with("ID"), "no header:\n{human}");

    // The same command again: the same URL, no second forward.
    assert_eq!(ok(&t, &start).await.trim(), url);
    assert_eq!(ls(&t).await.len(), 1);
    assert_eq!(t.login_podtuns().len(), 1, "{:?}", t.login_podtuns());

    // Its log has its progress, never the token.
    let log = ok(&t, &["logs", &id]).await;
    assert!(log.contains("forwarding"), "log: {log}");

    ok(&t, &["stop", "jupyter"]).await;
    assert_all_gone(&t).await;
    let (addr, _) = http::split_url(&url);
    let refused = t
        .on_laptop(move || async move { tokio::net::TcpStream::connect(&addr).await.is_err() })
        .await;
    assert!(refused, "the URL's port still accepts after stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_starts_at_once_give_one_tunnel() {
    let t = topology(REDIS).await;
    let kubeconfig = t.kubeconfig_arg();
    let args = redis_args(&t, &kubeconfig, &["-d"]);
    let (a, b) = tokio::join!(finish(t.podtun(&args)), finish(t.podtun(&args)));
    for done in [&a, &b] {
        assert!(done.status.success(), "{}: {}", done.status, done.stderr);
    }
    assert_eq!(
        a.stdout, b.stdout,
        "the two starts print different addresses"
    );
    assert!(ping(&t, a.stdout.trim()).await, "no PONG on {}", a.stdout);
    assert_eq!(ls(&t).await.len(), 1);
    assert_eq!(t.login_podtuns().len(), 1, "{:?}", t.login_podtuns());
    ok(&t, &["stop", "--all"]).await;
    assert_all_gone(&t).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_tunnel_is_reported_gone() {
    let t = topology(REDIS).await;
    let kubeconfig = t.kubeconfig_arg();
    let args = redis_args(&t, &kubeconfig, &["-d"]);
    let addr = ok(&t, &args).await.trim().to_string();
    let listed = ls(&t).await;
    let pid = listed[0]["pid"].as_u64().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    wait_until("the killed tunnel's process gone", CLEANUP_TIMEOUT, || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    })
    .await;

    // Shown once as gone, never as running, then cleaned.
    let listed = ls(&t).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["state"], "gone");
    assert!(ls(&t).await.is_empty());
    let human = ok(&t, &["ls"]).await;
    assert_eq!(human.lines().count(), 1, "only the header: {human}");

    // Started again, it is a new tunnel on the same address.
    assert_eq!(ok(&t, &args).await.trim(), addr);
    ok(&t, &["stop", "--all"]).await;
    assert_all_gone(&t).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_local_port_is_remembered_after_stop_and_start() {
    let t = topology(REDIS).await;
    let kubeconfig = t.kubeconfig_arg();
    let args = redis_args(&t, &kubeconfig, &["-d"]);
    // 6379 is taken on the laptop: the first start gets another port.
    let squatter = t
        .on_laptop(|| async { std::net::TcpListener::bind("127.0.0.1:6379").expect("bind 6379") })
        .await;
    let first = ok(&t, &args).await.trim().to_string();
    assert_ne!(first, "127.0.0.1:6379");
    ok(&t, &["stop", "redis"]).await;
    assert_all_gone(&t).await;

    // 6379 is free again, but yesterday's port wins.
    drop(squatter);
    let again = ok(&t, &args).await.trim().to_string();
    assert_eq!(again, first);
    assert!(ping(&t, &again).await);
    ok(&t, &["stop", "--all"]).await;
    assert_all_gone(&t).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_profile_fills_what_flags_and_environment_leave_open() {
    let t = topology(REDIS).await;
    // Defaults say where the cluster is and name a namespace the profile overrides.
    let config_dir = t.home.path().join(".config/podtun");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("config.toml"),
        format!(
            "[defaults]\nvia = \"{login}\"\nkubeconfig = \"{kc}\"\nremote-bin = \"{bin}\"\n\
             namespace = \"nosuch\"\nagent = \"auto\"\n\n\
             [profiles.cache]\npreset = \"redis\"\ntarget = \"redis\"\nnamespace = \"demo\"\n\
             local-port = 7000\n",
            login = t.addrs.login,
            kc = t.kubeconfig_arg(),
            bin = podtun::bin(),
        ),
    )
    .unwrap();

    // The flag beats the profile's port; the profile's namespace beats the defaults'.
    let addr = ok(&t, &["up", "cache", "-d", "-p", "7001"]).await;
    assert_eq!(addr.trim(), "127.0.0.1:7001");
    assert!(ping(&t, "127.0.0.1:7001").await);
    let listed = ls(&t).await;
    assert_eq!(listed[0]["namespace"], "demo");
    assert_eq!(listed[0]["via"], t.addrs.login.as_str());
    ok(&t, &["stop", "--all"]).await;
    assert_all_gone(&t).await;

    // The environment beats the profile and the defaults.
    let mut cmd = t.podtun(&["up", "cache", "--timeout", "10s"]);
    cmd.env("PODTUN_VIA", "nosuch.invalid");
    let done = finish(cmd).await;
    assert!(!done.status.success());
    assert!(done.stderr.contains("nosuch.invalid"), "{}", done.stderr);

    // The defaults apply to plain commands too: `-n` on the command line wins over them.
    let done = finish(t.podtun(&["redis", "redis", "--json", "--timeout", "20s"])).await;
    assert!(
        !done.status.success(),
        "the defaults' namespace was not used"
    );
    assert!(done.stderr.contains("nosuch"), "{}", done.stderr);

    // An unknown profile names the ones there are.
    let done = finish(t.podtun(&["up", "nope"])).await;
    assert_eq!(done.status.code(), Some(2));
    assert!(done.stderr.contains("no profile `nope`"), "{}", done.stderr);
    assert!(
        done.stderr.contains("profiles there: cache"),
        "{}",
        done.stderr
    );
}

#[tokio::test]
async fn a_broken_config_file_names_file_line_and_column() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("elsewhere.toml");
    std::fs::write(
        &config,
        "[defaults]\nvia = \"login\"\nnamespce = \"alice\"\n",
    )
    .unwrap();
    let mut cmd = tokio::process::Command::new(podtun::bin());
    cmd.args(["jupyter", "my-pod"])
        .env("HOME", home.path())
        .env("PODTUN_CONFIG", &config)
        .stdin(Stdio::null());
    let done = finish(cmd).await;
    assert_eq!(done.status.code(), Some(2), "{}", done.stderr);
    let want = format!(
        "error: {}:3:1: key `defaults.namespce`: unknown field `namespce`",
        config.display()
    );
    assert!(done.stderr.starts_with(&want), "{}", done.stderr);

    std::fs::write(&config, "[profiles.nb]\ntimeout = 5\n").unwrap();
    let mut cmd = tokio::process::Command::new(podtun::bin());
    cmd.args(["up", "nb"])
        .env("HOME", home.path())
        .env("PODTUN_CONFIG", &config)
        .stdin(Stdio::null());
    let done = finish(cmd).await;
    assert_eq!(done.status.code(), Some(2), "{}", done.stderr);
    assert!(
        done.stderr.contains(":2:11: key `profiles.nb.timeout`"),
        "{}",
        done.stderr
    );
}
