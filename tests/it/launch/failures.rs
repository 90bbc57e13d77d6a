//! Launchers that fail, create nothing, name a pod elsewhere, never return or stay attached,
//! users without the rights, and usage errors: quick errors, with nothing left behind.

use super::*;

/// `podtun jupyter --launch LAUNCHER ARGS` through the login host, which must fail quickly
/// (exit 1, nothing on stdout) without leaving a pod on the cluster or anything of the login
/// user's running on the login host (`after` says what for the message): its stderr.
async fn launch_fails(mode: Mode, launcher: &str, args: &[&str], after: &str) -> String {
    let t = login_host(MAY_LAUNCH).await;
    let before = pods(&t);
    let mut all = vec!["--launch", launcher];
    all.extend(args);
    let started = Instant::now();
    let done = podtun::finish_within(command(&t, mode, "jupyter", &all), FAIL_FAST).await;
    let err = done.stderr;
    eprintln!("{err}");
    assert_eq!(done.status.code(), Some(1), "{err}");
    assert!(done.stdout.is_empty(), "{}", done.stdout);
    assert!(started.elapsed() < FAIL_FAST, "{:?}", started.elapsed());
    assert_eq!(pods(&t), before, "no pod came after {after}");
    login_host_is_clean(&t, after).await;
    err
}

/// A launcher that fails: a quick error with its words and exit status.
async fn failing_launcher(mode: Mode) {
    let launcher = "echo 'Attempting to create job (pod)'; \
                    echo 'Error: quota exceeded: 0 GPUs left for podtun-login' >&2; exit 1";
    let err = launch_fails(mode, launcher, &[], "a failed launcher").await;
    assert!(
        err.contains("Error: quota exceeded: 0 GPUs left for podtun-login"),
        "{err}"
    );
    assert!(err.contains("exit status 1"), "{err}");
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
    let launcher = "echo 'Attempting to create job (pod)'; echo 'Job submission skipped: dry run'";
    let err = launch_fails(mode, launcher, &[], "a launcher that created nothing").await;
    assert!(
        err.contains("created no Jupyter pod in namespace `demo`"),
        "{err}"
    );
    assert!(err.contains("Job submission skipped: dry run"), "{err}");
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
/// of its own): an error naming both, with the `-n` hint, and nothing deleted.
async fn names_a_pod_elsewhere(mode: Mode) {
    let launcher = "echo 'pod/podtun-login-4242 created'";
    let err = launch_fails(mode, launcher, &[], "a launcher that named a pod elsewhere").await;
    assert!(
        err.contains("named pod `podtun-login-4242`, but namespace `demo` has no such pod"),
        "{err}"
    );
    assert!(err.contains("with -n"), "{err}");
    assert!(!err.contains("deleted pod"), "nothing was deleted: {err}");
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
/// it (its `sleep`) keeps running on the login host.
async fn never_returns(mode: Mode) {
    let launcher = "echo 'Waiting for the pod to be scheduled...'; sleep 600";
    let err = launch_fails(mode, launcher, &["--timeout", "5s"], "a launcher that hung").await;
    assert!(err.contains("was still running"), "{err}");
    assert!(err.contains("after 5s"), "{err}");
    assert!(
        err.contains("Waiting for the pod to be scheduled..."),
        "{err}"
    );
    let hint = err.split_once("hint:").map(|(_, h)| h).unwrap_or_default();
    assert!(hint.contains("-b"), "the hint names -b: {err}");
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

    let events = signal_to_the_end(&mut p, "INT", Some(&stderr)).await;
    let err = stderr.lock().expect("stderr").clone();
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
