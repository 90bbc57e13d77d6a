//! The kubeconfig the cluster writes: its CA embedded, and one context per identity.

use base64::Engine;
use serde_json::json;

/// Everything that goes into the kubeconfig.
pub(crate) struct KubeconfigParams<'a> {
    pub server: &'a str,
    pub ca_pem: &'a str,
    pub admin_token: &'a str,
    pub user_token: &'a str,
    /// More users: (name, token, namespace); each gets a context of its name.
    pub others: &'a [(&'a str, &'a str, &'a str)],
}

/// The kubeconfig YAML: contexts `testcluster` (admin, current), `minimal` (podtun-user in
/// namespace `demo`) and `bad-token` (a token the server rejects).
pub(crate) fn render(p: &KubeconfigParams) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(p.ca_pem);
    let context = |name: &str, user: &str, ns: &str| json!({"name": name, "context": {"cluster": "testcluster", "user": user, "namespace": ns}});
    let user = |name: &str, token: &str| json!({"name": name, "user": {"token": token}});
    let mut contexts = vec![
        context("testcluster", "admin", "default"),
        context("minimal", "podtun-user", "demo"),
        context("bad-token", "bad-token", "default"),
    ];
    let mut users = vec![
        user("admin", p.admin_token),
        user("podtun-user", p.user_token),
        user("bad-token", "not-a-valid-token"),
    ];
    for (name, token, ns) in p.others {
        contexts.push(context(name, name, ns));
        users.push(user(name, token));
    }
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "current-context": "testcluster",
        "clusters": [{"name": "testcluster", "cluster": {"server": p.server, "certificate-authority-data": ca}}],
        "contexts": contexts,
        "users": users,
    });
    // JSON is YAML too: fall back to it should the YAML writer ever refuse.
    serde_saphyr::to_string(&doc)
        .unwrap_or_else(|_| serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n")
}
