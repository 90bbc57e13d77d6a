//! The raw command line, as clap parses it. Checks that involve several flags live in `plan.rs`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Forward a port from your laptop to Jupyter, redis or any service in a Kubernetes pod,
/// directly or through the cluster's login host.
#[derive(Debug, Parser)]
#[command(name = "podtun", version, about, max_term_width = 100)]
pub struct Cli {
    /// What to forward.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Forward Jupyter and print (and open) its tokenized URL.
    #[command(mut_arg("target", |arg| arg
        .help(JUPYTER_TARGET_HELP)
        .hide_possible_values(true)
        .value_parser(JupyterTarget)))]
    Jupyter(JupyterArgs),
    /// Forward redis (then: `redis-cli -p 6379`).
    Redis(PresetArgs),
    /// Forward any ports of a pod.
    Forward(ForwardArgs),
    /// Start a profile of the config file (`[profiles.NAME]`).
    Up(UpArgs),
    /// List the tunnels running on this machine.
    Ls(LsArgs),
    /// Stop tunnels (as Ctrl-C would stop them).
    Stop(StopArgs),
    /// Print a background tunnel's progress and errors.
    Logs(LogsArgs),
    /// Check each step from here to the pods: SSH, login host, API server, rights.
    Doctor(DoctorArgs),
    /// Print shell completions.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// The login-host side of `--via` (started by podtun itself over SSH).
    #[command(hide = true)]
    Agent(AgentArgs),
}

/// Arguments of `jupyter` and `redis`.
#[derive(Debug, Args)]
pub struct PresetArgs {
    /// The pod: NAME, pod/NAME, svc/NAME, deploy/NAME or sts/NAME (default: the namespace's
    /// Running pod that fits; a choice when several do).
    #[arg(value_name = "TARGET")]
    pub target: Option<String>,
    /// Remote port (number or container port name) instead of the discovered one.
    #[arg(long = "port", value_name = "[LOCAL:]REMOTE")]
    pub port: Option<String>,
    /// Flags shared by every forward.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Arguments of `jupyter`: those of every preset, and those of a server on the SSH host itself.
#[derive(Debug, Args)]
pub struct JupyterArgs {
    /// Target, port and the flags shared by every forward.
    #[command(flatten)]
    pub preset: PresetArgs,
    /// `@`: a Jupyter server on the last `--via` host.
    #[command(flatten)]
    pub host: HostArgs,
    /// `--slurm`: Jupyter in a Slurm batch job.
    #[command(flatten)]
    pub slurm: SlurmArgs,
}

/// Flags of Jupyter in a Slurm job (`--slurm`, or TARGET `slurm/JOBID` for a running job).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Jupyter in a Slurm job (--slurm, or TARGET slurm/JOBID)")]
pub struct SlurmArgs {
    /// Submit a batch job that runs Jupyter, through the --via login host, with these sbatch
    /// options ("" for none); podtun cancels it when it stops
    #[arg(
        long,
        value_name = "SBATCH_OPTIONS",
        allow_hyphen_values = true,
        conflicts_with = "start"
    )]
    pub slurm: Option<String>,
}

/// The TARGET that means "the last `--via` host itself" (never a pod name: those are DNS-1123).
pub const HOST_TARGET: &str = "@";

/// `jupyter`'s TARGET help: the pod targets, `@`, and `slurm/JOBID`.
const JUPYTER_TARGET_HELP: &str =
    "The pod: NAME, pod/NAME, svc/NAME, deploy/NAME or sts/NAME (default: the \
namespace's Running pod that fits; a choice when several do); or @: a Jupyter server on the last \
--via host itself (a cloud VM, a desktop, an HPC login host); or slurm/JOBID: Jupyter in a running \
Slurm job, reached through the --via login host";

/// Flags of `podtun jupyter @`: a Jupyter server on the SSH host itself.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Jupyter on the SSH host itself (TARGET @)")]
pub struct HostArgs {
    /// Start Jupyter there when none of yours runs (on a private socket; stopped with podtun).
    #[arg(long)]
    pub start: bool,
    /// With --start or --slurm: the conda environment (name or path) or virtualenv (path) to
    /// run it from.
    #[arg(long, value_name = "CONDA_ENV_OR_VENV_PATH")]
    pub env: Option<String>,
    /// With --start or --slurm: the directory to start it in (default: the home directory).
    #[arg(long, value_name = "PATH")]
    pub dir: Option<String>,
}

