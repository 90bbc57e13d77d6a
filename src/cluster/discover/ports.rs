//! Which pod ports to forward: `[LOCAL:]REMOTE` arguments, resolved against the pod spec, with
//! [`super::preset`] deciding when no port was named.

use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod};

use super::container::{containers, number, parse_number, ports, tcp_ports};
use super::error::{object_ref, quote_input, DiscoverError};
use super::pod::pick_container;
use super::preset::{jupyter_port, redis_port, Preset};

/// Kubernetes port names (IANA service names) are at most 15 characters.
const MAX_PORT_NAME_LEN: usize = 15;

/// A remote port as the user names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    /// A port number, taken even if the pod does not declare it (as kubectl does).
    Number(u16),
    /// A declared container port name (or, for a service, a service port name).
    Name(String),
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Number(n) => write!(f, "{n}"),
            PortSpec::Name(name) => f.write_str(name),
        }
    }
}

/// One `[LOCAL:]REMOTE` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRequest {
    /// The local port: `None` when not given, `Some(0)` for `:REMOTE` (any free port, as kubectl).
    pub local: Option<u16>,
    /// The remote port.
    pub remote: PortSpec,
}

impl FromStr for PortRequest {
    type Err = DiscoverError;

    fn from_str(input: &str) -> Result<PortRequest, DiscoverError> {
        let invalid = |reason: String| DiscoverError::InvalidPort {
            input: quote_input(input),
            reason,
        };
        let (local, remote) = match input.split_once(':') {
            None => (None, input),
            Some((_, remote)) if remote.contains(':') => {
                return Err(invalid("more than one `:`".into()))
            }
            Some(("", remote)) => (Some(0), remote),
            Some((local, remote)) => {
                let local = parse_number(local).ok_or_else(|| {
                    invalid(format!(
                        "local port `{}` is not 0-65535",
                        quote_input(local)
                    ))
                })?;
                (Some(local), remote)
            }
        };
        if remote.is_empty() {
            return Err(invalid("the remote port is missing".into()));
        }
        let remote = if remote.bytes().all(|b| b.is_ascii_digit()) {
            match parse_number(remote) {
                Some(n) if n != 0 => PortSpec::Number(n),
                _ => return Err(invalid(format!("remote port `{remote}` is not 1-65535"))),
            }
        } else if is_port_name(remote) {
            PortSpec::Name(remote.to_string())
        } else {
            return Err(invalid(format!(
                "`{}` is neither a port number (1-65535) nor a port name",
                quote_input(remote)
            )));
        };
        Ok(PortRequest { local, remote })
    }
}

impl fmt::Display for PortRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.local {
            None => write!(f, "{}", self.remote),
            Some(0) => write!(f, ":{}", self.remote),
            Some(local) => write!(f, "{local}:{}", self.remote),
        }
    }
}

/// A Kubernetes port name (IANA service name): lowercase letters, digits and single inner `-`,
/// at least one letter, at most 15 characters.
fn is_port_name(s: &str) -> bool {
    s.len() <= MAX_PORT_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// A pod port to forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedPort {
    /// The container that serves it (for logs and messages).
    pub container: String,
    /// The port in the pod.
    pub remote: u16,
    /// Its declared name, if the container declares it.
    pub name: Option<String>,
    /// The local port asked for (`Some(0)`: any free port), if any.
    pub local: Option<u16>,
}

/// The pod ports to forward. Explicit requests win; without them the preset decides (see
/// [`Preset`]). `container` is `-c`: it narrows port-name lookups to that container.
pub fn resolve_ports(
    pod: &Pod,
    container: Option<&str>,
    preset: Preset,
    requests: &[PortRequest],
) -> Result<Vec<ResolvedPort>, DiscoverError> {
    let chosen = pick_container(pod, container, preset)?;
    if !requests.is_empty() {
        return requests
            .iter()
            .map(|r| resolve_request(pod, chosen, container.is_some(), r))
            .collect();
    }
    let (remote, name) = match preset {
        Preset::Generic => return generic_ports(pod, chosen, container.is_some()),
        Preset::Jupyter => jupyter_port(chosen),
        Preset::Redis => redis_port(chosen),
    };
    Ok(vec![ResolvedPort {
        container: chosen.name.clone(),
        remote,
        name,
        local: None,
    }])
}

