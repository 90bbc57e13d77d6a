//! Real Slurm beside the walled-off topology (`common::slurm`): what podtun's Slurm support
//! stands on, checked the way a user on the login host would check it by hand.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use podtun::jupyter::Token;
use podtun::laptop::slurm::{self, Job, JobSpec, JupyterServer, Released, STATE_DIR};
use podtun::laptop::ssh::{SshOptions, SshSession};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::slurm::{jpservers, Slurm, NODE, SHORT_PARTITION};
use crate::common::topology::{wait_until, Shape, Topology};

/// Bound on a submitted job being scheduled onto the idle node.
const SCHEDULE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on Jupyter writing its jpserver file in the job (a loaded 2-core machine).
const JUPYTER_START_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on a cancelled job leaving squeue and its programs leaving the node.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on a connection attempt that must fail (an unreachable address may stay silent).
const CONNECT_PROBE: Duration = Duration::from_secs(2);

/// The job script a user would write: Jupyter on the node's name, a port the kernel picks, and
/// a runtime dir per job so that its jpserver file is easy to find.
const JUPYTER_JOB: &str = r#"#!/bin/sh
export JUPYTER_RUNTIME_DIR="$HOME/.jupyter-runtime/$SLURM_JOB_ID"
mkdir -p "$JUPYTER_RUNTIME_DIR"
exec /opt/podtun/jupyter/bin/jupyter lab --no-browser --ip="$(hostname)" --port=0
"#;

/// `curl`'s HTTP status for `url`, run as the login user on the login host (whose /etc/hosts
/// knows the node by name).
fn curl_status(slurm: &Slurm, url: &str) -> String {
    slurm.run(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "30",
            url,
        ],
    )
}

