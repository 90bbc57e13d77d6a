//! What `--slurm` and `slurm/JOBID` ask for: a job to submit ([`JobSpec`]) or one that runs
//! already ([`JobId`]). Pure: text in, checked values out.

use std::fmt;
use std::str::FromStr;

/// The target kind for an existing job: `slurm/JOBID`. Pod names cannot hold a `/`, and no
/// Kubernetes kind is called `slurm`, so the spelling is never a pod.
pub const TARGET_KIND: &str = "slurm";

/// A Slurm job id: `123`, or `123_4` for a task of an array job.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobId(pub(crate) String);

impl JobId {
    /// The id as Slurm prints it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for JobId {
    type Err = String;

    fn from_str(s: &str) -> Result<JobId, String> {
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
        let ok = match s.split_once('_') {
            Some((job, task)) => digits(job) && digits(task),
            None => digits(s),
        };
        if ok {
            Ok(JobId(s.to_string()))
        } else {
            Err(format!(
                "`{s}` is not a Slurm job id (digits, or JOB_TASK for an array task)"
            ))
        }
    }
}

/// `slurm/JOBID` → the job id (or why it is not one); any other target → `None`.
pub fn parse_target(input: &str) -> Option<Result<JobId, String>> {
    let (kind, id) = input.split_once('/')?;
    kind.eq_ignore_ascii_case(TARGET_KIND)
        .then(|| id.parse::<JobId>())
}

/// What to submit for `--slurm`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSpec {
    /// sbatch options from `--slurm "…"`, split as a shell would; they come after podtun's
    /// defaults, so `--output`, `--chdir` or `--job-name` there win.
    pub sbatch_args: Vec<String>,
    /// `--env`: a virtualenv or conda env directory (holds a `/`: `~/venvs/lab`), or a conda
    /// env name.
    pub env: Option<String>,
    /// `--dir`: where Jupyter starts (sbatch `--chdir`); the home by default.
    pub dir: Option<String>,
}

impl JobSpec {
    /// Splits the `--slurm` value (`-p gpu --time=2:00:00 --gres=gpu:1`) with shell quoting.
    pub fn new(slurm: &str, env: Option<String>, dir: Option<String>) -> Result<JobSpec, String> {
        let sbatch_args =
            shlex::split(slurm).ok_or_else(|| format!("--slurm {slurm:?}: unbalanced quotes"))?;
        for (flag, value) in [("--env", &env), ("--dir", &dir)] {
            if let Some(v) = value {
                if v.is_empty() || v.contains('\n') {
                    return Err(format!("{flag} {v:?}: not a name or a path"));
                }
            }
        }
        Ok(JobSpec {
            sbatch_args,
            env,
            dir,
        })
    }
}

/// Where Jupyter runs: a job podtun submits, or one that runs already.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `--slurm OPTIONS`: submit the batch script; cancelled when podtun stops.
    Submit(JobSpec),
    /// TARGET `slurm/JOBID`: left running when podtun stops.
    Existing(JobId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(parse_target("slurm/123"), Some(Ok(JobId("123".into()))));
        assert_eq!(parse_target("SLURM/7_3"), Some(Ok(JobId("7_3".into()))));
        assert!(matches!(parse_target("slurm/abc"), Some(Err(e)) if e.contains("`abc`")));
        assert!(matches!(parse_target("slurm/"), Some(Err(_))));
        assert!(matches!(parse_target("slurm/1_"), Some(Err(_))));
        assert_eq!(parse_target("pod/slurm"), None);
        assert_eq!(parse_target("slurm-123"), None);
        assert_eq!(parse_target("123"), None);
    }

    #[test]
    fn spec_splits_like_a_shell() {
        let spec =
            JobSpec::new("-p gpu --time=2:00:00 --comment='my lab'", None, None).expect("spec");
        assert_eq!(
            spec.sbatch_args,
            ["-p", "gpu", "--time=2:00:00", "--comment=my lab"]
        );
        assert!(JobSpec::new("--comment='open", None, None).is_err());
        assert!(JobSpec::new("", Some(String::new()), None).is_err());
        assert_eq!(
            JobSpec::new("", None, None).expect("spec").sbatch_args,
            Vec::<String>::new()
        );
    }
}
