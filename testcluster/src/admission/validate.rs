//! `ValidatePodCreate`, the parts a client meets: metadata names, containers (names, images,
//! ports, pull policy, resources) and the restart policy, in the API server's order and words.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod};
use serde_json::Value;

use super::names::{self, is_extended, is_hugepages, is_native};
use super::quantity::Quantity;
use super::{Bad, Cause};

/// Every cause that keeps this (defaulted) pod out of the store; empty if it may go in.
pub(super) fn pod(object: &Value) -> Vec<Cause> {
    let Ok(pod) = serde_json::from_value::<Pod>(object.clone()) else {
        return Vec::new();
    };
    let mut causes = metadata(&pod);
    let spec = pod.spec.unwrap_or_default();
    if spec.containers.is_empty() {
        causes.push(Cause::required("spec.containers", ""));
    }
    let mut names = HashSet::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let path = format!("spec.containers[{i}]");
        causes.extend(container(c, &path));
        if !names.insert(c.name.as_str()) {
            causes.push(Cause::duplicate(format!("{path}.name"), Bad::Str(&c.name)));
        }
    }
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let path = format!("spec.initContainers[{i}]");
        causes.extend(container(c, &path));
        if !names.insert(c.name.as_str()) {
            causes.push(Cause::duplicate(format!("{path}.name"), Bad::Str(&c.name)));
        }
    }
    let policy = spec.restart_policy.as_deref().unwrap_or("");
    if !["Always", "OnFailure", "Never"].contains(&policy) {
        causes.push(Cause::not_supported(
            "spec.restartPolicy",
            policy,
            &["Always", "OnFailure", "Never"],
        ));
    }
    if spec.ephemeral_containers.is_some_and(|e| !e.is_empty()) {
        causes.push(Cause::forbidden(
            "spec.ephemeralContainers",
            "cannot be set on create",
        ));
    }
    causes
}

/// `ValidateObjectMeta` with `ValidatePodName` (a DNS-1123 subdomain).
fn metadata(pod: &Pod) -> Vec<Cause> {
    let meta = &pod.metadata;
    let mut causes = Vec::new();
    if let Some(prefix) = meta.generate_name.as_deref().filter(|p| !p.is_empty()) {
        for msg in names::generate_name(prefix) {
            causes.push(Cause::invalid(
                "metadata.generateName",
                Bad::Str(prefix),
                &msg,
            ));
        }
    }
    match meta.name.as_deref().unwrap_or("") {
        "" => causes.push(Cause::required(
            "metadata.name",
            "name or generateName is required",
        )),
        name => {
            for msg in names::dns1123_subdomain(name) {
                causes.push(Cause::invalid("metadata.name", Bad::Str(name), &msg));
            }
        }
    }
    causes
}

/// `validateContainerCommon` without volumes, env and probes.
fn container(c: &Container, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    if c.name.is_empty() {
        causes.push(Cause::required(format!("{path}.name"), ""));
    } else {
        for msg in names::dns1123_label(&c.name) {
            causes.push(Cause::invalid(
                format!("{path}.name"),
                Bad::Str(&c.name),
                &msg,
            ));
        }
    }
    if c.image.as_deref().unwrap_or("").is_empty() {
        causes.push(Cause::required(format!("{path}.image"), ""));
    }
    let policy = c.termination_message_policy.as_deref().unwrap_or("");
    if !["File", "FallbackToLogsOnError"].contains(&policy) {
        causes.push(Cause::not_supported(
            format!("{path}.terminationMessagePolicy"),
            policy,
            &["File", "FallbackToLogsOnError"],
        ));
    }
    causes.extend(ports(c.ports.as_deref().unwrap_or_default(), path));
    let pull = c.image_pull_policy.as_deref().unwrap_or("");
    if !["Always", "IfNotPresent", "Never"].contains(&pull) {
        causes.push(Cause::not_supported(
            format!("{path}.imagePullPolicy"),
            pull,
            &["Always", "IfNotPresent", "Never"],
        ));
    }
    let resources = c.resources.clone().unwrap_or_default();
    let sorted =
        |m: Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
            m.unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| Some((k, Quantity::parse(&v.0).ok()?)))
                .collect::<BTreeMap<String, Quantity>>()
        };
    causes.extend(resources_of(
        &sorted(resources.limits),
        &sorted(resources.requests),
        &format!("{path}.resources"),
    ));
    causes
}

