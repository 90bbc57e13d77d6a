//! Which pod ports to forward: `[LOCAL:]REMOTE` arguments, the jupyter/redis/generic presets, and
//! kubectl's service-port → targetPort mapping. Pure functions over the pod and service specs.

use std::fmt;
use std::str::FromStr;

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::discover::{containers, object_ref, pick_container, quote_input, DiscoverError};

/// Port names that mean "the Jupyter server", best first.
const JUPYTER_PORT_NAMES: &[&str] = &["jupyter", "notebook", "lab", "http"];
/// Jupyter's default port.
const JUPYTER_DEFAULT_PORT: u16 = 8888;
/// Command-line options that set Jupyter's port (traitlets: the last one wins).
const JUPYTER_PORT_FLAGS: &[&str] = &["--port", "--ServerApp.port", "--NotebookApp.port"];
/// The environment variable docker-stacks images read for the port.
const JUPYTER_PORT_ENV: &str = "JUPYTER_PORT";
/// Redis's default port.
const REDIS_DEFAULT_PORT: u16 = 6379;
/// Kubernetes port names (IANA service names) are at most 15 characters.
const MAX_PORT_NAME_LEN: usize = 15;

/// What kind of server is being forwarded to, which decides the default port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// A Jupyter server: the port named jupyter/notebook/lab/http, else 8888 (or the configured one).
    Jupyter,
    /// A redis server: the port named redis, else 6379 (or `--port N`).
    Redis,
    /// Anything: every declared TCP port.
    Generic,
}

