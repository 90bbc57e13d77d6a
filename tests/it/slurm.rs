//! Real Slurm beside the walled-off topology (`common::slurm`): what podtun's Slurm support
//! stands on, checked the way a user on the login host would check it by hand.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::common::slurm::{jpservers, Slurm, NODE};
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
