//! Launching the pod, then forwarding to it (`--launch`, `--image`), on the walled-off topology
//! (`common::topology`): the login user's kubeconfig names a user with
//! `manifests/10-rbac.yaml`'s rights and, where launching must work, the create and delete on
//! pods of `tests/fixtures/launch/rbac-launch.yaml`. The launcher is a DSMLP-like script on the
//! login host (`tests/fixtures/launch/launch-jupyter.sh`) that creates `USER-PID` with kubectl.
//! Without `--via`, podtun talks to a test cluster on this machine, as in `local.rs`. What is
//! checked is what a user sees: the URL on the laptop, and which pods and processes are left on
//! the cluster and the login host afterwards.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::cluster::{self, JUPYTER_IMAGE};
use crate::common::http;
use crate::common::podtun::{self, Podtun};
use crate::common::redis::Redis;
use crate::common::sshd::run;
use crate::common::topology::{wait_until, Shape, Topology, LOGIN_USER};
use crate::via::get;

/// The launcher, installed as `~/bin/launch-jupyter.sh` on the login host.
const LAUNCHER: &str = "tests/fixtures/launch/launch-jupyter.sh";
/// The rights launching needs on top of `manifests/10-rbac.yaml`'s.
const LAUNCH_RIGHTS: &str = "tests/fixtures/launch/rbac-launch.yaml";
/// A user who may launch pods.
const MAY_LAUNCH: &[&str] = &[
    "manifests/00-namespace.yaml",
    "manifests/10-rbac.yaml",
    LAUNCH_RIGHTS,
];
/// A user with podtun's least rights only: no create or delete on pods.
const MAY_NOT_LAUNCH: &[&str] = &["manifests/00-namespace.yaml", "manifests/10-rbac.yaml"];
/// DSMLP's way: the launcher returns once the pod exists.
const LAUNCH_B: &str = "~/bin/launch-jupyter.sh -b";

/// Bound on the URL: the launcher, the pod's start and Jupyter's on a loaded 2-core machine.
const URL_TIMEOUT: Duration = Duration::from_secs(180);
/// Bound on podtun's exit after Ctrl-C or SIGTERM (the deletion over SSH included).
const EXIT_TIMEOUT: Duration = Duration::from_secs(40);
/// Bound on a deleted pod leaving the cluster (Jupyter's shutdown on a loaded machine).
const GONE_TIMEOUT: Duration = Duration::from_secs(60);
/// What counts as failing fast: no wait on a pod, a Jupyter start or a long timeout.
const FAIL_FAST: Duration = Duration::from_secs(45);
/// Bound on the login host's processes and files going once podtun has.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the cluster half runs in via mode.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// podtun's agent on the login host.
    Agent,
    /// Only kubectl on the login host (`--agent kubectl`).
    Kubectl,
}

impl Mode {
    fn flag(self) -> &'static str {
        match self {
            Mode::Agent => "podtun",
            Mode::Kubectl => "kubectl",
        }
    }
}

/// The topology with `manifests` applied, the login user's kubeconfig on its `minimal` context
/// (podtun-user in namespace `demo`, as a cluster gives each user one), and the launcher in
/// `~/bin`.
async fn login_host(manifests: &[&'static str]) -> Topology {
    let t = Topology::start(Shape {
        manifests: manifests.to_vec(),
        ..Default::default()
    })
    .await;
    run(std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={LOGIN_USER}"),
            &format!("--regid={LOGIN_USER}"),
            "--clear-groups",
            "kubectl",
            "config",
            "use-context",
            "minimal",
            "--kubeconfig",
        ])
        .arg(&t.kubeconfig)
        .current_dir("/"));
    let script = t
        .login_home
        .install(&cluster::repo().join(LAUNCHER), "bin/launch-jupyter.sh");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    t
}

/// `podtun PRESET ARGS -p 0 --no-browser --via LOGIN … --agent MODE`: no TARGET, no
/// namespace (the context's).
fn command(t: &Topology, mode: Mode, preset: &str, args: &[&str]) -> tokio::process::Command {
    let mut all = vec![preset, "-p", "0", "--no-browser", "--agent", mode.flag()];
    all.extend(args);
    t.podtun_via(&all)
}

/// `command` with `--json`, its stderr captured.
fn spawn_json(
    t: &Topology,
    mode: Mode,
    preset: &str,
    args: &[&str],
) -> (Podtun, Arc<Mutex<String>>) {
    let mut cmd = command(t, mode, preset, args);
    cmd.stderr(Stdio::piped());
    let mut p = Podtun::spawn_command(cmd);
    let stderr = p.capture_stderr();
    (p, stderr)
}

/// podtun as a person runs it: the URL on stdout, everything else on stderr.
struct Human {
    child: tokio::process::Child,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    /// Reads stderr until podtun closes it.
    reader: tokio::task::JoinHandle<()>,
}

impl Human {
    fn spawn(mut cmd: tokio::process::Command) -> Human {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn podtun");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().expect("stderr");
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{line}");
                let mut seen = sink.lock().expect("stderr");
                seen.push_str(&line);
                seen.push('\n');
            }
        });
        Human {
            child,
            stdout,
            stderr,
            reader,
        }
    }

    /// The URL podtun prints on stdout.
    async fn url(&mut self) -> String {
        let line = tokio::time::timeout(URL_TIMEOUT, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("no URL within {URL_TIMEOUT:?}; stderr:\n{}", self.stderr()))
            .expect("read stdout");
        let Some(line) = line else {
            // Ended: its last words first.
            let _ = tokio::time::timeout(EXIT_TIMEOUT, &mut self.reader).await;
            panic!("podtun ended without a URL; stderr:\n{}", self.stderr());
        };
        assert!(line.starts_with("http://127.0.0.1:"), "{line}");
        line
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// Sends `signal` (`INT`: Ctrl-C, `TERM`) and waits for the exit.
    async fn signal(&mut self, signal: &str) -> ExitStatus {
        signal_and_wait(&mut self.child, signal).await
    }
}

/// Sends `signal` to podtun and waits (bounded) for its exit.
async fn signal_and_wait(child: &mut tokio::process::Child, signal: &str) -> ExitStatus {
    let pid = child.id().expect("podtun runs");
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent, "SIG{signal} to podtun");
    tokio::time::timeout(EXIT_TIMEOUT, child.wait())
        .await
        .unwrap_or_else(|_| panic!("podtun did not exit within {EXIT_TIMEOUT:?} of SIG{signal}"))
        .expect("wait for podtun")
}

