//! `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`: "may I?", answered from the
//! RBAC model as the API server answers it (`kubectl auth can-i`, `podtun doctor`). Every
//! authenticated user may ask (Kubernetes binds `system:basic-user` to all of them).

use serde_json::{json, Value};

use crate::auth::{self, Attributes, User};
use crate::cluster::Cluster;
use crate::kinds::Kind;
use crate::respond::{self, Body};

/// The review with its `status` filled in, as the API server returns it (201 Created).
pub(crate) fn answer(cluster: &Cluster, user: &User, body: &[u8]) -> hyper::Response<Body> {
    let mut review: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(err) => return respond::bad_request(&format!("invalid JSON body: {err}")),
    };
    let spec = &review["spec"];
    let attrs = &spec["resourceAttributes"];
    if attrs.is_null() {
        if spec["nonResourceAttributes"].is_null() {
            return respond::error(
                422,
                "Invalid",
                "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
                None,
            );
        }
        // Non-resource URLs (/healthz, /version) are open to every authenticated user here.
        review["status"] = json!({"allowed": true});
        return respond::json(hyper::StatusCode::CREATED, &review);
    }
    let text = |key: &str| attrs[key].as_str().filter(|s| !s.is_empty());
    let group = text("group").unwrap_or("");
    let decision = match Kind::from_plural(group, text("resource").unwrap_or("")) {
        Some(kind) => auth::decide(
            &cluster.store,
            user,
            &Attributes {
                verb: text("verb").unwrap_or(""),
                kind,
                subresource: text("subresource"),
                ns: text("namespace"),
                name: text("name"),
            },
        ),
        // A resource this cluster does not serve: only the admin may.
        None => matches!(user, User::Admin).then(String::new),
    };
    review["status"] = match decision {
        Some(reason) if !reason.is_empty() => json!({"allowed": true, "reason": reason}),
        Some(_) => json!({"allowed": true}),
        None => json!({"allowed": false}),
    };
    if review["metadata"].is_null() {
        review["metadata"] = json!({"creationTimestamp": null});
    }
    respond::json(hyper::StatusCode::CREATED, &review)
}
