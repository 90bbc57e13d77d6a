//! What the user points podtun at (`pod/NAME`, `svc/NAME`, …) and the label selectors that turn a
//! service, deployment or statefulset into pods. Pure: parsing and rendering only, no cluster reads.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::error::{quote_input, DiscoverError};

/// Kubernetes caps object names (DNS-1123 subdomains) at 253 characters.
const MAX_NAME_LEN: usize = 253;

/// The kinds accepted before the `/`, as the user may spell them (kubectl's names and short names).
const KINDS: &[(&str, Kind)] = &[
    ("pod", Kind::Pod),
    ("pods", Kind::Pod),
    ("po", Kind::Pod),
    ("svc", Kind::Service),
    ("service", Kind::Service),
    ("services", Kind::Service),
    ("deploy", Kind::Deployment),
    ("deployment", Kind::Deployment),
    ("deployments", Kind::Deployment),
    ("sts", Kind::StatefulSet),
    ("statefulset", Kind::StatefulSet),
    ("statefulsets", Kind::StatefulSet),
];

#[derive(Clone, Copy)]
enum Kind {
    Pod,
    Service,
    Deployment,
    StatefulSet,
}

/// What to forward to: one pod, or the pods behind a service, workload or label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `NAME` or `pod/NAME`.
    Pod(String),
    /// `svc/NAME`: a Ready pod matching the service's selector; ports are service ports.
    Service(String),
    /// `deploy/NAME`: a Ready pod matching the deployment's selector.
    Deployment(String),
    /// `sts/NAME`: a Ready pod matching the statefulset's selector.
    StatefulSet(String),
    /// `-l SELECTOR`: a Ready pod matching a label selector (built from the flag, never parsed here).
    Selector(String),
    /// No TARGET: the Running pod of the namespace that fits the preset ([`super::pick`]).
    Any,
}

impl FromStr for Target {
    type Err = DiscoverError;

    fn from_str(input: &str) -> Result<Target, DiscoverError> {
        let invalid = |reason: &str| DiscoverError::InvalidTarget {
            input: quote_input(input),
            reason: reason.to_string(),
        };
        let (kind, name) = match input.split_once('/') {
            None => (Kind::Pod, input),
            Some((kind, name)) => {
                let found = KINDS.iter().find(|(k, _)| kind.eq_ignore_ascii_case(k));
                let Some((_, kind)) = found else {
                    return Err(DiscoverError::UnknownKind {
                        input: quote_input(input),
                    });
                };
                if name.contains('/') {
                    return Err(invalid("a target has at most one `/`"));
                }
                (*kind, name)
            }
        };
        if let Some(reason) = name_problem(name) {
            return Err(invalid(reason));
        }
        let name = name.to_string();
        Ok(match kind {
            Kind::Pod => Target::Pod(name),
            Kind::Service => Target::Service(name),
            Kind::Deployment => Target::Deployment(name),
            Kind::StatefulSet => Target::StatefulSet(name),
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Pod(name) => write!(f, "pod/{name}"),
            Target::Service(name) => write!(f, "svc/{name}"),
            Target::Deployment(name) => write!(f, "deploy/{name}"),
            Target::StatefulSet(name) => write!(f, "sts/{name}"),
            Target::Selector(selector) => write!(f, "pods -l {selector}"),
            Target::Any => f.write_str("the namespace's pods"),
        }
    }
}

/// Why `name` is not a Kubernetes object name (a DNS-1123 subdomain), or `None` if it is one.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("the name is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Some("the name is longer than 253 characters");
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some("Kubernetes names are lowercase");
    }
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                first.is_ascii_alphanumeric()
                    && last.is_ascii_alphanumeric()
                    && bytes
                        .iter()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            }
            _ => false,
        }
    };
    if !name.split('.').all(label_ok) {
        return Some(
            "a name has lowercase letters, digits, `-` and `.`, and starts and ends with a letter or digit",
        );
    }
    None
}

/// The label selector of a service (`app=jupyter,tier=web`), as kubectl uses it to find pods.
pub fn selector_of_service(svc: &Service) -> Result<String, DiscoverError> {
    let selector = svc.spec.as_ref().and_then(|s| s.selector.as_ref());
    match selector {
        Some(labels) if !labels.is_empty() => Ok(render_match_labels(labels)),
        _ => Err(DiscoverError::NoSelector {
            object: format!("service `{}`", super::error::object_ref(&svc.metadata)),
        }),
    }
}

