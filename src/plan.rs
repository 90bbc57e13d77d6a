//! Raw flags → a checked `Plan`: the target, the request for the cluster side, where to listen
//! and how to report. Checks that involve several flags live here.

pub mod host;
pub mod slurm;

use std::net::IpAddr;
use std::path::PathBuf;

use self::slurm::{JobSpec, Source};
use crate::cli::{
    AgentMode, CommonArgs, DoctorArgs, ForwardArgs, HostArgs, JupyterArgs, LaunchArgs, PresetArgs,
    HOST_TARGET,
};
use crate::cluster::client::ClusterRef;
use crate::cluster::tunnel::Spec;
use crate::error::usage;
use crate::proto::wire::{Launch, PodTemplate, Request};

/// Everything a forward needs, checked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What the cluster side must do (sent as is to the agent in via mode).
    pub request: Request,
    /// The same, parsed.
    pub spec: Spec,
    /// The target as the user typed it, for output.
    pub target_label: String,
    /// Local address to listen on.
    pub address: IpAddr,
    /// `-p`: the local port of the (single) forward.
    pub local_port: Option<u16>,
    /// What to reach: a pod, a server on the SSH host, a Slurm job.
    pub target: Target,
    /// How: from this machine, or through the login host.
    pub route: Route,
    /// `-F`.
    pub ssh_config: Option<PathBuf>,
    /// `--remote-bin`.
    pub remote_bin: Option<String>,
    /// `--no-install`.
    pub no_install: bool,
    /// `--agent`.
    pub agent: AgentMode,
    /// `--json`.
    pub json: bool,
    /// Open the browser on Jupyter's URL.
    pub browser: bool,
    /// `-q`.
    pub quiet: bool,
    /// `-d`: run in the background once ready.
    pub detach: bool,
    /// `--keep`: a launched pod outlives podtun.
    pub keep: bool,
    /// `--launch-grace`: how long the login host keeps a launched pod for a silent laptop.
    pub launch_grace: std::time::Duration,
}

/// What a plan reaches.
#[derive(Debug, Clone)]
pub enum Target {
    /// A pod, as [`Plan::spec`] names it (or none named: the one that fits the preset).
    Pod,
    /// TARGET `@`: a Jupyter server on the last `--via` host itself.
    Host(HostArgs),
    /// `--slurm` or TARGET `slurm/JOBID`: Jupyter in a Slurm job.
    Slurm(Source),
}

/// How a plan reaches its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This machine talks to the cluster itself.
    Local,
    /// Through SSH: the hosts in order, jump hosts first, the login host last.
    Via(Vec<String>),
}

impl Plan {
    /// The SSH hosts of a `--via` route, in order; none in local mode.
    pub fn via(&self) -> &[String] {
        match &self.route {
            Route::Via(hosts) => hosts,
            Route::Local => &[],
        }
    }

    /// `podtun jupyter` / `podtun redis`.
    pub fn from_preset(args: &PresetArgs, preset: &str) -> anyhow::Result<Plan> {
        let ports = args.port.iter().cloned().collect();
        Plan::build(args.target.as_deref(), ports, &args.common, preset)
    }

    /// `podtun jupyter`: a pod, or with TARGET `@` a server on the SSH host itself.
    pub fn from_jupyter(args: &JupyterArgs) -> anyhow::Result<Plan> {
        let preset = &args.preset;
        let job = preset.target.as_deref().and_then(slurm::parse_target);
        let elsewhere = args.slurm.slurm.is_some() || job.is_some() || args.host.start;
        if preset.common.launch.launches()
            && (elsewhere || preset.target.as_deref() == Some(HOST_TARGET))
        {
            return Err(usage(
                "--launch and --image launch a pod: Jupyter on an SSH host or in a Slurm job is not one",
                Some("drop --launch/--image, or drop the TARGET to launch a pod".into()),
            ));
        }
        if args.slurm.slurm.is_some() || job.is_some() {
            return Plan::from_slurm(args, job);
        }
        if (args.host.env.is_some() || args.host.dir.is_some()) && !args.host.start {
            return Err(usage(
                "--env and --dir say how to start Jupyter: they need --start or --slurm",
                Some("`podtun jupyter @ --via HOST --start --env ENV`, or `podtun jupyter --via HOST --slurm \"\" --env ENV`".into()),
            ));
        }
        if preset.target.as_deref() != Some(HOST_TARGET) {
            if args.host.start {
                return Err(usage(
                    "--start starts Jupyter on the SSH host itself: it needs the target `@`",
                    Some("`podtun jupyter @ --via HOST --start`".into()),
                ));
            }
            return Plan::from_preset(preset, "jupyter");
        }
        host::check_args(preset)?;
        let ports = preset.port.iter().cloned().collect();
        let mut plan = Plan::build(None, ports, &preset.common, "jupyter")?;
        plan.target_label = HOST_TARGET.to_string();
        plan.target = Target::Host(args.host.clone());
        Ok(plan)
    }

