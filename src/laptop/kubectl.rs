//! kubectl mode: nothing on the login host but kubectl. podtun starts `kubectl proxy` there on a
//! private Unix socket over an exec channel, and runs the cluster half (the same code as local
//! mode) on this machine over a kube client whose connections are SSH `direct-streamlocal`
//! channels to that socket.
//!
//! The login host keeps everything that is the user's: kubeconfig, contexts, exec credential
//! plugins, the default namespace. The socket is 0600 in a 0700 directory; the proxy lives as
//! long as its exec channel and the laptop's heartbeats, and takes its socket with it. Never a
//! TCP port: on a shared host it would lend the owner's cluster rights to every local user.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{anyhow, bail};
use futures::future::{BoxFuture, Fuse};
use futures::FutureExt;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{BoxError, ServiceBuilder};
use tracing::{debug, info};

use super::install::{remote_path, sh_quote};
use super::remote::RemoteScript;
use super::run::{self, Resolved};
use super::ssh::{OpenError, SshSession};
use crate::cluster::client::Cluster;
use crate::cluster::discover::Preset;
use crate::cluster::tunnel::Tunnel;
use crate::error::hinted;
use crate::output::{Event, Output};
use crate::plan::Plan;
use crate::wire::{AgentEvent, Candidates, JupyterAccess, HEARTBEAT_SECS};

/// Bound on kubectl proxy's start (login shell and kubectl's own start-up included).
const PROXY_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the proxy's exit after its channel closed.
const PROXY_EXIT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request waits for the link to the login host to come back.
const LINK_WAIT: Duration = Duration::from_secs(60);
/// Heartbeats the login side may miss before it stops the proxy.
const HEARTBEATS_MISSED: u64 = 3;
/// The prefix of every line the login-side script prints (the rest is login-shell noise).
const MARK: &str = "podtun-kubectl:";

/// What kubectl proxy passes: discovery, the reads podtun makes (pods, their logs, services and
/// workloads for selector resolution, the namespace), port-forward, and access reviews for
/// `doctor`. Everything else (exec, attach, proxy to pods, secrets, other resources) is refused
/// by the proxy itself, before it reaches the API server.
const ACCEPT_PATHS: &[&str] = &[
    "^/version/?$",
    "^/api/?$",
    "^/apis/?$",
    "^/api/v1/?$",
    "^/api/v1/namespaces/[^/]+$",
    "^/api/v1/namespaces/[^/]+/pods$",
    "^/api/v1/namespaces/[^/]+/pods/[^/]+$",
    "^/api/v1/namespaces/[^/]+/pods/[^/]+/(log|portforward)$",
    "^/api/v1/namespaces/[^/]+/services/[^/]+$",
    "^/apis/apps/v1/namespaces/[^/]+/(deployments|statefulsets|replicasets)/[^/]+$",
    "^/apis/authorization.k8s.io/v1/selfsubjectaccessreviews$",
];
/// Paths refused even where [`ACCEPT_PATHS`] would match (kubectl proxy's own defaults).
const REJECT_PATHS: &[&str] = &["^/api/.*/pods/.*/exec", "^/api/.*/pods/.*/attach"];
/// podtun never changes or deletes anything.
const REJECT_METHODS: &[&str] = &["^PUT$", "^PATCH$", "^DELETE$"];

