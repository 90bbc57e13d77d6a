//! Failing fast and saying why, in each mode on the walled-off topology: local mode (podtun run
//! on the login host itself), via mode with podtun's agent, and kubectl mode. A user without
//! the right to port-forward is told so at once; a right revoked while a tunnel runs ends it
//! with that error; a port nobody listens on is one waiting line, then an error naming it.

use std::time::Duration;

use serde_json::Value;
use testcluster::UserSpec;

use crate::common::podtun::{self, Finished, Podtun};
use crate::common::topology::{wait_until, Shape, Topology};
use crate::via::{login_kubectl_proxies, CLEANUP_TIMEOUT, REDIS};

/// Bound on podtun failing where it must not wait: far below the `--timeout` the tests give it
/// (10 minutes), which an error that waited for the service would reach.
const FAIL_FAST: Duration = Duration::from_secs(30);

/// How long a port nobody listens on is waited for.
const DEAF_TIMEOUT: &str = "20s";
/// Bound on that wait ending (the pod and, in via mode, the login host first).
const DEAF_DONE: Duration = Duration::from_secs(90);

/// A pod that declares port 8080 and listens on nothing.
const DEAF: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: deaf, namespace: demo}
spec:
  containers:
    - name: deaf
      image: busybox
      command: ["sh", "-c", "echo 'deaf: configured to serve on 8080 (not really)'; exec sleep 3600"]
      ports:
        - containerPort: 8080
"#;

/// Where the cluster half runs.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// podtun run on the login host, against its kubeconfig.
    Local,
    /// From the laptop, with podtun's agent on the login host.
    Agent,
    /// From the laptop, with only kubectl on the login host.
    Kubectl,
}

/// A user with every right podtun needs (`portforward`) or all but pods/portforward.
fn user(name: &str, portforward: bool) -> UserSpec {
    UserSpec {
        name: name.into(),
        namespace: "demo".into(),
        portforward,
    }
}

/// The topology with redis and the deaf pod Ready, and users `student` (no port-forward) and
/// `alice` (all rights).
async fn topology() -> Topology {
    let t = Topology::start(Shape {
        manifests: REDIS.to_vec(),
        cluster_users: vec![user("student", false), user("alice", true)],
        ..Default::default()
    })
    .await;
    t.cluster.tc.apply_yaml(DEAF).expect("apply the deaf pod");
    t.cluster.ready("demo", "redis").await;
    t.cluster.ready("demo", "deaf").await;
    t
}

/// `podtun ARGS` in `mode`, with the login host's kubeconfig.
fn command(t: &Topology, mode: Mode, args: &[&str]) -> tokio::process::Command {
    match mode {
        Mode::Local => podtun::isolated(
            tokio::process::Command::from(t.login.command(podtun::bin())),
            t.kubeconfig_arg(),
            t.home.path(),
            args,
        ),
        Mode::Agent => t.podtun_via(&[args, &["--agent", "podtun"]].concat()),
        Mode::Kubectl => t.podtun_via(&[args, &["--agent", "kubectl"]].concat()),
    }
}

/// Nothing of podtun's is left: no podtun on the laptop or the login host, no agent socket, no
/// kubectl proxy.
async fn nothing_left(t: &Topology, mode: Mode) {
    wait_until(
        &format!("nothing of podtun's left on the laptop or the login host ({mode:?})"),
        CLEANUP_TIMEOUT,
        || {
            let podtuns = |cmds: Vec<String>| cmds.iter().any(|c| c.contains(podtun::bin()));
            !podtuns(t.laptop_commands())
                && !podtuns(t.login_commands())
                && t.login_home.sockets().is_empty()
                && login_kubectl_proxies(t).is_empty()
        },
    )
    .await;
}

/// The refusal's words: the pod, the namespace, the right, and the hint.
fn assert_names_the_refusal(text: &str) {
    assert!(
        text.contains("not allowed to port-forward to pod `demo/redis`"),
        "{text}"
    );
    assert!(
        text.contains("`create` on `pods/portforward` in namespace `demo`"),
        "{text}"
    );
    assert!(text.contains("podtun doctor"), "{text}");
}

/// The tunnel's `error` event names the refusal (within `within`), and podtun exits with 1.
async fn ends_with_the_refusal(p: &mut Podtun, within: Duration) {
    let ev = error_event(p, within).await;
    let message = ev["message"].as_str().unwrap_or_default();
    assert_names_the_refusal(&format!("{message} {}", ev["hint"]));
    let status = tokio::time::timeout(FAIL_FAST, p.child.wait())
        .await
        .expect("podtun stops after the refusal")
        .expect("wait");
    assert_eq!(status.code(), Some(1));
}

