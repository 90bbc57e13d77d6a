//! What Slurm says about a job: `scontrol show job -o` and `squeue` lines parsed into a
//! [`JobStatus`], the job's phase and its times. Pure: text in, values out.

use std::fmt;
use std::time::Duration;

pub use crate::output::slurm_duration;

/// What podtun asks squeue for, `|`-separated: job id, state, reason, node list, time left,
/// time limit, time used (`squeue -h -o FORMAT`).
pub const SQUEUE_FORMAT: &str = "%i|%T|%r|%N|%L|%l|%M";

/// Where a job is in its life, as far as reaching Jupyter goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not started yet: pending, held, requeued, its node booting, suspended.
    Waiting,
    /// Running on its node(s).
    Running,
    /// Ending (`COMPLETING`, `STAGE_OUT`): the final state follows shortly.
    Ending,
    /// Over, for good.
    Ended,
}

/// One job as Slurm reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobStatus {
    /// The job id (`123`, `123_4` for an array task).
    pub id: String,
    /// `PENDING`, `RUNNING`, `FAILED`…, as Slurm spells it.
    pub state: String,
    /// The user the job runs as (`UserId=alice(1001)` gives `alice`); `None` when not said.
    pub user: Option<String>,
    /// Slurm's reason (`Resources`, `Priority`, `NonZeroExitCode`, `TimeLimit`…); `None` when
    /// Slurm gives none.
    pub reason: Option<String>,
    /// The node list (`node1`, `node[1-2]`); `None` before the job has nodes.
    pub nodes: Option<String>,
    /// The node that runs the batch script, where Jupyter listens.
    pub batch_host: Option<String>,
    /// The time limit; `None` when unlimited or unknown.
    pub time_limit: Option<Duration>,
    /// How long the job has run.
    pub run_time: Option<Duration>,
    /// `ExitCode=STATUS:SIGNAL`, e.g. `3:0`.
    pub exit_code: Option<String>,
    /// The path of the job's standard output on the cluster.
    pub stdout: Option<String>,
    /// The path of its standard error, when it is another file.
    pub stderr: Option<String>,
}

/// Slurm prints this for an empty value.
fn present(value: &str) -> Option<String> {
    let v = value.trim();
    let empty = v.is_empty() || v == "(null)" || v == "None" || v == "N/A" || v == "n/a";
    (!empty).then(|| v.to_string())
}

impl JobStatus {
    /// Parses the line `scontrol show job -o ID` prints for the job (`Key=Value` fields; a
    /// value may hold spaces, which continue it until the next `Key=`).
    pub fn from_scontrol(line: &str) -> Option<JobStatus> {
        let mut fields: Vec<(&str, String)> = Vec::new();
        for word in line.split_whitespace() {
            match word.split_once('=') {
                Some((key, value))
                    if !key.is_empty()
                        && key
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"/:_".contains(&b)) =>
                {
                    fields.push((key, value.to_string()))
                }
                _ => {
                    if let Some((_, value)) = fields.last_mut() {
                        value.push(' ');
                        value.push_str(word);
                    }
                }
            }
        }
        let get = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.as_str())
        };
        let id = present(get("JobId")?)?;
        let stdout = get("StdOut").and_then(present);
        let stderr = get("StdErr")
            .and_then(present)
            .filter(|e| Some(e) != stdout.as_ref());
        Some(JobStatus {
            id,
            state: get("JobState").and_then(present)?,
            user: get("UserId").and_then(|u| present(u.split('(').next().unwrap_or_default())),
            reason: get("Reason").and_then(present),
            nodes: get("NodeList").and_then(present),
            batch_host: get("BatchHost").and_then(present),
            time_limit: get("TimeLimit").and_then(parse_duration),
            run_time: get("RunTime").and_then(parse_duration),
            exit_code: get("ExitCode").and_then(present),
            stdout,
            stderr,
        })
    }

    /// Parses a line `squeue -h -o` [`SQUEUE_FORMAT`] prints.
    pub fn from_squeue(line: &str) -> Option<JobStatus> {
        let f: Vec<&str> = line.trim_end_matches(['\r', '\n']).split('|').collect();
        let [id, state, reason, nodes, _left, limit, used] = f.as_slice() else {
            return None;
        };
        Some(JobStatus {
            id: present(id)?,
            state: present(state)?,
            reason: present(reason),
            nodes: present(nodes),
            batch_host: None,
            time_limit: parse_duration(limit),
            run_time: parse_duration(used),
            ..JobStatus::default()
        })
    }

    /// Where the job is in its life.
    pub fn phase(&self) -> Phase {
        // The base state: Slurm may append flags (`CANCELLED by 1001`, `RUNNING+…`).
        let base = self.state.split([' ', '+']).next().unwrap_or_default();
        match base {
            "RUNNING" => Phase::Running,
            "COMPLETING" | "STAGE_OUT" | "SIGNALING" => Phase::Ending,
            "COMPLETED" | "FAILED" | "CANCELLED" | "TIMEOUT" | "NODE_FAIL" | "OUT_OF_MEMORY"
            | "PREEMPTED" | "BOOT_FAIL" | "DEADLINE" | "REVOKED" | "SPECIAL_EXIT" => Phase::Ended,
            _ => Phase::Waiting,
        }
    }

    /// The node Jupyter runs on: the batch host, else the first node of the list.
    pub fn node(&self) -> Option<String> {
        if let Some(host) = &self.batch_host {
            return Some(host.clone());
        }
        let list = self.nodes.as_deref()?;
        // `node[1-3,7]` → `node1`; `a,b` → `a`.
        match list.split_once('[') {
            Some((prefix, range)) => {
                let first = range.split([',', '-', ']']).next().unwrap_or_default();
                Some(format!("{prefix}{first}"))
            }
            None => list.split(',').next().map(str::to_string),
        }
    }

    /// Time left before the limit ends the job; `None` without a limit.
    pub fn time_left(&self) -> Option<Duration> {
        Some(
            self.time_limit?
                .saturating_sub(self.run_time.unwrap_or_default()),
        )
    }
}