/// The login-side script: checks kubectl, makes the private directory, reads the default
/// namespace, starts the proxy, waits for its socket, then follows the laptop's heartbeats on
/// stdin. EOF, silence or a signal stop the proxy and remove the directory.
fn proxy_script(plan: &Plan) -> String {
    let cluster = &plan.request.cluster;
    let mut flags = String::new();
    if let Some(path) = &cluster.kubeconfig {
        flags.push_str(&format!(
            " --kubeconfig={}",
            remote_path(&path.display().to_string())
        ));
    }
    if let Some(context) = &cluster.context {
        flags.push_str(&format!(" --context={}", sh_quote(context)));
    }
    let join = |list: &[&str]| sh_quote(&list.join(","));
    let silence = HEARTBEAT_SECS * HEARTBEATS_MISSED;
    format!(
        r#"umask 077
command -v kubectl >/dev/null 2>&1 || {{ echo "{MARK} no-kubectl"; exit 3; }}
base=${{XDG_RUNTIME_DIR:-${{TMPDIR:-/tmp}}}}
[ -d "$base" ] && [ -w "$base" ] || base=/tmp
d=$(mktemp -d "$base/podtun-kubectl.XXXXXXXX") || {{ echo "{MARK} no-dir $base"; exit 3; }}
chmod 700 "$d"
s="$d/proxy.sock"
ns=$(kubectl{flags} config view --minify -o 'jsonpath={{..namespace}}' 2>/dev/null)
echo "{MARK} namespace $ns"
set -m
kubectl{flags} proxy --unix-socket="$s" --accept-paths={accept} --reject-paths={reject} --reject-methods={methods} </dev/null >"$d/log" 2>&1 &
pid=$!
set +m
wd=
stop() {{ [ -n "$wd" ] && kill "$wd" 2>/dev/null; kill -TERM -"$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$d"; }}
trap 'stop; exit 0' HUP INT TERM PIPE
while [ ! -S "$s" ]; do
  if ! kill -0 "$pid" 2>/dev/null; then echo "{MARK} failed"; sed "s/^/{MARK} log /" "$d/log"; rm -rf "$d"; exit 4; fi
  sleep 0.1 2>/dev/null || sleep 1
done
chmod 600 "$s"
: >"$d/beat"
me=$$
( missed=0; while sleep 5; do
    [ -d "$d" ] || exit 0
    if [ -e "$d/beat" ]; then rm -f "$d/beat"; missed=0; else missed=$((missed + 5)); fi
    if [ "$missed" -ge {silence} ]; then kill -TERM "$me"; exit 0; fi
  done ) </dev/null >/dev/null 2>&1 &
wd=$!
echo "{MARK} ready $s"
while IFS= read -r line; do : >"$d/beat" 2>/dev/null; done
stop
"#,
        accept = join(ACCEPT_PATHS),
        reject = join(REJECT_PATHS),
        methods = join(REJECT_METHODS),
    )
}

/// A running `kubectl proxy` on the login host, held by its exec channel.
pub struct Proxy {
    script: RemoteScript,
    /// The proxy's socket on the login host.
    pub socket: String,
    /// The namespace of the kubeconfig's context there (empty: none set).
    pub namespace: String,
}

impl Proxy {
    /// Starts the proxy and waits until its socket exists.
    pub async fn start(ssh: &SshSession, plan: &Plan) -> anyhow::Result<Proxy> {
        let host = ssh.host().to_string();
        let mut script =
            RemoteScript::start(ssh, &proxy_script(plan), MARK, "kubectl proxy").await?;
        let lines = &mut script.lines;
        let mut namespace = String::new();
        let mut log = Vec::new();
        let started = tokio::time::timeout(PROXY_START_TIMEOUT, async {
            while let Some(line) = lines.recv().await {
                let (word, rest) = line.split_once(' ').unwrap_or((&line, ""));
                match word {
                    "namespace" => namespace = rest.trim().to_string(),
                    "ready" => return Ok(rest.trim().to_string()),
                    "log" => log.push(rest.to_string()),
                    "no-kubectl" => {
                        return Err(hinted(
                            anyhow!("kubectl is not on login host `{host}`'s PATH (in a login shell)"),
                            "install kubectl there or add it to PATH in ~/.profile; or use podtun's agent (--agent podtun)",
                        ))
                    }
                    "no-dir" => {
                        return Err(anyhow!(
                            "could not make a private directory in `{rest}` on login host `{host}`"
                        ))
                    }
                    "failed" => {}
                    other => debug!(%host, "kubectl proxy: {other} {rest}"),
                }
            }
            let said = log.join("; ");
            Err(hinted(
                anyhow!(
                    "kubectl proxy did not start on login host `{host}`{}",
                    if said.is_empty() {
                        String::new()
                    } else {
                        format!(": {said}")
                    }
                ),
                "check that `kubectl get pods` works there (kubeconfig, context, credentials)",
            ))
        })
        .await;
        let socket = match started {
            Ok(Ok(socket)) => socket,
            Ok(Err(e)) => {
                script.eof().await;
                return Err(e);
            }
            Err(_) => {
                script.eof().await;
                bail!(
                    "kubectl proxy did not start on login host `{host}` within {}s",
                    PROXY_START_TIMEOUT.as_secs()
                )
            }
        };
        debug!(%host, %socket, %namespace, "kubectl proxy listening");
        Ok(Proxy {
            script,
            socket,
            namespace,
        })
    }