/// `validateContainerPorts`.
fn ports(ports: &[ContainerPort], path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("{path}.ports[{i}]");
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let msgs = names::port_name(name);
            if !msgs.is_empty() {
                for msg in msgs {
                    causes.push(Cause::invalid(format!("{at}.name"), Bad::Str(name), &msg));
                }
            } else if !names.insert(name) {
                causes.push(Cause::duplicate(format!("{at}.name"), Bad::Str(name)));
            }
        }
        let range = "must be between 1 and 65535, inclusive";
        match port.container_port {
            0 => causes.push(Cause::required(format!("{at}.containerPort"), "")),
            1..=65535 => {}
            n => causes.push(Cause::invalid(
                format!("{at}.containerPort"),
                Bad::Int(n.into()),
                range,
            )),
        }
        if let Some(n) = port
            .host_port
            .filter(|&n| n != 0 && !(1..=65535).contains(&n))
        {
            causes.push(Cause::invalid(
                format!("{at}.hostPort"),
                Bad::Int(n.into()),
                range,
            ));
        }
        let protocol = port.protocol.as_deref().unwrap_or("");
        if !["SCTP", "TCP", "UDP"].contains(&protocol) {
            causes.push(Cause::not_supported(
                format!("{at}.protocol"),
                protocol,
                &["SCTP", "TCP", "UDP"],
            ));
        }
    }
    causes
}

/// `validateContainerResourceName`.
fn resource_name(name: &str, field: &str) -> Vec<Cause> {
    let mut causes: Vec<Cause> = names::qualified_name(name)
        .iter()
        .map(|msg| Cause::invalid(field, Bad::Str(name), msg))
        .collect();
    if !causes.is_empty() {
        return causes;
    }
    if !name.contains('/') {
        if !names::is_standard(name) {
            let msg = "must be a standard resource type or fully qualified";
            causes.push(Cause::invalid(field, Bad::Str(name), msg));
        }
        if !names::is_container_standard(name) {
            let msg = "must be a standard resource for containers";
            causes.push(Cause::invalid(field, Bad::Str(name), msg));
        }
    } else if !is_native(name) && !is_extended(name) {
        let msg = "doesn't follow extended resource name standard";
        causes.push(Cause::invalid(field, Bad::Str(name), msg));
    }
    causes
}

/// `ValidateResourceQuantityValue`: not negative, and whole for extended resources.
fn quantity_value(name: &str, q: &Quantity, field: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    if q.is_negative() {
        let msg = "must be greater than or equal to 0";
        causes.push(Cause::invalid(field, Bad::Str(&q.to_string()), msg));
    }
    if is_extended(name) && !q.is_whole() {
        causes.push(Cause::invalid(
            field,
            Bad::Raw(q.go_syntax()),
            "must be an integer",
        ));
    }
    causes
}

/// `ValidateResourceRequirements`: names, values, and requests against limits (equal for
/// resources that may not be overcommitted, such as GPUs).
fn resources_of(
    limits: &BTreeMap<String, Quantity>,
    requests: &BTreeMap<String, Quantity>,
    path: &str,
) -> Vec<Cause> {
    let mut causes = Vec::new();
    let (lim_path, req_path) = (format!("{path}.limits"), format!("{path}.requests"));
    for (name, q) in limits {
        let field = format!("{lim_path}[{name}]");
        causes.extend(resource_name(name, &field));
        causes.extend(quantity_value(name, q, &field));
    }
    for (name, q) in requests {
        let field = format!("{req_path}[{name}]");
        causes.extend(resource_name(name, &field));
        causes.extend(quantity_value(name, q, &field));
        let overcommit = is_native(name) && !is_hugepages(name);
        match limits.get(name) {
            Some(limit) if q != limit && !overcommit => {
                let msg = format!("must be equal to {name} limit of {limit}");
                causes.push(Cause::invalid(&req_path, Bad::Str(&q.to_string()), &msg));
            }
            Some(limit) if q > limit => {
                let msg = format!("must be less than or equal to {name} limit of {limit}");
                causes.push(Cause::invalid(&req_path, Bad::Str(&q.to_string()), &msg));
            }
            Some(_) => {}
            None if !overcommit => causes.push(Cause::required(
                &lim_path,
                "Limit must be set for non overcommitable resources",
            )),
            None => {}
        }
    }
    causes
}
