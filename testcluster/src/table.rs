//! Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks for, with the
//! pod columns kubectl users know (READY, STATUS, RESTARTS, AGE).

use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use crate::kinds::Kind;

/// Whether the request's `Accept` header asks for a Table.
pub(crate) fn wanted(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("as=Table"))
}

fn column(name: &str, format: &str) -> Value {
    json!({"name": name, "type": "string", "format": format, "description": "", "priority": 0})
}

/// `5s`, `3m12s`, `2h`, `4d` as kubectl shows ages.
fn age(object: &Value) -> String {
    let Some(created) = object["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|t| t.parse::<Timestamp>().ok())
    else {
        return "<unknown>".into();
    };
    let secs = (Timestamp::now().as_second() - created.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// The STATUS column of a pod, as kubectl computes it.
fn pod_status(pod: &Value) -> String {
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        return "Terminating".into();
    }
    let mut status = pod["status"]["phase"]
        .as_str()
        .unwrap_or("Pending")
        .to_string();
    for c in pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let state = &c["state"];
        if let Some(reason) = state["waiting"]["reason"].as_str() {
            status = reason.to_string();
        } else if let Some(reason) = state["terminated"]["reason"].as_str() {
            status = reason.to_string();
        }
    }
    if let Some(reason) = pod["status"]["conditions"].as_array().and_then(|cs| {
        cs.iter()
            .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
    }) {
        if reason["reason"] == "Unschedulable" {
            return "Pending".into();
        }
    }
    status
}

fn row(kind: Kind, object: &Value) -> Value {
    let name = object["metadata"]["name"].clone();
    let cells = if kind == Kind::Pod {
        let statuses = object["status"]["containerStatuses"].as_array();
        let total = object["spec"]["containers"].as_array().map_or(0, Vec::len);
        let ready = statuses.map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
        let restarts: i64 = statuses.map_or(0, |s| {
            s.iter().filter_map(|c| c["restartCount"].as_i64()).sum()
        });
        json!([
            name,
            format!("{ready}/{total}"),
            pod_status(object),
            restarts.to_string(),
            age(object)
        ])
    } else {
        json!([name, age(object)])
    };
    json!({"cells": cells, "object": object})
}

/// A Table of `objects`.
pub(crate) fn render(kind: Kind, objects: &[Value], resource_version: Option<String>) -> Value {
    let columns = if kind == Kind::Pod {
        vec![
            column("Name", "name"),
            column("Ready", ""),
            column("Status", ""),
            column("Restarts", ""),
            column("Age", ""),
        ]
    } else {
        vec![column("Name", "name"), column("Age", "")]
    };
    let mut meta = json!({});
    if let Some(rv) = resource_version {
        meta["resourceVersion"] = json!(rv);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns,
        "rows": objects.iter().map(|o| row(kind, o)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_rows_show_what_kubectl_shows() {
        let pod = json!({
            "metadata": {"name": "p", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Running", "containerStatuses": [{"ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
        });
        let table = render(Kind::Pod, &[pod], Some("7".into()));
        assert_eq!(
            table["rows"][0]["cells"].to_string(),
            r#"["p","0/1","CrashLoopBackOff","4","#.to_string()
                + &format!("{}]", table["rows"][0]["cells"][4])
        );
        assert!(wanted(Some(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        )));
    }
}