/// The command lines of Jupyter processes on the node.
fn jupyters_on_node(slurm: &Slurm) -> Vec<String> {
    slurm
        .node
        .pids()
        .iter()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmd| cmd.contains("jupyter"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_runs_jupyter_on_a_node_only_the_login_host_reaches() {
    let mut t = Topology::start(Shape::default()).await;
    let slurm = tokio::task::block_in_place(|| Slurm::start(&mut t));
    let home = t.login_home.path();
    let script = home.join("jupyter.sh");
    std::fs::write(&script, JUPYTER_JOB).expect("job script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    // The SSH working directory may be `/`: the output goes to the home.
    let output = format!("--output={}/slurm-%j.out", home.display());
    let submitted = slurm.run(
        "sbatch",
        &["--parsable", &output, &script.display().to_string()],
    );
    let id = submitted.trim().to_string();
    assert!(
        id.chars().all(|c| c.is_ascii_digit()) && !id.is_empty(),
        "sbatch --parsable printed {submitted:?}"
    );
    wait_until(
        &format!("job {id} RUNNING on {NODE} in squeue"),
        SCHEDULE_TIMEOUT,
        || slurm.squeue(&id).as_deref() == Some(&format!("RUNNING {NODE}")),
    )
    .await;

    // The node is taken whole: a second job waits, and Slurm says why.
    let waiting = slurm.run("sbatch", &["--parsable", &output, "--wrap", "sleep 600"]);
    let waiting = waiting.trim().to_string();
    assert_eq!(
        slurm.squeue(&waiting).as_deref(),
        Some("PENDING"),
        "the second job is not pending"
    );
    wait_until(
        "the second job's reason is Resources",
        SCHEDULE_TIMEOUT,
        || slurm.job_state(&waiting) == "JobState=PENDING Reason=Resources",
    )
    .await;

    let runtime = home.join(".jupyter-runtime").join(&id);
    wait_until(
        &format!("a jpserver file in {}", runtime.display()),
        JUPYTER_START_TIMEOUT,
        || !jpservers(&runtime).is_empty(),
    )
    .await;
    let server = jpservers(&runtime).remove(0);
    assert_eq!(server["hostname"], NODE, "{server}");
    let port = server["port"].as_u64().expect("port");
    let token = server["token"].as_str().expect("token").to_string();
    assert!(port > 0 && !token.is_empty(), "{server}");

    // The login host reaches Jupyter on the node by name; the token is what lets it in.
    let status = format!("http://{NODE}:{port}/api/status");
    assert_eq!(
        curl_status(&slurm, &format!("{status}?token={token}")),
        "200"
    );
    assert_eq!(curl_status(&slurm, &format!("{status}?token=wrong")), "403");

    // The laptop does not reach the node at all.
    let node_addr = format!("{}:{port}", slurm.node_ip);
    let from_laptop = t
        .on_laptop(move || async move {
            tokio::time::timeout(CONNECT_PROBE, TcpStream::connect(node_addr)).await
        })
        .await;
    assert!(
        !matches!(from_laptop, Ok(Ok(_))),
        "the laptop reached Jupyter on the node"
    );

    slurm.run("scancel", &[&id]);
    wait_until(
        &format!("job {id} gone from squeue, Jupyter gone from the node"),
        CANCEL_TIMEOUT,
        || slurm.squeue(&id).is_none() && jupyters_on_node(&slurm).is_empty(),
    )
    .await;
    assert_eq!(slurm.job_state(&id), "JobState=CANCELLED Reason=None");

    // The waiting job gets the node; cancelled too, it leaves squeue.
    slurm.run("scancel", &[&waiting]);
    wait_until("the second job gone from squeue", CANCEL_TIMEOUT, || {
        slurm.squeue(&waiting).is_none()
    })
    .await;

    // A job that fails keeps its end state and Slurm's reason.
    let failing = slurm.run(
        "sbatch",
        &[
            "--parsable",
            &output,
            "--wrap",
            "echo no jupyter here >&2; exit 3",
        ],
    );
    let failing = failing.trim().to_string();
    wait_until("the failing job ends FAILED", SCHEDULE_TIMEOUT, || {
        slurm.job_state(&failing) == "JobState=FAILED Reason=NonZeroExitCode"
    })
    .await;
    let out =
        std::fs::read_to_string(home.join(format!("slurm-{failing}.out"))).unwrap_or_default();
    assert!(out.contains("no jupyter here"), "job output: {out:?}");
}

/// Bound on one helper's work through the chain (a login shell per call on a loaded machine).
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

/// The login user's `~/.profile`: Jupyter on the PATH, as a site's module or the user's own
/// setup would put it there. Jobs read it through their login shell.
const PROFILE: &str = "export PATH=/opt/podtun/jupyter/bin:$PATH\n";

/// Slurm on `t`, the login user's profile, and what the laptop connects with.
fn slurm_for(t: &mut Topology) -> (Slurm, Vec<String>, SshOptions) {
    let slurm = tokio::task::block_in_place(|| Slurm::start(t));
    std::fs::write(t.login_home.path().join(".profile"), PROFILE).expect(".profile");
    let opts = SshOptions {
        home: Some(t.home.path().to_path_buf()),
        ..Default::default()
    };
    (slurm, vec![t.addrs.login.clone()], opts)
}

/// `GET /api/status?token=…` on Jupyter through a `direct-tcpip` channel to `host:port`
/// opened by the login host's sshd: the HTTP status code.
async fn api_status_through(ssh: &SshSession, host: &str, server: &JupyterServer) -> u16 {
    let mut stream = ssh.open_tcp(host, server.port).await.expect("direct-tcpip");
    let token = server.token.as_ref().map(Token::expose).unwrap_or_default();
    let request = format!(
        "GET {}api/status?token={token} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        server.base_url
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(HELPER_TIMEOUT, stream.read_to_end(&mut raw))
        .await
        .expect("an HTTP answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

async fn bounded<T>(what: &str, within: Duration, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(within, f)
        .await
        .unwrap_or_else(|_| panic!("not within {within:?}: {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_job_podtun_submits_waits_runs_answers_and_is_cancelled() {
    let mut t = Topology::start(Shape::default()).await;
    let (slurm, via, opts) = slurm_for(&mut t);
    // Someone else's job holds the node: podtun's must wait, and say why.
    let output = format!("--output={}/slurm-%j.out", t.login_home.path().display());
    let blocker = slurm.run("sbatch", &["--parsable", &output, "--wrap", "sleep 600"]);
    let blocker = blocker.trim().to_string();
    wait_until("the blocking job runs", SCHEDULE_TIMEOUT, || {
        slurm.squeue(&blocker).as_deref() == Some(&format!("RUNNING {NODE}"))
    })
    .await;
    let free_node = tokio::process::Command::from(slurm.command("scancel", &[&blocker]));

    let (id, reports) = t
        .on_laptop(move || async move {
            let ssh = SshSession::connect(&via, &opts).await.expect("connect");
            let spec = JobSpec::new("--time=30:00 --job-name=lab", None, None).expect("spec");
            let job = bounded("sbatch", HELPER_TIMEOUT, slurm::submit(&ssh, &spec))
                .await
                .expect("submitted");
            assert!(job.submitted);
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let follow = slurm::wait_running(&ssh, &job, move |s| {
                let _ = tx.send(s.to_string());
            });
            let mut free_node = free_node;
            let watch = async move {
                let mut seen = Vec::new();
                while let Some(line) = rx.recv().await {
                    if line.contains("pending (Resources)")
                        && !seen
                            .iter()
                            .any(|l: &String| l.contains("pending (Resources)"))
                    {
                        assert!(free_node.status().await.expect("scancel").success());
                    }
                    seen.push(line);
                }
                seen
            };
            let (running, reports) =
                tokio::join!(bounded("the job runs", SCHEDULE_TIMEOUT, follow), watch);
            let running = running.expect("running");
            assert_eq!(running.node().as_deref(), Some(NODE));
            let (host, server) = slurm::wait_server(&ssh, &job, &running, JUPYTER_START_TIMEOUT)
                .await
                .expect("Jupyter found");
            assert_eq!(host, NODE);
            assert_eq!(api_status_through(&ssh, &host, &server).await, 200);
            let released = bounded("scancel", HELPER_TIMEOUT, slurm::release(&ssh, &job))
                .await
                .expect("scancel");
            assert_eq!(released, Released::Cancelled);
            ssh.disconnect().await;
            (job.id.to_string(), reports)
        })
        .await;
    let text = reports.join("\n");
    assert!(
        text.contains(&format!(
            "Slurm job {id} is pending (Resources), time limit 30:00"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("Slurm job {id} is running on {NODE}, ")),
        "{text}"
    );
    assert!(text.contains(" left"), "time left is shown: {text}");
    wait_until(
        &format!("job {id} gone from squeue, Jupyter gone from the node"),
        CANCEL_TIMEOUT,
        || slurm.squeue(&id).is_none() && jupyters_on_node(&slurm).is_empty(),
    )
    .await;
    assert_eq!(slurm.job_state(&id), "JobState=CANCELLED Reason=None");
    let runtime = t.login_home.path().join(STATE_DIR).join(&id);
    let mode = std::fs::metadata(&runtime)
        .expect("runtime dir")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o700,
        "the runtime dir with the token is private"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_existing_job_is_found_reached_and_left_running() {
    let mut t = Topology::start(Shape::default()).await;
    let (slurm, via, opts) = slurm_for(&mut t);
    // The user's own job, Jupyter with its default runtime dir (~/.local/share/jupyter/runtime).
    let home = t.login_home.path();
    let script = home.join("lab.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nexec /opt/podtun/jupyter/bin/jupyter lab --no-browser --ip=\"$(hostname)\" --port=0\n",
    )
    .expect("job script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let output = format!("--output={}/slurm-%j.out", home.display());
    let id = slurm.run(
        "sbatch",
        &["--parsable", &output, &script.display().to_string()],
    );
    let id = id.trim().to_string();

    let attached = id.clone();
    t.on_laptop(move || async move {
        let ssh = SshSession::connect(&via, &opts).await.expect("connect");
        let target = format!("slurm/{attached}");
        let job = Job::existing(
            podtun::plan::slurm::parse_target(&target)
                .expect("a job")
                .expect("an id"),
        );
        let found = bounded(
            "Jupyter found",
            SCHEDULE_TIMEOUT + JUPYTER_START_TIMEOUT,
            slurm::find(&ssh, &job, JUPYTER_START_TIMEOUT, |_| {}),
        )
        .await
        .expect("Jupyter found in its default runtime dir");
        assert_eq!(found.host, NODE);
        assert_eq!(
            api_status_through(&ssh, &found.host, &found.server).await,
            200
        );
        let released = slurm::release(&ssh, &job).await.expect("release");
        assert_eq!(released, Released::LeftRunning);
        ssh.disconnect().await;
    })
    .await;
    assert_eq!(
        slurm.squeue(&id).as_deref(),
        Some(&format!("RUNNING {NODE}")[..]),
        "a job podtun did not submit keeps running"
    );
    assert!(!jupyters_on_node(&slurm).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_jobs_that_cannot_start_or_fail_are_reported_with_slurms_reason() {
    let mut t = Topology::start(Shape::default()).await;
    let (slurm, via, opts) = slurm_for(&mut t);
    let (stuck, stuck_id, failed) = t
        .on_laptop(move || async move {
            let ssh = SshSession::connect(&via, &opts).await.expect("connect");
            let until_jupyter = |job: Job| {
                let ssh = ssh.clone();
                async move {
                    let outcome = slurm::find(&ssh, &job, JUPYTER_START_TIMEOUT, |_| {});
                    let err = bounded("the job's end", JUPYTER_START_TIMEOUT, outcome)
                        .await
                        .expect_err("no Jupyter");
                    // What podtun does next with a job it submitted.
                    let released = slurm::release(&ssh, &job).await.expect("release");
                    (podtun::error::render(&err), released)
                }
            };
            // More time than the partition allows: Slurm keeps it pending, podtun says why.
            let spec = JobSpec::new(&format!("-p {SHORT_PARTITION} --time=1:00:00"), None, None)
                .expect("spec");
            let job = slurm::submit(&ssh, &spec).await.expect("submitted");
            let stuck_id = job.id.to_string();
            let (stuck, released) = until_jupyter(job).await;
            assert_eq!(released, Released::Cancelled, "a pending job is cancelled");
            // An environment that is not there: the job fails on the node.
            let spec = JobSpec::new("", Some("~/no-such-venv".into()), None).expect("spec");
            let job = slurm::submit(&ssh, &spec).await.expect("submitted");
            let (failed, released) = until_jupyter(job).await;
            assert_eq!(released, Released::AlreadyEnded, "nothing to cancel");
            ssh.disconnect().await;
            (stuck, stuck_id, failed)
        })
        .await;
    assert!(
        stuck.contains(&format!(
            "Slurm job {stuck_id} cannot start: it is PENDING with reason PartitionTimeLimit"
        )),
        "{stuck}"
    );
    assert!(
        stuck.contains("hint: the time asked for is over the partition's limit"),
        "{stuck}"
    );
    wait_until("the stuck job cancelled", CANCEL_TIMEOUT, || {
        slurm.squeue(&stuck_id).is_none()
    })
    .await;

    assert!(
        failed.contains("ended: FAILED, reason NonZeroExitCode, exit code 3:0"),
        "{failed}"
    );
    assert!(
        failed.contains("podtun: no virtualenv or conda environment at"),
        "{failed}"
    );
    assert!(failed.contains("no-such-venv on node1"), "{failed}");
    assert!(failed.contains("hint: see "), "{failed}");
}
