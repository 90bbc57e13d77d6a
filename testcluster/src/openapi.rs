//! `/openapi/v3`: as much of the OpenAPI documents as clients read from them. kubectl asks
//! before `create -f` and `apply` whether the server validates fields itself (a `PATCH`
//! operation of the kind with a `fieldValidation` query parameter); with that answered yes it
//! sends `fieldValidation=Strict` instead of validating against a schema it would download.

use serde_json::{json, Value};

use crate::kinds::{Kind, ALL};

/// `api/v1` or `apis/GROUP/v1`, as the document index names group versions.
fn group_version(kind: Kind) -> String {
    match kind.info().group {
        "" => "api/v1".into(),
        group => format!("apis/{group}/v1"),
    }
}

fn group_versions() -> Vec<String> {
    let mut gvs: Vec<String> = ALL.iter().map(|k| group_version(*k)).collect();
    gvs.sort();
    gvs.dedup();
    gvs
}

/// A stable stand-in for the hash the API server puts in each document's URL.
fn hash(gv: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (crate::discovery::GIT_VERSION, gv).hash(&mut h);
    format!("{:016X}{:016X}", h.finish(), h.finish().rotate_left(17))
}

/// `GET /openapi/v3`: where each group version's document is.
pub(crate) fn index() -> Value {
    let paths: serde_json::Map<String, Value> = group_versions()
        .into_iter()
        .map(|gv| {
            let url = format!("/openapi/v3/{gv}?hash={}", hash(&gv));
            (gv, json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({ "paths": paths })
}

fn parameter(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

/// `GET /openapi/v3/api/v1` (or `apis/GROUP/v1`): each kind's item path with its operations'
/// group-version-kind and query parameters, no schemas.
pub(crate) fn document(gv: &str) -> Option<Value> {
    let kinds: Vec<Kind> = ALL
        .into_iter()
        .filter(|k| group_version(*k) == gv)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    for kind in kinds {
        let info = kind.info();
        let gvk = json!({"group": info.group, "version": "v1", "kind": info.kind});
        let scope = if info.namespaced {
            "namespaces/{namespace}/"
        } else {
            ""
        };
        let write = ["dryRun", "fieldManager", "fieldValidation"].map(parameter);
        let operation = |verb: &str, params: &[Value]| {
            json!({
                "tags": [format!("{}_v1", info.group.split('.').next().unwrap_or("core"))],
                "operationId": format!("{verb}{}", info.kind),
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        let mut patch = write.to_vec();
        patch.push(parameter("force"));
        paths.insert(
            format!("/{gv}/{scope}{}/{{name}}", info.plural),
            json!({
                "get": operation("get", &[]),
                "put": operation("put", &write),
                "patch": operation("patch", &patch),
                "delete": operation("delete", &[parameter("gracePeriodSeconds")]),
            }),
        );
        paths.insert(
            format!("/{gv}/{scope}{}", info.plural),
            json!({"get": operation("list", &[]), "post": operation("post", &write)}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::discovery::GIT_VERSION},
        "paths": paths,
        "components": {},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_declare_field_validation_on_patch() {
        let index = index();
        let url = index["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .expect("url");
        assert!(url.starts_with("/openapi/v3/api/v1?hash="), "{url}");
        let doc = document("api/v1").expect("core");
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Pod");
        assert!(patch["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
        assert!(document("apis/apps/v1").is_some() && document("apis/nope/v1").is_none());
    }
}
