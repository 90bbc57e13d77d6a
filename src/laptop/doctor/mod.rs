//! `podtun doctor`: every step from the laptop to the pods, in order, one line each with ✓ or
//! ✗ and a hint, for the user to fix or to paste into a help ticket (nothing secret in it).
//!
//! Via mode: the SSH config, the host key, authentication and what can run on the login host
//! are checked here; the cluster checks ([`crate::cluster::doctor`]) run in the agent there,
//! which reports them as `check` events; then what `jupyter @` and Slurm targets would use there.
//! Local mode runs the cluster checks in-process.

mod login_host;
mod report;
mod steps;

pub use steps::run;
