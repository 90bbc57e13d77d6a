//! Deleting a pod podtun launched: when podtun stops, and from the login host's watchdog once
//! the laptop is gone (`podtun agent delete-pod`).

use anyhow::anyhow;
use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use kube::Api;

use crate::cluster::client::Cluster;
use crate::cluster::resolve::api_error;
use crate::error::hinted;

/// The words `podtun agent delete-pod` ends its line with for a pod that was not there, which
/// the laptop reads back.
pub const ALREADY_GONE: &str = "was already gone";

/// What [`delete_pod`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// The pod was there; the API server deletes it (its containers get their grace period).
    Deleted,
    /// No such pod: deleted already (by podtun, its watchdog or someone else), or never made.
    AlreadyGone,
}

/// Deletes pod `namespace/name` without waiting for it to go. A pod that is not there is
/// [`Deleted::AlreadyGone`], not an error: undoing twice is harmless.
pub async fn delete_pod(cluster: &Cluster, namespace: &str, name: &str) -> anyhow::Result<Deleted> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
    match pods.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(Deleted::Deleted),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Deleted::AlreadyGone),
        Err(kube::Error::Api(status)) if status.code == 403 => Err(forbidden(namespace, name)),
        Err(e) => Err(api_error(
            e,
            &format!("delete pod {namespace}/{name}"),
            namespace,
        )),
    }
}

/// The error for a user without the right to delete pods in `namespace`.
fn forbidden(namespace: &str, name: &str) -> anyhow::Error {
    hinted(
        anyhow!(
            "your account may not delete pod {namespace}/{name} (`delete` on `pods` in namespace \
             `{namespace}`)"
        ),
        format!(
            "ask the cluster admin for that right, or delete the pod as someone who has it: \
             `kubectl -n {namespace} delete pod {name}`"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_pod_the_right_and_the_way_out() {
        let err = forbidden("demo", "alice-1");
        assert_eq!(
            err.to_string(),
            "your account may not delete pod demo/alice-1 (`delete` on `pods` in namespace `demo`)"
        );
        let hint = crate::error::hint_of(&err).expect("a hint");
        assert!(
            hint.contains("kubectl -n demo delete pod alice-1"),
            "{hint}"
        );
    }
}
