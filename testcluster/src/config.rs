//! How to start a test cluster: its listener and state directory, its users, the resources of
//! its one node, and the images its runtime knows.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// How to start a test cluster.
pub struct Config {
    /// State directory: the kubeconfig and each pod run's home directory go here.
    pub dir: PathBuf,
    /// The API server's listener, already bound (tests bind `127.0.0.1:0`).
    pub listener: std::net::TcpListener,
    /// Run each pod in its own network namespace (needs root). Default: true when root.
    pub isolate_pods: bool,
    /// Extra names or IPs for the server certificate.
    pub server_names: Vec<String>,
    /// `host:port` written into the kubeconfig as the server; default: the listener's address.
    pub advertise: Option<String>,
    /// Directories put in front of `PATH` for pod processes.
    pub extra_path: Vec<PathBuf>,
    /// More users, each with a token, a kubeconfig context of its name and a Role in its
    /// namespace.
    pub users: Vec<UserSpec>,
    /// What the one node offers the scheduler.
    pub node: NodeResources,
    /// The images the runtime can "pull", by reference (`redis:7-alpine` and
    /// `docker.io/library/redis:7-alpine` are the same). A container of an image not here runs
    /// its `command` as before; without a command its pull fails (`ErrImagePull`, then
    /// `ImagePullBackOff`) and the pod stays Pending.
    pub images: BTreeMap<String, ImageConfig>,
}

/// What a container image says about running it: Docker's ENTRYPOINT, CMD and USER. A
/// container's `command` replaces the entrypoint (and drops the image's cmd), its `args`
/// replace the cmd; the user applies unless a securityContext names one (and only when the
/// cluster runs as root).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// ENTRYPOINT: what runs, unless the container gives a `command`.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// CMD: the arguments after the entrypoint, unless the container gives `command` or `args`.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `uid:gid`; in a file, written as `"1000:100"` (or `"1000"` for gid 0).
    #[serde(default, deserialize_with = "user")]
    pub user: Option<(u32, u32)>,
}

impl ImageConfig {
    /// An image that runs `entrypoint` followed by `cmd`.
    pub fn new(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        ImageConfig {
            entrypoint: owned(entrypoint),
            cmd: owned(cmd),
            user: None,
        }
    }

    /// The same image with `USER uid:gid`.
    pub fn with_user(mut self, uid: u32, gid: u32) -> ImageConfig {
        self.user = Some((uid, gid));
        self
    }
}

fn user<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<(u32, u32)>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum User {
        Id(u32),
        Text(String),
    }
    let bad = |s: &str| serde::de::Error::custom(format!("user {s:?} is not uid[:gid]"));
    match Option::<User>::deserialize(d)? {
        None => Ok(None),
        Some(User::Id(uid)) => Ok(Some((uid, 0))),
        Some(User::Text(s)) => {
            let (uid, gid) = s.split_once(':').unwrap_or((&s, "0"));
            match (uid.parse(), gid.parse()) {
                (Ok(uid), Ok(gid)) => Ok(Some((uid, gid))),
                _ => Err(bad(&s)),
            }
        }
    }
}

/// The allocatable resources of the node. A pod whose requests do not fit what the running
/// pods leave stays Pending (`Unschedulable`) until they do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeResources {
    /// CPU in thousandths of a core. Default: 16 cores.
    pub cpu_millis: u64,
    /// Memory in bytes. Default: 64 GiB.
    pub memory_bytes: u64,
    /// `nvidia.com/gpu` devices. Default: none, like a node without GPUs.
    pub gpus: u32,
}

impl Default for NodeResources {
    fn default() -> NodeResources {
        NodeResources {
            cpu_millis: 16_000,
            memory_bytes: 64 << 30,
            gpus: 0,
        }
    }
}

/// A user of the cluster besides the admin and [`crate::USER_NAME`]: its kubeconfig context is
/// named after it, and a Role (and RoleBinding) of its name in `namespace` grants it what
/// podtun needs there (get/list/watch pods, get pods/log), and create+get pods/portforward
/// only with `portforward`.
#[derive(Clone, Debug)]
pub struct UserSpec {
    /// User, context, Role and RoleBinding name.
    pub name: String,
    /// Where its rights are; created if missing.
    pub namespace: String,
    /// Whether it may port-forward.
    pub portforward: bool,
}

impl UserSpec {
    pub(crate) fn rbac(&self) -> Vec<serde_json::Value> {
        use serde_json::json;
        let (name, ns) = (&self.name, &self.namespace);
        let mut rules = vec![
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}),
            json!({"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}),
        ];
        if self.portforward {
            rules.push(json!({"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["get", "create"]}));
        }
        let group = "rbac.authorization.k8s.io";
        vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            json!({"apiVersion": format!("{group}/v1"), "kind": "Role",
                "metadata": {"name": name, "namespace": ns}, "rules": rules}),
            json!({"apiVersion": format!("{group}/v1"), "kind": "RoleBinding",
                "metadata": {"name": name, "namespace": ns},
                "subjects": [{"kind": "User", "name": name, "apiGroup": group}],
                "roleRef": {"kind": "Role", "name": name, "apiGroup": group}}),
        ]
    }
}

impl Config {
    /// Defaults for a state directory and a bound listener.
    pub fn new(dir: impl Into<PathBuf>, listener: std::net::TcpListener) -> Config {
        Config {
            dir: dir.into(),
            listener,
            isolate_pods: nix::unistd::geteuid().is_root(),
            server_names: Vec::new(),
            advertise: None,
            extra_path: Vec::new(),
            users: Vec::new(),
            node: NodeResources::default(),
            images: BTreeMap::new(),
        }
    }
}
