//! The job: `slurm/JOBID` as a target, the batch script podtun submits for `--slurm` (POSIX sh),
//! the `sbatch` command line around it, and what sbatch answers. Pure: text in, text out.

use anyhow::anyhow;

use crate::error::hinted;
use crate::laptop::ssh::exec::{in_login_shell, remote_path, sh_quote};
use crate::plan::slurm::{JobId, JobSpec};

/// Where podtun keeps its Slurm files, relative to the home on the cluster (shared by the login
/// host and the nodes): `%j.out` for each job's output and `JOBID/` as its Jupyter runtime dir.
pub const STATE_DIR: &str = ".cache/podtun/slurm";

/// The name podtun's jobs carry in squeue.
pub const JOB_NAME: &str = "podtun-jupyter";

/// The prefix of the lines podtun's own remote commands print (the rest is login-shell noise).
pub const MARK: &str = "podtun-slurm:";

/// The lines that activate `--env` on the node: `. DIR/bin/activate` for a path, `conda
/// activate` for a name. A failure ends the job with a message in its output.
fn activation(env: &str) -> String {
    let conda = |name: &str| {
        format!(
            "command -v conda >/dev/null 2>&1 || {{ echo \"podtun: conda is not on PATH on $(hostname), cannot activate\" {name} >&2; exit 3; }}\n\
             eval \"$(conda shell.posix hook)\" && conda activate {name} || {{ echo \"podtun: conda could not activate\" {name} >&2; exit 3; }}\n"
        )
    };
    if env.contains('/') {
        let dir = remote_path(env);
        format!(
            "if [ -f {dir}/bin/activate ]; then . {dir}/bin/activate\n\
             elif [ -d {dir}/conda-meta ]; then\n{}\
             else echo \"podtun: no virtualenv or conda environment at\" {dir} \"on $(hostname)\" >&2; exit 3; fi\n",
            conda(&dir)
        )
    } else {
        conda(&sh_quote(env))
    }
}

/// The batch script (POSIX sh): Jupyter on the node's name and a port the kernel picks, in the
/// user's login environment (plus `--env`), with a runtime dir podtun knows, so that the
/// `jpserver-PID.json` it writes there tells podtun the node, the port and the token.
pub fn batch_script(env: Option<&str>) -> String {
    let mut body = env.map(activation).unwrap_or_default();
    body.push_str(
        "command -v jupyter >/dev/null 2>&1 || { echo \"podtun: jupyter is not on PATH on $(hostname)\" >&2; exit 127; }\n\
         exec jupyter lab --no-browser --ip=\"$(hostname)\" --port=0\n",
    );
    format!(
        "#!/bin/sh\n\
         # Jupyter for `podtun jupyter --slurm`: podtun finds the server through the\n\
         # jpserver-PID.json file Jupyter writes in ~/{STATE_DIR}/JOBID.\n\
         rt=\"$HOME/{STATE_DIR}/$SLURM_JOB_ID\"\n\
         mkdir -p \"$rt\" && chmod 700 \"$rt\" || exit 3\n\
         export JUPYTER_RUNTIME_DIR=\"$rt\"\n\
         {}\n",
        in_login_shell(&body)
    )
}

/// The command that submits [`batch_script`] (sent on its stdin) on the login host and prints
/// the job id: podtun's defaults first, then the user's `--slurm` options.
pub fn submit_command(spec: &JobSpec) -> String {
    let user: String = spec
        .sbatch_args
        .iter()
        .map(|a| format!(" {}", sh_quote(a)))
        .collect();
    format!(
        "command -v sbatch >/dev/null 2>&1 || {{ echo '{MARK} no-sbatch'; exit 3; }}\n\
         d=\"$HOME/{STATE_DIR}\"\n\
         mkdir -p \"$d\" && chmod 700 \"$d\" || {{ echo \"{MARK} no-dir $d\"; exit 3; }}\n\
         exec sbatch --parsable --job-name={JOB_NAME} --chdir={dir} --output=\"$d/%j.out\"{user}",
        dir = spec
            .dir
            .as_deref()
            .map_or("\"$HOME\"".to_string(), remote_path),
    )
}

/// The job id in what `sbatch --parsable` printed (`123`, or `123;cluster`).
pub fn parse_sbatch(stdout: &str) -> Option<JobId> {
    let line = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())?;
    let id = line
        .strip_prefix("Submitted batch job ")
        .unwrap_or(line)
        .split(';')
        .next()?;
    id.trim().parse().ok()
}

