//! A launched pod's life: the URL on the laptop, its deletion on Ctrl-C, SIGTERM or `podtun stop`,
//! `--keep`, in both modes, through the login host and here.

use super::*;

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

    p.ctrl_c_deletes(&pod).await;
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

    let events = signal_to_the_end(&mut p, "TERM", Some(&stderr)).await;
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

    let events = signal_to_the_end(&mut p, "TERM", None).await;
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

    p.ctrl_c_deletes(&pod).await;
    gone_from(&c, &pod).await;
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

    let events = signal_to_the_end(&mut p, "TERM", None).await;
    assert_eq!(the_event(&events, "deleted")["pod"], pod.as_str());
    gone(&t, &pod, GONE_TIMEOUT).await;
    assert_eq!(pods(&t), ["jupyter"], "the older pod stays");
}
