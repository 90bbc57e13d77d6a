//! Why Jupyter did not start, from what the shell said: a hint that fits the cause. Used for a
//! server podtun starts on an SSH host and for Jupyter in a Slurm job.

/// The hint for a start that failed for a known cause (exit status `status`, last lines
/// `log`): a broken interpreter, a missing module, a command not found, not executable.
pub fn failure_hint(status: &str, log: &[String]) -> Option<&'static str> {
    let said = |what: &str| log.iter().any(|l| l.contains(what));
    let hint = if said("bad interpreter") {
        "the interpreter on the first line of `jupyter` is missing or not executable for you there: \
         repair or recreate that environment, or name another with --env"
    } else if said("No module named") {
        "the environment of `jupyter` lacks a package: install JupyterLab in it (`pip install jupyterlab`), \
         or name another environment with --env"
    } else if said("command not found") || status == "127" {
        "a command `jupyter` runs is not on the PATH of a login shell there: \
         add its directory to PATH in ~/.profile, or name the environment with --env"
    } else if status == "126" {
        "`jupyter` (or its interpreter) is not executable for you there: check the permissions \
         of that environment"
    } else {
        return None;
    };
    Some(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_told_apart_by_what_the_shell_said() {
        let hint = |status: &str, log: &[&str]| {
            let log: Vec<String> = log.iter().map(|l| l.to_string()).collect();
            failure_hint(status, &log)
        };
        let bad = "bash: /home/u/.venv/bin/jupyter: /home/u/.venv/bin/python3: bad interpreter: Permission denied";
        assert!(hint("126", &[bad]).is_some_and(|h| h.contains("interpreter")));
        assert!(hint("1", &["No module named 'jupyterlab'"]).is_some_and(|h| h.contains("pip")));
        assert!(hint("127", &[]).is_some_and(|h| h.contains("PATH")));
        assert!(hint("126", &["denied"]).is_some_and(|h| h.contains("permissions")));
        assert_eq!(hint("1", &["Traceback"]), None);
    }
}
