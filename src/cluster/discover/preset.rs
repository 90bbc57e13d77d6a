//! The presets: which port a jupyter or redis server listens on, read from the container spec
//! (declared ports, command line, environment), and which container looks like that server.

use std::fmt;

use k8s_openapi::api::core::v1::Container;

use super::container::{declared_number, name_of, number, parse_number, tcp_ports, words};

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

/// Jupyter's port: a conventionally named port, else a declared 8888, else the port its command
/// line or `JUPYTER_PORT` sets, else 8888.
pub(crate) fn jupyter_port(c: &Container) -> (u16, Option<String>) {
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
pub(crate) fn redis_port(c: &Container) -> (u16, Option<String>) {
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
    use crate::cluster::discover::fixtures::container;
    use serde_json::{json, Value};

    fn port(n: u16, name: Option<&str>) -> (u16, Option<String>) {
        (n, name.map(String::from))
    }

    #[test]
    fn jupyter_preset_in_order() {
        let named = |names: &[&str]| {
            let ports: Vec<Value> = names
                .iter()
                .enumerate()
                .map(|(i, n)| json!({"containerPort": 9000 + i, "name": n}))
                .collect();
            container(json!({"name": "nb", "ports": ports}))
        };
        for (names, want) in [
            (&["http", "lab", "jupyter"][..], port(9002, Some("jupyter"))),
            (&["http", "notebook"][..], port(9001, Some("notebook"))),
            (&["metrics", "lab"][..], port(9001, Some("lab"))),
            (&["metrics", "http"][..], port(9001, Some("http"))),
        ] {
            assert_eq!(jupyter_port(&named(names)), want, "{names:?}");
        }
        let declared = container(json!({"name": "nb", "args": ["--port=9999"],
            "ports": [{"containerPort": 7000}, {"containerPort": 8888}]}));
        assert_eq!(jupyter_port(&declared), port(8888, None));
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
            let p = container(json!({"name": "nb", "args": args}));
            assert_eq!(jupyter_port(&p), port(9999, None), "{args}");
        }
        let env = container(
            json!({"name": "nb", "env": [{"name": "JUPYTER_PORT", "value": "8080"}],
            "ports": [{"containerPort": 8080, "name": "web"}]}),
        );
        assert_eq!(jupyter_port(&env), port(8080, Some("web")));
        let bare =
            container(json!({"name": "nb", "env": [{"name": "JUPYTER_PORT", "value": "nope"}]}));
        assert_eq!(jupyter_port(&bare), port(8888, None));
    }

    #[test]
    fn redis_preset_in_order() {
        let named =
            container(json!({"name": "r", "ports": [{"containerPort": 6380, "name": "redis"}]}));
        assert_eq!(redis_port(&named), port(6380, Some("redis")));
        let args = container(
            json!({"name": "r", "command": ["redis-server"], "args": ["--port", "6390"]}),
        );
        assert_eq!(redis_port(&args), port(6390, None));
        let path = container(
            json!({"name": "r", "command": ["/usr/local/bin/redis-server", "/etc/redis.conf", "--port", "6391"]}),
        );
        assert_eq!(redis_port(&path), port(6391, None));
        // `--port` of some other program does not count.
        let other = container(json!({"name": "r", "command": ["proxy", "--port", "7000"]}));
        assert_eq!(redis_port(&other), port(6379, None));
    }

    #[test]
    fn containers_that_look_like_the_server() {
        let jupyter = [
            json!({"name": "a", "image": "quay.io/jupyter/base-notebook"}),
            json!({"name": "a", "args": ["start-notebook.py"]}),
            json!({"name": "a", "ports": [{"containerPort": 8888}]}),
            json!({"name": "a", "ports": [{"containerPort": 80, "name": "lab"}]}),
        ];
        for c in jupyter {
            assert!(serves_preset(&container(c.clone()), Preset::Jupyter), "{c}");
            assert!(!serves_preset(&container(c.clone()), Preset::Redis), "{c}");
        }
        let redis = [
            json!({"name": "a", "image": "redis:7"}),
            json!({"name": "a", "command": ["/usr/bin/redis-server"]}),
            json!({"name": "a", "ports": [{"containerPort": 6379}]}),
        ];
        for c in redis {
            assert!(serves_preset(&container(c.clone()), Preset::Redis), "{c}");
            assert!(
                !serves_preset(&container(c.clone()), Preset::Generic),
                "{c}"
            );
        }
        // A port named http alone does not make a container Jupyter.
        let web = container(
            json!({"name": "a", "image": "nginx", "ports": [{"containerPort": 80, "name": "http"}]}),
        );
        assert!(!serves_preset(&web, Preset::Jupyter));
    }
}
