//! Name rules with apimachinery's messages (`k8s.io/apimachinery/pkg/util/validation`).

const LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric \
                         characters or '-', and must start and end with an alphanumeric character";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
                             alphanumeric characters, '-' or '.', and must start and end with an \
                             alphanumeric character";
const QUALIFIED_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must \
                             start and end with an alphanumeric character";

/// `RegexError`: the message, its examples and the expression.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut s = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        s.push_str(&format!("'{e}', "));
    }
    s.push_str(&format!("regex used for validation is '{fmt}')"));
    s
}

fn max_len(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter().all(|&c| alnum(c) || c == b'-')
}

fn is_subdomain(s: &str) -> bool {
    s.split('.').all(is_label)
}

/// `IsDNS1123Label`.
pub(super) fn dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len(63));
    }
    if !is_label(s) {
        if is_subdomain(s) {
            errs.push("must not contain dots".into());
        } else {
            errs.push(regex_error(LABEL_MSG, LABEL_FMT, &["my-name", "123-abc"]));
        }
    }
    errs
}

/// `IsDNS1123Subdomain`.
pub(super) fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len(253));
    }
    if !is_subdomain(s) {
        let fmt = format!("{LABEL_FMT}(\\.{LABEL_FMT})*");
        errs.push(regex_error(SUBDOMAIN_MSG, &fmt, &["example.com"]));
    }
    errs
}

/// `NameIsDNSSubdomain` with `prefix`: a `generateName` may end in `-` (apimachinery's
/// `maskTrailingDash` puts an `a` in place of its last two characters).
pub(super) fn generate_name(prefix: &str) -> Vec<String> {
    match prefix.len() > 1 && prefix.ends_with('-') {
        true => dns1123_subdomain(&format!(
            "{}a",
            prefix.get(..prefix.len() - 2).unwrap_or("")
        )),
        false => dns1123_subdomain(prefix),
    }
}

/// `IsValidPortName`: an IANA service name.
pub(super) fn port_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 15 {
        errs.push(max_len(15));
    }
    if !s.bytes().all(|c| alnum(c) || c == b'-') || s.is_empty() {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if s.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

/// `IsQualifiedName`: `[prefix/]name`.
pub(super) fn qualified_name(s: &str) -> Vec<String> {
    let regex = || {
        regex_error(
            QUALIFIED_MSG,
            QUALIFIED_FMT,
            &["MyName", "my.name", "123-abc"],
        )
    };
    let parts: Vec<&str> = s.split('/').collect();
    let (prefix, name) = match parts.as_slice() {
        [name] => (None, *name),
        [prefix, name] => (Some(*prefix), *name),
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. \
                 'example.com/MyName')",
                regex()
            )]
        }
    };
    let mut errs = Vec::new();
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".into());
        } else {
            errs.extend(
                dns1123_subdomain(p)
                    .into_iter()
                    .map(|m| format!("prefix part {m}")),
            );
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len(63)));
    }
    let b = name.as_bytes();
    let inner = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    let matches = !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(inner);
    if !matches {
        errs.push(format!("name part {}", regex()));
    }
    errs
}

/// A resource without a domain, or in `kubernetes.io` (may be overcommitted unless hugepages).
pub(super) fn is_native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// `IsExtendedResourceName`: a domain outside `kubernetes.io`, not a quota name.
pub(super) fn is_extended(name: &str) -> bool {
    !is_native(name)
        && !name.starts_with("requests.")
        && qualified_name(&format!("requests.{name}")).is_empty()
}

pub(super) fn is_hugepages(name: &str) -> bool {
    name.starts_with("hugepages-")
}

/// `IsStandardResourceName` (quota names included).
pub(super) fn is_standard(name: &str) -> bool {
    const STANDARD: [&str; 20] = [
        "cpu",
        "memory",
        "ephemeral-storage",
        "requests.cpu",
        "requests.memory",
        "requests.ephemeral-storage",
        "limits.cpu",
        "limits.memory",
        "limits.ephemeral-storage",
        "pods",
        "quota",
        "services",
        "replicationcontrollers",
        "resourcequotas",
        "secrets",
        "persistentvolumeclaims",
        "storage",
        "requests.storage",
        "services.nodeports",
        "services.loadbalancers",
    ];
    STANDARD.contains(&name) || is_hugepages(name) || name.starts_with("requests.hugepages-")
}

/// `IsStandardContainerResourceName`.
pub(super) fn is_container_standard(name: &str) -> bool {
    ["cpu", "memory", "ephemeral-storage"].contains(&name) || is_hugepages(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_with_apimachinerys_messages() {
        assert!(dns1123_subdomain("jupyter-1.demo").is_empty());
        assert_eq!(
            dns1123_subdomain("Bad_Name"),
            ["a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
              '-' or '.', and must start and end with an alphanumeric character (e.g. \
              'example.com', regex used for validation is \
              '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"]
        );
        assert_eq!(
            dns1123_label("Main"),
            [
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or \
              '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or \
              '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            ]
        );
        assert_eq!(dns1123_label("a.b"), ["must not contain dots"]);
        assert!(generate_name("web-").is_empty());
        assert!(!generate_name("Web-").is_empty());
        assert!(port_name("http").is_empty());
        assert_eq!(
            port_name("8888"),
            ["must contain at least one letter (a-z)"]
        );
        assert!(is_extended("nvidia.com/gpu") && !is_extended("kubernetes.io/x"));
        assert!(!is_extended("cpu") && is_native("cpu"));
        assert!(qualified_name("nvidia.com/gpu").is_empty());
        assert!(generate_name("web_-").is_empty() && !generate_name("Web-").is_empty());
    }
}
