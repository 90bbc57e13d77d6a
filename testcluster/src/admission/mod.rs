//! What the API server does to an object between the request body and the store: decode it
//! (a quantity that does not parse is a 400), generate its name, fill in defaults, validate it
//! (a 422 `Invalid` with one cause per field), and for pods compute `status.qosClass`.
//!
//! - `quantity`: `resource.Quantity` parsing, comparison and printing.
//! - `defaults`: the defaults of every kind, and a pod's requests from its limits.
//! - `validate`: `ValidatePodCreate`'s checks on metadata and containers.
//! - `names`: DNS-1123 names, port names and resource names, with apimachinery's messages.

mod defaults;
mod names;
pub(crate) mod quantity;
mod validate;

use std::fmt;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde_json::{json, Value};

use crate::kinds::Kind;
use crate::store::WriteError;
use quantity::Quantity;

pub(crate) use defaults::DEFAULT_GRACE_SECONDS;

/// One `StatusCause` of a 422: a field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, ...
    pub reason: &'static str,
    /// `spec.containers[0].image`.
    pub field: String,
    /// `field.Error.ErrorBody()`: `Required value`, `Invalid value: "x": ...`.
    pub body: String,
}

/// A bad value, printed as `field.Error` prints it.
pub(crate) enum Bad<'a> {
    Str(&'a str),
    Int(i64),
    /// Printed as given (Go's `%#v` of a struct).
    Raw(String),
}

impl fmt::Display for Bad<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bad::Str(s) => write!(f, "{s:?}"),
            Bad::Int(n) => write!(f, "{n}"),
            Bad::Raw(s) => f.write_str(s),
        }
    }
}

fn with_detail(head: String, detail: &str) -> String {
    if detail.is_empty() {
        head
    } else {
        format!("{head}: {detail}")
    }
}

impl Cause {
    pub fn required(field: impl Into<String>, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            body: with_detail("Required value".into(), detail),
        }
    }

    pub fn invalid(field: impl Into<String>, value: Bad, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            body: with_detail(format!("Invalid value: {value}"), detail),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: Bad) -> Cause {
        Cause {
            reason: "FieldValueDuplicate",
            field: field.into(),
            body: format!("Duplicate value: {value}"),
        }
    }

    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Cause {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Cause {
            reason: "FieldValueNotSupported",
            field: field.into(),
            body: format!(
                "Unsupported value: {value:?}: supported values: {}",
                list.join(", ")
            ),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueForbidden",
            field: field.into(),
            body: with_detail("Forbidden".into(), detail),
        }
    }

    /// `field: body`, as `field.Error.Error()`.
    fn text(&self) -> String {
        format!("{}: {}", self.field, self.body)
    }
}

/// A 422 `Invalid`: the object, and every cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub kind: Kind,
    pub name: String,
    pub causes: Vec<Cause>,
}

impl Invalid {
    /// `Pod "x" is invalid: a: ...` or `... is invalid: [a: ..., b: ...]`, as
    /// `errors.NewInvalid` words it (repeated messages once).
    pub fn message(&self) -> String {
        let mut seen: Vec<String> = Vec::new();
        for cause in &self.causes {
            let text = cause.text();
            if !seen.contains(&text) {
                seen.push(text);
            }
        }
        let info = self.kind.info();
        let kind = if info.group.is_empty() {
            info.kind.to_string()
        } else {
            format!("{}.{}", info.kind, info.group)
        };
        let list = match seen.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        format!("{kind} {:?} is invalid: {list}", self.name)
    }

    /// The `details` of the Status.
    pub fn details(&self) -> Value {
        let info = self.kind.info();
        let causes: Vec<Value> = self
            .causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.body, "field": c.field}))
            .collect();
        let mut details = json!({"name": self.name, "kind": info.kind, "causes": causes});
        if !info.group.is_empty() {
            details["group"] = json!(info.group);
        }
        details
    }
}

