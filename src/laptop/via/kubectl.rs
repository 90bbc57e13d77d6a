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
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::{BoxError, ServiceBuilder};
use tracing::{debug, info};

use crate::cluster::client::Cluster;
use crate::cluster::tunnel::Tunnel;
use crate::error::hinted;
use crate::laptop::link::{self, Ended, Slot, Supervised, Waiter};
use crate::laptop::listen::{self, Locals};
use crate::laptop::pick::chooser;
use crate::laptop::ready;
use crate::laptop::ssh::exec::{remote_path, sh_quote};
use crate::laptop::ssh::script::RemoteScript;
use crate::laptop::ssh::{Heartbeat, OpenError, SshSession, Stream};
use crate::output::Output;
use crate::plan::Plan;
use crate::proto::wire::{ClusterEvent, HEARTBEAT_SECS};

/// Bound on kubectl proxy's start (login shell and kubectl's own start-up included).
const PROXY_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the proxy's exit after its channel closed.
const PROXY_EXIT_TIMEOUT: Duration = Duration::from_secs(3);
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

    /// The namespace to work in: `-n`, else the context's on the login host, else `default`.
    fn namespace_for(&self, plan: &Plan) -> String {
        match &plan.request.cluster.namespace {
            Some(ns) => ns.clone(),
            None if self.namespace.is_empty() => "default".to_string(),
            None => self.namespace.clone(),
        }
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
struct ProxyRoute {
    ssh: SshSession,
    socket: String,
}

/// hyper's connector: every connection is a `direct-streamlocal` channel to the proxy's socket,
/// over whichever SSH connection is up (waiting, bounded, while it is being re-established).
#[derive(Clone)]
struct ProxyConnector {
    route: Waiter<ProxyRoute>,
}

impl tower::Service<http::Uri> for ProxyConnector {
    type Response = TokioIo<Stream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let mut route = self.route.clone();
        Box::pin(async move {
            let route = route.link().await?;
            let channel = route.ssh.open_streamlocal(&route.socket).await?;
            Ok(TokioIo::new(channel))
        })
    }
}

/// hyper asks every connection what it is; one to kubectl proxy is plain.
impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// A kube client that talks to the login host's kubectl proxy. The proxy adds the user's
/// credentials there; nothing here holds any.
fn proxy_client(route: Waiter<ProxyRoute>, namespace: &str) -> anyhow::Result<Cluster> {
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
    /// What keeps the proxy running on the login host.
    beats: Heartbeat,
}

impl Established {
    /// Holds the link: heartbeats to the login side until the connection or the proxy goes
    /// away; why.
    async fn held(&self) -> String {
        let host = self.ssh.host();
        tokio::select! {
            () = self.beats.failed() => format!("lost the connection to login host `{host}`"),
            () = self.ssh.closed() => format!("lost the connection to login host `{host}`"),
            () = self.proxy.ended() => format!("kubectl proxy on login host `{host}` ended"),
        }
    }

    /// Stops the proxy and closes the connection.
    async fn close(self) {
        self.proxy.stop().await;
        self.ssh.disconnect().await;
    }
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
    if let Err(e) = reach(&ssh, &proxy).await {
        proxy.stop().await;
        ssh.disconnect().await;
        return Err(e);
    }
    let beats = proxy.script.heartbeat(Duration::from_secs(HEARTBEAT_SECS));
    Ok(Established { ssh, proxy, beats })
}

/// Checks that a stream-local channel reaches the proxy's socket.
async fn reach(ssh: &SshSession, proxy: &Proxy) -> anyhow::Result<()> {
    match ssh.open_streamlocal(&proxy.socket).await {
        Ok(_channel) => Ok(()),
        Err(OpenError::Prohibited { host } | OpenError::Refused { host, .. }) => {
            Err(no_streamlocal(&host))
        }
        Err(other) => Err(other.into()),
    }
}

/// `podtun doctor` in kubectl mode: starts the proxy on `ssh`, runs the cluster checks through
/// it, then stops it.
pub async fn doctor(
    ssh: &SshSession,
    plan: &Plan,
    emit: &(dyn Fn(crate::proto::wire::Check) + Send + Sync),
) -> anyhow::Result<()> {
    let host = ssh.host().to_string();
    let proxy = Proxy::start(ssh, plan).await?;
    if let Err(e) = reach(ssh, &proxy).await {
        proxy.stop().await;
        return Err(e);
    }
    let namespace = proxy.namespace_for(plan);
    let route = Slot::new("the login host");
    route.set(Arc::new(ProxyRoute {
        ssh: ssh.clone(),
        socket: proxy.socket.clone(),
    }));
    let result = match proxy_client(route.waiter(), &namespace) {
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
    early: Vec<Option<TcpListener>>,
    first: Established,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let host = first.ssh.host().to_string();
    info!(%host, socket = %first.proxy.socket, "kubectl mode: the cluster half runs here, through kubectl proxy on the login host");
    let namespace = first.proxy.namespace_for(plan);
    let proxy = Slot::new("the login host");
    let cluster = match proxy_client(proxy.waiter(), &namespace) {
        Ok(c) => c,
        Err(e) => {
            first.close().await;
            return Err(e);
        }
    };
    let mut route = WithKubectl {
        plan,
        out: out.clone(),
        early,
        cluster,
        proxy,
        tunnel: None,
        locals: Locals::new("the login host"),
    };
    link::run(&mut route, &out, Some(first), shutdown).await
}

/// The route through kubectl proxy: the cluster half runs here, over a kube client whose
/// connections are channels to the proxy's socket; local connections go into that tunnel.
struct WithKubectl<'a> {
    plan: &'a Plan,
    out: Arc<Output>,
    /// The local ports the user named, bound before anything started.
    early: Vec<Option<TcpListener>>,
    /// The kube client, through whichever proxy is up.
    cluster: Cluster,
    /// Where the client's connections go now.
    proxy: Slot<ProxyRoute>,
    /// The cluster half, once the pod is found: it outlives every link.
    tunnel: Option<Tunnel>,
    locals: Locals<Tunnel>,
}

