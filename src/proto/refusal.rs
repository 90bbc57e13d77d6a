//! A port-forward the API server refused to this user, as both sides of the protocol know it: 403 (the role lacks `create` on
//! `pods/portforward`) or 401 (the kubeconfig's credentials expired or were revoked).
//!
//! That answer is final. Another transport asks the same authorizer (from Kubernetes 1.35 a
//! WebSocket upgrade is checked for `create` too), and waiting does not grant rights, so the
//! forward stops with this error instead of retrying until `--timeout`. It is a type of its
//! own so that every caller (the reconnecting loops on the laptop included, after it crossed
//! the agent protocol) recognises it by type, never by its words.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A port-forward upgrade refused with 401 or 403.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardRefused {
    /// The HTTP status: 401 (credentials) or 403 (rights).
    pub status: u16,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// What the API server said (its `Status` message).
    pub message: String,
}

impl ForwardRefused {
    /// The refusal of `status` (401 or 403) for `ns/pod`, or `None` for any other status.
    pub fn of(status: u16, ns: &str, pod: &str, message: &str) -> Option<ForwardRefused> {
        matches!(status, 401 | 403).then(|| ForwardRefused {
            status,
            namespace: ns.to_string(),
            pod: pod.to_string(),
            message: message.trim().to_string(),
        })
    }

    /// The error for it, with its hint.
    pub fn into_error(self) -> anyhow::Error {
        let hint = self.hint();
        crate::error::hinted(self, hint)
    }

    /// What to do about it.
    pub fn hint(&self) -> String {
        let ns = &self.namespace;
        match self.status {
            401 => "the credentials in the kubeconfig were refused (an expired token or certificate?): \
                    renew them the way your cluster hands them out, then check with `podtun doctor`"
                .to_string(),
            _ => format!(
                "`podtun doctor` shows your rights; ask the cluster's administrators for `create` on \
                 `pods/portforward` in namespace `{ns}`"
            ),
        }
    }
}

impl fmt::Display for ForwardRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ns, pod) = (&self.namespace, &self.pod);
        match self.status {
            401 => write!(
                f,
                "the API server refused the credentials for a port-forward to pod `{ns}/{pod}` (401)"
            )?,
            _ => write!(
                f,
                "not allowed to port-forward to pod `{ns}/{pod}`: missing the right `create` on \
                 `pods/portforward` in namespace `{ns}`"
            )?,
        }
        if !self.message.is_empty() && self.message != "Unauthorized" {
            write!(f, " (the API server said: {})", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ForwardRefused {}

/// The refusal somewhere in `err`, if any.
pub fn refusal_of(err: &anyhow::Error) -> Option<&ForwardRefused> {
    crate::error::find::<ForwardRefused>(err)
}

/// Whether `err` is (or was caused by) a refused port-forward: final, never worth a retry.
pub fn is_refusal(err: &anyhow::Error) -> bool {
    refusal_of(err).is_some()
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    const KUBECTL: &str = r#"pods "redis" is forbidden: User "bob" cannot create resource "pods/portforward" in API group "" in the namespace "demo""#;

    #[test]
    fn only_401_and_403_are_refusals() {
        for status in [400, 404, 426, 500] {
            assert_eq!(ForwardRefused::of(status, "demo", "redis", "no"), None);
        }
        assert!(ForwardRefused::of(401, "demo", "redis", "Unauthorized").is_some());
        assert!(ForwardRefused::of(403, "demo", "redis", KUBECTL).is_some());
    }

    #[test]
    fn a_403_names_the_pod_the_namespace_and_the_missing_right() {
        let refused = ForwardRefused::of(403, "demo", "redis", KUBECTL).unwrap();
        let text = refused.to_string();
        assert!(text.contains("pod `demo/redis`"), "{text}");
        assert!(
            text.contains("`create` on `pods/portforward` in namespace `demo`"),
            "{text}"
        );
        assert!(text.contains(KUBECTL), "{text}");
        assert!(refused.hint().contains("podtun doctor"));
        assert!(refused.hint().contains("administrators"));
    }

    #[test]
    fn a_401_points_at_the_credentials() {
        let refused = ForwardRefused::of(401, "demo", "redis", "Unauthorized").unwrap();
        assert!(!refused.to_string().contains("said"), "{refused}");
        assert!(refused.hint().contains("credentials in the kubeconfig"));
    }

    #[test]
    fn it_is_found_by_type_under_context() {
        let refused = ForwardRefused::of(403, "demo", "redis", KUBECTL).unwrap();
        let err = Err::<(), _>(refused.clone())
            .context("on login host `login`")
            .unwrap_err();
        assert!(is_refusal(&err));
        let hinted = refused.into_error().context("on login host `login`");
        assert!(is_refusal(&hinted));
        assert!(crate::error::render(&hinted).contains("hint: `podtun doctor` shows your rights"));
        assert!(!is_refusal(&anyhow::anyhow!("{KUBECTL}")));
    }
}
