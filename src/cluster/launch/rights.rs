//! The rights launching needs, asked before anything runs: `create` and `delete` on pods.

use anyhow::anyhow;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::Api;

use crate::cluster::client::Cluster;
use crate::cluster::resolve::api_error;
use crate::error::hinted;

/// The verbs on `pods` that launching needs: `create` for the pod, `delete` to remove it again.
pub const LAUNCH_VERBS: &[&str] = &["create", "delete"];

/// Whether this user may `verb` `pods[/sub]` in the cluster's namespace, as `kubectl auth
/// can-i` asks it (a SelfSubjectAccessReview).
pub async fn can_i(cluster: &Cluster, verb: &str, sub: Option<&str>) -> Result<bool, kube::Error> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(cluster.namespace.clone()),
                verb: Some(verb.to_string()),
                group: Some(String::new()),
                resource: Some("pods".into()),
                subresource: sub.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(cluster.client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// The verbs among `verbs` on `pods[/sub]` this user may not use in the cluster's namespace.
pub async fn missing<'v>(
    cluster: &Cluster,
    sub: Option<&str>,
    verbs: &[&'v str],
) -> anyhow::Result<Vec<&'v str>> {
    let mut missing = Vec::new();
    for verb in verbs {
        let allowed = can_i(cluster, verb, sub).await.map_err(|e| {
            api_error(
                e,
                "ask the API server for your rights (SelfSubjectAccessReview)",
                &cluster.namespace,
            )
        })?;
        if !allowed {
            missing.push(*verb);
        }
    }
    Ok(missing)
}

/// Fails, naming the missing rights, unless this user may create and delete pods.
pub async fn check(cluster: &Cluster) -> anyhow::Result<()> {
    let ns = &cluster.namespace;
    let missing = missing(cluster, None, LAUNCH_VERBS).await?;
    if missing.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = missing.iter().map(|v| format!("`{v}`")).collect();
    Err(hinted(
        anyhow!(
            "launching a pod needs {} on `pods` in namespace `{ns}`, and you may not",
            named.join(" and ")
        ),
        "ask the cluster's administrators for those rights, or launch the pod your cluster's way and name it: `podtun jupyter POD`; `podtun doctor` lists your rights",
    ))
}
