//! Why discovery could not go on ([`DiscoverError`]), with the fix for each case, and how
//! messages quote user input and name objects.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Why discovery could not go on; [`DiscoverError::hint`] gives the fix.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// A TARGET that is not `NAME` or `KIND/NAME` with a valid Kubernetes name.
    #[error("invalid target `{input}`: {reason}")]
    InvalidTarget {
        /// The argument as typed (escaped).
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A TARGET whose `KIND/` prefix is not one podtun knows.
    #[error("unknown kind in target `{input}`")]
    UnknownKind {
        /// The argument as typed (escaped).
        input: String,
    },
    /// A port argument that is not `[LOCAL:]REMOTE`.
    #[error("invalid port `{input}`: {reason}")]
    InvalidPort {
        /// The argument as typed (escaped).
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The pod's spec lists no containers.
    #[error("pod `{pod}` has no containers")]
    NoContainers {
        /// `NAMESPACE/NAME` of the pod.
        pod: String,
    },
    /// `-c NAME` names no container of the pod.
    #[error("pod `{pod}` has no container named `{name}`")]
    NoSuchContainer {
        /// `NAMESPACE/NAME` of the pod.
        pod: String,
        /// The requested container.
        name: String,
        /// The containers the pod has.
        containers: Vec<String>,
    },
    /// A port name that the container (or, with no container chosen, the pod) does not declare.
    #[error("{}", no_such_port(pod, name, container.as_deref()))]
    NoSuchPort {
        /// `NAMESPACE/NAME` of the pod.
        pod: String,
        /// The requested port name.
        name: String,
        /// The container searched, if one was chosen.
        container: Option<String>,
        /// The declared ports, as `8888 (notebook)`.
        declared: Vec<String>,
    },
    /// A port name declared by several containers with different numbers.
    #[error("port name `{name}` is ambiguous in pod `{pod}`")]
    AmbiguousPort {
        /// `NAMESPACE/NAME` of the pod.
        pod: String,
        /// The requested port name.
        name: String,
        /// Each match, as `8080 in container web`.
        matches: Vec<String>,
    },
    /// No port was requested and the pod declares no TCP port to fall back on.
    #[error("pod `{pod}` declares no TCP container ports")]
    NoPorts {
        /// `NAMESPACE/NAME` of the pod.
        pod: String,
        /// What was seen: containers and any ports skipped (UDP, SCTP).
        seen: Vec<String>,
    },
    /// A service port (number or name) that the service does not have.
    #[error("service `{service}` has no port `{port}`")]
    NoSuchServicePort {
        /// `NAMESPACE/NAME` of the service.
        service: String,
        /// The requested port, as typed.
        port: String,
        /// The service's ports, as `80 (http) → 8888`.
        declared: Vec<String>,
    },
    /// A service's named targetPort that the chosen pod does not declare.
    #[error(
        "service `{service}` sends port {port} to `{target}`, which pod `{pod}` does not declare"
    )]
    NoSuchTargetPort {
        /// `NAMESPACE/NAME` of the service.
        service: String,
        /// The service port.
        port: u16,
        /// The targetPort name.
        target: String,
        /// `NAMESPACE/NAME` of the pod.
        pod: String,
    },
    /// A service, deployment or statefulset without a (usable) selector: no pods to pick from.
    #[error("{object} has no selector")]
    NoSelector {
        /// The object, as ``service `demo/web` ``.
        object: String,
    },
    /// A selector podtun cannot render for a pod list.
    #[error("{object} has a selector podtun cannot use: {reason}")]
    BadSelector {
        /// The object, as ``deployment `demo/app` ``.
        object: String,
        /// The unsupported part.
        reason: String,
    },
}

fn no_such_port(pod: &str, name: &str, container: Option<&str>) -> String {
    match container {
        Some(c) => format!("container `{c}` of pod `{pod}` has no port named `{name}`"),
        None => format!("pod `{pod}` has no container port named `{name}`"),
    }
}

impl DiscoverError {
    /// The error with its hint attached, as the rest of podtun reports it.
    pub fn into_hinted(self) -> anyhow::Error {
        match self.hint() {
            Some(hint) => crate::error::hinted(self, hint),
            None => anyhow::Error::new(self),
        }
    }

