//! The shared watchdog over a real SSH connection to the login host: `now` runs the undo
//! command and answers, a failed undo is an error quoting it, a missing command stops it before
//! it watches, and `bye` leaves nothing behind. (Silence and takeover are the script's unit
//! tests; Slurm's `kill -9` test covers them end to end.)

use std::time::Duration;

use podtun::laptop::ssh::{SshOptions, SshSession};
use podtun::laptop::watchdog::{Guard, Watchdog};

use crate::common::topology::{Shape, Topology};

/// A grace no test outlasts: only `now` may undo here.
const LONG: Duration = Duration::from_secs(600);

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
    let via = vec![t.addrs.login.clone()];
    let opts = SshOptions {
        home: Some(t.home.path().to_path_buf()),
        ..Default::default()
    };
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
    let state = t.login_home.path().join(".cache/podtun/watch");
    let left: Vec<_> = std::fs::read_dir(&state)
        .expect("the state folder")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "left in {}: {left:?}", state.display());
}
