//! Raw flags → a checked `Plan`: the target, the request for the cluster side, where to listen
//! and how to report. Checks that involve several flags live here.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::cli::{
    AgentMode, CommonArgs, DoctorArgs, ForwardArgs, HostArgs, JupyterArgs, PresetArgs, HOST_TARGET,
};
use crate::cluster::client::ClusterRef;
use crate::cluster::tunnel::Spec;
use crate::error::usage;
use crate::wire::Request;

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
    /// Route to the login host; empty: local mode.
    pub via: Vec<String>,
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
    /// TARGET `@`: a Jupyter server on the last `--via` host itself, not a pod.
    pub host: Option<HostArgs>,
}

impl Plan {
    /// `podtun jupyter` / `podtun redis`.
    pub fn from_preset(args: &PresetArgs, preset: &str) -> anyhow::Result<Plan> {
        let ports = args.port.iter().cloned().collect();
        Plan::build(args.target.as_deref(), ports, &args.common, preset)
    }

    /// `podtun jupyter`: a pod, or with TARGET `@` a server on the SSH host itself.
    pub fn from_jupyter(args: &JupyterArgs) -> anyhow::Result<Plan> {
        let preset = &args.preset;
        if preset.target.as_deref() != Some(HOST_TARGET) {
            if args.host.start {
                return Err(usage(
                    "--start starts Jupyter on the SSH host itself: it needs the target `@`",
                    Some("`podtun jupyter @ --via HOST --start`".into()),
                ));
            }
            return Plan::from_preset(preset, "jupyter");
        }
        crate::laptop::host::check_args(preset)?;
        let ports = preset.port.iter().cloned().collect();
        let mut plan = Plan::build(None, ports, &preset.common, "jupyter")?;
        plan.target_label = HOST_TARGET.to_string();
        plan.host = Some(args.host.clone());
        Ok(plan)
    }

    /// `podtun forward`.
    pub fn from_forward(args: &ForwardArgs) -> anyhow::Result<Plan> {
        Plan::build(
            args.target.as_deref(),
            args.ports.clone(),
            &args.common,
            "generic",
        )
    }

    /// `podtun doctor`: the cluster flags, for the Jupyter preset without a TARGET.
    pub fn from_doctor(args: &DoctorArgs) -> anyhow::Result<Plan> {
        Plan::build(None, Vec::new(), &args.common, "jupyter")
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
        let request = Request {
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
            via: common
                .via
                .iter()
                .filter(|h| !h.trim().is_empty())
                .cloned()
                .collect(),
            ssh_config: common.ssh_config.clone(),
            remote_bin: common.remote_bin.clone(),
            no_install: common.no_install,
            agent: common.agent,
            json: common.json,
            browser: !common.no_browser && !common.json,
            quiet: common.quiet,
            detach: common.detach,
            host: None,
        })
    }
}
