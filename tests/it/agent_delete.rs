//! `podtun agent delete-pod`, the watchdog's undo command in agent mode, against the test
//! cluster: a user without the right is refused with the right named, the admin deletes the
//! pod, a pod already gone is said so, and wrong forms are usage errors.

use std::path::Path;
use std::time::Duration;

use crate::common::cluster;
use crate::common::podtun::{self, Finished};
use crate::common::wait_until;

/// A pod that only sleeps: something to delete.
const VICTIM: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: victim, namespace: demo}
spec:
  containers:
    - name: victim
      image: busybox
      command: ["sh", "-c", "exec sleep 3600"]
"#;

/// Bound on the deleted pod leaving the API server (its process killed first).
const GONE_TIMEOUT: Duration = Duration::from_secs(60);

/// `podtun agent delete-pod ARGS`, with only `kubeconfig` to find the cluster.
async fn delete_pod(kubeconfig: &Path, home: &Path, args: &[&str]) -> Finished {
    let kubeconfig = format!("--kubeconfig={}", kubeconfig.display());
    let mut cmd = tokio::process::Command::new(podtun::bin());
    cmd.args(["agent", "delete-pod", &kubeconfig])
        .args(args)
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    podtun::finish(cmd).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_delete_pod_needs_the_right_deletes_and_knows_a_pod_gone() {
    let c = cluster::start(&["manifests/00-namespace.yaml", "manifests/10-rbac.yaml"]).await;
    c.tc.apply_yaml(VICTIM).expect("apply the victim pod");
    let home = tempfile::tempdir().expect("home");
    let kc = c.kubeconfig();

    // manifests/10-rbac.yaml grants podtun's user no `delete`.
    let refused = delete_pod(kc, home.path(), &["--context=minimal", "demo", "victim"]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    assert_eq!(refused.stdout, "");
    assert!(
        refused
            .stderr
            .contains("may not delete pod demo/victim (`delete` on `pods` in namespace `demo`)"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("hint:"), "{}", refused.stderr);
    assert!(
        c.tc.pod("demo", "victim").is_some(),
        "a refusal deletes nothing"
    );

    let deleted = delete_pod(kc, home.path(), &["demo", "victim"]).await;
    assert!(deleted.status.success(), "{}", deleted.stderr);
    assert_eq!(deleted.stdout, "deleted pod demo/victim\n");
    wait_until("pod demo/victim gone", GONE_TIMEOUT, || {
        c.tc.pod("demo", "victim").is_none()
    })
    .await;

    let again = delete_pod(
        kc,
        home.path(),
        &["--context=testcluster", "demo", "victim"],
    )
    .await;
    assert!(again.status.success(), "{}", again.stderr);
    assert_eq!(again.stdout, "pod demo/victim was already gone\n");
}

#[tokio::test]
async fn agent_delete_pod_wrong_forms_are_usage_errors() {
    let home = tempfile::tempdir().expect("home");
    let kc = home.path().join("no-kubeconfig");
    for args in [
        &["demo"][..],
        &["demo", "a", "b"],
        &["--namespace=demo", "demo", "a"],
    ] {
        let done = delete_pod(&kc, home.path(), args).await;
        assert_eq!(done.status.code(), Some(2), "{args:?}: {}", done.stderr);
        assert!(
            done.stderr
                .contains("delete-pod [--kubeconfig=PATH] [--context=NAME] NAMESPACE NAME"),
            "{args:?}: {}",
            done.stderr
        );
    }
    let done = podtun::run_raw(home.path(), &["agent", "remove-pod", "demo", "a"]).await;
    assert_eq!(done.status.code(), Some(2), "{}", done.stderr);
    assert!(done.stderr.contains("`pipe SOCKET`"), "{}", done.stderr);
    assert!(done.stderr.contains("delete-pod"), "{}", done.stderr);
}
