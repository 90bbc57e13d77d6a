//! The checks of `podtun jupyter @`: flags a pod target accepts that mean nothing, or
//! something else, for a Jupyter server on the SSH host itself.

use crate::cli::PresetArgs;
use crate::error::usage;

/// Checks the flags of `podtun jupyter @` that a pod target would accept.
pub fn check_args(args: &PresetArgs) -> anyhow::Result<()> {
    let common = &args.common;
    if common.via.iter().all(|h| h.trim().is_empty()) {
        return Err(usage(
            "the target `@` means the last --via host, and no --via was given",
            Some("name the SSH host: `podtun jupyter @ --via HOST` (jump hosts first: `--via bastion,HOST`)".into()),
        ));
    }
    if common.selector.is_some() {
        return Err(usage(
            "-l picks a pod by label; the target `@` is the SSH host itself",
            Some("drop -l, or drop `@` to forward to a pod".into()),
        ));
    }
    if let Some(port) = &args.port {
        let remote = port.rsplit(':').next().unwrap_or_default();
        if remote.parse::<u16>().is_err() {
            return Err(usage(
                format!("with the target `@`, --port names the server's port number, not `{port}`"),
                Some("`--port 8888` picks the server on port 8888 (`--port 9000:8888`: locally on 9000)".into()),
            ));
        }
    }
    Ok(())
}
