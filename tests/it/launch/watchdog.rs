//! The login host deletes a launched pod once the laptop goes silent (`kill -9`), and keeps it
//! through a lost connection that podtun recovers.

use super::*;

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

    let events = signal_to_the_end(&mut p, "INT", None).await;
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