    /// Tells the login side the laptop is still there.
    async fn heartbeat(&self) -> Result<(), russh::Error> {
        self.script.heartbeat().await
    }

    /// Resolves once the proxy's channel closed.
    async fn ended(&self) {
        self.script.ended().await
    }

    /// Closes the proxy's stdin (it stops kubectl and removes the socket) and waits a little.
    pub async fn stop(&self) {
        self.script.stop(PROXY_EXIT_TIMEOUT).await
    }
}

/// Where the proxy is now: the SSH connection and the socket on the login host.
#[derive(Clone)]
struct Route {
    ssh: SshSession,
    socket: String,
}

/// hyper's connector: every connection is a `direct-streamlocal` channel to the proxy's socket,
/// over whichever SSH connection is up (waiting, bounded, while it is being re-established).
#[derive(Clone)]
struct ProxyConnector {
    route: watch::Receiver<Option<Route>>,
}

impl tower::Service<http::Uri> for ProxyConnector {
    type Response = TokioIo<ProxyStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let mut route = self.route.clone();
        Box::pin(async move {
            let up = tokio::time::timeout(LINK_WAIT, route.wait_for(Option::is_some))
                .await
                .map(|r| r.map(|guard| guard.clone()));
            let Ok(Ok(current)) = up else {
                return Err(format!(
                    "the login host was unreachable for {}s",
                    LINK_WAIT.as_secs()
                )
                .into());
            };
            let route = current.ok_or("no route to kubectl proxy")?;
            let channel = route.ssh.open_streamlocal(&route.socket).await?;
            Ok(TokioIo::new(ProxyStream(channel.into_stream())))
        })
    }
}

/// One connection to kubectl proxy.
struct ProxyStream(russh::ChannelStream<russh::client::Msg>);

impl Connection for ProxyStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for ProxyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ProxyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A kube client that talks to the login host's kubectl proxy. The proxy adds the user's
/// credentials there; nothing here holds any.
fn proxy_client(route: watch::Receiver<Option<Route>>, namespace: &str) -> anyhow::Result<Cluster> {
    let base: http::Uri = "http://localhost".parse()?;
    let mut config = kube::Config::new(base);
    config.default_namespace = namespace.to_string();
    let hyper_client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build(ProxyConnector { route });
    let service = ServiceBuilder::new()
        .layer(kube::client::ConfigExt::base_uri_layer(&config))
        .map_err(BoxError::from)
        .service(hyper_client);
    Ok(Cluster::new(
        kube::Client::new(service, namespace.to_string()),
        namespace.to_string(),
    ))
}

/// The error for a login host whose sshd refuses stream-local forwarding.
fn no_streamlocal(host: &str) -> anyhow::Error {
    hinted(
        anyhow!("kubectl mode needs stream-local forwarding, and login host `{host}` does not allow it"),
        "ask its operators for `AllowStreamLocalForwarding local` in sshd_config, or use podtun's agent there (--agent podtun); podtun never falls back to a TCP port, which would lend your cluster rights to every user of that host",
    )
}

/// One established link: SSH connection plus proxy, checked end to end.
pub struct Established {
    ssh: SshSession,
    proxy: Proxy,
}

/// Starts the proxy on `ssh` and checks that a stream-local channel reaches it; on failure the
/// connection is closed (which ends whatever was started there).
pub async fn establish_on(ssh: SshSession, plan: &Plan) -> anyhow::Result<Established> {
    let proxy = match Proxy::start(&ssh, plan).await {
        Ok(proxy) => proxy,
        Err(e) => {
            ssh.disconnect().await;
            return Err(e);
        }
    };
    match ssh.open_streamlocal(&proxy.socket).await {
        Ok(channel) => drop(channel),
        Err(e) => {
            proxy.stop().await;
            ssh.disconnect().await;
            return Err(match e {
                OpenError::Prohibited { host } | OpenError::Refused { host, .. } => {
                    no_streamlocal(&host)
                }
                other => anyhow::Error::new(other),
            });
        }
    }
    Ok(Established { ssh, proxy })
}