/// GET `/api/status` with the URL's token, from the laptop: its status.
async fn api_status(t: &Topology, url: &str) -> u16 {
    let (addr, path) = http::split_url(url);
    let (page, token) = path.split_once("?token=").expect("a tokenized URL");
    assert_eq!(page, "/lab", "{url}");
    let status = format!("/api/status?token={token}");
    t.on_laptop(move || async move { get(&addr, &status).await.0 })
        .await
}

/// The pods of namespace `demo`.
fn pods(t: &Topology) -> Vec<String> {
    t.cluster
        .tc
        .pods("demo")
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect()
}

/// The pods the login user launched (the launcher's `USER-PID`, `--image`'s `USER-jupyter-…`).
fn launched_pods(t: &Topology) -> Vec<String> {
    pods(t)
        .into_iter()
        .filter(|name| name.starts_with(&format!("{LOGIN_USER}-")))
        .collect()
}

/// The one pod the login user launched.
fn the_launched_pod(t: &Topology) -> String {
    let launched = launched_pods(t);
    assert_eq!(launched.len(), 1, "one launched pod: {launched:?}");
    launched[0].clone()
}

/// Waits until pod `demo/NAME` is gone from the cluster.
async fn gone(t: &Topology, name: &str, within: Duration) {
    wait_until(
        &format!("pod demo/{name} gone from the cluster"),
        within,
        || t.cluster.tc.pod("demo", name).is_none(),
    )
    .await;
}

/// The command lines of the login user's processes on the login host.
fn login_user_processes(t: &Topology) -> Vec<String> {
    let (uid, _) = t.login_home.owner;
    t.login
        .pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
                status.lines().any(|l| {
                    l.strip_prefix("Uid:")
                        .and_then(|ids| ids.split_whitespace().next())
                        .is_some_and(|real| real == uid.to_string())
                })
            })
        })
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmd| !cmd.is_empty())
        .collect()
}

/// The watchdogs' state folder on the login host, and what is in it.
fn watch_state(t: &Topology) -> Vec<PathBuf> {
    std::fs::read_dir(t.login_home.path().join(".cache/podtun/watch"))
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// Nothing of the login user's runs on the login host any more (no agent, no launcher, no
/// watchdog, no SSH session), and no watchdog left its files.
async fn login_host_is_clean(t: &Topology, after: &str) {
    let deadline = Instant::now() + CLEANUP_TIMEOUT;
    loop {
        let (left, files) = (login_user_processes(t), watch_state(t));
        if left.is_empty() && files.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not within {CLEANUP_TIMEOUT:?}: nothing of the login user's left on the login host \
             after {after}; left: {left:#?} {files:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `--json` events up to podtun's exit (bounded), and its status.
async fn events_to_the_end(p: &mut Podtun, within: Duration) -> (Vec<Value>, ExitStatus) {
    let events = p.remaining_events(within).await;
    let status = tokio::time::timeout(EXIT_TIMEOUT, p.child.wait())
        .await
        .expect("podtun exits once its stdout closed")
        .expect("wait for podtun");
    (events, status)
}

/// The one event named `name` among `events`.
fn the_event<'a>(events: &'a [Value], name: &str) -> &'a Value {
    let named: Vec<&Value> = events.iter().filter(|e| e["event"] == name).collect();
    assert_eq!(named.len(), 1, "one `{name}` event: {events:?}");
    named[0]
}

/// Launch through the agent: the URL works on the laptop, Ctrl-C deletes the pod and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_through_the_agent_serves_the_url_and_ctrl_c_deletes_the_pod() {
    let t = login_host(MAY_LAUNCH).await;
    let before = pods(&t);
    let mut p = Human::spawn(command(&t, Mode::Agent, "jupyter", &["--launch", LAUNCH_B]));
    let url = p.url().await;
    assert_eq!(api_status(&t, &url).await, 200, "{url}");

    let pod = the_launched_pod(&t);
    let err = p.stderr();
    assert!(
        err.contains(&format!("launcher: pod/{pod} created")),
        "the launcher's output as progress:\n{err}"
    );
    assert!(err.contains(&format!("launched pod `demo/{pod}`")), "{err}");

    let status = p.signal("INT").await;
    assert!(status.success(), "{status:?}; stderr:\n{}", p.stderr());
    let err = p.stderr();
    assert!(
        err.contains(&format!("deleted pod `demo/{pod}`, which podtun launched")),
        "{err}"
    );
    gone(&t, &pod, GONE_TIMEOUT).await;
    assert_eq!(pods(&t), before, "only the launched pod came and went");
    login_host_is_clean(&t, "Ctrl-C").await;
}

/// Launch in kubectl mode (the launcher runs in a script over SSH): the URL works, SIGTERM
/// deletes the pod, and `--json` says `launched` and `deleted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_in_kubectl_mode_serves_the_url_and_sigterm_deletes_the_pod() {
    let t = login_host(MAY_LAUNCH).await;
    let (mut p, stderr) = spawn_json(&t, Mode::Kubectl, "jupyter", &["--launch", LAUNCH_B]);
    let launched = p.wait_for("launched", URL_TIMEOUT).await;
    let pod = launched["pod"].as_str().expect("pod").to_string();
    assert_eq!(launched["namespace"], "demo", "{launched}");
    assert_eq!(launched_pods(&t), [pod.as_str()]);
    let ready = p.wait_for("ready", URL_TIMEOUT).await;
    assert_eq!(ready["agent"], "kubectl", "{ready}");
    assert_eq!(ready["pod"], pod.as_str(), "{ready}");
    let url = ready["url"].as_str().expect("a URL").to_string();
    assert_eq!(api_status(&t, &url).await, 200, "{url}");

    let pid = p.child.id().expect("podtun runs");
    assert!(podtun::sigterm(pid), "SIGTERM to podtun");
    let (events, status) = events_to_the_end(&mut p, EXIT_TIMEOUT).await;
    let err = stderr.lock().expect("stderr").clone();
    assert!(status.success(), "{status:?}: {events:?}\n{err}");
    let deleted = the_event(&events, "deleted");
    assert_eq!(deleted["pod"], pod.as_str(), "{deleted}");
    assert_eq!(deleted["namespace"], "demo", "{deleted}");
    gone(&t, &pod, GONE_TIMEOUT).await;
    login_host_is_clean(&t, "SIGTERM").await;
}

