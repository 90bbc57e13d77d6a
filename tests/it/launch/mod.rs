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

mod failures;
mod images;
mod lifecycle;
mod watchdog;

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

    /// Ctrl-C: a clean exit that says podtun deleted pod `demo/POD`.
    async fn ctrl_c_deletes(&mut self, pod: &str) {
        let status = self.signal("INT").await;
        assert!(status.success(), "{status:?}; stderr:\n{}", self.stderr());
        let err = self.stderr();
        assert!(
            err.contains(&format!("deleted pod `demo/{pod}`, which podtun launched")),
            "{err}"
        );
    }
}

/// Sends `signal` (`INT`, `TERM`) to podtun.
fn send(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().expect("podtun runs");
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent, "SIG{signal} to podtun");
}

/// Sends `signal` to podtun and waits (bounded) for its exit.
async fn signal_and_wait(child: &mut tokio::process::Child, signal: &str) -> ExitStatus {
    send(child, signal);
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

/// `signal` (`INT`, `TERM`) to podtun (run with `--json`): its events up to its exit, which must
/// be clean (`stderr`, where captured, goes in the message otherwise).
async fn signal_to_the_end(
    p: &mut Podtun,
    signal: &str,
    stderr: Option<&Mutex<String>>,
) -> Vec<Value> {
    send(&p.child, signal);
    let (events, status) = events_to_the_end(p, EXIT_TIMEOUT).await;
    let err = stderr.map(|s| s.lock().expect("stderr").clone());
    assert!(
        status.success(),
        "{status:?}: {events:?}\n{}",
        err.unwrap_or_default()
    );
    events
}

/// Waits until pod `demo/NAME` is gone from the test cluster `c` (local mode's).
async fn gone_from(c: &cluster::Cluster, name: &str) {
    wait_until(&format!("pod demo/{name} gone"), GONE_TIMEOUT, || {
        c.tc.pod("demo", name).is_none()
    })
    .await;
}

/// The one event named `name` among `events`.
fn the_event<'a>(events: &'a [Value], name: &str) -> &'a Value {
    let named: Vec<&Value> = events.iter().filter(|e| e["event"] == name).collect();
    assert_eq!(named.len(), 1, "one `{name}` event: {events:?}");
    named[0]
}