    /// `podtun jupyter --slurm OPTIONS` (submit a job) or `podtun jupyter slurm/JOBID` (a
    /// running job): Jupyter in a Slurm job, through the `--via` login host.
    fn from_slurm(
        args: &JupyterArgs,
        job: Option<Result<slurm::JobId, String>>,
    ) -> anyhow::Result<Plan> {
        let preset = &args.preset;
        let common = &preset.common;
        let source = match (&args.slurm.slurm, job) {
            (_, Some(Err(why))) => return Err(usage(why, None)),
            (Some(_), Some(Ok(id))) => {
                return Err(usage(
                    format!("--slurm submits a new job, and slurm/{id} names a running one"),
                    Some(
                        "drop --slurm to use job {id}, or drop the TARGET to submit a new job"
                            .replace("{id}", id.as_str()),
                    ),
                ))
            }
            (Some(options), None) => {
                if preset.target.is_some() {
                    return Err(usage(
                        "--slurm runs Jupyter in a new Slurm job: it takes no TARGET",
                        Some(
                            "`podtun jupyter --via LOGIN --slurm \"-p PARTITION --time=2:00:00\"`"
                                .into(),
                        ),
                    ));
                }
                let spec = JobSpec::new(options, args.host.env.clone(), args.host.dir.clone())
                    .map_err(|why| usage(why, None))?;
                Source::Submit(spec)
            }
            (None, Some(Ok(id))) => {
                if args.host.env.is_some() || args.host.dir.is_some() {
                    return Err(usage(
                        format!("--env and --dir start a new job; slurm/{id} runs already"),
                        None,
                    ));
                }
                Source::Existing(id)
            }
            (None, None) => return Err(usage("no Slurm job", None)),
        };
        if common.via.iter().all(|h| h.trim().is_empty()) {
            return Err(usage(
                "Slurm jobs are reached through the cluster's login host, and no --via was given",
                Some("name it: `podtun jupyter --via LOGIN --slurm \"…\"` (jump hosts first: `--via bastion,LOGIN`)".into()),
            ));
        }
        let unsupported = [
            (common.selector.is_some(), "-l"),
            (preset.port.is_some(), "--port"),
        ];
        if let Some((_, flag)) = unsupported.iter().find(|(given, _)| *given) {
            return Err(usage(
                format!("{flag} does not apply to Jupyter in a Slurm job"),
                Some("podtun finds the node, port and token itself; -p sets the local port".into()),
            ));
        }
        let mut plan = Plan::build(None, Vec::new(), common, "jupyter")?;
        plan.target_label = match &source {
            Source::Existing(id) => format!("{}/{id}", slurm::TARGET_KIND),
            Source::Submit(_) => slurm::TARGET_KIND.to_string(),
        };
        plan.target = Target::Slurm(source);
        Ok(plan)
    }

    /// `podtun forward`.
    pub fn from_forward(args: &ForwardArgs) -> anyhow::Result<Plan> {
        // A launch names no pod, so its first port lands where clap puts a TARGET
        // (`podtun forward --image nginx 8080:80`): it is a port when it reads as one.
        if let Some(first) = args.target.as_deref() {
            if args.common.launch.launches() && reads_as_port(first) {
                let ports = std::iter::once(first.to_string())
                    .chain(args.ports.iter().cloned())
                    .collect();
                return Plan::build(None, ports, &args.common, "generic");
            }
        }
        Plan::build(
            args.target.as_deref(),
            args.ports.clone(),
            &args.common,
            "generic",
        )
    }

    /// `podtun doctor`: the cluster flags, for the Jupyter preset without a TARGET.
    pub fn from_doctor(args: &DoctorArgs) -> anyhow::Result<Plan> {
        Plan::build(None, Vec::new(), &args.common(), "jupyter")
    }