fn resolve_request(
    pod: &Pod,
    chosen: &Container,
    explicit: bool,
    request: &PortRequest,
) -> Result<ResolvedPort, DiscoverError> {
    // The chosen container first, then (unless `-c` was given) the others, in pod order.
    let searched: Vec<&Container> = std::iter::once(chosen)
        .chain(
            containers(pod)
                .iter()
                .filter(|c| !explicit && c.name != chosen.name),
        )
        .collect();
    let found = |c: &&Container, p: &ContainerPort| (c.name.clone(), number(p), p.name.clone());
    let (container, remote, name) = match &request.remote {
        PortSpec::Number(n) => searched
            .iter()
            .find_map(|c| {
                ports(c)
                    .find(|p| number(p) == Some(*n))
                    .map(|p| found(c, p))
            })
            .map(|(c, _, name)| (c, *n, name))
            .unwrap_or_else(|| (chosen.name.clone(), *n, None)),
        PortSpec::Name(wanted) => {
            let matches: Vec<(String, Option<u16>, Option<String>)> = searched
                .iter()
                .flat_map(|c| {
                    ports(c)
                        .filter(|p| p.name.as_deref() == Some(wanted.as_str()))
                        .map(move |p| found(c, p))
                })
                .collect();
            match matches.as_slice() {
                [] => {
                    return Err(DiscoverError::NoSuchPort {
                        pod: object_ref(&pod.metadata),
                        name: wanted.clone(),
                        container: explicit.then(|| chosen.name.clone()),
                        declared: searched.iter().flat_map(|c| declared(c)).collect(),
                    })
                }
                // The chosen container's own port wins; elsewhere the name must mean one number.
                [(c, Some(n), name), rest @ ..]
                    if *c == chosen.name || rest.iter().all(|(_, m, _)| *m == Some(*n)) =>
                {
                    (c.clone(), *n, name.clone())
                }
                _ => {
                    return Err(DiscoverError::AmbiguousPort {
                        pod: object_ref(&pod.metadata),
                        name: wanted.clone(),
                        matches: matches
                            .iter()
                            .map(|(c, n, _)| match n {
                                Some(n) => format!("{n} in container `{c}`"),
                                None => format!("an invalid number in container `{c}`"),
                            })
                            .collect(),
                    })
                }
            }
        }
    };
    Ok(ResolvedPort {
        container,
        remote,
        name,
        local: request.local,
    })
}

/// Every declared TCP port of the chosen container, or (without `-c`) of the pod if the chosen
/// container declares none.
fn generic_ports(
    pod: &Pod,
    chosen: &Container,
    explicit: bool,
) -> Result<Vec<ResolvedPort>, DiscoverError> {
    let resolved = |c: &Container| -> Vec<ResolvedPort> {
        tcp_ports(c)
            .filter_map(|p| {
                Some(ResolvedPort {
                    container: c.name.clone(),
                    remote: number(p)?,
                    name: p.name.clone(),
                    local: None,
                })
            })
            .collect()
    };
    let mut found = resolved(chosen);
    if found.is_empty() && !explicit {
        found = containers(pod).iter().flat_map(resolved).collect();
    }
    let mut seen_numbers = Vec::new();
    found.retain(|p| {
        let first = !seen_numbers.contains(&p.remote);
        seen_numbers.push(p.remote);
        first
    });
    if !found.is_empty() {
        return Ok(found);
    }
    let looked_at: Vec<&Container> = if explicit {
        vec![chosen]
    } else {
        containers(pod).iter().collect()
    };
    Err(DiscoverError::NoPorts {
        pod: object_ref(&pod.metadata),
        seen: looked_at
            .iter()
            .map(|c| match declared(c).as_slice() {
                [] => format!("container `{}` (no ports)", c.name),
                ports => format!("container `{}` ({})", c.name, ports.join(", ")),
            })
            .collect(),
    })
}