/// `-d`: the launch runs in the background, and `podtun stop` deletes the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_launch_is_deleted_by_podtun_stop() {
    let t = login_host(MAY_LAUNCH).await;
    let started = podtun::finish_within(
        command(&t, Mode::Kubectl, "jupyter", &["--launch", LAUNCH_B, "-d"]),
        URL_TIMEOUT,
    )
    .await;
    assert!(started.status.success(), "{}", started.stderr);
    let url = started.stdout.trim().to_string();
    assert_eq!(api_status(&t, &url).await, 200, "{url}");
    let pod = the_launched_pod(&t);
    let ls = podtun::finish(t.podtun(&["ls", "--json"])).await;
    assert!(ls.status.success(), "{}", ls.stderr);
    let listed: Vec<Value> = ls
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["target"], format!("pod/{pod}"), "{listed:?}");

    // Named as any other tunnel: by its pod.
    let stopped = podtun::finish_within(t.podtun(&["stop", &pod]), EXIT_TIMEOUT).await;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    gone(&t, &pod, GONE_TIMEOUT).await;
    login_host_is_clean(&t, "podtun stop").await;
}

/// `--keep` leaves the pod running, and a later `podtun jupyter --via LOGIN` without a TARGET
/// finds it and forwards to it (and leaves it too: it did not launch it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_leaves_the_pod_and_the_next_run_forwards_to_it() {
    let t = login_host(MAY_LAUNCH).await;
    let (mut p, _stderr) = spawn_json(
        &t,
        Mode::Agent,
        "jupyter",
        &["--launch", LAUNCH_B, "--keep"],
    );
    let launched = p.wait_for("launched", URL_TIMEOUT).await;
    let pod = launched["pod"].as_str().expect("pod").to_string();
    let ready = p.wait_for("ready", URL_TIMEOUT).await;
    let first = ready["url"].as_str().expect("a URL").to_string();
    assert_eq!(api_status(&t, &first).await, 200, "{first}");

    let pid = p.child.id().expect("podtun runs");
    assert!(podtun::sigterm(pid), "SIGTERM to podtun");
    let (events, status) = events_to_the_end(&mut p, EXIT_TIMEOUT).await;
    assert!(status.success(), "{status:?}: {events:?}");
    let kept = the_event(&events, "kept");
    assert_eq!(kept["pod"], pod.as_str(), "{kept}");
    assert!(
        !events.iter().any(|e| e["event"] == "deleted"),
        "{events:?}"
    );
    login_host_is_clean(&t, "a kept launch").await;
    // Nothing deletes it later either: not podtun, not a watchdog.
    t.cluster.ready("demo", &pod).await;

    let (mut again, _stderr) = spawn_json(&t, Mode::Agent, "jupyter", &[]);
    let ready = again.ready().await.1;
    assert_eq!(ready["pod"], pod.as_str(), "{ready}");
    let url = ready["url"].as_str().expect("a URL").to_string();
    assert_eq!(api_status(&t, &url).await, 200, "{url}");
    let status = again.terminate().await;
    assert!(status.success(), "{status:?}");
    login_host_is_clean(&t, "the second run").await;
    assert_eq!(launched_pods(&t), [pod.as_str()], "the kept pod stays");
    assert!(
        t.cluster
            .tc
            .pod("demo", &pod)
            .and_then(|p| p.metadata.deletion_timestamp)
            .is_none(),
        "the kept pod is not being deleted"
    );
}

/// The grace given to the watchdog in the `kill -9` test.
const SHORT_GRACE: Duration = Duration::from_secs(5);

/// How soon after `kill -9` the pod must be gone: the watchdog looks every 5 s (at most), so
/// it sees the last heartbeat within 5 s of the kill and deletes at its first look at least
/// the grace later, `grace + 10 s` after the kill at the latest; the deletion itself and
/// Jupyter's shutdown get the agent's heartbeat period (10 s) on top, for a loaded machine.
fn gone_after_kill_bound(grace: Duration) -> Duration {
    grace + Duration::from_secs(10) + Duration::from_secs(::podtun::proto::wire::HEARTBEAT_SECS)
}