impl Supervised for WithKubectl<'_> {
    type Link = Established;

    async fn establish(&mut self, out: &Output) -> anyhow::Result<Established> {
        let ssh = link::connect(self.plan, out).await?;
        establish_on(ssh, self.plan).await
    }

    async fn serve(&mut self, link: &mut Established, out: &Output) -> Ended {
        self.proxy.set(Arc::new(ProxyRoute {
            ssh: link.ssh.clone(),
            socket: link.proxy.socket.clone(),
        }));
        if self.tunnel.is_some() {
            out.note("reconnected");
        }
        // Heartbeats go on while the pod starts and while the ports are checked.
        tokio::select! {
            lost = link.held() => Ended::Lost(lost),
            ended = self.forward() => match ended {
                // A failure the lost link caused is the loss, not the answer.
                Ended::Fatal(e) if link.ssh.is_closed() => Ended::Lost(format!("{e:#}")),
                ended => ended,
            },
        }
    }

    async fn close(&mut self, link: Established, _last: bool) {
        self.proxy.clear();
        link.close().await;
    }

    async fn finish(&mut self, _out: &Output) {
        self.locals.close().await;
    }
}

impl WithKubectl<'_> {
    /// The first time: finds the pod and binds the local ports. Every time: checks them,
    /// reports `ready`, then follows the pod (its replacement) until that fails.
    async fn forward(&mut self) -> Ended {
        let out = self.out.clone();
        let progress = |m: &str| out.progress(m);
        let first = self.tunnel.is_none();
        let tunnel = match &self.tunnel {
            Some(tunnel) => tunnel.clone(),
            None => match self.start(&progress).await {
                Ok(tunnel) => tunnel,
                Err(e) => return Ended::Fatal(e),
            },
        };
        let locals = self.locals.addrs().to_vec();
        let jupyter = match ready::pod_usable(self.plan, &tunnel, &locals, &progress).await {
            Ok(jupyter) => jupyter,
            Err(e) if first => return Ended::Fatal(e),
            Err(e) => {
                // As before the loss: the forward goes on, and the next loss checks again.
                out.note(&format!("not usable after reconnecting: {e:#}"));
                return self.follow(&tunnel, &locals).await;
            }
        };
        let resolved = tunnel.resolved();
        ready::report_ready(
            self.plan,
            &out,
            &resolved,
            &locals,
            jupyter.as_ref(),
            first,
            Some("kubectl"),
        );
        self.follow(&tunnel, &locals).await
    }

    /// Finds the pod and serves the local ports into the tunnel.
    async fn start(&mut self, progress: &(dyn Fn(&str) + Send + Sync)) -> anyhow::Result<Tunnel> {
        let choose = chooser(self.out.clone());
        let tunnel = Tunnel::start_on(
            self.cluster.clone(),
            self.plan.spec.clone(),
            progress,
            &choose,
        )
        .await?;
        let resolved = tunnel.resolved();
        let listeners = listen::bind_all(self.plan, &resolved, std::mem::take(&mut self.early))?;
        let remotes: Arc<Vec<u16>> = Arc::new(resolved.ports.iter().map(|p| p.remote).collect());
        self.locals
            .serve(listeners, move |tunnel: Arc<Tunnel>, index, conn| {
                let remote = remotes[index];
                async move { tunnel.forward(remote, conn).await.map(|_| ()) }
            })?;
        self.locals.route(Arc::new(tunnel.clone()));
        self.tunnel = Some(tunnel.clone());
        Ok(tunnel)
    }

    /// Follows the pod until that fails.
    async fn follow(&self, tunnel: &Tunnel, locals: &[SocketAddr]) -> Ended {
        let emit = |ev: ClusterEvent| ready::on_cluster_event(&self.out, locals, ev);
        match tunnel.supervise(&emit).await {
            Ok(()) => Ended::Shutdown,
            Err(e) => Ended::Fatal(e),
        }
    }
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

    #[cfg(unix)]
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
