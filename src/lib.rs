//! podtun: one command from your laptop to a service in a Kubernetes pod.
//!
//! ```text
//! laptop                                login host (shared)                 cluster (walled off)
//! browser ─► 127.0.0.1:L ─► podtun ══SSH══► sshd ─► podtun agent ─SPDY/WS─► API server ─► pod:P
//! ```
//!
//! Without `--via`, podtun itself plays the agent's part: the local listener forwards straight
//! into the cluster. ARCHITECTURE.md has the code map and the rules `tests/it/layers.rs` checks.
//!
//! # Layout (in dependency order: each module imports only from those above it)
//!
//! | module | what it owns | on the laptop | on the login host |
//! |---|---|---|---|
//! | [`error`], [`dirs`], [`net`] | errors and exit codes, directories, accept loop, byte pumps, shutdown | ✓ | ✓ |
//! | [`jupyter`] | the token, the URL in Jupyter's output, its server files | ✓ | ✓ |
//! | [`proto`] | the laptop ↔ agent protocol (JSON lines, multiplexed streams) | ✓ | ✓ |
//! | [`cluster`] | the cluster half: find the pod, port-forward, follow replacements | local and kubectl mode | the agent |
//! | [`cli`], [`config`], [`plan`], [`output`] | flags in, a checked plan, text out | ✓ | |
//! | [`tunnels`] | this machine's tunnels: `-d`, `ls`, `stop`, `logs` | ✓ | |
//! | `agent` | `podtun agent` (Unix only) | | ✓ |
//! | [`laptop`] | SSH, the supervisor, local ports, readiness, and one module per route | ✓ | |
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(unix)]
pub mod agent;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dirs;
pub mod error;
pub mod jupyter;
pub mod laptop;
pub mod net;
pub mod output;
pub mod plan;
pub mod proto;
pub mod tunnels;

use std::future::Future;
use std::sync::Arc;

use clap::CommandFactory;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command};
use output::{Event, Output};
use plan::{Plan, Route, Target};

/// Sets up logging on stderr: `-v`/`-vv`/`-q` or `RUST_LOG`.
pub fn init_tracing(cli: &Cli) {
    let (verbose, quiet) = match &cli.command {
        Command::Jupyter(a) => (a.preset.common.verbose, a.preset.common.quiet),
        Command::Redis(a) => (a.common.verbose, a.common.quiet),
        Command::Forward(a) => (a.common.verbose, a.common.quiet),
        Command::Up(a) => (a.common.verbose, a.common.quiet),
        Command::Doctor(a) => (a.verbose, a.quiet),
        Command::Agent(a) => (a.verbose, false),
        Command::Completions { .. } | Command::Ls(_) | Command::Stop(_) | Command::Logs(_) => {
            (0, false)
        }
    };
    let level = match (quiet, verbose) {
        (true, _) => "error",
        // Other crates' warnings are for developers (kube-client warns of every EOF a lost
        // connection causes, which podtun reports in its own words).
        (_, 0) => "podtun=warn,error",
        (_, 1) => "podtun=debug,info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    // The agent's stderr ends up in the laptop's log, which stamps each line itself.
    let _ = match &cli.command {
        Command::Agent(_) => builder.without_time().try_init(),
        _ => builder.try_init(),
    };
}

/// Resolves on Ctrl-C or SIGTERM; the handlers are installed at the call (inside the runtime).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    net::shutdown::signal()
}

