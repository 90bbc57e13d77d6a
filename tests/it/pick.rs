//! No TARGET on the walled-off topology: podtun on the laptop asks the agent on the login
//! host for the namespace's pods that fit the preset, and takes the only one, lists several
//! with their commands (no terminal here), or says what exists when none fits.

use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::cluster;
use crate::common::podtun::{self, Podtun};
use crate::common::topology::{wait_until, Shape, Topology};

const JUPYTER: &[&str] = &[
    "manifests/00-namespace.yaml",
    "manifests/10-rbac.yaml",
    "manifests/20-jupyter.yaml",
];
const REDIS: &[&str] = &["manifests/00-namespace.yaml", "manifests/30-redis.yaml"];

/// A pod that looks like a student's Jupyter server (by its image) and only sleeps.
fn notebook_pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: demo\nspec:\n  \
         containers:\n    - name: notebook\n      image: quay.io/jupyter/minimal-notebook\n      \
         command: [\"sleep\", \"3600\"]\n"
    )
}

async fn topology(manifests: &[&'static str]) -> Topology {
    Topology::start(Shape {
        manifests: manifests.to_vec(),
        ..Default::default()
    })
    .await
}

/// Waits until no agent is left on the login host.
async fn no_agent_left(t: &Topology) {
    wait_until(
        "the agent to exit",
        std::time::Duration::from_secs(10),
        || t.login_podtuns().is_empty(),
    )
    .await;
}

#[tokio::test]
async fn without_target_the_only_jupyter_pod_is_used() {
    let t = topology(JUPYTER).await;
    let mut p = Podtun::spawn_command(t.podtun_via(&["jupyter", "-n", "demo", "-p", "0"]));
    let (_, ready) = p.ready().await;
    assert_eq!(ready["pod"], "jupyter", "{ready}");
    assert_eq!(ready["target"], "pod/jupyter", "{ready}");
    assert!(
        ready["url"].as_str().is_some_and(|u| u.contains("token=")),
        "{ready}"
    );
    assert!(p.terminate().await.success());
}

#[tokio::test]
async fn without_target_several_pods_are_listed_with_their_commands() {
    let t = topology(&["manifests/00-namespace.yaml"]).await;
    for name in ["alice-23790", "alice-23791"] {
        t.cluster.tc.apply_yaml(&notebook_pod(name)).unwrap();
        t.cluster.ready("demo", name).await;
    }
    let done = podtun::finish(t.podtun_via(&["jupyter", "-n", "demo"])).await;
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(done.stdout.is_empty(), "{}", done.stdout);
    let err = &done.stderr;
    assert!(err.contains("2 Jupyter pods in namespace `demo`"), "{err}");
    for name in ["alice-23790", "alice-23791"] {
        let command = format!("podtun jupyter {name} -n demo --via {}", t.addrs.login);
        assert!(err.contains(&command), "no `{command}` in:\n{err}");
    }
    no_agent_left(&t).await;
}

#[tokio::test]
async fn without_target_and_no_jupyter_pod_the_error_says_what_exists() {
    let t = topology(REDIS).await;
    t.cluster.ready("demo", "redis").await;
    let done = podtun::finish(t.podtun_via(&["jupyter", "-n", "demo"])).await;
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    let err = &done.stderr;
    assert!(err.contains("no Jupyter pod in namespace `demo`"), "{err}");
    assert!(err.contains("port 8888"), "what was looked for: {err}");
    assert!(err.contains("redis (Running)"), "what exists: {err}");
    no_agent_left(&t).await;
}

/// Local mode, no terminal: the two redis pods of the manifests (a bare pod and a
/// deployment's) are listed, each with the user's command.
#[tokio::test]
async fn locally_several_redis_pods_are_listed_and_forward_lists_every_pod() {
    let c = cluster::start(REDIS).await;
    c.ready("demo", "redis").await;
    let home = tempfile::tempdir().unwrap();
    let cache = wait_for_cache_pod(&c).await;
    let done = podtun::run(c.kubeconfig(), home.path(), &["redis", "-n", "demo"]).await;
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    let err = &done.stderr;
    assert!(err.contains("2 redis pods in namespace `demo`"), "{err}");
    for name in ["redis", cache.as_str()] {
        let command = format!("podtun redis {name} -n demo --kubeconfig");
        assert!(err.contains(&command), "no `{command}` in:\n{err}");
    }
    let done = podtun::run(c.kubeconfig(), home.path(), &["forward", "-n", "demo"]).await;
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(
        done.stderr
            .contains("podtun forward redis -n demo --kubeconfig"),
        "{}",
        done.stderr
    );
}

/// The deployment's pod of 30-redis.yaml, once it runs.
async fn wait_for_cache_pod(c: &cluster::Cluster) -> String {
    let mut name = None;
    wait_until("the redis-cache pod to run", cluster::POD_READY, || {
        name =
            c.tc.pods("demo")
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .find(|n| n.starts_with("redis-cache-"));
        name.is_some()
    })
    .await;
    let name = name.unwrap();
    c.ready("demo", &name).await;
    name
}

/// `script -qefc LINE /dev/null`: LINE on a pty, its output on our pipe.
fn on_a_pty(prefix: &[&str], line: &str, home: &std::path::Path) -> tokio::process::Command {
    let words: Vec<&str> = prefix
        .iter()
        .copied()
        .chain(["script", "-qefc", line, "/dev/null"])
        .collect();
    let mut cmd = tokio::process::Command::new(words[0]);
    cmd.args(&words[1..])
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("PODTUN_VIA")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Answers `2` at the numbered choice; returns the name listed second once the forward to it
/// is reported, and everything the terminal showed.
async fn choose_the_second(mut cmd: tokio::process::Command) -> (String, String) {
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = child.stdout.take().unwrap();
    let (mut seen, mut buf, mut answered) = (String::new(), [0u8; 4096], false);
    let deadline = tokio::time::Instant::now() + podtun::READY_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, out.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no choice and no forward in time:\n{seen}"))
            .unwrap();
        assert!(n > 0, "the terminal closed:\n{seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if !answered && seen.contains("Which one?") {
            stdin.write_all(b"2\n").await.unwrap();
            answered = true;
        }
        let second = seen
            .split("2) ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string);
        if let Some(name) = second.filter(|n| seen.contains(&format!("→ pod `{n}`"))) {
            assert!(seen.contains("1) "), "a numbered list:\n{seen}");
            return (name, seen);
        }
    }
}

/// On a terminal (a pty from `script`), several pods are a numbered choice, and the forward
/// goes to the one typed.
#[tokio::test]
async fn on_a_terminal_several_pods_are_a_numbered_choice() {
    let c = cluster::start(REDIS).await;
    c.ready("demo", "redis").await;
    wait_for_cache_pod(&c).await;
    let home = tempfile::tempdir().unwrap();
    let line = format!(
        "exec {} redis -n demo -p 0 --kubeconfig {}",
        podtun::bin(),
        c.kubeconfig().display()
    );
    let (chosen, seen) = choose_the_second(on_a_pty(&[], &line, home.path())).await;
    assert!(
        chosen == "redis" || chosen.starts_with("redis-cache-"),
        "{chosen}"
    );
    assert!(seen.contains("127.0.0.1:"), "{seen}");
}

/// The same through the login host: the agent offers the pods, the laptop's terminal chooses.
#[tokio::test]
async fn through_the_login_host_the_laptops_terminal_chooses() {
    let t = topology(REDIS).await;
    t.cluster.ready("demo", "redis").await;
    wait_for_cache_pod(&t.cluster).await;
    let line = format!(
        "exec {bin} redis -n demo -p 0 --via {login} --kubeconfig {kc} --remote-bin {bin}",
        bin = podtun::bin(),
        login = t.addrs.login,
        kc = t.kubeconfig_arg(),
    );
    let prefix = ["ip", "netns", "exec", t.laptop.name()];
    let (chosen, seen) = choose_the_second(on_a_pty(&prefix, &line, t.home.path())).await;
    assert!(
        chosen == "redis" || chosen.starts_with("redis-cache-"),
        "{chosen}"
    );
    assert!(seen.contains("127.0.0.1:"), "{seen}");
}

/// Local mode: the same cluster checks, this machine being the one that talks to the cluster.
#[tokio::test]
async fn locally_doctor_checks_the_cluster() {
    let c = cluster::start(&["manifests/00-namespace.yaml", "manifests/10-rbac.yaml"]).await;
    let home = tempfile::tempdir().unwrap();
    let done = podtun::run(
        c.kubeconfig(),
        home.path(),
        &["doctor", "--context", "minimal"],
    )
    .await;
    assert!(done.status.success(), "{}\n{}", done.stdout, done.stderr);
    assert!(
        done.stdout
            .contains("✓ rights on pods/portforward: create, get granted in `demo`"),
        "{}",
        done.stdout
    );
    assert!(!done.stdout.contains("SSH config"), "{}", done.stdout);
    assert!(
        done.stdout.contains("! Jupyter pods: none Running"),
        "{}",
        done.stdout
    );
}
