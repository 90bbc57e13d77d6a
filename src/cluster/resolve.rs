//! Target → pod, and the Jupyter URL from its logs: the cluster I/O around the pure functions
//! of `discover`. Waiting for the pod is in `podwait`.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::LogParams;
use kube::Api;
use tracing::debug;

use super::client::Cluster;
use super::discover::{self, DiscoverError, Target, TokenFind};
use crate::error::{hinted, HintExt};

/// Reports progress while waiting (a spinner on the laptop, an event from the agent).
pub type Progress<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// `ns/name` of a pod, for messages.
pub fn pod_label(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("?"),
        pod.metadata.name.as_deref().unwrap_or("?")
    )
}

/// Turns a kube API error into one that names the object and says what to do.
pub fn api_error(err: kube::Error, what: &str, ns: &str) -> anyhow::Error {
    match &err {
        kube::Error::Api(status) => {
            let hint = match status.code {
                401 => "the API server rejected your credentials: log in again or check the kubeconfig user".to_string(),
                403 => format!("your account may not do this in namespace `{ns}`; ask the cluster admin, or check `-n`"),
                404 => format!("see `kubectl -n {ns} get pods`"),
                _ => "retry; if it persists, check the API server".to_string(),
            };
            let message = if status.code == 401 {
                format!("could not {what}: unauthorized (401)")
            } else {
                format!("could not {what}: {}", status.message)
            };
            hinted(anyhow!(message), hint)
        }
        _ => hinted(
            anyhow::Error::new(err).context(format!("could not {what}")),
            "check that the API server in your kubeconfig is reachable from here",
        ),
    }
}

/// The label selector of a svc/deploy/sts target (reads the object).
pub(super) async fn selector_of(
    cluster: &Cluster,
    target: &Target,
) -> anyhow::Result<Option<String>> {
    let (client, ns) = (cluster.client.clone(), cluster.namespace.as_str());
    let selector = match target {
        Target::Pod(_) => return Ok(None),
        Target::Any => bail!("no pod was picked for the missing TARGET"),
        Target::Selector(sel) => sel.clone(),
        Target::Service(name) => {
            let svc = get(Api::<Service>::namespaced(client, ns), name, "service", ns).await?;
            discover::selector_of_service(&svc).map_err(DiscoverError::into_hinted)?
        }
        Target::Deployment(name) => {
            let d = get(
                Api::<Deployment>::namespaced(client, ns),
                name,
                "deployment",
                ns,
            )
            .await?;
            discover::selector_of_deployment(&d).map_err(DiscoverError::into_hinted)?
        }
        Target::StatefulSet(name) => {
            let s = get(
                Api::<StatefulSet>::namespaced(client, ns),
                name,
                "statefulset",
                ns,
            )
            .await?;
            discover::selector_of_stateful_set(&s).map_err(DiscoverError::into_hinted)?
        }
    };
    Ok(Some(selector))
}

async fn get<K>(api: Api<K>, name: &str, kind: &str, ns: &str) -> anyhow::Result<K>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(Some(obj)) => Ok(obj),
        Ok(None) => Err(hinted(
            anyhow!("{kind} `{ns}/{name}` not found"),
            format!("see `kubectl -n {ns} get {kind}s`"),
        )),
        Err(e) => Err(api_error(e, &format!("get {kind} `{ns}/{name}`"), ns)),
    }
}

/// Reads a service (for port mapping of svc targets).
pub async fn service(cluster: &Cluster, name: &str) -> anyhow::Result<Service> {
    let api = Api::<Service>::namespaced(cluster.client.clone(), &cluster.namespace);
    get(api, name, "service", &cluster.namespace).await
}

/// Explains a missing pod: is it the namespace, or the pod?
pub(super) async fn not_found(
    cluster: &Cluster,
    target: &Target,
    selector: Option<&str>,
) -> anyhow::Error {
    let ns = &cluster.namespace;
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    if let Ok(None) = namespaces.get_opt(ns).await {
        return hinted(
            anyhow!("namespace `{ns}` not found"),
            "check `-n` (see `kubectl get namespaces`)",
        );
    }
    // The user may not be able to run kubectl where they are (the laptop, in via mode): say
    // what there is instead of pointing to a command.
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let names: Vec<String> = match pods.list(&Default::default()).await {
        Ok(list) => list
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect(),
        Err(e) => {
            debug!(%e, "could not list the pods of `{ns}`");
            Vec::new()
        }
    };
    match (target, selector) {
        (Target::Pod(name), _) => hinted(
            anyhow!("pod `{ns}/{name}` not found"),
            pods_hint(ns, &nearest_first(name, names)),
        ),
        (_, sel) => {
            let mut names = names;
            names.sort();
            hinted(
                anyhow!(
                    "no pod matches `{}` in namespace `{ns}`",
                    sel.unwrap_or("?")
                ),
                pods_hint(ns, &names),
            )
        }
    }
}

