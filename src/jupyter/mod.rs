//! What Jupyter prints and how to reach it, for every kind of target ([`access`]): the URL and token in a
//! server's output ([`token`]), the server files it writes ([`server`]), and why it did not
//! start ([`start`]).

pub mod access;
pub mod server;
pub mod start;
pub mod token;

pub use token::Token;
