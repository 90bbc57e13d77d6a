//! `podtun jupyter --slurm` and `podtun jupyter slurm/JOBID` as a user runs them: the binary on
//! the laptop, real sshd on the login host, real slurmctld/slurmd and Jupyter on a node the
//! laptop cannot reach (`common::slurm`). What is checked is what the user sees: the job's
//! state on stderr, a URL that works on the laptop, and what happens to the job after Ctrl-C.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::common::cluster::JUPYTER_BIN;
use crate::common::http;
use crate::common::podtun::{self, Podtun};
use crate::common::slurm::{Slurm, NODE, SHORT_PARTITION};
use crate::common::topology::{ensure_user, wait_until, Shape, Topology, OTHER_USER};

/// Bound on a job being scheduled once the node is free.
const SCHEDULE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on podtun's `ready` (a job start and a Jupyter start on a loaded machine).
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// Bound on one HTTP request through the tunnel.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on podtun's exit after Ctrl-C (a scancel over SSH included).
const EXIT_TIMEOUT: Duration = Duration::from_secs(40);
/// Bound on a cancelled job leaving squeue.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(60);

/// Slurm on `t`, and the login user's `~/.profile` putting Jupyter on the PATH (as a site's
/// module would): the job finds it only through its login shell.
fn slurm_for(t: &mut Topology) -> Slurm {
    let slurm = tokio::task::block_in_place(|| Slurm::start(t));
    std::fs::write(
        t.login_home.path().join(".profile"),
        format!("PATH={JUPYTER_BIN}:$PATH\nexport PATH\n"),
    )
    .expect(".profile");
    slurm
}

/// `podtun jupyter ARGS --via LOGIN -p 0 --no-browser --json`, stderr captured.
fn spawn(t: &Topology, args: &[&str]) -> (Podtun, Arc<Mutex<String>>) {
    let mut all = vec!["jupyter"];
    all.extend(args);
    all.extend(["--via", &t.addrs.login, "-p", "0", "--no-browser"]);
    let mut cmd = t.podtun(&all);
    cmd.stderr(Stdio::piped());
    let mut p = Podtun::spawn_command(cmd);
    let stderr = p.capture_stderr();
    (p, stderr)
}

/// Ctrl-C: SIGINT, then the exit status (bounded).
async fn ctrl_c(mut p: Podtun) -> ExitStatus {
    let pid = p.child.id().expect("podtun runs");
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent, "SIGINT to podtun");
    tokio::time::timeout(EXIT_TIMEOUT, p.child.wait())
        .await
        .expect("podtun did not exit in time after Ctrl-C")
        .expect("wait for podtun")
}

