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

use super::config::{self, HostConfig};
use super::options::{HostSpec, SshOptions};

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
    route(
        login,
        (!jumps.is_empty()).then_some(jumps),
        opts,
        &mut hops,
        0,
    )
    .await?;
    Ok(hops)
}

/// Appends the hops that lead to `host` and then `host` itself. `jumps` are explicit jump hosts
/// (`-J`); `None` lets the host's own config decide. `depth` counts the hops still to come
/// after this one, to stop ProxyJump loops.
async fn route(
    host: &str,
    jumps: Option<&[String]>,
    opts: &SshOptions,
    hops: &mut Vec<Hop>,
    depth: usize,
) -> anyhow::Result<()> {
    if depth >= MAX_HOPS {
        bail!("more than {MAX_HOPS} hops to `{host}`: is there a ProxyJump loop?");
    }
    let spec = HostSpec::parse(host)?;
    let cfg = config::resolve(&spec, opts).await?;
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
            Box::pin(route(last, earlier, opts, hops, depth + 1)).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn plan_with(config: &str, via: &[&str]) -> anyhow::Result<Vec<(String, Via)>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("config");
        std::fs::write(&file, config)?;
        let opts = SshOptions {
            config_file: Some(file),
            home: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let via: Vec<String> = via.iter().map(|v| v.to_string()).collect();
        let hops = plan(&via, &opts).await?;
        Ok(hops
            .into_iter()
            .map(|h| (format!("{}:{}", h.cfg.hostname, h.cfg.port), h.via))
            .collect())
    }

    const CONFIG: &str = "Host a\n  HostName a.example\n  ProxyJump x\n\
                          Host b\n  ProxyCommand nc %h %p\n  Port 2200\n\
                          Host login\n  ProxyJump a,user@y:23\n\
                          Host loop1\n  ProxyJump loop2\nHost loop2\n  ProxyJump loop1\n";

    #[tokio::test]
    async fn via_list_means_ssh_dash_j() {
        let hops = plan_with(CONFIG, &["a", "b", "c:2222"]).await.unwrap();
        let expected = [
            ("x:22", Via::Tcp),
            // The first jump host follows its own config; later ones are reached through it,
            // so their ProxyCommand does not apply (as with `ssh -J`).
            ("a.example:22", Via::PreviousHop),
            ("b:2200", Via::PreviousHop),
            ("c:2222", Via::PreviousHop),
        ];
        let expected: Vec<(String, Via)> = expected
            .into_iter()
            .map(|(h, v)| (h.to_string(), v))
            .collect();
        assert_eq!(hops, expected);
    }

    #[tokio::test]
    async fn config_proxy_jump_and_proxy_command() {
        let hops = plan_with(CONFIG, &["login"]).await.unwrap();
        let names: Vec<&str> = hops.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(names, ["x:22", "a.example:22", "y:23", "login:22"]);
        let hops = plan_with(CONFIG, &["b"]).await.unwrap();
        assert_eq!(
            hops,
            [("b:2200".to_string(), Via::ProxyCommand("nc b 2200".into()))]
        );
    }

    #[tokio::test]
    async fn proxy_jump_loops_end() {
        let err = plan_with(CONFIG, &["loop1"]).await.unwrap_err();
        assert!(format!("{err:#}").contains("ProxyJump loop"), "{err:#}");
    }

    fn spec(text: &str) -> HostSpec {
        HostSpec::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn parses_host_specs() {
        let s = spec("alice@login.example.org:2222");
        assert_eq!(s.user.as_deref(), Some("alice"));
        assert_eq!((s.host.as_str(), s.port), ("login.example.org", Some(2222)));
        assert_eq!(spec("bastion").port, None);
        assert_eq!(spec("[::1]:22").host, "::1");
        assert_eq!(spec("fe80::1").host, "fe80::1");
        assert_eq!(spec("ssh://bob@h:23").port, Some(23));
        for bad in ["", "-oProxyCommand=x", "h:0", "h:x", "a b", "[::1"] {
            assert!(HostSpec::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
