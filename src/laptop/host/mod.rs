//! `podtun jupyter @ --via HOST`: a Jupyter server on the SSH host itself, no cluster and no
//! agent. [`script`] lists (and with `--start` starts) the user's servers there, [`remote`]
//! runs it, [`pick`] chooses among several, and [`run`] forwards and stays connected.

mod pick;
mod remote;
mod run;
mod script;

pub use run::run;
