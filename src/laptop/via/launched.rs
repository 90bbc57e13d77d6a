//! A pod podtun launched through the login host (`--launch`, `--image`): what the next
//! connections ask for instead, the watchdog that deletes it from the login host if the laptop
//! goes silent, and its end when podtun stops (deleted, or kept with `--keep`).

use anyhow::anyhow;

use crate::cluster::client::ClusterRef;
use crate::cluster::launch::delete::ALREADY_GONE;
use crate::error::hinted;
use crate::laptop::ssh::exec::{kubectl_flags, sh_quote};
use crate::laptop::ssh::SshSession;
use crate::laptop::watchdog::{Guard, Watchdog};
use crate::output::{Event, Output};
use crate::plan::Plan;
use crate::proto::wire::Request;

/// How the login host deletes a pod: podtun's agent there, or kubectl.
#[derive(Debug, Clone)]
pub(super) enum Deleter {
    /// `BIN agent delete-pod`, `BIN` as the login host's shell reads it.
    Agent(String),
    /// `kubectl delete pod`.
    Kubectl,
}

/// What the agent's first events need when it reports a launched pod: the connection it runs
/// on, and how the login host deletes the pod.
pub(super) struct Launching<'a> {
    pub(super) launches: &'a mut Launches,
    pub(super) ssh: &'a SshSession,
    pub(super) deleter: Deleter,
}

impl Launching<'_> {
    /// The agent reported the pod it launched.
    pub(super) async fn launched(
        &mut self,
        namespace: &str,
        pod: &str,
        out: &Output,
    ) -> anyhow::Result<()> {
        let deleter = self.deleter.clone();
        self.launches
            .launched(self.ssh, deleter, namespace, pod, out)
            .await
    }
}

/// The launched pod of this run, if any, and its watchdog on the current connection.
pub(super) struct Launches {
    keep: bool,
    grace: std::time::Duration,
    cluster: ClusterRef,
    /// `namespace`, `pod`: once launched.
    pod: Option<(String, String)>,
    deleter: Option<Deleter>,
    /// The connection up now, and the watchdog on it.
    ssh: Option<SshSession>,
    watchdog: Option<Watchdog>,
}

impl Launches {
    /// Nothing launched yet.
    pub(super) fn new(plan: &Plan) -> Launches {
        Launches {
            keep: plan.keep,
            grace: plan.launch_grace,
            cluster: plan.request.cluster.clone(),
            pod: None,
            deleter: None,
            ssh: None,
            watchdog: None,
        }
    }

    /// The request for the next agent: the launched pod itself, not another launch.
    pub(super) fn request(&self, plan: &Plan) -> Request {
        let mut request = plan.request.clone();
        if let Some((namespace, pod)) = &self.pod {
            request.launch = None;
            request.target = format!("pod/{pod}");
            request.selector = None;
            request.cluster.namespace = Some(namespace.clone());
        }
        request
    }

    /// The pod that was launched: said, and guarded on `ssh` from now on.
    pub(super) async fn launched(
        &mut self,
        ssh: &SshSession,
        deleter: Deleter,
        namespace: &str,
        pod: &str,
        out: &Output,
    ) -> anyhow::Result<()> {
        out.event(&Event::Launched {
            namespace: namespace.to_string(),
            pod: pod.to_string(),
        });
        self.record(deleter, namespace, pod);
        self.guard(ssh).await
    }

    /// A pod said to be launched already (while its launcher still ran): known from now on, so
    /// that [`Launches::end`] deletes it even if podtun stops before it is guarded.
    pub(super) fn record(&mut self, deleter: Deleter, namespace: &str, pod: &str) {
        self.pod = Some((namespace.to_string(), pod.to_string()));
        self.deleter = Some(deleter);
    }

    /// The pod launched so far, if any: its name.
    pub(super) fn pod(&self) -> Option<&str> {
        self.pod.as_ref().map(|(_, pod)| pod.as_str())
    }

    /// A new connection: a new watchdog there takes the pod over from the lost one's.
    pub(super) async fn guard(&mut self, ssh: &SshSession) -> anyhow::Result<()> {
        self.ssh = Some(ssh.clone());
        let Some(undo) = self.undo() else {
            return Ok(());
        };
        let Some((namespace, pod)) = &self.pod else {
            return Ok(());
        };
        if self.keep {
            return Ok(());
        }
        let guard = self.guard_of(namespace, pod, undo);
        self.watchdog = Some(Watchdog::start(ssh, &guard).await?);
        Ok(())
    }

    /// The login host's command that deletes the launched pod.
    fn undo(&self) -> Option<String> {
        let ((namespace, pod), deleter) = (self.pod.as_ref()?, self.deleter.as_ref()?);
        Some(undo(deleter, &self.cluster, namespace, pod))
    }

