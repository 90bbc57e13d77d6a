//! `svc/NAME` ports as kubectl maps them: a service port (number or name) goes to its targetPort
//! on the chosen pod. Pure: the service and pod are fetched by `resolve`.

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::container::{containers, is_tcp, number, parse_number, ports};
use super::error::{object_ref, DiscoverError};
use super::ports::{PortRequest, PortSpec};

/// The service ports asked for, mapped to pod ports as kubectl does: each REMOTE is a service
/// port number or name; it goes to the targetPort (a number, or a container port name looked up
/// in `pod`; absent means the same number); the local port defaults to the service port. Without
/// requests, every TCP service port.
pub fn service_ports(
    svc: &Service,
    pod: &Pod,
    requests: &[PortRequest],
) -> Result<Vec<PortRequest>, DiscoverError> {
    let svc_ports: &[ServicePort] = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    let service = object_ref(&svc.metadata);
    let map = |sp: &ServicePort, local: Option<u16>| -> Result<PortRequest, DiscoverError> {
        let port = u16::try_from(sp.port).unwrap_or_default();
        let target = match &sp.target_port {
            None | Some(IntOrString::Int(0)) => port,
            Some(IntOrString::Int(n)) => u16::try_from(*n).unwrap_or_default(),
            Some(IntOrString::String(name)) => parse_number(name)
                .or_else(|| {
                    containers(pod)
                        .iter()
                        .flat_map(ports)
                        .find(|p| p.name.as_deref() == Some(name.as_str()))
                        .and_then(number)
                })
                .ok_or_else(|| DiscoverError::NoSuchTargetPort {
                    service: service.clone(),
                    port,
                    target: name.clone(),
                    pod: object_ref(&pod.metadata),
                })?,
        };
        Ok(PortRequest {
            local: local.or(Some(port)),
            remote: PortSpec::Number(target),
        })
    };
    if requests.is_empty() {
        return svc_ports
            .iter()
            .filter(|sp| is_tcp(sp.protocol.as_deref()))
            .map(|sp| map(sp, None))
            .collect();
    }
    requests
        .iter()
        .map(|req| {
            let found = svc_ports.iter().find(|sp| match &req.remote {
                PortSpec::Number(n) => sp.port == i32::from(*n),
                PortSpec::Name(name) => sp.name.as_deref() == Some(name.as_str()),
            });
            match found {
                Some(sp) => map(sp, req.local),
                None => Err(DiscoverError::NoSuchServicePort {
                    service: service.clone(),
                    port: req.remote.to_string(),
                    declared: svc_ports.iter().map(describe_service_port).collect(),
                }),
            }
        })
        .collect()
}

/// `80 (http) → 8888`, `6379`.
fn describe_service_port(sp: &ServicePort) -> String {
    let mut out = sp.port.to_string();
    if let Some(name) = &sp.name {
        out.push_str(&format!(" ({name})"));
    }
    match &sp.target_port {
        Some(IntOrString::Int(n)) if *n != sp.port && *n != 0 => out.push_str(&format!(" → {n}")),
        Some(IntOrString::String(name)) => out.push_str(&format!(" → {name}")),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::discover::fixtures::pod;
    use serde_json::{json, Value};

    fn req(s: &str) -> PortRequest {
        s.parse().expect(s)
    }

    fn two_ports() -> Pod {
        pod(json!({"metadata": {"name": "x", "namespace": "demo"},
            "spec": {"containers": [{"name": "nb", "ports": [
                {"containerPort": 8888, "name": "notebook"},
                {"containerPort": 9090, "name": "metrics"}]}]}}))
    }

    fn service(ports: Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "demo"},
            "spec": {"selector": {"app": "x"}, "ports": ports}}))
        .expect("service")
    }

    fn mapped(svc: &Service, p: &Pod, reqs: &[&str]) -> Vec<String> {
        let reqs: Vec<PortRequest> = reqs.iter().map(|r| req(r)).collect();
        service_ports(svc, p, &reqs)
            .expect("mapped")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn service_ports_map_to_target_ports_like_kubectl() {
        let p = two_ports();
        let svc = service(json!([
            {"port": 80, "name": "http", "targetPort": 8888},
            {"port": 9100, "name": "prom", "targetPort": "metrics"},
            {"port": 8888, "name": "same"},
            {"port": 53, "name": "dns", "protocol": "UDP"}
        ]));
        assert_eq!(mapped(&svc, &p, &["80"]), ["80:8888"]);
        assert_eq!(mapped(&svc, &p, &["http"]), ["80:8888"]);
        assert_eq!(mapped(&svc, &p, &["7000:80"]), ["7000:8888"]);
        assert_eq!(mapped(&svc, &p, &[":prom"]), [":9090"]);
        assert_eq!(mapped(&svc, &p, &["prom"]), ["9100:9090"]);
        assert_eq!(mapped(&svc, &p, &["8888"]), ["8888:8888"]);
        assert_eq!(mapped(&svc, &p, &[]), ["80:8888", "9100:9090", "8888:8888"]);
    }

    #[test]
    fn unknown_service_port_lists_the_services_ports() {
        let svc = service(json!([
            {"port": 80, "name": "http", "targetPort": 8888},
            {"port": 9100, "targetPort": "metrics"}
        ]));
        let err =
            service_ports(&svc, &two_ports(), &[req("8888")]).expect_err("not a service port");
        assert_eq!(err.to_string(), "service `demo/web` has no port `8888`");
        assert_eq!(
            err.hint().as_deref(),
            Some("service ports: 80 (http) → 8888, 9100 → metrics; e.g. `podtun forward svc/web 80`, or forward a pod port with `pod/NAME`")
        );
    }

    #[test]
    fn named_target_port_missing_from_the_pod() {
        let svc = service(json!([{"port": 80, "targetPort": "http"}]));
        let err = service_ports(&svc, &two_ports(), &[req("80")]).expect_err("no http");
        assert_eq!(
            err.to_string(),
            "service `demo/web` sends port 80 to `http`, which pod `demo/x` does not declare"
        );
    }
}