/// `jupyter`'s TARGET: any text (the plan checks it), with `@` offered by shell completions.
#[derive(Clone)]
struct JupyterTarget;

impl clap::builder::TypedValueParser for JupyterTarget {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        clap::builder::StringValueParser::new().parse_ref(cmd, arg, value)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        let host = clap::builder::PossibleValue::new(HOST_TARGET)
            .help("a Jupyter server on the last --via host itself");
        Some(Box::new(std::iter::once(host)))
    }
}

/// Arguments of `forward`.
#[derive(Debug, Args)]
pub struct ForwardArgs {
    /// The pod: NAME, pod/NAME, svc/NAME, deploy/NAME or sts/NAME (default: a choice among
    /// the namespace's Running pods).
    #[arg(value_name = "TARGET")]
    pub target: Option<String>,
    /// Ports to forward, as REMOTE or LOCAL:REMOTE (REMOTE: number or container port name).
    /// Without any, the pod's declared ports.
    #[arg(value_name = "[LOCAL:]REMOTE")]
    pub ports: Vec<String>,
    /// Flags shared by every forward.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Arguments of `doctor`: only the flags that say how to reach the cluster (a forward's
/// other flags mean nothing to it).
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Reach the cluster through these SSH hosts: jump hosts first, the login host last.
    #[arg(
        long,
        value_name = "HOST[,HOST...]",
        value_delimiter = ',',
        env = "PODTUN_VIA"
    )]
    pub via: Vec<String>,
    /// Namespace to check (default: the kubeconfig context's).
    #[arg(short, long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Kubeconfig context to use.
    #[arg(long, value_name = "CONTEXT")]
    pub context: Option<String>,
    /// Kubeconfig file (with --via: a path on the login host).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// More detail on stderr (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    /// SSH config file instead of ~/.ssh/config.
    #[arg(short = 'F', value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// Path of podtun on the login host (skips the lookup and the upload).
    #[arg(long, value_name = "PATH")]
    pub remote_bin: Option<String>,
    /// Never upload podtun to the login host.
    #[arg(long)]
    pub no_install: bool,
    /// What runs on the login host: podtun's agent, only kubectl (`kubectl proxy` on a private
    /// socket), or auto (podtun when it is there or can be uploaded, else kubectl).
    #[arg(long, value_name = "MODE", value_enum, hide_possible_values = true, default_value_t = AgentMode::Auto, env = "PODTUN_AGENT")]
    pub agent: AgentMode,
}

impl DoctorArgs {
    /// The same settings as a forward's flags (the others at their defaults).
    pub fn common(&self) -> CommonArgs {
        CommonArgs {
            via: self.via.clone(),
            namespace: self.namespace.clone(),
            context: self.context.clone(),
            kubeconfig: self.kubeconfig.clone(),
            container: None,
            selector: None,
            local_port: None,
            address: IpAddr::from([127, 0, 0, 1]),
            timeout: DOCTOR_TIMEOUT,
            no_browser: true,
            json: false,
            verbose: self.verbose,
            quiet: self.quiet,
            ssh_config: self.ssh_config.clone(),
            remote_bin: self.remote_bin.clone(),
            no_install: self.no_install,
            agent: self.agent,
            detach: false,
            launch: LaunchArgs {
                launch_grace: LAUNCH_GRACE,
                ..LaunchArgs::default()
            },
        }
    }
}

/// The bound `doctor` puts on the cluster side's waits (a forward's default `--timeout`).
const DOCTOR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Flags shared by `jupyter`, `redis` and `forward`.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Reach the cluster through these SSH hosts: jump hosts first, the login host last.
    #[arg(
        long,
        value_name = "HOST[,HOST...]",
        value_delimiter = ',',
        env = "PODTUN_VIA"
    )]
    pub via: Vec<String>,
    /// Namespace of the target (default: the kubeconfig context's).
    #[arg(short, long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Kubeconfig context to use.
    #[arg(long, value_name = "CONTEXT")]
    pub context: Option<String>,
    /// Kubeconfig file (with --via: a path on the login host).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Container of the pod (default: the one the preset fits, else the first).
    #[arg(short, long, value_name = "NAME")]
    pub container: Option<String>,
    /// Pick the pod by label selector instead of by name (not with a TARGET).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Local port (default: the remote port if free, else any free port).
    #[arg(short = 'p', long, value_name = "PORT")]
    pub local_port: Option<u16>,
    /// Local address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub address: IpAddr,
    /// How long to wait for the pod, the port and the token (e.g. 90s, 5m).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Do not open a browser.
    #[arg(long)]
    pub no_browser: bool,
    /// Print one JSON event per line on stdout.
    #[arg(long)]
    pub json: bool,
    /// More detail on stderr (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    /// SSH config file instead of ~/.ssh/config.
    #[arg(short = 'F', value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// Path of podtun on the login host (skips the lookup and the upload).
    #[arg(long, value_name = "PATH")]
    pub remote_bin: Option<String>,
    /// Never upload podtun to the login host.
    #[arg(long)]
    pub no_install: bool,
    /// What runs on the login host: podtun's agent, only kubectl (`kubectl proxy` on a private
    /// socket), or auto (podtun when it is there or can be uploaded, else kubectl).
    #[arg(long, value_name = "MODE", value_enum, hide_possible_values = true, default_value_t = AgentMode::Auto, env = "PODTUN_AGENT")]
    pub agent: AgentMode,
    /// Run in the background once ready (see `podtun ls`, `podtun stop`, `podtun logs`).
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Launching the pod first.
    #[command(flatten)]
    pub launch: LaunchArgs,
}

