//! A small Kubernetes API server for podtun's tests, demo and benchmarks.
//!
//! It speaks the real wire protocol (HTTPS, bearer tokens, JSON objects, watches, `pods/log`,
//! `pods/portforward` over WebSocket and SPDY), so kube-rs and kubectl talk to it as to any API server, and it
//! runs each pod's containers as host processes (in the pod's own network namespace when
//! running as root), so the pods are real programs: redis, Jupyter, `sh -c`. A container runs
//! its `command`+`args`, or what its image (one of [`Config::images`]) starts.
//!
//! ```text
//! kube-rs / kubectl ──HTTPS──► server ─► api ─┬─► store (objects, resourceVersions, events) ◄─┐
//!                             (tls, auth,     ├─► watch (event log → JSON lines)               │
//!                              knobs)         ├─► podlog (logs ◄─ process stdout/stderr)        │
//!                                             └─► forward ─► portforward ─► netns ─► pod port  │
//!                                   workloads (Deployments, StatefulSets) ─► runtime (processes)┘
//! ```
//!
//! - `server`: TLS accept loop, one task per connection, token check, fault knobs.
//! - `api`: path → resource and RBAC verb, authorization (`auth`, `review`), get/list/create/
//!   delete; `discovery` for `/api` and `/apis`, `openapi` for `/openapi/v3`; `admin` for the
//!   `/testcluster/...` knobs.
//! - `admission`: decoding, defaults and validation of a created object, as the API server
//!   does them before storing it (422 `Invalid` with its causes), and a pod's QoS class.
//! - `store`: every object as JSON, one resourceVersion counter and the event log watches
//!   replay; `watch` streams it.
//! - `runtime`: the scheduler of the one node (requests against [`Config::node`]) and the
//!   kubelet: images, processes, restarts with CrashLoopBackOff, readiness probes, pod status;
//!   `logs` keeps each run's output for `podlog`.
//! - `workloads`: the Deployment/ReplicaSet and StatefulSet controllers.
//! - `forward`: checks a port-forward request and hands the upgrade to `portforward` (v4
//!   WebSocket) or `spdyforward` (SPDY, classic or tunnelled), which dial into the pod through
//!   `netns`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod admission;
mod api;
mod auth;
mod cluster;
mod config;
mod discovery;
mod forward;
mod kinds;
mod knobs;
mod kubeconfig;
mod logs;
mod names;
pub mod netns;
mod openapi;
mod podlog;
pub mod portforward;
mod protobuf;
mod reference;
mod respond;
mod review;
mod runtime;
mod selector;
mod server;
pub mod spdyforward;
mod store;
mod table;
mod tls;
mod watch;
mod workloads;

mod handle;

pub use auth::USER_NAME;
pub use config::{Config, ImageConfig, NodeResources, UserSpec};
pub use handle::TestCluster;
pub use knobs::Transport;
