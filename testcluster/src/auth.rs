//! Authentication (bearer tokens) and authorization (RBAC rules from stored Roles and
//! RoleBindings, evaluated the way the API server's RBAC authorizer does).

use serde_json::Value;

use crate::kinds::{Kind, RBAC_GROUP};
use crate::store::{Key, Store};

/// The user name behind the minimal-rights token.
pub const USER_NAME: &str = "podtun-user";
/// The user name behind the admin token (member of `system:masters`).
pub(crate) const ADMIN_NAME: &str = "kubernetes-admin";

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum User {
    /// May do everything, as `system:masters`.
    Admin,
    /// Rights come from RBAC objects only.
    Named(String),
}

impl User {
    pub fn name(&self) -> &str {
        match self {
            User::Admin => ADMIN_NAME,
            User::Named(name) => name,
        }
    }
}

/// The tokens the cluster accepts.
pub(crate) struct Tokens {
    pub admin: String,
    pub user: String,
    /// The users of [`crate::Config::users`]: (token, user name).
    pub others: Vec<(String, String)>,
}

impl Tokens {
    /// The user an `Authorization` header value authenticates, if any.
    pub fn authenticate(&self, header: Option<&str>) -> Option<User> {
        let token = header?.strip_prefix("Bearer ")?.trim();
        if token.is_empty() {
            None
        } else if token == self.admin {
            Some(User::Admin)
        } else if token == self.user {
            Some(User::Named(USER_NAME.to_string()))
        } else {
            self.others
                .iter()
                .find(|(t, _)| t == token)
                .map(|(_, name)| User::Named(name.clone()))
        }
    }
}

/// What a request wants to do, as RBAC sees it.
#[derive(Debug)]
pub(crate) struct Attributes<'a> {
    pub verb: &'a str,
    pub kind: Kind,
    pub subresource: Option<&'a str>,
    pub ns: Option<&'a str>,
    pub name: Option<&'a str>,
}

