//! The laptop ↔ agent protocol: JSON lines over the agent's exec channel (the only module both
//! sides import). The same events drive local mode, where no agent is involved.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::jupyter::access::JupyterAccess;

/// Which cluster, context and namespace to use, as kubectl's flags say it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterRef {
    /// `--kubeconfig`; else `KUBECONFIG`, else `~/.kube/config`, else in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`; else the current context.
    pub context: Option<String>,
    /// `-n`; else the context's namespace, else `default`.
    pub namespace: Option<String>,
}
use super::refusal::ForwardRefused;

/// Protocol version; a mismatch is an error with a hint, never undefined behaviour.
pub const PROTOCOL: u32 = 3;

/// First byte of a connection to an agent socket that is one connection to the pod (tools
/// and tests; the agent opens the pod side only once it arrives).
pub const STREAM_OPEN: u8 = b'+';

/// First byte of a connection to an agent socket that carries many connections to the pod,
/// multiplexed ([`crate::proto::mux`]): the laptop's way, one SSH channel per socket.
pub const MUX_OPEN: u8 = b'*';

/// podtun's version, which the agent must share with the laptop.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What to forward: the laptop's first line to the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// `NAME`, `pod/NAME`, `svc/NAME`, … (empty with a selector).
    pub target: String,
    /// `-l SELECTOR`.
    #[serde(default)]
    pub selector: Option<String>,
    /// Kubeconfig, context and namespace, as kubectl on the agent's host would read them.
    #[serde(flatten)]
    pub cluster: ClusterRef,
    /// `-c CONTAINER`.
    #[serde(default)]
    pub container: Option<String>,
    /// `jupyter`, `redis` or `generic`.
    pub preset: String,
    /// `[LOCAL:]REMOTE` as typed.
    #[serde(default)]
    pub ports: Vec<String>,
    /// `--timeout` in seconds.
    pub timeout_secs: u64,
    /// `--launch` or `--image`: the pod is launched first, and the forward goes to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
}

/// How the pod a forward goes to comes to be (`--launch`, `--image`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Launch {
    /// A launcher command (POSIX sh) that creates the pod and returns: DSMLP's
    /// `launch-scipy-ml.sh -b`, `kubectl run …`, `kubectl create -f nb.yaml`.
    Command(String),
    /// A pod podtun creates itself from an image.
    Image(PodTemplate),
}

/// `--image` and its resources: the pod podtun creates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodTemplate {
    /// The container image.
    pub image: String,
    /// `--cpu`: request and limit (a Kubernetes quantity: `2`, `500m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// `--memory`: request and limit (`8Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// `--gpu`: `nvidia.com/gpu`, request and limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
}

/// The laptop's first line: the protocol version and the request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// Must be [`PROTOCOL`].
    pub v: u32,
    /// What to forward.
    pub request: Request,
    /// The laptop sends an empty line at least this often (seconds); when several go missing,
    /// the link is dead even if SSH has not noticed yet, and the agent exits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_secs: Option<u64>,
    /// What to do with the request (absent: forward).
    #[serde(default, skip_serializing_if = "is_forward")]
    pub kind: Kind,
}

fn is_forward(kind: &Kind) -> bool {
    *kind == Kind::Forward
}

/// How often the laptop tells the agent it is still there.
pub const HEARTBEAT_SECS: u64 = 10;

/// The pod and ports the cluster side resolved (in-process, or reported by the agent).
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Namespace of the pod.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The forwarded ports, in order.
    pub ports: Vec<WirePort>,
}

impl Resolved {
    /// From a `resolved` event.
    pub fn from_event(event: &ClusterEvent) -> Option<Resolved> {
        match event {
            ClusterEvent::Resolved {
                namespace,
                pod,
                ports,
                ..
            } => Some(Resolved {
                namespace: namespace.clone(),
                pod: pod.clone(),
                ports: ports.clone(),
            }),
            _ => None,
        }
    }
}

/// One forwarded port as the cluster side resolved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePort {
    /// Port in the pod.
    pub remote: u16,
    /// Local port asked for (`LOCAL:` or the service port), if any.
    #[serde(default)]
    pub local: Option<u16>,
    /// Container port name, if declared.
    #[serde(default)]
    pub name: Option<String>,
}

/// What the cluster half reports: agent → laptop over the protocol, and straight to the output
/// when the cluster half runs on the laptop (local and kubectl mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum ClusterEvent {
    /// First line of the agent.
    Hello {
        /// podtun version of the agent.
        version: String,
        /// Protocol version of the agent.
        protocol: u32,
    },
    /// Something to show while waiting.
    Progress {
        /// Human text.
        message: String,
    },
    /// The pod and ports were found and the pod is Ready.
    Resolved {
        /// Namespace of the pod.
        namespace: String,
        /// Pod name.
        pod: String,
        /// Container name.
        container: String,
        /// Ports in order.
        ports: Vec<WirePort>,
    },
    /// The agent's sockets, one per port, in order.
    Listening {
        /// Unix socket paths on the login host.
        sockets: Vec<String>,
    },
    /// Jupyter's token and paths.
    Token(JupyterAccess),
    /// The pod was launched (`--launch`, `--image`): the laptop deletes it when podtun stops.
    /// Sent as soon as the pod exists, before any wait.
    Launched {
        /// Namespace of the pod.
        namespace: String,
        /// Pod name.
        pod: String,
    },
    /// The pod was replaced (deleted, restarted, rescheduled) and the new one is Ready.
    PodReplaced {
        /// The new pod's name.
        pod: String,
        /// Jupyter's access, re-read from the new pod's logs.
        #[serde(default)]
        jupyter: Option<JupyterAccess>,
    },
    /// No TARGET and several pods fit: the laptop answers with a [`Pick`] line (the user's
    /// choice, or none when nobody can choose).
    Candidates(Candidates),
    /// What the cluster checks of `podtun doctor` found, one event per check.
    Check(Check),
    /// A failure on the cluster side.
    Error {
        /// What failed.
        message: String,
        /// What to do.
        #[serde(default)]
        hint: Option<String>,
        /// Set when the API server refused a port-forward to this user: final, whatever the
        /// laptop would otherwise retry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refused: Option<ForwardRefused>,
    },
}