/// `podtun doctor` in kubectl mode: starts the proxy on `ssh`, runs the cluster checks through
/// it, then stops it.
pub async fn doctor(
    ssh: &SshSession,
    plan: &Plan,
    emit: &(dyn Fn(crate::wire::Check) + Send + Sync),
) -> anyhow::Result<()> {
    let host = ssh.host().to_string();
    let proxy = Proxy::start(ssh, plan).await?;
    if let Err(e) = ssh.open_streamlocal(&proxy.socket).await {
        proxy.stop().await;
        return Err(match e {
            OpenError::Prohibited { host } | OpenError::Refused { host, .. } => {
                no_streamlocal(&host)
            }
            other => anyhow::Error::new(other),
        });
    }
    let namespace = match &plan.request.cluster.namespace {
        Some(ns) => ns.clone(),
        None if proxy.namespace.is_empty() => "default".to_string(),
        None => proxy.namespace.clone(),
    };
    let (_route_tx, route_rx) = watch::channel(Some(Route {
        ssh: ssh.clone(),
        socket: proxy.socket.clone(),
    }));
    let result = match proxy_client(route_rx, &namespace) {
        Ok(cluster) => {
            let url = format!("kubectl proxy on `{host}`");
            crate::cluster::doctor::run_on(&cluster, &url, emit).await;
            Ok(())
        }
        Err(e) => Err(e),
    };
    proxy.stop().await;
    result
}

/// kubectl mode on a link already established (the first one): runs the forward until
/// shutdown, reconnecting (and restarting the proxy) when the login host goes away.
pub async fn run(
    plan: &Plan,
    out: Arc<Output>,
    early: Vec<Option<tokio::net::TcpListener>>,
    first: Established,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let host = first.ssh.host().to_string();
    info!(%host, socket = %first.proxy.socket, "kubectl mode: the cluster half runs here, through kubectl proxy on the login host");
    let namespace = match &plan.request.cluster.namespace {
        Some(ns) => ns.clone(),
        None if first.proxy.namespace.is_empty() => "default".to_string(),
        None => first.proxy.namespace.clone(),
    };
    let (route_tx, route_rx) = watch::channel(Some(Route {
        ssh: first.ssh.clone(),
        socket: first.proxy.socket.clone(),
    }));
    let cluster = match proxy_client(route_rx, &namespace) {
        Ok(c) => c,
        Err(e) => {
            first.proxy.stop().await;
            first.ssh.disconnect().await;
            return Err(e);
        }
    };
    let link = Arc::new(tokio::sync::Mutex::new(Some(first)));
    let result = serve(
        plan,
        out.clone(),
        early,
        cluster,
        link.clone(),
        route_tx,
        shutdown,
    )
    .await;
    if let Some(current) = link.lock().await.take() {
        current.proxy.stop().await;
        current.ssh.disconnect().await;
    }
    result
}