    fn build(
        target: Option<&str>,
        ports: Vec<String>,
        common: &CommonArgs,
        preset: &str,
    ) -> anyhow::Result<Plan> {
        if target == Some(HOST_TARGET) {
            return Err(usage(
                "the target `@` (the SSH host itself) is for `podtun jupyter` only",
                Some("`podtun jupyter @ --via HOST` forwards to a Jupyter server there".into()),
            ));
        }
        let launch = launch_of(
            &common.launch,
            target.is_some() || common.selector.is_some(),
        )?;
        let request = Request {
            launch,
            target: target.unwrap_or_default().to_string(),
            selector: common.selector.clone(),
            cluster: ClusterRef {
                kubeconfig: common.kubeconfig.clone(),
                context: common.context.clone(),
                namespace: common.namespace.clone(),
            },
            container: common.container.clone(),
            preset: preset.to_string(),
            ports,
            timeout_secs: common.timeout.as_secs().max(1),
        };
        let spec = Spec::from_request(&request)?;
        let declared = spec
            .ports
            .iter()
            .all(|p| matches!(p.remote, crate::cluster::discover::PortSpec::Number(_)));
        if matches!(request.launch, Some(Launch::Image(_)))
            && preset == "generic"
            && (spec.ports.is_empty() || !declared)
        {
            return Err(usage(
                "`podtun forward --image` declares the pod's ports: name them as numbers",
                Some("e.g. `podtun forward --image nginx 8080:80`".into()),
            ));
        }
        if common.local_port.is_some() {
            if spec.ports.len() > 1 {
                return Err(usage(
                    "-p sets the local port of a single forward",
                    Some("with several ports, give each as LOCAL:REMOTE".into()),
                ));
            }
            if spec.ports.iter().any(|p| p.local.is_some()) {
                return Err(usage(
                    "the local port is given twice: with -p and as LOCAL:REMOTE",
                    Some("drop -p, or give the port as REMOTE only".into()),
                ));
            }
        }
        let target_label = match &common.selector {
            Some(sel) => format!("-l {sel}"),
            None => spec.target.to_string(),
        };
        Ok(Plan {
            request,
            spec,
            target_label,
            address: common.address,
            local_port: common.local_port,
            target: Target::Pod,
            route: route(&common.via),
            ssh_config: common.ssh_config.clone(),
            remote_bin: common.remote_bin.clone(),
            no_install: common.no_install,
            agent: common.agent,
            json: common.json,
            browser: !common.no_browser && !common.json,
            quiet: common.quiet,
            detach: common.detach,
            keep: common.launch.keep,
            launch_grace: common.launch.launch_grace,
        })
    }
}

/// `--launch`/`--image` and their flags, checked; `named`: a TARGET or `-l` names the pod.
fn launch_of(args: &LaunchArgs, named: bool) -> anyhow::Result<Option<Launch>> {
    if !args.launches() {
        if args.keep {
            return Err(usage(
                "--keep keeps a pod podtun launched: it needs --launch or --image",
                None,
            ));
        }
        return Ok(None);
    }
    if named {
        return Err(usage(
            "--launch and --image create the pod to forward to: they take no TARGET or -l",
            Some(
                "drop the TARGET to launch a new pod, or drop --launch/--image to use that one"
                    .into(),
            ),
        ));
    }
    if let Some(command) = &args.launch {
        if command.trim().is_empty() {
            return Err(usage(
                "--launch needs the command that creates the pod",
                Some("e.g. `--launch \"launch-scipy-ml.sh -b\"`".into()),
            ));
        }
        return Ok(Some(Launch::Command(command.clone())));
    }
    let image = args.image.clone().unwrap_or_default();
    if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
        return Err(usage(
            format!("--image `{image}` is not an image name"),
            Some("e.g. `--image quay.io/jupyter/scipy-notebook:2024-12-02`".into()),
        ));
    }
    for (flag, value) in [("--cpu", &args.cpu), ("--memory", &args.memory)] {
        if let Some(value) = value {
            if !is_quantity(value) {
                return Err(usage(
                    format!("{flag} `{value}` is not a Kubernetes quantity"),
                    Some("e.g. `--cpu 2`, `--cpu 500m`, `--memory 8Gi`".into()),
                ));
            }
        }
    }
    if args.gpu == Some(0) {
        return Err(usage("--gpu 0 asks for no GPU: drop it", None));
    }
    Ok(Some(Launch::Image(PodTemplate {
        image,
        cpu: args.cpu.clone(),
        memory: args.memory.clone(),
        gpu: args.gpu,
    })))
}

/// Whether `text` is a Kubernetes resource quantity: a positive decimal number with an
/// optional binary (`Ki`…`Ei`), decimal (`m`, `k`, `M`…`E`) or exponent (`e3`) suffix.
fn is_quantity(text: &str) -> bool {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits_end);
    let number_ok = !number.is_empty()
        && number.matches('.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || suffix.strip_prefix(['e', 'E']).is_some_and(|exp| {
        let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit())
    });
    number_ok && suffix_ok
}

/// Whether a positional argument of `forward` reads as `[LOCAL:]REMOTE` rather than a pod:
/// a number, or anything with a colon (which no pod name or kind/NAME has).
fn reads_as_port(arg: &str) -> bool {
    arg.contains(':') || (!arg.is_empty() && arg.chars().all(|c| c.is_ascii_digit()))
}

