//! Pods the API server refuses, and how it words each refusal.

use serde_json::{json, Value};

use super::*;

fn pod(name: &str, container: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": "demo"}, "spec": {"containers": [container]}})
}

fn causes(object: Value) -> (String, Vec<(String, String, String)>) {
    match admit(Kind::Pod, object) {
        Err(WriteError::Invalid(invalid)) => (
            invalid.message(),
            invalid
                .causes
                .iter()
                .map(|c| (c.reason.to_string(), c.field.clone(), c.body.clone()))
                .collect(),
        ),
        other => panic!("not invalid: {other:?}"),
    }
}

fn cause(reason: &str, field: &str, body: &str) -> (String, String, String) {
    (reason.into(), field.into(), body.into())
}

#[test]
fn a_gpu_request_needs_an_equal_limit() {
    let gpu = |resources: Value| {
        pod(
            "nb",
            json!({"name": "nb", "image": "x", "resources": resources}),
        )
    };
    let (message, list) = causes(gpu(json!({"requests": {"nvidia.com/gpu": 1}})));
    assert_eq!(
        message,
        "Pod \"nb\" is invalid: spec.containers[0].resources.limits: Required value: \
         Limit must be set for non overcommitable resources"
    );
    assert_eq!(
        list,
        [cause(
            "FieldValueRequired",
            "spec.containers[0].resources.limits",
            "Required value: Limit must be set for non overcommitable resources"
        )]
    );
    let (_, list) = causes(gpu(
        json!({"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "2"}}),
    ));
    assert_eq!(
        list,
        [cause(
            "FieldValueInvalid",
            "spec.containers[0].resources.requests",
            "Invalid value: \"1\": must be equal to nvidia.com/gpu limit of 2"
        )]
    );
    let (_, list) = causes(gpu(json!({"limits": {"nvidia.com/gpu": "500m"}})));
    assert_eq!(
        list[0].1,
        "spec.containers[0].resources.limits[nvidia.com/gpu]"
    );
    assert!(
        list[0]
            .2
            .ends_with("s:\"500m\", Format:\"DecimalSI\"}: must be an integer"),
        "{list:?}"
    );
    // A limit alone is also the request.
    let stored = admit(
        Kind::Pod,
        gpu(json!({"limits": {"nvidia.com/gpu": 1, "cpu": 0.5}})),
    )
    .expect("valid");
    let resources = &stored["spec"]["containers"][0]["resources"];
    assert_eq!(
        resources["requests"],
        json!({"nvidia.com/gpu": "1", "cpu": "500m"})
    );
    assert_eq!(stored["status"]["qosClass"], "Burstable");
}

#[test]
fn requests_may_not_exceed_limits() {
    let (message, _) = causes(pod(
        "web",
        json!({"name": "web", "image": "x", "resources": {"requests": {"cpu": "1.5"}, "limits": {"cpu": "1"}}}),
    ));
    assert_eq!(
        message,
        "Pod \"web\" is invalid: spec.containers[0].resources.requests: Invalid value: \"1500m\": \
         must be less than or equal to cpu limit of 1"
    );
}

#[test]
fn names_images_and_ports_are_checked_in_order() {
    let object = json!({"metadata": {"name": "Bad_Pod"}, "spec": {"containers": [
        {"name": "main", "image": "x", "ports": [{"containerPort": 70000}, {}]},
        {"name": "main"},
        {"image": "y", "resources": {"limits": {"foo": "1"}}},
    ]}});
    let (message, list) = causes(object);
    let fields: Vec<&str> = list.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(
        fields,
        [
            "metadata.name",
            "spec.containers[0].ports[0].containerPort",
            "spec.containers[0].ports[1].containerPort",
            "spec.containers[1].image",
            "spec.containers[1].name",
            "spec.containers[2].name",
            "spec.containers[2].resources.limits[foo]",
            "spec.containers[2].resources.limits[foo]",
            "spec.containers[2].resources.requests[foo]",
            "spec.containers[2].resources.requests[foo]",
        ]
    );
    assert!(message.starts_with("Pod \"Bad_Pod\" is invalid: [metadata.name: Invalid value: \"Bad_Pod\": a lowercase RFC 1123 subdomain"), "{message}");
    assert_eq!(
        list[1].2,
        "Invalid value: 70000: must be between 1 and 65535, inclusive"
    );
    assert_eq!(
        list[4],
        cause(
            "FieldValueDuplicate",
            "spec.containers[1].name",
            "Duplicate value: \"main\""
        )
    );
    assert_eq!(
        list[6].2,
        "Invalid value: \"foo\": must be a standard resource type or fully qualified"
    );
    assert_eq!(
        causes(json!({"metadata": {"name": "p"}, "spec": {}})).1,
        [cause(
            "FieldValueRequired",
            "spec.containers",
            "Required value"
        )]
    );
    let (message, _) =
        causes(json!({"metadata": {}, "spec": {"containers": [{"name": "c", "image": "x"}]}}));
    assert_eq!(
        message,
        "Pod \"\" is invalid: metadata.name: Required value: name or generateName is required"
    );
}

#[test]
fn generated_names_and_decoding() {
    let object = json!({"metadata": {"generateName": "job-"}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
    let stored = admit(Kind::Pod, object).expect("valid");
    let name = stored["metadata"]["name"].as_str().expect("name");
    assert!(name.starts_with("job-") && name.len() == 9, "{name}");
    assert_eq!(stored["status"]["qosClass"], "BestEffort");
    assert_eq!(stored["spec"]["containers"][0]["imagePullPolicy"], "Always");
    let bad = pod(
        "q",
        json!({"name": "c", "image": "x", "resources": {"limits": {"memory": "lots"}}}),
    );
    match admit(Kind::Pod, bad) {
        Err(WriteError::BadRequest(m)) => assert_eq!(
            m,
            "Pod in version \"v1\" cannot be handled as a Pod: quantities must match the regular \
             expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        ),
        other => panic!("{other:?}"),
    }
    let guaranteed = pod(
        "g",
        json!({"name": "c", "image": "x", "resources": {"limits": {"memory": "1Gi", "cpu": "1"}}}),
    );
    assert_eq!(
        admit(Kind::Pod, guaranteed).expect("valid")["status"]["qosClass"],
        "Guaranteed"
    );
}