/// `8888 (notebook)`, `9090`, `53/UDP (dns)`.
fn declared(c: &Container) -> Vec<String> {
    ports(c)
        .map(|p| {
            let mut out = p.container_port.to_string();
            if let Some(proto) = p
                .protocol
                .as_deref()
                .filter(|p| !p.eq_ignore_ascii_case("TCP"))
            {
                out.push_str(&format!("/{proto}"));
            }
            if let Some(name) = &p.name {
                out.push_str(&format!(" ({name})"));
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::discover::fixtures::pod;
    use serde_json::{json, Value};

    fn req(s: &str) -> PortRequest {
        s.parse().expect(s)
    }

    #[test]
    fn parses_every_request_form() {
        let n = PortSpec::Number;
        let name = |s: &str| PortSpec::Name(s.into());
        let cases = [
            ("8888", None, n(8888)),
            ("9000:8888", Some(9000), n(8888)),
            (":8888", Some(0), n(8888)),
            ("0:8888", Some(0), n(8888)),
            ("http", None, name("http")),
            ("9000:http", Some(9000), name("http")),
            ("65535", None, n(65535)),
            ("my-port2", None, name("my-port2")),
        ];
        for (input, local, remote) in cases {
            assert_eq!(req(input), PortRequest { local, remote }, "{input}");
        }
        for input in ["8888", "9000:8888", ":8888", "http", "9000:http"] {
            assert_eq!(req(input).to_string(), input);
        }
    }

    #[test]
    fn rejects_malformed_requests() {
        for input in [
            "",
            "abc:def:1",
            "0",
            "70000",
            "-1",
            "9000:",
            "abc:8888",
            "99999:80",
            "HTTP",
            "a--b",
            "-http",
            "http-",
            "sixteen-chars-xx",
            "12:34:56",
            "80 ",
            "8888\n",
            "１２",
            "9000:0",
        ] {
            let err = input.parse::<PortRequest>().expect_err(input);
            assert!(err.hint().is_some(), "{input}");
        }
        let err = "abc:def:1".parse::<PortRequest>().expect_err("colons");
        assert_eq!(
            err.to_string(),
            "invalid port `abc:def:1`: more than one `:`"
        );
        let err = "70000".parse::<PortRequest>().expect_err("range");
        assert_eq!(
            err.to_string(),
            "invalid port `70000`: remote port `70000` is not 1-65535"
        );
        let err = "9000:".parse::<PortRequest>().expect_err("missing");
        assert_eq!(
            err.to_string(),
            "invalid port `9000:`: the remote port is missing"
        );
        let err = "-1".parse::<PortRequest>().expect_err("negative");
        assert_eq!(
            err.to_string(),
            "invalid port `-1`: `-1` is neither a port number (1-65535) nor a port name"
        );
        assert!(err.hint().expect("hint").contains("9000:8888"));
    }

    fn one(containers: Value) -> Pod {
        pod(json!({"metadata": {"name": "x", "namespace": "demo"},
                   "spec": {"containers": containers}}))
    }

    fn resolve(
        p: &Pod,
        c: Option<&str>,
        preset: Preset,
        reqs: &[&str],
    ) -> Vec<(u16, Option<String>)> {
        let reqs: Vec<PortRequest> = reqs.iter().map(|r| req(r)).collect();
        resolve_ports(p, c, preset, &reqs)
            .expect("resolved")
            .into_iter()
            .map(|r| (r.remote, r.name))
            .collect()
    }

    fn port(n: u16, name: Option<&str>) -> (u16, Option<String>) {
        (n, name.map(String::from))
    }

    fn two_ports() -> Pod {
        one(json!([{"name": "nb", "ports": [
            {"containerPort": 8888, "name": "notebook"},
            {"containerPort": 9090, "name": "metrics"}]}]))
    }

    #[test]
    fn explicit_requests_win_over_presets() {
        let p = two_ports();
        assert_eq!(
            resolve(&p, None, Preset::Jupyter, &["9090"]),
            [port(9090, Some("metrics"))]
        );
        // Undeclared numbers are taken as they are, like kubectl.
        assert_eq!(
            resolve(&p, None, Preset::Redis, &["1234"]),
            [port(1234, None)]
        );
        assert_eq!(
            resolve(&p, None, Preset::Generic, &["metrics", "7000:notebook"]),
            [port(9090, Some("metrics")), port(8888, Some("notebook"))]
        );
        let locals: Vec<Option<u16>> = resolve_ports(
            &p,
            None,
            Preset::Generic,
            &[req("7000:notebook"), req(":9090")],
        )
        .expect("resolved")
        .iter()
        .map(|r| r.local)
        .collect();
        assert_eq!(locals, [Some(7000), Some(0)]);
    }

    #[test]
    fn unknown_port_name_lists_declared_ports() {
        let p = two_ports();
        let err = resolve_ports(&p, None, Preset::Generic, &[req("http")]).expect_err("no http");
        assert_eq!(
            err.to_string(),
            "pod `demo/x` has no container port named `http`"
        );
        assert_eq!(
            err.hint().as_deref(),
            Some("declared ports: 8888 (notebook), 9090 (metrics); pass a port, e.g. `podtun forward pod/x 8888`")
        );
        let err =
            resolve_ports(&p, Some("nb"), Preset::Generic, &[req("http")]).expect_err("no http");
        assert_eq!(
            err.to_string(),
            "container `nb` of pod `demo/x` has no port named `http`"
        );
    }

    fn sidecar_pod() -> Pod {
        one(json!([
            {"name": "app", "ports": [{"containerPort": 8080, "name": "web"}]},
            {"name": "metrics", "ports": [{"containerPort": 9090, "name": "metrics"},
                                          {"containerPort": 9091, "name": "web"}]}
        ]))
    }

    #[test]
    fn port_names_search_the_chosen_container_first() {
        let p = sidecar_pod();
        let got = resolve_ports(&p, None, Preset::Generic, &[req("metrics")]).expect("found");
        assert_eq!(got[0].container, "metrics");
        assert_eq!(got[0].remote, 9090);
        assert_eq!(
            resolve(&p, None, Preset::Generic, &["web"]),
            [port(8080, Some("web"))]
        );
        assert_eq!(
            resolve(&p, Some("metrics"), Preset::Generic, &["web"]),
            [port(9091, Some("web"))]
        );
        let err = resolve_ports(&p, Some("app"), Preset::Generic, &[req("metrics")])
            .expect_err("narrowed");
        assert!(matches!(err, DiscoverError::NoSuchPort { .. }));
    }

    #[test]
    fn the_same_name_with_different_numbers_elsewhere_is_ambiguous() {
        let p = one(json!([
            {"name": "first"},
            {"name": "a", "ports": [{"containerPort": 8080, "name": "web"}]},
            {"name": "b", "ports": [{"containerPort": 9091, "name": "web"}]}
        ]));
        let err = resolve_ports(&p, None, Preset::Generic, &[req("web")]).expect_err("ambiguous");
        assert_eq!(
            err.to_string(),
            "port name `web` is ambiguous in pod `demo/x`"
        );
        assert_eq!(
            err.hint().as_deref(),
            Some("it is 8080 in container `a` and 9091 in container `b`; pass the number, or the container with `-c`, e.g. `podtun forward pod/x 8080`")
        );
    }

    #[test]
    fn generic_preset_takes_every_tcp_port() {
        assert_eq!(
            resolve(&two_ports(), None, Preset::Generic, &[]),
            [port(8888, Some("notebook")), port(9090, Some("metrics"))]
        );
        let single = one(json!([{"name": "a", "ports": [{"containerPort": 80}]}]));
        assert_eq!(
            resolve(&single, None, Preset::Generic, &[]),
            [port(80, None)]
        );
        // The first container declares none: the pod's ports count, once each.
        let p = one(json!([
            {"name": "a"},
            {"name": "b", "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}]},
            {"name": "c", "ports": [{"containerPort": 80}]}
        ]));
        let got = resolve_ports(&p, None, Preset::Generic, &[]).expect("ports");
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].container.as_str(), got[0].remote), ("b", 80));
    }

    #[test]
    fn generic_preset_without_ports_says_what_it_saw() {
        let p = one(json!([
            {"name": "a"},
            {"name": "dns", "ports": [{"containerPort": 53, "protocol": "UDP", "name": "dns"}]}
        ]));
        let err = resolve_ports(&p, None, Preset::Generic, &[]).expect_err("none");
        assert_eq!(
            err.to_string(),
            "pod `demo/x` declares no TCP container ports"
        );
        assert_eq!(
            err.hint().as_deref(),
            Some("saw container `a` (no ports), container `dns` (53/UDP (dns)); name the port to forward, e.g. `podtun forward pod/x 8080`")
        );
        let err = resolve_ports(&sidecar_pod(), Some("app"), Preset::Generic, &[]).map(|v| v.len());
        assert_eq!(err.expect("app has one"), 1);
    }
}
