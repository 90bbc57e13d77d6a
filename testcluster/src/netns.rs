//! Pod networks: the host's, or a network namespace of the pod's own (root only).
//!
//! An isolated pod gets a named namespace (`ip netns add`) with only `lo` up, as a real pod has
//! its own loopback: its ports are then reachable only through [`PodNetwork::connect`], which is
//! what port-forward uses. Names carry the creating process's pid, so concurrent test processes
//! never collide and namespaces left by dead processes can be found and removed.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Once};

use anyhow::{bail, Context};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tracing::{debug, warn};

/// Prefix of every namespace this module creates.
pub const NETNS_PREFIX: &str = "tcpod-";
/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/var/run/netns";
/// Longest label kept in a namespace name (names are file names; keep them readable).
const LABEL_MAX: usize = 24;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static CLEANUP: Once = Once::new();

/// The network a pod's processes run in.
pub enum PodNetwork {
    /// The host's network: pod ports are host ports.
    Host,
    /// A network namespace of the pod's own.
    Netns(PodNetns),
}

/// A named network namespace with `lo` up; deleted on drop.
pub struct PodNetns {
    name: String,
    /// Requests for a socket created inside the namespace (see [`PodNetwork::connect`]).
    sockets: std_mpsc::Sender<oneshot::Sender<io::Result<TcpSocket>>>,
}

impl PodNetwork {
    /// Creates a fresh namespace named after `label`, this process and a counter (root only).
    ///
    /// The first call in a process first removes namespaces left by dead processes.
    pub fn isolated(label: &str) -> anyhow::Result<PodNetwork> {
        CLEANUP.call_once(|| {
            // Any name with our own pid is from an earlier process that had it: nothing of
            // ours exists yet.
            if let Err(err) = remove_stale(NETNS_PREFIX, true) {
                warn!(%err, "could not remove stale network namespaces");
            }
        });
        let label: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(LABEL_MAX)
            .collect();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NETNS_PREFIX}{}-{id}-{label}", std::process::id());
        run_ip(&["netns", "add", &name])?;
        // From here on, Drop removes the namespace if anything fails.
        let netns = PodNetns {
            sockets: spawn_socket_maker(&name)?,
            name,
        };
        run_ip(&["-n", &netns.name, "link", "set", "lo", "up"])?;
        debug!(netns = %netns.name, "created pod network namespace");
        Ok(PodNetwork::Netns(netns))
    }

    /// The host's network.
    pub fn host() -> PodNetwork {
        PodNetwork::Host
    }

    /// Command that runs `program args` inside this network: `ip netns exec NAME [setpriv
    /// --reuid U --regid G --clear-groups] program args` (an exec chain, so the child's pid is
    /// the program's), or the program directly for the host (uid/gid via `Command::uid`/`gid`).
    pub fn command(
        &self,
        program: &str,
        args: &[String],
        run_as: Option<(u32, u32)>,
    ) -> tokio::process::Command {
        match self {
            PodNetwork::Host => {
                let mut cmd = tokio::process::Command::new(program);
                cmd.args(args);
                if let Some((uid, gid)) = run_as {
                    // As root, std also clears the supplementary groups when uid is set.
                    cmd.uid(uid).gid(gid);
                }
                cmd
            }
            PodNetwork::Netns(netns) => {
                let mut cmd = tokio::process::Command::new("ip");
                cmd.args(["netns", "exec", &netns.name]);
                if let Some((uid, gid)) = run_as {
                    cmd.args(["setpriv", "--reuid", &uid.to_string()]);
                    cmd.args(["--regid", &gid.to_string(), "--clear-groups"]);
                }
                cmd.arg(program).args(args);
                cmd
            }
        }
    }

    /// TCP connection (TCP_NODELAY set) to 127.0.0.1:`port` inside the pod's network.
    ///
    /// For a namespace, the socket is created by a thread that has entered it (a socket belongs
    /// to the namespace it was created in), and connected here without blocking the runtime.
    pub async fn connect(&self, port: u16) -> io::Result<TcpStream> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stream = match self {
            PodNetwork::Host => TcpStream::connect(addr).await?,
            PodNetwork::Netns(netns) => netns.socket().await?.connect(addr).await?,
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// The namespace's name, for an isolated network.
    pub fn netns_name(&self) -> Option<&str> {
        match self {
            PodNetwork::Host => None,
            PodNetwork::Netns(netns) => Some(netns.name()),
        }
    }
}

impl PodNetns {
    /// The name `ip netns` knows this namespace by.
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn socket(&self) -> io::Result<TcpSocket> {
        let gone = || io::Error::other(format!("socket thread of netns {} is gone", self.name));
        let (tx, rx) = oneshot::channel();
        self.sockets.send(tx).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        match run_ip(&["netns", "del", &self.name]) {
            Ok(()) => debug!(netns = %self.name, "removed pod network namespace"),
            Err(err) => warn!(%err, netns = %self.name, "could not remove network namespace"),
        }
    }
}

/// Starts a thread that enters namespace `name` and then creates sockets on request; it ends
/// when the returned sender is dropped. setns changes only the calling thread, which is why
/// this is a thread of its own and not one of tokio's blocking pool (whose threads are reused).
fn spawn_socket_maker(
    name: &str,
) -> anyhow::Result<std_mpsc::Sender<oneshot::Sender<io::Result<TcpSocket>>>> {
    let path = Path::new(NETNS_DIR).join(name);
    let file = File::open(&path).with_context(|| format!("could not open {}", path.display()))?;
    let (tx, rx) = std_mpsc::channel::<oneshot::Sender<io::Result<TcpSocket>>>();
    let (ready_tx, ready_rx) = std_mpsc::channel();
    std::thread::Builder::new()
        .name(format!("netns-{name}"))
        .spawn(move || {
            let entered = setns(&file, CloneFlags::CLONE_NEWNET);
            drop(file);
            let ok = entered.is_ok();
            let _ = ready_tx.send(entered);
            if ok {
                for reply in rx {
                    let _ = reply.send(TcpSocket::new_v4());
                }
            }
        })
        .context("could not spawn a netns thread")?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(tx),
        Ok(Err(errno)) => Err(errno).with_context(|| format!("could not enter netns {name}")),
        Err(_) => bail!("netns thread for {name} ended early"),
    }
}

/// Removes namespaces named `PREFIX<pid>-…` whose process no longer exists.
pub fn cleanup_stale(prefix: &str) -> anyhow::Result<()> {
    remove_stale(prefix, false)
}

fn remove_stale(prefix: &str, include_own: bool) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err).with_context(|| format!("could not list {NETNS_DIR}")),
    };
    let own = std::process::id();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let stale = if pid == own {
            include_own
        } else {
            !process_exists(pid)
        };
        if stale {
            debug!(netns = %name, pid, "removing stale network namespace");
            run_ip(&["netns", "del", &name])?;
        }
    }
    Ok(())
}

fn process_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // EPERM means it exists but is not ours to signal.
    !matches!(
        kill(Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

fn run_ip(args: &[&str]) -> anyhow::Result<()> {
    let output = std::process::Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not run `ip {}`", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
