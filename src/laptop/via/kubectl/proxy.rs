//! `kubectl proxy` on the login host: the script that starts it on a private socket, with only
//! the paths podtun uses, and follows the laptop's heartbeats; [`Proxy`] holds it.

use std::time::Duration;

use anyhow::{anyhow, bail};
use tracing::debug;

use crate::error::hinted;
use crate::laptop::ssh::exec::{kubectl_flags, sh_quote};
use crate::laptop::ssh::script::RemoteScript;
use crate::laptop::ssh::SshSession;
use crate::plan::Plan;
use crate::proto::wire::HEARTBEAT_SECS;

/// Bound on kubectl proxy's start (login shell and kubectl's own start-up included).
const PROXY_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on the proxy's exit after its channel closed.
const PROXY_EXIT_TIMEOUT: Duration = Duration::from_secs(3);
/// Heartbeats the login side may miss before it stops the proxy.
const HEARTBEATS_MISSED: u64 = 3;
/// The prefix of every line the login-side script prints (the rest is login-shell noise).
const MARK: &str = "podtun-kubectl:";

/// What kubectl proxy passes: discovery, the reads podtun makes (pods, their logs, services and
/// workloads for selector resolution, the namespace), port-forward, creating a pod (`--image`),
/// and access reviews (`doctor`, the rights launching needs). Everything else (exec, attach,
/// proxy to pods, secrets, other resources) is refused by the proxy itself, before it reaches
/// the API server.
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
/// podtun never changes or deletes anything through the proxy: a pod it launched is deleted
/// by the login host's watchdog, with kubectl there.
const REJECT_METHODS: &[&str] = &["^PUT$", "^PATCH$", "^DELETE$"];

/// The login-side script: checks kubectl, makes the private directory, reads the default
/// namespace, starts the proxy, waits for its socket, then follows the laptop's heartbeats on
/// stdin. EOF, silence or a signal stop the proxy and remove the directory.
fn proxy_script(plan: &Plan) -> String {
    let flags = kubectl_flags(&plan.request.cluster);
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
    pub(super) script: RemoteScript,
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
    pub(super) fn namespace_for(&self, plan: &Plan) -> String {
        match &plan.request.cluster.namespace {
            Some(ns) => ns.clone(),
            None if self.namespace.is_empty() => "default".to_string(),
            None => self.namespace.clone(),
        }
    }

    /// Resolves once the proxy's channel closed.
    pub(super) async fn ended(&self) {
        self.script.ended().await
    }

    /// Closes the proxy's stdin (it stops kubectl and removes the socket) and waits a little.
    pub async fn stop(&self) {
        self.script.stop(PROXY_EXIT_TIMEOUT).await
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