/// Why a submission failed, from sbatch's exit status, stdout and stderr.
pub fn submit_error(host: &str, status: Option<u32>, stdout: &str, stderr: &str) -> anyhow::Error {
    let said = |word: &str| {
        stdout
            .lines()
            .filter_map(|l| l.trim().strip_prefix(MARK))
            .any(|l| l.trim_start().starts_with(word))
    };
    if said("no-sbatch") {
        return hinted(
            anyhow!("sbatch is not on login host `{host}`'s PATH (in a login shell)"),
            "load Slurm there (e.g. `module load slurm` in ~/.profile), or check that this is the cluster's login host",
        );
    }
    // sbatch's own words: `sbatch: error: Batch job submission failed: Invalid account…`.
    let why: Vec<&str> = stderr
        .lines()
        .map(|l| l.trim().trim_start_matches("sbatch: error: ").trim())
        .filter(|l| !l.is_empty())
        .collect();
    let status = status.map_or("unknown".to_string(), |s| s.to_string());
    let err = if why.is_empty() {
        anyhow!("sbatch failed on login host `{host}` (exit status {status})")
    } else {
        anyhow!(
            "sbatch failed on login host `{host}` (exit status {status}): {}",
            why.join("; ")
        )
    };
    hinted(
        err,
        "check the --slurm options: `sbatch OPTIONS script` must work on the login host",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_command_quotes_user_options_after_the_defaults() {
        let spec = JobSpec::new("-p gpu --comment='it'\\''s; rm -rf ~'", None, None).expect("spec");
        let cmd = submit_command(&spec);
        let defaults = cmd.find("--output=").expect("podtun's --output");
        let user = cmd.find("'-p' 'gpu'").expect("user options, quoted");
        assert!(defaults < user, "{cmd}");
        assert!(cmd.contains(r"'--comment=it'\''s; rm -rf ~'"), "{cmd}");
        assert!(cmd.contains("--parsable"), "{cmd}");
        assert!(cmd.contains(&format!("\"$HOME/{STATE_DIR}\"")), "{cmd}");
    }

    #[test]
    fn script_runs_jupyter_on_the_node_name_in_the_login_environment() {
        let script = batch_script(None);
        assert!(script.starts_with("#!/bin/sh\n"), "{script}");
        assert!(
            script.contains(&format!("rt=\"$HOME/{STATE_DIR}/$SLURM_JOB_ID\"")),
            "{script}"
        );
        assert!(
            script.contains("export JUPYTER_RUNTIME_DIR=\"$rt\""),
            "{script}"
        );
        assert!(script.contains("-l -c"), "a login shell: {script}");
        assert!(script.contains("--ip="), "{script}");
        assert!(script.contains("--port=0"), "{script}");
        assert!(!script.contains("conda"), "{script}");
    }

    #[test]
    fn script_activates_a_venv_or_a_conda_env() {
        let venv = batch_script(Some("~/venvs/lab"));
        assert!(venv.contains("/bin/activate"), "{venv}");
        assert!(
            venv.contains("conda-meta"),
            "a conda env by path too: {venv}"
        );
        assert!(
            venv.contains("\"$HOME\""),
            "~ is the home on the node: {venv}"
        );
        let conda = batch_script(Some("torch"));
        assert!(conda.contains("conda activate"), "{conda}");
        assert!(conda.contains("torch"), "{conda}");
    }

    /// The script is valid POSIX sh (and so is what it runs in the login shell).
    #[cfg(unix)]
    #[test]
    fn script_parses_with_sh() {
        for env in [None, Some("~/venvs/it's"), Some("base")] {
            let script = batch_script(env);
            let out = std::process::Command::new("/bin/sh")
                .args(["-n", "-c", &script])
                .output()
                .expect("/bin/sh");
            assert!(
                out.status.success(),
                "{script}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let cmd = submit_command(
            &JobSpec::new("-p 'a b'", None, Some("~/my work".into())).expect("spec"),
        );
        let out = std::process::Command::new("/bin/sh")
            .args(["-n", "-c", &cmd])
            .output()
            .expect("/bin/sh");
        assert!(out.status.success(), "{cmd}");
    }

    #[test]
    fn sbatch_answers() {
        assert_eq!(parse_sbatch("123\n"), Some(JobId("123".into())));
        assert_eq!(parse_sbatch("124;cluster2\n"), Some(JobId("124".into())));
        assert_eq!(
            parse_sbatch("Submitted batch job 125\n"),
            Some(JobId("125".into()))
        );
        assert_eq!(parse_sbatch(""), None);
        assert_eq!(parse_sbatch("oops\n"), None);
    }

    #[test]
    fn submit_errors_quote_sbatch() {
        let text = crate::error::render(&submit_error(
            "login",
            Some(1),
            "",
            "sbatch: error: Batch job submission failed: Invalid partition name specified\n",
        ));
        assert!(
            text.contains("sbatch failed on login host `login` (exit status 1): Batch job submission failed: Invalid partition name specified"),
            "{text}"
        );
        assert!(text.contains("hint: check the --slurm options"), "{text}");
        let text = crate::error::render(&submit_error(
            "login",
            Some(3),
            "podtun-slurm: no-sbatch\n",
            "",
        ));
        assert!(
            text.contains("sbatch is not on login host `login`'s PATH"),
            "{text}"
        );
    }
}
