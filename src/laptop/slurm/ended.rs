//! Why a job will not give Jupyter: it ended (failed, cancelled, timed out, lost its node…) or
//! it waits for something that will not come. Each is an error that quotes Slurm's state and
//! reason, with a hint for the case. Pure: a [`JobStatus`] in, an error out.

use anyhow::anyhow;

use super::status::{slurm_duration, JobStatus, Phase};
use crate::error::hinted;

/// Pending reasons after which a job does not start by itself, and what to do. Slurm keeps
/// such jobs pending (with `EnforcePartLimits=NO`, its default, even a job over the
/// partition's time limit): without this podtun would wait for ever.
const STUCK_REASONS: &[(&str, &str)] = &[
    (
        "PartitionTimeLimit",
        "the time asked for is over the partition's limit (see `sinfo -o '%P %l'`); ask for less with `--slurm '--time=HH:MM:SS'`",
    ),
    (
        "MaxWallDurationPerJobLimit",
        "the time asked for is over your account's or QOS's limit; ask for less with `--slurm '--time=HH:MM:SS'`",
    ),
    (
        "PartitionNodeLimit",
        "more nodes than the partition allows; ask for fewer with `--slurm '--nodes=1'`",
    ),
    (
        "BadConstraints",
        "no node has what the job asks for (features, memory, GPUs); check --constraint, --mem and --gres",
    ),
    (
        "DependencyNeverSatisfied",
        "a job it depends on did not end as required; drop --dependency",
    ),
    (
        "InvalidAccount",
        "the account is not one of yours; see `sacctmgr show assoc user=$USER`",
    ),
    ("InvalidQOS", "the QOS is not one you may use"),
    ("JobHeldUser", "the job is held; release it with `scontrol release JOBID`"),
    ("JobHeldAdmin", "an administrator holds the job; ask them why"),
];

/// The error for a waiting job that will not start by itself (a reason in [`STUCK_REASONS`]).
pub fn stuck_error(job: &JobStatus) -> Option<anyhow::Error> {
    if job.phase() != Phase::Waiting {
        return None;
    }
    let reason = job.reason.as_deref()?;
    let (_, hint) = STUCK_REASONS.iter().find(|(known, _)| {
        reason
            .split([',', ' '])
            .next()
            .is_some_and(|r| r.ends_with(known))
    })?;
    Some(hinted(
        anyhow!(
            "Slurm job {} cannot start: it is {} with reason {reason}",
            job.id,
            job.state
        ),
        hint.replace("JOBID", &job.id),
    ))
}

