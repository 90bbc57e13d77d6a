//! The cluster checks of `podtun doctor`, in order: the kubeconfig, the API server, the
//! namespace, the rights podtun needs (asked with SelfSubjectAccessReviews, as
//! `kubectl auth can-i` does), and the Jupyter pods a forward without TARGET would pick.
//!
//! Cluster half: it runs in the agent or in local mode, and reports each check through `emit`
//! (no printing). Nothing secret goes into a check: the server URL and names only.

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::ListParams;
use kube::Api;

use super::client::{self, Cluster};
use super::discover::Preset;
use super::launch::rights::{missing, LAUNCH_VERBS};
use super::pick::candidates;
use crate::proto::wire::{Check, CheckStatus, Request};

/// The rights podtun needs on pods, by subresource, as (subresource, verbs).
const RIGHTS: &[(Option<&str>, &[&str])] = &[
    (None, &["get", "list", "watch"]),
    (Some("log"), &["get"]),
    (Some("portforward"), &["create", "get"]),
];

/// Checks that follow the API server's; skipped when it does not answer.
const LATER: &[&str] = &[
    "namespace",
    "rights on pods",
    "rights on pods/log",
    "rights on pods/portforward",
    LAUNCH_CHECK,
    "Jupyter pods",
];

/// The check of the rights only launching needs.
const LAUNCH_CHECK: &str = "rights to launch pods";

fn check(name: &str, status: CheckStatus, detail: String, hint: Option<String>) -> Check {
    Check {
        name: name.to_string(),
        status,
        detail,
        hint,
    }
}

/// Runs every cluster check, reporting each as it finishes.
pub async fn run(req: &Request, emit: &(dyn Fn(Check) + Send + Sync)) {
    let skip_rest = |from: &[&str], why: &str| {
        for name in from {
            emit(check(name, CheckStatus::Skipped, why.to_string(), None));
        }
    };
    let (cluster, url) = match client::connect_described(&req.cluster).await {
        Ok(found) => found,
        Err(e) => {
            emit(failed("kubeconfig", &e));
            skip_rest(&["API server"], "no usable kubeconfig");
            skip_rest(LATER, "no usable kubeconfig");
            return;
        }
    };
    let context = req.cluster.context.as_deref().unwrap_or("current context");
    emit(check(
        "kubeconfig",
        CheckStatus::Ok,
        format!("{context}, server {url}, namespace `{}`", cluster.namespace),
        None,
    ));
    run_on(&cluster, &url, emit).await;
}

/// The checks from the API server's on, on a client built elsewhere (kubectl mode: through
/// `kubectl proxy`); `url` names the server in the lines.
pub async fn run_on(cluster: &Cluster, url: &str, emit: &(dyn Fn(Check) + Send + Sync)) {
    let skip_rest = |from: &[&str], why: &str| {
        for name in from {
            emit(check(name, CheckStatus::Skipped, why.to_string(), None));
        }
    };
    match cluster.client.apiserver_version().await {
        Ok(v) => emit(check(
            "API server",
            CheckStatus::Ok,
            format!("{url} answers (Kubernetes {})", v.git_version),
            None,
        )),
        Err(e) => {
            let e = super::resolve::api_error(
                e,
                &format!("reach the API server {url}"),
                &cluster.namespace,
            );
            emit(failed("API server", &e));
            skip_rest(LATER, "the API server did not answer");
            return;
        }
    }
    emit(namespace(cluster).await);
    for (sub, verbs) in RIGHTS {
        emit(rights(cluster, *sub, verbs).await);
    }
    emit(launch_rights(cluster).await);
    emit(jupyter_pods(cluster).await);
}

fn failed(name: &str, err: &anyhow::Error) -> Check {
    check(
        name,
        CheckStatus::Failed,
        format!("{err:#}"),
        crate::error::hint_of(err),
    )
}