/// The label selector of a deployment, rendered for a pod list (`a=b,c in (x,y),!d`).
pub fn selector_of_deployment(deploy: &Deployment) -> Result<String, DiscoverError> {
    let selector = deploy.spec.as_ref().map(|s| &s.selector);
    let object = || {
        format!(
            "deployment `{}`",
            super::error::object_ref(&deploy.metadata)
        )
    };
    workload_selector(selector, object)
}

/// The label selector of a statefulset, rendered for a pod list (`a=b,c in (x,y),!d`).
pub fn selector_of_stateful_set(sts: &StatefulSet) -> Result<String, DiscoverError> {
    let selector = sts.spec.as_ref().map(|s| &s.selector);
    let object = || format!("statefulset `{}`", super::error::object_ref(&sts.metadata));
    workload_selector(selector, object)
}

fn workload_selector(
    selector: Option<&LabelSelector>,
    object: impl Fn() -> String,
) -> Result<String, DiscoverError> {
    let Some(selector) = selector else {
        return Err(DiscoverError::NoSelector { object: object() });
    };
    match render_label_selector(selector) {
        Ok(rendered) if rendered.is_empty() => Err(DiscoverError::NoSelector { object: object() }),
        Ok(rendered) => Ok(rendered),
        Err(reason) => Err(DiscoverError::BadSelector {
            object: object(),
            reason,
        }),
    }
}

/// A `LabelSelector` in label-selector syntax, or `None` when there is none, it is empty (it
/// would match every pod), or it uses an operator pods cannot be listed with.
pub fn label_selector_string(selector: Option<&LabelSelector>) -> Option<String> {
    selector
        .and_then(|s| render_label_selector(s).ok())
        .filter(|s| !s.is_empty())
}

/// Renders `matchLabels` then `matchExpressions`; the error names an unsupported operator.
fn render_label_selector(selector: &LabelSelector) -> Result<String, String> {
    let mut parts = Vec::new();
    if let Some(labels) = &selector.match_labels {
        if !labels.is_empty() {
            parts.push(render_match_labels(labels));
        }
    }
    for req in selector.match_expressions.iter().flatten() {
        let values = || req.values.clone().unwrap_or_default().join(",");
        let key = &req.key;
        parts.push(match req.operator.as_str() {
            "In" => format!("{key} in ({})", values()),
            "NotIn" => format!("{key} notin ({})", values()),
            "Exists" => key.clone(),
            "DoesNotExist" => format!("!{key}"),
            other => return Err(format!("operator `{}` on key `{key}`", quote_input(other))),
        });
    }
    Ok(parts.join(","))
}

