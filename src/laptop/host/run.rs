//! `podtun jupyter @ --via HOST`: a Jupyter server on the SSH host itself (a cloud VM, a
//! desktop, an HPC login host), no cluster and no agent.
//!
//! ```text
//! browser ─► 127.0.0.1:L ─► podtun ══SSH══► sshd ─direct-tcpip──────────► 127.0.0.1:PORT (jupyter)
//!                                               └─direct-streamlocal────► DIR/jupyter.sock
//! ```
//!
//! One exec channel runs the script of `host_script` in the login environment: it lists
//! the user's live servers from Jupyter's runtime directory, and with `--start` starts one
//! (on a socket in a fresh 0700 directory, or on 127.0.0.1 when sshd refuses stream-local
//! forwarding) that lives as long as that channel. Each local connection is then one SSH
//! channel to the server; nothing else runs on the host. A lost connection keeps the local
//! port: podtun reconnects, finds (or starts) the server again and prints the URL again.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

use super::pick::{about, choose};
use super::remote::{ensure_found, Remote};
use super::script::{Listen, Script, Server, MARK};
use crate::cli::{HostArgs, HOST_TARGET};
use crate::error::hinted;
use crate::laptop::link::{self, Ended, Supervised};
use crate::laptop::listen::{self, Locals};
use crate::laptop::ready;
use crate::laptop::ssh::exec::sh_quote;
use crate::laptop::ssh::script::RemoteScript;
use crate::laptop::ssh::{OpenError, SshSession};
use crate::output::Output;
use crate::plan::Plan;
use crate::proto::wire::JupyterAccess;

/// The local port tried first for a server on a socket (Jupyter's default).
const DEFAULT_PORT: u16 = 8888;

/// One connection to the host with the server found (or started) there.
struct Established {
    ssh: SshSession,
    server: Server,
    /// The channel holding a server podtun started.
    keeper: Option<Remote>,
}

/// Where local connections go now.
struct Reach {
    ssh: SshSession,
    server: Server,
}

/// Runs the forward until shutdown, reconnecting when the host goes away.
pub async fn run(
    plan: &Plan,
    args: &HostArgs,
    out: Arc<Output>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // A local port the user named is bound first, so one that is taken fails before anything
    // starts on the host.
    let early = listen::bind_named(plan)?.into_iter().next().flatten();
    let mut route = OnHost {
        plan,
        args,
        early,
        locals: Locals::new("the SSH host"),
        previous: None,
        skip: None,
    };
    link::run(&mut route, &out, None, shutdown).await
}

/// The route to a Jupyter server on the SSH host: each local connection is one SSH channel
/// to it.
struct OnHost<'a> {
    plan: &'a Plan,
    args: &'a HostArgs,
    /// The local port the user named, bound before anything started.
    early: Option<TcpListener>,
    locals: Locals<Reach>,
    /// The server of the last connection, chosen again when it still runs.
    previous: Option<Server>,
    /// A server podtun started and stopped: not one to choose again.
    skip: Option<u32>,
}

impl Supervised for OnHost<'_> {
    type Link = Established;

    async fn establish(&mut self, out: &Output) -> anyhow::Result<Established> {
        establish(self, out).await
    }

    async fn serve(&mut self, session: &mut Established, out: &Output) -> Ended {
        let first = self.locals.first();
        if first {
            let bound = match self.early.take() {
                Some(listener) => Ok(listener),
                None => bind(self.plan, &session.server),
            };
            let served = bound.and_then(|listener| {
                self.locals
                    .serve(vec![listener], |reach, _, conn| forward(reach, conn))
            });
            if let Err(e) = served {
                return Ended::Fatal(e);
            }
        }
        self.locals.route(Arc::new(Reach {
            ssh: session.ssh.clone(),
            server: session.server.clone(),
        }));
        let local = self.locals.addrs()[0];
        serve(self.plan, out, session, local, first).await
    }

    async fn close(&mut self, session: Established, _last: bool) {
        self.locals.unroute();
        if session.keeper.is_some() {
            self.skip = Some(session.server.pid);
        }
        self.previous = Some(session.server.clone());
        close(&session).await;
    }

    async fn finish(&mut self, _out: &Output) {
        self.locals.close().await;
    }
}

