//! The route to the login host: which hops, in which order, and how each hop's bytes travel
//! (a TCP socket, a direct-tcpip channel through the hop before, or a ProxyCommand's pipes).
//!
//! `--via a,b,c` means what `ssh -J a,b c` means: `c` is reached through `b`, `b` through `a`,
//! and `a` as its own config says (its ProxyJump or ProxyCommand included). A ProxyJump in the
//! config expands the same way, recursively.

use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use anyhow::{bail, Context};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::ssh::SshOptions;
use super::ssh_config::{self, HostConfig, HostSpec};

/// More hops than this is taken for a ProxyJump loop.
const MAX_HOPS: usize = 16;

/// How a hop is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Via {
    Tcp,
    /// A direct-tcpip channel through the previous hop.
    PreviousHop,
    /// `sh -c COMMAND`, tokens already substituted.
    ProxyCommand(String),
}

/// One hop of the route, first (reached from the laptop) to last (the login host).
#[derive(Debug, Clone)]
pub(crate) struct Hop {
    pub cfg: HostConfig,
    pub via: Via,
}

/// Resolves `--via` (jump hosts then the login host) into hops.
pub(crate) async fn plan(via: &[String], opts: &SshOptions) -> anyhow::Result<Vec<Hop>> {
    let Some((login, jumps)) = via.split_last() else {
        bail!("no host to connect to");
    };
    let mut hops = Vec::new();
    route(login, (!jumps.is_empty()).then_some(jumps), opts, &mut hops).await?;
    Ok(hops)
}

/// Appends the hops that lead to `host` and then `host` itself. `jumps` are explicit jump hosts
/// (`-J`); `None` lets the host's own config decide.
async fn route(
    host: &str,
    jumps: Option<&[String]>,
    opts: &SshOptions,
    hops: &mut Vec<Hop>,
) -> anyhow::Result<()> {
    if hops.len() >= MAX_HOPS {
        bail!("more than {MAX_HOPS} hops to `{host}`: is there a ProxyJump loop?");
    }
    let spec = HostSpec::parse(host)?;
    let cfg = ssh_config::resolve(&spec, opts).await?;
    let config_jumps: Vec<String>;
    let jumps = match jumps {
        Some(jumps) => jumps,
        None => {
            config_jumps = cfg
                .proxy_jump
                .iter()
                .flat_map(|j| j.split(','))
                .map(|j| j.trim().to_string())
                .filter(|j| !j.is_empty())
                .collect();
            &config_jumps
        }
    };
    let via = match jumps.split_last() {
        Some((last, earlier)) => {
            let earlier = (!earlier.is_empty()).then_some(earlier);
            Box::pin(route(last, earlier, opts, hops)).await?;
            Via::PreviousHop
        }
        None => match &cfg.proxy_command {
            Some(command) => Via::ProxyCommand(command.clone()),
            None => Via::Tcp,
        },
    };
    hops.push(Hop { cfg, via });
    Ok(())
}

/// Connects a TCP socket to the hop, trying each address, with TCP_NODELAY on.
pub(crate) async fn tcp(cfg: &HostConfig) -> anyhow::Result<TcpStream> {
    let addrs = tokio::net::lookup_host((cfg.hostname.as_str(), cfg.port))
        .await
        .with_context(|| format!("could not resolve `{}`", cfg.hostname))?;
    let mut last_err = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(err) => last_err = Some(err),
        }
    }
    match last_err {
        Some(err) => Err(err.into()),
        None => bail!("`{}` has no address", cfg.hostname),
    }
}

/// A ProxyCommand's stdin and stdout as one stream; the command is killed when it is dropped.
pub(crate) struct ProxyStream {
    _child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl ProxyStream {
    pub(crate) fn spawn(command: &str) -> anyhow::Result<ProxyStream> {
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("could not start ProxyCommand `{command}`"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("ProxyCommand `{command}` has no pipes");
        };
        Ok(ProxyStream {
            _child: child,
            stdin,
            stdout,
        })
    }
}

impl AsyncRead for ProxyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for ProxyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stdin).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}