/// A progress line: `Slurm job 12 is pending (Resources)`, `… is running on node1, 1:59:02 left`.
impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = &self.id;
        match self.phase() {
            Phase::Waiting => {
                write!(f, "Slurm job {id} is {}", self.state.to_lowercase())?;
                if let Some(reason) = &self.reason {
                    write!(f, " ({reason})")?;
                }
                if let Some(limit) = self.time_limit {
                    write!(f, ", time limit {}", slurm_duration(limit))?;
                }
                Ok(())
            }
            Phase::Running => {
                write!(f, "Slurm job {id} is running")?;
                if let Some(node) = self.node() {
                    write!(f, " on {node}")?;
                }
                match self.time_left() {
                    Some(left) => write!(f, ", {} left", slurm_duration(left)),
                    None => f.write_str(", no time limit"),
                }
            }
            Phase::Ending | Phase::Ended => {
                write!(f, "Slurm job {id} is {}", self.state)?;
                if let Some(reason) = &self.reason {
                    write!(f, " ({reason})")?;
                }
                Ok(())
            }
        }
    }
}

/// A Slurm time (`[DAYS-]HOURS:MINUTES:SECONDS`, `MINUTES:SECONDS`, `MINUTES`); `None` for
/// `UNLIMITED`, `INVALID`, `NOT_SET` and anything else.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (days, clock) = match text.split_once('-') {
        Some((d, rest)) => (d.parse::<u64>().ok()?, rest),
        None => (0, text),
    };
    let parts: Vec<u64> = clock
        .split(':')
        .map(|p| p.parse::<u64>().ok())
        .collect::<Option<_>>()?;
    let (h, m, s) = match (parts.as_slice(), days > 0) {
        ([h, m, s], _) => (*h, *m, *s),
        ([m, s], false) => (0, *m, *s),
        ([h, m], true) => (*h, *m, 0),
        ([m], false) => (0, *m, 0),
        ([h], true) => (*h, 0, 0),
        _ => return None,
    };
    Some(Duration::from_secs(((days * 24 + h) * 60 + m) * 60 + s))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: &str = "JobId=12 JobName=podtun-jupyter UserId=alice(1001) GroupId=alice(1001) \
        MCS_label=N/A Priority=4294901759 Nice=0 Account=(null) QOS=(null) JobState=RUNNING \
        Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 \
        RunTime=00:01:05 TimeLimit=02:00:00 TimeMin=N/A SubmitTime=2026-12-04T12:38:29 \
        Partition=debug AllocNode:Sid=login:1885 ReqNodeList=(null) NodeList=node1 \
        BatchHost=node1 NumNodes=1 NumCPUs=2 TRES=cpu=2,node=1,billing=2 \
        Command=(null) WorkDir=/home/alice/my notebooks StdErr=/home/alice/slurm-12.out \
        StdIn=/dev/null StdOut=/home/alice/slurm-12.out Power= ";

    #[test]
    fn scontrol_running_job() {
        let job = JobStatus::from_scontrol(RUNNING).expect("parsed");
        assert_eq!(job.id, "12");
        assert_eq!(job.user.as_deref(), Some("alice"));
        assert_eq!(job.phase(), Phase::Running);
        assert_eq!(job.reason, None);
        assert_eq!(job.node().as_deref(), Some("node1"));
        assert_eq!(job.time_limit, Some(Duration::from_secs(7200)));
        assert_eq!(job.time_left(), Some(Duration::from_secs(7200 - 65)));
        assert_eq!(job.stdout.as_deref(), Some("/home/alice/slurm-12.out"));
        assert_eq!(job.stderr, None, "the same file as stdout");
        assert_eq!(
            job.to_string(),
            "Slurm job 12 is running on node1, 1:58:55 left"
        );
    }

    #[test]
    fn scontrol_pending_job_quotes_the_reason() {
        let line = "JobId=13 JobName=wrap JobState=PENDING Reason=Resources Dependency=(null) \
                    ExitCode=0:0 RunTime=00:00:00 TimeLimit=UNLIMITED NodeList=(null) \
                    StdOut=/home/alice/slurm-13.out";
        let job = JobStatus::from_scontrol(line).expect("parsed");
        assert_eq!(job.phase(), Phase::Waiting);
        assert_eq!(job.node(), None);
        assert_eq!(job.time_left(), None);
        assert_eq!(job.to_string(), "Slurm job 13 is pending (Resources)");
        let limited = line.replace("UNLIMITED", "1-00:00:00");
        let job = JobStatus::from_scontrol(&limited).expect("parsed");
        assert_eq!(
            job.to_string(),
            "Slurm job 13 is pending (Resources), time limit 1-00:00:00"
        );
    }

    #[test]
    fn scontrol_garbage_is_none() {
        assert_eq!(JobStatus::from_scontrol(""), None);
        assert_eq!(
            JobStatus::from_scontrol("slurm_load_jobs error: Invalid job id specified"),
            None
        );
    }

    #[test]
    fn squeue_lines() {
        let job = JobStatus::from_squeue("12|RUNNING|None|node[3-5,9]|1:58:55|2:00:00|1:05")
            .expect("parsed");
        assert_eq!(job.phase(), Phase::Running);
        assert_eq!(job.node().as_deref(), Some("node3"));
        assert_eq!(job.time_left(), Some(Duration::from_secs(7200 - 65)));
        let job = JobStatus::from_squeue("13|PENDING|Priority||UNLIMITED|UNLIMITED|0:00")
            .expect("parsed");
        assert_eq!(job.reason.as_deref(), Some("Priority"));
        assert_eq!(job.nodes, None);
        assert_eq!(JobStatus::from_squeue("13|PENDING"), None);
    }

    #[test]
    fn phases() {
        let phase = |state: &str| {
            JobStatus {
                state: state.into(),
                ..JobStatus::default()
            }
            .phase()
        };
        for s in [
            "PENDING",
            "CONFIGURING",
            "REQUEUED",
            "SUSPENDED",
            "REQUEUE_HOLD",
        ] {
            assert_eq!(phase(s), Phase::Waiting, "{s}");
        }
        assert_eq!(phase("RUNNING"), Phase::Running);
        assert_eq!(phase("COMPLETING"), Phase::Ending);
        for s in [
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "CANCELLED by 1001",
            "TIMEOUT",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
            "PREEMPTED",
            "BOOT_FAIL",
            "DEADLINE",
        ] {
            assert_eq!(phase(s), Phase::Ended, "{s}");
        }
    }

    #[test]
    fn durations() {
        let d = |s: &str| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(d("UNLIMITED"), None);
        assert_eq!(d("INVALID"), None);
        assert_eq!(d("NOT_SET"), None);
        assert_eq!(d("0:00"), Some(0));
        assert_eq!(d("5:07"), Some(307));
        assert_eq!(d("30"), Some(1800));
        assert_eq!(d("02:00:00"), Some(7200));
        assert_eq!(d("1-00:00:00"), Some(86_400));
        assert_eq!(d("2-3"), Some(2 * 86_400 + 3 * 3600));
        assert_eq!(d("1-02:03"), Some(86_400 + 2 * 3600 + 3 * 60));
        for secs in [0, 59, 61, 3600, 7199, 86_400, 90_061] {
            let text = slurm_duration(Duration::from_secs(secs));
            assert_eq!(d(&text), Some(secs), "{text}");
        }
        assert_eq!(slurm_duration(Duration::from_secs(90_061)), "1-01:01:01");
    }
}