/// The local end: the port this tunnel had last time if free, else the server's port if free
/// (Jupyter's 8888 for a socket), else any.
fn bind(plan: &Plan, server: &Server) -> anyhow::Result<TcpListener> {
    let remote = match server.port {
        0 => DEFAULT_PORT,
        port => port,
    };
    let key = crate::tunnels::ports::Key::of(plan);
    if let Some(last) = crate::tunnels::ports::recall(&key, server.port) {
        if let Ok(bound) = listen::bind(plan.address, Some(last), last) {
            return Ok(bound);
        }
    }
    listen::bind(plan.address, None, remote)
}

/// Stops the server podtun started (if any) and closes the connection.
async fn close(session: &Established) {
    if let Some(keeper) = &session.keeper {
        keeper.stop().await;
    }
    session.ssh.disconnect().await;
}

/// Connects and finds (or starts) the server.
async fn establish(route: &OnHost<'_>, out: &Output) -> anyhow::Result<Established> {
    let ssh = link::connect(route.plan, out).await?;
    match find_or_start(route, out, &ssh).await {
        Ok((server, keeper)) => Ok(Established {
            ssh,
            server,
            keeper,
        }),
        Err(e) => {
            ssh.disconnect().await;
            Err(e)
        }
    }
}

/// The server to forward to: a live one of the user's, else (with `--start`) a new one.
async fn find_or_start(
    route: &OnHost<'_>,
    out: &Output,
    ssh: &SshSession,
) -> anyhow::Result<(Server, Option<Remote>)> {
    let (plan, args, skip, previous) =
        (route.plan, route.args, route.skip, route.previous.as_ref());
    let host = ssh.host().to_string();
    out.progress(&format!("looking for your Jupyter servers on `{host}`"));
    let mut listen = args.start.then_some(Listen::Socket);
    loop {
        let script = script(args, listen, skip);
        let (listing, keeper) = Remote::run(ssh, &script, plan.spec.timeout).await?;
        ensure_found(&listing, &host, args.start)?;
        let (Some(server), Some(keeper)) = (listing.started_server().cloned(), keeper) else {
            let server = choose(listing.servers, plan, out, &host, previous).await?;
            if server.secure {
                return Err(hinted(
                    anyhow!("the Jupyter server on `{host}` ({}) serves HTTPS, and podtun's URL and readiness check speak HTTP", about(&server)),
                    "SSH encrypts the tunnel already: run one without --certfile there, or let podtun start one: --start",
                ));
            }
            if args.start {
                out.note(&format!(
                    "using your Jupyter server already running on `{host}` ({}); --start starts one only when none runs",
                    about(&server)
                ));
            }
            if let Some(sock) = &server.sock {
                if !streamlocal_allowed(ssh, sock).await? {
                    return Err(hinted(
                        anyhow!("the Jupyter server on `{host}` listens on socket {sock} only, and sshd there refuses stream-local forwarding"),
                        "start one on a port there (`jupyter lab --no-browser --ip=127.0.0.1`), or let podtun start one: --start",
                    ));
                }
            }
            return Ok((server, None));
        };
        out.progress(&format!("started Jupyter on `{host}`"));
        match &server.sock {
            Some(sock) if !streamlocal_allowed(ssh, sock).await? => {
                keeper.stop().await;
                info!(%host, "sshd refuses stream-local forwarding: starting Jupyter on 127.0.0.1 instead of a socket");
                listen = Some(Listen::Tcp);
            }
            _ => {
                debug!(%host, pid = server.pid, on = %server.listens_on(), "started Jupyter");
                return Ok((server, Some(keeper)));
            }
        }
    }
}

fn script(args: &HostArgs, start: Option<Listen>, skip: Option<u32>) -> Script<'_> {
    Script {
        start,
        env: args.env.as_deref(),
        dir: args.dir.as_deref(),
        skip,
    }
}

/// How many times a refused stream-local channel is tried before it counts as sshd's policy.
const STREAMLOCAL_PROBES: u32 = 3;

