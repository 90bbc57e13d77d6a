//! The resource types the test cluster knows: their kind, plural, group and scope.

/// One resource type served by the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Namespace,
    Pod,
    Service,
    ConfigMap,
    ServiceAccount,
    Deployment,
    ReplicaSet,
    StatefulSet,
    Role,
    RoleBinding,
    ClusterRole,
    ClusterRoleBinding,
}

/// How a resource type is spelled on the wire.
pub(crate) struct KindInfo {
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub group: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
}

pub(crate) const ALL: [Kind; 12] = [
    Kind::Namespace,
    Kind::Pod,
    Kind::Service,
    Kind::ConfigMap,
    Kind::ServiceAccount,
    Kind::Deployment,
    Kind::ReplicaSet,
    Kind::StatefulSet,
    Kind::Role,
    Kind::RoleBinding,
    Kind::ClusterRole,
    Kind::ClusterRoleBinding,
];

pub(crate) const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

impl Kind {
    pub fn info(self) -> KindInfo {
        let (kind, plural, singular, group, namespaced, short_names): (_, _, _, _, _, &[&str]) =
            match self {
                Kind::Namespace => ("Namespace", "namespaces", "namespace", "", false, &["ns"]),
                Kind::Pod => ("Pod", "pods", "pod", "", true, &["po"]),
                Kind::Service => ("Service", "services", "service", "", true, &["svc"]),
                Kind::ConfigMap => ("ConfigMap", "configmaps", "configmap", "", true, &["cm"]),
                Kind::ServiceAccount => (
                    "ServiceAccount",
                    "serviceaccounts",
                    "serviceaccount",
                    "",
                    true,
                    &["sa"],
                ),
                Kind::Deployment => (
                    "Deployment",
                    "deployments",
                    "deployment",
                    "apps",
                    true,
                    &["deploy"],
                ),
                Kind::ReplicaSet => (
                    "ReplicaSet",
                    "replicasets",
                    "replicaset",
                    "apps",
                    true,
                    &["rs"],
                ),
                Kind::StatefulSet => (
                    "StatefulSet",
                    "statefulsets",
                    "statefulset",
                    "apps",
                    true,
                    &["sts"],
                ),
                Kind::Role => ("Role", "roles", "role", RBAC_GROUP, true, &[]),
                Kind::RoleBinding => (
                    "RoleBinding",
                    "rolebindings",
                    "rolebinding",
                    RBAC_GROUP,
                    true,
                    &[],
                ),
                Kind::ClusterRole => (
                    "ClusterRole",
                    "clusterroles",
                    "clusterrole",
                    RBAC_GROUP,
                    false,
                    &[],
                ),
                Kind::ClusterRoleBinding => (
                    "ClusterRoleBinding",
                    "clusterrolebindings",
                    "clusterrolebinding",
                    RBAC_GROUP,
                    false,
                    &[],
                ),
            };
        KindInfo {
            kind,
            plural,
            singular,
            group,
            namespaced,
            short_names,
        }
    }

    /// `v1`, `apps/v1` or `rbac.authorization.k8s.io/v1`.
    pub fn api_version(self) -> String {
        match self.info().group {
            "" => "v1".to_string(),
            group => format!("{group}/v1"),
        }
    }

    /// The kind named by a manifest's `apiVersion` and `kind`.
    pub fn from_manifest(api_version: &str, kind: &str) -> Option<Kind> {
        ALL.into_iter()
            .find(|k| k.info().kind == kind && k.api_version() == api_version)
    }

    /// The kind served under `/api{s}/GROUP/v1/.../PLURAL`.
    pub fn from_plural(group: &str, plural: &str) -> Option<Kind> {
        ALL.into_iter()
            .find(|k| k.info().plural == plural && k.info().group == group)
    }

    /// `pods`, or `deployments.apps` as error messages spell a resource.
    pub fn qualified_plural(self) -> String {
        let info = self.info();
        match info.group {
            "" => info.plural.to_string(),
            group => format!("{}.{group}", info.plural),
        }
    }
}