/// Runs a parsed command line until it is done or `shutdown` resolves.
pub async fn run(cli: Cli, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let plan = match &cli.command {
        Command::Jupyter(args) => Plan::from_jupyter(args)?,
        Command::Redis(args) => Plan::from_preset(args, "redis")?,
        Command::Forward(args) => Plan::from_forward(args)?,
        Command::Ls(args) => return tunnels::commands::ls(args),
        Command::Stop(args) => return tunnels::commands::stop(args).await,
        Command::Logs(args) => return tunnels::commands::logs(args),
        // `config::apply` turned it into the profile's command.
        Command::Up(args) => {
            return Err(error::usage(
                format!("profile `{}` was not loaded", args.profile),
                None,
            ))
        }
        Command::Doctor(args) => return laptop::doctor::run(&Plan::from_doctor(args)?).await,
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "podtun",
                &mut std::io::stdout(),
            );
            return Ok(());
        }
        // The agent writes protocol lines, not the laptop's output.
        #[cfg(unix)]
        Command::Agent(args) => return agent::run(args, shutdown).await,
        #[cfg(not(unix))]
        Command::Agent(_) => anyhow::bail!("`podtun agent` runs on Unix login hosts only"),
    };
    forward(plan, shutdown).await
}

/// Runs a forward until it ends or `shutdown` resolves: in the background when asked, and
/// registered among this machine's tunnels (for `ls`, `stop` and `logs`).
async fn forward(plan: Plan, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut out = Output::new(plan.json, plan.quiet);
    let detached = std::env::var(tunnels::DETACHED_ENV).ok();
    if plan.detach && detached.is_none() {
        return tunnels::detach::start(&plan, &out, shutdown).await;
    }
    let registration = match register(&plan, detached.as_deref()).await {
        Ok(tunnels::Registered::Running(state)) => {
            tunnels::print_running(&state, &out);
            return Ok(());
        }
        Ok(tunnels::Registered::New(reg)) => Some(Arc::new(reg)),
        Err(e) if detached.is_some() => return Err(e),
        Err(e) => {
            // A foreground tunnel works without its entry; `ls` and `stop` will not see it.
            tracing::warn!("could not register the tunnel: {e:#}");
            None
        }
    };
    if let Some(reg) = &registration {
        out.set_registration(reg.clone());
    }
    let id = registration.as_ref().map(|r| r.id().to_string());
    let shutdown = async move {
        let requested = tunnels::control::stop_requested(id.as_deref().unwrap_or_default());
        tokio::select! {
            () = shutdown => {}
            () = requested, if id.is_some() => {}
        }
    };
    let out = Arc::new(out);
    let result = reach(&plan, out.clone(), shutdown).await;
    out.done();
    if let Some(reg) = &registration {
        reg.finish(&result);
    }
    if let Err(err) = &result {
        if out.json() {
            out.event(&Event::Error {
                message: format!("{err:#}"),
                hint: error::hint_of(err),
            });
        }
    }
    result
}

/// Reaches the plan's target by its route.
async fn reach(
    plan: &Plan,
    out: Arc<Output>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    match (&plan.target, &plan.route) {
        (Target::Pod, Route::Local) => laptop::local::run_local(plan, out, shutdown).await,
        (Target::Pod, Route::Via(_)) => laptop::via::run_via(plan, out, shutdown).await,
        (Target::Host(args), Route::Via(_)) => laptop::host::run(plan, args, out, shutdown).await,
        (Target::Slurm(source), Route::Via(_)) => {
            laptop::slurm::run(plan, source, out, shutdown).await
        }
        // The plan's checks say so first, with the flags' own words.
        (Target::Host(_) | Target::Slurm(_), Route::Local) => Err(error::usage(
            "a server on an SSH host or in a Slurm job is reached through --via",
            None,
        )),
    }
}

/// This process's entry among the tunnels (`detached`: the id a background start gave it).
async fn register(plan: &Plan, detached: Option<&str>) -> anyhow::Result<tunnels::Registered> {
    match detached {
        Some(id) => {
            tunnels::detach::leave_terminal();
            let paths = tunnels::Paths::with_id(&tunnels::Paths::dir()?, id);
            tunnels::register(plan, paths, None, true).await
        }
        None => tunnels::register(plan, tunnels::Paths::of(plan)?, None, false).await,
    }
}