    /// The fix, when podtun knows it.
    pub fn hint(&self) -> Option<String> {
        use DiscoverError::*;
        Some(match self {
            InvalidTarget { .. } => "a target is NAME or KIND/NAME, KIND one of pod, svc, deploy, sts; \
                 names are lowercase letters, digits, `-` and `.`, e.g. `pod/jupyter-0`"
                .into(),
            UnknownKind { .. } => "accepted kinds: pod (pods, po), svc (service, services), \
                 deploy (deployment, deployments), sts (statefulset, statefulsets); e.g. `svc/jupyter`"
                .into(),
            InvalidPort { .. } => "a port is [LOCAL:]REMOTE: `8888`, `9000:8888`, `:8888` (any free \
                 local port), or a port name such as `http` or `9000:http`"
                .into(),
            NoContainers { .. } => return None,
            NoSuchContainer { containers, .. } => {
                format!("containers: {}; pass one with `-c`", containers.join(", "))
            }
            NoSuchPort { pod, declared, .. } => {
                let example = first_number(declared).unwrap_or("8080");
                let pod = object_arg("pod", pod);
                if declared.is_empty() {
                    format!("no port is declared; pass a port number, e.g. `podtun forward {pod} {example}`")
                } else {
                    format!(
                        "declared ports: {}; pass a port, e.g. `podtun forward {pod} {example}`",
                        declared.join(", ")
                    )
                }
            }
            AmbiguousPort { pod, matches, .. } => format!(
                "it is {}; pass the number, or the container with `-c`, e.g. `podtun forward {} {}`",
                matches.join(" and "),
                object_arg("pod", pod),
                first_number(matches).unwrap_or("8080")
            ),
            NoPorts { pod, seen, .. } => format!(
                "saw {}; name the port to forward, e.g. `podtun forward {} 8080`",
                seen.join(", "),
                object_arg("pod", pod)
            ),
            NoSuchServicePort { service, declared, .. } => {
                let svc = object_arg("svc", service);
                match first_number(declared) {
                    Some(example) => format!(
                        "service ports: {}; e.g. `podtun forward {svc} {example}`, or forward a pod port with `pod/NAME`",
                        declared.join(", ")
                    ),
                    None => "the service declares no ports; forward a pod port with `pod/NAME`".into(),
                }
            }
            NoSuchTargetPort { pod, .. } => format!(
                "the pod may be from another rollout; forward its port by number, e.g. `podtun forward {} 8080`",
                object_arg("pod", pod)
            ),
            NoSelector { .. } | BadSelector { .. } => {
                "podtun finds pods through the selector; forward to a pod with `pod/NAME` or `-l SELECTOR`".into()
            }
        })
    }
}

/// `KIND/NAME` for a hint's example command, from `NAMESPACE/NAME`.
fn object_arg(kind: &str, object: &str) -> String {
    let name = object.rsplit_once('/').map_or(object, |(_, name)| name);
    format!("{kind}/{name}")
}

/// The leading number of the first entry such as `8888 (notebook)`.
fn first_number(entries: &[String]) -> Option<&str> {
    entries
        .first()
        .and_then(|e| e.split(|c: char| !c.is_ascii_digit()).next())
        .filter(|n| !n.is_empty())
}

/// User input for an error message: control characters escaped, long input cut short.
pub(crate) fn quote_input(input: &str) -> String {
    const MAX: usize = 80;
    let escaped: String = input.escape_debug().collect();
    match escaped.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &escaped[..cut]),
        None => escaped,
    }
}

/// `NAMESPACE/NAME` of an object, as messages name it (`NAME` alone if it has no namespace).
pub(crate) fn object_ref(meta: &ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or("?");
    match meta.namespace.as_deref() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_pod_and_an_example() {
        let err = DiscoverError::NoSuchPort {
            pod: "demo/x".into(),
            name: "http".into(),
            container: None,
            declared: vec!["8888 (notebook)".into(), "9090 (metrics)".into()],
        };
        assert_eq!(
            err.to_string(),
            "pod `demo/x` has no container port named `http`"
        );
        assert_eq!(
            err.hint().as_deref(),
            Some("declared ports: 8888 (notebook), 9090 (metrics); pass a port, e.g. `podtun forward pod/x 8888`")
        );
    }

    #[test]
    fn quote_input_escapes_and_cuts() {
        assert_eq!(quote_input("a\nb"), "a\\nb");
        let long = quote_input(&"y".repeat(200));
        assert_eq!(long.chars().count(), 81);
        assert!(long.ends_with('…'));
    }
}
