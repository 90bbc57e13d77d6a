//! No TARGET on the walled-off topology: podtun on the laptop asks the agent on the login
//! host for the namespace's pods that fit the preset, and takes the only one, lists several
//! with their commands (no terminal here), or says what exists when none fits.

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