impl Attributes<'_> {
    /// `pods` or `pods/log`.
    fn resource(&self) -> String {
        let plural = self.kind.info().plural;
        match self.subresource {
            Some(sub) => format!("{plural}/{sub}"),
            None => plural.to_string(),
        }
    }

    /// The message of the 403, word for word as the API server writes it.
    pub fn forbidden_message(&self, user: &User) -> String {
        let object = match self.name {
            Some(name) => format!("{} \"{name}\"", self.kind.qualified_plural()),
            None => self.kind.qualified_plural(),
        };
        let scope = match self.ns {
            Some(ns) if self.kind.info().namespaced => format!("in the namespace \"{ns}\""),
            _ => "at the cluster scope".to_string(),
        };
        format!(
            "{object} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
            user.name(),
            self.verb,
            self.resource(),
            self.kind.info().group
        )
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn rule_allows(rule: &Value, attrs: &Attributes) -> bool {
    let group = attrs.kind.info().group;
    let resource = attrs.resource();
    let groups = strings(&rule["apiGroups"]);
    let resources = strings(&rule["resources"]);
    let verbs = strings(&rule["verbs"]);
    let names = strings(&rule["resourceNames"]);
    let group_ok = groups.iter().any(|g| *g == "*" || *g == group);
    let resource_ok = resources.iter().any(|r| {
        *r == "*"
            || *r == resource
            || attrs
                .subresource
                .is_some_and(|sub| r.strip_prefix("*/") == Some(sub))
    });
    let verb_ok = verbs.iter().any(|v| *v == "*" || *v == attrs.verb);
    let name_ok = names.is_empty() || attrs.name.is_some_and(|n| names.contains(&n));
    group_ok && resource_ok && verb_ok && name_ok
}

fn binds_user(binding: &Value, user: &str) -> bool {
    binding["subjects"].as_array().is_some_and(|subjects| {
        subjects.iter().any(|s| match s["kind"].as_str() {
            Some("User") => s["name"].as_str() == Some(user),
            Some("Group") => s["name"].as_str() == Some("system:authenticated"),
            _ => false,
        })
    })
}

fn role_rules(store: &Store, binding: &Value, ns: &str) -> Vec<Value> {
    let role_ref = &binding["roleRef"];
    if role_ref["apiGroup"]
        .as_str()
        .is_some_and(|g| g != RBAC_GROUP)
    {
        return Vec::new();
    }
    let name = role_ref["name"].as_str().unwrap_or("");
    let key = match role_ref["kind"].as_str() {
        Some("Role") => Key::new(Kind::Role, ns, name),
        Some("ClusterRole") => Key::new(Kind::ClusterRole, "", name),
        _ => return Vec::new(),
    };
    store
        .get(&key)
        .and_then(|role| role["rules"].as_array().cloned())
        .unwrap_or_default()
}

/// Whether `user` may do what `attrs` describes.
pub(crate) fn allowed(store: &Store, user: &User, attrs: &Attributes) -> bool {
    decide(store, user, attrs).is_some()
}

/// `Some(reason)` when `user` may do what `attrs` describes, with the reason the API server's
/// RBAC authorizer gives (`RBAC: allowed by RoleBinding "b/ns" of Role "r" to User "u"`;
/// empty for `system:masters`, which a separate authorizer allows); `None` otherwise (RBAC
/// has no opinion and gives no reason).
pub(crate) fn decide(store: &Store, user: &User, attrs: &Attributes) -> Option<String> {
    let name = match user {
        User::Admin => return Some(String::new()),
        User::Named(name) => name,
    };
    let subject = |binding: &Value| {
        let group = binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["kind"] == "User" && s["name"] == name.as_str());
        match group {
            Some(_) => format!("User {name:?}"),
            None => "Group \"system:authenticated\"".to_string(),
        }
    };
    let describe = |kind: &str, binding: &Value, ns: Option<&str>| {
        let bname = binding["metadata"]["name"].as_str().unwrap_or_default();
        let shown = match ns {
            Some(ns) => format!("{bname}/{ns}"),
            None => bname.to_string(),
        };
        format!(
            "RBAC: allowed by {kind} {shown:?} of {} {:?} to {}",
            binding["roleRef"]["kind"].as_str().unwrap_or_default(),
            binding["roleRef"]["name"].as_str().unwrap_or_default(),
            subject(binding)
        )
    };
    for binding in store.list(Kind::ClusterRoleBinding, None).0 {
        if binds_user(&binding, name)
            && role_rules(store, &binding, "")
                .iter()
                .any(|rule| rule_allows(rule, attrs))
        {
            return Some(describe("ClusterRoleBinding", &binding, None));
        }
    }
    if let Some(ns) = attrs.ns.filter(|_| attrs.kind.info().namespaced) {
        for binding in store.list(Kind::RoleBinding, Some(ns)).0 {
            if binds_user(&binding, name)
                && role_rules(store, &binding, ns)
                    .iter()
                    .any(|rule| rule_allows(rule, attrs))
            {
                return Some(describe("RoleBinding", &binding, Some(ns)));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store_with_role() -> Store {
        let store = Store::new();
        store
            .create(
                Kind::Role,
                "demo",
                json!({"metadata": {"name": "r"}, "rules": [
                    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
                    {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["get", "create"], "resourceNames": ["web"]},
                ]}),
            )
            .expect("role");
        store
            .create(
                Kind::RoleBinding,
                "demo",
                json!({"metadata": {"name": "b"},
                    "subjects": [{"kind": "User", "name": USER_NAME, "apiGroup": RBAC_GROUP}],
                    "roleRef": {"kind": "Role", "name": "r", "apiGroup": RBAC_GROUP}}),
            )
            .expect("binding");
        store
    }

    fn attrs<'a>(
        verb: &'a str,
        kind: Kind,
        sub: Option<&'a str>,
        ns: &'a str,
        name: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            kind,
            subresource: sub,
            ns: Some(ns),
            name,
        }
    }

    #[test]
    fn rules_grant_only_what_they_name() {
        let store = store_with_role();
        let user = User::Named(USER_NAME.into());
        assert!(allowed(
            &store,
            &user,
            &attrs("list", Kind::Pod, None, "demo", None)
        ));
        assert!(allowed(
            &store,
            &user,
            &attrs("get", Kind::Pod, Some("log"), "demo", Some("x"))
        ));
        assert!(allowed(
            &store,
            &user,
            &attrs(
                "create",
                Kind::Pod,
                Some("portforward"),
                "demo",
                Some("web")
            )
        ));
        assert!(!allowed(
            &store,
            &user,
            &attrs("get", Kind::Pod, Some("portforward"), "demo", Some("db"))
        ));
        assert!(!allowed(
            &store,
            &user,
            &attrs("list", Kind::Pod, None, "other", None)
        ));
        assert!(!allowed(
            &store,
            &user,
            &attrs("delete", Kind::Pod, None, "demo", Some("x"))
        ));
        assert!(!allowed(
            &store,
            &user,
            &attrs("list", Kind::Deployment, None, "demo", None)
        ));
        assert!(allowed(
            &store,
            &User::Admin,
            &attrs("list", Kind::Deployment, None, "demo", None)
        ));
    }

    #[test]
    fn the_reason_names_the_binding_as_the_rbac_authorizer_does() {
        let store = store_with_role();
        let user = User::Named(USER_NAME.into());
        assert_eq!(
            decide(&store, &user, &attrs("list", Kind::Pod, None, "demo", None)).as_deref(),
            Some(r#"RBAC: allowed by RoleBinding "b/demo" of Role "r" to User "podtun-user""#)
        );
        assert_eq!(
            decide(
                &store,
                &user,
                &attrs("delete", Kind::Pod, None, "demo", Some("x"))
            ),
            None
        );
    }

    #[test]
    fn forbidden_message_matches_the_api_server() {
        let user = User::Named(USER_NAME.into());
        assert_eq!(
            attrs("list", Kind::Pod, None, "demo", None).forbidden_message(&user),
            r#"pods is forbidden: User "podtun-user" cannot list resource "pods" in API group "" in the namespace "demo""#
        );
        let a = Attributes {
            verb: "list",
            kind: Kind::Namespace,
            subresource: None,
            ns: None,
            name: None,
        };
        assert_eq!(
            a.forbidden_message(&user),
            r#"namespaces is forbidden: User "podtun-user" cannot list resource "namespaces" in API group "" at the cluster scope"#
        );
        assert_eq!(
            attrs("get", Kind::Deployment, None, "demo", Some("web")).forbidden_message(&user),
            r#"deployments.apps "web" is forbidden: User "podtun-user" cannot get resource "deployments" in API group "apps" in the namespace "demo""#
        );
    }
}
