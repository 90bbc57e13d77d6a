//! Bytes and connections, knowing nothing of SSH or Kubernetes: the accept loop both sides share
//! ([`accept`]), the byte pumps between two streams ([`splice`]), and Ctrl-C/SIGTERM with the
//! grace given to open connections ([`shutdown`]).

pub mod accept;
pub mod shutdown;
pub mod splice;
