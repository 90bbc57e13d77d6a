//! `--image`: podtun creates the pod itself, with the requested resources, here and through the
//! login host.

use super::*;

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

    let events = signal_to_the_end(&mut p, "TERM", Some(&stderr)).await;
    assert_eq!(the_event(&events, "deleted")["pod"], pod.as_str());
    gone_from(&c, &pod).await;
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
    let events = signal_to_the_end(&mut p, "TERM", None).await;
    assert_eq!(the_event(&events, "deleted")["pod"], pod.as_str());
    gone_from(&c, &pod).await;
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

/// podtun (`--json`, `stderr` captured) gives up on `pod`, Pending for a GPU, at its `--timeout`:
/// exit 1, an error that says why the pod waits, and the pod deleted. Its stderr.
async fn gives_up_waiting_for_a_gpu(p: &mut Podtun, stderr: &Mutex<String>, pod: &str) -> String {
    let (events, status) = events_to_the_end(p, Duration::from_secs(90)).await;
    let err = stderr.lock().expect("stderr").clone();
    assert_eq!(status.code(), Some(1), "{events:?}\n{err}");
    let error = the_event(&events, "error");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("Insufficient nvidia.com/gpu")),
        "the error says why the pod waits: {error}\n{err}"
    );
    assert_eq!(the_event(&events, "deleted")["pod"], pod);
    err
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
    gives_up_waiting_for_a_gpu(&mut second, &second_err, &waiting).await;
    gone_from(&c, &waiting).await;

    let events = signal_to_the_end(&mut first, "TERM", None).await;
    assert_eq!(the_event(&events, "deleted")["pod"], pod.as_str());
    gone_from(&c, &pod).await;
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
    let err = gives_up_waiting_for_a_gpu(&mut p, &stderr, &pod).await;
    assert!(
        err.contains("Insufficient nvidia.com/gpu"),
        "the progress says why the pod waits:\n{err}"
    );
    gone(&t, &pod, GONE_TIMEOUT).await;
    login_host_is_clean(&t, "a launch that timed out").await;
}
