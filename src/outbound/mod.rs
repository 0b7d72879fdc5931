//! Connections the hub opens: today the application's forward-auth
//! endpoint (`auth.rs`), over a small non-blocking HTTP/1.1 client
//! (`http.rs`), with a short cache of allowed answers (`cache.rs`); and
//! the Redis wire protocol (`resp.rs`, RESP2, sans-I/O).

pub mod auth;
pub mod cache;
pub mod http;
pub mod redis;
pub mod resp;

pub use auth::{is_outbound, Asker, Verdict, TOKEN_BASE};