fn render_match_labels(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> Result<Target, DiscoverError> {
        s.parse()
    }

    #[test]
    fn parses_every_kind_spelling() {
        let cases = [
            ("jupyter-0", Target::Pod("jupyter-0".into())),
            ("pod/jupyter-0", Target::Pod("jupyter-0".into())),
            ("pods/jupyter-0", Target::Pod("jupyter-0".into())),
            ("po/jupyter-0", Target::Pod("jupyter-0".into())),
            ("Pod/jupyter-0", Target::Pod("jupyter-0".into())),
            ("svc/web", Target::Service("web".into())),
            ("service/web", Target::Service("web".into())),
            ("services/web", Target::Service("web".into())),
            ("deploy/app.v2", Target::Deployment("app.v2".into())),
            ("deployment/app", Target::Deployment("app".into())),
            ("deployments/app", Target::Deployment("app".into())),
            ("sts/redis", Target::StatefulSet("redis".into())),
            ("statefulset/redis", Target::StatefulSet("redis".into())),
            ("statefulsets/redis", Target::StatefulSet("redis".into())),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).expect(input), want, "{input}");
        }
    }

    #[test]
    fn display_round_trips() {
        for input in ["pod/a", "svc/b", "deploy/c", "sts/d"] {
            assert_eq!(parse(input).expect(input).to_string(), input);
        }
        assert_eq!(
            Target::Selector("app=x".into()).to_string(),
            "pods -l app=x"
        );
    }

    #[test]
    fn rejects_hostile_and_malformed_names() {
        for input in [
            "",
            "pod/",
            "../x",
            "a/b/c",
            "pod/a/b",
            "Jupyter",
            "pod/UPPER",
            "-lead",
            "trail-",
            "a..b",
            ".x",
            "a_b",
            "a b",
            "pod/a\u{1b}[31m",
            "pod/é",
        ] {
            let err = parse(input).expect_err(input);
            assert!(err.hint().is_some(), "{input}: no hint");
        }
        let long = "a".repeat(254);
        assert!(parse(&long).is_err());
        assert!(parse(&"a".repeat(253)).is_ok());
    }

    #[test]
    fn errors_name_the_input_and_hint_at_the_forms() {
        let err = parse("pod/Jupyter").expect_err("uppercase");
        assert_eq!(
            err.to_string(),
            "invalid target `pod/Jupyter`: Kubernetes names are lowercase"
        );
        assert!(err.hint().expect("hint").contains("pod/jupyter-0"));

        let err = parse("foo/x").expect_err("unknown kind");
        assert_eq!(err.to_string(), "unknown kind in target `foo/x`");
        let hint = err.hint().expect("hint");
        for kind in ["pod", "svc", "deploy", "sts"] {
            assert!(hint.contains(kind), "{hint}");
        }
        let err = parse("../x").expect_err("dots");
        assert_eq!(err.to_string(), "unknown kind in target `../x`");
    }

    #[test]
    fn control_characters_are_escaped_in_messages() {
        let err = parse("pod/a\u{1b}[31m").expect_err("escape");
        assert!(!err.to_string().contains('\u{1b}'), "{err}");
        assert!(err.to_string().contains("\\u{1b}"), "{err}");
    }

    #[test]
    fn service_selector_is_rendered_sorted() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "demo"},
            "spec": {"selector": {"tier": "web", "app": "jupyter"}}
        }))
        .expect("service");
        assert_eq!(
            selector_of_service(&svc).expect("selector"),
            "app=jupyter,tier=web"
        );
    }

    #[test]
    fn service_without_selector_is_an_error() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "ext", "namespace": "demo"},
            "spec": {"ports": [{"port": 80}]}
        }))
        .expect("service");
        let err = selector_of_service(&svc).expect_err("no selector");
        assert_eq!(err.to_string(), "service `demo/ext` has no selector");
        assert!(err.hint().expect("hint").contains("pod/NAME"));
    }

    #[test]
    fn workload_selectors_render_labels_and_expressions() {
        let deploy: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "app", "namespace": "demo"},
            "spec": {
                "template": {},
                "selector": {
                    "matchLabels": {"app": "a"},
                    "matchExpressions": [
                        {"key": "c", "operator": "In", "values": ["x", "y"]},
                        {"key": "e", "operator": "NotIn", "values": ["z"]},
                        {"key": "f", "operator": "Exists"},
                        {"key": "d", "operator": "DoesNotExist"}
                    ]
                }
            }
        }))
        .expect("deployment");
        assert_eq!(
            selector_of_deployment(&deploy).expect("selector"),
            "app=a,c in (x,y),e notin (z),f,!d"
        );
        let spec = deploy.spec.as_ref().map(|s| &s.selector);
        assert_eq!(
            label_selector_string(spec).as_deref(),
            Some("app=a,c in (x,y),e notin (z),f,!d")
        );
    }

    #[test]
    fn empty_or_odd_workload_selectors_are_errors() {
        let sts: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "redis", "namespace": "demo"},
            "spec": {"template": {}, "selector": {}}
        }))
        .expect("statefulset");
        let err = selector_of_stateful_set(&sts).expect_err("empty");
        assert_eq!(err.to_string(), "statefulset `demo/redis` has no selector");
        assert_eq!(
            label_selector_string(sts.spec.as_ref().map(|s| &s.selector)),
            None
        );

        let sts: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "redis", "namespace": "demo"},
            "spec": {"template": {}, "selector": {
                "matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]
            }}
        }))
        .expect("statefulset");
        let err = selector_of_stateful_set(&sts).expect_err("odd operator");
        assert_eq!(
            err.to_string(),
            "statefulset `demo/redis` has a selector podtun cannot use: operator `Gt` on key `a`"
        );
    }
}