/// Flags that launch the pod before forwarding to it (no TARGET).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Launching the pod (no TARGET)")]
pub struct LaunchArgs {
    /// Run this command to create the pod (with --via on the login host, in your login shell),
    /// then forward to the pod it created; it must return once the pod exists (DSMLP: -b)
    #[arg(
        long,
        value_name = "COMMAND",
        allow_hyphen_values = true,
        conflicts_with = "image"
    )]
    pub launch: Option<String>,
    /// Create the pod from this image in your namespace, then forward to it
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// With --image: CPUs to request (and limit to), e.g. 2 or 500m
    #[arg(long, value_name = "CPU", requires = "image")]
    pub cpu: Option<String>,
    /// With --image: memory to request (and limit to), e.g. 8Gi
    #[arg(long, value_name = "MEMORY", requires = "image")]
    pub memory: Option<String>,
    /// With --image: GPUs (nvidia.com/gpu) to request
    #[arg(long, value_name = "N", requires = "image")]
    pub gpu: Option<u32>,
    /// Leave the launched pod running when podtun stops (it deletes it otherwise)
    #[arg(long)]
    pub keep: bool,
    /// How long the login host keeps a launched pod once the laptop has gone silent (killed,
    /// asleep, off the network) before it deletes it
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub launch_grace: std::time::Duration,
}

impl LaunchArgs {
    /// Whether a pod is launched at all.
    pub fn launches(&self) -> bool {
        self.launch.is_some() || self.image.is_some()
    }
}

/// The login host's default wait for a silent laptop before it deletes a launched pod.
pub const LAUNCH_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Arguments of `up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The profile's name.
    #[arg(value_name = "PROFILE")]
    pub profile: String,
    /// The pod, instead of the profile's.
    #[arg(value_name = "TARGET")]
    pub target: Option<String>,
    /// Flags shared by every forward; they win over the profile's settings.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Arguments of `ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// One JSON object per tunnel on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Tunnel ids (as `podtun ls` shows them) or targets (`jupyter`, `pod/jupyter`).
    #[arg(value_name = "ID|TARGET", required_unless_present = "all")]
    pub which: Vec<String>,
    /// Stop every tunnel.
    #[arg(long, conflicts_with = "which")]
    pub all: bool,
}

/// Arguments of `logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The tunnel's id (as `podtun ls` shows it) or target.
    #[arg(value_name = "ID|TARGET")]
    pub which: String,
}

/// `--agent`: what runs on the login host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AgentMode {
    /// podtun of this version when it is there or can be uploaded, else kubectl.
    Auto,
    /// podtun's agent (found there or uploaded).
    Podtun,
    /// Nothing but kubectl: the laptop runs the cluster half over `kubectl proxy`.
    Kubectl,
}

/// Arguments of the hidden `agent` subcommand.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// `pipe SOCKET`: splice stdin/stdout to a running agent's socket.
    #[arg(trailing_var_arg = true, hide = true)]
    pub rest: Vec<String>,
    /// More detail on stderr.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Parses `90`, `90s`, `5m`, `1h`, `500ms`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 30s, 5m or 1h)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{text}` has an unknown unit (try 30s, 5m or 1h)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("`{text}` is not a duration (try 30s, 5m or 1h)"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(
            parse_duration("5m"),
            Ok(std::time::Duration::from_secs(300))
        );
        assert_eq!(
            parse_duration("250ms"),
            Ok(std::time::Duration::from_millis(250))
        );
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
