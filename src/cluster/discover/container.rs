//! What a pod's containers declare: the containers themselves, their TCP ports, and the words
//! of their command lines.

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod};

/// The pod's containers (regular containers only: init and ephemeral ones serve nothing).
pub(crate) fn containers(pod: &Pod) -> &[Container] {
    pod.spec.as_ref().map_or(&[], |s| s.containers.as_slice())
}

pub(crate) fn ports(c: &Container) -> impl Iterator<Item = &ContainerPort> {
    c.ports.iter().flatten()
}

/// Port-forward carries TCP only.
pub(crate) fn tcp_ports(c: &Container) -> impl Iterator<Item = &ContainerPort> {
    ports(c).filter(|p| is_tcp(p.protocol.as_deref()))
}

pub(crate) fn is_tcp(protocol: Option<&str>) -> bool {
    protocol.is_none_or(|p| p.eq_ignore_ascii_case("TCP"))
}

pub(crate) fn number(p: &ContainerPort) -> Option<u16> {
    u16::try_from(p.container_port).ok().filter(|n| *n != 0)
}

pub(crate) fn declared_number(c: &Container, wanted: u16) -> Option<u16> {
    tcp_ports(c).filter_map(number).find(|n| *n == wanted)
}

pub(crate) fn name_of(c: &Container, port: u16) -> Option<String> {
    ports(c)
        .find(|p| number(p) == Some(port))
        .and_then(|p| p.name.clone())
}

/// Digits only, 0-65535.
pub(crate) fn parse_number(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
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