/// `--via` as given (empty names dropped): local mode when none is left.
fn route(via: &[String]) -> Route {
    let hosts: Vec<String> = via
        .iter()
        .filter(|h| !h.trim().is_empty())
        .cloned()
        .collect();
    if hosts.is_empty() {
        Route::Local
    } else {
        Route::Via(hosts)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::error::{exit_code, EXIT_USAGE};

    /// `podtun jupyter ARGS` as planned.
    fn jupyter(args: &[&str]) -> anyhow::Result<Plan> {
        let argv = ["podtun", "jupyter"].iter().chain(args);
        let cli = Cli::try_parse_from(argv).expect("clap accepts it");
        let Command::Jupyter(jupyter) = cli.command else {
            panic!("not `podtun jupyter`");
        };
        Plan::from_jupyter(&jupyter)
    }

    /// The usage error (exit 2) `podtun jupyter ARGS` is; its message.
    fn refused(args: &[&str]) -> String {
        let err = jupyter(args)
            .err()
            .unwrap_or_else(|| panic!("{args:?} planned"));
        assert_eq!(exit_code(&err), EXIT_USAGE, "{args:?}: {err:#}");
        err.to_string()
    }

    #[test]
    fn keep_needs_a_launch() {
        assert!(refused(&["--keep"]).contains("--keep keeps a pod podtun launched"));
        assert!(refused(&["my-pod", "--keep"]).contains("needs --launch or --image"));
    }

    #[test]
    fn a_launch_takes_no_target() {
        for args in [
            &["my-pod", "--launch", "launch-scipy-ml.sh -b"][..],
            &["-l", "app=jupyter", "--launch", "launch-scipy-ml.sh -b"][..],
            &["my-pod", "--image", "quay.io/jupyter/base-notebook"][..],
            &["@", "--via", "login", "--launch", "launch-scipy-ml.sh -b"][..],
        ] {
            let message = refused(args);
            assert!(
                message.contains("--launch and --image"),
                "{args:?}: {message}"
            );
        }
    }

    #[test]
    fn launch_flags_are_checked() {
        assert!(refused(&["--launch", "  "]).contains("needs the command"));
        assert!(refused(&["--image", "a b"]).contains("is not an image name"));
        assert!(refused(&["--image", "x", "--cpu", "two"]).contains("--cpu `two`"));
        assert!(refused(&["--image", "x", "--memory", "8GB"]).contains("--memory `8GB`"));
        assert!(refused(&["--image", "x", "--gpu", "0"]).contains("--gpu 0"));
    }

    /// `podtun forward ARGS` as planned.
    fn forward(args: &[&str]) -> anyhow::Result<Plan> {
        let argv = ["podtun", "forward"].iter().chain(args);
        let cli = Cli::try_parse_from(argv).expect("clap accepts it");
        let Command::Forward(forward) = cli.command else {
            panic!("not `podtun forward`");
        };
        Plan::from_forward(&forward)
    }

    #[test]
    fn forward_from_an_image_takes_its_ports_where_a_target_would_be() {
        for args in [
            &["--image", "nginx", "8080:80"][..],
            &["--image", "nginx", "80"][..],
            &["--image", "nginx", "8080:80", "9090"][..],
            &["--launch", "make-pod", "0:80"][..],
        ] {
            let plan = forward(args).unwrap_or_else(|e| panic!("{args:?}: {e:#}"));
            assert!(plan.request.target.is_empty(), "{args:?}: no TARGET");
            assert!(!plan.spec.ports.is_empty(), "{args:?}: the ports");
        }
        let plan = forward(&["--image", "nginx", "8080:80", "9090"]).expect("planned");
        assert_eq!(plan.spec.ports.len(), 2);
        let refused = forward(&["my-pod", "80", "--image", "nginx"]).expect_err("a TARGET");
        assert_eq!(exit_code(&refused), EXIT_USAGE);
        assert!(
            refused.to_string().contains("they take no TARGET"),
            "{refused}"
        );
        // Without a launch, the first positional is the TARGET as before.
        let plan = forward(&["my-pod", "8080:80"]).expect("planned");
        assert_eq!(plan.request.target, "my-pod");
    }

    #[test]
    fn launches_are_planned() {
        let plan = jupyter(&["--launch", "launch-scipy-ml.sh -b", "--keep"]).expect("planned");
        assert_eq!(
            plan.request.launch,
            Some(Launch::Command("launch-scipy-ml.sh -b".into()))
        );
        assert!(plan.keep);
        let plan = jupyter(&[
            "--image", "x:1", "--cpu", "500m", "--memory", "512Mi", "--gpu", "1",
        ])
        .expect("planned");
        let Some(Launch::Image(template)) = plan.request.launch else {
            panic!("an image launch: {:?}", plan.request.launch);
        };
        assert_eq!(template.image, "x:1");
        assert_eq!(template.cpu.as_deref(), Some("500m"));
        assert_eq!(template.memory.as_deref(), Some("512Mi"));
        assert_eq!(template.gpu, Some(1));
        assert!(!plan.keep);
        assert!(jupyter(&[]).expect("planned").request.launch.is_none());
    }
}