async fn refused_before_ready(mode: Mode) {
    let t = topology().await;
    let args = [
        "redis",
        "redis",
        "-n",
        "demo",
        "-p",
        "0",
        "--context",
        "student",
        "--timeout",
        "10m",
    ];
    let done: Finished = podtun::finish_within(command(&t, mode, &args), FAIL_FAST).await;
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(done.stdout.is_empty(), "nothing forwarded: {}", done.stdout);
    assert_names_the_refusal(&done.stderr);
    assert!(
        !done.stderr.contains("waiting for the service"),
        "no waiting for an answer that cannot come: {}",
        done.stderr
    );
    nothing_left(&t, mode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_port_forward_fails_at_once_in_local_mode() {
    refused_before_ready(Mode::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_port_forward_fails_at_once_through_the_agent() {
    refused_before_ready(Mode::Agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_port_forward_fails_at_once_in_kubectl_mode() {
    refused_before_ready(Mode::Kubectl).await;
}

/// The next `error` event, skipping others, within `within`.
async fn error_event(p: &mut Podtun, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let ev = p.next_event(left).await;
        if ev["event"] == "error" {
            return ev;
        }
    }
}

async fn revoked_after_ready(mode: Mode) {
    let t = topology().await;
    let args = [
        "redis",
        "redis",
        "-n",
        "demo",
        "-p",
        "0",
        "--context",
        "alice",
    ];
    let mut p = Podtun::spawn_command(command(&t, mode, &args));
    p.ready().await;
    // The administrators take the right away; the port-forward open now ends (an API server
    // restarting, a network blip), and opening another is refused.
    t.cluster
        .tc
        .apply_user(&user("alice", false))
        .expect("revoke");
    t.cluster.tc.drop_portforwards().await;
    ends_with_the_refusal(&mut p, FAIL_FAST).await;
    nothing_left(&t, mode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_port_forward_ends_the_tunnel_in_local_mode() {
    revoked_after_ready(Mode::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_port_forward_ends_the_tunnel_through_the_agent() {
    revoked_after_ready(Mode::Agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_port_forward_ends_the_tunnel_in_kubectl_mode() {
    revoked_after_ready(Mode::Kubectl).await;
}

/// The agent restarted after the SSH connection dropped meets the refusal: the laptop stops
/// instead of reconnecting again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_on_reconnecting_is_final() {
    let t = topology().await;
    let args = [
        "redis",
        "redis",
        "-n",
        "demo",
        "-p",
        "0",
        "--context",
        "alice",
    ];
    let mut p = Podtun::spawn_command(command(&t, Mode::Agent, &args));
    p.ready().await;
    t.cluster
        .tc
        .apply_user(&user("alice", false))
        .expect("revoke");
    t.kill_login_ssh_sessions();
    ends_with_the_refusal(&mut p, FAIL_FAST * 2).await;
    nothing_left(&t, Mode::Agent).await;
}

async fn deaf_port(mode: Mode) {
    let t = topology().await;
    let args = [
        "forward",
        "deaf",
        "-n",
        "demo",
        "-p",
        "0",
        "--timeout",
        DEAF_TIMEOUT,
    ];
    let done = podtun::finish_within(command(&t, mode, &args), DEAF_DONE).await;
    let err = &done.stderr;
    assert_eq!(done.status.code(), Some(1), "{err}");
    let (before, error) = err.split_once("error: ").expect("an error");
    let waiting = "nothing listens on port 8080 in pod `demo/deaf` yet";
    assert_eq!(
        before.matches(waiting).count(),
        1,
        "one waiting line:\n{err}"
    );
    let lines = before.lines().count();
    assert!(lines <= 6, "{lines} lines while waiting:\n{err}");
    let first = error.lines().next().unwrap_or_default();
    assert!(
        first.contains("nothing listens on port 8080 in pod `demo/deaf`"),
        "{err}"
    );
    assert!(
        error.contains("deaf: configured to serve on 8080 (not really)"),
        "the pod's last log lines: {err}"
    );
    nothing_left(&t, mode).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_nobody_listens_on_is_one_line_then_an_error_in_local_mode() {
    deaf_port(Mode::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_nobody_listens_on_is_one_line_then_an_error_through_the_agent() {
    deaf_port(Mode::Agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_nobody_listens_on_is_one_line_then_an_error_in_kubectl_mode() {
    deaf_port(Mode::Kubectl).await;
}

/// In the background: the tunnel stops on the refusal, `ls` shows it failed and its log says
/// why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_right_fails_a_background_tunnel() {
    let t = topology().await;
    let start = [
        "redis",
        "redis",
        "-n",
        "demo",
        "-p",
        "0",
        "--context",
        "alice",
        "-d",
    ];
    let started =
        podtun::finish_within(command(&t, Mode::Agent, &start), podtun::READY_TIMEOUT).await;
    assert!(started.status.success(), "{}", started.stderr);
    t.cluster
        .tc
        .apply_user(&user("alice", false))
        .expect("revoke");
    t.cluster.tc.drop_portforwards().await;
    let ls = || async {
        let done = podtun::finish(t.podtun(&["ls", "--json"])).await;
        assert!(done.status.success(), "{}", done.stderr);
        let entries: Vec<Value> = done
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON"))
            .collect();
        entries
    };
    let deadline = tokio::time::Instant::now() + FAIL_FAST;
    let entry = loop {
        let entries = ls().await;
        assert_eq!(entries.len(), 1, "{entries:?}");
        if entries[0]["state"] == "failed" {
            break entries[0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not failed within {FAIL_FAST:?}: {entries:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let id = entry["id"].as_str().expect("id");
    let log = podtun::finish(t.podtun(&["logs", id])).await;
    assert_names_the_refusal(&log.stdout);
    nothing_left(&t, Mode::Agent).await;
}
