//! Test support: Pods and Containers from JSON.

use k8s_openapi::api::core::v1::{Container, Pod};

pub(crate) fn pod(value: serde_json::Value) -> Pod {
    serde_json::from_value(value).expect("pod JSON")
}

pub(crate) fn container(value: serde_json::Value) -> Container {
    serde_json::from_value(value).expect("container JSON")
}