/// The pods that fit a preset when no TARGET was given, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidates {
    /// The namespace they are in.
    pub namespace: String,
    /// `jupyter`, `redis` or `generic`.
    pub preset: String,
    /// The pods, newest first.
    pub pods: Vec<Candidate>,
}

/// One pod that fits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The pod's name.
    pub name: String,
    /// When it was created (RFC 3339), if known.
    #[serde(default)]
    pub created: Option<String>,
    /// Whether it is Ready.
    #[serde(default)]
    pub ready: bool,
    /// What made it fit (`image quay.io/jupyter/base-notebook`, `port 6379`).
    #[serde(default)]
    pub why: String,
}

/// The laptop's answer to [`ClusterEvent::Candidates`]: the pod chosen, or `None` when nobody
/// can choose (no terminal); the agent then fails with the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pick {
    /// The chosen pod's name.
    pub pick: Option<String>,
}

/// What the laptop's first line asks of the agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Forward the request's target (the default).
    #[default]
    Forward,
    /// Run the cluster checks of `podtun doctor` and exit.
    Doctor,
}

/// One line of `podtun doctor`: a check, whether it passed, and what to do when not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// What was checked (`API server`, `namespace`, …).
    pub name: String,
    /// How it went.
    pub status: CheckStatus,
    /// What was found.
    pub detail: String,
    /// What to do, when it failed.
    #[serde(default)]
    pub hint: Option<String>,
}

/// The outcome of a [`Check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckStatus {
    /// Passed.
    Ok,
    /// Worth knowing, not a failure.
    Note,
    /// Failed: podtun will not work until it is fixed.
    Failed,
    /// Not run, because an earlier check failed.
    Skipped,
}

impl ClusterEvent {
    /// The error event for an error, with its causes and hint.
    pub fn from_error(err: &anyhow::Error) -> Self {
        ClusterEvent::Error {
            message: format!("{err:#}"),
            hint: crate::error::hint_of(err),
            refused: super::refusal::refusal_of(err).cloned(),
        }
    }
}

/// The failure an `error` event from `host` reports, as an error of this side: its text and
/// hint, and a refused port-forward kept as [`ForwardRefused`] so that it is known by type.
pub fn remote_error(
    host: &str,
    message: String,
    hint: Option<String>,
    refused: Option<ForwardRefused>,
) -> anyhow::Error {
    let text = format!("on login host `{host}`: {message}");
    let err = match refused {
        Some(refused) => anyhow::Error::new(refused).context(text),
        None => anyhow::Error::msg(text),
    };
    match hint {
        Some(hint) => crate::error::hinted(err, hint),
        None => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jupyter::Token;

    #[test]
    fn events_are_json_lines_with_an_event_tag() {
        let ev = ClusterEvent::Progress {
            message: "waiting".into(),
        };
        assert_eq!(
            serde_json::to_string(&ev).unwrap(),
            r#"{"event":"progress","message":"waiting"}"#
        );
        let ev = ClusterEvent::Token(JupyterAccess {
            token: Token::new("abc"),
            base_path: "/".into(),
            path: "/lab".into(),
            note: None,
        });
        let line = serde_json::to_string(&ev).unwrap();
        assert_eq!(
            line,
            r#"{"event":"token","token":"abc","base_path":"/","path":"/lab","note":null}"#
        );
        assert_eq!(serde_json::from_str::<ClusterEvent>(&line).unwrap(), ev);
        assert!(
            !format!("{ev:?}").contains("abc"),
            "Debug must not show the token"
        );
    }

    #[test]
    fn request_round_trips() {
        let hello = Hello {
            v: PROTOCOL,
            request: Request {
                target: "pod/jupyter".into(),
                selector: None,
                cluster: ClusterRef {
                    namespace: Some("demo".into()),
                    ..ClusterRef::default()
                },
                container: None,
                preset: "jupyter".into(),
                ports: vec![],
                timeout_secs: 120,
                launch: None,
            },
            heartbeat_secs: None,
            kind: Kind::Forward,
        };
        let line = serde_json::to_string(&hello).unwrap();
        assert!(
            line.starts_with(r#"{"v":3,"request":{"target":"pod/jupyter""#),
            "{line}"
        );
        let back: Hello = serde_json::from_str(&line).unwrap();
        assert_eq!(back.request, hello.request);
    }
}
