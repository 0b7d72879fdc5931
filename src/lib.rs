//! ssecast: a single-threaded Server-Sent Events hub.
//!
//! `server` is the event loop; `routes` the handlers; `channel` the logs of
//! encoded frames that subscribers read through cursors; `timer` the wheel
//! that drives heartbeats and deadlines; `http` and `sse` the wire formats.

pub mod channel;
pub mod config;
pub mod conn;
pub mod http;
pub mod routes;
pub mod server;
pub mod sse;
pub mod stats;
pub mod timer;

pub use config::{Config, ConfigError};
pub use server::{Server, ShutdownHandle};