impl Preset {
    /// The preset's name on the wire and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Jupyter => "jupyter",
            Preset::Redis => "redis",
            Preset::Generic => "generic",
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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

/// Digits only, 0-65535.
fn parse_number(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
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

/// Jupyter's port: a conventionally named port, else a declared 8888, else the port its command
/// line or `JUPYTER_PORT` sets, else 8888.
fn jupyter_port(c: &Container) -> (u16, Option<String>) {
    let named = JUPYTER_PORT_NAMES
        .iter()
        .find_map(|wanted| tcp_ports(c).find(|p| p.name.as_deref() == Some(*wanted)));
    if let Some(p) = named.and_then(|p| Some((number(p)?, p.name.clone()))) {
        return p;
    }
    let from_env = || {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == JUPYTER_PORT_ENV)
            .and_then(|e| parse_number(e.value.as_deref()?.trim()))
            .filter(|n| *n != 0)
    };
    let port = declared_number(c, JUPYTER_DEFAULT_PORT)
        .or_else(|| flag_value(&words(c), JUPYTER_PORT_FLAGS))
        .or_else(from_env)
        .unwrap_or(JUPYTER_DEFAULT_PORT);
    (port, name_of(c, port))
}

/// Redis's port: the port named redis, else `redis-server … --port N`, else 6379.
fn redis_port(c: &Container) -> (u16, Option<String>) {
    let named = tcp_ports(c).find(|p| p.name.as_deref() == Some("redis"));
    if let Some(p) = named.and_then(|p| Some((number(p)?, p.name.clone()))) {
        return p;
    }
    let words = words(c);
    let after_server = words
        .iter()
        .position(|w| w.ends_with("redis-server"))
        .map(|i| &words[i + 1..]);
    let port = after_server
        .and_then(|args| flag_value(args, &["--port"]))
        .unwrap_or(REDIS_DEFAULT_PORT);
    (port, name_of(c, port))
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

/// Whether a container looks like the preset's server, for picking a container without `-c`.
pub(crate) fn serves_preset(c: &Container, preset: Preset) -> bool {
    let image = c.image.as_deref().unwrap_or_default();
    let words = words(c);
    match preset {
        Preset::Generic => false,
        Preset::Jupyter => {
            tcp_ports(c).any(|p| {
                matches!(p.name.as_deref(), Some("jupyter" | "notebook" | "lab"))
                    || number(p) == Some(JUPYTER_DEFAULT_PORT)
            }) || words
                .iter()
                .any(|w| w.contains("jupyter") || w.contains("start-notebook"))
                || image.contains("jupyter")
                || image.contains("notebook")
        }
        Preset::Redis => {
            tcp_ports(c).any(|p| {
                p.name.as_deref() == Some("redis") || number(p) == Some(REDIS_DEFAULT_PORT)
            }) || words.iter().any(|w| w.ends_with("redis-server"))
                || image.contains("redis")
        }
    }
}

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

fn ports(c: &Container) -> impl Iterator<Item = &ContainerPort> {
    c.ports.iter().flatten()
}

/// Port-forward carries TCP only.
fn tcp_ports(c: &Container) -> impl Iterator<Item = &ContainerPort> {
    ports(c).filter(|p| is_tcp(p.protocol.as_deref()))
}

fn is_tcp(protocol: Option<&str>) -> bool {
    protocol.is_none_or(|p| p.eq_ignore_ascii_case("TCP"))
}

fn number(p: &ContainerPort) -> Option<u16> {
    u16::try_from(p.container_port).ok().filter(|n| *n != 0)
}

fn declared_number(c: &Container, wanted: u16) -> Option<u16> {
    tcp_ports(c).filter_map(number).find(|n| *n == wanted)
}

fn name_of(c: &Container, port: u16) -> Option<String> {
    ports(c)
        .find(|p| number(p) == Some(port))
        .and_then(|p| p.name.clone())
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

/// The words of the container's command and args, split on whitespace so that a
/// `sh -c "jupyter lab --port=9999"` script counts too, with quotes around a word dropped.
pub(crate) fn words(c: &Container) -> Vec<String> {
    c.command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .flat_map(|arg| arg.split_whitespace())
        .map(|w| w.trim_matches(|ch| ch == '"' || ch == '\'').to_string())
        .collect()
}

/// The value of the last `FLAG=N` or `FLAG N` among `words`, if it is a port number.
fn flag_value(words: &[String], flags: &[&str]) -> Option<u16> {
    let mut found = None;
    for (i, word) in words.iter().enumerate() {
        for flag in flags {
            let value = match word.strip_prefix(flag) {
                Some("") => words.get(i + 1).map(String::as_str),
                Some(rest) => rest.strip_prefix('='),
                None => None,
            };
            let value = value.map(|v| v.trim_matches(|ch| ch == '"' || ch == '\''));
            if let Some(n) = value.and_then(parse_number).filter(|n| *n != 0) {
                found = Some(n);
            }
        }
    }
    found
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
    fn jupyter_preset_in_order() {
        let named = |names: &[&str]| {
            let ports: Vec<Value> = names
                .iter()
                .enumerate()
                .map(|(i, n)| json!({"containerPort": 9000 + i, "name": n}))
                .collect();
            one(json!([{"name": "nb", "ports": ports}]))
        };
        for (names, want) in [
            (&["http", "lab", "jupyter"][..], port(9002, Some("jupyter"))),
            (&["http", "notebook"][..], port(9001, Some("notebook"))),
            (&["metrics", "lab"][..], port(9001, Some("lab"))),
            (&["metrics", "http"][..], port(9001, Some("http"))),
        ] {
            assert_eq!(
                resolve(&named(names), None, Preset::Jupyter, &[]),
                [want],
                "{names:?}"
            );
        }
        let declared = one(json!([{"name": "nb", "args": ["--port=9999"],
            "ports": [{"containerPort": 7000}, {"containerPort": 8888}]}]));
        assert_eq!(
            resolve(&declared, None, Preset::Jupyter, &[]),
            [port(8888, None)]
        );
        for args in [
            json!(["start-notebook.py", "--port=9999"]),
            json!(["jupyter", "lab", "--port", "9999"]),
            json!([
                "jupyter",
                "lab",
                "--ServerApp.port=9999",
                "--ServerApp.port_retries=0"
            ]),
            json!(["jupyter", "notebook", "--NotebookApp.port='9999'"]),
            json!([
                "sh",
                "-c",
                "exec jupyter lab --ip=0.0.0.0 --port=9999 --no-browser"
            ]),
        ] {
            let p = one(json!([{"name": "nb", "args": args}]));
            assert_eq!(
                resolve(&p, None, Preset::Jupyter, &[]),
                [port(9999, None)],
                "{args}"
            );
        }
        let env = one(
            json!([{"name": "nb", "env": [{"name": "JUPYTER_PORT", "value": "8080"}],
            "ports": [{"containerPort": 8080, "name": "web"}]}]),
        );
        assert_eq!(
            resolve(&env, None, Preset::Jupyter, &[]),
            [port(8080, Some("web"))]
        );
        let bare = one(json!([{"name": "nb", "env": [{"name": "JUPYTER_PORT", "value": "nope"}]}]));
        assert_eq!(
            resolve(&bare, None, Preset::Jupyter, &[]),
            [port(8888, None)]
        );
    }

    #[test]
    fn redis_preset_in_order() {
        let named =
            one(json!([{"name": "r", "ports": [{"containerPort": 6380, "name": "redis"}]}]));
        assert_eq!(
            resolve(&named, None, Preset::Redis, &[]),
            [port(6380, Some("redis"))]
        );
        let args =
            one(json!([{"name": "r", "command": ["redis-server"], "args": ["--port", "6390"]}]));
        assert_eq!(resolve(&args, None, Preset::Redis, &[]), [port(6390, None)]);
        let path = one(
            json!([{"name": "r", "command": ["/usr/local/bin/redis-server", "/etc/redis.conf", "--port", "6391"]}]),
        );
        assert_eq!(resolve(&path, None, Preset::Redis, &[]), [port(6391, None)]);
        // `--port` of some other program does not count.
        let other = one(json!([{"name": "r", "command": ["proxy", "--port", "7000"]}]));
        assert_eq!(
            resolve(&other, None, Preset::Redis, &[]),
            [port(6379, None)]
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
