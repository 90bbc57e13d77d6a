//! Launching the pod podtun then forwards to: a launcher command that creates it (`--launch`),
//! or a pod podtun creates itself from an image (`--image`); and deleting it again.

pub mod delete;
