//! Discovery documents: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/GROUP[/v1]`, enough for
//! kubectl and kube-rs to find every resource the test cluster serves.

use serde_json::{json, Value};

use crate::kinds::{Kind, ALL};

/// The Kubernetes version the test cluster claims to be (kind's node image of the same minor).
pub(crate) const GIT_VERSION: &str = "v1.33.1";

pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": GIT_VERSION,
        "gitCommit": "8adc0f041b8e7ad1d30e29cc59c6ae7a15e19828",
        "gitTreeState": "clean",
        "buildDate": "2025-05-15T08:19:08Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": format!("linux/{}", match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a }),
    })
}

pub(crate) fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&str> = ALL
        .iter()
        .map(|k| k.info().group)
        .filter(|g| !g.is_empty())
        .collect();
    groups.dedup();
    groups
}

fn group(name: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/v1"), "version": "v1"});
    json!({"name": name, "versions": [gv.clone()], "preferredVersion": gv})
}

pub(crate) fn api_group_list() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": groups().into_iter().map(group).collect::<Vec<_>>(),
    })
}

/// `/apis/GROUP`, if the group is served.
pub(crate) fn api_group(name: &str) -> Option<Value> {
    groups().contains(&name).then(|| {
        let mut g = group(name);
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        g
    })
}

fn resource(kind: Kind) -> Value {
    let info = kind.info();
    let mut r = json!({
        "name": info.plural,
        "singularName": info.singular,
        "namespaced": info.namespaced,
        "kind": info.kind,
        "verbs": ["create", "delete", "get", "list", "watch"],
    });
    if !info.short_names.is_empty() {
        r["shortNames"] = json!(info.short_names);
    }
    if matches!(
        kind,
        Kind::Pod | Kind::Service | Kind::Deployment | Kind::StatefulSet | Kind::ReplicaSet
    ) {
        r["categories"] = json!(["all"]);
    }
    r
}

fn subresource(name: &str, kind: &str, verbs: &[&str]) -> Value {
    json!({"name": name, "singularName": "", "namespaced": true, "kind": kind, "verbs": verbs})
}

/// `/api/v1` (group "") or `/apis/GROUP/v1`, if the group is served.
pub(crate) fn api_resource_list(group: &str) -> Option<Value> {
    let mut resources: Vec<Value> = ALL
        .iter()
        .filter(|k| k.info().group == group)
        .map(|k| resource(*k))
        .collect();
    if resources.is_empty() {
        return None;
    }
    if group.is_empty() {
        resources.push(subresource("pods/log", "Pod", &["get"]));
        resources.push(subresource(
            "pods/portforward",
            "PodPortForwardOptions",
            &["create", "get"],
        ));
        resources.push(subresource("pods/status", "Pod", &["get"]));
    }
    let group_version = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}
