//! `testcluster serve`: the test cluster as a standalone server, for the demo and scripts.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use testcluster::{Config, TestCluster};

/// A small Kubernetes API server that runs pods as host processes.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve until SIGINT/SIGTERM, then kill every pod and clean up.
    Serve {
        /// State directory (kubeconfig, pod home directories).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
        listen: String,
        /// Manifest file or directory of *.yaml to apply at start (repeatable).
        #[arg(long, value_name = "PATH")]
        apply: Vec<PathBuf>,
        /// host:port written into the kubeconfig as the server address.
        #[arg(long, value_name = "HOST:PORT")]
        advertise: Option<String>,
        /// Extra DNS name or IP for the server certificate (repeatable).
        #[arg(long, value_name = "NAME")]
        san: Vec<String>,
        /// Run pods in the host network even as root.
        #[arg(long)]
        no_isolate: bool,
        /// Directory put in front of PATH for pod processes (repeatable).
        #[arg(long, value_name = "DIR")]
        path: Vec<PathBuf>,
        /// nvidia.com/gpu devices the node offers the scheduler.
        #[arg(long, value_name = "N", default_value_t = 0)]
        gpus: u32,
        /// YAML map of the images pods may use without a command, by reference:
        /// `redis:7-alpine: {entrypoint: [redis-server], cmd: [], user: "999:999"}`.
        #[arg(long, value_name = "FILE")]
        images: Option<PathBuf>,
    },
}

async fn serve(command: Command) -> anyhow::Result<()> {
    let Command::Serve {
        dir,
        listen,
        apply,
        advertise,
        san,
        no_isolate,
        path,
        gpus,
        images,
    } = command;
    let listener = std::net::TcpListener::bind(&listen)
        .with_context(|| format!("could not listen on {listen}"))?;
    let mut config = Config::new(dir, listener);
    config.advertise = advertise;
    config.server_names = san;
    config.extra_path = path;
    config.node.gpus = gpus;
    if let Some(file) = images {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("could not read {}", file.display()))?;
        config.images = serde_saphyr::from_str(&text)
            .with_context(|| format!("invalid images file {}", file.display()))?;
    }
    if no_isolate {
        config.isolate_pods = false;
    }
    let cluster = TestCluster::start(config).await?;
    for path in &apply {
        cluster.apply_file(path)?;
    }
    println!("kubeconfig: {}", cluster.kubeconfig().display());
    println!("server: {}", cluster.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("could not listen for SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    cluster.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: could not start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve(cli.command));
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