/// The error for a job that ended before Jupyter answered: Slurm's state and reason, the exit
/// code, the last lines of its output when there are any, and a hint for the state.
pub fn ended_error(job: &JobStatus, output_tail: &str) -> anyhow::Error {
    let mut said = job.state.clone();
    if let Some(reason) = &job.reason {
        said.push_str(&format!(", reason {reason}"));
    }
    if let Some(code) = job.exit_code.as_deref().filter(|c| *c != "0:0") {
        said.push_str(&format!(", exit code {code}"));
    }
    let base = job.state.split([' ', '+']).next().unwrap_or_default();
    let output = job.stdout.as_deref().unwrap_or("the job's output file");
    let status = job.exit_code.as_deref().unwrap_or_default();
    let status = status.split(':').next().unwrap_or_default();
    let lines: Vec<String> = output_tail.lines().map(str::to_string).collect();
    // What the job's shell or Python said is the surest cause; 127 alone is Jupyter missing.
    let cause = crate::jupyter::start::failure_hint(status, &lines)
        .filter(|_| status != "127" || lines.iter().any(|l| l.contains("No module named")));
    let hint = match base {
        "FAILED" | "COMPLETED" if cause.is_some() => cause.unwrap_or_default().to_string(),
        "TIMEOUT" => format!(
            "the job hit its time limit{}; ask for more with `--slurm '--time=HH:MM:SS'`",
            job.time_limit
                .map(|l| format!(" of {}", slurm_duration(l)))
                .unwrap_or_default()
        ),
        "OUT_OF_MEMORY" => "ask for more memory with `--slurm '--mem=…'`".to_string(),
        "CANCELLED" => {
            "it was cancelled (scancel, or an administrator); start a new one".to_string()
        }
        "NODE_FAIL" | "BOOT_FAIL" => format!(
            "its node{} failed; start a new job",
            job.node().map(|n| format!(" {n}")).unwrap_or_default()
        ),
        "PREEMPTED" => "a job with a higher priority took its node; start a new one, or use a \
                        partition or QOS without preemption"
            .to_string(),
        "DEADLINE" => "it could not start before its --deadline".to_string(),
        _ if job
            .exit_code
            .as_deref()
            .is_some_and(|c| c.starts_with("127:")) =>
        {
            "Jupyter is not on the PATH of the job's login shell on its node: load it in \
             ~/.profile (e.g. `module load jupyter`), or name its environment with --env"
                .to_string()
        }
        _ => format!("see {output} on the login host"),
    };
    let mut err = anyhow!("Slurm job {} ended: {said}", job.id);
    let tail = output_tail.trim();
    if !tail.is_empty() {
        let lines: String = tail.lines().map(|l| format!("\n      {l}")).collect();
        err = anyhow!("the job's output ends with:{lines}").context(err.to_string());
    }
    hinted(err, hint)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Slurm's empty values, as the parser turns them into `None`.
    fn present(reason: &str) -> Option<String> {
        (reason != "None").then(|| reason.to_string())
    }

    fn render(err: &anyhow::Error) -> String {
        crate::error::render(err)
    }

    #[test]
    fn failed_job_quotes_reason_exit_code_and_output() {
        let line = "JobId=14 JobState=FAILED Reason=NonZeroExitCode ExitCode=127:0 \
                    RunTime=00:00:01 TimeLimit=UNLIMITED NodeList=node1 BatchHost=node1 \
                    StdOut=/home/alice/.cache/podtun/slurm/14.out";
        let job = JobStatus::from_scontrol(line).expect("parsed");
        let text = render(&ended_error(
            &job,
            "podtun: jupyter is not on PATH on node1\n",
        ));
        assert!(
            text.contains("Slurm job 14 ended: FAILED, reason NonZeroExitCode, exit code 127:0"),
            "{text}"
        );
        assert!(text.contains("jupyter is not on PATH on node1"), "{text}");
        assert!(
            text.contains("hint: Jupyter is not on the PATH of the job's login shell"),
            "{text}"
        );
        let other = JobStatus::from_scontrol(&line.replace("ExitCode=127:0", "ExitCode=1:0"))
            .expect("parsed");
        let text = render(&ended_error(&other, "Traceback …\n"));
        assert!(
            text.contains("see /home/alice/.cache/podtun/slurm/14.out on the login host"),
            "{text}"
        );
    }

    #[test]
    fn a_job_whose_jupyter_cannot_run_gets_a_hint_for_the_cause() {
        let line = "JobId=15 JobState=FAILED Reason=NonZeroExitCode ExitCode=126:0 \
                    NodeList=node1 BatchHost=node1 StdOut=/home/alice/.cache/podtun/slurm/15.out";
        let job = JobStatus::from_scontrol(line).expect("parsed");
        let said = "/var/spool/slurmd/job00015/slurm_script: /home/alice/venv/bin/jupyter: \
                    /home/alice/venv/bin/python3: bad interpreter: Permission denied\n";
        let text = render(&ended_error(&job, said));
        assert!(text.contains("exit code 126:0"), "{text}");
        assert!(
            text.contains("bad interpreter: Permission denied"),
            "{text}"
        );
        assert!(
            text.contains("hint: the interpreter on the first line of `jupyter`"),
            "{text}"
        );
        let missing = JobStatus::from_scontrol(&line.replace("126:0", "1:0")).expect("parsed");
        let said = "ModuleNotFoundError: No module named 'jupyterlab'\n";
        let text = render(&ended_error(&missing, said));
        assert!(text.contains("pip install jupyterlab"), "{text}");
    }

    #[test]
    fn pending_jobs_that_cannot_start_are_errors() {
        let waiting = |state: &str, reason: &str| JobStatus {
            id: "16".into(),
            state: state.into(),
            reason: present(reason),
            ..JobStatus::default()
        };
        let text = render(&stuck_error(&waiting("PENDING", "PartitionTimeLimit")).expect("stuck"));
        assert!(
            text.contains(
                "Slurm job 16 cannot start: it is PENDING with reason PartitionTimeLimit"
            ),
            "{text}"
        );
        assert!(text.contains("--time="), "{text}");
        let text = render(&stuck_error(&waiting("PENDING", "JobHeldUser")).expect("stuck"));
        assert!(text.contains("scontrol release 16"), "{text}");
        assert!(stuck_error(&waiting("PENDING", "QOSMaxWallDurationPerJobLimit")).is_some());
        for reason in [
            "Resources",
            "Priority",
            "None",
            "ReqNodeNotAvail, UnavailableNodes:n1",
        ] {
            assert!(
                stuck_error(&waiting("PENDING", reason)).is_none(),
                "{reason}"
            );
        }
        assert!(stuck_error(&waiting("RUNNING", "JobHeldUser")).is_none());
    }

    #[test]
    fn end_states_have_hints() {
        let ended = |state: &str, reason: &str| {
            let job = JobStatus {
                id: "15".into(),
                state: state.into(),
                reason: present(reason),
                time_limit: Some(Duration::from_secs(3600)),
                nodes: Some("node2".into()),
                ..JobStatus::default()
            };
            render(&ended_error(&job, ""))
        };
        let text = ended("TIMEOUT", "TimeLimit");
        assert!(text.contains("ended: TIMEOUT, reason TimeLimit"), "{text}");
        assert!(text.contains("time limit of 1:00:00"), "{text}");
        assert!(text.contains("--time="), "{text}");
        assert!(ended("OUT_OF_MEMORY", "OutOfMemory").contains("--mem="));
        assert!(ended("CANCELLED", "None").contains("it was cancelled"));
        assert!(ended("NODE_FAIL", "NodeDown").contains("its node node2 failed"));
        assert!(ended("PREEMPTED", "None").contains("higher priority"));
        let text = ended("CANCELLED", "None");
        assert!(text.contains("Slurm job 15 ended: CANCELLED\n"), "{text}");
    }
}