/// Pods listed in a hint at most; the rest are counted.
const PODS_IN_HINT: usize = 8;

/// `pods in namespace `NS`: a, b, c` (or that it has none).
fn pods_hint(ns: &str, names: &[String]) -> String {
    if names.is_empty() {
        return format!(
            "namespace `{ns}` has no pods (or none you may list); check `-n` and `--context`"
        );
    }
    let shown = names[..names.len().min(PODS_IN_HINT)].join(", ");
    match names.len().saturating_sub(PODS_IN_HINT) {
        0 => format!("pods in namespace `{ns}`: {shown}"),
        more => format!("pods in namespace `{ns}`: {shown} and {more} more"),
    }
}

/// `names` ordered by how close each is to `wanted` (edit distance), then by name.
fn nearest_first(wanted: &str, mut names: Vec<String>) -> Vec<String> {
    names.sort_by_cached_key(|n| (edit_distance(wanted, n), n.clone()));
    names
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Reads (and if needed follows) the container's log until Jupyter's URL shows up.
pub async fn jupyter_url(
    cluster: &Cluster,
    pod: &Pod,
    container: &str,
    timeout: Duration,
    progress: Progress<'_>,
) -> anyhow::Result<TokenFind> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let what = format!("read the logs of pod `{}`", pod_label(pod));
    let mut params = LogParams {
        container: Some(container.to_string()),
        ..LogParams::default()
    };
    // First what is there (the newest URL wins), then follow until one appears.
    let found = scan_log(&api, &name, &params, &what, &cluster.namespace).await?;
    if !matches!(found, TokenFind::NotYet) {
        return Ok(found);
    }
    progress(&format!(
        "waiting for Jupyter's URL in the logs of `{}`",
        pod_label(pod)
    ));
    params.follow = true;
    let follow = scan_log(&api, &name, &params, &what, &cluster.namespace);
    match tokio::time::timeout(timeout, follow).await {
        Ok(Ok(TokenFind::NotYet)) | Err(_) => Err(hinted(
            anyhow!(
                "no Jupyter URL appeared in the logs of pod `{}` within {}s",
                pod_label(pod),
                timeout.as_secs()
            ),
            format!(
                "is Jupyter running in container `{container}`? see `kubectl -n {} logs {name}`",
                cluster.namespace
            ),
        )),
        Ok(other) => other,
    }
}

/// Scans a log line by line (never the whole log in memory): the last URL seen, or, when
/// following, the first.
async fn scan_log(
    api: &Api<Pod>,
    name: &str,
    params: &LogParams,
    what: &str,
    ns: &str,
) -> anyhow::Result<TokenFind> {
    let stream = api
        .log_stream(name, params)
        .await
        .map_err(|e| api_error(e, what, ns))?;
    let mut lines = stream.lines();
    let mut found = TokenFind::NotYet;
    while let Some(line) = lines.next().await {
        let line = line.with_context(|| what.to_string()).hint("retry")?;
        let here = discover::find_token(&line);
        if !matches!(here, TokenFind::NotYet) {
            found = here;
            if params.follow {
                break;
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_mistyped_pod_name_lists_the_closest_pods_first() {
        let pods = names(&["redis-0", "jupyter-alice-23790", "alice-23790", "web"]);
        assert_eq!(
            nearest_first("alice-23791", pods),
            names(&["alice-23790", "jupyter-alice-23790", "redis-0", "web"])
        );
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn the_hint_names_the_pods_and_counts_the_rest() {
        assert_eq!(
            pods_hint("demo", &names(&["a", "b"])),
            "pods in namespace `demo`: a, b"
        );
        let many: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
        assert!(pods_hint("demo", &many).ends_with("p7 and 2 more"));
        assert!(pods_hint("demo", &[]).contains("has no pods"));
    }
}
