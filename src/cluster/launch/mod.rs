//! Launching the pod podtun then forwards to: a launcher command that creates it (`--launch`),
//! or a pod podtun creates itself from an image (`--image`); and deleting it again.
//!
//! Cluster half: the launcher runs through a [`Shell`] the caller gives (this machine, or the
//! login host over SSH in kubectl mode), and the pod is reported through `launched` as soon as
//! it is known, so that the caller can delete it whatever happens next.

pub mod command;
pub mod delete;
pub mod image;
mod pod;
pub mod rights;
pub mod shell;

pub use command::{Around, OnLaunched};
pub use pod::{launch, start_launched};
pub use shell::{Shell, ThisMachine};