/// Whether sshd lets podtun open a stream-local channel to `sock` (which is listening).
async fn streamlocal_allowed(ssh: &SshSession, sock: &str) -> anyhow::Result<bool> {
    for probe in 1..=STREAMLOCAL_PROBES {
        match ssh.open_streamlocal(sock).await {
            Ok(channel) => {
                drop(channel);
                return Ok(true);
            }
            // OpenSSH answers a policy refusal as it answers a socket it could not connect to
            // (see `OpenError`): a refusal is taken for policy only once it repeats.
            Err(OpenError::Prohibited { .. } | OpenError::Refused { .. }) => {
                debug!(host = %ssh.host(), probe, "stream-local channel to {sock} refused");
                if probe < STREAMLOCAL_PROBES {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}

/// One local connection: one SSH channel to the server.
async fn forward(route: Arc<Reach>, conn: TcpStream) -> anyhow::Result<()> {
    let server = &route.server;
    let channel = match &server.sock {
        Some(sock) => route.ssh.open_streamlocal(sock).await?,
        None => route.ssh.open_tcp(&server.address, server.port).await?,
    };
    let moved = crate::net::splice::splice(conn, channel).await?;
    debug!(up = moved.up, down = moved.down, "connection closed");
    Ok(())
}

/// Probes, reports `ready`, then holds the connection (and the started server) until shutdown
/// or a loss.
async fn serve(
    plan: &Plan,
    out: &Output,
    session: &Established,
    local: SocketAddr,
    first: bool,
) -> Ended {
    let host = session.ssh.host().to_string();
    let access = session.server.access(|| {
        format!("the Jupyter server on `{host}` has no token (a password, or none): the URL carries none")
    });
    let progress = |m: &str| out.progress(m);
    if let Err(e) = ready::wait_usable(plan, &[local], Some(&access), &progress).await {
        return Ended::unusable(e, first);
    }
    report_ready(plan, out, &host, &session.server, local, &access, first);
    let keeper = session.keeper.as_ref();
    let keeper_ended = async {
        match keeper {
            Some(k) => k.ended().await,
            None => std::future::pending().await,
        }
    };
    // A server of the user's may stop (or be restarted) while the tunnel runs.
    let watched = async {
        match keeper {
            None => server_gone(&session.ssh, session.server.pid).await,
            Some(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = session.ssh.closed() => Ended::Lost(format!("lost the connection to `{host}`")),
        () = keeper_ended => {
            Ended::Lost(format!("the Jupyter server podtun started on `{host}` ended"))
        }
        () = watched => Ended::Lost(format!(
            "your Jupyter server on `{host}` ({}) stopped; looking for a server again",
            about(&session.server)
        )),
    }
}

/// How often the host checks that a server of the user's still runs.
const SERVER_CHECK_SECS: u64 = 5;

/// Resolves when process `pid` (a server of the user's) is gone from the host: one small
/// script on an exec channel looks every few seconds and ends with the channel. Never resolves
/// when that script cannot run (the loss of the connection is noticed anyway).
async fn server_gone(ssh: &SshSession, pid: u32) {
    if pid == 0 {
        return std::future::pending().await;
    }
    let script = format!(
        "M={mark}
         ( while kill -0 {pid} 2>/dev/null; do sleep {SERVER_CHECK_SECS}; done; echo \"$M gone\" ) </dev/null &
         w=$!
         cat >/dev/null
         kill \"$w\" 2>/dev/null
",
        mark = sh_quote(MARK),
    );
    let mut watcher = match RemoteScript::start(ssh, &script, MARK, "the server's watcher").await {
        Ok(watcher) => watcher,
        Err(e) => {
            debug!(host = %ssh.host(), "cannot watch the Jupyter server: {e:#}");
            return std::future::pending().await;
        }
    };
    // Its channel closes with the connection, which every end of `serve` closes.
    loop {
        match watcher.lines.recv().await {
            Some(line) if line == "gone" => return,
            Some(_) => {}
            None => return std::future::pending().await,
        }
    }
}

/// Prints the URL (or the `ready` event) and opens the browser the first time.
fn report_ready(
    plan: &Plan,
    out: &Output,
    host: &str,
    server: &Server,
    local: SocketAddr,
    access: &JupyterAccess,
    first: bool,
) {
    let what = format!("Jupyter on `{host}` ({})", server.listens_on());
    let served = ready::Served {
        target: HOST_TARGET.to_string(),
        host: host.to_string(),
        remote_port: server.port,
        what: &what,
        on_stop: "",
    };
    ready::report_served(plan, out, local, access, served, first);
}