/// Whether the namespace exists. A user who may not read namespaces still passes when the
/// namespace's pods can be listed (a real API server lists pods of any namespace name, so the
/// rights below tell the rest).
async fn namespace(cluster: &Cluster) -> Check {
    let ns = &cluster.namespace;
    let api: Api<Namespace> = Api::all(cluster.client.clone());
    match api.get_opt(ns).await {
        Ok(Some(_)) => check("namespace", CheckStatus::Ok, format!("`{ns}` exists"), None),
        Ok(None) => check(
            "namespace",
            CheckStatus::Failed,
            format!("namespace `{ns}` not found"),
            Some("check `-n` (and `--context`): podtun looks for pods there".into()),
        ),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
            match pods.list(&ListParams::default().limit(1)).await {
                Ok(_) => check(
                    "namespace",
                    CheckStatus::Ok,
                    format!("`{ns}`: its pods can be listed (reading namespaces is not allowed, and not needed)"),
                    None,
                ),
                Err(e) => failed("namespace", &super::resolve::api_error(e, &format!("list the pods of `{ns}`"), ns)),
            }
        }
        Err(e) => failed(
            "namespace",
            &super::resolve::api_error(e, &format!("read namespace `{ns}`"), ns),
        ),
    }
}

/// One SelfSubjectAccessReview per verb on `pods[/sub]` in the namespace.
async fn rights(cluster: &Cluster, sub: Option<&str>, verbs: &[&str]) -> Check {
    let ns = &cluster.namespace;
    let resource = match sub {
        Some(sub) => format!("pods/{sub}"),
        None => "pods".to_string(),
    };
    let name = format!("rights on {resource}");
    let missing = match missing(cluster, sub, verbs).await {
        Ok(missing) => missing,
        Err(e) => return failed(&name, &e),
    };
    if missing.is_empty() {
        return check(
            &name,
            CheckStatus::Ok,
            format!("{} granted in `{ns}`", verbs.join(", ")),
            None,
        );
    }
    let why = match sub {
        Some("portforward") => "podtun's port-forward is authorized as `get` before Kubernetes 1.35 and as `create` since (kubectl's always as `create`)",
        Some("log") => "podtun reads Jupyter's token from the pod's log",
        _ => "podtun finds the pod and waits for it to be Ready",
    };
    check(
        &name,
        CheckStatus::Failed,
        format!("not granted in `{ns}`: {}", missing.join(", ")),
        Some(format!(
            "{why}; ask the cluster admin for {} on {resource} in `{ns}` (see manifests/10-rbac.yaml)",
            missing.join(" and ")
        )),
    )
}

/// `create` and `delete` on pods, which only `--launch` and `--image` need: a note when
/// missing, never a failure.
async fn launch_rights(cluster: &Cluster) -> Check {
    let ns = &cluster.namespace;
    let missing = match missing(cluster, None, LAUNCH_VERBS).await {
        Ok(missing) => missing,
        Err(e) => return failed(LAUNCH_CHECK, &e),
    };
    if missing.is_empty() {
        return check(
            LAUNCH_CHECK,
            CheckStatus::Ok,
            format!("create, delete granted in `{ns}` (--launch, --image)"),
            None,
        );
    }
    check(
        LAUNCH_CHECK,
        CheckStatus::Note,
        format!(
            "{} not granted in `{ns}`: --launch and --image need them, forwarding does not",
            missing.join(", ")
        ),
        Some("launch pods your cluster's way and forward with `podtun jupyter POD`, or ask the cluster admin for create and delete on pods".into()),
    )
}

/// The pods `podtun jupyter` without TARGET would pick: worth knowing, never a failure.
async fn jupyter_pods(cluster: &Cluster) -> Check {
    let ns = &cluster.namespace;
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let pods = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => {
            let e = super::resolve::api_error(e, &format!("list the pods of `{ns}`"), ns);
            return failed("Jupyter pods", &e);
        }
    };
    let found = candidates(&pods, Preset::Jupyter);
    let names: Vec<&str> = found.iter().map(|c| c.name.as_str()).collect();
    match names.as_slice() {
        [] => check(
            "Jupyter pods",
            CheckStatus::Note,
            format!("none Running in `{ns}` ({} pods there)", pods.len()),
            Some("start your Jupyter server, then `podtun jupyter` finds it".into()),
        ),
        [one] => check(
            "Jupyter pods",
            CheckStatus::Ok,
            format!("`podtun jupyter` would use `{one}`"),
            None,
        ),
        many => check(
            "Jupyter pods",
            CheckStatus::Ok,
            format!(
                "{} in `{ns}`, newest first: {} (`podtun jupyter` asks which)",
                many.len(),
                many.join(", ")
            ),
            None,
        ),
    }
}