async fn serve(
    plan: &Plan,
    out: Arc<Output>,
    early: Vec<Option<tokio::net::TcpListener>>,
    cluster: Cluster,
    link: Arc<tokio::sync::Mutex<Option<Established>>>,
    route_tx: watch::Sender<Option<Route>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let progress = {
        let out = out.clone();
        move |m: &str| out.progress(m)
    };
    let setup = async {
        let choose = {
            let out = out.clone();
            move |offered: Candidates| -> BoxFuture<'static, anyhow::Result<String>> {
                let out = out.clone();
                Box::pin(async move { super::pick::choose(&offered, &out).await })
            }
        };
        let tunnel = Tunnel::start_on(cluster, plan.spec.clone(), &progress, &choose).await?;
        let resolved = Resolved::from_event(&tunnel.resolved_event())
            .ok_or_else(|| anyhow!("the tunnel resolved nothing"))?;
        let listeners = run::bind_all(plan, &resolved, early)?;
        Ok::<_, anyhow::Error>((tunnel, resolved, listeners))
    };
    let keeper = keep_link(plan, &out, &link, &route_tx);
    tokio::pin!(keeper);
    let (tunnel, resolved, listeners) = tokio::select! {
        () = &mut shutdown => return Ok(()),
        res = &mut keeper => return res,
        setup = setup => setup?,
    };
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut locals: Vec<SocketAddr> = Vec::new();
    for (listener, port) in listeners.into_iter().zip(&resolved.ports) {
        locals.push(listener.local_addr()?);
        let (tunnel, remote) = (tunnel.clone(), port.remote);
        crate::accept::serve(listener, cancel.clone(), &tracker, move |conn| {
            let tunnel = tunnel.clone();
            async move { tunnel.forward(remote, conn).await.map(|_| ()) }
        });
    }
    // Every change of route after this point is a reconnection (or the loss before it).
    let mut relinked = route_tx.subscribe();
    let jupyter = tokio::select! {
        () = &mut shutdown => None,
        res = &mut keeper => Some(res.map(|()| None)),
        ready = usable(plan, &tunnel, &locals, &progress) => Some(ready.map(Some)),
    };
    let result = match jupyter {
        None => Ok(()),
        Some(Err(e)) => Err(e),
        Some(Ok(jupyter)) => {
            let report = |jupyter: Option<&JupyterAccess>, first: bool| {
                run::report_ready(
                    plan,
                    &out,
                    &resolved,
                    &locals,
                    jupyter,
                    first,
                    Some("kubectl"),
                )
            };
            report(jupyter.flatten().as_ref(), true);
            let emit = |ev: AgentEvent| run::on_agent_event(&out, &locals, ev);
            let supervise = tunnel.supervise(&emit);
            tokio::pin!(supervise);
            // After a reconnection the forward is `ready` again (as with podtun's agent) once
            // its ports answer through the new link; the check runs while heartbeats go on.
            let mut again: Fuse<BoxFuture<'_, anyhow::Result<Option<JupyterAccess>>>> =
                Fuse::terminated();
            loop {
                tokio::select! {
                    () = &mut shutdown => break Ok(()),
                    res = &mut keeper => break res,
                    res = &mut supervise => break res,
                    Ok(()) = relinked.changed() => {
                        again = if relinked.borrow_and_update().is_some() {
                            usable(plan, &tunnel, &locals, &progress).boxed().fuse()
                        } else {
                            Fuse::terminated()
                        };
                    }
                    checked = &mut again => match checked {
                        Ok(jupyter) => report(jupyter.as_ref(), false),
                        Err(e) => out.note(&format!("not usable after reconnecting: {e:#}")),
                    },
                }
            }
        }
    };
    run::drain(cancel, tracker).await;
    result?;
    out.event(&Event::Closed);
    Ok(())
}

/// Waits until every local port answers through the whole chain (for Jupyter, with the token
/// read from the pod's log); the Jupyter access found.
async fn usable(
    plan: &Plan,
    tunnel: &Tunnel,
    locals: &[SocketAddr],
    progress: &(dyn Fn(&str) + Send + Sync),
) -> anyhow::Result<Option<JupyterAccess>> {
    let jupyter = match plan.spec.preset {
        Preset::Jupyter => Some(tunnel.jupyter(progress).await?),
        _ => None,
    };
    tunnel.wait_listening(progress).await?;
    run::wait_usable(plan, locals, jupyter.as_ref(), progress).await?;
    Ok(jupyter)
}

