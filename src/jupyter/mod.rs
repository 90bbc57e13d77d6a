//! What Jupyter prints and how to reach it, for every kind of target: the URL and token in a
//! server's output ([`token`]) and the server files it writes ([`server`]).

pub mod server;
pub mod token;

pub use token::Token;
