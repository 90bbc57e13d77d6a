//! The shared watchdog over a real SSH connection to the login host: `now` runs the undo
//! command and answers, a failed undo is an error quoting it, a missing command stops it before
//! it watches, `bye` leaves nothing behind, and a launched pod's watchdog deletes it with
//! `podtun agent delete-pod` once the laptop is silent. (Takeover is the script's unit test;
//! Slurm's `kill -9` test covers the default grace end to end.)

use std::time::Duration;

use ::podtun::laptop::ssh::exec::sh_quote;
use ::podtun::laptop::ssh::{SshOptions, SshSession};
use ::podtun::laptop::watchdog::{Guard, Watchdog};

use crate::common::podtun;
use crate::common::topology::{wait_until, Shape, Topology};

/// A grace no test outlasts: only `now` may undo here.
const LONG: Duration = Duration::from_secs(600);
/// A short grace, for the silent laptop.
const SHORT: Duration = Duration::from_secs(3);
/// Bound on the silent laptop's pod being deleted: the grace, the watchdog's look, the
/// agent's run, the pod's process stopping.
const DELETED: Duration = Duration::from_secs(60);

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

/// SSH options of the laptop's user.
fn laptop_ssh(t: &Topology) -> (Vec<String>, SshOptions) {
    let opts = SshOptions {
        home: Some(t.home.path().to_path_buf()),
        ..Default::default()
    };
    (vec![t.addrs.login.clone()], opts)
}

/// What is left in the login host's watchdog folder.
fn watch_state(t: &Topology) -> Vec<std::ffi::OsString> {
    let state = t.login_home.path().join(".cache/podtun/watch");
    std::fs::read_dir(&state)
        .unwrap_or_else(|e| panic!("{}: {e}", state.display()))
        .map(|e| e.expect("entry").file_name())
        .collect()
}

/// A guard whose undo appends to `~/undone` on the login host.
fn guard(key: &str) -> Guard {
    Guard {
        key: key.into(),
        what: format!("test thing {key}"),
        undo: r#"echo undone >>"$HOME/undone"; echo 'last words'"#.into(),
        needs: Some("sh".into()),
        grace: LONG,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_over_ssh_undoes_now_quotes_failures_and_leaves_nothing() {
    let t = Topology::start(Shape::default()).await;
    let (via, opts) = laptop_ssh(&t);
    t.on_laptop(move || async move {
        let ssh = SshSession::connect(&via, &opts).await.expect("connect");

        let dog = Watchdog::start(&ssh, &guard("pod-demo-a"))
            .await
            .expect("start");
        dog.undo_now().await.expect("undone");

        let mut failing = guard("pod-demo-b");
        failing.undo = "echo 'first'; echo 'pods \"b\" is forbidden' >&2; exit 5".into();
        let dog = Watchdog::start(&ssh, &failing).await.expect("start");
        let err = dog.undo_now().await.expect_err("a failed undo");
        let text = format!("{err:#}");
        assert!(
            text.contains("could not undo test thing pod-demo-b"),
            "{text}"
        );
        assert!(
            text.contains("exited with status 5: pods \"b\" is forbidden"),
            "{text}"
        );

        let mut missing = guard("pod-demo-c");
        missing.needs = Some("podtun-no-such-command".into());
        let err = Watchdog::start(&ssh, &missing)
            .await
            .err()
            .expect("no watchdog without its command");
        let text = format!("{err:#}");
        assert!(
            text.contains("`podtun-no-such-command` is not on its PATH"),
            "{text}"
        );

        let dog = Watchdog::start(&ssh, &guard("pod-demo-d"))
            .await
            .expect("start");
        dog.dismiss().await;
        ssh.disconnect().await;
    })
    .await;

    let undone = std::fs::read_to_string(t.login_home.path().join("undone")).expect("~/undone");
    assert_eq!(undone.lines().count(), 1, "only `now` undid: {undone}");
    assert_eq!(watch_state(&t), Vec::<std::ffi::OsString>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_watchdog_deletes_it_with_the_agent_once_the_laptop_is_silent() {
    let t = Topology::start(Shape {
        manifests: vec!["manifests/00-namespace.yaml"],
        ..Default::default()
    })
    .await;
    t.cluster
        .tc
        .apply_yaml(VICTIM)
        .expect("apply the victim pod");
    let undo = format!(
        "{} agent delete-pod --kubeconfig={} demo victim",
        sh_quote(podtun::bin()),
        sh_quote(&t.kubeconfig.display().to_string())
    );
    let guard = Guard {
        key: "pod-demo-victim".into(),
        what: "pod demo/victim".into(),
        undo,
        needs: None,
        grace: SHORT,
    };
    let (via, opts) = laptop_ssh(&t);
    t.on_laptop(move || async move {
        let ssh = SshSession::connect(&via, &opts).await.expect("connect");
        let dog = Watchdog::start(&ssh, &guard).await.expect("start");
        // The laptop goes away without a word.
        drop(dog);
        ssh.disconnect().await;
    })
    .await;
    assert!(t.cluster.tc.pod("demo", "victim").is_some(), "not at once");
    wait_until("pod demo/victim deleted by its watchdog", DELETED, || {
        t.cluster.tc.pod("demo", "victim").is_none()
    })
    .await;
    wait_until("an empty watchdog folder", DELETED, || {
        watch_state(&t).is_empty()
    })
    .await;
}
