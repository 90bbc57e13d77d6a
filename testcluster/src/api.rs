//! Request routing: which resource a path names, which RBAC verb the request is, and the
//! get/list/watch/create/delete handlers shared by every kind.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::auth::{self, Attributes, User};
use crate::cluster::Cluster;
use crate::discovery;
use crate::kinds::Kind;
use crate::respond::{self, Body, Query};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Key, WriteError};
use crate::{admin, forward, podlog, table, watch};

/// Largest request body accepted (manifests, DeleteOptions).
const MAX_BODY: usize = 8 << 20;

/// What a resource path names.
pub(crate) struct Target {
    pub kind: Kind,
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

/// Parses `/api/v1/...` and `/apis/GROUP/v1/...` resource paths.
fn parse_target(segments: &[&str]) -> Option<Target> {
    let (group, rest) = match segments {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, "v1", rest @ ..] => (*group, rest),
        _ => return None,
    };
    let owned = |s: Option<&&str>| s.map(|s| s.to_string());
    let target = match rest {
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 2 => Target {
            kind: Kind::from_plural(group, plural)?,
            ns: Some(ns.to_string()),
            name: owned(tail.first()),
            sub: owned(tail.get(1)),
        },
        [plural, tail @ ..] if tail.len() <= 2 => Target {
            kind: Kind::from_plural(group, plural)?,
            ns: None,
            name: owned(tail.first()),
            sub: owned(tail.get(1)),
        },
        _ => return None,
    };
    if target.ns.is_some() && !target.kind.info().namespaced {
        return None;
    }
    Some(target)
}

/// The RBAC verb of a request, as the API server's request-info resolver derives it.
fn verb(method: &Method, target: &Target, query: &Query) -> &'static str {
    match *method {
        Method::GET | Method::HEAD if target.name.is_some() => "get",
        Method::GET | Method::HEAD if query.flag("watch") => "watch",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if target.name.is_some() => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

/// The pod registry's second check of a WebSocket port-forward (a GET, so far authorized as
/// `get`): from Kubernetes 1.35 (`AuthorizePodWebsocketUpgradeCreatePermission`, on by
/// default) it must be allowed `create` too, as the SPDY upgrade (a POST) is. Its 403 is
/// `NewForbidden(pods, name, reason)`, and RBAC gives no reason for a refusal: the message
/// names the pod only.
fn websocket_upgrade_create(
    cluster: &Cluster,
    user: &User,
    attrs: &Attributes,
) -> Option<Response<Body>> {
    if attrs.verb != "get" || attrs.kind != Kind::Pod || attrs.subresource != Some("portforward") {
        return None;
    }
    let create = Attributes {
        verb: "create",
        kind: attrs.kind,
        subresource: attrs.subresource,
        ns: attrs.ns,
        name: attrs.name,
    };
    if auth::allowed(&cluster.store, user, &create) {
        return None;
    }
    let name = attrs.name.unwrap_or_default();
    let message = format!("pods {name:?} is forbidden: ");
    Some(respond::forbidden(Kind::Pod, Some(name), &message))
}

/// Routes one authenticated request.
pub(crate) async fn route(
    cluster: &Arc<Cluster>,
    user: &User,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let query = Query::parse(req.uri().query());
    let server = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    match segments.as_slice() {
        ["testcluster", ..] => return admin::route(cluster, user, req).await,
        ["version"] => return respond::ok(&discovery::version()),
        ["healthz"] | ["livez"] | ["readyz"] => return respond::text("ok"),
        ["api"] => return respond::ok(&discovery::api_versions(&server)),
        ["api", "v1"] => return found(discovery::api_resource_list("")),
        ["apis"] => return respond::ok(&discovery::api_group_list()),
        ["apis", group] => return found(discovery::api_group(group)),
        ["apis", group, "v1"] => return found(discovery::api_resource_list(group)),
        ["openapi", "v3"] => return respond::ok(&crate::openapi::index()),
        ["openapi", "v3", gv @ ..] => return found(crate::openapi::document(&gv.join("/"))),
        ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"]
            if req.method() == Method::POST =>
        {
            let protobuf = req
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|h| h.to_str().ok())
                .is_some_and(|t| t.starts_with(crate::protobuf::CONTENT_TYPE));
            return match read_body(req).await {
                Ok(body) if protobuf => match crate::protobuf::self_subject_access_review(&body) {
                    Some(review) => {
                        crate::review::answer(cluster, user, review.to_string().as_bytes())
                    }
                    None => respond::bad_request("the body is not a SelfSubjectAccessReview"),
                },
                Ok(body) => crate::review::answer(cluster, user, &body),
                Err(resp) => resp,
            };
        }
        _ => {}
    }
    let Some(target) = parse_target(&segments) else {
        return respond::no_such_path();
    };
    let verb = verb(req.method(), &target, &query);
    let as_table = crate::table::wanted(
        req.headers()
            .get(hyper::header::ACCEPT)
            .and_then(|h| h.to_str().ok()),
    );
    let attrs = Attributes {
        verb,
        kind: target.kind,
        subresource: target.sub.as_deref(),
        ns: target.ns.as_deref(),
        name: target.name.as_deref(),
    };
    if !auth::allowed(&cluster.store, user, &attrs) {
        let message = attrs.forbidden_message(user);
        return respond::forbidden(target.kind, target.name.as_deref(), &message);
    }
    if let Some(refused) = websocket_upgrade_create(cluster, user, &attrs) {
        return refused;
    }
    if let Some(sub) = target.sub.as_deref() {
        return subresource(cluster, &target, sub, &query, req).await;
    }
    match verb {
        "get" => get(cluster, &target, as_table),
        "list" => list(cluster, &target, &query, as_table),
        "watch" => match selectors(&query) {
            Ok((labels, fields)) => {
                let filter = watch::Filter {
                    kind: target.kind,
                    ns: target.ns.clone(),
                    labels,
                    fields,
                    as_table,
                };
                watch::serve(cluster, filter, &query)
            }
            Err(resp) => resp,
        },
        "create" => create(cluster, &target, &query, req).await,
        "delete" => delete(cluster, &target, &query, req).await,
        _ => respond::error(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            Some(json!({})),
        ),
    }
}