/// The `ready` event's URL answers on the laptop: 200 with the token, 403 without.
async fn url_works(t: &Topology, ready: &Value) {
    let url = ready["url"].as_str().expect("a URL").to_string();
    let (addr, path) = http::split_url(&url);
    assert!(addr.starts_with("127.0.0.1:"), "{url}");
    let (page, token) = path.split_once("?token=").expect("a tokenized URL");
    assert_eq!(page, "/lab", "{url}");
    let with = format!("/api/status?token={token}");
    let (with_token, without) = t
        .on_laptop(move || async move {
            let get = |p: String| {
                let addr = addr.clone();
                async move {
                    tokio::time::timeout(HTTP_TIMEOUT, http::get(&addr, &p))
                        .await
                        .expect("an HTTP answer in time")
                        .0
                }
            };
            (get(with).await, get("/api/status".into()).await)
        })
        .await;
    assert_eq!((with_token, without), (200, 403), "{url}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_submit_shows_pending_prints_a_working_url_and_ctrl_c_cancels_the_job() {
    let mut t = Topology::start(Shape::default()).await;
    let slurm = slurm_for(&mut t);
    // Another job holds the node: podtun's waits, and says why.
    let output = format!("--output={}/slurm-%j.out", t.login_home.path().display());
    let blocker = slurm.run("sbatch", &["--parsable", &output, "--wrap", "sleep 600"]);
    let blocker = blocker.trim().to_string();
    wait_until("the blocking job runs", SCHEDULE_TIMEOUT, || {
        slurm
            .squeue(&blocker)
            .is_some_and(|s| s.starts_with("RUNNING"))
    })
    .await;

    let (mut p, stderr) = spawn(&t, &["--slurm", "--time=30:00 --job-name=lab"]);
    wait_until(
        "podtun shows the job pending for Resources",
        READY_TIMEOUT,
        || {
            stderr
                .lock()
                .expect("stderr")
                .contains("is pending (Resources), time limit 30:00")
        },
    )
    .await;
    slurm.run("scancel", &[&blocker]);
    let ready = p.wait_for("ready", READY_TIMEOUT).await;
    let target = ready["target"].as_str().expect("target").to_string();
    let id = target
        .strip_prefix("slurm/")
        .expect("slurm/JOBID")
        .to_string();
    assert_eq!(ready["pod"], NODE, "{ready}");
    assert_eq!(
        slurm.squeue(&id).as_deref(),
        Some(&format!("RUNNING {NODE}")[..])
    );
    url_works(&t, &ready).await;
    {
        let text = stderr.lock().expect("stderr").clone();
        assert!(
            text.contains(&format!("submitted Slurm job {id}")),
            "{text}"
        );
        assert!(
            text.contains(&format!("Slurm job {id} is running on {NODE}, ")),
            "{text}"
        );
        assert!(
            text.contains(" left) (Ctrl-C to stop and cancel the job)"),
            "{text}"
        );
        assert!(
            !text.contains(ready["url"].as_str().expect("url")),
            "the token stays off stderr"
        );
    }

    let status = ctrl_c(p).await;
    assert!(status.success(), "podtun exits 0 after Ctrl-C: {status}");
    assert!(
        stderr
            .lock()
            .expect("stderr")
            .contains(&format!("cancelled Slurm job {id}")),
        "{}",
        stderr.lock().expect("stderr")
    );
    wait_until(
        &format!("job {id} gone from squeue"),
        CANCEL_TIMEOUT,
        || slurm.squeue(&id).is_none(),
    )
    .await;
    assert_eq!(slurm.job_state(&id), "JobState=CANCELLED Reason=None");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_job_target_attaches_and_ctrl_c_leaves_the_job_running() {
    let mut t = Topology::start(Shape::default()).await;
    let slurm = slurm_for(&mut t);
    let home = t.login_home.path();
    let script = home.join("lab.sh");
    std::fs::write(
        &script,
        "#!/bin/sh -l\nexec jupyter lab --no-browser --ip=\"$(hostname)\" --port=0\n",
    )
    .expect("job script");
    let output = format!("--output={}/slurm-%j.out", home.display());
    let id = slurm.run(
        "sbatch",
        &["--parsable", &output, &script.display().to_string()],
    );
    let id = id.trim().to_string();

    let target = format!("slurm/{id}");
    let (mut p, stderr) = spawn(&t, &[&target]);
    let ready = p.wait_for("ready", READY_TIMEOUT).await;
    assert_eq!(ready["target"], target.as_str(), "{ready}");
    assert_eq!(ready["pod"], NODE, "{ready}");
    url_works(&t, &ready).await;
    let status = ctrl_c(p).await;
    assert!(status.success(), "podtun exits 0 after Ctrl-C: {status}");
    let text = stderr.lock().expect("stderr").clone();
    assert!(!text.contains("cancelled"), "{text}");
    assert_eq!(
        slurm.squeue(&id).as_deref(),
        Some(&format!("RUNNING {NODE}")[..]),
        "a job podtun did not submit keeps running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_job_that_cannot_start_is_an_error_with_its_reason_and_is_cancelled() {
    let mut t = Topology::start(Shape::default()).await;
    let slurm = slurm_for(&mut t);
    let options = format!("-p {SHORT_PARTITION} --time=1:00:00");
    let cmd = t.podtun(&[
        "jupyter",
        "--via",
        &t.addrs.login,
        "--slurm",
        &options,
        "--no-browser",
    ]);
    let done = podtun::finish(cmd).await;
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(done.stdout.is_empty(), "nothing on stdout: {}", done.stdout);
    let text = done.stderr;
    let id = text
        .split("submitted Slurm job ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the job id on stderr")
        .to_string();
    assert!(
        text.contains(&format!(
            "error: Slurm job {id} cannot start: it is PENDING with reason PartitionTimeLimit"
        )),
        "{text}"
    );
    assert!(
        text.contains("hint: the time asked for is over the partition's limit"),
        "{text}"
    );
    assert!(
        text.contains(&format!("cancelled Slurm job {id}")),
        "{text}"
    );
    wait_until(
        &format!("job {id} gone from squeue"),
        CANCEL_TIMEOUT,
        || slurm.squeue(&id).is_none(),
    )
    .await;
}

/// Bound on a one-minute job hitting its limit and podtun reporting it: slurmctld checks
/// limits every 30 s, podtun looks at the job every 30 s, and the kill waits 5 s.
const TIME_LIMIT_END: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_job_hitting_its_time_limit_ends_podtun_with_timeout() {
    let mut t = Topology::start(Shape::default()).await;
    let _slurm = slurm_for(&mut t);
    let (mut p, stderr) = spawn(&t, &["--slurm", "--time=1"]);
    let ready = p.wait_for("ready", READY_TIMEOUT).await;
    let id = ready["target"]
        .as_str()
        .and_then(|t| t.strip_prefix("slurm/"))
        .expect("slurm/JOBID")
        .to_string();
    url_works(&t, &ready).await;
    let left = p.wait_for("time-left", HTTP_TIMEOUT).await;
    assert_eq!(left["job"], id.as_str(), "{left}");
    assert_eq!(left["warning"], false, "{left}");
    assert!(left["seconds"].as_u64().is_some_and(|s| s <= 60), "{left}");
    let warning = p.wait_for("time-left", TIME_LIMIT_END).await;
    assert_eq!(
        warning["warning"], true,
        "the last minute is announced: {warning}"
    );
    let status = tokio::time::timeout(TIME_LIMIT_END, p.child.wait())
        .await
        .expect("podtun did not stop after the job's time limit")
        .expect("wait for podtun");
    assert_eq!(status.code(), Some(1), "{status}");
    let text = stderr.lock().expect("stderr").clone();
    assert!(
        text.contains(&format!(
            "error: Slurm job {id} ended: TIMEOUT, reason TimeLimit"
        )),
        "{text}"
    );
    assert!(
        text.contains("hint: the job hit its time limit of 1:00"),
        "{text}"
    );
    assert!(
        !text.contains("cancelled Slurm job"),
        "nothing left to cancel: {text}"
    );
}

#[tokio::test]
async fn slurm_usage_errors() {
    let home = tempfile::tempdir().expect("home");
    for (args, says) in [
        (
            &["jupyter", "slurm/12x", "--via", "login"][..],
            "`12x` is not a Slurm job id",
        ),
        (&["jupyter", "--slurm", "-p gpu"][..], "no --via was given"),
        (
            &["jupyter", "slurm/12", "--slurm", "", "--via", "login"][..],
            "--slurm submits a new job, and slurm/12 names a running one",
        ),
        (
            &["jupyter", "pod-a", "--slurm", "", "--via", "login"][..],
            "--slurm runs Jupyter in a new Slurm job: it takes no TARGET",
        ),
        (
            &["jupyter", "slurm/12", "--env", "torch", "--via", "login"][..],
            "--env and --dir start a new job",
        ),
        (
            &["jupyter", "pod-a", "--env", "torch", "--via", "login"][..],
            "--env and --dir say how to start Jupyter: they need --start or --slurm",
        ),
    ] {
        let done = podtun::run_raw(home.path(), args).await;
        assert_eq!(done.status.code(), Some(2), "{args:?}: {}", done.stderr);
        assert!(done.stderr.contains(says), "{args:?}: {}", done.stderr);
    }
}

/// Bound on `reconnecting` and then `ready` after the SSH connection died (the backoff, a new
/// connection and a new look at the job included).
const RECOVERY: Duration = Duration::from_secs(90);
/// Bound on the watchdog cancelling a job after podtun was killed: its grace (60 s without a
/// heartbeat), its 5 s look, and scancel on a loaded machine.
const WATCHDOG_CANCEL: Duration = Duration::from_secs(180);

/// The job id of a `ready` event's `slurm/JOBID` target.
fn job_id(ready: &Value) -> String {
    ready["target"]
        .as_str()
        .and_then(|t| t.strip_prefix("slurm/"))
        .unwrap_or_else(|| panic!("no slurm/JOBID target in {ready}"))
        .to_string()
}

/// podtun's job watchdogs on the login host.
fn watchdogs(t: &Topology) -> Vec<String> {
    t.watchdogs("slurm-")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_lost_connection_keeps_the_port_and_the_submitted_job() {
    let mut t = Topology::start(Shape::default()).await;
    let slurm = slurm_for(&mut t);
    let (mut p, _stderr) = spawn(&t, &["--slurm", "--time=30:00"]);
    let ready = p.wait_for("ready", READY_TIMEOUT).await;
    let id = job_id(&ready);
    url_works(&t, &ready).await;

    t.kill_login_ssh_sessions();
    let ev = p.wait_for("reconnecting", RECOVERY).await;
    assert!(ev["reason"].is_string(), "{ev}");
    let again = p.wait_for("ready", RECOVERY).await;
    assert_eq!(again["local"], ready["local"], "the same local port");
    assert_eq!(again["url"], ready["url"], "the same server, the same URL");
    url_works(&t, &again).await;
    assert_eq!(
        slurm.squeue(&id).as_deref(),
        Some(&format!("RUNNING {NODE}")[..]),
        "the job podtun submitted outlives a lost connection"
    );
    // The lost connection's watchdog hands the job over to the new connection's.
    wait_until("one watchdog of the job", RECOVERY, || {
        watchdogs(&t).len() == 1
    })
    .await;

    let status = ctrl_c(p).await;
    assert!(status.success(), "podtun exits 0 after Ctrl-C: {status}");
    wait_until(
        &format!("job {id} gone from squeue, no watchdog left"),
        CANCEL_TIMEOUT,
        || slurm.squeue(&id).is_none() && watchdogs(&t).is_empty(),
    )
    .await;
    assert_eq!(slurm.job_state(&id), "JobState=CANCELLED Reason=None");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_submitted_job_is_cancelled_after_podtun_is_killed() {
    let mut t = Topology::start(Shape::default()).await;
    let slurm = slurm_for(&mut t);
    let (mut p, _stderr) = spawn(&t, &["--slurm", "--time=30:00"]);
    let ready = p.wait_for("ready", READY_TIMEOUT).await;
    let id = job_id(&ready);
    assert_eq!(watchdogs(&t).len(), 1, "{:?}", watchdogs(&t));

    p.child.start_kill().expect("kill -9 podtun");
    p.child.wait().await.expect("wait for podtun");
    wait_until(
        &format!("job {id} cancelled on the login host, its watchdog gone"),
        WATCHDOG_CANCEL,
        || slurm.squeue(&id).is_none() && watchdogs(&t).is_empty(),
    )
    .await;
    assert_eq!(slurm.job_state(&id), "JobState=CANCELLED Reason=None");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_job_in_the_background_is_listed_and_stop_cancels_it() {
    let mut t = Topology::start(Shape::default()).await;
    let slurm = slurm_for(&mut t);
    let start = [
        "jupyter",
        "--slurm",
        "--time=30:00",
        "--via",
        &t.addrs.login,
        "-p",
        "0",
        "--no-browser",
        "-d",
    ];
    let done = podtun::finish(t.podtun(&start)).await;
    assert!(done.status.success(), "{}", done.stderr);
    let url = done.stdout.trim().to_string();
    let ready = serde_json::json!({ "url": url });
    url_works(&t, &ready).await;

    let listed = podtun::finish(t.podtun(&["ls", "--json"])).await;
    assert!(listed.status.success(), "{}", listed.stderr);
    let entries: Vec<Value> = listed
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l}: {e}")))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["state"], "ready", "{entries:?}");
    let id = entries[0]["target"]
        .as_str()
        .and_then(|t| t.strip_prefix("slurm/"))
        .unwrap_or_else(|| panic!("ls names the job: {entries:?}"))
        .to_string();
    assert_eq!(
        slurm.squeue(&id).as_deref(),
        Some(&format!("RUNNING {NODE}")[..])
    );

    let stopped = podtun::finish(t.podtun(&["stop", "--all"])).await;
    assert!(stopped.status.success(), "{}", stopped.stderr);
    wait_until(
        &format!("job {id} cancelled, no watchdog, no podtun on the laptop"),
        CANCEL_TIMEOUT,
        || {
            slurm.squeue(&id).is_none()
                && watchdogs(&t).is_empty()
                && !t.laptop_commands().iter().any(|c| c.contains("podtun"))
        },
    )
    .await;
    assert_eq!(slurm.job_state(&id), "JobState=CANCELLED Reason=None");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slurm_errors_name_what_is_missing_or_not_yours() {
    let mut t = Topology::start(Shape::default()).await;
    let slurm = tokio::task::block_in_place(|| Slurm::start(&mut t));
    let profile = t.login_home.path().join(".profile");

    // Jupyter is not on the PATH the job's login shell gets: the job fails, podtun says why.
    std::fs::write(&profile, "").expect(".profile");
    let cmd = t.podtun(&[
        "jupyter",
        "--via",
        &t.addrs.login,
        "--slurm",
        "--time=10:00",
        "--no-browser",
    ]);
    let done = podtun::finish_within(cmd, READY_TIMEOUT).await;
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(
        done.stderr.contains("jupyter is not on PATH on node1"),
        "{}",
        done.stderr
    );
    assert!(
        done.stderr
            .contains("hint: Jupyter is not on the PATH of the job's login shell"),
        "{}",
        done.stderr
    );

    // Another user's job: refused, and left running.
    ensure_user(OTHER_USER, &["-M", "-r", "-s", "/usr/sbin/nologin"]);
    let other = slurm
        .command_as(
            OTHER_USER,
            Path::new("/"),
            "sbatch",
            &["--parsable", "--output=/dev/null", "--wrap", "sleep 600"],
        )
        .output()
        .expect("sbatch as another user");
    assert!(
        other.status.success(),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    let id = String::from_utf8_lossy(&other.stdout).trim().to_string();
    let target = format!("slurm/{id}");
    let attach = || t.podtun(&["jupyter", &target, "--via", &t.addrs.login, "--no-browser"]);
    let done = podtun::finish(attach()).await;
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(
        done.stderr.contains(&format!(
            "Slurm job {id} is not yours: it runs as `{OTHER_USER}`"
        )),
        "{}",
        done.stderr
    );
    assert!(done.stderr.contains("squeue --me"), "{}", done.stderr);
    assert!(
        slurm.squeue(&id).is_some(),
        "another user's job is left alone"
    );

    // Slurm's commands are not on the login shell's PATH.
    std::fs::write(&profile, "PATH=/nonexistent\nexport PATH\n").expect(".profile");
    let done = podtun::finish(attach()).await;
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(
        done.stderr.contains(&format!(
            "scontrol is not on login host `{}`'s PATH",
            t.addrs.login
        )),
        "{}",
        done.stderr
    );
    assert!(done.stderr.contains("module load slurm"), "{}", done.stderr);
    let cancelled = slurm
        .command_as(OTHER_USER, Path::new("/"), "scancel", &[&id])
        .status()
        .is_ok_and(|s| s.success());
    assert!(cancelled, "scancel {id} as its owner");
}