fn normalize<T: serde::de::DeserializeOwned + serde::Serialize>(
    object: Value,
) -> Result<Value, String> {
    let typed: T = serde_json::from_value(object).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// Parses `object` as the k8s-openapi type and serializes it back, so that stored objects have
/// exactly the shape (and only the fields) the real API knows.
pub(crate) fn normalize_kind(kind: Kind, object: Value) -> Result<Value, String> {
    match kind {
        Kind::Namespace => normalize::<Namespace>(object),
        Kind::Pod => normalize::<Pod>(object),
        Kind::Service => normalize::<Service>(object),
        Kind::ConfigMap => normalize::<ConfigMap>(object),
        Kind::ServiceAccount => normalize::<ServiceAccount>(object),
        Kind::Deployment => normalize::<Deployment>(object),
        Kind::ReplicaSet => normalize::<ReplicaSet>(object),
        Kind::StatefulSet => normalize::<StatefulSet>(object),
        Kind::Role => normalize::<Role>(object),
        Kind::RoleBinding => normalize::<RoleBinding>(object),
        Kind::ClusterRole => normalize::<ClusterRole>(object),
        Kind::ClusterRoleBinding => normalize::<ClusterRoleBinding>(object),
    }
}

fn unknown(input: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(input), Value::Object(known)) => {
            for (key, value) in input.iter().filter(|(_, v)| !v.is_null()) {
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match known.get(key) {
                    None => out.push(at),
                    Some(k) => unknown(value, k, &at, out),
                }
            }
        }
        (Value::Array(input), Value::Array(known)) => {
            for (i, (a, b)) in input.iter().zip(known).enumerate() {
                unknown(a, b, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The fields of `object` its kind does not have (`spec.containers[0].foo`), which the API
/// server drops, warns about, or refuses, by the request's `fieldValidation`.
pub(crate) fn unknown_fields(kind: Kind, object: &Value) -> Vec<String> {
    let mut body = object.clone();
    if kind == Kind::Pod && decode_pod(&mut body).is_err() {
        return Vec::new();
    }
    let Ok(known) = normalize_kind(kind, body.clone()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    unknown(&body, &known, "", &mut out);
    out
}

/// The containers of a pod body (regular and init), without adding what is missing.
fn containers(pod: &mut Value) -> impl Iterator<Item = &mut Value> {
    let spec = pod.get_mut("spec").and_then(Value::as_object_mut);
    spec.into_iter().flat_map(|spec| {
        spec.iter_mut()
            .filter(|(k, _)| *k == "containers" || *k == "initContainers")
            .flat_map(|(_, v)| v.as_array_mut().into_iter().flatten())
    })
}

/// Decodes a pod body as the API server's decoder does: a quantity may be a JSON number (read
/// as its decimal text), one that does not parse fails the whole request; fields the Go types
/// leave empty when absent (a container's name, a port's number, the container list) are
/// filled in so that validation, not decoding, reports them.
fn decode_pod(pod: &mut Value) -> Result<(), String> {
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("containers").or_insert_with(|| json!([]));
        if spec["containers"].is_null() {
            spec["containers"] = json!([]);
        }
    }
    for c in containers(pod) {
        let Some(c) = c.as_object_mut() else { continue };
        c.entry("name").or_insert_with(|| json!(""));
        let ports = c.get_mut("ports").and_then(Value::as_array_mut);
        for port in ports.into_iter().flatten().filter_map(Value::as_object_mut) {
            port.entry("containerPort").or_insert_with(|| json!(0));
        }
        let Some(resources) = c.get_mut("resources").and_then(Value::as_object_mut) else {
            continue;
        };
        for (_, list) in resources
            .iter_mut()
            .filter(|(k, _)| *k == "limits" || *k == "requests")
        {
            for value in list
                .as_object_mut()
                .into_iter()
                .flat_map(|m| m.values_mut())
            {
                let text = match value {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => s.trim().to_string(),
                    _ => continue,
                };
                Quantity::parse(&text).map_err(|e| e.to_string())?;
                *value = Value::String(text);
            }
        }
    }
    Ok(())
}

/// The 400 of a body the API server cannot decode as `kind`.
pub(crate) fn cannot_decode(kind: Kind, err: &str) -> String {
    let kind = kind.info().kind;
    format!("{kind} in version \"v1\" cannot be handled as a {kind}: {err}")
}

/// Everything between the request body and the store, for an object of `kind`.
pub(crate) fn admit(kind: Kind, mut object: Value) -> Result<Value, WriteError> {
    let cannot = |err: String| WriteError::BadRequest(cannot_decode(kind, &err));
    if !object.is_object() {
        return Err(cannot("object is not a JSON map".into()));
    }
    if kind == Kind::Pod {
        decode_pod(&mut object).map_err(cannot)?;
    }
    let mut object = normalize_kind(kind, object).map_err(cannot)?;
    let meta = &mut object["metadata"];
    let unnamed = meta["name"].as_str().is_none_or(str::is_empty);
    if let Some(prefix) = meta["generateName"].as_str().filter(|_| unnamed) {
        meta["name"] = json!(format!("{prefix}{}", crate::names::suffix(5)));
    }
    defaults::apply(kind, &mut object);
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let causes = match kind {
        Kind::Pod => validate::pod(&object),
        _ if name.is_empty() => vec![Cause::required(
            "metadata.name",
            "name or generateName is required",
        )],
        _ => Vec::new(),
    };
    if !causes.is_empty() {
        return Err(WriteError::Invalid(Invalid { kind, name, causes }));
    }
    if kind == Kind::Pod {
        defaults::finish_pod(&mut object);
    }
    Ok(object)
}

#[cfg(test)]
mod tests;
