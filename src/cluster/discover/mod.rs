//! Discovery as pure functions over k8s-openapi types, and the error type every discovery step
//! shares. No I/O here: `resolve` fetches the objects and follows logs, then asks these functions
//! what they mean.
//!
//! One concern a file, re-exported here so that callers use `discover::…` only: [`target`]
//! (TARGET parsing, label selectors), [`pod`] (pod and container choice, readiness),
//! [`ports`] (port requests), [`preset`] (default ports), [`service`] (service port →
//! targetPort), [`token`] (the token a container was given), [`container`] (what containers
//! declare) and [`error`] (why discovery could not go on).

pub mod container;
pub mod error;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod pod;
pub mod ports;
pub mod preset;
pub mod service;
pub mod target;
pub mod token;

pub use crate::jupyter::token::{find_token, JupyterUrl, Token, TokenFind};
pub use error::DiscoverError;
pub use pod::{choose_pod, pick_container, pod_state, PodState};
pub use ports::{resolve_ports, PortRequest, PortSpec, ResolvedPort};
pub use preset::Preset;
pub use service::service_ports;
pub use target::{
    label_selector_string, selector_of_deployment, selector_of_service, selector_of_stateful_set,
    Target,
};
pub use token::{token_from_args, token_from_env};