/// podtun killed (`kill -9`): the watchdog on the login host deletes the launched pod once
/// the laptop has been silent for `--launch-grace`.
/// With `attached`, podtun is killed while the launcher (DSMLP's without `-b`) still runs,
/// once it has named its pod; else once the pod is served.
async fn killed(mode: Mode, attached: bool) {
    let t = login_host(MAY_LAUNCH).await;
    let grace = format!("{}s", SHORT_GRACE.as_secs());
    let launcher = if attached {
        "~/bin/launch-jupyter.sh"
    } else {
        LAUNCH_B
    };
    let (mut p, _stderr) = spawn_json(
        &t,
        mode,
        "jupyter",
        &[
            "--launch",
            launcher,
            "--launch-grace",
            &grace,
            "--timeout",
            "10m",
        ],
    );
    let pod = p.wait_for("launched", URL_TIMEOUT).await["pod"]
        .as_str()
        .expect("pod")
        .to_string();
    let key = format!("pod-demo-{pod}");
    if attached {
        wait_until(
            "a watchdog guards the pod while the launcher runs",
            CLEANUP_TIMEOUT,
            || t.watchdogs(&key).len() == 1,
        )
        .await;
        wait_until("the launcher waits on its pod", CLEANUP_TIMEOUT, || {
            t.login_commands()
                .iter()
                .any(|c| c.contains("kubectl wait"))
        })
        .await;
    } else {
        p.wait_for("ready", URL_TIMEOUT).await;
        assert_eq!(
            t.watchdogs(&key).len(),
            1,
            "a watchdog guards the pod on the login host"
        );
    }

    p.child.start_kill().expect("kill -9 podtun");
    let killed = Instant::now();
    p.child.wait().await.expect("wait for podtun");
    let bound = gone_after_kill_bound(SHORT_GRACE);
    // Waited for longer than the bound, so that a late deletion shows how late it was.
    gone(&t, &pod, bound * 3).await;
    let took = killed.elapsed();
    eprintln!("pod demo/{pod} went {took:?} after kill -9 (bound {bound:?})");
    assert!(
        took <= bound,
        "pod demo/{pod} went {took:?} after kill -9, later than {bound:?}"
    );
    // The silence counts from the last heartbeat, up to a third of the grace before the kill.
    let earliest = SHORT_GRACE - SHORT_GRACE / 3;
    assert!(
        took >= earliest,
        "pod demo/{pod} went {took:?} after kill -9, before the grace was up"
    );
    login_host_is_clean(&t, "the watchdog deleted the pod").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_leaves_the_pod_to_the_login_hosts_watchdog_through_the_agent() {
    killed(Mode::Agent, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_leaves_the_pod_to_the_login_hosts_watchdog_in_kubectl_mode() {
    killed(Mode::Kubectl, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_the_launcher_runs_leaves_its_pod_to_the_watchdog_through_the_agent() {
    killed(Mode::Agent, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_the_launcher_runs_leaves_its_pod_to_the_watchdog_in_kubectl_mode() {
    killed(Mode::Kubectl, true).await;
}

/// A lost SSH connection (the login host drops it) keeps the launched pod: podtun reconnects,
/// forwards to the same pod on the same port, and the new connection's watchdog takes the pod
/// over, so the lost one's never deletes it. Ctrl-C then deletes it over the new connection.
async fn lost_connection(mode: Mode) {
    let t = login_host(MAY_LAUNCH).await;
    let grace = format!("{}s", LOST_GRACE.as_secs());
    let (mut p, _stderr) = spawn_json(
        &t,
        mode,
        "jupyter",
        &["--launch", LAUNCH_B, "--launch-grace", &grace],
    );
    let pod = p.wait_for("launched", URL_TIMEOUT).await["pod"]
        .as_str()
        .expect("pod")
        .to_string();
    let ready = p.wait_for("ready", URL_TIMEOUT).await;
    let key = format!("pod-demo-{pod}");
    assert_eq!(t.watchdogs(&key).len(), 1, "one watchdog guards the pod");

    t.kill_login_ssh_sessions();
    let lost = Instant::now();
    p.wait_for("reconnecting", RECOVERY).await;
    let again = p.wait_for("ready", RECOVERY).await;
    assert_eq!(again["pod"], pod.as_str(), "the same pod: {again}");
    assert_eq!(again["local"], ready["local"], "the same local port");
    let url = again["url"].as_str().expect("a URL").to_string();
    assert_eq!(api_status(&t, &url).await, 200, "{url}");
    wait_until(
        "the lost connection's watchdog handed over",
        RECOVERY,
        || t.watchdogs(&key).len() == 1,
    )
    .await;

    // The lost watchdog's deadline passes: the pod stays (a window, since nothing happens).
    let deadline = lost + gone_after_kill_bound(LOST_GRACE);
    while Instant::now() < deadline {
        let alive = t
            .cluster
            .tc
            .pod("demo", &pod)
            .is_some_and(|p| p.metadata.deletion_timestamp.is_none());
        assert!(alive, "pod demo/{pod} deleted after a lost connection");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(api_status(&t, &url).await, 200, "{url}");

    let pid = p.child.id().expect("podtun runs");
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent, "SIGINT to podtun");
    let (events, status) = events_to_the_end(&mut p, EXIT_TIMEOUT).await;
    assert!(status.success(), "{status:?}: {events:?}");
    assert_eq!(the_event(&events, "deleted")["pod"], pod.as_str());
    gone(&t, &pod, GONE_TIMEOUT).await;
    login_host_is_clean(&t, "Ctrl-C after a reconnect").await;
}

/// The grace in the lost-connection tests: longer than a first reconnect on a loaded machine
/// (a 1 s backoff, SSH, the agent or kubectl proxy, the watchdog), shorter than the default so
/// that the lost watchdog's deadline comes within the test.
const LOST_GRACE: Duration = Duration::from_secs(15);

/// Bound on `reconnecting`, then `ready` again, after the login host dropped the connection
/// (the backoff and a new connection on a loaded machine).
const RECOVERY: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_keeps_the_launched_pod_through_the_agent() {
    lost_connection(Mode::Agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_keeps_the_launched_pod_in_kubectl_mode() {
    lost_connection(Mode::Kubectl).await;
}

/// A launcher that fails: a quick error with its words and exit status, no pod, nothing left
/// running on the login host.
async fn failing_launcher(mode: Mode) {
    let t = login_host(MAY_LAUNCH).await;
    let before = pods(&t);
    let launcher = "echo 'Attempting to create job (pod)'; \
                    echo 'Error: quota exceeded: 0 GPUs left for podtun-login' >&2; exit 1";
    let started = Instant::now();
    let done = podtun::finish_within(
        command(&t, mode, "jupyter", &["--launch", launcher]),
        FAIL_FAST,
    )
    .await;
    let err = &done.stderr;
    eprintln!("{err}");
    assert_eq!(done.status.code(), Some(1), "{err}");
    assert!(done.stdout.is_empty(), "{}", done.stdout);
    assert!(
        err.contains("Error: quota exceeded: 0 GPUs left for podtun-login"),
        "{err}"
    );
    assert!(err.contains("exit status 1"), "{err}");
    assert!(started.elapsed() < FAIL_FAST, "{:?}", started.elapsed());
    assert_eq!(pods(&t), before, "no pod came");
    login_host_is_clean(&t, "a failed launcher").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_launcher_is_a_quick_error_through_the_agent() {
    failing_launcher(Mode::Agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_launcher_is_a_quick_error_in_kubectl_mode() {
    failing_launcher(Mode::Kubectl).await;
}

/// A launcher that returns without creating a pod: an error quoting what it printed.
async fn creates_nothing(mode: Mode) {
    let t = login_host(MAY_LAUNCH).await;
    let before = pods(&t);
    let launcher = "echo 'Attempting to create job (pod)'; echo 'Job submission skipped: dry run'";
    let done = podtun::finish_within(
        command(&t, mode, "jupyter", &["--launch", launcher]),
        FAIL_FAST,
    )
    .await;
    let err = &done.stderr;
    eprintln!("{err}");
    assert_eq!(done.status.code(), Some(1), "{err}");
    assert!(
        err.contains("created no Jupyter pod in namespace `demo`"),
        "{err}"
    );
    assert!(err.contains("Job submission skipped: dry run"), "{err}");
    assert_eq!(pods(&t), before, "no pod came");
    login_host_is_clean(&t, "a launcher that created nothing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launcher_that_creates_nothing_is_an_error_quoting_it_through_the_agent() {
    creates_nothing(Mode::Agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launcher_that_creates_nothing_is_an_error_quoting_it_in_kubectl_mode() {
    creates_nothing(Mode::Kubectl).await;
}

/// A launcher that names a pod the namespace does not have (it creates its pods in a namespace
/// of its own): an error naming both, with the `-n` hint, and nothing deleted or left behind.
async fn names_a_pod_elsewhere(mode: Mode) {
    let t = login_host(MAY_LAUNCH).await;
    let before = pods(&t);
    let launcher = "echo 'pod/podtun-login-4242 created'";
    let done = podtun::finish_within(
        command(&t, mode, "jupyter", &["--launch", launcher]),
        FAIL_FAST,
    )
    .await;
    let err = &done.stderr;
    eprintln!("{err}");
    assert_eq!(done.status.code(), Some(1), "{err}");
    assert!(
        err.contains("named pod `podtun-login-4242`, but namespace `demo` has no such pod"),
        "{err}"
    );
    assert!(err.contains("with -n"), "{err}");
    assert!(!err.contains("deleted pod"), "nothing was deleted: {err}");
    assert_eq!(pods(&t), before, "no pod came");
    login_host_is_clean(&t, "a launcher that named a pod elsewhere").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launcher_naming_a_pod_of_another_namespace_is_an_error_through_the_agent() {
    names_a_pod_elsewhere(Mode::Agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launcher_naming_a_pod_of_another_namespace_is_an_error_in_kubectl_mode() {
    names_a_pod_elsewhere(Mode::Kubectl).await;
}

/// A launcher that never returns is stopped at `--timeout`, with the `-b` hint, and nothing of
/// it keeps running on the login host.
async fn never_returns(mode: Mode) {
    let t = login_host(MAY_LAUNCH).await;
    let before = pods(&t);
    let launcher = "echo 'Waiting for the pod to be scheduled...'; sleep 600";
    let done = podtun::finish_within(
        command(
            &t,
            mode,
            "jupyter",
            &["--launch", launcher, "--timeout", "5s"],
        ),
        FAIL_FAST,
    )
    .await;
    let err = &done.stderr;
    eprintln!("{err}");
    assert_eq!(done.status.code(), Some(1), "{err}");
    assert!(err.contains("was still running"), "{err}");
    assert!(err.contains("after 5s"), "{err}");
    assert!(
        err.contains("Waiting for the pod to be scheduled..."),
        "{err}"
    );
    let hint = err.split_once("hint:").map(|(_, h)| h).unwrap_or_default();
    assert!(hint.contains("-b"), "the hint names -b: {err}");
    assert_eq!(pods(&t), before, "no pod came");
    wait_until(
        "the launcher's sleep gone from the login host",
        CLEANUP_TIMEOUT,
        || !t.login_commands().iter().any(|c| c.contains("sleep 600")),
    )
    .await;
    login_host_is_clean(&t, "a launcher that hung").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launcher_that_never_returns_is_stopped_at_the_timeout_through_the_agent() {
    never_returns(Mode::Agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launcher_that_never_returns_is_stopped_at_the_timeout_in_kubectl_mode() {
    never_returns(Mode::Kubectl).await;
}

/// DSMLP's launcher without `-b` creates the pod, then stays attached: at `--timeout` podtun
/// stops it, deletes the pod it created, and nothing of it is left on the login host.
async fn left_attached(mode: Mode) {
    let t = login_host(MAY_LAUNCH).await;
    let before = pods(&t);
    let done = podtun::finish_within(
        command(
            &t,
            mode,
            "jupyter",
            &[
                "--launch",
                "~/bin/launch-jupyter.sh",
                "--timeout",
                ATTACHED_TIMEOUT,
            ],
        ),
        FAIL_FAST * 2,
    )
    .await;
    let err = &done.stderr;
    eprintln!("{err}");
    assert_eq!(done.status.code(), Some(1), "{err}");
    assert!(
        err.contains("was still running") && err.contains(&format!("after {ATTACHED_TIMEOUT}")),
        "{err}"
    );
    let pod = err
        .lines()
        .find_map(|l| l.split_once("pod/")?.1.strip_suffix(" created"))
        .unwrap_or_else(|| panic!("the launcher said which pod it created:\n{err}"))
        .to_string();
    assert!(pod.starts_with(&format!("{LOGIN_USER}-")), "{pod}");
    gone(&t, &pod, GONE_TIMEOUT).await;
    assert_eq!(pods(&t), before, "the pod it created went");
    wait_until(
        "the launcher's kubectl wait gone from the login host",
        CLEANUP_TIMEOUT,
        || {
            !t.login_commands()
                .iter()
                .any(|c| c.contains("kubectl wait"))
        },
    )
    .await;
    login_host_is_clean(&t, "a launcher left attached").await;
}

/// Ctrl-C while the launcher still runs (DSMLP's without `-b`, attached to the pod it made):
/// podtun stops the launcher and deletes the pod it already named.
async fn ctrl_c_while_launching(mode: Mode) {
    let t = login_host(MAY_LAUNCH).await;
    let before = pods(&t);
    let (mut p, stderr) = spawn_json(
        &t,
        mode,
        "jupyter",
        &["--launch", "~/bin/launch-jupyter.sh", "--timeout", "10m"],
    );
    // The launcher said which pod it made, and waits on it (the `launched` event is read
    // after the exit, with every other).
    let said = || {
        let err = stderr.lock().expect("stderr").clone();
        err.lines()
            .find_map(|l| l.split_once("launcher: pod/")?.1.strip_suffix(" created"))
            .map(str::to_string)
    };
    wait_until("the launcher named its pod", URL_TIMEOUT, || {
        said().is_some()
    })
    .await;
    let pod = said().expect("named");
    wait_until("the launcher waits on its pod", CLEANUP_TIMEOUT, || {
        t.login_commands()
            .iter()
            .any(|c| c.contains("kubectl wait"))
    })
    .await;
    let key = format!("pod-demo-{pod}");
    wait_until("a watchdog guards the pod", CLEANUP_TIMEOUT, || {
        t.watchdogs(&key).len() == 1
    })
    .await;

    let pid = p.child.id().expect("podtun runs");
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent, "SIGINT to podtun");
    let (events, status) = events_to_the_end(&mut p, EXIT_TIMEOUT).await;
    let err = stderr.lock().expect("stderr").clone();
    assert!(status.success(), "{status:?}: {events:?}\n{err}");
    assert_eq!(the_event(&events, "launched")["pod"], pod.as_str(), "{err}");
    assert_eq!(the_event(&events, "deleted")["pod"], pod.as_str(), "{err}");
    gone(&t, &pod, GONE_TIMEOUT).await;
    assert_eq!(pods(&t), before);
    login_host_is_clean(&t, "Ctrl-C during the launch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_the_launcher_runs_stops_it_and_deletes_its_pod_through_the_agent() {
    ctrl_c_while_launching(Mode::Agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_the_launcher_runs_stops_it_and_deletes_its_pod_in_kubectl_mode() {
    ctrl_c_while_launching(Mode::Kubectl).await;
}

/// The `--timeout` of a launcher left attached: room for kubectl create on a loaded machine.
const ATTACHED_TIMEOUT: &str = "20s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launcher_left_attached_is_stopped_and_its_pod_deleted_through_the_agent() {
    left_attached(Mode::Agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launcher_left_attached_is_stopped_and_its_pod_deleted_in_kubectl_mode() {
    left_attached(Mode::Kubectl).await;
}

/// Without create rights on pods: an error naming them before anything runs; the launcher
/// (which would leave a marker) never ran.
async fn refused_without_rights(mode: Mode) {
    let t = login_host(MAY_NOT_LAUNCH).await;
    let before = pods(&t);
    let marker = t.login_home.path().join("launcher-ran");
    let launcher = format!("~/bin/launch-jupyter.sh -m {} -b", marker.display());
    let done = podtun::finish_within(
        command(&t, mode, "jupyter", &["--launch", &launcher]),
        FAIL_FAST,
    )
    .await;
    let err = &done.stderr;
    eprintln!("{err}");
    assert_ne!(done.status.code(), Some(0), "{err}");
    assert!(
        err.contains("`create`") && err.contains("on `pods` in namespace `demo`"),
        "{err}"
    );
    assert!(!err.contains("launcher:"), "the launcher ran: {err}");
    assert!(!marker.exists(), "the launcher ran: {}", marker.display());
    assert_eq!(pods(&t), before, "no pod came");
    login_host_is_clean(&t, "the refusal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launching_without_the_right_to_create_pods_stops_before_the_launcher_through_the_agent() {
    refused_without_rights(Mode::Agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launching_without_the_right_to_create_pods_stops_before_the_launcher_in_kubectl_mode() {
    refused_without_rights(Mode::Kubectl).await;
}

/// The container of a pod podtun created from an image: its name, labels and command, and
/// `amounts` as both requests and limits.
fn assert_image_pod(pod: &Pod, prefix: &str, amounts: &[(&str, &str)]) {
    let meta = &pod.metadata;
    let name = meta.name.as_deref().unwrap_or_default();
    assert!(name.starts_with(prefix), "{name} starts with {prefix}");
    assert_eq!(
        meta.generate_name.as_deref(),
        Some(prefix),
        "generateName of {name}"
    );
    let labels = meta.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("podtun"),
        "{labels:?}"
    );
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(spec.containers.len(), 1);
    let c = &spec.containers[0];
    assert_eq!(c.image.as_deref(), Some(JUPYTER_IMAGE));
    assert_eq!(
        c.command.clone().unwrap_or_default(),
        [
            "jupyter",
            "lab",
            "--no-browser",
            "--ip=0.0.0.0",
            "--port=8888"
        ]
    );
    let ports: Vec<i32> = c.ports.iter().flatten().map(|p| p.container_port).collect();
    assert_eq!(ports, [8888]);
    assert!(c.readiness_probe.is_some(), "a readiness probe");
    let resources = c.resources.as_ref().expect("resources");
    for (side, map) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        let map = map.clone().unwrap_or_default();
        let got: Vec<(String, String)> = map.into_iter().map(|(k, q)| (k, q.0)).collect();
        let mut want: Vec<(String, String)> = amounts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        want.sort();
        assert_eq!(got, want, "{side}");
    }
}

/// `--launch` without `--via`: the launcher runs on this machine, podtun forwards to the pod it
/// created, and Ctrl-C deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_in_local_mode_runs_the_launcher_here_and_ctrl_c_deletes_the_pod() {
    let c = cluster::start(&["manifests/00-namespace.yaml"]).await;
    let home = tempfile::tempdir().expect("home");
    let launcher = format!("sh {} -b", cluster::repo().join(LAUNCHER).display());
    // podtun and the launcher's kubectl both take the namespace from the context.
    run(std::process::Command::new("kubectl")
        .args(["config", "set-context", "--current", "--namespace=demo"])
        .arg("--kubeconfig")
        .arg(c.kubeconfig()));
    let mut cmd = podtun::command(
        c.kubeconfig(),
        home.path(),
        &["jupyter", "-p", "0", "--no-browser", "--launch", &launcher],
    );
    // The launcher's kubectl reads the same kubeconfig, as a user's shell would.
    cmd.env("KUBECONFIG", c.kubeconfig()).env("USER", "alice");
    let mut p = Human::spawn(cmd);
    let url = p.url().await;
    let (addr, path) = http::split_url(&url);
    let token = path.split_once("?token=").expect("a token").1.to_string();
    assert_eq!(
        get(&addr, &format!("/api/status?token={token}")).await.0,
        200,
        "{url}"
    );
    let err = p.stderr();
    let launched: Vec<String> =
        c.tc.pods("demo")
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
    assert_eq!(launched.len(), 1, "{launched:?}");
    let pod = launched[0].clone();
    assert!(pod.starts_with("alice-"), "{pod}");
    assert!(
        err.contains(&format!("launcher: pod/{pod} created")),
        "{err}"
    );
    assert!(err.contains("here"), "{err}");

    let status = p.signal("INT").await;
    assert!(status.success(), "{status:?}; stderr:\n{}", p.stderr());
    let err = p.stderr();
    assert!(
        err.contains(&format!("deleted pod `demo/{pod}`, which podtun launched")),
        "{err}"
    );
    wait_until(&format!("pod demo/{pod} gone"), GONE_TIMEOUT, || {
        c.tc.pod("demo", &pod).is_none()
    })
    .await;
}

/// `--image` in local mode (podtun talks to the cluster itself): the pod is created with the
/// requested resources, its URL works, and SIGTERM deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_in_local_mode_creates_the_pod_serves_it_and_deletes_it() {
    let c = cluster::start(&["manifests/00-namespace.yaml"]).await;
    let home = tempfile::tempdir().expect("home");
    let mut cmd = podtun::command(
        c.kubeconfig(),
        home.path(),
        &[
            "jupyter",
            "-n",
            "demo",
            "-p",
            "0",
            "--no-browser",
            "--image",
            JUPYTER_IMAGE,
            "--cpu",
            "500m",
            "--memory",
            "512Mi",
        ],
    );
    cmd.env("USER", "alice").stderr(Stdio::piped());
    let mut p = Podtun::spawn_command(cmd);
    let stderr = p.capture_stderr();
    let pod = p.wait_for("launched", URL_TIMEOUT).await["pod"]
        .as_str()
        .expect("pod")
        .to_string();
    let created = c.tc.pod("demo", &pod).expect("the pod exists");
    assert_image_pod(
        &created,
        "alice-jupyter-",
        &[("cpu", "500m"), ("memory", "512Mi")],
    );
    let ready = p.wait_for("ready", URL_TIMEOUT).await;
    assert_eq!(ready["pod"], pod.as_str(), "{ready}");
    let url = ready["url"].as_str().expect("a URL").to_string();
    let (addr, path) = http::split_url(&url);
    let token = path.split_once("?token=").expect("a token").1.to_string();
    let (status, _) = get(&addr, &format!("/api/status?token={token}")).await;
    assert_eq!(status, 200, "{url}");

    let pid = p.child.id().expect("podtun runs");
    assert!(podtun::sigterm(pid), "SIGTERM to podtun");
    let (events, status) = events_to_the_end(&mut p, EXIT_TIMEOUT).await;
    let err = stderr.lock().expect("stderr").clone();
    assert!(status.success(), "{status:?}: {events:?}\n{err}");
    assert_eq!(the_event(&events, "deleted")["pod"], pod.as_str());
    wait_until(&format!("pod demo/{pod} gone"), GONE_TIMEOUT, || {
        c.tc.pod("demo", &pod).is_none()
    })
    .await;
}

/// `podtun ARGS -n demo` with redis's image in local mode: the image's own command, redis's
/// port declared; PING answers, and SIGTERM deletes the pod, named `alice-WORD-…`.
async fn redis_from_an_image(args: &[&str], word: &str) {
    let c = cluster::start(&["manifests/00-namespace.yaml"]).await;
    let home = tempfile::tempdir().expect("home");
    let mut all = args.to_vec();
    all.extend(["-n", "demo"]);
    let mut cmd = podtun::command(c.kubeconfig(), home.path(), &all);
    cmd.env("USER", "alice");
    let mut p = Podtun::spawn_command(cmd);
    let pod = p.wait_for("launched", URL_TIMEOUT).await["pod"]
        .as_str()
        .expect("pod")
        .to_string();
    assert!(pod.starts_with(&format!("alice-{word}-")), "{pod}");
    let created = c.tc.pod("demo", &pod).expect("the pod exists");
    let container = &created.spec.as_ref().expect("spec").containers[0];
    assert_eq!(container.image.as_deref(), Some(cluster::REDIS_IMAGE));
    assert!(container.command.is_none(), "the image's own command");
    let ports: Vec<i32> = container
        .ports
        .iter()
        .flatten()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, [6379]);
    let asked = container.resources.clone().unwrap_or_default();
    assert!(
        asked.requests.unwrap_or_default().is_empty()
            && asked.limits.unwrap_or_default().is_empty(),
        "no --cpu, --memory, --gpu: nothing asked for"
    );

    let (local, ready) = p.ready().await;
    assert_eq!(ready["pod"], pod.as_str(), "{ready}");
    let mut r = Redis::connect(&local).await.expect("connect");
    assert_eq!(
        r.call(&[b"PING"]).await.expect("PING").as_deref(),
        Some(&b"+PONG"[..])
    );
    drop(r);
    let pid = p.child.id().expect("podtun runs");
    assert!(podtun::sigterm(pid), "SIGTERM to podtun");
    let (events, status) = events_to_the_end(&mut p, EXIT_TIMEOUT).await;
    assert!(status.success(), "{status:?}: {events:?}");
    assert_eq!(the_event(&events, "deleted")["pod"], pod.as_str());
    wait_until(&format!("pod demo/{pod} gone"), GONE_TIMEOUT, || {
        c.tc.pod("demo", &pod).is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_from_an_image_runs_the_images_command() {
    let args = ["redis", "-p", "0", "--image", cluster::REDIS_IMAGE];
    redis_from_an_image(&args, "redis").await;
}

/// `forward --image IMAGE [LOCAL:]REMOTE`, as its usage hint writes it: the ports come where a
/// TARGET would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_from_an_image_declares_the_ports_it_names() {
    let args = ["forward", "--image", cluster::REDIS_IMAGE, "0:6379"];
    redis_from_an_image(&args, "main").await;
}

/// `podtun jupyter --image IMAGE --gpu 1 -p 0 --json` in local mode against `c`, stderr
/// captured.
fn gpu_pod(c: &cluster::Cluster, home: &std::path::Path, extra: &[&str]) -> Podtun {
    let mut args = vec![
        "jupyter",
        "-n",
        "demo",
        "-p",
        "0",
        "--no-browser",
        "--image",
        JUPYTER_IMAGE,
        "--gpu",
        "1",
    ];
    args.extend(extra);
    let mut cmd = podtun::command(c.kubeconfig(), home, &args);
    cmd.env("USER", "alice").stderr(Stdio::piped());
    Podtun::spawn_command(cmd)
}

/// `--gpu 1` on a node with one GPU: the pod runs and its URL works; a second one waits for
/// the GPU the first holds, podtun says so, and deletes that pod when it gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_with_a_gpu_runs_on_a_gpu_node_and_the_next_waits_for_it() {
    let c = cluster::start_with(&["manifests/00-namespace.yaml"], |config| {
        config.node.gpus = 1;
    })
    .await;
    let home = tempfile::tempdir().expect("home");
    let mut first = gpu_pod(&c, home.path(), &[]);
    let _first_err = first.capture_stderr();
    let pod = first.wait_for("launched", URL_TIMEOUT).await["pod"]
        .as_str()
        .expect("pod")
        .to_string();
    assert_image_pod(
        &c.tc.pod("demo", &pod).expect("the pod exists"),
        "alice-jupyter-",
        &[("nvidia.com/gpu", "1")],
    );
    let ready = first.wait_for("ready", URL_TIMEOUT).await;
    let url = ready["url"].as_str().expect("a URL").to_string();
    let (addr, path) = http::split_url(&url);
    let token = path.split_once("?token=").expect("a token").1.to_string();
    let (status, _) = get(&addr, &format!("/api/status?token={token}")).await;
    assert_eq!(status, 200, "{url}");

    let other = tempfile::tempdir().expect("home");
    let mut second = gpu_pod(&c, other.path(), &["--timeout", "15s"]);
    let second_err = second.capture_stderr();
    let waiting = second.wait_for("launched", URL_TIMEOUT).await["pod"]
        .as_str()
        .expect("pod")
        .to_string();
    assert_ne!(waiting, pod);
    let (events, status) = events_to_the_end(&mut second, Duration::from_secs(90)).await;
    let err = second_err.lock().expect("stderr").clone();
    assert_eq!(status.code(), Some(1), "{events:?}\n{err}");
    let error = the_event(&events, "error");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("Insufficient nvidia.com/gpu")),
        "the error says why the pod waits: {error}"
    );
    assert_eq!(the_event(&events, "deleted")["pod"], waiting.as_str());
    wait_until(&format!("pod demo/{waiting} gone"), GONE_TIMEOUT, || {
        c.tc.pod("demo", &waiting).is_none()
    })
    .await;

    let pid = first.child.id().expect("podtun runs");
    assert!(podtun::sigterm(pid), "SIGTERM to podtun");
    let (events, status) = events_to_the_end(&mut first, EXIT_TIMEOUT).await;
    assert!(status.success(), "{status:?}: {events:?}");
    assert_eq!(the_event(&events, "deleted")["pod"], pod.as_str());
    wait_until(&format!("pod demo/{pod} gone"), GONE_TIMEOUT, || {
        c.tc.pod("demo", &pod).is_none()
    })
    .await;
}

/// `--image` through the login host with a GPU the cluster does not have: the pod carries the
/// requests and limits, waits Pending for the scheduler, podtun's error at `--timeout` says why,
/// and the pod is deleted before podtun exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_through_the_agent_asks_for_a_gpu_and_says_why_it_waits() {
    let t = login_host(MAY_LAUNCH).await;
    let (mut p, stderr) = spawn_json(
        &t,
        Mode::Agent,
        "jupyter",
        &[
            "--image",
            JUPYTER_IMAGE,
            "--cpu",
            "500m",
            "--memory",
            "512Mi",
            "--gpu",
            "1",
            "--timeout",
            "20s",
        ],
    );
    let pod = p.wait_for("launched", URL_TIMEOUT).await["pod"]
        .as_str()
        .expect("pod")
        .to_string();
    let created = t.cluster.tc.pod("demo", &pod).expect("the pod exists");
    assert_image_pod(
        &created,
        &format!("{LOGIN_USER}-jupyter-"),
        &[
            ("cpu", "500m"),
            ("memory", "512Mi"),
            ("nvidia.com/gpu", "1"),
        ],
    );
    let (events, status) = events_to_the_end(&mut p, Duration::from_secs(90)).await;
    let err = stderr.lock().expect("stderr").clone();
    assert_eq!(status.code(), Some(1), "{events:?}\n{err}");
    let error = the_event(&events, "error");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("Insufficient nvidia.com/gpu")),
        "the error says why the pod waits: {error}\n{err}"
    );
    assert!(
        err.contains("Insufficient nvidia.com/gpu"),
        "the progress says why the pod waits:\n{err}"
    );
    assert_eq!(the_event(&events, "deleted")["pod"], pod.as_str());
    gone(&t, &pod, GONE_TIMEOUT).await;
    login_host_is_clean(&t, "a launch that timed out").await;
}

/// Usage errors, before anything runs (exit 2).
#[tokio::test]
async fn launch_flags_that_do_not_go_together_are_usage_errors() {
    let home = tempfile::tempdir().expect("home");
    for (args, says) in [
        (
            &["jupyter", "--keep"][..],
            "--keep keeps a pod podtun launched",
        ),
        (
            &["jupyter", "my-pod", "--launch", "launch-scipy-ml.sh -b"][..],
            "they take no TARGET",
        ),
        (
            &["jupyter", "--image", JUPYTER_IMAGE, "-l", "app=jupyter"][..],
            "they take no TARGET",
        ),
        (&["jupyter", "--cpu", "2"][..], "--image"),
    ] {
        let done = podtun::run_raw(home.path(), args).await;
        assert_eq!(done.status.code(), Some(2), "{args:?}: {}", done.stderr);
        assert!(done.stderr.contains(says), "{args:?}: {}", done.stderr);
        assert!(done.stdout.is_empty(), "{args:?}: {}", done.stdout);
    }
}

/// A launcher that does not say which pod it created: podtun takes the one new pod that fits
/// (here beside an older Jupyter pod, which it must leave alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launcher_that_names_no_pod_gets_the_one_new_jupyter_pod() {
    let t = login_host(&[MAY_LAUNCH, &["manifests/20-jupyter.yaml"]].concat()).await;
    t.cluster.ready("demo", "jupyter").await;
    let (mut p, stderr) = spawn_json(
        &t,
        Mode::Kubectl,
        "jupyter",
        &["--launch", "~/bin/launch-jupyter.sh -b >/dev/null"],
    );
    let launched = p.wait_for("launched", URL_TIMEOUT).await;
    let pod = the_launched_pod(&t);
    assert_eq!(launched["pod"], pod.as_str(), "{launched}");
    let ready = p.wait_for("ready", URL_TIMEOUT).await;
    assert_eq!(ready["pod"], pod.as_str(), "{ready}");
    assert!(
        !stderr.lock().expect("stderr").contains("pod/"),
        "the launcher said nothing of its pod"
    );
    let url = ready["url"].as_str().expect("a URL").to_string();
    assert_eq!(api_status(&t, &url).await, 200, "{url}");

    let pid = p.child.id().expect("podtun runs");
    assert!(podtun::sigterm(pid), "SIGTERM to podtun");
    let (events, status) = events_to_the_end(&mut p, EXIT_TIMEOUT).await;
    assert!(status.success(), "{status:?}: {events:?}");
    assert_eq!(the_event(&events, "deleted")["pod"], pod.as_str());
    gone(&t, &pod, GONE_TIMEOUT).await;
    assert_eq!(pods(&t), ["jupyter"], "the older pod stays");
}

/// `podtun doctor` notes missing launch rights (not a failure: forwarding works without
/// them), and passes the check once they are granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_notes_the_rights_to_launch_pods() {
    let t = login_host(MAY_NOT_LAUNCH).await;
    let doctor = || podtun::finish(t.podtun_via(&["doctor", "--agent", "podtun"]));
    let line = |out: &str| -> String {
        out.lines()
            .find(|l| l.contains("rights to launch pods:"))
            .unwrap_or_else(|| panic!("no launch rights line in:\n{out}"))
            .to_string()
    };

    let done = doctor().await;
    let out = &done.stdout;
    assert!(done.status.success(), "{out}\n{}", done.stderr);
    let note = line(out);
    assert!(note.starts_with('!'), "a note: {note}");
    assert!(
        note.contains("create, delete not granted in `demo`"),
        "{note}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with('✓') && l.contains("rights on pods/portforward:")),
        "forwarding's rights pass:\n{out}"
    );

    t.cluster
        .tc
        .apply_file(&cluster::repo().join(LAUNCH_RIGHTS))
        .expect("grant the launch rights");
    let done = doctor().await;
    let out = &done.stdout;
    assert!(done.status.success(), "{out}\n{}", done.stderr);
    let granted = line(out);
    assert!(granted.starts_with('✓'), "granted: {granted}");
}