    /// The connection was lost: its watchdog keeps the pod through the grace.
    pub(super) fn lost(&mut self) {
        self.ssh = None;
        self.watchdog = None;
    }

    /// podtun stops: the pod is deleted (over the connection still up) or kept, and either is
    /// said. Without a connection the watchdog deletes it after its grace.
    pub(super) async fn end(&mut self, out: &Output) {
        let undo = self.undo();
        let (Some((namespace, pod)), Some(undo)) = (self.pod.take(), undo) else {
            return;
        };
        let (watchdog, ssh) = (self.watchdog.take(), self.ssh.take());
        if self.keep {
            out.event(&Event::Kept { namespace, pod });
            return;
        }
        let deleted = match (watchdog, ssh) {
            (Some(watchdog), _) => watchdog.undo_now().await,
            (None, Some(ssh)) => undo_on(&ssh, self.guard_of(&namespace, &pod, undo)).await,
            (None, None) => {
                out.note(&format!(
                    "the login host deletes pod `{namespace}/{pod}` within {}s of the lost connection",
                    self.grace.as_secs()
                ));
                return;
            }
        };
        match deleted {
            Ok(said) if was_there(&said) => out.event(&Event::Deleted { namespace, pod }),
            Ok(_) => out.note(&format!(
                "pod `{namespace}/{pod}`, which podtun launched, was not there to delete"
            )),
            Err(e) => out.note(&format!(
                "{:#}",
                hinted(
                    anyhow!(
                        "could not delete pod `{namespace}/{pod}`, which podtun launched: {e:#}"
                    ),
                    format!("delete it yourself: `kubectl delete pod {pod} -n {namespace}`")
                )
            )),
        }
    }

    /// The watchdog's guard of the launched pod.
    fn guard_of(&self, namespace: &str, pod: &str, undo: String) -> Guard {
        Guard {
            key: format!("pod-{namespace}-{pod}"),
            what: format!("pod {namespace}/{pod}"),
            undo,
            needs: None,
            grace: self.grace,
        }
    }
}

/// Deletes the pod over `ssh` where no watchdog of this run is known to guard it: through a
/// fresh watchdog, which also takes over one whose start was cut short; if that cannot start,
/// the command alone. The command's last line of output.
async fn undo_on(ssh: &SshSession, guard: Guard) -> anyhow::Result<String> {
    match Watchdog::start(ssh, &guard).await {
        Ok(watchdog) => watchdog.undo_now().await,
        Err(_) => run_undo(ssh, &guard.undo).await,
    }
}

/// Whether the delete command's last line says it deleted the pod: the agent says `pod … was
/// already gone`, `kubectl delete --ignore-not-found` nothing, for a pod not there.
fn was_there(said: &str) -> bool {
    !said.trim().is_empty() && !said.contains(ALREADY_GONE)
}

/// Runs the command that deletes the pod on the login host, without a watchdog: its last line
/// of output.
async fn run_undo(ssh: &SshSession, undo: &str) -> anyhow::Result<String> {
    let ran = crate::laptop::ssh::exec::run(ssh, undo, None).await?;
    if ran.status == Some(0) {
        Ok(ran
            .stdout
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string())
    } else {
        Err(ran.failure(undo, &format!("login host `{}`", ssh.host())))
    }
}

/// The login host's command that deletes the pod.
fn undo(deleter: &Deleter, cluster: &ClusterRef, namespace: &str, pod: &str) -> String {
    let flags = kubectl_flags(cluster);
    match deleter {
        Deleter::Agent(bin) => format!(
            "{bin} agent delete-pod{flags} {} {}",
            sh_quote(namespace),
            sh_quote(pod)
        ),
        Deleter::Kubectl => format!(
            "kubectl{flags} delete pod {} -n {} --wait=false --ignore-not-found",
            sh_quote(pod),
            sh_quote(namespace)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_delete_commands_say_of_a_pod_there_and_one_gone() {
        assert!(was_there("deleted pod demo/alice-1"));
        assert!(was_there("pod \"alice-1\" deleted"));
        assert!(was_there("pod \"alice-1\" deleted from demo namespace"));
        assert!(!was_there("pod demo/alice-1 was already gone"));
        assert!(!was_there(""), "kubectl --ignore-not-found says nothing");
    }

    #[test]
    fn kubectl_deletes_only_the_one_pod_and_a_missing_one_is_no_failure() {
        let cluster = ClusterRef {
            namespace: Some("ignored".into()),
            ..Default::default()
        };
        let undo = undo(&Deleter::Kubectl, &cluster, "demo", "alice-1");
        assert!(
            undo.contains("delete pod 'alice-1' -n 'demo' --wait=false --ignore-not-found"),
            "{undo}"
        );
    }
}