/// Keeps the link up: heartbeats to the login side; when the connection or the proxy goes away,
/// reconnects with backoff and restarts the proxy. Returns only on a failure that retrying
/// cannot fix.
async fn keep_link(
    plan: &Plan,
    out: &Output,
    link: &tokio::sync::Mutex<Option<Established>>,
    route_tx: &watch::Sender<Option<Route>>,
) -> anyhow::Result<()> {
    let mut failures = 0u32;
    loop {
        let lost = {
            let guard = link.lock().await;
            let Some(current) = guard.as_ref() else {
                return Ok(());
            };
            let host = current.ssh.host().to_string();
            let mut heartbeat = tokio::time::interval(Duration::from_secs(HEARTBEAT_SECS));
            loop {
                tokio::select! {
                    _ = heartbeat.tick() => {
                        if current.proxy.heartbeat().await.is_err() {
                            break format!("lost the connection to login host `{host}`");
                        }
                    }
                    () = current.ssh.closed() => break format!("lost the connection to login host `{host}`"),
                    () = current.proxy.ended() => break format!("kubectl proxy on login host `{host}` ended"),
                }
            }
        };
        route_tx.send_replace(None);
        out.event(&Event::Reconnecting {
            reason: lost.clone(),
        });
        if let Some(old) = link.lock().await.take() {
            old.proxy.stop().await;
            old.ssh.disconnect().await;
        }
        loop {
            failures += 1;
            tokio::time::sleep(super::session::backoff(failures)).await;
            match reconnect(plan).await {
                Ok(next) => {
                    route_tx.send_replace(Some(Route {
                        ssh: next.ssh.clone(),
                        socket: next.proxy.socket.clone(),
                    }));
                    *link.lock().await = Some(next);
                    out.note("reconnected");
                    failures = 0;
                    break;
                }
                Err(e) if super::session::is_permanent(&e) => return Err(e),
                Err(e) => out.note(&format!("reconnecting failed: {e:#}")),
            }
        }
    }
}

async fn reconnect(plan: &Plan) -> anyhow::Result<Established> {
    let ssh = SshSession::connect(&plan.via, &super::session::ssh_options(plan)).await?;
    establish_on(ssh, plan).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_path_is_one_podtun_uses() {
        let accepted = |path: &str| ACCEPT_PATHS.iter().any(|re| regex_lite_match(re, path));
        for path in [
            "/version",
            "/api",
            "/api/v1/namespaces/demo/pods",
            "/api/v1/namespaces/demo/pods/jupyter-0",
            "/api/v1/namespaces/demo/pods/jupyter-0/log",
            "/api/v1/namespaces/demo/pods/jupyter-0/portforward",
            "/api/v1/namespaces/demo/services/web",
            "/apis/apps/v1/namespaces/demo/deployments/web",
        ] {
            assert!(accepted(path), "{path} must pass");
        }
        for path in [
            "/api/v1/namespaces/demo/secrets",
            "/api/v1/namespaces/demo/secrets/token",
            "/api/v1/namespaces/demo/pods/jupyter-0/proxy",
            "/api/v1/namespaces/demo/pods/jupyter-0/exec",
            "/api/v1/namespaces/demo/configmaps/x",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        ] {
            assert!(!accepted(path), "{path} must be refused");
        }
        // kubectl splits the flags on commas: none may appear inside a pattern.
        for re in ACCEPT_PATHS
            .iter()
            .chain(REJECT_PATHS)
            .chain(REJECT_METHODS)
        {
            assert!(!re.contains(','), "{re}");
        }
    }

    /// The subset of regular expressions the patterns above use: `^…$`, `[^/]+`, `(a|b)`, `/?`.
    fn regex_lite_match(pattern: &str, path: &str) -> bool {
        let out = std::process::Command::new("grep")
            .args(["-Eq", pattern])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(format!("{path}\n").as_bytes())?;
                child.wait()
            });
        out.map(|s| s.success()).unwrap_or(false)
    }

    #[cfg(unix)]
    #[test]
    fn the_script_is_valid_shell() {
        let plan = crate::plan::Plan::from_forward(&test_args()).expect("plan");
        let script = proxy_script(&plan);
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", &script])
            .output()
            .expect("sh");
        assert!(out.status.success(), "{out:?}\n{script}");
        assert!(script.contains("--context='ctx'"), "{script}");
        assert!(
            script.contains("--kubeconfig=\"$HOME\"/'.kube/other'"),
            "{script}"
        );
    }

    fn test_args() -> crate::cli::ForwardArgs {
        use clap::Parser;
        let cli = crate::cli::Cli::parse_from([
            "podtun",
            "forward",
            "pod/web",
            "80",
            "--context",
            "ctx",
            "--kubeconfig",
            "~/.kube/other",
        ]);
        match cli.command {
            crate::cli::Command::Forward(args) => args,
            _ => unreachable!(),
        }
    }
}