fn found(doc: Option<Value>) -> Response<Body> {
    doc.map(|d| respond::ok(&d))
        .unwrap_or_else(respond::no_such_path)
}

fn key(target: &Target) -> Key {
    Key::new(
        target.kind,
        target.ns.as_deref().unwrap_or(""),
        target.name.as_deref().unwrap_or(""),
    )
}

fn get(cluster: &Cluster, target: &Target, as_table: bool) -> Response<Body> {
    match cluster.store.get(&key(target)) {
        Some(object) if as_table => respond::ok(&table::render(target.kind, &[object], None)),
        Some(object) => respond::ok(&object),
        None => respond::not_found(target.kind, target.name.as_deref().unwrap_or("")),
    }
}

#[allow(clippy::result_large_err)]
fn selectors(query: &Query) -> Result<(LabelSelector, FieldSelector), Response<Body>> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
        .map_err(|e| respond::bad_request(&format!("unable to parse requirement: {e}")))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))
        .map_err(|e| respond::bad_request(&e))?;
    Ok((labels, fields))
}

fn list(cluster: &Cluster, target: &Target, query: &Query, as_table: bool) -> Response<Body> {
    let (labels, fields) = match selectors(query) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let (items, rv) = cluster.store.list(target.kind, target.ns.as_deref());
    let items: Vec<Value> = items
        .into_iter()
        .filter(|o| labels.matches_object(o) && fields.matches_object(o))
        .collect();
    if as_table {
        return respond::ok(&table::render(target.kind, &items, Some(rv.to_string())));
    }
    respond::ok(&json!({
        "kind": format!("{}List", target.kind.info().kind),
        "apiVersion": target.kind.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    }))
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) => Err(respond::bad_request(&format!(
            "could not read the request body: {err}"
        ))),
    }
}

async fn create(
    cluster: &Arc<Cluster>,
    target: &Target,
    query: &Query,
    req: Request<Incoming>,
) -> Response<Body> {
    if target.name.is_some() {
        return respond::error(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            Some(json!({})),
        );
    }
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let object: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(err) => return respond::bad_request(&format!("invalid JSON body: {err}")),
    };
    let ns = target.ns.as_deref().unwrap_or("");
    let body_ns = object["metadata"]["namespace"].as_str().unwrap_or("");
    if target.kind.info().namespaced && !body_ns.is_empty() && body_ns != ns {
        return respond::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        );
    }
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let unknown = crate::admission::unknown_fields(target.kind, &object);
    let validation = query.get("fieldValidation").unwrap_or("Warn");
    if validation == "Strict" && !unknown.is_empty() {
        let fields: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect();
        let err = format!("strict decoding error: {}", fields.join(", "));
        return respond::bad_request(&crate::admission::cannot_decode(target.kind, &err));
    }
    match cluster.create(target.kind, ns, object) {
        Ok(stored) => {
            let mut response = respond::json(StatusCode::CREATED, &stored);
            if validation == "Warn" {
                for field in unknown {
                    let warning = format!("299 - {:?}", format!("unknown field {field:?}"));
                    if let Ok(value) = hyper::header::HeaderValue::from_str(&warning) {
                        response.headers_mut().append("warning", value);
                    }
                }
            }
            response
        }
        Err(WriteError::AlreadyExists) => respond::already_exists(target.kind, &name),
        Err(WriteError::BadRequest(message)) => respond::bad_request(&message),
        Err(WriteError::Invalid(invalid)) => {
            respond::error(422, "Invalid", &invalid.message(), Some(invalid.details()))
        }
    }
}

async fn delete(
    cluster: &Arc<Cluster>,
    target: &Target,
    query: &Query,
    req: Request<Incoming>,
) -> Response<Body> {
    let body = read_body(req).await.unwrap_or_default();
    let options: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let grace = query
        .number("gracePeriodSeconds")
        .or_else(|| options["gracePeriodSeconds"].as_i64());
    match cluster.delete(&key(target), grace) {
        Some(object) => respond::ok(&object),
        None => respond::not_found(target.kind, target.name.as_deref().unwrap_or("")),
    }
}

async fn subresource(
    cluster: &Arc<Cluster>,
    target: &Target,
    sub: &str,
    query: &Query,
    req: Request<Incoming>,
) -> Response<Body> {
    let name = target.name.as_deref().unwrap_or("");
    let key = key(target);
    let Some(object) = cluster.store.get(&key) else {
        return respond::not_found(target.kind, name);
    };
    match (target.kind, sub, req.method().clone()) {
        (Kind::Pod, "log", Method::GET) => podlog::serve(cluster, &key, &object, query),
        (Kind::Pod, "portforward", Method::GET | Method::POST) => {
            forward::serve(cluster, &key, &object, query, req)
        }
        (_, "status", Method::GET) => respond::ok(&object),
        _ => respond::no_such_path(),
    }
}
